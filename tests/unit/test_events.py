"""Promise events: the subject token encoding, and one event per promise state change, published
in order once the journal made the change durable (the core and its publisher, no network)."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import List, Tuple

import pytest

from resonate_sync.api import handle
from resonate_sync.core import OPERATIONS, FakeClock, Resonate
from resonate_sync.events import (
    MAX_EVENT_SUBJECT_BYTES,
    EventPublisher,
    decode_token,
    digest_token,
    encode_id,
    event_subject,
    event_token,
    parse_event_subject,
)
from resonate_sync.journal import Journal
from resonate_sync.models import CreatePromiseRequest, PromiseState
from resonate_sync.subjects import delivery_subject_problem, subject_matches
from resonate_sync.ticker import Ticker

PREFIX = "resonate.events"
STATES = ("PENDING", "RESOLVED", "REJECTED", "REJECTED_CANCELED", "REJECTED_TIMEDOUT")
AWKWARD_IDS = [
    "order-1",
    "a.b.c",
    "with space",
    "*",
    ">",
    "a.*.>",
    "100%",
    "%41",
    "~tilde",
    "tab\there\nnewline",
    "caf\u00e9 \u65e5\u672c \U0001f600",
    "lone \ud800 surrogate",
    ".",
    " ",
    "\x00",
    "$SYS.x",
    "_INBOX.y",
    "__invoke:workflow/step=1,+@",
]


class TestTokenEncoding:
    @pytest.mark.parametrize("promise_id", AWKWARD_IDS)
    def test_round_trip(self, promise_id):
        """Every id, dots, wildcards, white space, non-ASCII and lone surrogates included, decodes back from its token."""
        subject = event_subject(PREFIX, "RESOLVED", promise_id)
        assert parse_event_subject(subject) == ("RESOLVED", promise_id)
        assert decode_token(event_token(PREFIX, promise_id)) == promise_id

    @pytest.mark.parametrize("promise_id", AWKWARD_IDS)
    def test_subject_is_one_literal_publishable_subject(self, promise_id):
        """The event subject has exactly four tokens past the prefix's, is printable ASCII and has no wildcard."""
        for state in STATES:
            subject = event_subject(PREFIX, state, promise_id)
            token = subject.rsplit(".", 1)[1]
            assert re.fullmatch(r"[\x21-\x7e]+", token) and not set(token) & {".", "*", ">"}, token
            assert delivery_subject_problem(subject) is None
            assert subject_matches(f"{PREFIX}.promises.{state.lower()}.*", subject)

    def test_plain_ids_read_as_themselves(self):
        """Ids of letters, digits and - _ : / = + @ , are their own token, so a person can read them."""
        assert encode_id("__invoke:wf/1=a+b@c,d_e-f") == "__invoke:wf/1=a+b@c,d_e-f"
        assert encode_id("a.b c") == "a%2Eb%20c"
        assert encode_id("\u00e9") == "%C3%A9"

    def test_same_token_in_every_state(self):
        """The token depends on the id alone (not the state), so one promise is watched with <prefix>.promises.*.<token>."""
        for promise_id in ("x" * 900, "x" * 1000, "y.z" * 300):
            tokens = {event_subject(PREFIX, state, promise_id).rsplit(".", 1)[1] for state in STATES}
            assert tokens == {event_token(PREFIX, promise_id)}

    def test_too_long_id_gets_a_digest_token(self):
        """An id whose subject would pass the limit gets "~" + its SHA-256: the subject stays short, decode_token says None."""
        long_id = "\u65e5" * 400  # 9 bytes a character once escaped
        subject = event_subject(PREFIX, "REJECTED_TIMEDOUT", long_id)
        assert len(subject) <= MAX_EVENT_SUBJECT_BYTES
        assert subject.endswith("." + digest_token(long_id)) and len(digest_token(long_id)) == 65
        assert parse_event_subject(subject) == ("REJECTED_TIMEDOUT", None)
        assert digest_token(long_id) != digest_token(long_id + "x")

    def test_longest_id_that_keeps_its_token(self):
        """An id just within the limit keeps its readable token; one byte more and it is a digest."""
        room = MAX_EVENT_SUBJECT_BYTES - len(f"{PREFIX}.promises.rejected_timedout.")
        assert event_token(PREFIX, "a" * room) == "a" * room
        assert event_token(PREFIX, "a" * (room + 1)).startswith("~")

    @pytest.mark.parametrize(
        "token",
        ["a.b", "a b", "%4", "%zz", "%2e", "%41", "%C3", "%FF", "", "~abc", "a~", "*", ">"],
        ids=["dot", "space", "short-escape", "not-hex", "lower-hex", "escaped-safe-char", "cut-utf8", "not-utf8",
             "empty", "short-digest", "tilde-inside", "star", "gt"],
    )
    def test_decode_refuses_what_encode_never_makes(self, token):
        """A token that no id encodes to (bad or non-canonical escapes, unsafe characters) is a ValueError naming it."""
        with pytest.raises(ValueError, match="not a promise id token"):
            decode_token(token)

    def test_encode_refuses_the_empty_id(self):
        """No promise has an empty id; encoding one is an error rather than an empty (invalid) token."""
        with pytest.raises(ValueError, match="never empty"):
            encode_id("")

    @pytest.mark.parametrize("subject", ["promises.resolved.x", "resonate.events.resolved.x", "a.promises..x", "x"])
    def test_parse_refuses_other_subjects(self, subject):
        """A subject not shaped <prefix>.promises.<state>.<token> is a ValueError."""
        with pytest.raises(ValueError):
            parse_event_subject(subject)


