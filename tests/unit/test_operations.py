"""Every operation and background job of the core, by PROTOCOL.md sections 2.9 and 3–10."""

import base64
import itertools
import json
import logging
from datetime import datetime, timezone

import pytest

from core_situations import (
    CLAIM_TTL,
    COMPLETE_KEY,
    COMPLETED_STATES,
    CREATE_KEY,
    FAR,
    INT64_MAX,
    LEAF,
    NOW,
    RESUME_ID,
    ROOT,
    WORKER,
    Core,
    error_of,
    invoke_tags,
    new_core,
    promise_in,
    resume_task,
    task_in,
)
from state_invariants import ListJournal
from resonate_sync.core import FakeClock, Resonate
from resonate_sync.errors import Status
from resonate_sync.models import Mesg, PutSchedule, Schedule, Value, record_to_json
from resonate_sync.models import PromiseState as PS
from resonate_sync.models import TaskState as TS

PARAM = Value(headers={"h": "v"}, data="aGVsbG8=")
RESULT = Value(data="b2s=")
TRACE = {"traceparent": "00-abc-def-01", "tracestate": "vendor=1"}


def ids(result) -> list:
    return [p.id for p in result.payload.promises]


def schedule_ids(result) -> list:
    return [s.id for s in result.payload.schedules]


def create_all(core: Core, *promise_ids: str, **fields) -> None:
    for promise_id in promise_ids:
        core.r.promises_create(id=promise_id, timeout=FAR, **fields)


# =========================================================================== 3.1 promises.read


class TestPromisesRead:
    """promises.read (3.1)."""

    def test_returns_the_stored_promise(self):
        """Reading an existing promise answers 20000 with the promise as stored."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR, param=PARAM, tags={"a": "b"})
        result = core.r.promises_read(id="p")
        assert result.status == Status.OK
        assert result.payload.promise == core.promise("p")

    def test_ids_may_contain_slashes_and_colons(self):
        """Ids are arbitrary strings: foo/bar and a:b.c are read back by exactly that id."""
        core = new_core()
        create_all(core, "foo/bar", "a:b.c")
        assert core.r.promises_read(id="foo/bar").payload.promise.id == "foo/bar"
        assert core.r.promises_read(id="a:b.c").payload.promise.id == "a:b.c"

    @pytest.mark.parametrize("promise_id", ["bar", ""])
    def test_unknown_or_empty_id_is_404(self, promise_id):
        """An unknown or empty id answers 404 (40400), not 400."""
        core = new_core()
        create_all(core, "foo")
        err = error_of(core.r.promises_read, id=promise_id)
        assert (err.code, err.status) == (404, Status.PROMISE_NOT_FOUND)


# =========================================================================== 3.2 / 8 promises.search


class TestPromisesSearch:
    """promises.search (3.2) and search semantics (8)."""

    def go_store_example(self) -> Core:
        core = new_core()
        create_all(core, "foo.a", "foo.b", "a.bar", "b.bar")
        return core

    @pytest.mark.parametrize(
        "pattern, expected",
        [
            ("foo.*", ["foo.b", "foo.a"]),
            ("*.bar", ["b.bar", "a.bar"]),
            ("*", ["b.bar", "a.bar", "foo.b", "foo.a"]),
            ("foo.a", ["foo.a"]),
            ("*.*", ["b.bar", "a.bar", "foo.b", "foo.a"]),
            ("f*b", ["foo.b"]),
            ("*o*", ["foo.b", "foo.a"]),
            ("foo", []),
            ("foo.a*", ["foo.a"]),
        ],
    )
    def test_glob_on_the_go_store_example(self, pattern, expected):
        """With foo.a, foo.b, a.bar, b.bar created in that order, `*` globs match newest first."""
        assert ids(self.go_store_example().r.promises_search(id=pattern)) == expected

    def test_dot_is_not_a_wildcard(self):
        """Only `*` is special: `.` matches a literal dot."""
        core = new_core()
        create_all(core, "fooXa", "foo.a")
        assert ids(core.r.promises_search(id="foo.a")) == ["foo.a"]
        assert ids(core.r.promises_search(id="foo.*")) == ["foo.a"]

    def test_regex_characters_match_themselves(self):
        """Characters special to regular expressions ( + [ ] ( ) ? ^ $ | \\ ) are literal in a pattern."""
        core = new_core()
        create_all(core, "a+b", "a(b)", "a[1]", "aab", "a?c", "x^y$z|w\\v")
        assert ids(core.r.promises_search(id="a+*")) == ["a+b"]
        assert ids(core.r.promises_search(id="a(*)")) == ["a(b)"]
        assert ids(core.r.promises_search(id="*[1]")) == ["a[1]"]
        assert ids(core.r.promises_search(id="a?*")) == ["a?c"]
        assert ids(core.r.promises_search(id="x^y$z|w\\v")) == ["x^y$z|w\\v"]

    def test_prefix_covers_every_following_character(self):
        """A prefix pattern finds ids whose next character is the largest code point too."""
        core = new_core()
        create_all(core, "a\U0010ffffb", "a", "ab", "b", "a\U0010ffff")
        assert ids(core.r.promises_search(id="a*")) == ["a\U0010ffff", "ab", "a", "a\U0010ffffb"]
        assert ids(core.r.promises_search(id="a\U0010ffff*")) == ["a\U0010ffff", "a\U0010ffffb"]

    def test_results_are_newest_first_by_creation_not_by_id(self):
        """Ordering is descending creation order, whatever the ids sort to."""
        core = new_core()
        create_all(core, "b", "c", "a")
        assert ids(core.r.promises_search(id="*")) == ["a", "c", "b"]

    def states_fixture(self) -> Core:
        core = new_core()
        for state in (PS.PENDING, *COMPLETED_STATES):
            promise_in(core, state, promise_id=state.lower())
        return core

    @pytest.mark.parametrize(
        "states, expected",
        [
            (["PENDING"], {"pending"}),
            (["RESOLVED"], {"resolved"}),
            (["REJECTED"], {"rejected", "rejected_canceled", "rejected_timedout"}),
            (["REJECTED_CANCELED"], {"rejected_canceled"}),
            (["REJECTED_TIMEDOUT"], {"rejected_timedout"}),
            (["PENDING", "RESOLVED"], {"pending", "resolved"}),
            (["REJECTED", "REJECTED_CANCELED"], {"rejected", "rejected_canceled", "rejected_timedout"}),
            (["pending", "Resolved"], {"pending", "resolved"}),
            ([], {"pending", "resolved", "rejected", "rejected_canceled", "rejected_timedout"}),
        ],
    )
    def test_state_filter(self, states, expected):
        """States filter by union; REJECTED means all three rejected states; names are case-insensitive; [] means all."""
        result = self.states_fixture().r.promises_search(id="*", states=states)
        assert set(ids(result)) == expected
        assert len(ids(result)) == len(expected)

    def test_tags_must_all_match_exactly(self):
        """Every given tag must be present with exactly that value; extra tags on the promise are fine."""
        core = new_core()
        core.r.promises_create(id="both", timeout=FAR, tags={"a": "1", "b": "2", "c": "3"})
        core.r.promises_create(id="only-a", timeout=FAR, tags={"a": "1"})
        core.r.promises_create(id="other-b", timeout=FAR, tags={"a": "1", "b": "x"})
        assert ids(core.r.promises_search(id="*", tags={"a": "1", "b": "2"})) == ["both"]
        assert ids(core.r.promises_search(id="*", tags={"a": "1"})) == ["other-b", "only-a", "both"]
        assert ids(core.r.promises_search(id="*", tags={"missing": ""})) == []
        assert len(ids(core.r.promises_search(id="*", tags={}))) == 3

    @pytest.mark.parametrize("limit", [None, 0])
    def test_limit_defaults_to_100(self, limit):
        """An absent or zero limit returns at most 100 promises and a cursor to the rest."""
        core = new_core()
        create_all(core, *(f"p{i:03}" for i in range(101)))
        fields = {} if limit is None else {"limit": limit}
        first = core.r.promises_search(id="*", **fields)
        assert ids(first) == [f"p{i:03}" for i in range(100, 0, -1)]
        assert first.payload.cursor
        rest = core.r.promises_search(cursor=first.payload.cursor)
        assert ids(rest) == ["p000"] and rest.payload.cursor is None

    @pytest.mark.parametrize("limit", [1, 2, 50, 100])
    def test_limit_caps_the_page(self, limit):
        """A limit within 1..100 returns at most that many promises."""
        core = new_core()
        create_all(core, *(f"p{i:03}" for i in range(120)))
        assert len(ids(core.r.promises_search(id="*", limit=limit))) == limit

    @pytest.mark.parametrize("limit", [-1, 101, INT64_MAX])
    def test_limit_out_of_range_is_400(self, limit):
        """A limit below 0 or above 100 is rejected with 400 naming the limit."""
        err = error_of(new_core().r.promises_search, id="*", limit=limit)
        assert err.code == 400 and "limit" in err.message

    def test_id_is_required_without_cursor(self):
        """Without a cursor an empty id is 400 naming the id."""
        err = error_of(new_core().r.promises_search, id="")
        assert err.code == 400 and "id" in err.message

    @pytest.mark.parametrize("state", ["x", "COMPLETED", "REJECTED-CANCELED", ""])
    def test_unknown_state_is_400(self, state):
        """A `states` element that is not one of the five names is 400 naming the field."""
        err = error_of(new_core().r.promises_search, id="*", states=["PENDING", state])
        assert err.code == 400 and "states" in err.message

    def walk(self, core: Core, **query) -> list:
        pages = [core.r.promises_search(**query)]
        while pages[-1].payload.cursor:
            pages.append(core.r.promises_search(cursor=pages[-1].payload.cursor))
        return [ids(page) for page in pages]

    def test_paging_neither_repeats_nor_skips(self):
        """Following cursors walks every match once, newest first, a cursor iff a page is full."""
        core = new_core()
        create_all(core, *(f"p{i}" for i in range(7)))
        assert self.walk(core, id="*", limit=3) == [["p6", "p5", "p4"], ["p3", "p2", "p1"], ["p0"]]

    def test_last_page_may_be_empty(self):
        """When the matches divide evenly the last full page still has a cursor, leading to an empty page without one."""
        core = new_core()
        create_all(core, *(f"p{i}" for i in range(4)))
        assert self.walk(core, id="*", limit=2) == [["p3", "p2"], ["p1", "p0"], []]

    def test_cursor_keeps_the_filters(self):
        """A cursor continues the same id pattern, states and tags."""
        core = new_core()
        for i in range(8):
            core.r.promises_create(id=f"p{i}", timeout=FAR, tags={"odd": str(i % 2)})
            if i % 4 == 0:
                core.r.promises_complete(id=f"p{i}", state=PS.RESOLVED)
        core.r.promises_create(id="q9", timeout=FAR, tags={"odd": "1"})
        pages = self.walk(core, id="p*", states=["PENDING"], tags={"odd": "1"}, limit=2)
        assert pages == [["p7", "p5"], ["p3", "p1"], []]

    def test_cursor_ignores_the_other_fields(self):
        """With a cursor, id/states/tags/limit of the request are ignored; the cursor's query goes on."""
        core = new_core()
        create_all(core, *(f"p{i}" for i in range(5)))
        cursor = core.r.promises_search(id="p*", limit=2).payload.cursor
        result = core.r.promises_search(cursor=cursor, id="", states=["RESOLVED"], tags={"x": "y"}, limit=-5)
        assert ids(result) == ["p2", "p1"]

    def test_promises_created_after_the_first_page_do_not_appear_later(self):
        """Later pages only hold promises older than the cursor position."""
        core = new_core()
        create_all(core, *(f"p{i}" for i in range(4)))
        first = core.r.promises_search(id="*", limit=2)
        create_all(core, "late1", "late2")
        second = core.r.promises_search(cursor=first.payload.cursor)
        assert ids(first) == ["p3", "p2"] and ids(second) == ["p1", "p0"]

    def test_completion_between_pages_neither_repeats_nor_skips(self):
        """A promise that changes state between pages keeps its position: no repeats, no skips."""
        core = new_core()
        create_all(core, *(f"p{i}" for i in range(6)))
        first = core.r.promises_search(id="*", limit=3)
        core.r.promises_complete(id="p5", state=PS.RESOLVED)
        core.r.promises_complete(id="p1", state=PS.RESOLVED)
        second = core.r.promises_search(cursor=first.payload.cursor)
        assert ids(first) + ids(second) == ["p5", "p4", "p3", "p2", "p1", "p0"]

    def forged(self, cursor: str) -> list:
        body, mac = cursor.split(".")
        query = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        query["limit"] = 50
        tampered = base64.urlsafe_b64encode(json.dumps(query).encode()).rstrip(b"=").decode()
        flipped = ("A" if mac[0] != "A" else "B") + mac[1:]  # the last char may only carry padding bits
        return ["garbage", "a.b.c", "", ".", "%%%.%%%", f"{tampered}.{mac}", f"{body}.{flipped}", f"{body}é.{mac}"]

    def test_forged_or_garbled_cursor_is_400(self):
        """A cursor the server did not issue (garbled, tampered, re-signed) is rejected with 400."""
        core = new_core()
        create_all(core, *(f"p{i}" for i in range(3)))
        cursor = core.r.promises_search(id="*", limit=1).payload.cursor
        for bad in self.forged(cursor):
            if bad:
                err = error_of(core.r.promises_search, cursor=bad)
                assert err.code == 400, bad

    def test_cursor_of_another_server_or_kind_is_400(self):
        """A schedules cursor, or one issued by another core (another secret), is 400 for promises.search."""
        core, other = new_core(), new_core()
        for c in (core, other):
            create_all(c, "p1", "p2")
        core.r.schedules_create(id="s1", cron="* * * * *", promise_id="x")
        core.r.schedules_create(id="s2", cron="* * * * *", promise_id="y")
        foreign = other.r.promises_search(id="*", limit=1).payload.cursor
        schedules_cursor = core.r.schedules_search(id="*", limit=1).payload.cursor
        assert error_of(core.r.promises_search, cursor=foreign).code == 400
        assert error_of(core.r.promises_search, cursor=schedules_cursor).code == 400

    def test_search_applies_lazy_timeouts(self):
        """An expired PENDING promise is timed out by search: shown timed out, excluded from a PENDING filter."""
        core = new_core()
        core.r.promises_create(id="old", timeout=NOW + 1_000)
        core.r.promises_create(id="new", timeout=FAR)
        core.advance(1_000)
        assert ids(core.r.promises_search(id="*", states=["PENDING"])) == ["new"]
        assert core.promise("old").state == PS.REJECTED_TIMEDOUT
        shown = core.r.promises_search(id="old").payload.promises
        assert [(p.state, p.completed_on) for p in shown] == [(PS.REJECTED_TIMEDOUT, NOW + 1_000)]

    def test_lazy_timeout_in_search_can_fill_the_page_from_older_promises(self):
        """Promises excluded after their lazy timeout do not count towards the limit."""
        core = new_core()
        create_all(core, "a", "b")
        core.r.promises_create(id="c", timeout=NOW + 10)
        core.r.promises_create(id="d", timeout=NOW + 10)
        core.advance(10)
        assert ids(core.r.promises_search(id="*", states=["PENDING"], limit=2)) == ["b", "a"]


