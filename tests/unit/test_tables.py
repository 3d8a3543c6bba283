"""The promise and task transition tables, every row driven through a real core (PROTOCOL.md 4, 6.2)."""

from typing import Any, Callable, Dict, Optional, Tuple

import attrs
import pytest

from core_situations import (
    CLAIM_TTL,
    COMPLETE_KEY,
    COMPLETED_STATES,
    CREATE_KEY,
    FAR,
    LEAF,
    PROMISE_STATES,
    RESUME_ID,
    ROOT,
    TASK_STATES,
    WORKER,
    Core,
    new_core,
    other_completed,
    promise_in,
    resume_task,
    task_in,
)
from resonate_sync.core import tables
from resonate_sync.core.tables import (
    ABSENT,
    PROMISE_TRANSITIONS,
    REQUESTED,
    TASK_TRANSITIONS,
    TIMEOUT_STATE,
    Outcome,
    PromiseAction,
    TaskAction,
    TransitionError,
    promise_target,
    promise_transition,
    task_transition,
)
from resonate_sync.errors import ResonateError, Status
from resonate_sync.models import PromiseState as PS
from resonate_sync.models import Promise, Task, Value
from resonate_sync.models import TaskState as TS

PA = PromiseAction
TA = TaskAction

NEW_VALUE = Value(headers={"new": "1"}, data="bmV3")
CREATES = (PA.CREATE_KEY_MATCH, PA.CREATE_KEY_MATCH_STRICT, PA.CREATE_NO_MATCH)
COMPLETES = (
    PA.COMPLETE,
    PA.COMPLETE_STRICT,
    PA.COMPLETE_KEY_MATCH,
    PA.COMPLETE_KEY_MATCH_STRICT_SAME,
    PA.COMPLETE_KEY_MATCH_STRICT_OTHER,
)
STRICT_COMPLETES = (PA.COMPLETE_STRICT, PA.COMPLETE_KEY_MATCH_STRICT_SAME, PA.COMPLETE_KEY_MATCH_STRICT_OTHER)
KEYED_COMPLETES = (PA.COMPLETE_KEY_MATCH, PA.COMPLETE_KEY_MATCH_STRICT_SAME, PA.COMPLETE_KEY_MATCH_STRICT_OTHER)
ALREADY = {
    PS.RESOLVED: Status.PROMISE_ALREADY_RESOLVED,
    PS.REJECTED: Status.PROMISE_ALREADY_REJECTED,
    PS.REJECTED_CANCELED: Status.PROMISE_ALREADY_CANCELED,
    PS.REJECTED_TIMEDOUT: Status.PROMISE_ALREADY_TIMEDOUT,
}

TASK_REQUESTS = (TA.CLAIM, TA.CLAIM_STALE, TA.COMPLETE, TA.COMPLETE_STALE, TA.DROP, TA.DROP_STALE)
DELIVERY_ACTIONS = (TA.DELIVER_TIMEDOUT, TA.DELIVER_ROOT_DONE, TA.DELIVER_SENT, TA.DELIVER_FAILED, TA.DELIVER_NOTIFY)


def row_id(row: Tuple[Any, Any]) -> str:
    state, action = row
    return f"{TS.NAMES.get(state, state)}-{action.name}"


PROMISE_ROWS = [row for row in PROMISE_TRANSITIONS if row[1] is not PA.TIMEOUT]


# --------------------------------------------------------------------------- the spec, restated


