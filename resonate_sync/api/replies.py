"""Answering requests: a reply leaves once what it shows is durable, one fsync for many replies.

:class:`RequestHandler` is what the server gives the transport: it answers each request
envelope through ``request.respond``/``respond_error``. A reply that waits for nothing (a read
of durable state) goes out from the worker at once while the server is lightly loaded; every
other reply goes to :class:`DurableReplies`, one thread that waits for the fsync covering the
newest change handed over and then sends every reply that fsync covered.

Given an :data:`Observer`, the handler reports each answer once it is sent (metrics, the
debug line of :func:`log_request`); without one it costs nothing.
"""

import logging
import threading
import time
from typing import Callable, List, Optional, Protocol, Tuple

from ..core import Resonate
from ..errors import Unavailable
from .envelope import (
    JSON,
    NOT_LEADER,
    SHUTTING_DOWN,
    STORE_ERROR,
    UNKNOWN_OPERATION,
    ErrorReply,
    encoding_for,
    error_reply,
    handle_nowait,
)

__all__ = ["DurableReplies", "Observer", "Request", "RequestHandler", "in_kind", "log_request", "send"]

log = logging.getLogger("resonate_sync.requests")

Failure = Optional[Tuple[int, str]]
"""An error reply's (code, message); None for a success."""

Observer = Callable[[str, str, int, int], None]
"""``observe(operation, request_id, code, elapsed_ns)``, called once a request's answer was
handed to the transport: its operation (``"unknown"`` when none was decoded), request id
(``""`` when none was decoded), the answer's HTTP-style code and the nanoseconds since the
handler took the request. Called from a worker or the reply thread: it must be quick."""

Label = Tuple[str, str, int, int]
"""What an answer is reported with: (operation, request id, code, perf_counter_ns() at the start)."""


def log_request(operation: str, request_id: str, code: int, elapsed_ns: int) -> None:
    """The debug line of one answered request (an :data:`Observer`), its fields also as record attributes."""
    latency_ms = elapsed_ns / 1e6
    log.debug(
        "%s %s -> %d in %.3f ms", operation, request_id or "-", code, latency_ms,
        extra={"operation": operation, "request_id": request_id, "status": code, "latency_ms": round(latency_ms, 3)},
    )  # fmt: skip


class Request(Protocol):
    """What the api needs of a transport's request (``resonate_sync.transport.Request`` is one)."""

    data: bytes
    in_flight: int
    max_payload: int  # the largest reply the transport can carry (0: no limit)
    content_type: str  # "" (JSON), or the encoding it is in and is answered in ("application/msgpack")

    def respond(self, data: bytes) -> None: ...

    def respond_error(self, code: int, message: str, data: bytes) -> None: ...


def in_kind(fixed: ErrorReply, request: Request) -> ErrorReply:
    """``fixed`` (a JSON error reply) in the encoding of ``request``."""
    if not request.content_type:
        return fixed
    return ErrorReply(fixed.code, fixed.message, error_reply(fixed.code, fixed.message, encoding_for(request.content_type)))


def send(request: Request, reply: bytes, failure: Failure) -> None:
    """Answer ``request`` with ``reply``, an error reply when ``failure`` says so."""
    if failure is None:
        request.respond(reply)
    else:
        request.respond_error(failure[0], failure[1], reply)


class DurableReplies:
    """One thread that sends replies once the journal made what they show durable.

    Workers hand over (ticket, request, reply) and go back to decoding requests; this thread
    waits for the highest ticket handed over so far, which is one group-committed fsync
    covering all of them, then answers every request it covers. With a worker waiting per
    request instead, one fsync covered at most ``workers`` requests (3.7 on average with 8,
    measured by bench/). If the journal cannot make a change durable, the request is answered
    with a 500 store error instead. After :meth:`stop`, the caller's thread waits and answers.

    ``observe`` (an :data:`Observer`) hears of each answer sent with a label.
    """

    def __init__(self, wait_durable: Callable[[int], None], observe: Optional[Observer] = None) -> None:
        self._wait_durable = wait_durable
        self._observe = observe
        self._pending: List[Tuple[int, Request, bytes, Failure, Optional[Label]]] = []
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="resonate-replies", daemon=True)
        self._thread.start()

    def after_durable(
        self, ticket: int, request: Request, reply: bytes, failure: Failure = None, label: Optional[Label] = None
    ) -> None:
        """Answer ``request`` with ``reply`` once journal ticket ``ticket`` is durable."""
        with self._cv:
            if not self._stopped:
                self._pending.append((ticket, request, reply, failure, label))
                self._cv.notify()
                return
        self._release([(ticket, request, reply, failure, label)])

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._stopped:
                    self._cv.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
            self._release(batch)

    def _release(self, batch: List[Tuple[int, Request, bytes, Failure, Optional[Label]]]) -> None:
        try:
            self._wait_durable(max(entry[0] for entry in batch))
            durable, error = True, STORE_ERROR
        except Exception as exc:  # logged by the core, once
            durable, error = False, NOT_LEADER if isinstance(exc, Unavailable) else STORE_ERROR
        observe = self._observe
        for _, request, reply, failure, label in batch:
            if durable:
                send(request, reply, failure)
            else:
                request.respond_error(*in_kind(error, request))
            if label is not None and observe is not None:
                operation, request_id, code, started = label
                observe(operation, request_id, code if durable else error.code, time.perf_counter_ns() - started)

    def stop(self, timeout: float = 10.0) -> None:
        """Send what is pending, then end the thread."""
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout)


