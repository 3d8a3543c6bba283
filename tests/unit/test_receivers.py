"""Receivers that name a NATS subject are checked when a request names them (PROTOCOL.md 13.7)."""

from __future__ import annotations

import itertools
import json
import logging

import attrs
import pytest

from resonate_sync.api import handle
from resonate_sync.config import Config, ConfigError, load_config
from resonate_sync.core import CoreSettings, Resonate
from resonate_sync.core.clock import FakeClock
from resonate_sync.core.receivers import nats_subject_of, poll_subject_of
from resonate_sync.errors import BadRequest
from resonate_sync.subjects import parse_patterns, pattern_problem, subject_matches
from resonate_sync.ticker import Ticker

FAR = 4_102_444_800_000
OWN = "resonate.server"
_ids = itertools.count()

BAD_SUBJECTS = {
    "sys": "$SYS.REQ.SERVER.PING",
    "jetstream-api": "$JS.API.STREAM.LIST",
    "kv": "$KV.bucket.key",
    "services": "$SRV.PING",
    "inbox": "_INBOX.abc.def",
    "inbox-bare": "_INBOX",
    "star": "a.*",
    "gt": "a.>",
    "star-inside": "a*b",
    "nul": "a\x00b",
    "space": "a b",
    "tab": "a\tb",
    "newline": "a\r\nPUB x 1",
    "non-ascii": "ü.x",
    "surrogate": "a\ud800",
    "empty-token": "a..b",
    "leading-dot": ".a",
    "trailing-dot": "a.",
    "too-long": "a" * 256,
    "very-long": "x." * 2500,
    "own-subject": OWN,
}


def receivers(subject: str):
    """The NATS receiver forms naming ``subject``, the persistent (JetStream) ones included."""
    return [
        f"nats://{subject}", {"type": "nats", "data": {"subject": subject}},
        f"nats+js://{subject}", {"type": "nats", "data": {"subject": subject, "jetstream": True}},
    ]  # fmt: skip


def core_with(**settings) -> Resonate:
    core = Resonate(FakeClock(1_000), settings=CoreSettings(reserved_subjects=(OWN,), **settings))
    core.promises_create(id="p", timeout=FAR)
    core.promises_create(id="root", timeout=FAR)
    return core


def attempts(core: Resonate, recv):
    """Every way a request names a receiver: callback, subscribe, invoke tag on create and createtask."""
    tag = recv if isinstance(recv, str) else json.dumps(recv)
    n = next(_ids)
    return {
        "payload.recv (callback)": lambda: core.promises_callback(
            promise_id="p", root_promise_id="root", recv=recv, timeout=FAR),
        "payload.recv (subscribe)": lambda: core.promises_subscribe(id=f"s{n}", promise_id="p", recv=recv, timeout=FAR),
        "payload.tags.resonate:invoke (create)": lambda: core.promises_create(
            id=f"q{n}", timeout=FAR, tags={"resonate:invoke": tag}),
        "payload.tags.resonate:invoke (createtask)": lambda: core.promises_createtask(
            id=f"t{n}", timeout=FAR, tags={"resonate:invoke": tag}, task_process_id="w", task_ttl=1000),
    }


class TestSubjectRules:
    @pytest.mark.parametrize("subject", list(BAD_SUBJECTS.values()), ids=list(BAD_SUBJECTS))
    def test_bad_subjects_are_a_400_naming_the_field(self, subject):
        """A receiver naming a subject the server must not publish to is a 400 naming the field, in every route."""
        core = core_with()
        for recv in receivers(subject):
            for where, attempt in attempts(core, recv).items():
                with pytest.raises(BadRequest) as caught:
                    attempt()
                assert where.split(" ")[0] + ":" in caught.value.message
        assert set(core.state.promises) == {"p", "root"} and not core.state.tasks and not core.state.callbacks

    @pytest.mark.parametrize("subject", ["workers", "workers.eu-1", "a-b_c.D~!#%&", "x" * 255, "_inbox.lower", "INBOX.x"])
    def test_valid_subjects_are_stored(self, subject):
        """A literal printable subject of at most 255 bytes outside $ and _INBOX is accepted in every route."""
        core = core_with()
        for recv in receivers(subject):
            for attempt in attempts(core, recv).values():
                attempt()

    @pytest.mark.parametrize("recv", ["nats://", {"type": "nats"}, {"type": "nats", "data": {"subject": 7}},
                                      {"type": "nats", "data": "x"}])
    def test_nats_receivers_without_a_subject_are_a_400(self, recv):
        """A NATS receiver that names no subject could never be delivered: 400."""
        with pytest.raises(BadRequest, match="needs a subject"):
            core_with().promises_subscribe(id="s", promise_id="p", recv=recv, timeout=FAR)

    @pytest.mark.parametrize("recv", ["default", "http://localhost:3000",
                                      {"type": "poll", "data": {"group": "$SYS"}}, "nats:/$SYS", "POLL://any@a.b"])
    def test_other_receivers_are_stored_as_given(self, recv):
        """Receivers the server never publishes to are stored unchecked, as the protocol asks."""
        core = core_with()
        core.promises_subscribe(id="s", promise_id="p", recv=recv, timeout=FAR)
        assert nats_subject_of(recv) is None

    def test_over_the_wire_the_error_is_a_400_envelope(self):
        """Over the envelope, a bad receiver is a 400 reply naming payload.recv."""
        core = core_with()
        raw = json.dumps({"operation": "promises.subscribe",
                          "payload": {"id": "s", "promiseId": "p", "recv": "nats://$JS.API.STREAM.LIST"}}).encode()
        error = json.loads(handle(core, raw))["error"]
        assert error["code"] == 400 and "payload.recv" in error["message"] and "'$'" in error["message"]