# =========================================================================== 3.3 promises.create


class TestPromisesCreate:
    """promises.create (3.3, 4.1)."""

    def test_creates_a_pending_promise(self):
        """A new id answers 20100 with a PENDING promise holding param, timeout, tags, key and createdOn = now."""
        core = new_core()
        result = core.r.promises_create(id="p", timeout=FAR, param=PARAM, tags={"a": "b"}, idempotency_key="k")
        promise = result.payload.promise
        assert result.status == Status.CREATED
        assert (promise.id, promise.state, promise.param, promise.value) == ("p", PS.PENDING, PARAM, Value())
        assert (promise.timeout, promise.tags, promise.idempotency_key_for_create) == (FAR, {"a": "b"}, "k")
        assert (promise.created_on, promise.completed_on, promise.idempotency_key_for_complete) == (NOW, None, None)
        assert core.promise("p") == promise

    def test_defaults(self):
        """Without optional fields: timeout 0, empty param and tags, no key."""
        promise = new_core().r.promises_create(id="p").payload.promise
        assert (promise.timeout, promise.param, promise.tags, promise.idempotency_key_for_create) == (0, Value(), {}, None)

    @pytest.mark.parametrize("timeout", [NOW, NOW - 1, 0, -5])
    def test_past_deadline_still_creates_pending(self, timeout):
        """The create reply shows PENDING even when timeout <= now; the promise times out on the next access."""
        core = new_core()
        assert core.r.promises_create(id="p", timeout=timeout).payload.promise.state == PS.PENDING
        assert core.r.promises_read(id="p").payload.promise.state == PS.REJECTED_TIMEDOUT

    @pytest.mark.parametrize("key", ["", "k"])
    def test_repeat_without_matching_key_is_409(self, key):
        """Creating an existing id without a stored key (or with a different request key) is 409."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR)
        err = error_of(core.r.promises_create, id="p", timeout=FAR, idempotency_key=key)
        assert (err.code, err.status) == (409, Status.PROMISE_ALREADY_EXISTS)

    def test_repeat_with_other_key_is_409(self):
        """A request key different from the stored one is 409; so is no key against a stored one."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR, idempotency_key="k")
        assert error_of(core.r.promises_create, id="p", idempotency_key="other").code == 409
        assert error_of(core.r.promises_create, id="p").code == 409

    @pytest.mark.parametrize("strict", [False, True])
    def test_matching_key_on_pending_returns_the_stored_promise(self, strict):
        """A matching key on a PENDING promise answers 20000 with the stored promise; the request's other fields are ignored."""
        core = new_core()
        stored = core.r.promises_create(id="p", timeout=FAR, param=PARAM, idempotency_key="k").payload.promise
        core.advance(5)
        result = core.r.promises_create(
            id="p", timeout=FAR + 1, param=RESULT, tags={"x": "y"}, idempotency_key="k", strict=strict
        )
        assert result.status == Status.OK and result.payload.promise == stored == core.promise("p")

    @pytest.mark.parametrize("state", COMPLETED_STATES)
    def test_matching_key_on_completed(self, state):
        """On a completed promise a matching key answers 20000 unless strict, which is 409."""
        core = new_core()
        stored = promise_in(core, state)
        result = core.r.promises_create(id="p", idempotency_key=CREATE_KEY)
        assert result.status == Status.OK and result.payload.promise == stored
        assert error_of(core.r.promises_create, id="p", idempotency_key=CREATE_KEY, strict=True).code == 409

    def test_empty_id_is_400(self):
        """An empty id is 400 naming the id."""
        err = error_of(new_core().r.promises_create, id="", timeout=FAR)
        assert err.code == 400 and "id" in err.message

    def test_empty_key_is_no_key(self):
        """An idempotency key of "" is stored as none."""
        core = new_core()
        assert core.r.promises_create(id="p", idempotency_key="").payload.promise.idempotency_key_for_create is None


# =========================================================================== 3.4 promises.createtask


class TestPromisesCreateTask:
    """promises.createtask (3.4) and its row of the task creation table (6.1)."""

    def test_creates_a_claimed_invoke_task(self):
        """With a resonate:invoke tag the reply holds the promise and a CLAIMED invoke task for the caller."""
        core = new_core()
        result = core.r.promises_createtask(
            id="p", timeout=FAR, tags=invoke_tags(), task_process_id="me", task_ttl=2_000, metadata=TRACE
        )
        assert result.status == Status.CREATED
        assert result.payload.promise == core.promise("p") and result.payload.promise.state == PS.PENDING
        task = core.task("__invoke:p")
        assert result.payload.task == task
        assert (task.state, task.counter, task.process_id, task.ttl) == (TS.CLAIMED, 1, "me", 2_000)
        assert (task.expires_at, task.timeout, task.root_promise_id, task.recv) == (NOW + 2_000, FAR, "p", WORKER)
        assert (task.attempt, task.created_on) == (0, NOW)
        assert task.mesg == Mesg(type="invoke", root="p", leaf="p", head=TRACE)

    @pytest.mark.parametrize("task_timeout, expected", [(0, FAR), (NOW + 5_000, NOW + 5_000)])
    def test_task_timeout_defaults_to_the_promise_timeout(self, task_timeout, expected):
        """taskTimeout 0/absent means the promise timeout; otherwise it is the task's timeout."""
        core = new_core()
        core.r.promises_createtask(id="p", timeout=FAR, tags=invoke_tags(), task_process_id="me", task_timeout=task_timeout)
        assert core.task("__invoke:p").timeout == expected

    def test_without_invoke_tag_there_is_no_task(self):
        """Without a resonate:invoke tag the promise is created (20100) and no task exists."""
        core = new_core()
        result = core.r.promises_createtask(id="p", timeout=FAR, task_process_id="me")
        assert result.status == Status.CREATED and result.payload.task is None
        assert core.r.state.tasks == {}

    def test_deduplicated_create_returns_no_task(self):
        """A matching key answers 20000 with the promise and no task, and creates none."""
        core = new_core()
        core.r.promises_createtask(id="p", timeout=FAR, tags=invoke_tags(), task_process_id="me", idempotency_key="k")
        result = core.r.promises_createtask(
            id="p", timeout=FAR, tags=invoke_tags(), task_process_id="other", idempotency_key="k"
        )
        assert result.status == Status.OK and result.payload.task is None
        assert core.task("__invoke:p").process_id == "me"

    def test_repeat_without_key_is_409(self):
        """createtask follows create's 409 rule."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR)
        assert error_of(core.r.promises_createtask, id="p", task_process_id="me").code == 409

    def test_zero_ttl_is_accepted_and_expires_at_the_next_sweep(self):
        """taskTtl 0 is valid; the claim lapses at the next expiry pass (INIT, counter 2)."""
        core = new_core()
        core.r.promises_createtask(id="p", timeout=FAR, tags=invoke_tags(), task_process_id="me", task_ttl=0)
        deliveries = core.tick(sent=None)
        task = core.task("__invoke:p")
        assert (task.state, task.counter, task.process_id) == (TS.INIT, 2, None)
        assert [(d.task_id, d.counter) for d in deliveries] == [("__invoke:p", 2)]

    @pytest.mark.parametrize(
        "fields, name",
        [({"id": ""}, "id"), ({"task_process_id": ""}, "taskProcessId"), ({"task_ttl": -1}, "taskTtl")],
    )
    def test_validation(self, fields, name):
        """Empty id, empty taskProcessId and a negative taskTtl are 400 naming the field."""
        request = {"id": "p", "timeout": FAR, "task_process_id": "me", "task_ttl": 1, **fields}
        err = error_of(new_core().r.promises_createtask, **request)
        assert err.code == 400 and name in err.message

    def test_claimed_task_is_not_delivered(self):
        """The caller's CLAIMED task is never sent while the claim holds."""
        core = new_core()
        core.r.promises_createtask(id="p", timeout=FAR, tags=invoke_tags(), task_process_id="me", task_ttl=60_000)
        assert core.tick() == []

    def test_delay_tag_is_not_applied(self):
        """resonate:delay does not change the createtask task's expiresAt (now + taskTtl)."""
        core = new_core()
        tags = invoke_tags(**{"resonate:delay": str(NOW + 99_000)})
        core.r.promises_createtask(id="p", timeout=FAR, tags=tags, task_process_id="me", task_ttl=1_000)
        assert core.task("__invoke:p").expires_at == NOW + 1_000

    def test_applies_lazy_timeout(self):
        """createtask on an expired PENDING promise times it out before deduplicating."""
        core = new_core()
        core.r.promises_create(id="p", timeout=NOW + 10, idempotency_key="k")
        core.advance(10)
        result = core.r.promises_createtask(id="p", task_process_id="me", idempotency_key="k")
        assert result.status == Status.OK
        assert result.payload.promise.state == PS.REJECTED_TIMEDOUT == core.promise("p").state


# =========================================================================== 3.5 / 4.2 promises.complete


