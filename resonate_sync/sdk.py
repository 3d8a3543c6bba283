"""The official Resonate Python SDK (``resonate-sdk`` 0.5–0.6) on resonate_sync, over NATS.

``pip install 'resonate_sync[sdk]'`` (Python 3.12 or newer, as the SDK needs), then::

    from resonate import Resonate
    from resonate_sync.sdk import NatsMessageSource, NatsStore

    resonate = Resonate(store=NatsStore(url), message_source=NatsMessageSource(url, group="workers"))

The SDK reaches its server through two seams, and this module fills both with NATS:

* :class:`NatsStore`, the SDK's ``Store`` (promises, tasks, schedules): each call is one
  operation of a :class:`~resonate_sync.Client` (``promises.create``, ``tasks.claim``, …), and
  its reply is reshaped into the SDK's objects here, not in the server.
* :class:`NatsMessageSource`, the SDK's ``MessageSource``: the task messages the server
  publishes for the SDK's addresses. Its anycast address ``poll://any@<group>/<id>`` is
  delivered to ``<prefix>.<group>``, which every worker of the group subscribes to in one queue
  group (so exactly one of them receives each message), and its unicast address
  ``poll://uni@<group>/<id>`` to ``<prefix>.<group>.<id>`` (the server's
  ``--delivery-poll-prefix``, default ``resonate.recv``: give both the same prefix).

The SDK's default routing therefore works unchanged: ``ctx.rpc(f)`` targets
``poll://any@default``, a durable sleep is a promise tagged ``resonate:timeout``.

Like the SDK's HTTP store, a call that finds the server unreachable, busy or failing (503,
500, no reply in time) is retried until it succeeds, every second at most: a worker outlives
a server restart. Other errors (400, 403, 404, 409) raise the SDK's ``ResonateStoreError``
with the code and message of the reply. A claim is no idempotent operation: if an attempt
may have claimed the task before its reply was lost, a later attempt answered "already
claimed" is taken as that claim, and the promises are read instead.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import uuid
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar

if sys.version_info < (3, 12):  # pragma: no cover - the import fails on older Pythons anyway
    raise ImportError("resonate_sync.sdk needs Python 3.12 or newer, as resonate-sdk 0.5-0.6 does")

try:
    from resonate.encoders import Base64Encoder
    from resonate.errors import ResonateStoreError
    from resonate.models.callback import Callback
    from resonate.models.durable_promise import DurablePromise
    from resonate.models.schedules import Schedule
    from resonate.models.task import Task
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"resonate_sync.sdk needs the Resonate SDK: pip install 'resonate_sync[sdk]' ({exc})") from exc

from .backoff import retry_delay
from .client import Client
from .errors import ResonateError, Status
from .models import PromiseState, Value
from .models.convert import unstructure
from .subjects import token_problem
from .transport.connection import Connection
from .transport.errors import AuthorizationError, NatsConnectionError
from .urls import redact_url

__all__ = ["NatsStore", "NatsMessageSource", "DEFAULT_PREFIX"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "resonate.recv"
"""The server's default ``--delivery-poll-prefix``."""

T = TypeVar("T")

_RETRY_FIRST_S = 0.05
_RETRY_CAP_S = 1.0


def _value(data: Optional[str], headers: Optional[Dict[str, str]]) -> Value:
    return Value.of(data, headers=headers)