class TestDeliveryAllow:
    def test_receivers_outside_the_patterns_are_a_400(self):
        """With --delivery-allow set, a receiver outside every pattern is a 400 naming the patterns."""
        core = core_with(delivery_allow=("resonate.recv.>", "workers.*"))
        for recv in ("nats://other", "nats://workers.a.b", "nats://resonate.recv"):
            with pytest.raises(BadRequest, match=r"--delivery-allow resonate\.recv\.>,workers\.\*"):
                core.promises_subscribe(id="s", promise_id="p", recv=recv, timeout=FAR)

    def test_receivers_inside_the_patterns_are_stored(self):
        """A receiver matching one pattern is accepted."""
        core = core_with(delivery_allow=("resonate.recv.>", "workers.*"))
        for recv in ("nats://resonate.recv.g", "nats://resonate.recv.g.id", "nats://workers.a"):
            core.promises_subscribe(id="s", promise_id="p", recv=recv, timeout=FAR)

    def test_patterns_never_admit_reserved_subjects(self):
        """A pattern of '>' still refuses $ subjects, inboxes and the server's own subject."""
        core = core_with(delivery_allow=(">",))
        for subject in ("$SYS.x", "_INBOX.x", OWN):
            with pytest.raises(BadRequest):
                core.promises_subscribe(id="s", promise_id="p", recv=f"nats://{subject}", timeout=FAR)

    @pytest.mark.parametrize("pattern, subject, matches", [
        ("a.>", "a.b", True), ("a.>", "a.b.c", True), ("a.>", "a", False),
        ("a.*", "a.b", True), ("a.*", "a.b.c", False), ("*.b", "a.b", True),
        ("a.b", "a.b", True), ("a.b", "a.c", False), (">", "x", True), ("a.*.c", "a.b.c", True),
    ])
    def test_patterns_match_as_nats_subscriptions_do(self, pattern, subject, matches):
        """'*' matches one token and '>' one or more trailing tokens."""
        assert subject_matches(pattern, subject) is matches

    @pytest.mark.parametrize("pattern", ["a.>.b", "a*", "a.b>", "a..b", "", "a b", "ü"])
    def test_bad_patterns_are_named(self, pattern):
        """A pattern NATS would not accept is refused."""
        assert pattern_problem(pattern)

    def test_the_setting_is_a_comma_separated_list(self):
        """--delivery-allow splits on commas and ignores blanks around them."""
        assert parse_patterns(" a.> , b.* ,") == ("a.>", "b.*")

    def test_config_refuses_a_bad_pattern_naming_the_key(self):
        """A bad pattern in any layer is a ConfigError naming the flag or key."""
        with pytest.raises(ConfigError, match="delivery"):
            load_config(mode="dev", env={}, overrides={"delivery_allow": "a.>.b"})
        with pytest.raises(ConfigError):
            Config(delivery_allow="a.>,$$ x")


class TestDelivery:
    def test_stored_bad_receivers_are_never_published_to(self, caplog):
        """A receiver stored before the checks (or since excluded) is not published to; it is logged once and retried."""
        core = core_with()
        core.promises_create(id="q", timeout=FAR, tags={"resonate:invoke": "nats://ok"})
        # As an older server would have stored it, bypassing today's checks:
        task = core.state.tasks["__invoke:q"]
        core.state.tasks["__invoke:q"] = attrs.evolve(task, recv="nats://" + "x." * 2500)
        published = []
        ticker = Ticker(core, lambda subject, body: published.append(subject))
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                ticker.run_once()
                core.clock.advance(core.settings.task_retry_timeout_ms)
        assert published == []
        warned = [r for r in caplog.records if "cannot be delivered" in r.message]
        assert len(warned) == 1 and "255" in warned[0].message