class TestPromisesComplete:
    """promises.complete on a PENDING promise (3.5)."""

    @pytest.mark.parametrize("state", COMPLETED_STATES)
    def test_completes_to_the_requested_state(self, state):
        """Before the deadline any of the four states is reached with 20100, value, key and completedOn = now."""
        core = new_core()
        created = core.r.promises_create(id="p", timeout=FAR, param=PARAM, tags={"t": "1"}, idempotency_key="c")
        core.advance(1_000)
        result = core.r.promises_complete(id="p", state=state, value=RESULT, idempotency_key="k")
        promise = result.payload.promise
        assert result.status == Status.CREATED and promise == core.promise("p")
        assert (promise.state, promise.value, promise.idempotency_key_for_complete) == (state, RESULT, "k")
        assert promise.completed_on == NOW + 1_000
        before = created.payload.promise
        assert (promise.param, promise.timeout, promise.tags, promise.created_on) == (
            before.param,
            before.timeout,
            before.tags,
            before.created_on,
        )
        assert promise.idempotency_key_for_create == "c"

    def test_value_defaults_to_empty(self):
        """Without a value the completed promise's value is {} and no complete key is stored."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR)
        promise = core.r.promises_complete(id="p", state=PS.RESOLVED).payload.promise
        assert promise.value == Value() and promise.idempotency_key_for_complete is None

    @pytest.mark.parametrize("state", ["", "PENDING", "resolved", "Rejected", "CANCELED", "REJECTED_TIMEOUT"])
    def test_state_must_be_exactly_a_completed_name(self, state):
        """Anything but the four exact upper-case names is 400, checked before the promise is looked up."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR)
        for promise_id in ("p", "missing"):
            err = error_of(core.r.promises_complete, id=promise_id, state=state)
            assert err.code == 400 and "state" in err.message
        assert core.promise("p").state == PS.PENDING

    @pytest.mark.parametrize("promise_id", ["missing", ""])
    def test_unknown_promise_is_404(self, promise_id):
        """Completing an unknown or empty id is 404 (40400)."""
        err = error_of(new_core().r.promises_complete, id=promise_id, state=PS.RESOLVED)
        assert (err.code, err.status) == (404, Status.PROMISE_NOT_FOUND)


def expected_recomplete(stored: str, requested: str, strict: bool, key: str):
    """PROTOCOL.md 4.2's first table, evaluated in its order; returns the status."""
    match = key == COMPLETE_KEY
    if not strict and match:
        return Status.OK
    if strict and match and requested == stored:
        return Status.OK
    if not strict and stored == PS.REJECTED_TIMEDOUT:
        return Status.OK
    return {
        PS.RESOLVED: Status.PROMISE_ALREADY_RESOLVED,
        PS.REJECTED: Status.PROMISE_ALREADY_REJECTED,
        PS.REJECTED_CANCELED: Status.PROMISE_ALREADY_CANCELED,
        PS.REJECTED_TIMEDOUT: Status.PROMISE_ALREADY_TIMEDOUT,
    }[stored]


class TestCompletingACompletedPromise:
    """promises.complete on an already-completed promise (4.2, first table)."""

    @pytest.mark.parametrize(
        "stored, requested, strict, key",
        list(itertools.product(COMPLETED_STATES, COMPLETED_STATES, [False, True], [COMPLETE_KEY, "other", ""])),
    )
    def test_decision_table(self, stored, requested, strict, key):
        """Every (stored state, requested state, strict, key) answers as 4.2 says, and the promise never changes."""
        core = new_core()
        before = promise_in(core, stored)
        core.advance(7)
        expected = expected_recomplete(stored, requested, strict, key)
        if expected == Status.OK:
            result = core.r.promises_complete(id="p", state=requested, value=RESULT, idempotency_key=key, strict=strict)
            assert result.status == Status.OK and result.payload.promise == before
        else:
            err = error_of(
                core.r.promises_complete, id="p", state=requested, value=RESULT, idempotency_key=key, strict=strict
            )
            assert (err.code, err.status) == (403, expected)
        assert core.promise("p") == before

    def test_timeout_resolved_promise_gets_the_resolved_row(self):
        """A promise timed out via resonate:timeout is RESOLVED: a later complete without key match is 403 (40300)."""
        core = new_core()
        core.r.promises_create(id="p", timeout=NOW + 1, tags={"resonate:timeout": "true"})
        core.advance(1)
        core.r.promises_read(id="p")
        err = error_of(core.r.promises_complete, id="p", state=PS.RESOLVED)
        assert (err.code, err.status) == (403, Status.PROMISE_ALREADY_RESOLVED)

    def test_timed_out_promise_absorbs_non_strict_completes(self):
        """A promise that really timed out (no complete key) answers 20000 to a non-strict complete, 403 to a strict one."""
        core = new_core()
        core.r.promises_create(id="p", timeout=NOW + 1)
        core.advance(1)
        core.r.promises_read(id="p")
        result = core.r.promises_complete(id="p", state=PS.RESOLVED, idempotency_key="k")
        assert result.status == Status.OK and result.payload.promise.state == PS.REJECTED_TIMEDOUT
        err = error_of(core.r.promises_complete, id="p", state=PS.REJECTED_TIMEDOUT, strict=True)
        assert err.status == Status.PROMISE_ALREADY_TIMEDOUT


class TestCompletingAnExpiredPromise:
    """promises.complete on a PENDING promise whose deadline passed (4.2, second table; 4.3)."""

    def expired(self, tags=None) -> Core:
        core = new_core()
        core.r.promises_create(id="p", timeout=NOW + 1_000, tags=tags or {})
        core.advance(1_000)  # now == timeout: already expired (inclusive)
        return core

    @pytest.mark.parametrize("strict", [False, True])
    @pytest.mark.parametrize("requested", COMPLETED_STATES)
    def test_resonate_timeout_true_is_403_resolved(self, strict, requested):
        """Timeout state RESOLVED (resonate:timeout=true) answers 403 (40300) whatever strict says; the promise is stored RESOLVED."""
        core = self.expired({"resonate:timeout": "true"})
        err = error_of(core.r.promises_complete, id="p", state=requested, value=RESULT, strict=strict)
        assert (err.code, err.status) == (403, Status.PROMISE_ALREADY_RESOLVED)
        stored = core.promise("p")
        assert (stored.state, stored.value, stored.completed_on) == (PS.RESOLVED, Value(), NOW + 1_000)

    @pytest.mark.parametrize("requested", COMPLETED_STATES)
    def test_strict_is_403_timedout(self, requested):
        """Timeout state REJECTED_TIMEDOUT with strict answers 403 (40303) and the promise stays timed out."""
        core = self.expired()
        err = error_of(core.r.promises_complete, id="p", state=requested, strict=True)
        assert (err.code, err.status) == (403, Status.PROMISE_ALREADY_TIMEDOUT)
        assert core.promise("p").state == PS.REJECTED_TIMEDOUT

    @pytest.mark.parametrize("requested", COMPLETED_STATES)
    def test_non_strict_is_200_with_the_timed_out_promise(self, requested):
        """Timeout state REJECTED_TIMEDOUT without strict answers 20000 with the timed-out promise, value empty, completedOn = timeout."""
        core = self.expired()
        result = core.r.promises_complete(id="p", state=requested, value=RESULT, idempotency_key="k")
        promise = result.payload.promise
        assert result.status == Status.OK and promise == core.promise("p")
        assert (promise.state, promise.value, promise.completed_on) == (PS.REJECTED_TIMEDOUT, Value(), NOW + 1_000)
        assert promise.idempotency_key_for_complete is None

    def test_one_ms_before_the_deadline_completes(self):
        """At now = timeout - 1 the promise is not expired and completes normally."""
        core = new_core()
        core.r.promises_create(id="p", timeout=NOW + 1_000)
        core.advance(999)
        result = core.r.promises_complete(id="p", state=PS.REJECTED_TIMEDOUT)
        assert result.status == Status.CREATED and result.payload.promise.completed_on == NOW + 999


# =========================================================================== 4.3 lazy timeout


class TestLazyTimeout:
    """The timeout transition (4.3), applied by read/search/create/createtask/complete and the sweep, not by callbacks."""

    TOUCHES = {
        "read": lambda r: r.promises_read(id="p"),
        "search": lambda r: r.promises_search(id="*"),
        "create": lambda r: r.promises_create(id="p", idempotency_key="k"),
        "createtask": lambda r: r.promises_createtask(id="p", idempotency_key="k", task_process_id="me"),
        "complete": lambda r: r.promises_complete(id="p", state=PS.RESOLVED),
        "sweep": lambda r: r.tick(),
    }

    def expired(self, tags=None) -> Core:
        core = new_core()
        core.r.promises_create(id="p", timeout=NOW + 1_000, param=PARAM, tags=tags or {}, idempotency_key="k")
        core.advance(3_000)
        return core

    @pytest.mark.parametrize("touch", TOUCHES)
    @pytest.mark.parametrize("tags, state", [({}, PS.REJECTED_TIMEDOUT), ({"resonate:timeout": "true"}, PS.RESOLVED)])
    def test_touch_times_the_promise_out(self, touch, tags, state):
        """Each of these touches times an expired promise out: state by resonate:timeout, value {}, completedOn = timeout (not now)."""
        core = self.expired(tags)
        try:
            self.TOUCHES[touch](core.r)
        except Exception as exc:  # complete on a RESOLVED timeout answers 403; the timeout is kept
            assert getattr(exc, "code", None) == 403
        stored = core.promise("p")
        assert (stored.state, stored.value, stored.completed_on) == (state, Value(), NOW + 1_000)
        assert (stored.param, stored.idempotency_key_for_complete) == (PARAM, None)

    @pytest.mark.parametrize("value", ["TRUE", "True", "1", "yes", " true", ""])
    def test_only_exactly_true_resolves(self, value):
        """resonate:timeout other than exactly "true" times out to REJECTED_TIMEDOUT."""
        core = self.expired({"resonate:timeout": value})
        assert core.r.promises_read(id="p").payload.promise.state == PS.REJECTED_TIMEDOUT

    @pytest.mark.parametrize("register", ["callback", "subscribe"])
    def test_callbacks_do_not_time_out(self, register):
        """promises.callback/subscribe on an expired but unswept promise answer 20100 with it still PENDING."""
        core = self.expired()
        if register == "callback":
            result = core.r.promises_callback(promise_id="p", root_promise_id="r", recv=WORKER, timeout=FAR)
        else:
            result = core.r.promises_subscribe(id="s", promise_id="p", recv=WORKER, timeout=FAR)
        assert result.status == Status.CREATED and result.payload.promise.state == PS.PENDING
        assert core.promise("p").state == PS.PENDING

    def test_callback_on_expired_promise_fires_when_it_times_out(self):
        """A callback accepted on an expired-but-unswept promise becomes a task when the sweep times it out."""
        core = self.expired()
        core.r.promises_create(id="r", timeout=FAR)
        core.r.promises_callback(promise_id="p", root_promise_id="r", recv=WORKER, timeout=FAR)
        deliveries = core.tick()
        assert core.promise("p").state == PS.REJECTED_TIMEDOUT
        assert [d.task_id for d in deliveries] == ["__resume:r:p"]

    def test_sweep_times_out_every_due_promise_and_nothing_else(self):
        """The background sweep completes PENDING promises with timeout <= now and leaves later ones pending."""
        core = new_core()
        core.r.promises_create(id="due", timeout=NOW + 100)
        core.r.promises_create(id="edge", timeout=NOW + 200)
        core.r.promises_create(id="later", timeout=NOW + 201)
        core.advance(200)
        core.tick()
        states = {i: core.promise(i).state for i in ("due", "edge", "later")}
        assert states == {"due": PS.REJECTED_TIMEDOUT, "edge": PS.REJECTED_TIMEDOUT, "later": PS.PENDING}
        assert core.promise("due").completed_on == NOW + 100


# =========================================================================== 3.6 / 3.7 callbacks


class TestPromisesCallback:
    """promises.callback (3.6)."""

    def test_registers_a_resume_callback(self):
        """On a PENDING promise the callback is stored and returned with 20100: id __resume:<root>:<promise>, timeout, createdOn."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR)
        result = core.r.promises_callback(promise_id="p", root_promise_id="r", recv=WORKER, timeout=NOW + 5, metadata=TRACE)
        callback = result.payload.callback
        assert result.status == Status.CREATED and result.payload.promise == core.promise("p")
        assert (callback.id, callback.promise_id, callback.timeout, callback.created_on) == ("__resume:r:p", "p", NOW + 5, NOW)
        assert core.r.state.callbacks["p"]["__resume:r:p"] == callback
        assert (callback.recv, callback.mesg) == (WORKER, Mesg(type="resume", root="r", leaf="p", head=TRACE))

    def test_physical_recv_is_stored_as_is(self):
        """A {type, data} receiver is accepted and kept unchanged."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR)
        recv = {"type": "http", "data": {"url": "http://localhost:3000"}}
        core.r.promises_callback(promise_id="p", root_promise_id="r", recv=recv, timeout=FAR)
        assert core.r.state.callbacks["p"]["__resume:r:p"].recv == recv

    def test_same_callback_again_is_200_without_callback(self):
        """Re-registering the same callback id answers 20000 with the promise only, and keeps the first one."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR)
        first = core.r.promises_callback(promise_id="p", root_promise_id="r", recv=WORKER, timeout=FAR).payload.callback
        core.advance(5)
        again = core.r.promises_callback(promise_id="p", root_promise_id="r", recv="other", timeout=1)
        assert again.status == Status.OK and again.payload.callback is None
        assert core.r.state.callbacks["p"] == {"__resume:r:p": first}

    @pytest.mark.parametrize("state", COMPLETED_STATES)
    def test_completed_promise_stores_nothing(self, state):
        """On a completed promise the reply is 20000 with the promise; no callback, no task, no message."""
        core = new_core()
        stored = promise_in(core, state)
        result = core.r.promises_callback(promise_id="p", root_promise_id="r", recv=WORKER, timeout=FAR)
        assert result.status == Status.OK and result.payload == type(result.payload)(stored)
        assert core.r.state.callbacks == {} and core.r.state.tasks == {}
        assert core.tick() == []

    def test_unknown_promise_is_404(self):
        """A callback on an unknown promise is 404 (40400)."""
        err = error_of(new_core().r.promises_callback, promise_id="p", root_promise_id="r", recv=WORKER)
        assert (err.code, err.status) == (404, Status.PROMISE_NOT_FOUND)

    @pytest.mark.parametrize(
        "fields, name",
        [
            ({"promise_id": ""}, "promiseId"),
            ({"root_promise_id": ""}, "rootPromiseId"),
            ({"root_promise_id": "p"}, "promise"),
            ({"recv": None}, "recv"),
            ({"recv": 7}, "recv"),
        ],
    )
    def test_validation(self, fields, name):
        """Empty promiseId/rootPromiseId, promiseId = rootPromiseId and a missing recv are 400."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR)
        request = {"promise_id": "p", "root_promise_id": "r", "recv": WORKER, "timeout": FAR, **fields}
        err = error_of(core.r.promises_callback, **request)
        assert err.code == 400 and name in err.message