class GatedJournal:
    """A real journal whose ``wait_durable`` also waits for ``gate``: a test holds changes "not durable yet"."""

    def __init__(self, path) -> None:
        self.journal = Journal(str(path))
        self.journal.open()
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def encode(self, record):
        return self.journal.encode(record)

    def append_encoded(self, raws):
        return self.journal.append_encoded(raws)

    def is_durable(self, ticket):
        return self.gate.is_set() and self.journal.is_durable(ticket)

    def wait_durable(self, ticket, timeout=None):
        self.gate.wait()
        if self.fail:
            raise OSError("disk on fire")
        self.journal.wait_durable(ticket, timeout)


class Published:
    """The publish function of a publisher: (subject, body) pairs, in order, and a way to wait for n of them."""

    def __init__(self) -> None:
        self.messages: List[Tuple[str, dict]] = []
        self.cv = threading.Condition()
        self.fail = False

    def __call__(self, subject: str, payload: bytes) -> None:
        if self.fail:
            raise ConnectionError("not connected")
        with self.cv:
            self.messages.append((subject, json.loads(payload)))
            self.cv.notify_all()

    def wait(self, n: int, timeout: float = 5.0) -> List[Tuple[str, dict]]:
        with self.cv:
            assert self.cv.wait_for(lambda: len(self.messages) >= n, timeout), f"{len(self.messages)} of {n} events"
            return list(self.messages)

    def states(self) -> List[Tuple[str, str]]:
        """(state, id) of each event, from the subject; checked against the body."""
        out = []
        for subject, body in self.messages:
            state, promise_id = parse_event_subject(subject)
            assert (body["promise"]["state"], body["promise"]["id"]) == (state, promise_id)
            out.append((state, promise_id))
        return out


@pytest.fixture
def clock():
    return FakeClock(1_700_000_000_000)


@pytest.fixture
def wired(tmp_path, clock):
    """(core on a gated real journal, its journal, the publisher, what it published); stopped after the test."""
    journal = GatedJournal(tmp_path / "j")
    core = Resonate(clock, journal=journal)
    published = Published()
    publisher = EventPublisher(PREFIX, published, core.wait_durable).start()
    core.on_promises = publisher.changed
    yield core, journal, publisher, published
    journal.gate.set()
    publisher.stop()
    journal.journal.close()


def settle(publisher: EventPublisher, published: Published, n: int) -> List[Tuple[str, str]]:
    """The (state, id) of all events once ``n`` are out, after checking no more follow."""
    published.wait(n)
    time.sleep(0.05)
    assert len(published.messages) == n, published.states()
    return published.states()


