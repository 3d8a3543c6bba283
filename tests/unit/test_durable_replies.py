"""Answers from any thread: the transport's Request (answered exactly once), the DurableReplies
thread, and the api's RequestHandler that chooses between them."""

import json
import threading
import time
from typing import List, Optional, Tuple

import msgpack
import pytest

from resonate_sync.api import SHUTTING_DOWN_REPLY, STORE_ERROR, STORE_ERROR_REPLY
from resonate_sync.api.replies import DurableReplies, RequestHandler
from resonate_sync.core import OPERATIONS, Resonate
from resonate_sync.errors import Status, StoreUnavailable, Unavailable
from resonate_sync.models import CreatePromiseRequest
from resonate_sync.transport import Request
from resonate_sync.transport.protocol import Msg

FAR = 4_102_444_800_000


def request_answering_into(got: List[Tuple[Optional[bytes], Optional[str]]]) -> Request:
    """A Request whose transport side records each (data, error) answer it publishes."""
    return Request(Msg("s", "r", b"payload", None, 1), 1, 0, 0, lambda request, data, error: got.append((data, error)))


class FakeRequest:
    """What the api sees of a request: ``got`` collects the data of every answer, ``errors`` the
    (code, message) of error answers, ``threads`` the thread that gave each answer."""

    def __init__(self, data: bytes = b"{}", in_flight: int = 1, max_payload: int = 0, content_type: str = "") -> None:
        self.data = data
        self.content_type = content_type
        self.in_flight = in_flight
        self.max_payload = max_payload
        self.got: List[bytes] = []
        self.errors: List[Tuple[int, str]] = []
        self.threads: List[str] = []

    def respond(self, data: bytes) -> None:
        self.got.append(data)
        self.threads.append(threading.current_thread().name)

    def respond_error(self, code: int, message: str, data: bytes) -> None:
        self.errors.append((code, message))
        self.respond(data)


def create(promise_id: str) -> bytes:
    return json.dumps({"operation": "promises.create", "payload": {"id": promise_id, "timeout": FAR}}).encode()


def wait_for_answer(request: FakeRequest) -> None:
    deadline = time.monotonic() + 5
    while not request.got:
        assert time.monotonic() < deadline, "no answer"
        time.sleep(0.001)


class TestRequest:
    def test_answered_by_its_handler(self):
        """An answer given by the handler's own thread is published once, with its outcome."""
        got: list = []
        request_answering_into(got).respond(b"r")
        assert got == [(b"r", None)]

    def test_answered_later_from_another_thread(self):
        """An answer given later by another thread is published once; an error carries "code:message"."""
        got: list = []
        request = request_answering_into(got)
        assert got == []
        thread = threading.Thread(target=request.respond_error, args=(404, "not found", b"e"))
        thread.start()
        thread.join()
        assert got == [(b"e", "404:not found")]

    def test_a_second_answer_is_logged_not_sent(self, caplog):
        """Answering twice is a bug: the first answer stands, the second is logged and never sent."""
        got: list = []
        request = request_answering_into(got)
        request.respond(b"first")
        request.respond_error(500, "late", b"second")
        assert got == [(b"first", None)]
        assert "answered twice" in caplog.text

    def test_racing_answers_deliver_exactly_once(self):
        """Whatever the interleaving of two threads answering at once, exactly one answer is published."""
        for _ in range(300):
            got: list = []
            request, barrier = request_answering_into(got), threading.Barrier(2)

            def answer():
                barrier.wait()
                request.respond(b"x")

            thread = threading.Thread(target=answer)
            thread.start()
            barrier.wait()
            request.respond(b"y")
            thread.join()
            assert len(got) == 1 and got[0][0] in (b"x", b"y")