class TestPromisesSubscribe:
    """promises.subscribe (3.7)."""

    def test_registers_a_notify_subscription(self):
        """On a PENDING promise the subscription __notify:<promise>:<id> is stored and returned with 20100."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR)
        result = core.r.promises_subscribe(id="s.1", promise_id="p", recv=WORKER, timeout=NOW + 9, metadata=TRACE)
        callback = result.payload.callback
        assert result.status == Status.CREATED
        assert (callback.id, callback.promise_id, callback.timeout, callback.created_on) == ("__notify:p:s.1", "p", NOW + 9, NOW)
        assert callback.mesg == Mesg(type="notify", root="p", head=TRACE)

    def test_same_subscription_again_is_200_without_callback(self):
        """Re-subscribing with the same id answers 20000 without a callback."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR)
        core.r.promises_subscribe(id="s", promise_id="p", recv=WORKER, timeout=FAR)
        again = core.r.promises_subscribe(id="s", promise_id="p", recv=WORKER, timeout=FAR)
        assert again.status == Status.OK and again.payload.callback is None

    def test_completed_promise_stores_nothing(self):
        """On a completed promise the reply is 20000 and nothing is stored."""
        core = new_core()
        promise_in(core, PS.RESOLVED)
        result = core.r.promises_subscribe(id="s", promise_id="p", recv=WORKER, timeout=FAR)
        assert result.status == Status.OK and result.payload.callback is None
        assert core.r.state.callbacks == {}

    def test_unknown_promise_is_404(self):
        """A subscription on an unknown promise is 404."""
        assert error_of(new_core().r.promises_subscribe, id="s", promise_id="p", recv=WORKER).code == 404

    @pytest.mark.parametrize(
        "fields, name", [({"id": ""}, "id"), ({"promise_id": ""}, "promiseId"), ({"recv": None}, "recv")]
    )
    def test_validation(self, fields, name):
        """Empty id or promiseId and a missing recv are 400 naming the field."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR)
        err = error_of(core.r.promises_subscribe, **{"id": "s", "promise_id": "p", "recv": WORKER, **fields})
        assert err.code == 400 and name in err.message


# =========================================================================== 5 completion side effects


class TestCompletionSideEffects:
    """What completing a promise does in the same step (5)."""

    def with_callbacks(self) -> Core:
        core = new_core()
        core.r.promises_create(id="p", timeout=NOW + 1_000)
        for root in ("r3", "r1", "r2"):
            core.r.promises_create(id=root, timeout=FAR)
            core.r.promises_callback(promise_id="p", root_promise_id=root, recv=f"nats://{root}", timeout=NOW + 50_000)
        core.r.promises_subscribe(id="b", promise_id="p", recv="nats://b", timeout=NOW + 60_000)
        core.r.promises_subscribe(id="a", promise_id="p", recv={"type": "nats", "data": {"subject": "a"}}, timeout=FAR)
        return core

    COMPLETERS = {
        "complete": lambda core: core.r.promises_complete(id="p", state=PS.RESOLVED),
        "lazy timeout": lambda core: (core.clock.set(NOW + 1_000), core.r.promises_read(id="p")),
        "sweep": lambda core: (core.clock.set(NOW + 1_000), core.r.tick()),
    }

    @pytest.mark.parametrize("completer", COMPLETERS)
    def test_callbacks_become_init_tasks_in_callback_id_order(self, completer):
        """Every callback becomes an INIT task (same id, recv, mesg, timeout; counter 1, attempt 0, expiresAt 0, createdOn now), created in callback-id order."""
        core = self.with_callbacks()
        callbacks = dict(core.r.state.callbacks["p"])
        core.advance(10)
        self.COMPLETERS[completer](core)
        created = sorted((t for t in core.r.state.tasks.values()), key=lambda t: t.sort_id)
        assert [t.id for t in created] == sorted(callbacks)
        for task in created:
            callback = callbacks[task.id]
            assert (task.recv, task.mesg, task.timeout) == (callback.recv, callback.mesg, callback.timeout)
            assert task.root_promise_id == callback.mesg.root
            assert (task.counter, task.attempt, task.expires_at, task.created_on) == (1, 0, 0, core.now)
            assert task.process_id is None
        assert {t.state for t in created} == {TS.INIT}

    @pytest.mark.parametrize("completer", COMPLETERS)
    def test_callbacks_are_deleted(self, completer):
        """The callbacks are gone after the completion; registering again stores nothing."""
        core = self.with_callbacks()
        self.COMPLETERS[completer](core)
        assert "p" not in core.r.state.callbacks
        again = core.r.promises_callback(promise_id="p", root_promise_id="r1", recv=WORKER, timeout=FAR)
        assert again.status == Status.OK and again.payload.callback is None

    def test_notify_tasks_of_the_promise_are_not_completed_by_it(self):
        """The notify tasks made by the completion (root = this promise) stay INIT: step 2 runs before step 3."""
        core = self.with_callbacks()
        core.r.promises_complete(id="p", state=PS.RESOLVED)
        assert core.task("__notify:p:a").state == TS.INIT and core.task("__notify:p:b").state == TS.INIT

    @pytest.mark.parametrize("state", [TS.INIT, TS.ENQUEUED, TS.CLAIMED])
    def test_open_tasks_of_the_root_are_completed(self, state):
        """Completing a promise marks its INIT/ENQUEUED/CLAIMED root tasks COMPLETED with completedOn = now."""
        core = new_core()
        task_in(core, state)
        core.advance(3)
        core.r.promises_complete(id=ROOT, state=PS.REJECTED)
        task = core.task(RESUME_ID)
        assert (task.state, task.completed_on, task.process_id) == (TS.COMPLETED, core.now, None)

    def test_tasks_of_other_roots_are_untouched(self):
        """Completing a promise leaves tasks whose root is another promise as they were."""
        core = new_core()
        task = resume_task(core)
        core.r.promises_create(id="other", timeout=FAR)
        core.r.promises_complete(id="other", state=PS.RESOLVED)
        assert core.task(RESUME_ID) == task

    def test_finished_root_tasks_keep_their_state(self):
        """A root task that is already COMPLETED or TIMEDOUT is not touched by the root's completion."""
        core = new_core()
        done = task_in(core, TS.COMPLETED)
        core.advance(5)
        core.r.promises_complete(id=ROOT, state=PS.RESOLVED)
        assert core.task(RESUME_ID) == done

    def test_invoke_task_is_completed_with_its_promise(self):
        """An invoke task (root = its promise) is COMPLETED when the promise completes, and is never sent."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR, tags=invoke_tags())
        core.r.promises_complete(id="p", state=PS.RESOLVED)
        assert core.task("__invoke:p").state == TS.COMPLETED
        assert core.tick() == []


# =========================================================================== 6.1 / 2.9 task creation, reserved tags


class TestInvokeTaskCreation:
    """Tasks created with a promise (6.1) and the reserved tags that drive them (2.9)."""

    def test_create_with_invoke_tag_makes_an_init_task(self):
        """promises.create with resonate:invoke makes an INIT invoke task: counter 1, no owner, ttl 0, expiresAt 0, the promise timeout, the tag's recv."""
        core = new_core()
        result = core.r.promises_create(id="p", timeout=FAR, tags=invoke_tags("poll://any@default"), metadata=TRACE)
        assert result.status == Status.CREATED
        task = core.task("__invoke:p")
        assert (task.state, task.counter, task.process_id, task.ttl, task.expires_at) == (TS.INIT, 1, None, 0, 0)
        assert (task.timeout, task.recv, task.root_promise_id, task.attempt) == (FAR, "poll://any@default", "p", 0)
        assert (task.created_on, task.mesg) == (NOW, Mesg(type="invoke", root="p", leaf="p", head=TRACE))

    @pytest.mark.parametrize(
        "value, recv",
        [
            ("poll://any@default", "poll://any@default"),
            ("default", "default"),
            ("nats://subject.x", "nats://subject.x"),
            ("NaN", "NaN"),
            ('{"type":"http","data":{"url":"http://localhost:3000"}}', {"type": "http", "data": {"url": "http://localhost:3000"}}),
            ('{"type":"poll"}', {"type": "poll"}),
            ('"foo"', None),
            ("123", None),
            ("true", None),
            ("null", None),
            ("[]", None),
            ('{"type":""}', None),
            ('{"data":{}}', None),
            ('{"type":"http","url":"x"}', None),
            ('{"type":5}', None),
        ],
    )
    def test_invoke_tag_json_rules(self, value, recv):
        """Non-JSON is a logical recv; JSON counts only as {type (non-empty), data?}; any other JSON makes no task."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR, tags={"resonate:invoke": value})
        task = core.task("__invoke:p")
        assert (task.recv if task else None) == recv

    def test_delay_tag_holds_delivery_until_then(self):
        """resonate:delay sets the invoke task's expiresAt; it is not delivered before that time, and is at it."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR, tags=invoke_tags(**{"resonate:delay": str(NOW + 5_000)}))
        assert core.task("__invoke:p").expires_at == NOW + 5_000
        core.advance(4_999)
        assert core.tick() == []
        core.advance(1)
        assert [d.task_id for d in core.tick()] == ["__invoke:p"]

    @pytest.mark.parametrize(
        "value", ["soon", "", "1.5", "12ms", "1_700_000_005_000", " 1700000005000", "١٢", str(2**63), str(-(2**63) - 1)]
    )
    def test_unparsable_delay_is_ignored(self, value):
        """A resonate:delay that is not a base-10 int64 counts as 0: the task is delivered at once."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR, tags=invoke_tags(**{"resonate:delay": value}))
        assert core.task("__invoke:p").expires_at == 0
        assert [d.task_id for d in core.tick()] == ["__invoke:p"]

    def test_no_task_when_the_promise_already_existed(self):
        """A deduplicated create makes no new task."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR, idempotency_key="k")
        core.r.promises_create(id="p", timeout=FAR, idempotency_key="k", tags=invoke_tags())
        assert core.r.state.tasks == {}


# =========================================================================== 6.2 / 6.3 delivery


def two_tasks_on_one_root(core: Core) -> None:
    """Resume tasks __resume:root:l1 (older) and __resume:root:l2, both INIT."""
    core.r.promises_create(id=ROOT, timeout=FAR)
    for leaf in ("l1", "l2"):
        core.r.promises_create(id=leaf, timeout=FAR)
        core.r.promises_callback(promise_id=leaf, root_promise_id=ROOT, recv=WORKER, timeout=FAR)
    for leaf in ("l1", "l2"):
        core.r.promises_complete(id=leaf, state=PS.RESOLVED)