def spec_promise_outcome(state: str, action: PromiseAction) -> Tuple[Optional[str], Status]:
    """What PROTOCOL.md 4.1/4.2 say for a promise in ``state`` (deadline not passed) and ``action``."""
    if state == ABSENT:
        return (PS.PENDING, Status.CREATED) if action is PA.CREATE else (None, Status.PROMISE_NOT_FOUND)
    if action is PA.READ:
        return None, Status.OK
    if action is PA.CALLBACK:
        return None, Status.CREATED if state == PS.PENDING else Status.OK
    if action in CREATES:
        key_match = action is not PA.CREATE_NO_MATCH
        strict = action is PA.CREATE_KEY_MATCH_STRICT
        ok = key_match and (not strict or state == PS.PENDING)
        return None, Status.OK if ok else Status.PROMISE_ALREADY_EXISTS
    if state == PS.PENDING:
        return REQUESTED, Status.CREATED
    strict = action in STRICT_COMPLETES
    key_match = action in KEYED_COMPLETES
    if key_match and (not strict or action is PA.COMPLETE_KEY_MATCH_STRICT_SAME):
        return None, Status.OK
    if not strict and state == PS.REJECTED_TIMEDOUT:
        return None, Status.OK
    return None, ALREADY[state]


def spec_task_outcome(state: int, action: TaskAction) -> Tuple[Optional[int], Status]:
    """What PROTOCOL.md 3.15–3.17 say (checks in their documented order) for a task request."""
    stale = action in (TA.CLAIM_STALE, TA.COMPLETE_STALE, TA.DROP_STALE)
    final = state in (TS.COMPLETED, TS.TIMEDOUT)
    if action in (TA.CLAIM, TA.CLAIM_STALE):
        if state == TS.CLAIMED:
            return None, Status.TASK_ALREADY_CLAIMED
        if final:
            return None, Status.TASK_ALREADY_COMPLETED
        return (None, Status.TASK_INVALID_COUNTER) if stale else (TS.CLAIMED, Status.CREATED)
    if action in (TA.COMPLETE, TA.COMPLETE_STALE):
        if final:
            return None, Status.OK
        if state in (TS.INIT, TS.ENQUEUED):
            return None, Status.TASK_INVALID_STATE
        return (None, Status.TASK_INVALID_COUNTER) if stale else (TS.COMPLETED, Status.CREATED)
    if state != TS.CLAIMED:
        return None, Status.OK
    return (None, Status.TASK_INVALID_COUNTER) if stale else (TS.INIT, Status.CREATED)


SPEC_TASK_EFFECT = {
    TA.CLAIM: "claim",
    TA.COMPLETE: "complete",
    TA.DROP: "release",
    TA.HEARTBEAT: "extend",
    TA.DELIVER_TIMEDOUT: "timeout",
    TA.DELIVER_ROOT_DONE: "complete",
    TA.DELIVER_SENT: "enqueue",
    TA.DELIVER_FAILED: "retry",
    TA.DELIVER_NOTIFY: "notified",
    TA.LEASE_EXPIRED: "release",
    TA.TIMEOUT: "timeout",
    TA.ROOT_COMPLETED: "complete",
}
"""The field effects of 6.2 by action, for the rows that change a task."""


def assert_effect(effect: str, before: Task, after: Task, core: Core, ctx: Dict[str, Any]) -> None:
    """The field effects of PROTOCOL.md 6.2 (and 3.15–3.18) for one named effect.

    Time-to-claim and time-to-retry are the core's configured ones (6.3), not fixed numbers.
    """
    now, settings = core.now, core.r.settings
    if effect == "claim":
        assert (after.process_id, after.ttl, after.counter) == (ctx["process_id"], ctx["ttl"], before.counter)
        assert after.expires_at == now + ctx["ttl"]
    elif effect == "complete":
        assert (after.process_id, after.attempt, after.ttl, after.expires_at) == (None, 0, 0, 0)
        assert after.completed_on == now
    elif effect == "notified":
        assert after.attempt == 0
    elif effect == "release":
        assert after.counter == before.counter + 1
        assert (after.process_id, after.attempt, after.ttl, after.expires_at) == (None, 0, 0, 0)
    elif effect == "extend":
        assert after.expires_at == now + before.ttl
        assert attr_diff(before, after) == {"expires_at"}
    elif effect == "timeout":
        assert after.process_id is None
        assert after.completed_on == before.timeout
    elif effect == "enqueue":
        assert after.expires_at == now + settings.task_claim_timeout_ms
        assert after.counter == before.counter
    elif effect == "retry":
        assert after.attempt == before.attempt + 1
        assert after.expires_at == now + settings.task_retry_timeout_ms
        assert after.counter == before.counter
    else:  # pragma: no cover - a typo in SPEC_TASK_EFFECT
        raise AssertionError(effect)


