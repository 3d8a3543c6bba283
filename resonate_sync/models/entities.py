"""What the server stores: promises and their values, tasks, callbacks, schedules, locks.

Every entity is ``@attrs.frozen`` and updated with ``attrs.evolve``. Their fields carry no
validators: entities are built by the core from validated requests, and read back from the
journal, which was validated when it was written. Each field's wire rule is declared on it
(see :mod:`.fields`).

Units: every time is an integer of **milliseconds since the Unix epoch**; ``ttl``,
``promiseTimeout`` and the task lease are durations in milliseconds.
"""

import base64
from typing import Any, Optional

from attrs import Factory, field, frozen

from .fields import ALWAYS, INTERNAL, Base64, StrMap, wire

__all__ = ["PromiseState", "TaskState", "Value", "EMPTY_VALUE", "Promise", "Mesg", "Callback", "Task", "Schedule", "Lock"]


class PromiseState:
    """The five promise states; the four completed ones (:attr:`COMPLETED`) are final.

    Plain strings, not enum members: every table lookup hashes and compares them, which enums
    make slower in CPython (``bench/results/promise-states-enum.txt``).
    """

    PENDING = "PENDING"
    RESOLVED = "RESOLVED"
    REJECTED = "REJECTED"
    REJECTED_CANCELED = "REJECTED_CANCELED"
    REJECTED_TIMEDOUT = "REJECTED_TIMEDOUT"

    ALL = (PENDING, RESOLVED, REJECTED, REJECTED_CANCELED, REJECTED_TIMEDOUT)
    COMPLETED = frozenset((RESOLVED, REJECTED, REJECTED_CANCELED, REJECTED_TIMEDOUT))


class TaskState:
    """Task states as bit flags, so ``state & TaskState.ACTIVE`` is one test (as Go does)."""

    INIT = 1
    ENQUEUED = 2
    CLAIMED = 4
    COMPLETED = 8
    TIMEDOUT = 16

    ACTIVE = ENQUEUED | CLAIMED
    FINAL = COMPLETED | TIMEDOUT
    NAMES = {INIT: "INIT", ENQUEUED: "ENQUEUED", CLAIMED: "CLAIMED", COMPLETED: "COMPLETED", TIMEDOUT: "TIMEDOUT"}


@frozen
class Value:
    """A promise's ``param`` or ``value``.

    Attributes:
        headers: string → string.
        data: the payload as a canonical base64 string, or None for no bytes.
    """

    headers: StrMap = Factory(dict)
    data: Optional[Base64] = None

    @classmethod
    def of(cls, data: "bytes | str | None" = None, headers: Optional[StrMap] = None) -> "Value":
        """A Value from raw bytes (a ``str`` is encoded as UTF-8); the data is base64-encoded here."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        if data is not None and not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes or str, not {type(data).__name__}")
        encoded = base64.b64encode(data).decode("ascii") if data else None
        return cls(headers=dict(headers or {}), data=encoded)

    @property
    def raw(self) -> bytes:
        """``data`` decoded: the payload's bytes (``b""`` when there are none)."""
        return base64.b64decode(self.data) if self.data else b""

    @property
    def is_empty(self) -> bool:
        return not self.headers and not self.data


EMPTY_VALUE = Value()


@frozen
class Promise:
    """A durable promise.

    Attributes:
        id: any non-empty string.
        state: one of :class:`PromiseState`.
        param, value: set at creation / completion; ``value`` is empty while pending and after a timeout.
        timeout: absolute deadline, ms since the epoch (inclusive: expired iff ``now >= timeout``).
        idempotency_key_for_create, idempotency_key_for_complete: None when absent.
        tags: string → string; reserved ``resonate:*`` tags are described in PROTOCOL.md 2.9.
        created_on, completed_on: ms since the epoch; ``completed_on`` equals ``timeout`` for timeouts.
        sort_id: creation sequence number (internal, orders search results newest first).
    """

    id: str
    state: str
    param: Value = field(default=EMPTY_VALUE, metadata=ALWAYS)
    value: Value = field(default=EMPTY_VALUE, metadata=ALWAYS)
    timeout: int = field(default=0, metadata=ALWAYS)
    idempotency_key_for_create: Optional[str] = None
    idempotency_key_for_complete: Optional[str] = None
    tags: StrMap = Factory(dict)
    created_on: Optional[int] = None
    completed_on: Optional[int] = None
    sort_id: int = field(default=0, metadata=INTERNAL)


