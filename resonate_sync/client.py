"""``Client``: a synchronous, thread-safe client of resonate, over NATS or in process.

One ``Client``, two transports (as an ``httpx.Client`` sends through a transport):

* over NATS request-reply to a server, given its URL: one NATS connection and one wildcard
  reply inbox serve every thread (:class:`~resonate_sync.transport.client.NatsClientTransport`);
* straight into a :class:`~resonate_sync.core.Resonate` in this process, with
  :class:`LocalTransport`: no NATS, no server. This is the way to embed the core.

Either way a request takes the same path through the api's envelope codec
(:mod:`resonate_sync.api.envelope`), so the methods, their results and their errors are the
same. Any number of threads may call one ``Client`` at once; each call waits for its own
reply. Every method is named after its operation as the core names it (``promises.create`` →
:meth:`Client.promises_create`) and takes the same keyword fields::

    with Client("nats://localhost:4222") as client:          # a server, over NATS
        promise, created = client.promises_create("p1", timeout="1m", param=b"hi")

    with Client(transport=LocalTransport(Resonate())) as client:   # a core, in process
        client.promises_create("p1", timeout="1m", param=b"hi")
        client.promises_resolve("p1", value=b"done")
        assert client.promises_read("p1").value.raw == b"done"

What comes back:

* reads return the model (:class:`~resonate_sync.models.Promise`, ``Schedule``, …);
* searches return a :class:`Page` (iterate it; ``page.cursor`` continues it), and the
  ``*_search_all`` helpers follow the cursors for you;
* writes whose status matters return a small named tuple such as ``PromiseResult(promise,
  created)``: ``created`` is True when the server answered ``20100 Created`` (this call made
  the change) and False for ``20000 OK`` (an idempotent replay or a no-op, nothing changed);
* deletes and releases return None; heartbeats return the number of resources affected.

Encoding: requests and replies are JSON unless the client is made with ``encoding="msgpack"``:
then each request is MessagePack with the NATS header ``Content-Type: application/msgpack`` and
the server answers in MessagePack. Results and errors are the same either way (``data`` fields
are base64 strings in both); only the bytes differ, and a few microseconds of codec time.

Binary data: ``param``/``value`` accept ``bytes`` (``str`` is encoded as UTF-8) or a
:class:`~resonate_sync.models.Value` (``Value.of(b"…", headers={…})``); returned values carry
the base64 text of the wire in ``value.data`` and its bytes in ``value.raw``.

Times: a deadline (a promise's ``timeout``, a task's ``task_timeout``, a callback's
``timeout``) is an absolute time. Pass an ``int`` of ms since the epoch (as on the wire, from
2000-01-01 on: a smaller int is surely a duration and raises ValueError), an aware
``datetime``, a ``timedelta`` or a Go duration string counted from now (``"60s"``, ``"1h30m"``),
or an RFC 3339 string (``"2026-12-31T00:00:00Z"``). A duration (a ``ttl``, a schedule's
``promise_timeout``) is an ``int`` of ms, a ``timedelta`` or a Go duration string. The rules
are in :mod:`resonate_sync.times`; "now" is the client's ``clock``. Returned models carry
integers, milliseconds since the epoch.
Fields the protocol never sends (a task's ``state``, ``ttl``, ``expires_at``, ``recv``; any
``sort_id``) keep their model defaults in what the client returns: do not read them.

Errors: an error reply raises the :class:`~resonate_sync.errors.ResonateError` subclass of its
code (``NotFound``, ``AlreadyExists``, ``Forbidden``, ``BadRequest``, ``InternalError``,
``Unavailable``) carrying ``code`` and ``message``, whichever the transport. NATS failures are
``Unavailable`` too: :class:`RequestTimeout` (no reply in time; the operation may or may not
have happened) and :class:`ConnectionFailed` (NATS unreachable, credentials refused,
connection lost); after :meth:`Client.close`, every call raises ``ConnectionFailed``.

Timeouts and retries: each attempt waits ``request_timeout`` seconds (default: the client's
``timeout``). A call is retried, up to ``retries`` more times with jittered exponential
backoff, when the request provably reached no server (no connection, no responders), and, for
idempotent operations only, also when it may have (timeout, connection lost while waiting, a
503 reply). Idempotent: reads, searches, heartbeats, ``promises.callback`` and
``promises.subscribe`` (a repeat finds the callback registered), ``tasks.complete`` (a repeat
finds the task completed); ``promises.create``/``createtask``/``complete`` and
``schedules.create`` only when an ``idempotency_key`` is given. Never retried:
``tasks.claim``, ``tasks.drop``, ``locks.acquire``, ``locks.release``, ``schedules.delete``
and keyless creates and completes, because a repeat of one that did happen answers
differently (403, 404, 409).
"""

