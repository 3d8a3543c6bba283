"""Promise operations (PROTOCOL.md 3.1–3.7, 4, 5) and the promise timeout job.

Each operation is a ``validate_*(request)`` that runs outside the lock and a handler
``*(tx, request) -> Result`` that runs inside it, deciding by :mod:`.tables` and changing
state only through ``tx.put(record)``.
"""

import logging
import re
from typing import Optional

import attrs

from ..errors import BadRequest, Status
from ..models import (
    EMPTY_VALUE,
    INT64_MAX,
    INT64_MIN,
    CallbackResponse,
    CompletePromiseRequest,
    CreateCallbackRequest,
    CreatePromiseAndTaskRequest,
    CreatePromiseRequest,
    CreateSubscriptionRequest,
    DeleteCallbacks,
    Callback,
    CreatePromiseAndTaskResponse,
    Mesg,
    Promise,
    PromiseResponse,
    PromiseState,
    PutCallback,
    PutPromise,
    PutTask,
    ReadPromiseRequest,
    SearchPromisesRequest,
    SearchPromisesResponse,
    Task,
    TaskState,
    Value,
)
from . import sizes, tasks
from .common import CoreSettings, Result, clamp_add, require, require_non_negative, tags_match, take_page
from .cursor import decode_cursor
from .receivers import check_invoke_tag, check_receiver, invoke_recv
from .state import Tx
from .tables import ABSENT, PromiseAction, TaskAction, promise_target, promise_transition

log = logging.getLogger(__name__)

_REJECTED_ALL = (PromiseState.REJECTED, PromiseState.REJECTED_CANCELED, PromiseState.REJECTED_TIMEDOUT)
_STATE_FILTERS = {
    "PENDING": (PromiseState.PENDING,),
    "RESOLVED": (PromiseState.RESOLVED,),
    "REJECTED": _REJECTED_ALL,  # [spec decision] the HTTP meaning: every rejected state
    "REJECTED_CANCELED": (PromiseState.REJECTED_CANCELED,),
    "REJECTED_TIMEDOUT": (PromiseState.REJECTED_TIMEDOUT,),
}


# --------------------------------------------------------------------------- shared steps


def expire_if_due(tx: Tx, promise: Promise) -> Promise:
    """The lazy timeout (4.3): a PENDING promise at or past its deadline is timed out now."""
    if promise.state != PromiseState.PENDING or tx.now < promise.timeout:
        return promise
    outcome = promise_transition(promise.state, PromiseAction.TIMEOUT)
    return complete(tx, promise, promise_target(outcome.to, promise), EMPTY_VALUE, None, completed_on=promise.timeout)


def complete(
    tx: Tx, promise: Promise, state: str, value: Value, key: Optional[str], completed_on: int, max_bytes: int = 0
) -> Promise:
    """Move a PENDING promise to ``state`` with the section-5 side effects, in this one step.

    400, changing nothing, if the completed promise would take more than ``max_bytes`` in replies.
    """
    done = attrs.evolve(
        promise, state=state, value=value, idempotency_key_for_complete=key, completed_on=completed_on
    )
    sizes.check_promise(done, max_bytes, lambda: {"value": value, "idempotencyKey": key})
    tx.put(PutPromise(done))
    for task in tx.state.open_tasks_of_root(promise.id):
        tasks.apply(tx, task, TaskAction.ROOT_COMPLETED)
    callbacks = tx.state.callbacks.get(promise.id)
    if callbacks:
        for callback_id in sorted(callbacks):
            callback = callbacks[callback_id]
            if callback.id in tx.state.tasks:
                continue
            tx.put(
                PutTask(
                    Task(
                        id=callback.id,
                        counter=1,
                        timeout=callback.timeout,
                        root_promise_id=callback.root_promise_id,
                        created_on=tx.now,
                        state=TaskState.INIT,
                        recv=callback.recv,
                        mesg=callback.mesg,
                        sort_id=tx.next_task_sort_id(),
                    )
                )
            )
        tx.put(DeleteCallbacks(promise.id))
    return done