def attr_diff(a: Task, b: Task) -> set:
    """The names of the fields in which two tasks differ."""
    return {f.name for f in attrs.fields(Task) if getattr(a, f.name) != getattr(b, f.name)}


# --------------------------------------------------------------------------- promise rows


def requested_state(state: str, action: PromiseAction) -> str:
    """The state a complete request asks for: the stored one for STRICT_SAME, another one otherwise."""
    if action is PA.COMPLETE_KEY_MATCH_STRICT_SAME and state in COMPLETED_STATES:
        return state
    return other_completed(state) if state in COMPLETED_STATES else PS.REJECTED_CANCELED


def drive_promise(core: Core, state: str, action: PromiseAction) -> Callable[[], Any]:
    """The request that classifies as ``action`` on promise ``p``.

    A PENDING or absent promise has no complete key, so there the "key matches" actions are
    reached by a complete carrying a key; the rows promise the same outcome for every complete.
    """
    r = core.r
    if action is PA.READ:
        return lambda: r.promises_read(id="p")
    if action in (PA.CREATE,) + CREATES:
        key = "another-key" if action is PA.CREATE_NO_MATCH else CREATE_KEY
        strict = action is PA.CREATE_KEY_MATCH_STRICT
        return lambda: r.promises_create(
            id="p", timeout=FAR - 1, idempotency_key=key, strict=strict, param=NEW_VALUE, tags={"new": "1"}
        )
    if action in COMPLETES:
        key = COMPLETE_KEY if action in KEYED_COMPLETES else "another-key"
        return lambda: r.promises_complete(
            id="p",
            state=requested_state(state, action),
            value=NEW_VALUE,
            idempotency_key=key,
            strict=action in STRICT_COMPLETES,
        )
    assert action is PA.CALLBACK
    return lambda: r.promises_callback(promise_id="p", root_promise_id=ROOT, recv=WORKER, timeout=FAR)


def status_of(request: Callable[[], Any]) -> Tuple[Optional[Status], Any]:
    """(status, payload) of an operation, (error status, None) of a failed one, (None, None) of a tick."""
    try:
        result = request()
    except ResonateError as exc:
        return exc.status, None
    if result is None or isinstance(result, list):
        return None, None
    return result.status, result.payload