class TestDelivery:
    """Delivery selection and its outcomes (6.2, 6.3)."""

    def test_new_task_is_delivered_once_and_becomes_enqueued(self):
        """An INIT task is selected on the next tick; a successful send makes it ENQUEUED and it is not sent again."""
        core = new_core(task_claim_timeout_ms=20_000)
        resume_task(core)
        deliveries = core.tick()
        assert [(d.task_id, d.counter, d.recv) for d in deliveries] == [(RESUME_ID, 1, WORKER)]
        task = core.task(RESUME_ID)
        assert (task.state, task.expires_at) == (TS.ENQUEUED, NOW + 20_000)
        assert core.tick() == []

    def test_one_task_per_root_at_a_time(self):
        """A root's second task waits while the first is ENQUEUED or CLAIMED, and goes out once it is done."""
        core = new_core()
        two_tasks_on_one_root(core)
        assert [d.task_id for d in core.tick()] == ["__resume:root:l1"]
        assert core.tick() == []
        core.r.tasks_claim(id="__resume:root:l1", counter=1, process_id="w", ttl=60_000)
        assert core.tick() == []
        core.r.tasks_complete(id="__resume:root:l1", counter=1)
        assert [d.task_id for d in core.tick()] == ["__resume:root:l2"]

    def test_different_roots_go_out_in_the_same_tick(self):
        """Tasks of different roots are delivered together."""
        core = new_core()
        for i in range(3):
            core.r.promises_create(id=f"p{i}", timeout=FAR, tags=invoke_tags())
        assert sorted(d.task_id for d in core.tick()) == ["__invoke:p0", "__invoke:p1", "__invoke:p2"]

    def test_oldest_eligible_task_of_a_root_goes_first(self):
        """Among a root's eligible INIT tasks the oldest is delivered first, even when a newer one became due earlier."""
        core = new_core(task_retry_timeout_ms=10_000)
        two_tasks_on_one_root(core)
        assert [d.task_id for d in core.tick(sent=False)] == ["__resume:root:l1"]  # l1 retries in 10 s
        assert [d.task_id for d in core.tick(sent=True)] == ["__resume:root:l2"]
        core.r.tasks_claim(id="__resume:root:l2", counter=1, process_id="w", ttl=60_000)
        core.r.tasks_drop(id="__resume:root:l2", counter=1)  # l2: INIT, expiresAt 0
        core.advance(10_000)  # both due now
        assert [d.task_id for d in core.tick(sent=True)] == ["__resume:root:l1"]

    def test_claimed_createtask_task_blocks_its_root(self):
        """A task CLAIMED through createtask keeps other tasks of its root from delivery."""
        core = new_core()
        core.r.promises_createtask(id=ROOT, timeout=FAR, tags=invoke_tags(), task_process_id="me", task_ttl=60_000)
        core.r.promises_create(id=LEAF, timeout=FAR)
        core.r.promises_callback(promise_id=LEAF, root_promise_id=ROOT, recv=WORKER, timeout=FAR)
        core.r.promises_complete(id=LEAF, state=PS.RESOLVED)
        assert core.tick() == []
        core.r.tasks_complete(id=f"__invoke:{ROOT}", counter=1)
        assert [d.task_id for d in core.tick()] == [RESUME_ID]

    def test_failed_send_is_retried_after_the_retry_time(self):
        """A failed send leaves the task INIT with attempt + 1; it is not resent before the retry time and is at it."""
        core = new_core(task_retry_timeout_ms=5_000)
        resume_task(core)
        core.tick(sent=False)
        task = core.task(RESUME_ID)
        assert (task.state, task.attempt, task.counter) == (TS.INIT, 1, 1)
        core.advance(4_999)
        assert core.tick() == []
        core.advance(1)
        assert [d.task_id for d in core.tick(sent=False)] == [RESUME_ID]
        assert core.task(RESUME_ID).attempt == 2

    def test_unclaimed_delivery_is_redelivered_with_a_new_counter(self):
        """An ENQUEUED task not claimed by its claim deadline goes back to INIT (counter + 1) and out again; the old counter is refused."""
        core = new_core(task_claim_timeout_ms=20_000)
        resume_task(core)
        core.tick()
        core.advance(19_999)
        assert core.tick() == []
        core.advance(1)
        assert [(d.task_id, d.counter) for d in core.tick()] == [(RESUME_ID, 2)]
        assert error_of(core.r.tasks_claim, id=RESUME_ID, counter=1).status == Status.TASK_INVALID_COUNTER
        assert core.r.tasks_claim(id=RESUME_ID, counter=2).status == Status.CREATED

    def test_zero_claim_time_means_no_claim_deadline(self):
        """With time-to-claim 0 an ENQUEUED task keeps expiresAt 0 and is never redelivered."""
        core = new_core(task_claim_timeout_ms=0)
        resume_task(core)
        core.tick()
        assert core.task(RESUME_ID).expires_at == 0
        core.advance(10_000_000)
        assert core.tick() == [] and core.task(RESUME_ID).state == TS.ENQUEUED

    def test_lapsed_lease_is_revoked(self):
        """A CLAIMED task whose lease passed goes back to INIT with counter + 1; once reclaimed, the old holder's counter is refused."""
        core = new_core()
        task_in(core, TS.CLAIMED)
        core.advance(CLAIM_TTL - 1)
        core.tick()
        assert core.task(RESUME_ID).state == TS.CLAIMED
        core.advance(1)
        deliveries = core.tick(sent=None)
        task = core.task(RESUME_ID)
        assert (task.state, task.counter, task.process_id) == (TS.INIT, 2, None)
        assert [(d.task_id, d.counter) for d in deliveries] == [(RESUME_ID, 2)]
        core.r.tasks_claim(id=RESUME_ID, counter=2, process_id="successor", ttl=CLAIM_TTL)
        assert error_of(core.r.tasks_complete, id=RESUME_ID, counter=1).status == Status.TASK_INVALID_COUNTER
        assert error_of(core.r.tasks_drop, id=RESUME_ID, counter=1).status == Status.TASK_INVALID_COUNTER
        assert core.task(RESUME_ID).process_id == "successor"

    @pytest.mark.parametrize("state", [TS.ENQUEUED, TS.CLAIMED])
    def test_open_task_times_out_at_its_timeout(self, state):
        """An ENQUEUED/CLAIMED task whose own timeout passed becomes TIMEDOUT with completedOn = timeout."""
        core = new_core(task_claim_timeout_ms=60_000)
        resume_task(core, timeout=NOW + 5_000)
        if state == TS.ENQUEUED:
            core.tick()
        else:
            core.r.tasks_claim(id=RESUME_ID, counter=1, process_id="w", ttl=60_000)
        core.advance(5_000)
        core.tick()
        task = core.task(RESUME_ID)
        assert (task.state, task.completed_on, task.process_id) == (TS.TIMEDOUT, NOW + 5_000, None)

    @pytest.mark.parametrize("timeout", [0, NOW])
    def test_task_past_its_timeout_is_never_sent(self, timeout):
        """A callback with timeout 0 (or already past) yields a task that the tick marks TIMEDOUT without sending."""
        core = new_core()
        resume_task(core, timeout=timeout)
        assert core.tick() == []
        task = core.task(RESUME_ID)
        assert (task.state, task.completed_on) == (TS.TIMEDOUT, timeout)

    def test_resume_task_of_a_finished_root_is_completed_unsent(self):
        """A resume task whose root promise is no longer PENDING is marked COMPLETED and not sent."""
        core = new_core()
        core.r.promises_create(id=ROOT, timeout=FAR)
        core.r.promises_create(id=LEAF, timeout=FAR)
        core.r.promises_callback(promise_id=LEAF, root_promise_id=ROOT, recv=WORKER, timeout=FAR)
        core.r.promises_complete(id=ROOT, state=PS.RESOLVED)
        core.r.promises_complete(id=LEAF, state=PS.RESOLVED)
        core.advance(4)
        assert core.tick() == []
        task = core.task(RESUME_ID)
        assert (task.state, task.completed_on) == (TS.COMPLETED, NOW + 4)

    @pytest.mark.parametrize("sent", [True, False])
    def test_notify_is_attempted_once(self, sent):
        """A notify task is sent once and COMPLETED whether the send worked or not; it is never retried."""
        core = new_core(task_retry_timeout_ms=1_000)
        core.r.promises_create(id="p", timeout=FAR)
        core.r.promises_subscribe(id="s", promise_id="p", recv=WORKER, timeout=FAR)
        core.r.promises_complete(id="p", state=PS.RESOLVED)
        assert [d.task_id for d in core.tick(sent=sent)] == ["__notify:p:s"]
        assert core.task("__notify:p:s").state == TS.COMPLETED
        core.advance(60_000)
        assert core.tick() == []

    def test_send_result_is_ignored_once_the_task_moved_on(self):
        """A send reported after the task was claimed does not change the claimed task."""
        core = new_core()
        resume_task(core)
        deliveries = core.r.tick()
        core.r.tasks_claim(id=RESUME_ID, counter=1, process_id="w", ttl=60_000)
        claimed = core.task(RESUME_ID)
        core.r.record_deliveries([(d, False) for d in deliveries])
        assert core.task(RESUME_ID) == claimed

    def test_dropped_task_is_delivered_again_at_once(self):
        """tasks.drop makes the task eligible for immediate redelivery with the new counter."""
        core = new_core()
        task_in(core, TS.CLAIMED)
        core.r.tasks_drop(id=RESUME_ID, counter=1)
        assert [(d.task_id, d.counter) for d in core.tick()] == [(RESUME_ID, 2)]

    def test_batch_bounds_one_pass(self):
        """One tick selects at most batch_size messages; the rest follow on later ticks."""
        core = new_core(batch_size=2)
        for i in range(5):
            core.r.promises_create(id=f"p{i}", timeout=FAR, tags=invoke_tags())
        counts = [len(core.tick()) for _ in range(4)]
        assert counts == [2, 2, 1, 0]

    def test_trace_head_travels_with_the_message(self):
        """The delivery carries the trace head copied from the creating request's metadata."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR, tags=invoke_tags(), metadata={**TRACE, "other": "x"})
        assert [d.head for d in core.tick()] == [TRACE]


class TestMessageBodies:
    """The message sent to a receiver (6.4)."""

    BASE = "http://resonate.test:8001"

    def test_invoke_body(self):
        """invoke: {type, task (wire form), href {base, claim, complete, heartbeat}} with <taskId>/<counter> paths."""
        core = new_core(href_base=self.BASE + "/")
        core.r.promises_create(id="p1", timeout=FAR, tags=invoke_tags())
        (delivery,) = core.tick()
        task = "__invoke:p1/1"
        assert delivery.body == {
            "type": "invoke",
            "task": {"id": "__invoke:p1", "counter": 1, "timeout": FAR, "rootPromiseId": "p1", "createdOn": NOW},
            "href": {
                "base": self.BASE,
                "claim": f"{self.BASE}/tasks/claim/{task}",
                "complete": f"{self.BASE}/tasks/complete/{task}",
                "heartbeat": f"{self.BASE}/tasks/heartbeat/{task}",
            },
        }

    def test_resume_body_carries_the_current_counter(self):
        """resume: type resume and the task with its current counter in the body and the hrefs."""
        core = new_core(href_base=self.BASE)
        task_in(core, TS.CLAIMED)
        core.r.tasks_drop(id=RESUME_ID, counter=1)
        (delivery,) = core.tick()
        assert delivery.body["type"] == "resume"
        assert (delivery.body["task"]["id"], delivery.body["task"]["counter"]) == (RESUME_ID, 2)
        assert delivery.body["href"]["claim"] == f"{self.BASE}/tasks/claim/{RESUME_ID}/2"

    def test_notify_body_is_the_completed_promise(self):
        """notify: {type: notify, promise: the completed promise in wire form}."""
        core = new_core()
        core.r.promises_create(id="p", timeout=FAR, param=PARAM)
        core.r.promises_subscribe(id="s", promise_id="p", recv=WORKER, timeout=FAR)
        core.advance(3)
        core.r.promises_complete(id="p", state=PS.REJECTED, value=RESULT)
        (delivery,) = core.tick()
        assert delivery.body == {
            "type": "notify",
            "promise": {
                "id": "p",
                "state": "REJECTED",
                "param": {"headers": {"h": "v"}, "data": "aGVsbG8="},
                "value": {"data": "b2s="},
                "timeout": FAR,
                "createdOn": NOW,
                "completedOn": NOW + 3,
            },
        }


# =========================================================================== 3.15–3.18 task operations


class TestTasksClaim:
    """tasks.claim (3.15)."""

    def test_claim_of_an_invoke_task(self):
        """Claiming answers 20100 with the CLAIMED task, the root promise as stored and its href; no leaf."""
        core = new_core(href_base="http://h:1")
        core.r.promises_create(id="p", timeout=NOW + 1, tags=invoke_tags())
        core.advance(5)  # the root is expired but unswept: returned as stored
        result = core.r.tasks_claim(id="__invoke:p", counter=1, process_id="w", ttl=3_000)
        payload = result.payload
        assert result.status == Status.CREATED and payload.task == core.task("__invoke:p")
        assert (payload.task.state, payload.task.process_id, payload.task.expires_at) == (TS.CLAIMED, "w", core.now + 3_000)
        assert payload.root_promise == core.promise("p") and payload.root_promise.state == PS.PENDING
        assert payload.root_promise_href.endswith("/promises/p")
        assert (payload.leaf_promise, payload.leaf_promise_href) == (None, None)

    def test_claim_of_a_resume_task_includes_the_leaf(self):
        """A resume task's claim also returns the leaf (awaited) promise and its href."""
        core = new_core()
        resume_task(core)
        payload = core.r.tasks_claim(id=RESUME_ID, counter=1, process_id="w").payload
        assert payload.root_promise == core.promise(ROOT) and payload.root_promise_href.endswith(f"/promises/{ROOT}")
        assert payload.leaf_promise == core.promise(LEAF) and payload.leaf_promise_href.endswith(f"/promises/{LEAF}")

    def test_process_id_defaults_to_id_and_counter(self):
        """Without processId the owner is <id>/<counter>."""
        core = new_core()
        task_in(core, TS.CLAIMED)
        core.r.tasks_drop(id=RESUME_ID, counter=1)
        assert core.r.tasks_claim(id=RESUME_ID, counter=2).payload.task.process_id == f"{RESUME_ID}/2"

    def test_claim_from_enqueued(self):
        """An ENQUEUED task is claimable with its counter."""
        core = new_core()
        task_in(core, TS.ENQUEUED)
        assert core.r.tasks_claim(id=RESUME_ID, counter=1, process_id="w").status == Status.CREATED

    @pytest.mark.parametrize(
        "state, counter, status",
        [
            (TS.CLAIMED, 1, Status.TASK_ALREADY_CLAIMED),
            (TS.CLAIMED, 9, Status.TASK_ALREADY_CLAIMED),
            (TS.COMPLETED, 1, Status.TASK_ALREADY_COMPLETED),
            (TS.COMPLETED, 9, Status.TASK_ALREADY_COMPLETED),
            (TS.TIMEDOUT, 9, Status.TASK_ALREADY_COMPLETED),
            (TS.INIT, 2, Status.TASK_INVALID_COUNTER),
            (TS.ENQUEUED, -1, Status.TASK_INVALID_COUNTER),
        ],
    )
    def test_checks_in_order(self, state, counter, status):
        """CLAIMED → 40305 whatever the counter, then final → 40306, then counter mismatch → 40307."""
        core = new_core()
        before = task_in(core, state)
        err = error_of(core.r.tasks_claim, id=RESUME_ID, counter=counter, process_id="x")
        assert (err.code, err.status) == (403, status)
        assert core.task(RESUME_ID) == before

    def test_unknown_task_is_404(self):
        """Claiming an unknown task is 404 (40403)."""
        err = error_of(new_core().r.tasks_claim, id="__invoke:nope", counter=1)
        assert (err.code, err.status) == (404, Status.TASK_NOT_FOUND)

    def test_zero_ttl_lapses_at_the_next_sweep(self):
        """A claim with ttl 0 is revoked by the next tick (INIT, counter + 1)."""
        core = new_core()
        resume_task(core)
        core.r.tasks_claim(id=RESUME_ID, counter=1, process_id="w", ttl=0)
        core.tick(sent=None)
        assert (core.task(RESUME_ID).state, core.task(RESUME_ID).counter) == (TS.INIT, 2)

    @pytest.mark.parametrize("fields, name", [({"id": ""}, "id"), ({"counter": 0}, "counter"), ({"ttl": -1}, "ttl")])
    def test_validation(self, fields, name):
        """Empty id, counter 0 and a negative ttl are 400 naming the field."""
        err = error_of(new_core().r.tasks_claim, **{"id": "t", "counter": 1, "ttl": 1, **fields})
        assert err.code == 400 and name in err.message