import logging
import threading
import uuid
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Protocol,
    Tuple,
    TypeVar,
    Union,
)

import attrs

from .backoff import retry_delay
from .api.envelope import ENCODINGS, JSON, Reply, decode_reply, encode_request, encoding_for, handle
from .core import Resonate
from .core.clock import Clock, SystemClock
from .errors import ConnectionFailed, InternalError, RequestTimeout, Retryable, Status, Unavailable
from .models import (
    EMPTY_VALUE,
    AcquireLockRequest,
    Callback,
    CallbackResponse,
    ClaimTaskRequest,
    ClaimTaskResponse,
    CompletePromiseRequest,
    CompleteTaskRequest,
    CreateCallbackRequest,
    CreatePromiseAndTaskRequest,
    CreatePromiseAndTaskResponse,
    CreatePromiseRequest,
    CreateScheduleRequest,
    CreateSubscriptionRequest,
    DeleteScheduleRequest,
    DropTaskRequest,
    EmptyResponse,
    HeartbeatLocksRequest,
    HeartbeatTasksRequest,
    Lock,
    LockResponse,
    LocksAffectedResponse,
    Promise,
    PromiseResponse,
    PromiseState,
    ReadPromiseRequest,
    ReadScheduleRequest,
    ReleaseLockRequest,
    Schedule,
    ScheduleResponse,
    SearchPromisesRequest,
    SearchPromisesResponse,
    SearchSchedulesRequest,
    SearchSchedulesResponse,
    Task,
    TaskResponse,
    TasksAffectedResponse,
    Value,
)
from .times import Deadline, Duration, deadline_ms, duration_ms