class NatsStore:
    """The SDK's ``Store`` over a resonate_sync server (see the module docstring).

    Args:
        url: the NATS server, as for :class:`~resonate_sync.Client` (default ``nats://localhost:4222``).
        timeout: seconds each attempt waits for its reply.
        **options: the Client's connection options: ``subject`` (the server's request subject),
            ``name``, ``connect_timeout``, ``tls_cacert``, ``tls_client_cert``, ``tls_client_key``,
            ``tls_verify``, ``user_credentials``, ``nkeys_seed``.

    Connects at once (``ConnectionFailed`` naming the URL when it cannot). Close it with
    :meth:`close` once the ``Resonate`` using it has stopped.
    """

    def __init__(self, url: Optional[str] = None, *, timeout: float = 5.0, **options: Any) -> None:
        self._client = Client(url, timeout=timeout, **options)
        self._closed = threading.Event()
        self._encoder = Base64Encoder()
        self._promises = _PromiseStore(self)
        self._tasks = _TaskStore(self)
        self._schedules = _ScheduleStore(self)

    @property
    def encoder(self) -> Base64Encoder:
        """How the SDK's values travel: UTF-8 text as base64, as the protocol's ``data`` is."""
        return self._encoder

    @property
    def promises(self) -> "_PromiseStore":
        return self._promises

    @property
    def tasks(self) -> "_TaskStore":
        return self._tasks

    @property
    def schedules(self) -> "_ScheduleStore":
        return self._schedules

    @property
    def client(self) -> Client:
        """The :class:`~resonate_sync.Client` the store sends through."""
        return self._client

    def close(self) -> None:
        """Close the connection; calls in flight and later raise ``ResonateStoreError``. Idempotent."""
        self._closed.set()
        self._client.close()

    def __enter__(self) -> "NatsStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(self, what: str, operation: Callable[[], T], on_error: Optional[Callable[[ResonateError, bool], T]] = None) -> T:
        """Run ``operation`` until it gets an answer; ``what`` names it in the log.

        Failures another attempt may mend (5xx: unreachable, no reply in time, busy, failing)
        are retried with backoff up to a second apart, logged once per outage. Any other
        error goes to ``on_error(error, uncertain)`` if given (``uncertain``: an earlier
        attempt may have acted), else raises ``ResonateStoreError``.
        """
        failures = 0
        while True:
            try:
                result = operation()
            except ResonateError as error:
                if error.code < 500:
                    if on_error is not None:
                        return on_error(error, failures > 0)
                    raise ResonateStoreError(mesg=error.message, code=error.code) from error
                if self._closed.is_set():
                    raise ResonateStoreError(mesg=f"{what}: the store was closed", code=0) from error
                if failures == 0:
                    log.warning("%s: %s; retrying until the server answers", what, error.message)
                delay = retry_delay(failures, _RETRY_FIRST_S, _RETRY_CAP_S)
                failures += 1
                if self._closed.wait(delay):
                    raise ResonateStoreError(mesg=f"{what}: the store was closed", code=0) from error
                continue
            if failures:
                log.warning("%s: answered after %d failed attempts", what, failures)
            return result

    def promise(self, model: Any) -> DurablePromise:
        return DurablePromise.from_dict(self, unstructure(model))


class _PromiseStore:
    """``store.promises``: the SDK's PromiseStore on the promises.* operations."""

    def __init__(self, store: NatsStore) -> None:
        self._store = store
        self._client = store.client

    def get(self, id: str) -> DurablePromise:
        promise = self._store.call(f"read promise {id}", lambda: self._client.promises_read(id))
        return self._store.promise(promise)

    def create(
        self,
        id: str,
        timeout: int,
        *,
        ikey: Optional[str] = None,
        strict: bool = False,
        headers: Optional[Dict[str, str]] = None,
        data: Optional[str] = None,
        tags: Optional[Dict[str, str]] = None,
    ) -> DurablePromise:
        param = _value(data, headers)
        result = self._store.call(
            f"create promise {id}",
            lambda: self._client.promises_create(id, timeout, param, tags, ikey, strict),
        )
        return self._store.promise(result.promise)

    def create_with_task(
        self,
        id: str,
        timeout: int,
        pid: str,
        ttl: int,
        *,
        ikey: Optional[str] = None,
        strict: bool = False,
        headers: Optional[Dict[str, str]] = None,
        data: Optional[str] = None,
        tags: Optional[Dict[str, str]] = None,
    ) -> Tuple[DurablePromise, Optional[Task]]:
        param = _value(data, headers)
        result = self._store.call(
            f"create promise {id} with its task",
            lambda: self._client.promises_createtask(
                id, timeout, pid, ttl, param=param, tags=tags, idempotency_key=ikey, strict=strict
            ),
        )
        task = Task.from_dict(self._store, unstructure(result.task)) if result.task is not None else None
        return self._store.promise(result.promise), task

    def _complete(
        self, id: str, state: str, ikey: Optional[str], strict: bool, headers: Optional[Dict[str, str]], data: Optional[str]
    ) -> DurablePromise:
        value = _value(data, headers)
        result = self._store.call(
            f"complete promise {id} as {state}",
            lambda: self._client.promises_complete(id, state, value, ikey, strict),
        )
        return self._store.promise(result.promise)

    def resolve(
        self,
        id: str,
        *,
        ikey: Optional[str] = None,
        strict: bool = False,
        headers: Optional[Dict[str, str]] = None,
        data: Optional[str] = None,
    ) -> DurablePromise:
        return self._complete(id, PromiseState.RESOLVED, ikey, strict, headers, data)

    def reject(
        self,
        id: str,
        *,
        ikey: Optional[str] = None,
        strict: bool = False,
        headers: Optional[Dict[str, str]] = None,
        data: Optional[str] = None,
    ) -> DurablePromise:
        return self._complete(id, PromiseState.REJECTED, ikey, strict, headers, data)

    def cancel(
        self,
        id: str,
        *,
        ikey: Optional[str] = None,
        strict: bool = False,
        headers: Optional[Dict[str, str]] = None,
        data: Optional[str] = None,
    ) -> DurablePromise:
        return self._complete(id, PromiseState.REJECTED_CANCELED, ikey, strict, headers, data)

    def _registered(self, result: Any) -> Tuple[DurablePromise, Optional[Callback]]:
        callback = Callback.from_dict(unstructure(result.callback)) if result.callback is not None else None
        return self._store.promise(result.promise), callback

    def callback(self, promise_id: str, root_promise_id: str, recv: str, timeout: int) -> Tuple[DurablePromise, Optional[Callback]]:
        result = self._store.call(
            f"register a callback of {root_promise_id} on {promise_id}",
            lambda: self._client.promises_callback(promise_id, root_promise_id, recv, timeout),
        )
        return self._registered(result)

    def subscribe(self, id: str, promise_id: str, recv: str, timeout: int) -> Tuple[DurablePromise, Optional[Callback]]:
        result = self._store.call(
            f"subscribe {id} to {promise_id}",
            lambda: self._client.promises_subscribe(id, promise_id, recv, timeout),
        )
        return self._registered(result)