class TestPromiseTable:
    """PROMISE_TRANSITIONS (PROTOCOL.md 4.1, 4.2, 4.3)."""

    @pytest.mark.parametrize("row", PROMISE_ROWS, ids=row_id)
    def test_row_holds_for_the_real_core(self, row):
        """Driving a promise into the row's (state, action) yields the row's status, state and field effects."""
        state, action = row
        outcome = PROMISE_TRANSITIONS[row]
        core = new_core()
        before = promise_in(core, state)
        status, payload = status_of(drive_promise(core, state, action))
        after = core.promise("p")

        assert status == outcome.status
        if outcome.to is None:
            assert after == before
            if payload is not None and before is not None:
                assert payload.promise == before
        elif outcome.to == REQUESTED:
            assert after.state == requested_state(state, action)
            assert after.value == NEW_VALUE
            assert after.idempotency_key_for_complete == (COMPLETE_KEY if action in KEYED_COMPLETES else "another-key")
            assert after.completed_on == core.now
            assert (after.param, after.timeout, after.tags, after.created_on) == (
                before.param,
                before.timeout,
                before.tags,
                before.created_on,
            )
            assert payload.promise == after
        else:
            assert outcome.to == PS.PENDING
            assert (after.state, after.param, after.timeout, after.tags) == (PS.PENDING, NEW_VALUE, FAR - 1, {"new": "1"})
            assert (after.idempotency_key_for_create, after.created_on, after.completed_on) == (CREATE_KEY, core.now, None)

    @pytest.mark.parametrize("row", [r for r in PROMISE_ROWS if r[1] is PA.CALLBACK], ids=row_id)
    def test_callback_rows_store_a_callback_only_on_201(self, row):
        """A callback is stored exactly when its row answers 201 (a pending promise); otherwise nothing is kept."""
        state, action = row
        core = new_core()
        promise_in(core, state)
        status, _ = status_of(drive_promise(core, state, action))
        assert bool(core.r.state.callbacks.get("p")) == (status == Status.CREATED)

    @pytest.mark.parametrize("row", [r for r in PROMISE_ROWS if r[1] is PA.CALLBACK], ids=row_id)
    def test_subscribe_follows_the_callback_rows(self, row):
        """promises.subscribe answers by the same rows as promises.callback."""
        state, _ = row
        core = new_core()
        before = promise_in(core, state)
        status, _ = status_of(
            lambda: core.r.promises_subscribe(id="s", promise_id="p", recv=WORKER, timeout=FAR)
        )
        assert status == PROMISE_TRANSITIONS[row].status
        assert core.promise("p") == before

    @pytest.mark.parametrize("tags, expected", [({}, PS.REJECTED_TIMEDOUT), ({"resonate:timeout": "true"}, PS.RESOLVED)])
    def test_timeout_row_moves_to_the_timeout_state(self, tags, expected):
        """(PENDING, deadline passed) moves to RESOLVED for resonate:timeout=true, else REJECTED_TIMEDOUT, completedOn = timeout."""
        assert PROMISE_TRANSITIONS[(PS.PENDING, PA.TIMEOUT)] == Outcome(TIMEOUT_STATE, Status.OK)
        core = new_core()
        deadline = core.now + 1_000
        core.r.promises_create(id="p", timeout=deadline, tags=tags, param=NEW_VALUE)
        core.advance(1_500)
        result = core.r.promises_read(id="p")
        stored = core.promise("p")
        assert result.status == Status.OK
        assert (stored.state, stored.completed_on, stored.value) == (expected, deadline, Value())
        assert stored.idempotency_key_for_complete is None
        assert stored.param == NEW_VALUE
        assert result.payload.promise == stored

    def test_table_matches_the_spec(self):
        """Every row except the timeout one says what PROTOCOL.md 4.1/4.2 say for its (state, action)."""
        mismatches = {
            row_id(row): (outcome.to, outcome.status, spec_promise_outcome(*row))
            for row, outcome in PROMISE_TRANSITIONS.items()
            if row[1] is not PA.TIMEOUT and (outcome.to, outcome.status) != spec_promise_outcome(*row)
        }
        assert mismatches == {}

    def test_table_is_complete_for_every_request(self):
        """Every request that can reach a promise in some state has a row for that state."""
        stored_actions = {PA.READ, PA.CALLBACK, *CREATES, *COMPLETES}
        for state in PROMISE_STATES:
            wanted = {PA.CREATE, PA.READ, PA.CALLBACK, *COMPLETES} if state == ABSENT else stored_actions
            have = {action for (s, action) in PROMISE_TRANSITIONS if s == state} - {PA.TIMEOUT}
            assert have == wanted, state

    def test_only_pending_promises_time_out(self):
        """The deadline row exists for PENDING and for no other state."""
        assert [s for (s, a) in PROMISE_TRANSITIONS if a is PA.TIMEOUT] == [PS.PENDING]

    def test_completed_states_are_final(self):
        """No row moves a completed promise to another state (4.1: completed states are final)."""
        moving = [row_id(r) for r, o in PROMISE_TRANSITIONS.items() if r[0] in COMPLETED_STATES and o.to is not None]
        assert moving == []

    def test_missing_row_raises_a_structured_error(self):
        """Looking up an inapplicable (state, action) raises TransitionError naming both."""
        with pytest.raises(TransitionError) as info:
            promise_transition(PS.RESOLVED, PA.TIMEOUT)
        assert info.value.state == PS.RESOLVED and info.value.action is PA.TIMEOUT
        assert "RESOLVED" in str(info.value) and PA.TIMEOUT.value in str(info.value)

    def test_non_success_row_raises_its_status(self):
        """A 4xx row is raised as the ResonateError of its status."""
        with pytest.raises(ResonateError) as info:
            promise_transition(PS.REJECTED, PA.COMPLETE)
        assert (info.value.status, info.value.code) == (Status.PROMISE_ALREADY_REJECTED, 403)

    def test_completed_rows_are_those_of_the_completed_states(self):
        """The states with completed rows are exactly PromiseState.COMPLETED, the one definition of that set."""
        assert {s for (s, a) in PROMISE_TRANSITIONS if s not in (ABSENT, PS.PENDING)} == PS.COMPLETED

    @pytest.mark.parametrize(
        "to, tags, requested, expected",
        [
            (REQUESTED, {}, PS.REJECTED_CANCELED, PS.REJECTED_CANCELED),
            (TIMEOUT_STATE, {}, "", PS.REJECTED_TIMEDOUT),
            (TIMEOUT_STATE, {"resonate:timeout": "true"}, "", PS.RESOLVED),
            (TIMEOUT_STATE, {"resonate:timeout": "TRUE"}, "", PS.REJECTED_TIMEDOUT),
            (PS.PENDING, {}, "", PS.PENDING),
        ],
    )  # fmt: skip
    def test_promise_target_reads_the_markers(self, to, tags, requested, expected):
        """REQUESTED is the requested state, TIMEOUT_STATE follows resonate:timeout (4.3), a state is itself."""
        assert promise_target(to, Promise(id="p", state=PS.PENDING, tags=tags), requested) == expected

    @pytest.mark.parametrize(
        "row, changed, drive, expected",
        [
            ((PS.PENDING, PA.COMPLETE), Outcome(PS.REJECTED, Status.CREATED), "complete", PS.REJECTED),
            ((PS.PENDING, PA.TIMEOUT), Outcome(PS.REJECTED_CANCELED, Status.OK), "timeout", PS.REJECTED_CANCELED),
        ],
    )  # fmt: skip
    def test_the_row_sets_the_new_state(self, monkeypatch, row, changed, drive, expected):
        """Handlers move a promise to the state its row names: change the row and the outcome follows."""
        monkeypatch.setattr(tables, "PROMISE_TRANSITIONS", {**PROMISE_TRANSITIONS, row: changed})
        core = new_core()
        core.r.promises_create(id="p", timeout=core.now + 1_000)
        if drive == "complete":
            core.r.promises_complete(id="p", state=PS.RESOLVED, idempotency_key="k")
        else:
            core.advance(1_000)
            core.r.promises_read(id="p")
        assert core.promise("p").state == expected


