"""The server side of the transport: serve one subject with a pool of workers.

:class:`NatsTransport` serves one subject: the reader thread hands each request straight to
one ``ThreadPoolExecutor`` (no second hop), bounds the backlog with a busy reply, reconnects
and resubscribes forever with backoff, and drains gracefully on :meth:`NatsTransport.stop`.
The handler gets a :class:`Request` and answers it once, from whichever thread has the answer.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from time import monotonic, perf_counter_ns
from typing import Callable, Dict, List, Mapping, NoReturn, Optional, Sequence, Tuple, Union

from resonate_sync.backoff import retry_delay
from resonate_sync.transport.connection import Connection, Subscription
from resonate_sync.transport.errors import ConnectionClosedError, NatsConnectionError, TransportError
from resonate_sync.transport.micro import API_PREFIX, Service
from resonate_sync.transport.protocol import DEFAULT_MAX_PAYLOAD, Msg, check_subject
from resonate_sync.urls import redact_url

__all__ = ["ErrorReply", "NatsTransport", "Request", "content_type_of"]

LOG = logging.getLogger("resonate_sync.transport")

ErrorReply = Tuple[int, str, bytes]
"""An error reply the transport sends on its own: (code, message, data). ``data`` is the
reply's body, in whatever format the service speaks; ``code`` and ``message`` are what the
Services API stats show (``last_error`` is ``"code:message"``)."""


class Request:
    """One request taken from the subject, and the one answer it gets.

    The handler, or any thread it hands the request to, answers it exactly once with
    :meth:`respond` or :meth:`respond_error`. Until then the request counts against
    ``max_pending`` and ``stop()`` waits for it. A second answer is a bug: it is logged, not sent.

    Attributes:
        data: the request's payload.
        content_type: "" or, when the request's ``Content-Type`` header names one of the
            transport's ``content_types`` (``application/msgpack``), that one (lower case, without
            parameters): the answer is sent with the same header and must be in that encoding.
        in_flight: requests taken and not yet answered when this one reached its handler,
            itself included: how busy the transport is.
        max_payload: the largest reply the connected server carried when this request reached
            its handler (its INFO's ``max_payload``). An answer larger than the connection's
            ``max_payload`` when it is sent is never published (see :class:`NatsTransport`).
    """

    __slots__ = ("data", "content_type", "in_flight", "max_payload", "_msg", "_started_ns", "_answer", "_once")

    def __init__(
        self,
        msg: Msg,
        in_flight: int,
        max_payload: int,
        started_ns: int,
        answer: Callable[["Request", Optional[bytes], Optional[str]], None],
        content_type: str = "",
    ) -> None:
        self.data = msg.payload
        self.content_type = content_type
        self.in_flight = in_flight
        self.max_payload = max_payload
        self._msg = msg
        self._started_ns = started_ns  # perf_counter_ns() when a worker took it
        self._answer = answer
        self._once = threading.Lock()  # taken by the first answer, never released

    @property
    def subject(self) -> str:
        """The subject the request was sent to."""
        return self._msg.subject

    @property
    def reply(self) -> str:
        """Where the answer goes ("" when nobody waits for one)."""
        return self._msg.reply

    @property
    def headers(self) -> Optional[Dict[str, str]]:
        """The request's NATS headers, or None."""
        return self._msg.headers

    def respond(self, data: bytes) -> None:
        """Answer with ``data`` (sent if the request has a reply subject); the request is done."""
        if not self._settle(data, None):
            self._answered_twice()

    def respond_error(self, code: int, message: str, data: bytes) -> None:
        """Answer with the error reply ``data``, counted as an error ``"code:message"``; the request is done."""
        if not self._settle(data, f"{code}:{message}"):
            self._answered_twice()

    def _settle(self, data: Optional[bytes], error: Optional[str]) -> bool:
        """Answer (``data`` None: without a reply) unless answered already; whether this call did."""
        if not self._once.acquire(False):
            return False
        self._answer(self, data, error)
        return True

    def _answered_twice(self) -> None:
        LOG.error("a request on %s was answered twice; the second answer is not sent", self.subject, stack_info=True)


def content_type_of(headers: Optional[Mapping[str, str]], known: Mapping[str, object]) -> str:
    """The ``Content-Type`` of a request with ``headers`` if it is one of ``known``, else "".

    The header's name in any case; its value compared in lower case without parameters.
    """
    if not headers or not known:
        return ""
    value = headers.get("Content-Type")
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    value = value.split(";", 1)[0].strip().lower()
    return value if value in known else ""


def _check_error_reply(name: str, value: object) -> None:
    if not (
        isinstance(value, tuple)
        and len(value) == 3
        and isinstance(value[0], int)
        and isinstance(value[1], str)
        and isinstance(value[2], bytes)
    ):
        raise TypeError(f"{name} must be (code, message, data bytes), not {value!r}")


def _raise_transport_error(exc: BaseException) -> NoReturn:
    """Raise a failure to connect or subscribe as TransportError (anything else as it is)."""
    if isinstance(exc, (NatsConnectionError, OSError, TimeoutError)):
        raise TransportError(str(exc)) from exc
    raise exc


class NatsTransport:
    """Serve ``handler`` on ``subject``: ``handler(request)`` answers each :class:`Request` once.

    The reader thread submits each request straight to one ``ThreadPoolExecutor(workers)``;
    a worker calls ``handler(request)``, which answers with ``request.respond(data)`` or
    ``request.respond_error(code, message, data)``, then or later from any thread. A handler
    that raises before answering is logged and its request answered ``failure_reply`` (no reply
    without one). At most ``max_pending`` requests are queued or running; beyond that the reader
    answers ``busy_reply`` at once instead of queueing, so a burst cannot grow memory without
    bound. The three fixed replies are :data:`ErrorReply` triples. On connection loss a supervisor thread reconnects
    with jittered exponential backoff (``reconnect_backoff`` = first delay, cap) forever until
    :meth:`stop`, resubscribing as it goes. Nothing is served meanwhile, so it logs a warning at
    the loss and again every ``disconnected_warning_every`` seconds until it is back.

    With ``service`` (an ADR-32 :class:`~resonate_sync.transport.micro.Service`) it also
    answers the Services API discovery subjects (``$SRV.PING|INFO|STATS[.name[.id]]``) and
    counts into ``service.stats`` every request, each error answer (as the handler reported
    it), and the nanoseconds from a worker taking the request to its answer.
    Error replies carry no ``Nats-Service-Error`` headers: the reply itself says it failed, the
    Go server sends none either, and they would cost every client a header parse.
    Discovery requests are answered on the reader thread itself: they are cheap, never queue
    behind API requests, never get the busy reply, and use plain subscriptions (every instance
    answers, which is what discovery needs) whatever ``queue`` the API subject uses.

    An answer larger than the server's ``max_payload`` is never published (NATS would drop the
    connection): the request is answered ``too_large_reply(size, max_payload)``, an
    :data:`ErrorReply`, instead, with a warning (without ``too_large_reply`` the answer is
    lost, logged as an error). Each :class:`Request` carries the ``max_payload`` it was taken
    under, for the handler to keep its answer within. ``on_max_payload(max_payload)`` is
    called at connect, before any request is taken, and again whenever a reconnect finds a
    different ``max_payload`` (a smaller one is logged as a warning).

    ``content_types`` names the encodings, besides the default, that the handler reads and
    answers in, by ``Content-Type`` (``{"application/msgpack": error}``): a request whose
    ``Content-Type`` header names one has it as its ``content_type`` and is answered with the
    same header, and the transport's own error replies to it (busy, stop, failure, too large)
    are ``error(code, message)``, in that encoding, instead of the :data:`ErrorReply` data.

    ``tls_*`` configure ``tls://`` connections (see :class:`Connection`); unlike pynats2,
    ``tls_verify`` defaults to True. ``user_credentials`` (a ``.creds`` file) or ``nkeys_seed``
    (an NKey seed file) give the connection a NATS identity (see :class:`Connection`).
    """

    def __init__(
        self,
        url: str,
        subject: str,
        handler: Optional[Callable[[Request], None]] = None,
        *,
        workers: int = 8,
        max_pending: int = 1024,
        busy_reply: ErrorReply,
        stop_reply: Optional[ErrorReply] = None,
        failure_reply: Optional[ErrorReply] = None,
        queue: str = "",
        name: str = "resonate",
        reconnect_backoff: Tuple[float, float] = (0.1, 2.0),
        ping_interval: float = 2.0,
        max_outstanding_pings: int = 2,
        connect_timeout: float = 2.0,
        disconnected_warning_every: float = 5.0,
        logger: Optional[logging.Logger] = None,
        service: Optional[Service] = None,
        too_large_reply: Optional[Callable[[int, int], ErrorReply]] = None,
        on_max_payload: Optional[Callable[[int], None]] = None,
        content_types: Mapping[str, Callable[[int, str], bytes]] = {},
        tls_cacert: Optional[str] = None,
        tls_client_cert: Optional[str] = None,
        tls_client_key: Optional[str] = None,
        tls_verify: bool = True,
        user_credentials: Optional[str] = None,
        nkeys_seed: Optional[str] = None,
    ) -> None:
        for name, value in (("busy_reply", busy_reply), ("stop_reply", stop_reply), ("failure_reply", failure_reply)):
            if value is not None or name == "busy_reply":
                _check_error_reply(name, value)
        if workers < 1 or max_pending < 1:
            raise ValueError("workers and max_pending must be at least 1")
        check_subject(subject)
        self.url = redact_url(url)
        self.subject = subject
        self._raw_url = url
        self._handler = handler
        self._workers = workers
        self._max_pending = max_pending
        self._busy_reply = busy_reply
        self._busy_error = f"{busy_reply[0]}:{busy_reply[1]}"
        self._stop_reply = stop_reply
        self._failure_reply = failure_reply
        self._queue = queue
        self._name = name
        self._backoff = reconnect_backoff
        self._ping_interval = ping_interval
        self._max_outstanding_pings = max_outstanding_pings
        self._connect_timeout = connect_timeout
        self._warn_every = disconnected_warning_every
        self._tls = {
            "tls_cacert": tls_cacert or None,
            "tls_client_cert": tls_client_cert or None,
            "tls_client_key": tls_client_key or None,
            "tls_verify": tls_verify,
        }
        self._identity = {"user_credentials": user_credentials or None, "nkeys_seed": nkeys_seed or None}
        self._service = service
        self._too_large_reply = too_large_reply
        self._on_max_payload = on_max_payload
        self._content_types = {content_type.lower(): error for content_type, error in content_types.items()}
        self._reply_headers = {content_type: {"Content-Type": content_type} for content_type in self._content_types}
        self._log = logger or LOG
        self._answer = self._publish_answer  # bound once: every Request carries it
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        # Requests submitted to the executor and not yet picked up by a worker, by receive
        # number: at stop()'s deadline they are answered from there, even if every worker is stuck.
        self._queued: Dict[int, Msg] = {}
        self._received = 0
        self._replied = 0
        self._busy = 0
        self._handler_errors = 0
        self._reconnects = 0
        self._started = False
        self._announced = False
        self._stopping = False
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        self._conn: Optional[Connection] = None
        self._sub: Optional[Subscription] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._supervisor: Optional[threading.Thread] = None

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up right now."""
        return self._conn is not None and self._conn.connected

    @property
    def max_payload(self) -> int:
        """The largest message the connected server takes (from its INFO; 1 MiB before connecting)."""
        conn = self._conn
        return conn.max_payload if conn is not None else DEFAULT_MAX_PAYLOAD

    @property
    def stats(self) -> Dict[str, int]:
        """Counters since start: received, replied, busy_rejections, reconnects, handler_errors, in_flight."""
        with self._lock:
            return {
                "received": self._received,
                "replied": self._replied,
                "busy_rejections": self._busy,
                "reconnects": self._reconnects,
                "handler_errors": self._handler_errors,
                "in_flight": self._in_flight,
            }

    def connect(self) -> "NatsTransport":
        """Connect without serving anything yet (:meth:`start` subscribes); a no-op once connected.

        For a caller that must know NATS accepts it before it builds what serves (the server
        touches its store only then). Raises TransportError naming the URL if the server is
        unreachable or refuses the credentials.
        """
        if self._conn is not None:
            return self
        conn = Connection(
            self._raw_url,
            name=self._name,
            connect_timeout=self._connect_timeout,
            ping_interval=self._ping_interval,
            max_outstanding_pings=self._max_outstanding_pings,
            on_disconnect=self._on_disconnect,
            on_max_payload=self._max_payload_changed,
            logger=self._log,
            **self._tls,
            **self._identity,
        )
        try:
            conn.connect()
        except BaseException as exc:
            conn.close()
            _raise_transport_error(exc)
        self._conn = conn
        return self

    def start(self, handler: Optional[Callable[[Request], None]] = None, *, serve: bool = True) -> "NatsTransport":
        """Connect (unless :meth:`connect` did), subscribe, and serve ``handler`` (else the one given
        at construction); returns once the subscription is registered.

        With ``serve=False`` everything but the subscription to the subject is started (workers,
        reconnects, discovery): a standby calls :meth:`serve` when it takes over.

        Raises TransportError naming the URL if the server is unreachable, refuses the
        credentials, or refuses the subscription.
        """
        if self._started:
            raise RuntimeError("NatsTransport.start() called twice")
        self._handler = handler or self._handler
        if self._handler is None:
            raise TypeError("NatsTransport.start() needs a handler")
        self._started = True
        conn = self.connect()._conn
        assert conn is not None
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix=f"{self._name}-worker")
        try:
            self.announce()
            conn.connect()  # again if lost since connect(): the subscriptions go with it
            if serve:
                self.serve()
        except BaseException as exc:
            conn.close()
            self._executor.shutdown()
            self._conn = None
            _raise_transport_error(exc)
        self._supervisor = threading.Thread(target=self._supervise, name=f"{self._name}-nats-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def serve(self) -> None:
        """Subscribe to the subject (a no-op if subscribed) and return once NATS registered it.

        Raises TransportError if NATS refuses the subscription, or NatsConnectionError/TimeoutError
        if it cannot be confirmed.
        """
        conn = self._conn
        assert conn is not None and self._started
        with self._lock:
            if self._sub is not None:
                return
            errors = conn.server_errors
            self._sub = conn.subscribe(self.subject, callback=self._on_message, queue=self._queue)
        conn.flush(self._connect_timeout)
        if conn.server_errors != errors and "subscription" in (conn.last_server_error or "").lower():
            self.withdraw()
            raise TransportError(f"{self.url} refused the subscription to {self.subject!r}: {conn.last_server_error}")
        self._log.info("serving %s on %s", self.subject, self.url)

    def withdraw(self, timeout: float = 1.0) -> None:
        """Stop taking requests on the subject, keeping the connection (a leader stepping down).

        Requests NATS delivered before the unsubscribe still reach the handler; each is answered
        as the handler decides. A no-op when not subscribed.
        """
        with self._lock:
            sub, self._sub = self._sub, None
        conn = self._conn
        if sub is None or conn is None:
            return
        try:
            conn.unsubscribe(sub, flush_timeout=timeout)
        except NatsConnectionError:
            pass
        self._log.info("stopped taking requests on %s", self.subject)

    @property
    def connection(self) -> Optional[Connection]:
        """The NATS connection, once :meth:`connect` made it (shared with the JetStream store)."""
        return self._conn

    def announce(self) -> None:
        """Answer the Services API discovery subjects from now on, before :meth:`start` serves the
        subject (connects unless connected; a no-op without a service or when done already)."""
        conn = self.connect()._conn
        assert conn is not None
        if self._service is None or self._announced:
            return
        self._announced = True
        for subject, verb in self._service.subjects():
            conn.subscribe(subject, callback=partial(self._on_discovery, verb))

    def discover(self, window: float) -> List[Dict[str, object]]:
        """The INFO documents of every other instance of this service that answers: collected until
        ``window`` seconds pass without a reply; at once when none is running (no responders).

        Raises TransportError when not connected.
        """
        assert self._service is not None
        conn = self.connect()._conn
        assert conn is not None
        subject, errors = f"{API_PREFIX}.INFO.{self._service.name}", conn.server_errors
        try:
            replies = conn.gather(subject, timeout=window, quiet=window)
        except NatsConnectionError as exc:
            _raise_transport_error(exc)
        documents = []
        for reply in replies:
            try:
                document = json.loads(reply)
            except ValueError:
                continue
            if isinstance(document, dict) and document.get("id") != self._service.id:
                documents.append(document)
        if conn.server_errors != errors and not replies:  # e.g. no permission to publish there
            self._log.warning(
                "could not ask %s who else serves %s (%s): another instance on it would go unnoticed",
                subject, self.subject, conn.last_server_error,
            )  # fmt: skip
        return documents

    # -- message path ----------------------------------------------------------------------

    def _on_message(self, msg: Msg) -> None:
        """Reader thread: queue the request, or answer busy when the backlog is full."""
        with self._lock:
            self._received += 1
            busy = self._in_flight >= self._max_pending
            if busy:
                self._busy += 1
            else:
                self._in_flight += 1
                number = self._received
                self._queued[number] = msg
        if busy:
            if self._service is not None:
                self._service.record(0, self._busy_error)
            if msg.reply:
                content_type = content_type_of(msg.headers, self._content_types)
                data = self._in_kind(content_type, *self._busy_reply)
                try:
                    self._conn.publish(msg.reply, data, headers=self._reply_headers.get(content_type))  # type: ignore[union-attr]
                except NatsConnectionError:
                    pass
            return
        try:
            self._executor.submit(self._serve, number)  # type: ignore[union-attr]
        except RuntimeError:  # executor shut down: stop() gave up waiting
            with self._lock:
                taken = self._queued.pop(number, None)
            if taken is not None:
                self._done(0, 0)

    def _serve(self, number: int) -> None:
        """Worker thread: hand the request to the handler, which answers it now or later."""
        started = perf_counter_ns()
        with self._lock:
            msg = self._queued.pop(number, None)
        if msg is None:
            return  # stop() answered it at its deadline
        content_type = content_type_of(msg.headers, self._content_types) if msg.headers else ""
        request = Request(msg, self._in_flight, self.max_payload, started, self._answer, content_type)
        try:
            self._handler(request)
        except Exception as exc:
            self._log.exception("handler failed for a request on %s", msg.subject)
            with self._lock:
                self._handler_errors += 1
            failure = self._failure_reply
            data = self._in_kind(content_type, *failure) if failure is not None else None
            # An answer given before the raise (or handed to another thread) stands.
            request._settle(data, f"500:handler failed: {type(exc).__name__}")

    def _publish_answer(self, request: Request, data: Optional[bytes], error: Optional[str]) -> None:
        """Count a request's answer and publish it (``data`` None: no reply), from whichever thread
        has it; the request is done."""
        replied = failed = 0
        try:
            if data is not None and self._too_large_reply is not None:
                max_payload = self._conn.max_payload  # type: ignore[union-attr]
                if len(data) > max_payload:
                    self._log.warning(
                        "the reply of %d bytes to a request on %s exceeds the NATS max_payload of %d bytes; "
                        "answering an error instead",
                        len(data), request.subject, max_payload,
                    )  # fmt: skip
                    code, message, data = self._too_large_reply(len(data), max_payload)
                    data = self._in_kind(request.content_type, code, message, data)
                    error = f"{code}:{message}"
            if self._service is not None:
                self._service.record(perf_counter_ns() - request._started_ns, error)
            reply = request.reply
            if data is not None and reply:
                headers = self._reply_headers[request.content_type] if request.content_type else None
                try:
                    self._conn.publish(reply, data, headers=headers)  # type: ignore[union-attr]
                    replied = 1
                except ConnectionClosedError as exc:
                    self._log.debug("reply to %s lost: %s", reply, exc)
        except Exception:
            failed = 1
            self._log.exception("reply to a request on %s failed", request.subject)
        finally:
            self._done(replied, failed)

    def _in_kind(self, content_type: str, code: int, message: str, data: bytes) -> bytes:
        """The error reply ``data`` (code, message) in the encoding of ``content_type`` ("": as it is)."""
        return self._content_types[content_type](code, message) if content_type else data

    def _on_discovery(self, verb: str, msg: Msg) -> None:
        """Reader thread: answer a Services API PING, INFO or STATS request at once."""
        if not msg.reply:
            return
        try:
            self._conn.publish(msg.reply, self._service.respond(verb))  # type: ignore[union-attr]
        except NatsConnectionError:
            pass

    def _done(self, replied: int, failed: int) -> None:
        with self._lock:
            self._in_flight -= 1
            self._replied += replied
            self._handler_errors += failed
            if self._stopping and self._in_flight == 0:
                self._idle.notify_all()

    def publish(self, subject: str, payload: bytes) -> None:
        """Publish ``payload`` to ``subject`` (thread-safe; used to deliver task messages).

        Raises TransportError if not connected right now (retry later), TypeError/ValueError
        for a bad payload.
        """
        conn = self._conn
        if conn is None:
            raise TransportError(f"transport for {self.url} is not started")
        try:
            conn.publish(subject, payload)
        except ConnectionClosedError as exc:
            raise TransportError(str(exc)) from exc

    def request_many(
        self, requests: Sequence[Tuple[str, bytes, Optional[Mapping[str, str]]]], *, timeout: float
    ) -> List[Union[Msg, Exception]]:
        """Send every ``(subject, payload, headers)`` request at once and wait for the replies within
        ``timeout`` s (JetStream publishes waiting for their PubAcks): each reply ``Msg`` or the
        exception that says why there is none (TransportError when not connected, a
        NoRespondersError or RequestTimeoutError of the connection)."""
        conn = self._conn
        if conn is None:
            raise TransportError(f"transport for {self.url} is not started")
        return [
            TransportError(str(result)) if isinstance(result, ConnectionClosedError) else result
            for result in conn.request_many(requests, timeout=timeout)
        ]

    # -- reconnecting ----------------------------------------------------------------------

    def _on_disconnect(self, reason: str) -> None:
        self._wake.set()

    def _max_payload_changed(self, previous: Optional[int], current: int) -> None:
        if previous is not None and current < previous:
            self._log.warning(
                "%s now takes messages of at most %d bytes (max_payload), down from %d: replies that no longer "
                "fit (promises stored under the larger limit) are answered with an error",
                self.url, current, previous,
            )  # fmt: skip
        if self._on_max_payload is not None:
            self._on_max_payload(current)

    def _delay(self, attempt: int) -> float:
        first, cap = self._backoff
        return retry_delay(attempt, first, cap, jitter=True)

    def _supervise(self) -> None:
        """Reconnect after every loss, with backoff, until stop(); log one line each way."""
        conn = self._conn
        assert conn is not None
        while True:
            self._wake.wait()
            if self._stop_event.is_set():
                return
            self._wake.clear()
            if conn.connected:
                continue
            lost_at = monotonic()
            self._log.warning(
                "lost connection to %s: %s; %s is not served until it is back (reconnecting)",
                self.url, conn.last_disconnect_reason, self.subject,
            )  # fmt: skip
            attempt, warned_at = 0, lost_at
            while True:
                if self._stop_event.wait(self._delay(attempt)):
                    return
                try:
                    conn.connect()
                    break
                except ConnectionClosedError:
                    return
                except (NatsConnectionError, OSError) as exc:
                    attempt += 1
                    self._log.debug("reconnect attempt %d to %s failed: %s", attempt, self.url, exc)
                    if monotonic() - warned_at >= self._warn_every:
                        warned_at = monotonic()
                        self._log.warning(
                            "still disconnected from %s after %.0f s (%s); %s is not served",
                            self.url, warned_at - lost_at, exc, self.subject,
                        )  # fmt: skip
            with self._lock:
                self._reconnects += 1
            self._log.info("reconnected to %s after %.1f s; serving %s again", self.url, monotonic() - lost_at, self.subject)

    # -- stopping --------------------------------------------------------------------------

    def stop(self, timeout: float = 10.0, *, before_close: Optional[Callable[[], None]] = None) -> bool:
        """Stop gracefully; returns True if every in-flight request finished in time. Idempotent.

        Unsubscribes first (requests the server already sent are still served), waits up to
        ``timeout`` s for in-flight handlers and flushes their replies, then closes the
        connection and joins the threads. Handlers still running after ``timeout`` are
        abandoned. Requests still queued then are answered ``stop_reply`` from this thread
        without running the handler (a few microseconds each, even if every worker is stuck),
        so that a backlog too long for ``timeout`` ends in replies a client can act on instead
        of silence; without a ``stop_reply`` they get no reply. ``before_close`` is called after
        the drain, while the connection is still open (the server closes its JetStream store there).
        """
        with self._lock:
            if self._stopping or self._conn is None:
                return True
            self._stopping = True
            started = self._started
        if not started:  # connected only
            self._before_close(before_close)
            self._conn.close()
            return True
        deadline = monotonic() + timeout
        conn, executor = self._conn, self._executor
        assert executor is not None and self._supervisor is not None
        self._stop_event.set()
        self._wake.set()
        self._supervisor.join(max(0.0, deadline - monotonic()))
        with self._lock:
            sub, self._sub = self._sub, None
        if sub is not None:
            conn.unsubscribe(sub, flush_timeout=max(0.0, deadline - monotonic()))
        if not conn.connected:
            self._log.warning(
                "connection to %s lost while stopping (%s): requests it had not delivered yet get no reply from this server",
                self.url, conn.last_disconnect_reason,
            )  # fmt: skip
        with self._lock:
            drained = self._idle.wait_for(lambda: self._in_flight == 0, max(0.0, deadline - monotonic()))
            left = self._in_flight
            unserved = list(self._queued.values())
            self._queued.clear()
        if not drained:
            for msg in unserved:
                content_type = content_type_of(msg.headers, self._content_types)
                request = Request(msg, left, self.max_payload, perf_counter_ns(), self._answer, content_type)
                if self._stop_reply is not None:
                    code, message, data = self._stop_reply
                    request.respond_error(code, message, self._in_kind(content_type, code, message, data))
                else:
                    request._settle(None, None)
            if unserved and self._stop_reply is not None:
                self._log.warning("drain deadline: answered %d queued requests without serving them", len(unserved))
        self._before_close(before_close)
        if conn.connected:
            try:  # past the deadline too: the replies just written must leave before the close
                conn.flush(max(0.25, deadline - monotonic()))
            except (NatsConnectionError, TimeoutError):
                pass
        conn.close()
        executor.shutdown(wait=drained, cancel_futures=True)
        self._supervisor.join(max(0.0, deadline - monotonic()))
        if drained:
            self._log.info("stopped serving %s on %s (%d requests received, %d replied)", self.subject, self.url, self._received, self._replied)
        else:
            self._log.warning(
                "stopped serving %s after %g s, abandoning %d requests still being handled", self.subject, timeout, left - len(unserved)
            )
        return drained

    def _before_close(self, before_close: Optional[Callable[[], None]]) -> None:
        if before_close is not None:
            try:
                before_close()
            except Exception:
                self._log.exception("closing what uses the connection to %s failed", self.url)

    def __enter__(self) -> "NatsTransport":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

