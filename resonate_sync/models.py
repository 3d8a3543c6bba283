"""The models of the Resonate protocol and the converters that speak its JSON.

Every object the server stores or exchanges is an ``@attrs.frozen`` class; updates use
``attrs.evolve``. Two cattrs converters are built once, from the same field declarations:

* ``WIRE`` speaks the exact JSON of PROTOCOL.md: camelCase names, keys omitted when empty
  (Go ``omitempty``), internal fields (task state, receivers, sort ids) never serialised, and
  strict structuring of requests (a string where an int64 belongs, a float, an int64 overflow,
  bad base64 → :class:`~resonate_sync.errors.BadRequest` naming the field path).
* ``STORE`` writes and reads every field, internal ones included, for the journal and
  snapshots; it round-trips exactly.

Units: every time is an integer of **milliseconds since the Unix epoch**; ``ttl``,
``promiseTimeout`` and the task lease are durations in milliseconds.
"""

import base64
import binascii
import typing
from typing import Any, Dict, List, NewType, Optional, Type, TypeVar

import attrs
import cattrs
from attrs import Factory, frozen
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.json import make_converter

from .errors import BadRequest
from .limits import PAYLOAD_DEPTH, JsonLimitError, check_value

T = TypeVar("T")

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Base64 = NewType("Base64", str)
"""A standard base64 string (RFC 4648 §4, padded), re-encoded canonically on input."""

StrMap = Dict[str, str]


class PromiseState:
    """The five promise states; the four completed ones are final."""

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


# --------------------------------------------------------------------------- stored objects


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
    param: Value = EMPTY_VALUE
    value: Value = EMPTY_VALUE
    timeout: int = 0
    idempotency_key_for_create: Optional[str] = None
    idempotency_key_for_complete: Optional[str] = None
    tags: StrMap = Factory(dict)
    created_on: Optional[int] = None
    completed_on: Optional[int] = None
    sort_id: int = 0


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
    recv: Any = None
    mesg: Optional[Mesg] = None


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
    state: int = TaskState.INIT
    recv: Any = None
    mesg: Optional[Mesg] = None
    attempt: int = 0
    ttl: int = 0
    expires_at: int = 0
    sort_id: int = 0


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
    description: str = ""
    tags: StrMap = Factory(dict)
    promise_timeout: int = 0
    promise_param: Value = EMPTY_VALUE
    promise_tags: StrMap = Factory(dict)
    last_run_time: Optional[int] = None
    idempotency_key: Optional[str] = None
    sort_id: int = 0


@frozen
class Lock:
    """A lease on ``resource_id`` held by ``execution_id``; ``expires_at`` = acquire/heartbeat time + ``ttl``."""

    resource_id: str
    execution_id: str
    process_id: str
    ttl: int
    expires_at: int


# --------------------------------------------------------------------------- requests


@frozen
class ReadPromiseRequest:
    id: str = ""


@frozen
class SearchPromisesRequest:
    id: str = ""
    states: List[str] = Factory(list)
    tags: StrMap = Factory(dict)
    limit: int = 0
    cursor: str = ""


@frozen
class CreatePromiseRequest:
    id: str = ""
    timeout: int = 0
    param: Value = EMPTY_VALUE
    tags: StrMap = Factory(dict)
    idempotency_key: str = ""
    strict: bool = False


@frozen
class CreatePromiseAndTaskRequest:
    id: str = ""
    timeout: int = 0
    param: Value = EMPTY_VALUE
    tags: StrMap = Factory(dict)
    idempotency_key: str = ""
    strict: bool = False
    task_process_id: str = ""
    task_ttl: int = 0
    task_timeout: int = 0


@frozen
class CompletePromiseRequest:
    id: str = ""
    state: str = ""
    value: Value = EMPTY_VALUE
    idempotency_key: str = ""
    strict: bool = False


@frozen
class CreateCallbackRequest:
    promise_id: str = ""
    root_promise_id: str = ""
    recv: Any = None
    timeout: int = 0


@frozen
class CreateSubscriptionRequest:
    id: str = ""
    promise_id: str = ""
    recv: Any = None
    timeout: int = 0


@frozen
class ReadScheduleRequest:
    id: str = ""


@frozen
class SearchSchedulesRequest:
    id: str = ""
    tags: StrMap = Factory(dict)
    limit: int = 0
    cursor: str = ""


@frozen
class CreateScheduleRequest:
    id: str = ""
    description: str = ""
    cron: str = ""
    tags: StrMap = Factory(dict)
    promise_id: str = ""
    promise_timeout: int = 0
    promise_param: Value = EMPTY_VALUE
    promise_tags: StrMap = Factory(dict)
    idempotency_key: str = ""


@frozen
class DeleteScheduleRequest:
    id: str = ""