# --------------------------------------------------------------------------- task rows

Driver = Callable[[Core, int], Tuple[Task, Callable[[], Any], Dict[str, Any]]]


def request_driver(action: TaskAction) -> Driver:
    """A tasks.claim/complete/drop with the stored counter, or a stale one for the *_STALE actions."""

    def drive(core: Core, state: int):
        task = task_in(core, state)
        counter = task.counter + (1 if action.name.endswith("_STALE") else 0)
        if action in (TA.CLAIM, TA.CLAIM_STALE):
            ctx = {"process_id": "claimer", "ttl": 5_000}
            return task, lambda: core.r.tasks_claim(id=RESUME_ID, counter=counter, **ctx), ctx
        operation = core.r.tasks_complete if action in (TA.COMPLETE, TA.COMPLETE_STALE) else core.r.tasks_drop
        return task, lambda: operation(id=RESUME_ID, counter=counter), {}

    return drive


def heartbeat_driver(core: Core, state: int):
    task = task_in(core, state)
    core.advance(1_000)

    def act():
        result = core.r.tasks_heartbeat(process_id="worker")
        assert result.payload.tasks_affected == 1
        return result

    return task, act, {}


def delivery_driver(action: TaskAction) -> Driver:
    """A delivery tick over an INIT task that timed out, lost its root, or was sent / not sent."""

    def drive(core: Core, state: int):
        if action is TA.DELIVER_TIMEDOUT:
            task = resume_task(core, timeout=core.now + 1_000)
            core.advance(1_000)
        elif action is TA.DELIVER_ROOT_DONE:
            core.r.promises_create(id=ROOT, timeout=FAR)
            core.r.promises_create(id=LEAF, timeout=FAR)
            core.r.promises_callback(promise_id=LEAF, root_promise_id=ROOT, recv=WORKER, timeout=FAR)
            core.r.promises_complete(id=ROOT, state=PS.RESOLVED)
            core.r.promises_complete(id=LEAF, state=PS.RESOLVED)
            task = core.task(RESUME_ID)
        elif action is TA.DELIVER_NOTIFY:
            core.r.promises_create(id="p", timeout=FAR)
            core.r.promises_subscribe(id="s", promise_id="p", recv=WORKER, timeout=FAR)
            core.r.promises_complete(id="p", state=PS.RESOLVED)
            task = core.task("__notify:p:s")
        else:
            task = resume_task(core)
        sent = action is not TA.DELIVER_FAILED

        def act():
            deliveries = core.tick(sent=sent)
            sends = action in (TA.DELIVER_SENT, TA.DELIVER_FAILED, TA.DELIVER_NOTIFY)
            assert [d.task_id for d in deliveries] == ([task.id] if sends else [])

        return task, act, {}

    return drive