def insert(
    tx: Tx,
    *,
    state: str,
    id: str,
    timeout: int,
    param: Value,
    tags: dict,
    key: Optional[str],
    claim_for: Optional[CreatePromiseAndTaskRequest] = None,
    max_bytes: int = 0,
) -> "tuple[Promise, Optional[Task]]":
    """Create a new promise in ``state`` (PENDING, by the table) and, if tagged ``resonate:invoke``,
    its invoke task (3.3, 3.4).

    ``claim_for`` (promises.createtask) makes the task CLAIMED by the caller instead of INIT.
    400, storing nothing, if the promise would take more than ``max_bytes`` in replies.
    """
    promise = Promise(
        id=id,
        state=state,
        param=param,
        value=EMPTY_VALUE,
        timeout=timeout,
        idempotency_key_for_create=key,
        tags=tags,
        created_on=tx.now,
        sort_id=tx.next_promise_sort_id(),
    )
    sizes.check_promise(
        promise, max_bytes, lambda: {"id": id, "param": param, "tags": tags, "idempotencyKey": key}
    )
    tx.put(PutPromise(promise))
    recv = invoke_recv(tags)
    if recv is None:
        return promise, None
    task = Task(
        id=f"__invoke:{id}",
        counter=1,
        timeout=timeout,
        root_promise_id=id,
        created_on=tx.now,
        recv=recv,
        mesg=Mesg(type="invoke", root=id, leaf=id, head=tx.head),
        sort_id=tx.next_task_sort_id(),
    )
    if claim_for is None:
        task = attrs.evolve(task, expires_at=_delay(tags))
    else:
        task = attrs.evolve(
            task,
            state=TaskState.CLAIMED,
            process_id=claim_for.task_process_id,
            ttl=claim_for.task_ttl,
            expires_at=clamp_add(tx.now, claim_for.task_ttl),
            timeout=claim_for.task_timeout or timeout,
        )
    tx.put(PutTask(task))
    return promise, task


_INT64_TEXT = re.compile(r"[+-]?[0-9]+")


def _delay(tags: dict) -> int:
    """``resonate:delay`` as a base-10 int64 (Go's ParseInt); anything else (``1_000``, padded, too large) is 0."""
    text = tags.get("resonate:delay", "0")
    if not _INT64_TEXT.fullmatch(text):
        return 0
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else 0


def _key(text: str) -> Optional[str]:
    return text or None


def _matches(stored: Optional[str], requested: str) -> bool:
    return stored is not None and stored == requested


# --------------------------------------------------------------------------- operations


def read(tx: Tx, req: ReadPromiseRequest) -> Result:
    promise = tx.state.promises.get(req.id)
    if promise is None:
        promise_transition(ABSENT, PromiseAction.READ)
    promise = expire_if_due(tx, promise)
    promise_transition(promise.state, PromiseAction.READ)
    return Result(Status.OK, PromiseResponse(promise))


def validate_search(req: SearchPromisesRequest, settings: CoreSettings) -> None:
    if req.cursor:
        return
    require(req.id, "id")
    for state in req.states:
        if state.upper() not in _STATE_FILTERS:
            raise BadRequest(
                f"validation error: payload.states: {state!r} is not one of "
                "PENDING, RESOLVED, REJECTED, REJECTED_CANCELED, REJECTED_TIMEDOUT"
            )
    validate_limit(req.limit)


def validate_limit(limit: int) -> None:
    if not 0 <= limit <= 100:
        raise BadRequest(f"validation error: payload.limit must be between 1 and 100 (0 = 100), got {limit}")