@frozen
class AcquireLockRequest:
    resource_id: str = ""
    execution_id: str = ""
    process_id: str = ""
    ttl: int = 0


@frozen
class ReleaseLockRequest:
    resource_id: str = ""
    execution_id: str = ""


@frozen
class HeartbeatLocksRequest:
    process_id: str = ""


@frozen
class ClaimTaskRequest:
    id: str = ""
    counter: int = 0
    process_id: str = ""
    ttl: int = 0


@frozen
class CompleteTaskRequest:
    id: str = ""
    counter: int = 0


@frozen
class DropTaskRequest:
    id: str = ""
    counter: int = 0


@frozen
class HeartbeatTasksRequest:
    process_id: str = ""


# --------------------------------------------------------------------------- responses


@frozen
class PromiseResponse:
    promise: Promise


@frozen
class SearchPromisesResponse:
    promises: List[Promise] = Factory(list)
    cursor: Optional[str] = None


@frozen
class CreatePromiseAndTaskResponse:
    promise: Promise
    task: Optional[Task] = None


@frozen
class CallbackResponse:
    promise: Promise
    callback: Optional[Callback] = None


@frozen
class ScheduleResponse:
    schedule: Schedule


@frozen
class SearchSchedulesResponse:
    schedules: List[Schedule] = Factory(list)
    cursor: Optional[str] = None


@frozen
class EmptyResponse:
    pass


@frozen
class LockResponse:
    lock: Lock


@frozen
class LocksAffectedResponse:
    locks_affected: int


@frozen
class TaskResponse:
    task: Task


@frozen
class ClaimTaskResponse:
    task: Task
    root_promise_href: str
    root_promise: Optional[Promise] = None
    leaf_promise: Optional[Promise] = None
    leaf_promise_href: Optional[str] = None


@frozen
class TasksAffectedResponse:
    tasks_affected: int


# --------------------------------------------------------------------------- journal records


@frozen
class PutPromise:
    """Insert or replace a promise (creation, completion, timeout)."""

    promise: Promise


@frozen
class PutTask:
    """Insert or replace a task (every task transition)."""

    task: Task


@frozen
class PutCallback:
    """Register a callback or subscription on a pending promise."""

    callback: Callback


@frozen
class DeleteCallbacks:
    """Remove every callback of a promise (they became tasks in the same step)."""

    promise_id: str


@frozen
class PutSchedule:
    schedule: Schedule


@frozen
class DeleteSchedule:
    id: str


@frozen
class PutLock:
    lock: Lock


@frozen
class DeleteLock:
    resource_id: str


RECORD_TYPES = {
    "promise": PutPromise,
    "task": PutTask,
    "callback": PutCallback,
    "callbacks.delete": DeleteCallbacks,
    "schedule": PutSchedule,
    "schedule.delete": DeleteSchedule,
    "lock": PutLock,
    "lock.delete": DeleteLock,
}
RECORD_NAMES = {cls: name for name, cls in RECORD_TYPES.items()}

Record = typing.Union[PutPromise, PutTask, PutCallback, DeleteCallbacks, PutSchedule, DeleteSchedule, PutLock, DeleteLock]


# --------------------------------------------------------------------------- converters


class FieldError(ValueError):
    """A field's value breaks its type rule; the message says the rule, cattrs adds the path."""


