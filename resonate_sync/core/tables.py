"""The promise and task transition tables (PROTOCOL.md 4 and 6.2), as frozen data.

Handlers classify a request into an *action* (what was asked, with the conditions that matter
already evaluated: does the idempotency key match, is the request strict, does the counter
match) and look the outcome up with :func:`promise_transition` / :func:`task_transition`.
Tests iterate these tables row by row.

An :class:`Outcome` names the state to move to (``None`` = unchanged) and the status: a 2xx
status is returned, anything else is raised as the matching error. The handlers move a promise
to the state its row names (:func:`promise_target` reads the two markers), and a task by its
row's named effect (``core.tasks.EFFECTS``).
"""

import enum
from types import MappingProxyType
from typing import Mapping, Optional, Tuple

import attrs

from ..errors import ResonateError, Status
from ..models import Promise
from ..models import PromiseState as PS
from ..models import TaskState as TS

__all__ = [
    "ABSENT",
    "REQUESTED",
    "TIMEOUT_STATE",
    "PromiseAction",
    "TaskAction",
    "Outcome",
    "PROMISE_TRANSITIONS",
    "TASK_TRANSITIONS",
    "promise_transition",
    "promise_target",
    "task_transition",
]

ABSENT = "ABSENT"
"""The 'state' of a promise that does not exist."""

REQUESTED = "<requested>"
"""Outcome target: the state the complete request asked for."""

TIMEOUT_STATE = "<timeout>"
"""Outcome target: RESOLVED if tagged ``resonate:timeout=true``, else REJECTED_TIMEDOUT (4.3)."""


class PromiseAction(enum.Enum):
    """What was asked of a promise, with the idempotency conditions evaluated (4.1, 4.2)."""

    READ = "read"
    CREATE = "create"  # create/createtask of an id that does not exist yet
    CREATE_KEY_MATCH = "create, key matches"
    CREATE_KEY_MATCH_STRICT = "create strict, key matches"
    CREATE_NO_MATCH = "create, key does not match"
    COMPLETE = "complete, key does not match"
    COMPLETE_STRICT = "complete strict, key does not match"
    COMPLETE_KEY_MATCH = "complete, key matches"
    COMPLETE_KEY_MATCH_STRICT_SAME = "complete strict, key matches, same state"
    COMPLETE_KEY_MATCH_STRICT_OTHER = "complete strict, key matches, other state"
    CALLBACK = "callback or subscribe"
    TIMEOUT = "deadline passed"


class TaskAction(enum.Enum):
    """What was asked of a task (6.2); ``*_STALE`` means the request's counter does not match."""

    CLAIM = "claim"
    CLAIM_STALE = "claim with a stale counter"
    COMPLETE = "complete"
    COMPLETE_STALE = "complete with a stale counter"
    DROP = "drop"
    DROP_STALE = "drop with a stale counter"
    HEARTBEAT = "heartbeat"
    DELIVER_TIMEDOUT = "delivery tick, task timed out"
    DELIVER_ROOT_DONE = "delivery tick, root promise completed"
    DELIVER_SENT = "delivery tick, message sent"
    DELIVER_FAILED = "delivery tick, send failed"
    DELIVER_NOTIFY = "delivery tick, notification attempted"
    LEASE_EXPIRED = "lease or claim deadline passed"
    TIMEOUT = "task timeout passed"
    ROOT_COMPLETED = "root promise completed"


@attrs.frozen
class Outcome:
    """The result of one table row.

    Attributes:
        to: the new state, ``None`` for unchanged, or the :data:`REQUESTED` / :data:`TIMEOUT_STATE` markers.
        status: the kernel status; non-2xx statuses are raised by the lookup functions.
        effect: for tasks, the name of the field update to apply (see ``core.tasks.EFFECTS``).
    """

    to: Optional[str]
    status: Status
    effect: Optional[str] = None


_OK = Outcome(None, Status.OK)
_ALREADY = {
    PS.RESOLVED: Status.PROMISE_ALREADY_RESOLVED,
    PS.REJECTED: Status.PROMISE_ALREADY_REJECTED,
    PS.REJECTED_CANCELED: Status.PROMISE_ALREADY_CANCELED,
    PS.REJECTED_TIMEDOUT: Status.PROMISE_ALREADY_TIMEDOUT,
}
_PA = PromiseAction