def expiry_driver(action: TaskAction) -> Driver:
    """The expiry sweep over an ENQUEUED/CLAIMED task whose lease/claim deadline or own timeout passed."""

    def drive(core: Core, state: int):
        if action is TA.TIMEOUT:
            resume_task(core, timeout=core.now + 5_000)
            if state == TS.ENQUEUED:
                core.tick(sent=True)
            else:
                core.r.tasks_claim(id=RESUME_ID, counter=1, process_id="worker", ttl=CLAIM_TTL)
            core.advance(5_000)
        else:
            task_in(core, state)
            core.advance(core.r.settings.task_claim_timeout_ms if state == TS.ENQUEUED else CLAIM_TTL)
        return core.task(RESUME_ID), lambda: core.tick(sent=None), {}

    return drive


def root_completed_driver(core: Core, state: int):
    task = task_in(core, state)
    return task, lambda: core.r.promises_complete(id=ROOT, state=PS.RESOLVED), {}


TASK_DRIVERS: Dict[TaskAction, Driver] = {
    **{action: request_driver(action) for action in TASK_REQUESTS},
    TA.HEARTBEAT: heartbeat_driver,
    **{action: delivery_driver(action) for action in DELIVERY_ACTIONS},
    TA.LEASE_EXPIRED: expiry_driver(TA.LEASE_EXPIRED),
    TA.TIMEOUT: expiry_driver(TA.TIMEOUT),
    TA.ROOT_COMPLETED: root_completed_driver,
}