class TestTasksComplete:
    """tasks.complete (3.16)."""

    def test_completes_a_claimed_task(self):
        """A CLAIMED task with its counter becomes COMPLETED (owner cleared, completedOn = now) with 20100; promises are untouched."""
        core = new_core()
        task_in(core, TS.CLAIMED)
        core.advance(9)
        result = core.r.tasks_complete(id=RESUME_ID, counter=1)
        task = result.payload.task
        assert result.status == Status.CREATED and task == core.task(RESUME_ID)
        assert (task.state, task.process_id, task.completed_on) == (TS.COMPLETED, None, NOW + 9)
        assert core.promise(ROOT).state == PS.PENDING

    @pytest.mark.parametrize("state", [TS.COMPLETED, TS.TIMEDOUT])
    @pytest.mark.parametrize("counter", [1, 7])
    def test_final_task_answers_200_for_any_counter(self, state, counter):
        """A COMPLETED or TIMEDOUT task answers 20000 with the task, whatever the counter."""
        core = new_core()
        before = task_in(core, state)
        result = core.r.tasks_complete(id=RESUME_ID, counter=counter)
        assert result.status == Status.OK and result.payload.task == before == core.task(RESUME_ID)

    @pytest.mark.parametrize("state", [TS.INIT, TS.ENQUEUED])
    def test_unclaimed_task_is_403_state_invalid(self, state):
        """Completing an INIT or ENQUEUED task is 403 (40308), even with the right counter."""
        core = new_core()
        task_in(core, state)
        assert error_of(core.r.tasks_complete, id=RESUME_ID, counter=1).status == Status.TASK_INVALID_STATE

    def test_stale_counter_is_403(self):
        """A CLAIMED task with another counter is 403 (40307)."""
        core = new_core()
        task_in(core, TS.CLAIMED)
        assert error_of(core.r.tasks_complete, id=RESUME_ID, counter=2).status == Status.TASK_INVALID_COUNTER

    def test_unknown_task_is_404(self):
        """Completing an unknown task is 404 (40403)."""
        assert error_of(new_core().r.tasks_complete, id="x", counter=1).status == Status.TASK_NOT_FOUND

    @pytest.mark.parametrize("fields, name", [({"id": ""}, "id"), ({"counter": 0}, "counter")])
    def test_validation(self, fields, name):
        """Empty id and counter 0 are 400 naming the field."""
        err = error_of(new_core().r.tasks_complete, **{"id": "t", "counter": 1, **fields})
        assert err.code == 400 and name in err.message


class TestTasksDrop:
    """tasks.drop (3.17)."""

    def test_drop_releases_with_a_new_counter(self):
        """A CLAIMED task with its counter goes back to INIT with counter + 1 and no owner (20100, showing the new counter)."""
        core = new_core()
        task_in(core, TS.CLAIMED)
        result = core.r.tasks_drop(id=RESUME_ID, counter=1)
        task = result.payload.task
        assert result.status == Status.CREATED and task == core.task(RESUME_ID)
        assert (task.state, task.counter, task.process_id, task.ttl, task.expires_at) == (TS.INIT, 2, None, 0, 0)

    @pytest.mark.parametrize("state", [TS.INIT, TS.ENQUEUED, TS.COMPLETED, TS.TIMEDOUT])
    @pytest.mark.parametrize("counter", [1, 5])
    def test_unclaimed_task_is_a_no_op(self, state, counter):
        """Dropping a task that is not CLAIMED answers 20000 with it unchanged, whatever the counter."""
        core = new_core()
        before = task_in(core, state)
        result = core.r.tasks_drop(id=RESUME_ID, counter=counter)
        assert result.status == Status.OK and result.payload.task == before == core.task(RESUME_ID)

    def test_stale_counter_is_403(self):
        """Dropping a CLAIMED task with another counter is 403 (40307)."""
        core = new_core()
        task_in(core, TS.CLAIMED)
        assert error_of(core.r.tasks_drop, id=RESUME_ID, counter=3).status == Status.TASK_INVALID_COUNTER

    def test_unknown_task_is_404(self):
        """Dropping an unknown task is 404 (40403)."""
        assert error_of(new_core().r.tasks_drop, id="x", counter=1).status == Status.TASK_NOT_FOUND


class TestTasksHeartbeat:
    """tasks.heartbeat (3.18)."""

    def test_extends_every_claimed_task_of_the_process(self):
        """Each CLAIMED task of the process gets expiresAt = now + its own ttl; others are untouched; the count is returned."""
        core = new_core()
        for i, ttl in enumerate((1_000, 5_000)):
            core.r.promises_create(id=f"p{i}", timeout=FAR, tags=invoke_tags())
            core.r.tasks_claim(id=f"__invoke:p{i}", counter=1, process_id="w", ttl=ttl)
        core.r.promises_create(id="mine-not", timeout=FAR, tags=invoke_tags())
        core.r.tasks_claim(id="__invoke:mine-not", counter=1, process_id="other", ttl=1_000)
        core.r.promises_create(id="enq", timeout=FAR, tags=invoke_tags())
        core.tick()
        core.advance(500)
        result = core.r.tasks_heartbeat(process_id="w")
        assert result.status == Status.OK and result.payload.tasks_affected == 2
        assert core.task("__invoke:p0").expires_at == NOW + 1_500
        assert core.task("__invoke:p1").expires_at == NOW + 5_500
        assert core.task("__invoke:mine-not").expires_at == NOW + 1_000

    def test_lapsed_but_unswept_lease_is_extended(self):
        """A claimed task whose lease passed but was not swept yet is still extended."""
        core = new_core()
        task_in(core, TS.CLAIMED)
        core.advance(CLAIM_TTL + 5)
        assert core.r.tasks_heartbeat(process_id="worker").payload.tasks_affected == 1
        core.tick()
        assert core.task(RESUME_ID).state == TS.CLAIMED

    def test_no_tasks_is_zero(self):
        """A process without claimed tasks gets tasksAffected 0; its completed tasks do not count."""
        core = new_core()
        task_in(core, TS.COMPLETED)
        assert core.r.tasks_heartbeat(process_id="worker").payload.tasks_affected == 0

    def test_process_id_is_required(self):
        """An empty processId is 400 naming it."""
        err = error_of(new_core().r.tasks_heartbeat, process_id="")
        assert err.code == 400 and "processId" in err.message


# =========================================================================== 3.8–3.11 schedules