class TestOneEventPerChange:
    def test_every_transition_once(self, wired, clock):
        """Create, resolve, reject, cancel and a timeout by the background sweep each publish exactly one event."""
        core, _, publisher, published = wired
        now = clock.now()
        for name in ("res", "rej", "can", "tmo"):
            core.promises_create(id=name, timeout=now + 1_000)
        core.promises_complete(id="res", state="RESOLVED")
        core.promises_complete(id="rej", state="REJECTED")
        core.promises_complete(id="can", state="REJECTED_CANCELED")
        clock.advance(1_000)
        Ticker(core, lambda subject, body: None).run_once()  # the sweep times "tmo" out
        assert settle(publisher, published, 8) == [
            ("PENDING", "res"), ("PENDING", "rej"), ("PENDING", "can"), ("PENDING", "tmo"),
            ("RESOLVED", "res"), ("REJECTED", "rej"), ("REJECTED_CANCELED", "can"), ("REJECTED_TIMEDOUT", "tmo"),
        ]  # fmt: skip

    def test_no_event_without_a_state_change(self, wired, clock):
        """Reads, idempotent retries of a create or a completion, searches and failed requests publish nothing."""
        core, _, publisher, published = wired
        core.promises_create(id="p", timeout=clock.now() + 10_000, idempotency_key="k")
        core.promises_create(id="p", timeout=clock.now() + 10_000, idempotency_key="k")
        core.promises_read(id="p")
        core.promises_search(id="*")
        core.promises_complete(id="p", state="RESOLVED", idempotency_key="c")
        core.promises_complete(id="p", state="RESOLVED", idempotency_key="c")
        with pytest.raises(Exception):
            core.promises_complete(id="p", state="REJECTED", idempotency_key="other", strict=True)
        with pytest.raises(Exception):
            core.promises_read(id="absent")
        assert settle(publisher, published, 2) == [("PENDING", "p"), ("RESOLVED", "p")]

    def test_lazy_timeout_is_the_one_event(self, wired, clock):
        """A read past the deadline times the promise out (one event); the later sweep finds nothing to announce."""
        core, _, publisher, published = wired
        core.promises_create(id="p", timeout=clock.now() + 5)
        clock.advance(10)
        assert core.promises_read(id="p").payload.promise.state == PromiseState.REJECTED_TIMEDOUT
        Ticker(core, lambda subject, body: None).run_once()
        assert settle(publisher, published, 2) == [("PENDING", "p"), ("REJECTED_TIMEDOUT", "p")]

    def test_body_is_the_promise_as_read_returns_it(self, wired, clock):
        """The event body is exactly the Payload of a promises.read reply for that promise in its new state."""
        core, _, _, published = wired
        core.promises_create(id="p", timeout=clock.now() + 10_000, param={"data": "aW4="}, tags={"k": "v"})
        core.promises_complete(id="p", state="RESOLVED", value={"data": "b3V0"})
        read = json.loads(handle(core, json.dumps({"operation": "promises.read", "payload": {"id": "p"}}).encode()))
        assert published.wait(2)[1][1] == read["response"]["Payload"]

    def test_in_order_per_promise_under_concurrency(self, wired, clock):
        """Many threads creating and resolving promises: each promise's events come PENDING then RESOLVED."""
        core, _, publisher, published = wired

        def work(worker: int) -> None:
            for i in range(50):
                core.promises_create(id=f"w{worker}.{i}", timeout=clock.now() + 100_000)
                core.promises_complete(id=f"w{worker}.{i}", state="RESOLVED")

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        events = settle(publisher, published, 400)
        seen: dict = {}
        for state, promise_id in events:
            seen.setdefault(promise_id, []).append(state)
        assert len(seen) == 200 and all(states == ["PENDING", "RESOLVED"] for states in seen.values())


class TestAfterDurable:
    def test_nothing_published_before_the_journal_says_durable(self, wired, clock):
        """While the journal has not made a change durable its event waits; it leaves once the change is."""
        core, journal, _, published = wired
        journal.gate.clear()
        pending = core.execute_nowait(OPERATIONS["promises.create"], CreatePromiseRequest(id="p", timeout=clock.now() + 1000))
        time.sleep(0.1)
        assert published.messages == []
        journal.gate.set()
        core.finish(pending)
        assert [s for s, _ in published.wait(1)] == [f"{PREFIX}.promises.pending.p"]

    def test_never_durable_never_announced(self, wired, clock, caplog):
        """A change the journal fails to make durable publishes no event, and counts as dropped."""
        core, journal, publisher, published = wired
        journal.fail = True
        with caplog.at_level(logging.CRITICAL), pytest.raises(Exception):
            core.promises_create(id="p", timeout=clock.now() + 1000)
        deadline = time.monotonic() + 5
        while publisher.dropped < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert published.messages == [] and publisher.dropped == 1


