"""Task operations (PROTOCOL.md 3.15–3.18, 6) and the delivery and expiry jobs.

Every task change goes through :func:`apply`: look the (state, action) row up in
``TASK_TRANSITIONS``, then run the row's named effect from :data:`EFFECTS`.
"""

from typing import Any, Callable, Dict, List, Optional

import attrs

from ..errors import BadRequest, ResonateError, Status
from ..models import (
    ClaimTaskRequest,
    ClaimTaskResponse,
    CompleteTaskRequest,
    DropTaskRequest,
    HeartbeatTasksRequest,
    PromiseState,
    PutTask,
    Task,
    TaskResponse,
    TasksAffectedResponse,
    TaskState,
    unstructure,
)
from .common import CoreSettings, Result, clamp_add, require, require_non_negative
from .state import Tx
from .tables import TaskAction, task_transition

__all__ = ["EFFECTS", "apply", "Delivery", "select_deliveries", "record_delivery", "expire_tasks"]


def _claim(task: Task, tx: Tx, process_id: str = "", ttl: int = 0) -> Task:
    return attrs.evolve(
        task, state=TaskState.CLAIMED, process_id=process_id, ttl=ttl, expires_at=clamp_add(tx.now, ttl)
    )


def _complete(task: Task, tx: Tx) -> Task:
    return attrs.evolve(
        task, state=TaskState.COMPLETED, process_id=None, attempt=0, ttl=0, expires_at=0, completed_on=tx.now
    )


def _release(task: Task, tx: Tx) -> Task:
    """Ownership revoked (drop, lease or claim deadline passed): back to INIT with a new counter."""
    return attrs.evolve(
        task, state=TaskState.INIT, counter=task.counter + 1, process_id=None, attempt=0, ttl=0, expires_at=0
    )


def _extend(task: Task, tx: Tx) -> Task:
    return attrs.evolve(task, expires_at=clamp_add(tx.now, task.ttl))


def _timeout(task: Task, tx: Tx) -> Task:
    return attrs.evolve(task, state=TaskState.TIMEDOUT, process_id=None, completed_on=task.timeout)


def _enqueue(task: Task, tx: Tx) -> Task:
    claim = tx.config.task_claim_timeout_ms
    return attrs.evolve(task, state=TaskState.ENQUEUED, expires_at=clamp_add(tx.now, claim) if claim else 0)


def _retry(task: Task, tx: Tx) -> Task:
    return attrs.evolve(
        task, attempt=task.attempt + 1, expires_at=clamp_add(tx.now, tx.config.task_retry_timeout_ms)
    )


EFFECTS: Dict[str, Callable[..., Task]] = {
    "claim": _claim,
    "complete": _complete,
    "release": _release,
    "extend": _extend,
    "timeout": _timeout,
    "enqueue": _enqueue,
    "retry": _retry,
}
"""Field updates named by the task table's rows (PROTOCOL.md 6.2, 'Field effects')."""


def apply(tx: Tx, task: Task, action: TaskAction, **args: Any) -> "tuple[Task, Status]":
    """Apply ``action`` to ``task`` by the table; raises the row's error; returns (task, status)."""
    outcome = task_transition(task.state, action)
    if outcome.effect is not None:
        task = EFFECTS[outcome.effect](task, tx, **args)
        tx.put(PutTask(task))
    return task, outcome.status


def _counter_checked(req) -> None:
    require(req.id, "id")
    if req.counter == 0:
        raise BadRequest("validation error: payload.counter is required (the task's counter, >= 1)")


def validate_claim(req: ClaimTaskRequest, settings: CoreSettings) -> None:
    _counter_checked(req)
    require_non_negative(req.ttl, "ttl")


def validate_complete(req: CompleteTaskRequest, settings: CoreSettings) -> None:
    _counter_checked(req)


validate_drop = validate_complete


def validate_heartbeat(req: HeartbeatTasksRequest, settings: CoreSettings) -> None:
    require(req.process_id, "processId")


def _stored(tx: Tx, task_id: str) -> Task:
    task = tx.state.tasks.get(task_id)
    if task is None:
        raise ResonateError.from_status(Status.TASK_NOT_FOUND)
    return task


def claim(tx: Tx, req: ClaimTaskRequest) -> Result:
    task = _stored(tx, req.id)
    action = TaskAction.CLAIM if req.counter == task.counter else TaskAction.CLAIM_STALE
    process_id = req.process_id or f"{req.id}/{req.counter}"
    task, status = apply(tx, task, action, process_id=process_id, ttl=req.ttl)
    base = tx.config.href_base.rstrip("/")
    mesg = task.mesg
    root_id = mesg.root if mesg else task.root_promise_id
    leaf_id = mesg.leaf if mesg is not None and mesg.type == "resume" else None
    return Result(
        status,
        ClaimTaskResponse(
            task=task,
            root_promise=tx.state.promises.get(root_id),
            root_promise_href=f"{base}/promises/{root_id}",
            leaf_promise=tx.state.promises.get(leaf_id) if leaf_id else None,
            leaf_promise_href=f"{base}/promises/{leaf_id}" if leaf_id else None,
        ),
    )