def _completed_rows(state: str) -> dict:
    forbidden = Outcome(None, _ALREADY[state])
    return {
        (state, _PA.READ): _OK,
        (state, _PA.CREATE_KEY_MATCH): _OK,
        (state, _PA.CREATE_KEY_MATCH_STRICT): Outcome(None, Status.PROMISE_ALREADY_EXISTS),
        (state, _PA.CREATE_NO_MATCH): Outcome(None, Status.PROMISE_ALREADY_EXISTS),
        (state, _PA.COMPLETE_KEY_MATCH): _OK,
        (state, _PA.COMPLETE_KEY_MATCH_STRICT_SAME): _OK,
        (state, _PA.COMPLETE_KEY_MATCH_STRICT_OTHER): forbidden,
        # A timed-out promise absorbs non-strict completes (4.2, third row).
        (state, _PA.COMPLETE): _OK if state == PS.REJECTED_TIMEDOUT else forbidden,
        (state, _PA.COMPLETE_STRICT): forbidden,
        (state, _PA.CALLBACK): _OK,
    }


PROMISE_TRANSITIONS: Mapping[Tuple[str, PromiseAction], Outcome] = MappingProxyType(
    {
        (ABSENT, _PA.CREATE): Outcome(PS.PENDING, Status.CREATED),
        **{
            (ABSENT, a): Outcome(None, Status.PROMISE_NOT_FOUND)
            for a in (
                _PA.READ,
                _PA.COMPLETE,
                _PA.COMPLETE_STRICT,
                _PA.COMPLETE_KEY_MATCH,
                _PA.COMPLETE_KEY_MATCH_STRICT_SAME,
                _PA.COMPLETE_KEY_MATCH_STRICT_OTHER,
                _PA.CALLBACK,
            )
        },
        (PS.PENDING, _PA.READ): _OK,
        (PS.PENDING, _PA.CREATE_KEY_MATCH): _OK,
        (PS.PENDING, _PA.CREATE_KEY_MATCH_STRICT): _OK,
        (PS.PENDING, _PA.CREATE_NO_MATCH): Outcome(None, Status.PROMISE_ALREADY_EXISTS),
        **{
            (PS.PENDING, a): Outcome(REQUESTED, Status.CREATED)
            for a in (
                _PA.COMPLETE,
                _PA.COMPLETE_STRICT,
                _PA.COMPLETE_KEY_MATCH,
                _PA.COMPLETE_KEY_MATCH_STRICT_SAME,
                _PA.COMPLETE_KEY_MATCH_STRICT_OTHER,
            )
        },
        (PS.PENDING, _PA.CALLBACK): Outcome(None, Status.CREATED),
        (PS.PENDING, _PA.TIMEOUT): Outcome(TIMEOUT_STATE, Status.OK),
        **{row: outcome for state in PS.ALL if state in PS.COMPLETED for row, outcome in _completed_rows(state).items()},
    }
)
"""Promise outcomes by (stored state or ABSENT, action). A PENDING promise past its deadline is
first moved by the TIMEOUT row, then the request is looked up again against the new state."""

_TA = TaskAction
_CLAIMED_BY_OTHER = Outcome(None, Status.TASK_ALREADY_CLAIMED)
_TASK_DONE = Outcome(None, Status.TASK_ALREADY_COMPLETED)
_STALE = Outcome(None, Status.TASK_INVALID_COUNTER)
_NOT_CLAIMED = Outcome(None, Status.TASK_INVALID_STATE)
_NOOP = Outcome(None, Status.OK)