class _TaskStore:
    """``store.tasks``: claim, complete and heartbeat, with the claim reply reshaped for the SDK."""

    def __init__(self, store: NatsStore) -> None:
        self._store = store
        self._client = store.client

    def claim(self, id: str, counter: int, pid: str, ttl: int) -> Tuple[DurablePromise, Optional[DurablePromise]]:
        def claimed_before(error: ResonateError, uncertain: bool) -> Tuple[DurablePromise, Optional[DurablePromise]]:
            if not (uncertain and error.message == Status.TASK_ALREADY_CLAIMED.text):
                raise ResonateStoreError(mesg=error.message, code=error.code) from error
            log.warning("task %s (counter %d): an earlier attempt claimed it; reading its promises", id, counter)
            return self._promises_of(id)

        return self._store.call(
            f"claim task {id} (counter {counter})",
            lambda: self._reshape(self._client.tasks_claim(id, counter, pid, ttl)),
            claimed_before,
        )

    def _reshape(self, response: Any) -> Tuple[DurablePromise, Optional[DurablePromise]]:
        """The claim reply as the SDK wants it: (root, leaf or None)."""
        leaf = response.leaf_promise
        return self._store.promise(response.root_promise), (self._store.promise(leaf) if leaf is not None else None)

    def _promises_of(self, task_id: str) -> Tuple[DurablePromise, Optional[DurablePromise]]:
        """The root and leaf promises a task id names (PROTOCOL.md 2.7: ``__invoke:R``, ``__resume:R:L``).

        A root id holding ``:`` makes ``__resume:…`` ambiguous; the SDK's ids (``f.1.2``) hold none.
        """
        kind, _, rest = task_id.partition(":")
        root, _, leaf = rest.partition(":") if kind == "__resume" else (rest, "", "")
        promises = self._store.promises
        return promises.get(root), (promises.get(leaf) if leaf else None)

    def complete(self, id: str, counter: int) -> bool:
        self._store.call(f"complete task {id} (counter {counter})", lambda: self._client.tasks_complete(id, counter))
        return True

    def heartbeat(self, pid: str) -> int:
        return self._store.call(f"heartbeat the tasks of {pid}", lambda: self._client.tasks_heartbeat(pid))


class _ScheduleStore:
    """``store.schedules`` (``resonate.schedules``): create, get and delete."""

    def __init__(self, store: NatsStore) -> None:
        self._store = store
        self._client = store.client

    def create(
        self,
        id: str,
        cron: str,
        promise_id: str,
        promise_timeout: int,
        *,
        ikey: Optional[str] = None,
        description: Optional[str] = None,
        tags: Optional[Dict[str, str]] = None,
        promise_headers: Optional[Dict[str, str]] = None,
        promise_data: Optional[str] = None,
        promise_tags: Optional[Dict[str, str]] = None,
    ) -> Schedule:
        param = _value(promise_data, promise_headers)
        result = self._store.call(
            f"create schedule {id}",
            lambda: self._client.schedules_create(
                id, cron, promise_id, promise_timeout, param, promise_tags, tags, description or "", ikey
            ),
        )
        return Schedule.from_dict(self._store, unstructure(result.schedule))

    def get(self, id: str) -> Schedule:
        schedule = self._store.call(f"read schedule {id}", lambda: self._client.schedules_read(id))
        return Schedule.from_dict(self._store, unstructure(schedule))

    def delete(self, id: str) -> None:
        self._store.call(f"delete schedule {id}", lambda: self._client.schedules_delete(id))