class TestPublisherLimits:
    def test_full_queue_drops_and_warns_once(self, clock, caplog):
        """Past max_queued waiting events, new ones are dropped (counted, one warning) instead of growing memory."""
        core = Resonate(clock)
        published = Published()
        publisher = EventPublisher(PREFIX, published, core.wait_durable, max_queued=3)  # not started: nothing drains
        core.on_promises = publisher.changed
        with caplog.at_level(logging.WARNING, logger="resonate_sync.events"):
            for i in range(5):
                core.promises_create(id=f"p{i}", timeout=clock.now() + 1000)
        assert publisher.dropped == 2
        assert len([r for r in caplog.records if "being dropped" in r.getMessage()]) == 1
        publisher.start()
        assert [promise_id for _, promise_id in settle(publisher, published, 3)] == ["p0", "p1", "p2"]
        publisher.stop()

    def test_publish_failure_drops_warns_once_and_recovers(self, clock, caplog):
        """While NATS refuses publishes, events are dropped with one warning; the next that goes out logs the recovery."""
        core = Resonate(clock)
        published = Published()
        publisher = EventPublisher(PREFIX, published, core.wait_durable).start()
        core.on_promises = publisher.changed
        published.fail = True
        with caplog.at_level(logging.INFO, logger="resonate_sync.events"):
            for i in range(3):
                core.promises_create(id=f"p{i}", timeout=clock.now() + 1000)
            deadline = time.monotonic() + 5
            while publisher.dropped < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            published.fail = False
            core.promises_create(id="after", timeout=clock.now() + 1000)
            published.wait(1)
            publisher.stop()
        messages = [r.getMessage() for r in caplog.records]
        assert publisher.dropped == 3 and publisher.published == 1
        assert len([m for m in messages if "being dropped" in m and "not connected" in m]) == 1
        assert any("published again (3 dropped so far)" in m for m in messages)

    def test_hanging_publish_never_holds_up_requests(self, clock):
        """A publish stuck in NATS (a slow or dead connection) blocks only the publisher: requests go on."""
        core = Resonate(clock)
        stuck = threading.Event()
        publisher = EventPublisher(PREFIX, lambda subject, body: stuck.wait(), core.wait_durable, max_queued=100).start()
        core.on_promises = publisher.changed
        started = time.monotonic()
        for i in range(500):
            core.promises_create(id=f"p{i}", timeout=clock.now() + 1000)
        assert time.monotonic() - started < 2.0
        # kept: the batch the publisher took before it stuck (0 to 100, as the threads were scheduled)
        # and at most 100 waiting; the rest were dropped at once
        assert 300 <= publisher.dropped <= 400 and publisher.published == 0
        stuck.set()
        publisher.stop()

    def test_request_path_untouched_without_events(self, clock):
        """With no publisher the core tells nobody: on_promises stays None and requests work as before."""
        core = Resonate(clock)
        assert core.on_promises is None
        assert core.promises_create(id="p", timeout=clock.now() + 1000).payload.promise.state == "PENDING"


class TestAcrossLeaderships:
    def test_a_ticket_of_an_ended_leadership_is_not_covered_by_a_later_one(self):
        """On the JetStream store a later durable ticket says nothing of one from an earlier leadership
        (its change may never have reached the stream): each ticket of a batch is waited for."""
        lost, kept = 1 << 40 | 5, 2 << 40 | 1  # epoch 1 seq 5 (never acknowledged), epoch 2 seq 1

        def wait_durable(ticket: int) -> None:
            if ticket == lost:
                raise RuntimeError("fenced")

        published = Published()
        publisher = EventPublisher(PREFIX, published, wait_durable)  # not started: one batch, sent by hand
        publisher._send([(lost, [pending("never-durable")]), (kept, [pending("durable")])])
        assert published.states() == [("PENDING", "durable")]


def pending(pid: str):
    """A PENDING promise as the core would report it."""
    core = Resonate(FakeClock(1_700_000_000_000))
    return core.execute(OPERATIONS["promises.create"], CreatePromiseRequest(id=pid, timeout=1_800_000_000_000)).payload.promise
