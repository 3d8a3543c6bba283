"""Replies that wait for the journal: DeferredReply hand-over and the DurableReplies thread."""

import threading

from resonate_sync.api import STORE_ERROR_REPLY
from resonate_sync.server import DurableReplies
from resonate_sync.transport.responder import DeferredReply


def collect(deferred: DeferredReply) -> list:
    got: list = []
    deferred._then(got.append)
    return got


class TestDeferredReply:
    def test_resolved_before_the_transport_asks(self):
        """A reply resolved before the transport registers its callback is still delivered, once."""
        deferred = DeferredReply()
        deferred.resolve(b"r")
        assert collect(deferred) == [b"r"]

    def test_resolved_after_the_transport_asks(self):
        """A reply resolved later is delivered to the registered callback, once."""
        deferred = DeferredReply()
        got = collect(deferred)
        assert got == []
        deferred.resolve(b"r")
        assert got == [b"r"]

    def test_racing_resolve_and_then_deliver_exactly_once(self):
        """Whatever the interleaving of resolve and the callback's registration, it runs exactly once."""
        for _ in range(300):
            deferred, got, barrier = DeferredReply(), [], threading.Barrier(2)

            def resolve():
                barrier.wait()
                deferred.resolve(b"x")

            thread = threading.Thread(target=resolve)
            thread.start()
            barrier.wait()
            deferred._then(got.append)
            thread.join()
            assert got == [b"x"]


class TestDurableReplies:
    def test_replies_wait_for_one_durability_call_covering_the_batch(self):
        """Replies are released only after the journal confirmed the highest ticket handed over."""
        gate, calls = threading.Event(), []

        def wait_durable(ticket):
            calls.append(ticket)
            gate.wait(5)

        replies = DurableReplies(wait_durable)
        try:
            first = collect(replies.after_durable(1, b"one"))
            while not calls:  # the thread is now inside wait_durable(1)
                threading.Event().wait(0.001)
            later = [collect(replies.after_durable(t, b"r%d" % t)) for t in (2, 3, 4)]
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
            got = collect(replies.after_durable(7, b"success"))
            while not got:
                threading.Event().wait(0.001)
            assert got == [STORE_ERROR_REPLY]
        finally:
            replies.stop()

    def test_stop_sends_what_is_pending(self):
        """Stopping releases every reply already handed over before the thread ends."""
        replies = DurableReplies(lambda ticket: None)
        got = collect(replies.after_durable(1, b"last"))
        replies.stop()
        assert got == [b"last"]
