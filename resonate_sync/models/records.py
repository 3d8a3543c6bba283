"""What the journal holds: one record per change of the state, replayed in order on start.

The journal writes a record as ``{"type": <name in RECORD_TYPES>, "data": {...}}`` (see
``models.convert.record_to_json``); ``core.state.State.apply`` is the one place records change
the state.
"""

import typing

from attrs import frozen

from .entities import Callback, Lock, Promise, Schedule, Task

__all__ = [
    "PutPromise",
    "PutTask",
    "PutCallback",
    "DeleteCallbacks",
    "PutSchedule",
    "DeleteSchedule",
    "PutLock",
    "DeleteLock",
    "RECORD_TYPES",
    "RECORD_NAMES",
    "Record",
]


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
"""Each record type by the name the journal writes; the names are part of the file format."""

RECORD_NAMES = {cls: name for name, cls in RECORD_TYPES.items()}

Record = typing.Union[PutPromise, PutTask, PutCallback, DeleteCallbacks, PutSchedule, DeleteSchedule, PutLock, DeleteLock]