def camel(name: str) -> str:
    """``idempotency_key_for_create`` → ``idempotencyKeyForCreate``."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _strict_str(value: Any, _: Any) -> str:
    if value is None:  # Go decodes null into the zero value
        return ""
    if type(value) is not str:
        raise FieldError("expected a string")
    return value


def _strict_int(value: Any, _: Any) -> int:
    if value is None:
        return 0
    if type(value) is not int:
        raise FieldError("expected an integer")
    if not INT64_MIN <= value <= INT64_MAX:
        raise FieldError("integer out of the int64 range")
    return value


def _strict_bool(value: Any, _: Any) -> bool:
    if value is None:
        return False
    if type(value) is not bool:
        raise FieldError("expected true or false")
    return value


def _strict_str_map(value: Any, _: Any) -> StrMap:
    if value is None:
        return {}
    if type(value) is not dict:
        raise FieldError("expected an object of string values")
    for key, item in value.items():
        if type(item) is not str:
            raise FieldError(f"expected a string value for key {key!r}")
    return value


def _strict_str_list(value: Any, _: Any) -> List[str]:
    if value is None:
        return []
    if type(value) is not list:
        raise FieldError("expected an array of strings")
    for item in value:
        if type(item) is not str:
            raise FieldError("expected an array of strings")
    return value


def _base64(value: Any, _: Any) -> Optional[str]:
    if value is None:
        return None
    if type(value) is not str:
        raise FieldError("expected a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FieldError("invalid base64 (standard alphabet, padded)") from None
    # Python < 3.11 ignores '=' beyond the padding ("aGk==" is b"hi"); Go's StdEncoding and
    # this check refuse it on every Python.
    if len(value) % 4 or value.endswith("==="):
        raise FieldError("invalid base64 (standard alphabet, padded)")
    return base64.b64encode(raw).decode("ascii") if raw else None


def _json_value(value: Any, _: Any) -> Any:
    """A free-form field (``recv``): any JSON data within the request limit (see ``limits``).

    Values decoded from an envelope passed the limit already; this holds values built in
    Python to the same rule, so nothing the journal cannot write and replay gets in.
    """
    try:
        check_value(value, "", PAYLOAD_DEPTH)
    except JsonLimitError as exc:
        raise FieldError(f"{exc.reason} (at {exc.path.lstrip('.')})" if exc.path else exc.reason) from None
    return value


def _trusted(value: Any, _: Any) -> Any:
    return value


_WIRE_RENAMES = {
    (Schedule, "description"): "desc",
    (CreateScheduleRequest, "description"): "description",
}

# Fields never serialised on the wire (PROTOCOL.md 2.2–2.4).
_INTERNAL = {
    Promise: ("sort_id",),
    Task: ("state", "recv", "mesg", "attempt", "ttl", "expires_at", "sort_id"),
    Callback: ("recv", "mesg"),
    Schedule: ("sort_id",),
}

# Keys that are present even when empty (everything else is omitted when empty).
_ALWAYS = {
    Promise: ("id", "state", "param", "value", "timeout"),
    Task: ("id", "counter", "timeout", "root_promise_id"),
    Schedule: ("id", "cron", "tags", "promise_id", "promise_timeout", "promise_param", "next_run_time", "created_on"),
    Lock: ("resource_id", "execution_id", "process_id", "ttl", "expires_at"),
    Callback: ("id", "promise_id", "root_promise_id", "timeout", "created_on"),
    LocksAffectedResponse: ("locks_affected",),
    TasksAffectedResponse: ("tasks_affected",),
    ClaimTaskResponse: ("task", "root_promise_href"),
    PromiseResponse: ("promise",),
    CreatePromiseAndTaskResponse: ("promise",),
    CallbackResponse: ("promise",),
    ScheduleResponse: ("schedule",),
    LockResponse: ("lock",),
    TaskResponse: ("task",),
}

_MODELS = (Value, Promise, Mesg, Callback, Task, Schedule, Lock)
_REQUESTS = (
    ReadPromiseRequest,
    SearchPromisesRequest,
    CreatePromiseRequest,
    CreatePromiseAndTaskRequest,
    CompletePromiseRequest,
    CreateCallbackRequest,
    CreateSubscriptionRequest,
    ReadScheduleRequest,
    SearchSchedulesRequest,
    CreateScheduleRequest,
    DeleteScheduleRequest,
    AcquireLockRequest,
    ReleaseLockRequest,
    HeartbeatLocksRequest,
    ClaimTaskRequest,
    CompleteTaskRequest,
    DropTaskRequest,
    HeartbeatTasksRequest,
)
_RESPONSES = (
    PromiseResponse,
    SearchPromisesResponse,
    CreatePromiseAndTaskResponse,
    CallbackResponse,
    ScheduleResponse,
    SearchSchedulesResponse,
    EmptyResponse,
    LockResponse,
    LocksAffectedResponse,
    TaskResponse,
    ClaimTaskResponse,
    TasksAffectedResponse,
)


def _register_scalars(conv: cattrs.Converter) -> None:
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(Base64, _base64)
    conv.register_structure_hook_func(lambda t: t == Optional[Base64], _base64)
    conv.register_structure_hook_func(lambda t: t == StrMap, _strict_str_map)
    conv.register_structure_hook_func(lambda t: t == List[str], _strict_str_list)
    conv.register_structure_hook_func(lambda t: t is Any, _json_value)
    conv.register_unstructure_hook_func(lambda t: t is Any, lambda v: v)


def wire_names(cls: type) -> Dict[str, str]:
    """Attribute name → JSON key on the wire, for a model or request class."""
    return _renames(cls, wire=True)


def _renames(cls: type, wire: bool) -> Dict[str, str]:
    return {
        a.name: _WIRE_RENAMES.get((cls, a.name), camel(a.name)) if wire else camel(a.name) for a in attrs.fields(cls)
    }


def _structure_fn(cls: type, conv: cattrs.Converter, *, wire: bool, detailed: Any = "from_converter") -> Any:
    """cattrs' generated structure function for ``cls``, reading its wire or journal names.

    ``detailed``: collect every field's error (True), stop at the first (False), or the converter's setting.
    """
    renames = {n: override(rename=w) for n, w in _renames(cls, wire).items()}
    return make_dict_structure_fn(cls, conv, _cattrs_detailed_validation=detailed, **renames)


def _build_wire() -> cattrs.Converter:
    conv = make_converter()
    _register_scalars(conv)

    def structure_value(fn):
        def hook(value: Any, _: Any) -> Value:
            if value is None:
                return EMPTY_VALUE
            if type(value) is not dict:  # cattrs would read a string or list as an empty object
                raise FieldError("expected an object with headers and data")
            result = fn(value, Value)
            return EMPTY_VALUE if result.is_empty else result

        return hook

    # Responses are structured and requests unstructured too: the client speaks the same wire.
    for cls in _MODELS + _REQUESTS + _RESPONSES:
        fn = _structure_fn(cls, conv, wire=True, detailed=True)
        conv.register_structure_hook(cls, structure_value(fn) if cls is Value else fn)
    for cls in _MODELS + _RESPONSES + _REQUESTS:
        names = _renames(cls, wire=True)
        internal = _INTERNAL.get(cls, ())
        always = _ALWAYS.get(cls, ())
        overrides = {
            n: override(omit=True) if n in internal else override(rename=w, omit_if_default=n not in always)
            for n, w in names.items()
        }
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **overrides))
    return conv


def _build_store() -> cattrs.Converter:
    """The journal's converter: every field, no re-validation.

    Stored records were validated when their request came in and are covered by the
    journal's checksums, so structuring them trusts scalars (no base64 re-check, no int64
    range test): recovery of a large journal spends its time on JSON, not on checks.
    """
    conv = make_converter()
    for scalar in (str, int, bool, Base64):
        conv.register_structure_hook(scalar, _trusted)
    conv.register_structure_hook_func(lambda t: t == Optional[Base64], _trusted)
    conv.register_structure_hook_func(lambda t: t in (StrMap, List[str]) or t is Any, _trusted)
    conv.register_unstructure_hook_func(lambda t: t is Any, lambda v: v)
    for cls in _MODELS + tuple(RECORD_TYPES.values()):
        conv.register_structure_hook(cls, _structure_fn(cls, conv, wire=False))
        renames = {n: override(rename=w) for n, w in _renames(cls, wire=False).items()}
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **renames))
    return conv


WIRE = _build_wire()
STORE = _build_store()


def _format_error(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, FieldError):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field missing"
    return cattrs.v.format_exception(exc, type_)


def _build_fast_requests() -> Dict[type, Any]:
    """Per request class, a structure function that stops at the first bad field.

    Same field hooks as WIRE's, so it accepts and builds exactly what WIRE does; it skips
    cattrs' per-field error collection (about 1 us of a promises.create). On any failure
    :func:`structure_request` runs WIRE's detailed function for the message.
    """
    return {cls: _structure_fn(cls, WIRE, wire=True, detailed=False) for cls in _REQUESTS}


_FAST_REQUESTS = _build_fast_requests()


def structure_request(payload: Any, cls: Type[T]) -> T:
    """Decode an operation payload into its request model, strictly.

    A payload of JSON ``null`` decodes as ``{}`` (Go behaviour); anything but an object is
    rejected. Unknown keys are ignored. Raises :class:`BadRequest` with ``invalid payload: …``
    naming every offending field path in wire (camelCase) names.
    """
    if payload is None:
        payload = {}
    if type(payload) is not dict:
        raise BadRequest("invalid payload: payload must be a JSON object")
    fast = _FAST_REQUESTS.get(cls)
    if fast is not None:
        try:
            return fast(payload, cls)
        except Exception:  # noqa: S110  the detailed pass below names every bad field
            pass
    try:
        return WIRE.structure(payload, cls)
    except cattrs.ClassValidationError as exc:
        messages = cattrs.transform_error(exc, path="payload", format_exception=_format_error)
        raise BadRequest("invalid payload: " + "; ".join(_wire_path(m) for m in messages)) from None
    except FieldError as exc:
        raise BadRequest(f"invalid payload: {exc}") from None


def _wire_path(message: str) -> str:
    """``expected an integer @ payload.task_ttl`` → ``payload.taskTtl: expected an integer``."""
    text, _, path = message.rpartition(" @ ")
    return f"{'.'.join(camel(part) for part in path.split('.'))}: {text}"


def unstructure(obj: Any) -> Any:
    """The wire JSON (dicts, lists, scalars) of a model or response."""
    return WIRE.unstructure(obj)


def record_to_json(record: "Record") -> Dict[str, Any]:
    """A journal record as a JSON object: ``{"type": <name>, "data": {...}}``."""
    return {"type": RECORD_NAMES[type(record)], "data": STORE.unstructure(record)}


def record_from_json(obj: Dict[str, Any]) -> "Record":
    """The inverse of :func:`record_to_json`."""
    return STORE.structure(obj["data"], RECORD_TYPES[obj["type"]])