TASK_TRANSITIONS: Mapping[Tuple[int, TaskAction], Outcome] = MappingProxyType(
    {
        # tasks.claim (3.15): CLAIMED wins over everything, then final states, then the counter.
        (TS.INIT, _TA.CLAIM): Outcome(TS.CLAIMED, Status.CREATED, "claim"),
        (TS.ENQUEUED, _TA.CLAIM): Outcome(TS.CLAIMED, Status.CREATED, "claim"),
        (TS.INIT, _TA.CLAIM_STALE): _STALE,
        (TS.ENQUEUED, _TA.CLAIM_STALE): _STALE,
        (TS.CLAIMED, _TA.CLAIM): _CLAIMED_BY_OTHER,
        (TS.CLAIMED, _TA.CLAIM_STALE): _CLAIMED_BY_OTHER,
        (TS.COMPLETED, _TA.CLAIM): _TASK_DONE,
        (TS.COMPLETED, _TA.CLAIM_STALE): _TASK_DONE,
        (TS.TIMEDOUT, _TA.CLAIM): _TASK_DONE,
        (TS.TIMEDOUT, _TA.CLAIM_STALE): _TASK_DONE,
        # tasks.complete (3.16): final states answer 200 for any counter.
        (TS.COMPLETED, _TA.COMPLETE): _NOOP,
        (TS.COMPLETED, _TA.COMPLETE_STALE): _NOOP,
        (TS.TIMEDOUT, _TA.COMPLETE): _NOOP,
        (TS.TIMEDOUT, _TA.COMPLETE_STALE): _NOOP,
        (TS.INIT, _TA.COMPLETE): _NOT_CLAIMED,
        (TS.INIT, _TA.COMPLETE_STALE): _NOT_CLAIMED,
        (TS.ENQUEUED, _TA.COMPLETE): _NOT_CLAIMED,
        (TS.ENQUEUED, _TA.COMPLETE_STALE): _NOT_CLAIMED,
        (TS.CLAIMED, _TA.COMPLETE_STALE): _STALE,
        (TS.CLAIMED, _TA.COMPLETE): Outcome(TS.COMPLETED, Status.CREATED, "complete"),
        # tasks.drop (3.17): anything not CLAIMED is a no-op for any counter.
        **{(s, a): _NOOP for s in (TS.INIT, TS.ENQUEUED, TS.COMPLETED, TS.TIMEDOUT) for a in (_TA.DROP, _TA.DROP_STALE)},
        (TS.CLAIMED, _TA.DROP_STALE): _STALE,
        (TS.CLAIMED, _TA.DROP): Outcome(TS.INIT, Status.CREATED, "release"),
        # tasks.heartbeat (3.18)
        (TS.CLAIMED, _TA.HEARTBEAT): Outcome(TS.CLAIMED, Status.OK, "extend"),
        # the delivery tick (6.2, 6.3)
        (TS.INIT, _TA.DELIVER_TIMEDOUT): Outcome(TS.TIMEDOUT, Status.OK, "timeout"),
        (TS.INIT, _TA.DELIVER_ROOT_DONE): Outcome(TS.COMPLETED, Status.OK, "complete"),
        (TS.INIT, _TA.DELIVER_SENT): Outcome(TS.ENQUEUED, Status.OK, "enqueue"),
        (TS.INIT, _TA.DELIVER_FAILED): Outcome(TS.INIT, Status.OK, "retry"),
        (TS.INIT, _TA.DELIVER_NOTIFY): Outcome(TS.COMPLETED, Status.OK, "complete"),
        # the expiry sweep
        (TS.ENQUEUED, _TA.LEASE_EXPIRED): Outcome(TS.INIT, Status.OK, "release"),
        (TS.CLAIMED, _TA.LEASE_EXPIRED): Outcome(TS.INIT, Status.OK, "release"),
        (TS.ENQUEUED, _TA.TIMEOUT): Outcome(TS.TIMEDOUT, Status.OK, "timeout"),
        (TS.CLAIMED, _TA.TIMEOUT): Outcome(TS.TIMEDOUT, Status.OK, "timeout"),
        # the root promise completed (5, step 2)
        **{(s, _TA.ROOT_COMPLETED): Outcome(TS.COMPLETED, Status.OK, "complete") for s in (TS.INIT, TS.ENQUEUED, TS.CLAIMED)},
    }
)
"""Task outcomes by (state, action). A missing row means the action does not apply in that state."""


class TransitionError(LookupError):
    """No row for (state, action): a bug in the caller, not a client error."""

    def __init__(self, kind: str, state: object, action: enum.Enum) -> None:
        super().__init__(f"no {kind} transition for action {action.value!r} in state {state!r}")
        self.state = state
        self.action = action


def promise_transition(state: str, action: PromiseAction) -> Outcome:
    """The outcome of ``action`` on a promise in ``state``; raises the error of a non-2xx row."""
    outcome = PROMISE_TRANSITIONS.get((state, action))
    if outcome is None:
        raise TransitionError("promise", state, action)
    if not outcome.status.is_success:
        raise ResonateError.from_status(outcome.status)
    return outcome


def promise_target(to: str, promise: Promise, requested: str = "") -> str:
    """The state a row's ``to`` names for ``promise``: :data:`REQUESTED` is ``requested``,
    :data:`TIMEOUT_STATE` is RESOLVED for a promise tagged ``resonate:timeout=true`` and
    REJECTED_TIMEDOUT otherwise (4.3); any other ``to`` is the state itself."""
    if to == REQUESTED:
        return requested
    if to == TIMEOUT_STATE:
        return PS.RESOLVED if promise.tags.get("resonate:timeout") == "true" else PS.REJECTED_TIMEDOUT
    return to


def task_transition(state: int, action: TaskAction) -> Outcome:
    """The outcome of ``action`` on a task in ``state``; raises the error of a non-2xx row."""
    outcome = TASK_TRANSITIONS.get((state, action))
    if outcome is None:
        raise TransitionError("task", TS.NAMES.get(state, state), action)
    if not outcome.status.is_success:
        raise ResonateError.from_status(outcome.status)
    return outcome