def search(tx: Tx, req: SearchPromisesRequest) -> Result:
    """Matching promises, newest first, ``limit`` to a page (PROTOCOL.md 3.2).

    A page is cut short by work (``search_scan_limit``, see :func:`.common.take_page`) or, with
    ``max_promise_bytes`` set, by size: it then ends before the first promise that would take
    the page's JSON and cursor past twice that (so the reply fits in the NATS max_payload).
    Either way it holds fewer than ``limit`` promises and a cursor to the rest, with the
    requested ``limit`` kept: a cursor whenever more may follow. The core cuts the page after
    building it (:func:`.sizes.fit_page`, exact), rather than the api layer re-running smaller
    searches; a page cut by size keeps at least its first promise.
    """
    secret = tx.config.cursor_secret
    if req.cursor:
        query = decode_cursor(secret, "promises", req.cursor)
        pattern, states, tags, limit, before = query["id"], query["states"], query["tags"], query["limit"], query["before"]
    else:
        pattern, tags, limit, before = req.id, req.tags, req.limit or 100, None
        states = sorted({s for name in req.states for s in _STATE_FILTERS[name.upper()]})
    wanted = frozenset(states)

    def keep(promise: Promise) -> Optional[Promise]:
        promise = expire_if_due(tx, promise)
        if (wanted and promise.state not in wanted) or not tags_match(promise.tags, tags):
            return None
        return promise

    candidates = tx.state.search_promises(pattern, before, tx.config.search_scan_limit)
    found, below = take_page(candidates, keep, limit)
    query = {"id": pattern, "states": states, "tags": tags, "limit": limit}
    found, cursor = sizes.search_page(
        tx.config, found, below, sizes.promise_json_bytes, sizes.promise_bound, "promises", query
    )
    return Result(Status.OK, SearchPromisesResponse(found, cursor))


def validate_create(req: CreatePromiseRequest, settings: CoreSettings) -> None:
    require(req.id, "id")
    check_invoke_tag(req.tags, settings)


def create(tx: Tx, req: CreatePromiseRequest) -> Result:
    (promise, status), _ = _create(tx, req, None)
    return Result(status, PromiseResponse(promise))


def validate_createtask(req: CreatePromiseAndTaskRequest, settings: CoreSettings) -> None:
    require(req.id, "id")
    require(req.task_process_id, "taskProcessId")
    require_non_negative(req.task_ttl, "taskTtl")
    check_invoke_tag(req.tags, settings)


def createtask(tx: Tx, req: CreatePromiseAndTaskRequest) -> Result:
    (promise, status), task = _create(tx, req, req)
    return Result(status, CreatePromiseAndTaskResponse(promise, task))


def _create(tx: Tx, req, claim_for) -> "tuple[tuple[Promise, Status], Optional[Task]]":
    stored = tx.state.promises.get(req.id)
    if stored is None:
        outcome = promise_transition(ABSENT, PromiseAction.CREATE)
        promise, task = insert(
            tx,
            state=outcome.to,
            id=req.id,
            timeout=req.timeout,
            param=req.param,
            tags=req.tags,
            key=_key(req.idempotency_key),
            claim_for=claim_for,
            max_bytes=tx.config.max_promise_bytes,
        )
        return (promise, outcome.status), task
    stored = expire_if_due(tx, stored)
    if not _matches(stored.idempotency_key_for_create, req.idempotency_key):
        action = PromiseAction.CREATE_NO_MATCH
    elif req.strict:
        action = PromiseAction.CREATE_KEY_MATCH_STRICT
    else:
        action = PromiseAction.CREATE_KEY_MATCH
    outcome = promise_transition(stored.state, action)
    return (stored, outcome.status), None


def validate_complete(req: CompletePromiseRequest, settings: CoreSettings) -> None:
    if req.state not in PromiseState.COMPLETED:
        raise BadRequest(
            f"invalid state: {req.state} (payload.state must be exactly RESOLVED, REJECTED, "
            "REJECTED_CANCELED or REJECTED_TIMEDOUT)"
        )