class TestTaskTable:
    """TASK_TRANSITIONS (PROTOCOL.md 3.15–3.18, 5, 6.2)."""

    @pytest.mark.parametrize("row", list(TASK_TRANSITIONS), ids=row_id)
    def test_row_holds_for_the_real_core(self, row):
        """Driving a task into the row's (state, action) yields the row's status, state and 6.2 field effects."""
        state, action = row
        outcome = TASK_TRANSITIONS[row]
        core = new_core(task_claim_timeout_ms=45_000, task_retry_timeout_ms=7_000)
        before, act, ctx = TASK_DRIVERS[action](core, state)
        assert before.state == state
        status, payload = status_of(act)
        after = core.task(before.id)

        if action in TASK_REQUESTS + (TA.HEARTBEAT,):
            assert status == outcome.status
        if outcome.to is None:
            assert after == before
        else:
            assert after.state == outcome.to
            assert_effect(SPEC_TASK_EFFECT[action], before, after, core, ctx)
        if payload is not None and hasattr(payload, "task"):
            assert payload.task == after

    def test_request_rows_match_the_spec(self):
        """Every claim/complete/drop row answers what the documented check order of 3.15–3.17 says."""
        mismatches = {
            row_id(row): ((o.to, o.status), spec_task_outcome(*row))
            for row, o in TASK_TRANSITIONS.items()
            if row[1] in TASK_REQUESTS and (o.to, o.status) != spec_task_outcome(*row)
        }
        assert mismatches == {}

    def test_every_changing_row_has_the_6_2_target_state(self):
        """Each state-changing row goes where 6.2 says (claim → CLAIMED, drop/expiry → INIT, sent → ENQUEUED, …)."""
        targets = {
            TA.HEARTBEAT: TS.CLAIMED,
            TA.DELIVER_TIMEDOUT: TS.TIMEDOUT,
            TA.DELIVER_ROOT_DONE: TS.COMPLETED,
            TA.DELIVER_SENT: TS.ENQUEUED,
            TA.DELIVER_FAILED: TS.INIT,
            TA.DELIVER_NOTIFY: TS.COMPLETED,
            TA.LEASE_EXPIRED: TS.INIT,
            TA.TIMEOUT: TS.TIMEDOUT,
            TA.ROOT_COMPLETED: TS.COMPLETED,
        }
        for (state, action), outcome in TASK_TRANSITIONS.items():
            if action in targets:
                assert outcome.to == targets[action], row_id((state, action))

    def test_table_is_complete_for_every_request(self):
        """claim, complete and drop (matching or stale counter) have a row in every task state."""
        missing = [row_id((s, a)) for s in TASK_STATES for a in TASK_REQUESTS if (s, a) not in TASK_TRANSITIONS]
        assert missing == []

    def test_background_rows_exist_exactly_where_they_apply(self):
        """Delivery rows apply to INIT, expiry rows to ENQUEUED/CLAIMED, heartbeats to CLAIMED, root completion to the open states."""
        applies = {
            **{a: {TS.INIT} for a in DELIVERY_ACTIONS},
            TA.LEASE_EXPIRED: {TS.ENQUEUED, TS.CLAIMED},
            TA.TIMEOUT: {TS.ENQUEUED, TS.CLAIMED},
            TA.HEARTBEAT: {TS.CLAIMED},
            TA.ROOT_COMPLETED: {TS.INIT, TS.ENQUEUED, TS.CLAIMED},
        }
        for action, states in applies.items():
            assert {s for (s, a) in TASK_TRANSITIONS if a is action} == states, action

    def test_final_states_never_change(self):
        """No row moves a COMPLETED or TIMEDOUT task (6.2: final)."""
        moving = [row_id(r) for r, o in TASK_TRANSITIONS.items() if r[0] & TS.FINAL and o.to is not None]
        assert moving == []

    def test_missing_row_raises_a_structured_error(self):
        """Looking up an inapplicable (state, action) raises TransitionError naming the state by name."""
        with pytest.raises(TransitionError) as info:
            task_transition(TS.COMPLETED, TA.HEARTBEAT)
        assert "COMPLETED" in str(info.value) and info.value.action is TA.HEARTBEAT