@frozen
class Mesg:
    """The message a task or callback carries: ``invoke``, ``resume`` or ``notify``.

    Attributes:
        type: the message type.
        head: trace context (``traceparent``/``tracestate``) copied from request metadata.
        root: the root promise id; leaf: the awaited promise id (resume only, else "").
    """

    type: str
    root: str
    leaf: str = ""
    head: StrMap = Factory(dict)


@frozen
class Callback:
    """A callback (resume) or subscription (notify) waiting for ``promise_id`` to complete.

    Attributes:
        id: ``__resume:<root>:<promise>`` or ``__notify:<promise>:<subscription>``.
        timeout: absolute ms; becomes the timeout of the task created on completion.
        recv: where the task's message goes: a string or a ``{"type", "data"}`` object (internal).
        mesg: the message (internal).
    """

    id: str
    promise_id: str
    root_promise_id: str
    timeout: int
    created_on: int
    recv: Any = field(default=None, metadata=INTERNAL)
    mesg: Optional[Mesg] = field(default=None, metadata=INTERNAL)


@frozen
class Task:
    """A unit of work delivered to a receiver and claimed by a worker (PROTOCOL.md 6).

    Attributes:
        id: ``__invoke:<p>``, ``__resume:<root>:<p>`` or ``__notify:<p>:<sub>``.
        counter: ownership generation; grows by one each time ownership is revoked.
        timeout: absolute ms after which the task times out.
        root_promise_id: the promise whose completion ends the task.
        process_id: owner while CLAIMED, else None.
        created_on, completed_on: ms since the epoch.
        state: a :class:`TaskState` flag (internal).
        recv, mesg: delivery address and message (internal).
        attempt: failed delivery attempts (internal).
        ttl: claim lease length, ms (internal).
        expires_at: ms; INIT: not before; ENQUEUED: claim deadline; CLAIMED: lease end; 0 = none (internal).
        sort_id: creation sequence number, oldest first among a root's tasks (internal).
    """

    id: str
    counter: int
    timeout: int
    root_promise_id: str
    process_id: Optional[str] = None
    created_on: Optional[int] = None
    completed_on: Optional[int] = None
    state: int = field(default=TaskState.INIT, metadata=INTERNAL)
    recv: Any = field(default=None, metadata=INTERNAL)
    mesg: Optional[Mesg] = field(default=None, metadata=INTERNAL)
    attempt: int = field(default=0, metadata=INTERNAL)
    ttl: int = field(default=0, metadata=INTERNAL)
    expires_at: int = field(default=0, metadata=INTERNAL)
    sort_id: int = field(default=0, metadata=INTERNAL)


@frozen
class Schedule:
    """A cron schedule that creates promises (PROTOCOL.md 7).

    Attributes:
        description: free text; ``desc`` on the wire.
        cron: 5- or 6-field (seconds first) cron, a descriptor, or ``@every <duration>``.
        promise_id: template with ``{{.id}}`` and ``{{.timestamp}}``.
        promise_timeout: relative ms added to each fire time.
        last_run_time, next_run_time: ms since the epoch.
        sort_id: creation sequence number (internal).
    """

    id: str
    cron: str
    promise_id: str
    next_run_time: int
    created_on: int
    description: str = field(default="", metadata=wire(name="desc"))
    tags: StrMap = field(factory=dict, metadata=ALWAYS)
    promise_timeout: int = field(default=0, metadata=ALWAYS)
    promise_param: Value = field(default=EMPTY_VALUE, metadata=ALWAYS)
    promise_tags: StrMap = Factory(dict)
    last_run_time: Optional[int] = None
    idempotency_key: Optional[str] = None
    sort_id: int = field(default=0, metadata=INTERNAL)


@frozen
class Lock:
    """A lease on ``resource_id`` held by ``execution_id``; ``expires_at`` = acquire/heartbeat time + ``ttl``."""

    resource_id: str
    execution_id: str
    process_id: str
    ttl: int
    expires_at: int
