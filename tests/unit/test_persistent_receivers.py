"""Persistent receivers (nats+js://, "jetstream": true): which receivers ask for JetStream, the
rules on their fields, and what counts as a PubAck."""

import json

import pytest

from resonate_sync.core import CoreSettings, Resonate
from resonate_sync.core.clock import FakeClock
from resonate_sync.core.receivers import is_jetstream, nats_subject_of
from resonate_sync.errors import BadRequest
from resonate_sync.core.tasks import Delivery
from resonate_sync.ticker import msg_id, pub_ack_problem
from resonate_sync.transport.errors import ConnectionClosedError, NoRespondersError, RequestTimeoutError
from resonate_sync.transport.protocol import Msg

FAR = 4_102_444_800_000


class TestWhichReceivers:
    @pytest.mark.parametrize(
        "recv, subject, persistent",
        [
            ("nats+js://work", "work", True),
            ("nats://work", "work", False),
            ({"type": "nats", "data": {"subject": "work", "jetstream": True}}, "work", True),
            ({"type": "nats", "data": {"subject": "work", "jetstream": False}}, "work", False),
            ({"type": "nats", "data": {"subject": "work"}}, "work", False),
            ({"type": "nats", "data": {"subject": "work", "jetstream": 1}}, "work", False),
            ("NATS+JS://work", None, False),
            ("nats+jetstream://work", None, False),
            ({"type": "poll", "data": {"subject": "work", "jetstream": True}}, None, False),
            ("poll://any@default", None, False),
        ],
    )
    def test_forms(self, recv, subject, persistent):
        """nats+js://<subject> and "jetstream": true (the boolean, nothing else) ask for persistent delivery."""
        assert (nats_subject_of(recv), is_jetstream(recv)) == (subject, persistent)


class TestRules:
    def core(self, **settings) -> Resonate:
        core = Resonate(FakeClock(1_000), settings=CoreSettings(**settings))
        core.promises_create(id="p", timeout=FAR)
        return core

    @pytest.mark.parametrize("flag", [1, "true", None, [True], {"x": 1}])
    def test_jetstream_flag_must_be_a_boolean(self, flag):
        """A "jetstream" that is not true or false is a 400 naming payload.recv and data.jetstream."""
        recv = {"type": "nats", "data": {"subject": "work", "jetstream": flag}}
        with pytest.raises(BadRequest, match=r"payload\.recv: data\.jetstream must be true or false"):
            self.core().promises_subscribe(id="s", promise_id="p", recv=recv, timeout=FAR)

    def test_needs_a_subject(self):
        """nats+js:// alone names no subject: 400."""
        with pytest.raises(BadRequest, match="needs a subject"):
            self.core().promises_subscribe(id="s", promise_id="p", recv="nats+js://", timeout=FAR)

    def test_delivery_allow_applies(self):
        """--delivery-allow holds persistent receivers to the same patterns as plain ones."""
        core = self.core(delivery_allow=("workers.>",))
        core.promises_subscribe(id="ok", promise_id="p", recv="nats+js://workers.eu", timeout=FAR)
        with pytest.raises(BadRequest, match="--delivery-allow"):
            core.promises_subscribe(id="no", promise_id="p", recv="nats+js://other", timeout=FAR)

    def test_invoke_tag_makes_a_persistent_task(self):
        """A resonate:invoke tag naming nats+js:// stores that receiver on the invoke task."""
        core = self.core()
        tag = json.dumps({"type": "nats", "data": {"subject": "work", "jetstream": True}})
        core.promises_create(id="job", timeout=FAR, tags={"resonate:invoke": tag})
        assert is_jetstream(core.state.tasks["__invoke:job"].recv)


def reply(payload: bytes) -> Msg:
    return Msg("_INBOX.x.1", "", payload, None, 1)


class TestPubAck:
    @pytest.mark.parametrize(
        "answer",
        [reply(b'{"stream":"WORK","seq":1}'), reply(b'{"stream":"WORK","seq":7,"duplicate":true}')],
        ids=["ack", "duplicate"],
    )
    def test_acks(self, answer):
        """A PubAck, also one for a duplicate (a retry of a stored message), means stored."""
        assert pub_ack_problem(answer) is None

    @pytest.mark.parametrize(
        "answer, why",
        [
            (NoRespondersError("no responders on 'work'"), "no JetStream stream captures the subject"),
            (RequestTimeoutError("no reply"), "no PubAck within 2 s"),
            (ConnectionClosedError("not connected"), "the publish failed: not connected"),
            (reply(b'{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"W","seq":0}'),
             "the stream refused it: maximum messages exceeded (code 10077)"),
            (reply(b'{"stream":"WORK"}'), "not a JetStream PubAck"),
            (reply(b'{"stream":"WORK","seq":"1"}'), "not a JetStream PubAck"),
            (reply(b"hello"), "not a JetStream PubAck: b'hello'"),
            (reply(b"\xff\xfe"), "not a JetStream PubAck"),
            (reply(b"[1]"), "not a JetStream PubAck"),
            (reply(b'{"error":"x"}'), "not a JetStream PubAck"),
        ],
        ids=["no-stream", "timeout", "closed", "stream-error", "no-seq", "seq-text", "text", "bytes", "list", "error-text"],
    )
    def test_no_acks(self, answer, why):
        """Anything but a PubAck is a failed delivery, and the reason says which."""
        assert why in pub_ack_problem(answer)


class TestMsgId:
    def test_same_for_a_retry_new_for_a_new_counter(self):
        """A retry of one task generation has the same Nats-Msg-Id (stored once); a redelivery's new counter, a new one."""
        first = Delivery("__invoke:a.b c", 1, "nats+js://w", {}, {})
        assert msg_id(first) == msg_id(Delivery("__invoke:a.b c", 1, "nats+js://w", {"other": 1}, {})) == "__invoke:a%2Eb%20c/1"
        assert msg_id(Delivery("__invoke:a.b c", 2, "nats+js://w", {}, {})) == "__invoke:a%2Eb%20c/2"

    @pytest.mark.parametrize("task_id", ["x" * 129, "\n" * 50, "\u65e5" * 15])
    def test_long_or_odd_ids_make_a_short_header_value(self, task_id):
        """A task id whose token passes 128 characters is named by its digest: a header stays short and one line."""
        value = msg_id(Delivery(task_id, 3, "nats+js://w", {}, {}))
        assert value.startswith("~") and value.endswith("/3") and len(value) == 67