class RequestHandler:
    """The transport's handler for the API subject: one request envelope in, one reply out.

    Args:
        core: what executes the operations.
        workers: the transport's worker threads. While no more requests than that are in
            flight, a reply that waits for nothing is sent by the worker itself; else by the
            reply thread, since one thread publishing every reply beats workers contending
            for the connection's write lock (dev, N=64: 0.57x -> 0.87x of the bare responder).

        observe: an :data:`Observer` of every answer the handler gives, or None.
        gate: None, or asked before each request whether this instance may answer at all (a
            replicated store's leader whose lease is valid); when it says no, the request is
            answered 503 :data:`~resonate_sync.api.envelope.NOT_LEADER` without being run.

    A request whose ``content_type`` is ``application/msgpack`` is read and answered in
    MessagePack, its error replies too; any other request in JSON.

    A reply over ``request.max_payload`` bytes is answered with a 500 error instead
    (:func:`~resonate_sync.api.envelope.too_large_reply`): NATS would not carry it.

    Stopping: :meth:`refuse_after` a deadline, then requests that reach the handler later are
    answered 503 "shutting down" without being executed; :meth:`stop` refuses every one from
    then on and sends the replies still waiting for the journal.
    """

    def __init__(
        self, core: Resonate, *, workers: int, observe: Optional[Observer] = None, gate: Optional[Callable[[], bool]] = None
    ) -> None:
        self._core = core
        self._workers = workers
        self._observe = observe
        self._gate = gate
        self._replies = DurableReplies(core.wait_durable, observe)
        self._refusing = False
        self._refuse_after = 0.0  # time.monotonic() deadline; 0: none

    def __call__(self, request: Request) -> None:
        observe = self._observe
        started = time.perf_counter_ns() if observe is not None else 0
        if self._refusing or (self._refuse_after and time.monotonic() > self._refuse_after):
            request.respond_error(*in_kind(SHUTTING_DOWN, request))
            if observe is not None:
                observe(UNKNOWN_OPERATION, "", SHUTTING_DOWN.code, time.perf_counter_ns() - started)
            return
        if self._gate is not None and not self._gate():
            request.respond_error(*in_kind(NOT_LEADER, request))
            if observe is not None:
                observe(UNKNOWN_OPERATION, "", NOT_LEADER.code, time.perf_counter_ns() - started)
            return
        encoding = encoding_for(request.content_type) if request.content_type else JSON
        answer = handle_nowait(self._core, request.data, request.max_payload, encoding)
        if request.in_flight <= self._workers and self._core.is_durable(answer.ticket):
            send(request, answer.reply, answer.failure)
            if observe is not None:
                observe(answer.operation, answer.request_id, answer.code, time.perf_counter_ns() - started)
        else:
            label = (answer.operation, answer.request_id, answer.code, started) if observe is not None else None
            self._replies.after_durable(answer.ticket, request, answer.reply, answer.failure, label)

    def refuse_after(self, deadline: float) -> None:
        """Answer 503 "shutting down" to requests reaching the handler after ``deadline`` (``time.monotonic()``)."""
        self._refuse_after = deadline

    def refuse(self) -> None:
        """Answer 503 "shutting down" to every request from now on."""
        self._refusing = True

    def stop(self) -> None:
        """Refuse every request from now on; send the replies still waiting for the journal."""
        self._refusing = True
        self._replies.stop()
