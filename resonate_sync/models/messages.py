"""What goes over the wire: one request model per operation, and the response models.

The defaults of request fields are the zero values, as on the wire, where a missing key and
``null`` mean the same.
"""

from typing import Any, List, Optional

from attrs import Factory, frozen

from .entities import EMPTY_VALUE, Callback, Lock, Promise, Schedule, Task, Value
from .fields import StrMap

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