class TestDurableReplies:
    def test_replies_wait_for_one_durability_call_covering_the_batch(self):
        """Replies are released only after the journal confirmed the highest ticket handed over."""
        gate, calls = threading.Event(), []

        def wait_durable(ticket):
            calls.append(ticket)
            gate.wait(5)

        replies = DurableReplies(wait_durable)
        try:
            first_request = FakeRequest()
            replies.after_durable(1, first_request, b"one")
            first = first_request.got
            while not calls:  # the thread is now inside wait_durable(1)
                threading.Event().wait(0.001)
            later_requests = [FakeRequest() for _ in (2, 3, 4)]
            for t, request in zip((2, 3, 4), later_requests):
                replies.after_durable(t, request, b"r%d" % t)
            later = [request.got for request in later_requests]
            assert first == [] and all(got == [] for got in later), "nothing may leave before it is durable"
            gate.set()
            for got, expected in zip(later, (b"r2", b"r3", b"r4")):
                while not got:
                    threading.Event().wait(0.001)
                assert got == [expected]
            assert first == [b"one"]
            assert calls == [1, 4], "the three later replies share one durability wait"
        finally:
            gate.set()
            replies.stop()

    def test_a_failed_fsync_turns_the_reply_into_a_store_error(self):
        """If the journal cannot make the change durable, the client gets a 500, not the success reply."""

        def failing(_ticket):
            raise OSError("disk full")

        replies = DurableReplies(failing)
        try:
            request = FakeRequest()
            replies.after_durable(7, request, b"success")
            got = request.got
            while not got:
                threading.Event().wait(0.001)
            assert got == [STORE_ERROR_REPLY]
        finally:
            replies.stop()

    def test_a_store_error_is_in_the_encoding_of_its_request(self):
        """A MessagePack request that fails to become durable gets its 500 store error in MessagePack."""

        def failing(_ticket):
            raise OSError("disk full")

        replies = DurableReplies(failing)
        try:
            request = FakeRequest(content_type="application/msgpack")
            replies.after_durable(7, request, b"success")
            wait_for_answer(request)
            assert msgpack.unpackb(request.got[0]) == json.loads(STORE_ERROR_REPLY)
            assert request.errors == [(500, STORE_ERROR.message)]
        finally:
            replies.stop()

    def test_stop_sends_what_is_pending(self):
        """Stopping releases every reply already handed over before the thread ends."""
        replies = DurableReplies(lambda ticket: None)
        request = FakeRequest()
        replies.after_durable(1, request, b"last")
        replies.stop()
        assert request.got == [b"last"]

    def test_after_stop_the_caller_waits_and_answers(self):
        """A reply handed over after stop() is still answered, once durable, from the caller's thread."""
        calls: list = []
        replies = DurableReplies(calls.append)
        replies.stop()
        request = FakeRequest()
        replies.after_durable(9, request, b"late")
        assert calls == [9] and request.got == [b"late"]


class TestRequestHandler:
    def test_light_load_is_answered_by_the_worker(self):
        """With no more requests in flight than workers and nothing to wait for, the worker's own thread answers."""
        handler = RequestHandler(Resonate(), workers=2)
        try:
            request = FakeRequest(create("p1"), in_flight=2)
            handler(request)
            assert request.threads == [threading.current_thread().name]
            assert json.loads(request.got[0])["response"]["Status"] == 20100
        finally:
            handler.stop()

    def test_under_load_the_reply_thread_answers(self):
        """With more requests in flight than workers, the reply goes through the reply thread."""
        handler = RequestHandler(Resonate(), workers=2)
        try:
            request = FakeRequest(create("p1"), in_flight=3)
            handler(request)
            wait_for_answer(request)
            assert request.threads == ["resonate-replies"]
        finally:
            handler.stop()

    def test_error_replies_report_their_outcome(self):
        """An error reply is answered with respond_error, carrying its code and message for the stats."""
        handler = RequestHandler(Resonate(), workers=2)
        try:
            request = FakeRequest(json.dumps({"operation": "promises.nope", "payload": {}}).encode())
            handler(request)
            assert request.errors == [(400, "unknown operation: promises.nope")]
            assert json.loads(request.got[0])["error"] == {"code": 400, "message": "unknown operation: promises.nope"}
        finally:
            handler.stop()

    def test_a_reply_over_the_requests_max_payload_is_a_500(self):
        """The handler holds the reply to the max_payload the request came with: too large is an error answer."""
        handler = RequestHandler(Resonate(), workers=2)
        try:
            request = FakeRequest(create("p1"), max_payload=100)
            handler(request)
            [(code, message)] = request.errors
            assert code == 500 and message.endswith("exceeds the NATS max_payload of 100 bytes")
            assert json.loads(request.got[0])["error"] == {"code": 500, "message": message}
        finally:
            handler.stop()

    def test_requests_after_the_drain_deadline_are_refused(self):
        """Past refuse_after's deadline a request is answered 503 shutting down and never executed."""
        core = Resonate()
        handler = RequestHandler(core, workers=2)
        try:
            handler.refuse_after(time.monotonic() - 1)
            request = FakeRequest(create("p1"))
            handler(request)
            assert request.got == [SHUTTING_DOWN_REPLY] and request.errors[0][0] == 503
            assert "p1" not in core.state.promises
        finally:
            handler.stop()


