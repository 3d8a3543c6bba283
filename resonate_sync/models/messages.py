"""What goes over the wire: one request model per operation, and the response models.

Every request field converts its value by its rule (:mod:`.fields`), so a request is valid and
canonical once it is built, from the wire or in Python; a field that breaks its rule is a 400
naming it (``invalid payload: payload.timeout: expected an integer``). The defaults are the
zero values, as on the wire, where a missing key and ``null`` mean the same.
"""

from typing import Any, List, Optional

from attrs import Factory, field, frozen

from .convert import VALUE
from .entities import EMPTY_VALUE, Callback, Lock, Promise, Schedule, Task, Value
from .fields import FLAG, INT64, JSON, STR_LIST, STR_MAP, TEXT, StrMap

__all__ = [
    "ReadPromiseRequest",
    "SearchPromisesRequest",
    "CreatePromiseRequest",
    "CreatePromiseAndTaskRequest",
    "CompletePromiseRequest",
    "CreateCallbackRequest",
    "CreateSubscriptionRequest",
    "ReadScheduleRequest",
    "SearchSchedulesRequest",
    "CreateScheduleRequest",
    "DeleteScheduleRequest",
    "AcquireLockRequest",
    "ReleaseLockRequest",
    "HeartbeatLocksRequest",
    "ClaimTaskRequest",
    "CompleteTaskRequest",
    "DropTaskRequest",
    "HeartbeatTasksRequest",
    "PromiseResponse",
    "SearchPromisesResponse",
    "CreatePromiseAndTaskResponse",
    "CallbackResponse",
    "ScheduleResponse",
    "SearchSchedulesResponse",
    "EmptyResponse",
    "LockResponse",
    "LocksAffectedResponse",
    "TaskResponse",
    "ClaimTaskResponse",
    "TasksAffectedResponse",
]


def _text() -> Any:
    return field(default="", converter=TEXT)


def _int64() -> Any:
    return field(default=0, converter=INT64)


def _flag() -> Any:
    return field(default=False, converter=FLAG)


def _str_map() -> Any:
    return field(factory=dict, converter=STR_MAP)


def _value() -> Any:
    return field(default=EMPTY_VALUE, converter=VALUE)


def _json() -> Any:
    return field(default=None, converter=JSON)


# --------------------------------------------------------------------------- requests


@frozen
class ReadPromiseRequest:
    id: str = _text()


@frozen
class SearchPromisesRequest:
    id: str = _text()
    states: List[str] = field(factory=list, converter=STR_LIST)
    tags: StrMap = _str_map()
    limit: int = _int64()
    cursor: str = _text()


@frozen
class CreatePromiseRequest:
    id: str = _text()
    timeout: int = _int64()
    param: Value = _value()
    tags: StrMap = _str_map()
    idempotency_key: str = _text()
    strict: bool = _flag()


@frozen
class CreatePromiseAndTaskRequest:
    id: str = _text()
    timeout: int = _int64()
    param: Value = _value()
    tags: StrMap = _str_map()
    idempotency_key: str = _text()
    strict: bool = _flag()
    task_process_id: str = _text()
    task_ttl: int = _int64()
    task_timeout: int = _int64()


@frozen
class CompletePromiseRequest:
    id: str = _text()
    state: str = _text()
    value: Value = _value()
    idempotency_key: str = _text()
    strict: bool = _flag()


@frozen
class CreateCallbackRequest:
    promise_id: str = _text()
    root_promise_id: str = _text()
    recv: Any = _json()
    timeout: int = _int64()


@frozen
class CreateSubscriptionRequest:
    id: str = _text()
    promise_id: str = _text()
    recv: Any = _json()
    timeout: int = _int64()


@frozen
class ReadScheduleRequest:
    id: str = _text()


@frozen
class SearchSchedulesRequest:
    id: str = _text()
    tags: StrMap = _str_map()
    limit: int = _int64()
    cursor: str = _text()


@frozen
class CreateScheduleRequest:
    id: str = _text()
    description: str = _text()
    cron: str = _text()
    tags: StrMap = _str_map()
    promise_id: str = _text()
    promise_timeout: int = _int64()
    promise_param: Value = _value()
    promise_tags: StrMap = _str_map()
    idempotency_key: str = _text()


@frozen
class DeleteScheduleRequest:
    id: str = _text()


@frozen
class AcquireLockRequest:
    resource_id: str = _text()
    execution_id: str = _text()
    process_id: str = _text()
    ttl: int = _int64()


@frozen
class ReleaseLockRequest:
    resource_id: str = _text()
    execution_id: str = _text()


@frozen
class HeartbeatLocksRequest:
    process_id: str = _text()


@frozen
class ClaimTaskRequest:
    id: str = _text()
    counter: int = _int64()
    process_id: str = _text()
    ttl: int = _int64()


@frozen
class CompleteTaskRequest:
    id: str = _text()
    counter: int = _int64()


@frozen
class DropTaskRequest:
    id: str = _text()
    counter: int = _int64()


@frozen
class HeartbeatTasksRequest:
    process_id: str = _text()


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