class NatsMessageSource:
    """The SDK's ``MessageSource``: task messages the server publishes for one worker of ``group``.

    Args:
        url: the NATS server (default ``nats://localhost:4222``).
        group: the worker group, the ``G`` of ``poll://any@G`` (the SDK's rpc target).
        id: this worker's id, the ``ID`` of ``poll://uni@G/ID``; default a new random hex id.
        prefix: the server's ``--delivery-poll-prefix``.
        **options: connection options: ``name``, ``connect_timeout``, ``tls_cacert``,
            ``tls_client_cert``, ``tls_client_key``, ``tls_verify``, ``user_credentials``, ``nkeys_seed``.

    ``start`` subscribes to ``<prefix>.<group>`` in the queue group ``<group>`` and to
    ``<prefix>.<group>.<id>``; a lost connection is re-established in the background (messages
    published meanwhile are lost to this worker; the server sends an unclaimed task again after
    its claim timeout). ValueError when ``group`` or ``id`` cannot be one subject token.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        group: str = "default",
        id: Optional[str] = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        **options: Any,
    ) -> None:
        id = uuid.uuid4().hex if id is None else id
        for value, what in ((group, "group"), (id, "id")):
            problem = token_problem(value, what) if isinstance(value, str) else f"the {what} is not a string"
            if problem:
                raise ValueError(f"NatsMessageSource: {problem}")
        self._group = group
        self._id = id
        self._prefix = prefix
        self._messages: "queue.Queue[Optional[dict]]" = queue.Queue()
        self._stopped = threading.Event()
        self._lost = threading.Event()
        self._started = False
        options.setdefault("name", f"resonate-sdk-{group}-{id}")
        options.setdefault("tls_verify", True)
        self._conn = Connection(url or "nats://localhost:4222", on_disconnect=self._on_disconnect, **options)
        self._supervisor = threading.Thread(target=self._reconnect_loop, name="resonate-sdk-nats", daemon=True)

    @property
    def unicast(self) -> str:
        return f"poll://uni@{self._group}/{self._id}"

    @property
    def anycast(self) -> str:
        return f"poll://any@{self._group}/{self._id}"

    @property
    def subjects(self) -> Tuple[str, str]:
        """The anycast subject (a queue subscription) and the unicast subject this source reads."""
        return f"{self._prefix}.{self._group}", f"{self._prefix}.{self._group}.{self._id}"

    def start(self) -> None:
        """Subscribe and connect; AuthorizationError for refused credentials. Idempotent."""
        if self._started:
            return
        self._started = True
        anycast, unicast = self.subjects
        self._conn.subscribe(anycast, callback=self._on_message, queue=self._group)
        self._conn.subscribe(unicast, callback=self._on_message)
        try:
            self._conn.connect()
            self._conn.flush()
        except AuthorizationError:
            raise
        except (NatsConnectionError, OSError) as exc:
            log.warning("%s unreachable (%s); connecting in the background", redact_url(self._conn.url), exc)
            self._lost.set()
        self._supervisor.start()

    def stop(self) -> None:
        """Close the connection and end :meth:`next` (it returns None). Idempotent."""
        self._stopped.set()
        self._lost.set()
        self._messages.put(None)
        self._conn.close()

    def next(self) -> Optional[dict]:
        """The next message, waiting for one; None once stopped."""
        return self._messages.get()

    def enqueue(self, mesg: dict) -> None:
        self._messages.put(mesg)

    def _on_message(self, msg: Any) -> None:
        mesg = _sdk_message(msg.payload)
        if mesg is None:
            log.warning("ignored a message on %s that is no task message: %r", msg.subject, bytes(msg.payload[:200]))
        else:
            self._messages.put(mesg)

    def _on_disconnect(self, reason: str) -> None:
        log.warning("lost %s (%s); reconnecting", self._conn.url, reason)
        self._lost.set()

    def _reconnect_loop(self) -> None:
        attempt = 0
        while True:
            self._lost.wait()
            if self._stopped.is_set():
                return
            try:
                self._conn.connect()
            except Exception as exc:  # unreachable, refused, or closed by stop()
                attempt += 1
                if self._stopped.wait(retry_delay(attempt, _RETRY_FIRST_S, _RETRY_CAP_S)):
                    return
                log.debug("reconnecting to %s: %s", self._conn.url, exc)
                continue
            if attempt:
                log.warning("reconnected to %s", self._conn.url)
            attempt = 0
            self._lost.clear()
            if not self._conn.connected:  # lost again between connect and clear
                self._lost.set()


def _sdk_message(payload: bytes) -> Optional[dict]:
    """The SDK's message (``{"type": "invoke"|"resume", "task": {id, counter}}`` or notify) of a task message body."""
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    kind, task = body.get("type"), body.get("task")
    if kind in ("invoke", "resume") and isinstance(task, dict):
        id, counter = task.get("id"), task.get("counter")
        if isinstance(id, str) and type(counter) is int:
            return {"type": kind, "task": {"id": id, "counter": counter}}
    if kind == "notify" and isinstance(body.get("promise"), dict):
        return {"type": "notify", "promise": body["promise"]}
    return None