class TestLeadership:
    """A replicated store's leader answers only while it may; a step-down is a 503 a client retries."""

    def test_a_closed_gate_answers_503_without_executing(self):
        core = Resonate()
        handler = RequestHandler(core, workers=2, gate=lambda: False)
        try:
            request = FakeRequest(create("p1"))
            handler(request)
            assert request.errors == [(503, Status.NOT_LEADER.text)] and "p1" not in core.state.promises
        finally:
            handler.stop()

    def test_a_store_that_stepped_down_turns_replies_into_503_until_reload(self):
        """Changes the store could not confirm are never shown; a change applied here that the store
        refused blocks every answer and asks the store to rebuild the state from the stream."""
        store = SteppingDownStore()
        core = Resonate(journal=store)
        core.on_unavailable = store.request_reload
        handler = RequestHandler(core, workers=2)
        try:
            first = FakeRequest(create("p1"))
            handler(first)
            wait_for_answer(first)
            assert first.errors == [(503, Status.NOT_LEADER.text)]
            later = FakeRequest(json.dumps({"operation": "promises.read", "payload": {"id": "p1"}}).encode())
            handler(later)
            wait_for_answer(later)
            assert later.errors == [(503, Status.NOT_LEADER.text)], "a read waits for the change it shows, which never comes"
            refused = FakeRequest(create("p2"))
            handler(refused)
            wait_for_answer(refused)
            assert refused.errors == [(503, Status.NOT_LEADER.text)] and store.reloads_requested == 1
            assert "p2" in core.state.promises, "the refused change was applied here: only a reload removes it"
            blocked = FakeRequest(json.dumps({"operation": "promises.read", "payload": {"id": "zzz"}}).encode())
            handler(blocked)
            wait_for_answer(blocked)
            assert blocked.errors == [(503, Status.NOT_LEADER.text)], "after a refused append nothing is answered"
            core.reload((), [])
            again = FakeRequest(json.dumps({"operation": "promises.read", "payload": {"id": "p1"}}).encode())
            handler(again)
            wait_for_answer(again)
            assert again.errors and again.errors[0][0] == 404, "after reload the state is the stream's: p1 never was"
            assert "p2" not in core.state.promises
        finally:
            handler.stop()


class SteppingDownStore:
    """A journal whose first append is never confirmed: it was fenced (the JetStream store's FencedError)."""

    def __init__(self) -> None:
        self.seq = 0
        self.reloads_requested = 0

    def request_reload(self):
        self.reloads_requested += 1

    def encode(self, record):
        return json.dumps(record).encode()

    def append_encoded(self, raws):
        if self.seq:
            raise Fenced("not the leader")
        self.seq += 1
        return self.seq

    def is_durable(self, ticket):
        return False

    def wait_durable(self, ticket, timeout=None):
        raise Fenced("append fenced: another writer appended sequence 7")


class Fenced(StoreUnavailable):
    pass


def test_a_late_failure_of_an_ended_leadership_does_not_block_the_next():
    """A wait that fails after the state was rebuilt (an events thread or a reply of the old leadership
    finding out late) answers its own request 503 and nothing more: the new leadership keeps serving."""
    store = LeadingAgainStore()
    core = Resonate(journal=store)
    old = core.execute_nowait(OPERATIONS["promises.create"], CreatePromiseRequest(id="old", timeout=FAR)).ticket
    core.reload((), [])  # the step-down's rebuild, before the late waiter finds out
    with pytest.raises(Unavailable):
        core.wait_durable(old)
    created = core.execute(OPERATIONS["promises.create"], CreatePromiseRequest(id="new", timeout=FAR))
    assert created.payload.promise.id == "new" and "old" not in core.state.promises


class LeadingAgainStore(SteppingDownStore):
    """Ticket 1 (the old leadership's) is never durable; every later one is."""

    def append_encoded(self, raws):
        self.seq += 1
        return self.seq

    def is_durable(self, ticket):
        return ticket != 1

    def wait_durable(self, ticket, timeout=None):
        if ticket == 1:
            raise Fenced("an ended leadership's ticket")