def complete(tx: Tx, req: CompleteTaskRequest) -> Result:
    task = _stored(tx, req.id)
    action = TaskAction.COMPLETE if req.counter == task.counter else TaskAction.COMPLETE_STALE
    task, status = apply(tx, task, action)
    return Result(status, TaskResponse(task))


def drop(tx: Tx, req: DropTaskRequest) -> Result:
    task = _stored(tx, req.id)
    action = TaskAction.DROP if req.counter == task.counter else TaskAction.DROP_STALE
    task, status = apply(tx, task, action)
    return Result(status, TaskResponse(task))


def heartbeat(tx: Tx, req: HeartbeatTasksRequest) -> Result:
    ids = tx.state.claimed_by(req.process_id)
    for task_id in ids:
        apply(tx, tx.state.tasks[task_id], TaskAction.HEARTBEAT)
    return Result(Status.OK, TasksAffectedResponse(len(ids)))


# --------------------------------------------------------------------------- background jobs


@attrs.frozen
class Delivery:
    """A message for the transport to send, and the task it belongs to.

    Attributes:
        task_id, counter: identify the task generation; the result is ignored if either changed.
        recv: the receiver as stored (a string like ``nats://subject`` or a ``{type, data}`` object).
        body: the message JSON (PROTOCOL.md 6.4).
        head: trace context.
    """

    task_id: str
    counter: int
    recv: Any
    body: Dict[str, Any]
    head: Dict[str, str]


def message_body(tx: Tx, task: Task) -> Dict[str, Any]:
    """The JSON a receiver gets (6.4): invoke/resume with hrefs, or notify with the promise."""
    if task.mesg.type == "notify":
        return {"type": "notify", "promise": unstructure(tx.state.promises[task.mesg.root])}
    base = tx.config.href_base.rstrip("/")
    suffix = f"{task.id}/{task.counter}"
    return {
        "type": task.mesg.type,
        "task": unstructure(task),
        "href": {
            "base": base,
            "claim": f"{base}/tasks/claim/{suffix}",
            "complete": f"{base}/tasks/complete/{suffix}",
            "heartbeat": f"{base}/tasks/heartbeat/{suffix}",
        },
    }


def select_deliveries(tx: Tx, batch: int) -> List[Delivery]:
    """Pick due INIT tasks to send (6.2, 6.3), at most one per root and ``batch`` in all.

    Tasks that time out or whose root promise is no longer pending are settled here instead
    of being sent. A due task whose root already has an ENQUEUED/CLAIMED task (or one picked
    in this pass) is parked until the root is free. The chosen tasks stay INIT until
    :func:`record_delivery` reports the send.
    """
    state = tx.state
    chosen: List[Delivery] = []
    roots = set()
    while len(chosen) < batch:
        task_id = state.task_delivery.pop_due(tx.now)
        if task_id is None:
            break
        task = state.tasks[task_id]
        root = task.root_promise_id
        if root in roots or state.root_busy(root):
            state.park(task_id, root)
            continue
        oldest = _oldest_due(tx, root)
        if oldest.id != task_id:
            # The heap orders by expiresAt; 6.2 wants the oldest eligible task of the root first.
            state.task_delivery.set(task_id, task.expires_at, task.sort_id)
            state.task_delivery.discard(oldest.id)
            task = oldest
        if tx.now >= task.timeout:
            apply(tx, task, TaskAction.DELIVER_TIMEDOUT)
            continue
        if task.mesg.type != "notify":
            root_promise = state.promises.get(task.mesg.root)
            if root_promise is None or root_promise.state != PromiseState.PENDING:
                apply(tx, task, TaskAction.DELIVER_ROOT_DONE)
                continue
        roots.add(root)
        chosen.append(Delivery(task.id, task.counter, task.recv, message_body(tx, task), dict(task.mesg.head)))
    return chosen


def _oldest_due(tx: Tx, root: str) -> Task:
    """The first-created INIT task of ``root`` whose ``expiresAt`` has come."""
    return next(t for t in tx.state.open_tasks_of_root(root) if t.state == TaskState.INIT and t.expires_at <= tx.now)


def record_delivery(tx: Tx, delivery: Delivery, sent: bool) -> Optional[Task]:
    """Apply a send's result, unless the task moved on meanwhile (claimed, dropped, completed)."""
    task = tx.state.tasks.get(delivery.task_id)
    if task is None or task.counter != delivery.counter or task.state != TaskState.INIT:
        return None
    if task.mesg.type == "notify":
        action = TaskAction.DELIVER_NOTIFY
    else:
        action = TaskAction.DELIVER_SENT if sent else TaskAction.DELIVER_FAILED
    task, _ = apply(tx, task, action)
    if not tx.state.root_busy(task.root_promise_id):
        tx.state.unpark(task.root_promise_id)
    return task


def expire_tasks(tx: Tx, batch: int) -> int:
    """Revoke expired leases and claim deadlines, and time out ENQUEUED/CLAIMED tasks (6.2)."""
    done = 0
    for task_id in tx.state.task_expiry.drain_due(tx.now, batch):
        task = tx.state.tasks[task_id]
        apply(tx, task, TaskAction.TIMEOUT if task.timeout <= tx.now else TaskAction.LEASE_EXPIRED)
        done += 1
    return done