__all__ = [
    "Client",
    "LocalTransport",
    "Transport",
    "Page",
    "PromiseResult",
    "PromiseTaskResult",
    "CallbackResult",
    "ScheduleResult",
    "TaskResult",
    "ClaimTaskResponse",
    "RequestTimeout",
    "ConnectionFailed",
    "Retryable",
    "Deadline",
    "Duration",
    "Value",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Data = Union[bytes, str, Value, None]
"""A param or value: bytes, text (sent as UTF-8), a ``Value`` (with headers), or None for empty."""
Metadata = Optional[Mapping[str, str]]

_IDEMPOTENT = frozenset(
    {
        "promises.read",
        "promises.search",
        "promises.callback",
        "promises.subscribe",
        "schedules.read",
        "schedules.search",
        "locks.heartbeat",
        "tasks.complete",
        "tasks.heartbeat",
    }
)
_IDEMPOTENT_WITH_KEY = frozenset({"promises.create", "promises.createtask", "promises.complete", "schedules.create"})


# --------------------------------------------------------------------------- results


@attrs.frozen
class Page(Generic[T]):
    """One page of search results, newest first.

    Attributes:
        items: the promises or schedules of this page (iterating the page iterates them).
        cursor: pass it back as ``cursor=`` for the next page; None on the last page. A page
            may hold fewer items than the limit, or none, and still have a cursor: the server
            bounds the work one request does, so follow cursors until there is none.
    """

    items: List[T]
    cursor: Optional[str] = None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class PromiseResult(NamedTuple):
    """A created or completed promise; ``created`` is False for an idempotent replay or a no-op."""

    promise: Promise
    created: bool


class PromiseTaskResult(NamedTuple):
    """``promises.createtask``: the promise and its claimed invoke task (None unless created with a router tag)."""

    promise: Promise
    task: Optional[Task]
    created: bool


class CallbackResult(NamedTuple):
    """``promises.callback``/``subscribe``: ``callback`` is set only when this call registered it.

    When the promise is already completed nothing is registered (``created`` False,
    ``callback`` None) and the caller should use ``promise`` directly.
    """

    promise: Promise
    callback: Optional[Callback]
    created: bool


class ScheduleResult(NamedTuple):
    """A created schedule; ``created`` is False when the idempotency key matched a stored one."""

    schedule: Schedule
    created: bool


class TaskResult(NamedTuple):
    """A completed or dropped task; ``created`` is False when nothing changed (already final, or not claimed)."""

    task: Task
    created: bool


def _value(data: Data) -> Value:
    if data is None:
        return EMPTY_VALUE
    if isinstance(data, Value):
        return data
    return Value.of(data)


def _every_page(search: Callable[..., "Page[T]"], query: Dict[str, Any], **options: Any) -> Iterator[T]:
    """The items of every page of a search, fetched lazily: the query first, then its cursors."""
    page = search(**query, **options)
    yield from page.items
    while page.cursor:
        page = search(cursor=page.cursor, **options)
        yield from page.items


# --------------------------------------------------------------------------- transports


class Transport(Protocol):
    """What a :class:`Client` sends its requests through: envelope bytes out, reply bytes back.

    ``request`` returns the reply to one request envelope, waiting at most ``timeout`` seconds
    where anything is in transit. It raises a :class:`~resonate_sync.errors.ResonateError` that
    no repeat can mend (``ConnectionFailed`` for refused credentials or a closed transport, say),
    or wraps one in :class:`~resonate_sync.errors.Retryable` when another attempt may succeed,
    saying whether a server may have acted on this one. ``close`` releases what the transport
    holds; a ``connected`` property is optional (the client reports True without one).

    ``content_type`` is given only by a client whose encoding is not JSON
    (``"application/msgpack"``): the request goes with it as its ``Content-Type`` header. A
    transport without the argument serves JSON clients only.
    """

    def request(self, data: bytes, timeout: float, content_type: str = "") -> bytes: ...

    def close(self) -> None: ...


class LocalTransport:
    """Requests answered by a :class:`~resonate_sync.core.Resonate` in this process: no NATS, no server.

    Each request takes the path a server's takes, minus the network: the api's
    :func:`~resonate_sync.api.handle` decodes the envelope, runs the operation on ``core`` and
    encodes the reply, in the calling thread, once what the reply shows is durable (if the core
    has a journal). A :class:`Client` over it therefore gives the same results and raises the
    same errors as over NATS. ``timeout`` does not apply: nothing is in transit.

    The core stays the caller's: closing the transport (or its client) leaves it running, and
    other clients and threads may use it at once. What a server's ticker does is up to its
    owner: promise timeouts are applied when a promise is read, but task deliveries and
    schedule firings happen only when something calls ``core.tick()``.
    """

    def __init__(self, core: Resonate) -> None:
        self.core = core

    def request(self, data: bytes, timeout: float, content_type: str = "") -> bytes:
        return handle(self.core, data, encoding=encoding_for(content_type))

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"LocalTransport({self.core!r})"


# --------------------------------------------------------------------------- the client


class Client:
    """A synchronous, thread-safe client of one resonate server or core (see the module docstring).

    ``Client(url, subject, …)`` talks to a server over NATS; ``Client(transport=…)`` sends
    through the transport given, such as ``LocalTransport(core)`` for a core in this process.

    Args:
        url, subject, name, connect_timeout, tls_cacert, tls_client_cert, tls_client_key, tls_verify,
        user_credentials, nkeys_seed:
            the NATS transport's (:class:`~resonate_sync.transport.client.NatsClientTransport`):
            the server's URL (default ``nats://localhost:4222``; ``nats://user:pass@host`` or
            ``nats://token@host`` for auth) and request subject (default ``resonate.server``),
            the connection name, the handshake timeout in seconds, PEM files for ``tls://``
            URLs and whether to verify the server's certificate, and a NATS identity: a ``.creds``
            file (user JWT and NKey seed) or a file holding an NKey user seed. Not with ``transport``.
        transport: what to send requests through (see :class:`Transport`); default a NATS
            transport built from the arguments above. The client closes it when it is closed.
        timeout: seconds each attempt waits for its reply (override per call with ``request_timeout=``).
        retries: extra attempts after a retryable failure (see the module docstring); 0 disables.
        backoff: the first delay between attempts in seconds; it doubles each time, capped at 2 s,
            jittered down by up to half.
        clock: what "now" is for deadlines given as durations (``"1h"``, a ``timedelta``): an
            object whose ``now()`` returns ms since the epoch; default the system clock.
        encoding: ``"json"`` (the default) or ``"msgpack"``: how requests and replies are
            written (see the module docstring). ValueError for any other.

    Over NATS it connects at once; raises :class:`ConnectionFailed` naming the URL when it
    cannot (refused credentials or certificates included), ValueError for a TLS, ``.creds`` or
    seed file it cannot use. After a lost connection, the next call reconnects. Close it with :meth:`close` or a
    ``with`` block.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        subject: Optional[str] = None,
        *,
        transport: Optional[Transport] = None,
        timeout: float = 5.0,
        retries: int = 2,
        name: Optional[str] = None,
        backoff: float = 0.1,
        connect_timeout: Optional[float] = None,
        tls_cacert: Optional[str] = None,
        tls_client_cert: Optional[str] = None,
        tls_client_key: Optional[str] = None,
        tls_verify: Optional[bool] = None,
        user_credentials: Optional[str] = None,
        nkeys_seed: Optional[str] = None,
        clock: Optional[Clock] = None,
        encoding: str = "json",
    ) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(map(repr, ENCODINGS))}, not {encoding!r}")
        if timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        nats_options = {
            "url": url,
            "subject": subject,
            "name": name,
            "connect_timeout": connect_timeout,
            "tls_cacert": tls_cacert,
            "tls_client_cert": tls_client_cert,
            "tls_client_key": tls_client_key,
            "tls_verify": tls_verify,
            "user_credentials": user_credentials,
            "nkeys_seed": nkeys_seed,
        }
        given = {key: value for key, value in nats_options.items() if value is not None}
        if transport is None:
            # Imported on first use: pynats2 is slow to import and `import resonate_sync` should not pay for it.
            from .transport.client import NatsClientTransport

            transport = NatsClientTransport(**given)
        elif given:
            raise TypeError(f"{', '.join(given)}: options of the NATS transport, not to be given with transport=")
        self.timeout = timeout
        self.retries = retries
        self._transport = transport
        self._backoff = backoff
        self._clock = clock or SystemClock()
        self._closed = threading.Event()
        self._encoding = ENCODINGS[encoding]

    # ------------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        """Whether a call can go out right now without reconnecting (False once closed)."""
        return not self._closed.is_set() and getattr(self._transport, "connected", True)

    def close(self) -> None:
        """Close the client and its transport; calls in flight and later fail with :class:`ConnectionFailed`. Idempotent."""
        self._closed.set()
        self._transport.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._encoding is JSON:
            return f"Client(transport={self._transport!r})"
        return f"Client(transport={self._transport!r}, encoding={self._encoding.name!r})"

    # ------------------------------------------------------------------ requests

    def _deadline(self, name: str, value: Deadline) -> int:
        try:
            return deadline_ms(value, self._clock.now())
        except (ValueError, TypeError) as error:
            raise type(error)(f"{name}: {error}") from None

    @staticmethod
    def _duration(name: str, value: Duration) -> int:
        try:
            return duration_ms(value)
        except (ValueError, TypeError) as error:
            raise type(error)(f"{name}: {error}") from None

    def _request(
        self,
        operation: str,
        request: Any,
        response_type: type,
        request_timeout: Optional[float],
        metadata: Metadata,
    ) -> Tuple[Union[Status, int], Any]:
        """Send one operation (retrying as the module docstring says); return (status, response model)."""
        key = getattr(request, "idempotency_key", "")
        idempotent = operation in _IDEMPOTENT or (operation in _IDEMPOTENT_WITH_KEY and bool(key))
        request_id = uuid.uuid4().hex
        encoding = self._encoding
        data = encode_request(operation, request, request_id, metadata, encoding)
        # JSON goes out as before, so a transport that takes no content_type still serves JSON clients.
        content = {} if encoding is JSON else {"content_type": encoding.content_type}
        timeout = self.timeout if request_timeout is None else request_timeout
        attempt = 0
        while True:
            if self._closed.is_set():
                raise ConnectionFailed("the client was closed")
            try:
                reply = self._reply(self._transport.request(data, timeout, **content), request_id, response_type)
                return reply.status, reply.payload
            except Retryable as failure:
                error, retryable = failure.error, idempotent or not failure.delivered
            if not retryable or attempt >= self.retries or self._closed.is_set():
                raise error
            delay = retry_delay(attempt, self._backoff, 2.0, jitter=True)
            attempt += 1
            log.debug("%s: %s; attempt %d in %.2f s", operation, error.message, attempt + 1, delay)
            if self._closed.wait(delay):
                raise ConnectionFailed("the client was closed")

    @staticmethod
    def _reply(raw: bytes, request_id: str, response_type: type) -> Reply:
        try:
            reply = decode_reply(raw, response_type)
        except Unavailable as error:  # busy or shutting down: retried like a timeout
            raise Retryable(error, delivered=True) from None
        reply_id = reply.metadata.get("id")
        if reply_id is not None and reply_id != request_id:  # one inbox per request: this would be a bug
            raise InternalError(f"reply to request {reply_id!r} arrived for request {request_id!r}")
        return reply

    # ------------------------------------------------------------------ promises

    def promises_read(self, id: str, *, request_timeout: Optional[float] = None, metadata: Metadata = None) -> Promise:
        """The promise ``id`` (timed out first if its deadline passed); NotFound if there is none."""
        request = ReadPromiseRequest(id=id)
        _, response = self._request("promises.read", request, PromiseResponse, request_timeout, metadata)
        return response.promise

    def promises_search(
        self,
        id: str = "*",
        states: Optional[Iterable[str]] = None,
        tags: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
        *,
        request_timeout: Optional[float] = None,
        metadata: Metadata = None,
    ) -> "Page[Promise]":
        """One page of promises whose id matches the glob ``id`` (``*`` = anything), newest first.

        ``states``: any of PENDING, RESOLVED, REJECTED (all three rejected states),
        REJECTED_CANCELED, REJECTED_TIMEDOUT; ``tags``: every pair must match; ``limit``: 1..100
        (default 100); ``cursor``: from a previous page, continues that query (others ignored).
        """
        request = SearchPromisesRequest(
            id=id, states=list(states or ()), tags=dict(tags or {}), limit=limit or 0, cursor=cursor or ""
        )
        _, response = self._request("promises.search", request, SearchPromisesResponse, request_timeout, metadata)
        return Page(response.promises, response.cursor)

    def promises_search_all(
        self,
        id: str = "*",
        states: Optional[Iterable[str]] = None,
        tags: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        *,
        request_timeout: Optional[float] = None,
        metadata: Metadata = None,
    ) -> Iterator[Promise]:
        """Every promise :meth:`promises_search` finds, following the cursors page by page (``limit`` per page)."""
        query = {"id": id, "states": states, "tags": tags, "limit": limit}
        return _every_page(self.promises_search, query, request_timeout=request_timeout, metadata=metadata)

    def promises_create(
        self,
        id: str,
        timeout: Deadline,
        param: Data = None,
        tags: Optional[Mapping[str, str]] = None,
        idempotency_key: Optional[str] = None,
        strict: bool = False,
        *,
        request_timeout: Optional[float] = None,
        metadata: Metadata = None,
    ) -> PromiseResult:
        """Create a pending promise that times out at ``timeout``: ``"1h"`` (from now), an RFC 3339 string, ms
        since the epoch, an aware datetime or a timedelta (see the module docstring).

        ``created`` is False when the promise existed with the same ``idempotency_key`` (and,
        with ``strict``, is still pending); otherwise an existing promise is AlreadyExists.
        """
        request = CreatePromiseRequest(
            id=id,
            timeout=self._deadline("timeout", timeout),
            param=_value(param),
            tags=dict(tags or {}),
            idempotency_key=idempotency_key or "",
            strict=strict,
        )
        status, response = self._request("promises.create", request, PromiseResponse, request_timeout, metadata)
        return PromiseResult(response.promise, status == Status.CREATED)

    def promises_createtask(
        self,
        id: str,
        timeout: Deadline,
        task_process_id: str,
        task_ttl: Duration = 0,
        task_timeout: Optional[Deadline] = None,
        param: Data = None,
        tags: Optional[Mapping[str, str]] = None,
        idempotency_key: Optional[str] = None,
        strict: bool = False,
        *,
        request_timeout: Optional[float] = None,
        metadata: Metadata = None,
    ) -> PromiseTaskResult:
        """Create a promise and, if it carries a ``resonate:invoke`` tag, its invoke task claimed by ``task_process_id``.

        ``timeout``: the promise's deadline, as for :meth:`promises_create`; ``task_ttl``: the claim
        lease, a duration; ``task_timeout``: the task's deadline, None (or 0, as on the wire) for
        the promise's ``timeout``.
        """
        request = CreatePromiseAndTaskRequest(
            id=id,
            timeout=self._deadline("timeout", timeout),
            param=_value(param),
            tags=dict(tags or {}),
            idempotency_key=idempotency_key or "",
            strict=strict,
            task_process_id=task_process_id,
            task_ttl=self._duration("task_ttl", task_ttl),
            task_timeout=0 if task_timeout in (None, 0) else self._deadline("task_timeout", task_timeout),
        )
        status, response = self._request(
            "promises.createtask", request, CreatePromiseAndTaskResponse, request_timeout, metadata
        )
        return PromiseTaskResult(response.promise, response.task, status == Status.CREATED)

    def promises_complete(
        self,
        id: str,
        state: str,
        value: Data = None,
        idempotency_key: Optional[str] = None,
        strict: bool = False,
        *,
        request_timeout: Optional[float] = None,
        metadata: Metadata = None,
    ) -> PromiseResult:
        """Complete a pending promise as ``state`` (RESOLVED, REJECTED, REJECTED_CANCELED or REJECTED_TIMEDOUT).

        ``created`` is False when it was already completed the same way (same key, or it timed
        out and ``strict`` is off); Forbidden when it was completed otherwise.
        """
        request = CompletePromiseRequest(
            id=id, state=state, value=_value(value), idempotency_key=idempotency_key or "", strict=strict
        )
        status, response = self._request("promises.complete", request, PromiseResponse, request_timeout, metadata)
        return PromiseResult(response.promise, status == Status.CREATED)

    def promises_resolve(
        self, id: str, value: Data = None, idempotency_key: Optional[str] = None, strict: bool = False, **options: Any
    ) -> PromiseResult:
        """:meth:`promises_complete` with state RESOLVED."""
        return self.promises_complete(id, PromiseState.RESOLVED, value, idempotency_key, strict, **options)

    def promises_reject(
        self, id: str, value: Data = None, idempotency_key: Optional[str] = None, strict: bool = False, **options: Any
    ) -> PromiseResult:
        """:meth:`promises_complete` with state REJECTED."""
        return self.promises_complete(id, PromiseState.REJECTED, value, idempotency_key, strict, **options)

    def promises_cancel(
        self, id: str, value: Data = None, idempotency_key: Optional[str] = None, strict: bool = False, **options: Any
    ) -> PromiseResult:
        """:meth:`promises_complete` with state REJECTED_CANCELED."""
        return self.promises_complete(id, PromiseState.REJECTED_CANCELED, value, idempotency_key, strict, **options)

    def promises_callback(
        self,
        promise_id: str,
        root_promise_id: str,
        recv: Any,
        timeout: Deadline,
        *,
        request_timeout: Optional[float] = None,
        metadata: Metadata = None,
    ) -> CallbackResult:
        """Register a resume callback: once ``promise_id`` completes, a resume task of ``root_promise_id`` goes to ``recv``.

        ``recv``: a string (``nats://subject``, ``poll://any@group``) or ``{"type", "data"}``;
        ``timeout``: the resume task's deadline, as for :meth:`promises_create` (pass the root
        promise's timeout). It is required: once it has passed, no task is ever sent.
        """
        request = CreateCallbackRequest(
            promise_id=promise_id,
            root_promise_id=root_promise_id,
            recv=recv,
            timeout=self._deadline("timeout", timeout),
        )
        status, response = self._request("promises.callback", request, CallbackResponse, request_timeout, metadata)
        return CallbackResult(response.promise, response.callback, status == Status.CREATED)

    def promises_subscribe(
        self,
        id: str,
        promise_id: str,
        recv: Any,
        timeout: Deadline,
        *,
        request_timeout: Optional[float] = None,
        metadata: Metadata = None,
    ) -> CallbackResult:
        """Subscribe ``id`` to ``promise_id``: once it completes, a notify message goes to ``recv`` by ``timeout``.

        ``timeout`` is a deadline, as for :meth:`promises_create`; required, since a notify
        whose deadline has passed is never sent.
        """
        deadline = self._deadline("timeout", timeout)
        request = CreateSubscriptionRequest(id=id, promise_id=promise_id, recv=recv, timeout=deadline)
        status, response = self._request("promises.subscribe", request, CallbackResponse, request_timeout, metadata)
        return CallbackResult(response.promise, response.callback, status == Status.CREATED)

    # ------------------------------------------------------------------ schedules

    def schedules_read(
        self, id: str, *, request_timeout: Optional[float] = None, metadata: Metadata = None
    ) -> Schedule:
        """The schedule ``id``; NotFound if there is none."""
        request = ReadScheduleRequest(id=id)
        _, response = self._request("schedules.read", request, ScheduleResponse, request_timeout, metadata)
        return response.schedule

    def schedules_search(
        self,
        id: str = "*",
        tags: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
        *,
        request_timeout: Optional[float] = None,
        metadata: Metadata = None,
    ) -> "Page[Schedule]":
        """One page of schedules whose id matches the glob ``id``, newest first (paging as :meth:`promises_search`)."""
        request = SearchSchedulesRequest(id=id, tags=dict(tags or {}), limit=limit or 0, cursor=cursor or "")
        _, response = self._request("schedules.search", request, SearchSchedulesResponse, request_timeout, metadata)
        return Page(response.schedules, response.cursor)

    def schedules_search_all(
        self,
        id: str = "*",
        tags: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        *,
        request_timeout: Optional[float] = None,
        metadata: Metadata = None,
    ) -> Iterator[Schedule]:
        """Every schedule :meth:`schedules_search` finds, following the cursors."""
        query = {"id": id, "tags": tags, "limit": limit}
        return _every_page(self.schedules_search, query, request_timeout=request_timeout, metadata=metadata)

    def schedules_create(
        self,
        id: str,
        cron: str,
        promise_id: str,
        promise_timeout: Duration = 0,
        promise_param: Data = None,
        promise_tags: Optional[Mapping[str, str]] = None,
        tags: Optional[Mapping[str, str]] = None,
        description: str = "",
        idempotency_key: Optional[str] = None,
        *,
        request_timeout: Optional[float] = None,
        metadata: Metadata = None,
    ) -> ScheduleResult:
        """Create a schedule that creates promise ``promise_id`` on each ``cron`` firing.

        ``promise_id`` is a template: ``{{.id}}`` and ``{{.timestamp}}`` are replaced at each firing.

        ``promise_timeout`` is a duration (ms, a timedelta or ``"1h"``): each promise times out that
        long after its firing. AlreadyExists unless the stored schedule has the same
        ``idempotency_key`` (then ``created`` is False).
        """
        request = CreateScheduleRequest(
            id=id,
            description=description,
            cron=cron,
            tags=dict(tags or {}),
            promise_id=promise_id,
            promise_timeout=self._duration("promise_timeout", promise_timeout),
            promise_param=_value(promise_param),
            promise_tags=dict(promise_tags or {}),
            idempotency_key=idempotency_key or "",
        )
        status, response = self._request("schedules.create", request, ScheduleResponse, request_timeout, metadata)
        return ScheduleResult(response.schedule, status == Status.CREATED)

    def schedules_delete(self, id: str, *, request_timeout: Optional[float] = None, metadata: Metadata = None) -> None:
        """Delete the schedule ``id`` (promises it created stay); NotFound if there is none."""
        self._request("schedules.delete", DeleteScheduleRequest(id=id), EmptyResponse, request_timeout, metadata)

    # ------------------------------------------------------------------ locks

    def locks_acquire(
        self,
        resource_id: str,
        execution_id: str,
        process_id: str,
        ttl: Duration = 0,
        *,
        request_timeout: Optional[float] = None,
        metadata: Metadata = None,
    ) -> Lock:
        """Acquire (or, for the same ``execution_id``, refresh) ``resource_id`` for ``ttl`` (a duration); Forbidden if
        held by another."""
        lease = self._duration("ttl", ttl)
        request = AcquireLockRequest(resource_id=resource_id, execution_id=execution_id, process_id=process_id, ttl=lease)
        _, response = self._request("locks.acquire", request, LockResponse, request_timeout, metadata)
        return response.lock

    def locks_release(
        self, resource_id: str, execution_id: str, *, request_timeout: Optional[float] = None, metadata: Metadata = None
    ) -> None:
        """Release the lock ``execution_id`` holds on ``resource_id``; NotFound if it holds none."""
        request = ReleaseLockRequest(resource_id=resource_id, execution_id=execution_id)
        self._request("locks.release", request, EmptyResponse, request_timeout, metadata)

    def locks_heartbeat(
        self, process_id: str, *, request_timeout: Optional[float] = None, metadata: Metadata = None
    ) -> int:
        """Extend every lock held through ``process_id`` by its own ttl; returns how many."""
        request = HeartbeatLocksRequest(process_id=process_id)
        _, response = self._request("locks.heartbeat", request, LocksAffectedResponse, request_timeout, metadata)
        return response.locks_affected

    # ------------------------------------------------------------------ tasks

    def tasks_claim(
        self,
        id: str,
        counter: int,
        process_id: Optional[str] = None,
        ttl: Duration = 0,
        *,
        request_timeout: Optional[float] = None,
        metadata: Metadata = None,
    ) -> ClaimTaskResponse:
        """Claim task ``id`` at ``counter`` for ``process_id`` (default ``<id>/<counter>``) with a lease of ``ttl``.

        ``ttl`` is a duration (ms, a timedelta or ``"1m"``). Returns the task with its root
        promise (and leaf promise for a resume task).
        """
        lease = self._duration("ttl", ttl)
        request = ClaimTaskRequest(id=id, counter=counter, process_id=process_id or "", ttl=lease)
        _, response = self._request("tasks.claim", request, ClaimTaskResponse, request_timeout, metadata)
        return response

    def tasks_complete(
        self, id: str, counter: int, *, request_timeout: Optional[float] = None, metadata: Metadata = None
    ) -> TaskResult:
        """Complete a task claimed at ``counter``; ``created`` is False when it was already completed or timed out."""
        request = CompleteTaskRequest(id=id, counter=counter)
        status, response = self._request("tasks.complete", request, TaskResponse, request_timeout, metadata)
        return TaskResult(response.task, status == Status.CREATED)

    def tasks_drop(
        self, id: str, counter: int, *, request_timeout: Optional[float] = None, metadata: Metadata = None
    ) -> TaskResult:
        """Give a claimed task back (counter + 1, delivered again); ``created`` is False when it was not claimed."""
        request = DropTaskRequest(id=id, counter=counter)
        status, response = self._request("tasks.drop", request, TaskResponse, request_timeout, metadata)
        return TaskResult(response.task, status == Status.CREATED)

    def tasks_heartbeat(
        self, process_id: str, *, request_timeout: Optional[float] = None, metadata: Metadata = None
    ) -> int:
        """Extend the lease of every task claimed by ``process_id``; returns how many."""
        request = HeartbeatTasksRequest(process_id=process_id)
        _, response = self._request("tasks.heartbeat", request, TasksAffectedResponse, request_timeout, metadata)
        return response.tasks_affected