BAD_POLL = {
    "dot-in-group": ("poll://any@a.b", "group"),
    "empty-group": ("poll://any@", "group"),
    "empty-address": ("poll://", "group"),
    "star-group": ("poll://any@a*", "group"),
    "gt-group": ("poll://any@>", "group"),
    "space-group": ("poll://any@a b", "group"),
    "non-ascii-group": ("poll://any@ü", "group"),
    "surrogate-group": ("poll://any@\ud800", "group"),
    "unicast-without-id": ("poll://uni@g", "needs an id"),
    "unicast-empty-id": ("poll://uni@g/", "id"),
    "dot-in-id": ("poll://uni@g/a.b", "id"),
    "wildcard-id": ("poll://uni@g/*", "id"),
    "unknown-cast": ("poll://some@g", "cast"),
    "too-long": ("poll://any@" + "g" * 300, "255"),
}


class TestPollReceivers:
    @pytest.mark.parametrize("recv, subject", [
        ("poll://any@default", "resonate.recv.default"),
        ("poll://any@workers/5f2c", "resonate.recv.workers"),
        ("poll://uni@workers/5f2c", "resonate.recv.workers.5f2c"),
        ("poll://workers", "resonate.recv.workers"),
        ("poll://uni@g/a/b", "resonate.recv.g.a/b"),
    ])
    def test_the_sdk_addresses_map_to_subjects_under_the_prefix(self, recv, subject):
        """Anycast goes to <prefix>.<group> whatever id it names; unicast to <prefix>.<group>.<id>."""
        assert poll_subject_of(recv, "resonate.recv") == (subject, None)
        core = core_with()
        for attempt in attempts(core, recv).values():
            attempt()

    def test_the_prefix_is_a_setting(self):
        """The prefix comes from the settings, for the check and for the subject."""
        assert poll_subject_of("poll://uni@g/w", "sdk") == ("sdk.g.w", None)
        core = core_with(poll_prefix="sdk", delivery_allow=("sdk.>",))
        core.promises_subscribe(id="s", promise_id="p", recv="poll://uni@g/w", timeout=FAR)

    @pytest.mark.parametrize("recv, says", list(BAD_POLL.values()), ids=list(BAD_POLL))
    def test_addresses_that_make_no_subject_are_a_400_naming_the_field(self, recv, says):
        """A group or id that is not one subject token (or a bad cast) is a 400 naming the field, in every route."""
        core = core_with()
        for where, attempt in attempts(core, recv).items():
            with pytest.raises(BadRequest) as caught:
                attempt()
            assert where.split(" ")[0] + ":" in caught.value.message and says in caught.value.message
        assert set(core.state.promises) == {"p", "root"} and not core.state.tasks and not core.state.callbacks

    def test_the_subjects_obey_delivery_allow_and_the_reserved_subjects(self):
        """A poll subject outside --delivery-allow, or equal to the server's own subject, is a 400."""
        core = core_with(delivery_allow=("workers.>",))
        with pytest.raises(BadRequest, match="--delivery-allow workers"):
            core.promises_subscribe(id="s", promise_id="p", recv="poll://any@g", timeout=FAR)
        with pytest.raises(BadRequest, match="takes requests"):
            core_with(poll_prefix="resonate").promises_subscribe(
                id="s", promise_id="p", recv="poll://any@server", timeout=FAR)

    def test_the_config_refuses_a_prefix_nothing_may_be_published_under(self):
        """--delivery-poll-prefix must begin a publishable subject: no wildcards, '$' or _INBOX."""
        for prefix in ("a.*", "$SYS", "_INBOX.x", "", "a..b", "a b"):
            with pytest.raises(ConfigError, match="delivery_poll_prefix|poll"):
                load_config(mode="dev", env={}, overrides={"delivery_poll_prefix": prefix})
        assert load_config(mode="dev", env={"RESONATE_DELIVERY_POLL_PREFIX": "sdk.in"}).delivery_poll_prefix == "sdk.in"

    def test_the_ticker_publishes_to_the_mapped_subjects(self):
        """Invoke, resume and notify messages for poll:// receivers are published under the prefix."""
        core = core_with(poll_prefix="sdk")
        core.promises_create(id="q", timeout=FAR, tags={"resonate:invoke": "poll://any@workers/me"})
        core.promises_subscribe(id="s", promise_id="p", recv="poll://uni@workers/me", timeout=FAR)
        core.promises_complete(id="p", state="RESOLVED")
        published = []
        Ticker(core, lambda subject, body: published.append((subject, json.loads(body)["type"]))).run_once()
        assert sorted(published) == [("sdk.workers", "invoke"), ("sdk.workers.me", "notify")]