def complete_op(tx: Tx, req: CompletePromiseRequest) -> Result:
    stored = tx.state.promises.get(req.id)
    if stored is None:
        promise_transition(ABSENT, PromiseAction.COMPLETE)
    stored = expire_if_due(tx, stored)
    key_match = _matches(stored.idempotency_key_for_complete, req.idempotency_key)
    if not key_match:
        action = PromiseAction.COMPLETE_STRICT if req.strict else PromiseAction.COMPLETE
    elif not req.strict:
        action = PromiseAction.COMPLETE_KEY_MATCH
    elif req.state == stored.state:
        action = PromiseAction.COMPLETE_KEY_MATCH_STRICT_SAME
    else:
        action = PromiseAction.COMPLETE_KEY_MATCH_STRICT_OTHER
    outcome = promise_transition(stored.state, action)
    if outcome.to is not None:
        stored = complete(
            tx,
            stored,
            promise_target(outcome.to, stored, req.state),
            req.value,
            _key(req.idempotency_key),
            completed_on=tx.now,
            max_bytes=tx.config.max_promise_bytes,
        )
    return Result(outcome.status, PromiseResponse(stored))


def validate_callback(req: CreateCallbackRequest, settings: CoreSettings) -> None:
    require(req.promise_id, "promiseId")
    require(req.root_promise_id, "rootPromiseId")
    if req.promise_id == req.root_promise_id:
        raise BadRequest("validation error: promise and root promise must be different")
    if req.recv is None:
        raise BadRequest("validation error: payload.recv is required (a string or a {type, data} object)")
    _check_recv(req.recv, settings)


def validate_subscribe(req: CreateSubscriptionRequest, settings: CoreSettings) -> None:
    require(req.id, "id")
    require(req.promise_id, "promiseId")
    if req.recv is None:
        raise BadRequest("validation error: payload.recv is required (a string or a {type, data} object)")
    _check_recv(req.recv, settings)


def _check_recv(recv, settings: CoreSettings) -> None:
    """Any string or object is stored (2.8: receivers are resolved at delivery time); NATS ones are checked now."""
    if not isinstance(recv, (str, dict)):
        raise BadRequest('validation error: payload.recv must be a string or an object like {"type": …, "data": {…}}')
    check_receiver(recv, "payload.recv", settings)


def callback(tx: Tx, req: CreateCallbackRequest) -> Result:
    callback_id = f"__resume:{req.root_promise_id}:{req.promise_id}"
    mesg = Mesg(type="resume", root=req.root_promise_id, leaf=req.promise_id, head=tx.head)
    return _register(tx, req.promise_id, callback_id, req.root_promise_id, req.recv, req.timeout, mesg)


def subscribe(tx: Tx, req: CreateSubscriptionRequest) -> Result:
    callback_id = f"__notify:{req.promise_id}:{req.id}"
    mesg = Mesg(type="notify", root=req.promise_id, head=tx.head)
    return _register(tx, req.promise_id, callback_id, req.promise_id, req.recv, req.timeout, mesg)


def _register(tx: Tx, promise_id, callback_id, root_id, recv, timeout, mesg) -> Result:
    """Callbacks and subscriptions (3.6, 3.7): no lazy timeout; a completed promise stores nothing."""
    promise = tx.state.promises.get(promise_id)
    if promise is None:
        promise_transition(ABSENT, PromiseAction.CALLBACK)
    outcome = promise_transition(promise.state, PromiseAction.CALLBACK)
    if outcome.status != Status.CREATED or callback_id in tx.state.callbacks.get(promise_id, {}):
        return Result(Status.OK, CallbackResponse(promise))
    created = Callback(
        id=callback_id,
        promise_id=promise_id,
        root_promise_id=root_id,
        timeout=timeout,
        created_on=tx.now,
        recv=recv,
        mesg=mesg,
    )
    tx.put(PutCallback(created))
    return Result(Status.CREATED, CallbackResponse(promise, created))


# --------------------------------------------------------------------------- background job


def timeout_promises(tx: Tx, batch: int) -> int:
    """Time out up to ``batch`` PENDING promises whose deadline passed; returns how many."""
    done = 0
    for promise_id in tx.state.promise_timeouts.drain_due(tx.now, batch):
        expire_if_due(tx, tx.state.promises[promise_id])
        done += 1
    return done