def next_multiple(ms: int, step: int) -> int:
    """The first multiple of ``step`` strictly after ``ms``."""
    return (ms // step + 1) * step


class TestSchedulesCreate:
    """schedules.create (3.10)."""

    def test_creates_a_schedule(self):
        """A new schedule answers 20100 with every field, createdOn = now, the first occurrence after now, no lastRunTime."""
        core = new_core()
        result = core.r.schedules_create(
            id="s",
            description="nightly",
            cron="* * * * *",
            tags={"team": "a"},
            promise_id="s.{{.timestamp}}",
            promise_timeout=1_000,
            promise_param=PARAM,
            promise_tags={"k": "v"},
            idempotency_key="ik",
        )
        schedule = result.payload.schedule
        assert result.status == Status.CREATED and core.r.schedules_read(id="s").payload.schedule == schedule
        assert (schedule.id, schedule.description, schedule.cron, schedule.tags) == ("s", "nightly", "* * * * *", {"team": "a"})
        assert (schedule.promise_id, schedule.promise_timeout, schedule.promise_param) == ("s.{{.timestamp}}", 1_000, PARAM)
        assert (schedule.promise_tags, schedule.idempotency_key, schedule.created_on) == ({"k": "v"}, "ik", NOW)
        assert (schedule.next_run_time, schedule.last_run_time) == (next_multiple(NOW, 60_000), None)

    def test_repeat_without_matching_key_is_409(self):
        """An existing id without a matching key is 409 (40901)."""
        core = new_core()
        core.r.schedules_create(id="s", cron="* * * * *", promise_id="x", idempotency_key="k")
        for key in ("", "other"):
            err = error_of(core.r.schedules_create, id="s", cron="* * * * *", promise_id="x", idempotency_key=key)
            assert (err.code, err.status) == (409, Status.SCHEDULE_ALREADY_EXISTS)

    def test_no_key_on_either_side_is_409(self):
        """Without keys a repeated create is always 409."""
        core = new_core()
        core.r.schedules_create(id="s", cron="* * * * *", promise_id="x")
        assert error_of(core.r.schedules_create, id="s", cron="* * * * *", promise_id="x").code == 409

    def test_matching_key_returns_the_stored_schedule(self):
        """A matching key answers 20000 with the stored schedule; the request's other fields are not compared."""
        core = new_core()
        stored = core.r.schedules_create(id="s", cron="* * * * *", promise_id="x", idempotency_key="k").payload.schedule
        core.advance(120_000)
        result = core.r.schedules_create(id="s", cron="* * * * * *", promise_id="y", idempotency_key="k")
        assert result.status == Status.OK and result.payload.schedule == stored

    @pytest.mark.parametrize(
        "fields, name",
        [({"id": ""}, "id"), ({"cron": ""}, "cron"), ({"cron": "not a cron"}, "cron"), ({"promise_id": ""}, "promiseId")],
    )
    def test_validation(self, fields, name):
        """Empty id, empty or unparsable cron and empty promiseId are 400 naming the field."""
        err = error_of(new_core().r.schedules_create, **{"id": "s", "cron": "* * * * *", "promise_id": "x", **fields})
        assert err.code == 400 and name in err.message


class TestSchedulesReadDelete:
    """schedules.read (3.8) and schedules.delete (3.11)."""

    @pytest.mark.parametrize("schedule_id", ["nope", ""])
    def test_read_unknown_is_404(self, schedule_id):
        """Reading an unknown or empty schedule id is 404 (40401)."""
        err = error_of(new_core().r.schedules_read, id=schedule_id)
        assert (err.code, err.status) == (404, Status.SCHEDULE_NOT_FOUND)

    def test_delete_removes_and_answers_204(self):
        """Deleting answers 20400; the schedule is gone, and deleting again is 404."""
        core = new_core()
        core.r.schedules_create(id="s", cron="* * * * *", promise_id="x")
        assert core.r.schedules_delete(id="s").status == Status.NO_CONTENT
        assert error_of(core.r.schedules_read, id="s").code == 404
        assert error_of(core.r.schedules_delete, id="s").status == Status.SCHEDULE_NOT_FOUND

    def test_delete_stops_firing_but_keeps_created_promises(self):
        """After deletion nothing fires; promises the schedule already made remain."""
        core = new_core()
        core.r.schedules_create(id="s", cron="* * * * * *", promise_id="s.{{.timestamp}}", promise_timeout=FAR)
        core.advance(1_000)
        core.tick()
        core.r.schedules_delete(id="s")
        core.advance(5_000)
        core.tick()
        assert ids(core.r.promises_search(id="s.*")) == [f"s.{NOW + 1_000}"]


class TestSchedulesSearch:
    """schedules.search (3.9)."""

    def fixture(self) -> Core:
        core = new_core()
        for sid, tags in (("foo.a", {"t": "1"}), ("foo.b", {"t": "2"}), ("a.bar", {"t": "1"}), ("b.bar", {})):
            core.r.schedules_create(id=sid, cron="* * * * *", promise_id=sid, tags=tags, promise_tags={"t": "1"})
        return core

    @pytest.mark.parametrize(
        "query, expected",
        [
            ({"id": "foo.*"}, ["foo.b", "foo.a"]),
            ({"id": "*.bar"}, ["b.bar", "a.bar"]),
            ({"id": "*"}, ["b.bar", "a.bar", "foo.b", "foo.a"]),
            ({"id": "*", "tags": {"t": "1"}}, ["a.bar", "foo.a"]),
        ],
    )
    def test_glob_and_tags(self, query, expected):
        """Ids glob with `*`, tags match the schedule's tags (not promiseTags), newest first."""
        assert schedule_ids(self.fixture().r.schedules_search(**query)) == expected

    def test_filled_keys_are_right(self):
        """Search results carry the schedule's id, cron, tags, nextRunTime, idempotencyKey and createdOn."""
        core = self.fixture()
        (found,) = core.r.schedules_search(id="foo.a").payload.schedules
        stored = core.r.schedules_read(id="foo.a").payload.schedule
        picked = ("id", "cron", "tags", "last_run_time", "next_run_time", "idempotency_key", "created_on")
        assert [getattr(found, k) for k in picked] == [getattr(stored, k) for k in picked]

    def test_paging(self):
        """Cursors walk all schedules once, newest first; a cursor iff the page is full."""
        core = self.fixture()
        first = core.r.schedules_search(id="*", limit=3)
        assert schedule_ids(first) == ["b.bar", "a.bar", "foo.b"] and first.payload.cursor
        core.r.schedules_create(id="late", cron="* * * * *", promise_id="x")
        second = core.r.schedules_search(cursor=first.payload.cursor)
        assert schedule_ids(second) == ["foo.a"] and second.payload.cursor is None

    def test_default_limit_is_100(self):
        """Without a limit at most 100 schedules come back, with a cursor."""
        core = new_core()
        for i in range(101):
            core.r.schedules_create(id=f"s{i:03}", cron="* * * * *", promise_id="x")
        first = core.r.schedules_search(id="*")
        assert len(schedule_ids(first)) == 100 and first.payload.cursor

    @pytest.mark.parametrize("query, name", [({"id": ""}, "id"), ({"id": "*", "limit": -1}, "limit"), ({"id": "*", "limit": 101}, "limit")])
    def test_validation(self, query, name):
        """Empty id without cursor and a limit outside 0..100 are 400."""
        err = error_of(new_core().r.schedules_search, **query)
        assert err.code == 400 and name in err.message

    def test_forged_cursor_is_400(self):
        """A cursor not issued for schedules.search by this server is 400."""
        core, other = self.fixture(), self.fixture()
        create_all(core, "p1", "p2")
        promise_cursor = core.r.promises_search(id="*", limit=1).payload.cursor
        foreign = other.r.schedules_search(id="*", limit=1).payload.cursor
        assert core.r.schedules_search(id="*", limit=1).payload.cursor != foreign
        for bad in ("garbage", "a.b", promise_cursor, foreign):
            assert error_of(core.r.schedules_search, cursor=bad).code == 400


# =========================================================================== 7.1 cron


class TestCron:
    """Cron syntax and next occurrences (7.1)."""

    def next_run(self, cron: str, now: int = NOW) -> int:
        core = new_core()
        core.clock.set(now)
        return core.r.schedules_create(id="s", cron=cron, promise_id="x").payload.schedule.next_run_time

    @pytest.mark.parametrize(
        "cron, expected",
        [
            ("* * * * *", next_multiple(NOW, 60_000)),
            ("* * * * * *", NOW + 1_000),
            ("*/5 * * * * *", next_multiple(NOW, 5_000)),
            ("15 * * * * *", NOW - NOW % 60_000 + (75_000 if NOW % 60_000 >= 15_000 else 15_000)),
            ("0,30 * * * * *", next_multiple(NOW, 30_000)),
            ("@every 2s", NOW + 2_000),
            ("@every 1m30s", NOW + 90_000),
            ("@every 500ms", NOW + 1_000),
        ],
    )
    def test_next_occurrence(self, cron, expected):
        """5 fields fire at second 0; 6 fields have seconds FIRST; @every adds its duration (sub-second rounds up to 1 s)."""
        assert self.next_run(cron) == expected

    def test_strictly_after_now_at_whole_seconds(self):
        """The next occurrence is strictly after now, on a whole second, also when now is mid-second."""
        assert self.next_run("* * * * * *", NOW + 1_000) == NOW + 2_000
        assert self.next_run("* * * * * *", NOW + 1_500) == NOW + 2_000

    @pytest.mark.parametrize(
        "cron",
        [
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
            "0 0 ? * MON",
            "0 0 1 JAN *",
            "0 9-17/2 * * MON-FRI",
            "0-30/10 * * * * *",
            "1,2,3 * * * *",
            "TZ=UTC * * * * *",
            "CRON_TZ=Europe/Berlin 0 0 * * *",
            "@every 1h",
            "@every 2562047h",
        ],
    )
    def test_accepted_forms(self, cron):
        """Descriptors, lists, ranges, steps, `?`, names and a TZ= prefix are accepted, with a future nextRunTime."""
        assert self.next_run(cron) > NOW

    @pytest.mark.parametrize(
        "cron",
        ["nope", "* * * *", "* * * * * * *", "60 * * * *", "* 24 * * *", "@reboot", "@every", "@every -1s", "@every 0s", "@every 5",
         "@every 2562048h", "@every 9999999999999h"],
    )
    def test_rejected_forms(self, cron):
        """Anything else is 400 naming cron."""
        err = error_of(new_core().r.schedules_create, id="s", cron=cron, promise_id="x")
        assert err.code == 400 and "cron" in err.message

    NEVER_FIRES = [
        "0 0 31 2 *",
        "* * 31 4 *",
        "0 0 30 2 *",
        "0 0 30,31 2 *",
        "59 23 31 4,6,9,11 *",
        "0 0 0 31 2 *",
        "* * * 31 4 *",
        "0 0 0 30 2 *",
        "TZ=UTC 0 0 31 2 *",
        "CRON_TZ=Europe/Berlin * * 31 4 *",
        "TZ=America/New_York 0 0 0 30 2 *",
    ]

    @pytest.mark.parametrize("cron", NEVER_FIRES)
    def test_never_firing_expressions_are_400(self, cron):
        """An expression no date satisfies (31 February, 31 April) is 400 naming cron and why; nothing stored."""
        core = new_core()
        err = error_of(core.r.schedules_create, id="s", cron=cron, promise_id="x")
        assert err.code == 400
        assert "the field cron must be a valid cron expression" in err.message and "never fires" in err.message
        assert error_of(core.r.schedules_read, id="s").code == 404

    @pytest.mark.parametrize("cron", NEVER_FIRES)
    def test_never_firing_expressions_are_400_through_the_envelope(self, cron):
        """Through the request envelope the same expressions answer an error envelope with code 400 naming cron."""
        reply = new_core().call("schedules.create", {"id": "s", "cron": cron, "promiseId": "x"})
        assert reply["success"] is False and reply["error"]["code"] == 400
        assert "the field cron must be a valid cron expression" in reply["error"]["message"]

    @pytest.mark.parametrize(
        "cron, expected",
        [
            ("0 0 29 2 *", datetime(2024, 2, 29, tzinfo=timezone.utc)),
            ("0 0 31 * *", datetime(2023, 12, 31, tzinfo=timezone.utc)),
            ("0 0 31 2 MON", datetime(2024, 2, 5, tzinfo=timezone.utc)),
        ],
    )
    def test_rare_or_either_day_expressions_fire(self, cron, expected):
        """29 February, the 31st, and 31 February OR a weekday (both day fields restricted: either) are accepted."""
        assert self.next_run(cron) == int(expected.timestamp() * 1000)

    def test_no_occurrence_left_is_400(self):
        """An expression whose next occurrence would fall after the year 9999 is 400 naming cron too."""
        core = new_core()
        core.clock.set(int(datetime(9999, 6, 1, tzinfo=timezone.utc).timestamp() * 1000))
        err = error_of(core.r.schedules_create, id="s", cron="@yearly", promise_id="x")
        assert err.code == 400 and "the field cron must be a valid cron expression" in err.message


# =========================================================================== 7.2 / 7.3 firing


class TestScheduleFiring:
    """Schedule firing (7.2, 7.3)."""

    def schedule(self, core: Core, **fields) -> None:
        request = {"id": "s", "cron": "* * * * * *", "promise_id": "{{.id}}-{{.timestamp}}", "promise_timeout": 5_000}
        core.r.schedules_create(**{**request, **fields})

    def test_not_fired_before_next_run_time(self):
        """Nothing fires while nextRunTime is in the future."""
        core = new_core()
        self.schedule(core)
        core.advance(999)
        core.tick()
        assert ids(core.r.promises_search(id="*")) == []

    def test_firing_creates_the_promise(self):
        """A firing creates id = template(id, planned time), param, timeout = planned + promiseTimeout, tags + resonate:schedule/invocation, createdOn = now."""
        core = new_core()
        self.schedule(core, promise_param=PARAM, promise_tags={"k": "v"})
        core.advance(1_300)
        core.tick()
        promise = core.promise(f"s-{NOW + 1_000}")
        assert (promise.state, promise.param, promise.timeout, promise.created_on) == (PS.PENDING, PARAM, NOW + 6_000, NOW + 1_300)
        assert promise.tags == {"k": "v", "resonate:schedule": "s", "resonate:invocation": "true"}
        assert promise.idempotency_key_for_create is None

    def test_read_after_firing_shows_last_and_next_run(self):
        """After firing, lastRunTime is the fired occurrence and nextRunTime the following one."""
        core = new_core()
        self.schedule(core)
        core.advance(1_300)
        core.tick()
        schedule = core.r.schedules_read(id="s").payload.schedule
        assert (schedule.last_run_time, schedule.next_run_time) == (NOW + 1_000, NOW + 2_000)

    @pytest.mark.parametrize(
        "template, expected",
        [
            ("report-{{.timestamp}}", f"report-{NOW + 1_000}"),
            ("{{.id}}", "sched"),
            ("{{ .id }}/{{ .timestamp }}", f"sched/{NOW + 1_000}"),
            ("fixed", "fixed"),
        ],
    )
    def test_template_variables(self, template, expected):
        """{{.id}} is the schedule id and {{.timestamp}} the planned fire time in ms."""
        core = new_core()
        self.schedule(core, id="sched", promise_id=template)
        core.advance(1_000)
        core.tick()
        assert ids(core.r.promises_search(id="*")) == [expected]

    def test_missed_occurrences_are_caught_up(self):
        """After downtime every missed occurrence fires, each timed from its planned time, until nextRunTime is in the future."""
        core = new_core()
        self.schedule(core)
        core.advance(5_500)
        for _ in range(6):
            core.tick()
        planned = [NOW + k * 1_000 for k in range(1, 6)]
        assert ids(core.r.promises_search(id="s-*")) == [f"s-{t}" for t in reversed(planned)]
        assert [core.promise(f"s-{t}").timeout for t in planned] == [t + 5_000 for t in planned]
        schedule = core.r.schedules_read(id="s").payload.schedule
        assert (schedule.last_run_time, schedule.next_run_time) == (NOW + 5_000, NOW + 6_000)

    def test_every_schedule_fires_on_its_interval(self):
        """@every 2s fires every two seconds from its creation time."""
        core = new_core()
        self.schedule(core, cron="@every 2s")
        for _ in range(3):
            core.advance(2_000)
            core.tick()
        assert ids(core.r.promises_search(id="s-*")) == [f"s-{NOW + k}" for k in (6_000, 4_000, 2_000)]

    def test_invoke_tag_makes_an_invoke_task(self):
        """A resonate:invoke tag in promiseTags makes the fired promise's invoke task, delivered like any other."""
        core = new_core()
        self.schedule(core, promise_tags=invoke_tags())
        core.advance(1_000)
        deliveries = core.tick()
        promise_id = f"s-{NOW + 1_000}"
        assert core.task(f"__invoke:{promise_id}").recv == WORKER
        assert [d.task_id for d in deliveries] == [f"__invoke:{promise_id}"]

    def test_existing_promise_is_not_overwritten(self):
        """When the generated id already exists, the existing promise is left exactly as it was."""
        core = new_core()
        existing = core.r.promises_create(id="fixed", timeout=FAR, param=RESULT, tags={"mine": "1"}).payload.promise
        self.schedule(core, promise_id="fixed")
        core.advance(1_000)
        core.tick()
        assert core.promise("fixed") == existing

    def parked_logs(self, caplog) -> list:
        logged = caplog.records
        return [r for r in logged if r.name == "resonate_sync.core.schedules" and "not fire again" in r.getMessage()]

    def test_stored_schedule_that_never_fires_is_parked_once(self, caplog):
        """A journaled schedule whose cron never fires is logged once and parked at nextRunTime = int64 max, durably."""
        stored = Schedule(id="old", cron="0 0 31 2 *", promise_id="old-{{.timestamp}}", next_run_time=NOW + 1_000,
                          created_on=NOW - 1_000, sort_id=1)  # fmt: skip
        earlier = [record_to_json(PutSchedule(stored))]
        journal, clock = ListJournal(), FakeClock(NOW)
        core = Core(Resonate.recover(None, earlier, clock=clock, journal=journal), clock)
        core.r.promises_create(id="p", timeout=NOW + 1_000)
        core.advance(1_000)
        with caplog.at_level(logging.ERROR):
            core.tick()
            core.tick()
        assert len(self.parked_logs(caplog)) == 1
        schedule = core.r.schedules_read(id="old").payload.schedule
        assert (schedule.next_run_time, schedule.last_run_time) == (INT64_MAX, None)
        assert ids(core.r.promises_search(id="old-*")) == []
        assert core.promise("p").state == PS.REJECTED_TIMEDOUT

        caplog.clear()
        restarted = Resonate.recover(None, earlier + journal.records, clock=FakeClock(NOW + 10_000))
        with caplog.at_level(logging.ERROR):
            restarted.tick()
        assert restarted.state.schedules["old"].next_run_time == INT64_MAX and not self.parked_logs(caplog)

    def test_schedule_past_its_last_occurrence_is_parked(self, caplog):
        """When the occurrence after the due one falls after the year 9999: logged once, parked, nothing fired."""
        core = new_core()
        core.clock.set(int(datetime(9998, 12, 31, tzinfo=timezone.utc).timestamp() * 1000))
        core.r.schedules_create(id="y", cron="@yearly", promise_id="y-{{.timestamp}}")
        due = int(datetime(9999, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
        assert core.r.schedules_read(id="y").payload.schedule.next_run_time == due
        core.clock.set(due)
        with caplog.at_level(logging.ERROR):
            core.tick()
            core.tick()
        assert len(self.parked_logs(caplog)) == 1
        assert core.r.schedules_read(id="y").payload.schedule.next_run_time == INT64_MAX
        assert ids(core.r.promises_search(id="y-*")) == []

    def test_huge_promise_timeout_is_clamped(self):
        """planned time + promiseTimeout is clamped to the int64 maximum (10.3)."""
        core = new_core()
        self.schedule(core, promise_timeout=INT64_MAX)
        core.advance(1_000)
        core.tick()
        assert core.promise(f"s-{NOW + 1_000}").timeout == INT64_MAX


# =========================================================================== 3.12–3.14 / 9 locks


class TestLocks:
    """locks.acquire/release/heartbeat (3.12–3.14) and the situations of section 9."""

    def held(self, core: Core, execution: str = "E", ttl: int = 1_000, process: str = "P") -> None:
        core.r.locks_acquire(resource_id="res", execution_id=execution, process_id=process, ttl=ttl)

    def test_acquire_free_lock(self):
        """No lock: acquire answers 20100 with {resourceId, executionId, processId, ttl, expiresAt = now + ttl}."""
        core = new_core()
        result = core.r.locks_acquire(resource_id="res", execution_id="E", process_id="P", ttl=1_000)
        lock = result.payload.lock
        assert result.status == Status.CREATED and core.r.state.locks["res"] == lock
        assert (lock.resource_id, lock.execution_id, lock.process_id, lock.ttl, lock.expires_at) == ("res", "E", "P", 1_000, NOW + 1_000)

    @pytest.mark.parametrize("elapsed", [500, 1_000, 5_000])
    def test_holder_reacquires_even_after_expiry(self, elapsed):
        """Held by the same execution (expired or not, not swept): 20100, processId/ttl/expiresAt overwritten."""
        core = new_core()
        self.held(core)
        core.advance(elapsed)
        lock = core.r.locks_acquire(resource_id="res", execution_id="E", process_id="P2", ttl=7).payload.lock
        assert (lock.process_id, lock.ttl, lock.expires_at) == ("P2", 7, NOW + elapsed + 7)

    @pytest.mark.parametrize("elapsed", [500, 1_000, 5_000])
    def test_other_execution_is_refused_until_swept(self, elapsed):
        """Held by another execution: 403 (40304), even when expired, until the sweeper deleted it."""
        core = new_core()
        self.held(core)
        core.advance(elapsed)
        err = error_of(core.r.locks_acquire, resource_id="res", execution_id="F", process_id="Q", ttl=1)
        assert (err.code, err.status) == (403, Status.LOCK_ALREADY_ACQUIRED)

    def test_sweep_deletes_expired_locks_only(self):
        """The sweeper deletes locks with expiresAt <= now and no others; a swept lock is free again."""
        core = new_core()
        self.held(core, ttl=1_000)
        core.r.locks_acquire(resource_id="later", execution_id="E", process_id="P", ttl=1_001)
        core.advance(1_000)
        core.tick()
        assert sorted(core.r.state.locks) == ["later"]
        assert core.r.locks_acquire(resource_id="res", execution_id="F", process_id="Q", ttl=1).status == Status.CREATED

    def test_zero_ttl_is_swept_at_the_next_pass(self):
        """A lock with ttl 0 is gone after the next tick."""
        core = new_core()
        self.held(core, ttl=0)
        core.tick()
        assert core.r.state.locks == {}

    @pytest.mark.parametrize("elapsed", [0, 5_000])
    def test_holder_releases_without_expiry_check(self, elapsed):
        """The holder's release answers 20400 and deletes, expired or not."""
        core = new_core()
        self.held(core)
        core.advance(elapsed)
        assert core.r.locks_release(resource_id="res", execution_id="E").status == Status.NO_CONTENT
        assert core.r.state.locks == {}

    def test_release_by_others_or_of_nothing_is_404(self):
        """Releasing a free lock, another execution's lock or a swept one is 404 (40402)."""
        core = new_core()
        assert error_of(core.r.locks_release, resource_id="res", execution_id="E").status == Status.LOCK_NOT_FOUND
        self.held(core)
        assert error_of(core.r.locks_release, resource_id="res", execution_id="F").status == Status.LOCK_NOT_FOUND
        assert "res" in core.r.state.locks
        core.advance(1_000)
        core.tick()
        assert error_of(core.r.locks_release, resource_id="res", execution_id="E").status == Status.LOCK_NOT_FOUND

    def test_heartbeat_refreshes_every_lock_of_the_process(self):
        """Heartbeat sets expiresAt = now + each lock's ttl on every lock of the process (even expired, unswept) and returns the count."""
        core = new_core()
        core.r.locks_acquire(resource_id="a", execution_id="E1", process_id="P", ttl=100)
        core.r.locks_acquire(resource_id="b", execution_id="E2", process_id="P", ttl=5_000)
        core.r.locks_acquire(resource_id="c", execution_id="E3", process_id="Q", ttl=100)
        core.advance(1_000)
        result = core.r.locks_heartbeat(process_id="P")
        assert result.status == Status.OK and result.payload.locks_affected == 2
        expires = {k: lock.expires_at for k, lock in core.r.state.locks.items()}
        assert expires == {"a": NOW + 1_100, "b": NOW + 6_000, "c": NOW + 100}
        assert core.r.locks_heartbeat(process_id="nobody").payload.locks_affected == 0

    def test_reacquire_moves_the_lock_to_the_new_process(self):
        """After a holder re-acquires with another processId, heartbeats count it for the new process only."""
        core = new_core()
        self.held(core, process="P")
        self.held(core, process="P2")
        assert core.r.locks_heartbeat(process_id="P").payload.locks_affected == 0
        assert core.r.locks_heartbeat(process_id="P2").payload.locks_affected == 1

    @pytest.mark.parametrize(
        "operation, fields, name",
        [
            ("acquire", {"resource_id": ""}, "resourceId"),
            ("acquire", {"execution_id": ""}, "executionId"),
            ("acquire", {"process_id": ""}, "processId"),
            ("acquire", {"ttl": -1}, "ttl"),
            ("release", {"resource_id": ""}, "resourceId"),
            ("release", {"execution_id": ""}, "executionId"),
            ("heartbeat", {"process_id": ""}, "processId"),
        ],
    )
    def test_validation(self, operation, fields, name):
        """Empty ids and a negative ttl are 400 naming the field."""
        base = {
            "acquire": {"resource_id": "r", "execution_id": "e", "process_id": "p", "ttl": 1},
            "release": {"resource_id": "r", "execution_id": "e"},
            "heartbeat": {"process_id": "p"},
        }[operation]
        err = error_of(getattr(new_core().r, f"locks_{operation}"), **{**base, **fields})
        assert err.code == 400 and name in err.message


# =========================================================================== 10.3 clamping


class TestClamping:
    """now + ttl never overflows: it is clamped to the int64 maximum (10.3)."""

    def test_lock_acquire_and_heartbeat(self):
        """A lock's expiresAt with a huge ttl is INT64_MAX, at acquire and at heartbeat."""
        core = new_core()
        lock = core.r.locks_acquire(resource_id="r", execution_id="e", process_id="p", ttl=INT64_MAX).payload.lock
        assert lock.expires_at == INT64_MAX
        core.advance(10)
        core.r.locks_heartbeat(process_id="p")
        assert core.r.state.locks["r"].expires_at == INT64_MAX

    def test_task_claim_and_heartbeat(self):
        """A claim lease with a huge ttl ends at INT64_MAX, at claim and at heartbeat."""
        core = new_core()
        resume_task(core)
        assert core.r.tasks_claim(id=RESUME_ID, counter=1, process_id="w", ttl=INT64_MAX).payload.task.expires_at == INT64_MAX
        core.advance(10)
        core.r.tasks_heartbeat(process_id="w")
        assert core.task(RESUME_ID).expires_at == INT64_MAX

    def test_createtask_ttl(self):
        """createtask with a huge taskTtl gives expiresAt INT64_MAX."""
        core = new_core()
        core.r.promises_createtask(id="p", timeout=FAR, tags=invoke_tags(), task_process_id="w", task_ttl=INT64_MAX)
        assert core.task("__invoke:p").expires_at == INT64_MAX
