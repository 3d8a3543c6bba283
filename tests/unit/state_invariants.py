"""Checks shared by the model-based and concurrency tests: index consistency, replay equivalence.

``State`` keeps derived indexes (sorted ids, deadline heaps, per-root and per-process sets) next
to its dictionaries. These helpers recompute every index from the dictionaries alone and from
a state rebuilt from a snapshot, and compare. They read core internals on purpose: the point
is to catch an index that drifted from the data it indexes.
"""

import json
from collections import Counter
from typing import Any, Dict, List, Optional

from resonate_sync.core import Resonate, State

INIT, ENQUEUED, CLAIMED, COMPLETED, TIMEDOUT = 1, 2, 4, 8, 16  # PROTOCOL.md 2.4
ACTIVE = (ENQUEUED, CLAIMED)
FINAL = (COMPLETED, TIMEDOUT)
INF = float("inf")


class ListJournal:
    """A journal that keeps every appended record (as JSON text round-tripped dicts)."""

    def __init__(self) -> None:
        self.records: List[Dict[str, Any]] = []
        self.appends = 0

    @staticmethod
    def encode(record: Dict[str, Any]) -> bytes:
        # Strict JSON text, as the real journal writes: a record that is not plain JSON fails here.
        return json.dumps(record, allow_nan=False).encode()

    def append_encoded(self, raws: List[bytes]) -> int:
        self.records.extend(json.loads(raw) for raw in raws)
        self.appends += 1
        return self.appends

    def wait_durable(self, ticket: int, timeout: Optional[float] = None) -> None:
        assert 0 < ticket <= self.appends, f"waited for ticket {ticket}, only {self.appends} appends"

    def is_durable(self, ticket: int) -> bool:
        return ticket <= self.appends


def canonical_snapshot(state: State) -> Dict[str, list]:
    """The snapshot JSON with every list sorted by id, so dictionary order does not matter."""
    keys = {"promises": "id", "callbacks": "id", "tasks": "id", "schedules": "id", "locks": "resourceId"}
    data: Dict[str, list] = {kind: [] for kind in keys}
    for kind, obj in State.snapshot_entries(state.snapshot()):
        data[kind].append(obj)
    return {kind: sorted(objs, key=lambda o: o[keys[kind]]) for kind, objs in data.items()}


def assert_replay_equivalent(state: State, records: List[Dict[str, Any]]) -> None:
    """Replaying the journaled records from nothing yields the same state, indexes included."""
    recovered = Resonate.recover(None, records).state
    assert canonical_snapshot(recovered) == canonical_snapshot(state)
    assert_indexes_consistent(recovered)
    assert recovered.promise_seq == state.promise_seq
    assert recovered.task_seq == state.task_seq


def _live(heap) -> Dict[Any, Any]:
    return {key: deadline for key, (deadline, _order) in heap._live.items()}


def assert_indexes_consistent(state: State, in_flight: frozenset = frozenset()) -> None:
    """Every index of ``state`` agrees with its dictionaries, and with a state rebuilt from a snapshot.

    ``in_flight``: INIT tasks handed out by ``tick()`` whose send was not reported yet (they
    are neither in the delivery heap nor parked until ``record_deliveries``).
    """
    promises, tasks, locks, schedules = state.promises, state.tasks, state.locks, state.schedules

    # promises: sorted id index, creation order, timeout heap of the PENDING ones
    assert list(state._promise_ids) == sorted(promises)
    by_seq = sorted(promises.values(), key=lambda p: p.sort_id)
    assert state._seq_ids == [p.id for p in by_seq]
    assert state._seq_sort == [p.sort_id for p in by_seq]
    by_state = Counter(p.state for p in promises.values())
    assert state.promise_counts == {name: by_state[name] for name in state.promise_counts}
    task_states = Counter(t.state for t in tasks.values())
    assert state.task_counts == {value: task_states[value] for value in state.task_counts}
    assert len(set(state._seq_sort)) == len(state._seq_sort), "promise sort ids must be unique"
    assert _live(state.promise_timeouts) == {p.id: p.timeout for p in promises.values() if p.state == "PENDING"}

    # callbacks only on PENDING promises, keyed consistently
    for promise_id, per_promise in state.callbacks.items():
        assert per_promise, f"empty callback entry for {promise_id!r}"
        assert promises[promise_id].state == "PENDING", f"callback on completed promise {promise_id!r}"
        for callback_id, callback in per_promise.items():
            assert callback.id == callback_id and callback.promise_id == promise_id

    # tasks
    assert all(t.sort_id <= state.task_seq for t in tasks.values())
    if tasks:
        assert state.task_seq == max(t.sort_id for t in tasks.values())
    assert len({t.sort_id for t in tasks.values()}) == len(tasks), "task sort ids must be unique"
    open_by_root: Dict[str, set] = {}
    active_by_root: Dict[str, int] = {}
    claimed_by: Dict[str, set] = {}
    for t in tasks.values():
        assert t.state in (INIT, ENQUEUED, CLAIMED, COMPLETED, TIMEDOUT)
        assert (t.process_id is not None) == (t.state == CLAIMED), f"{t.id}: processId iff CLAIMED"
        if t.state not in FINAL:
            open_by_root.setdefault(t.root_promise_id, set()).add(t.id)
        if t.state in ACTIVE:
            active_by_root[t.root_promise_id] = active_by_root.get(t.root_promise_id, 0) + 1
        if t.state == CLAIMED:
            claimed_by.setdefault(t.process_id, set()).add(t.id)
    assert state._open_tasks_by_root == open_by_root
    assert state._active_by_root == active_by_root
    assert state._claimed_by_process == claimed_by
    assert _live(state.task_expiry) == {
        t.id: min(t.expires_at or INF, t.timeout) for t in tasks.values() if t.state in ACTIVE
    }
    init_ids = {t.id for t in tasks.values() if t.state == INIT}
    in_heap = _live(state.task_delivery)
    parked = {tid for ids in state.parked.values() for tid in ids}
    assert not (set(in_heap) & parked), "a task is both parked and in the delivery heap"
    assert set(in_heap) | parked | set(in_flight) == init_ids, "INIT tasks missing from delivery"
    assert set(in_heap) <= init_ids and parked <= init_ids
    for tid, deadline in in_heap.items():
        assert deadline == tasks[tid].expires_at
    for root, ids in state.parked.items():
        assert ids, f"empty parked entry for {root!r}"
        assert all(tasks[tid].root_promise_id == root for tid in ids)

    # schedules and locks
    assert _live(state.schedule_fires) == {s.id: s.next_run_time for s in schedules.values()}
    assert list(state._schedule_order) == sorted((s.sort_id, s.id) for s in schedules.values())
    assert _live(state.lock_expiry) == {lock.resource_id: lock.expires_at for lock in locks.values()}
    locks_by: Dict[str, set] = {}
    for lock in locks.values():
        locks_by.setdefault(lock.process_id, set()).add(lock.resource_id)
    assert state._locks_by_process == locks_by

    # a state rebuilt from a snapshot has the same data and the same indexes
    rebuilt = State.from_entries(State.snapshot_entries(state.snapshot()))
    assert canonical_snapshot(rebuilt) == canonical_snapshot(state)
    assert list(rebuilt._promise_ids) == list(state._promise_ids)
    assert rebuilt._seq_ids == state._seq_ids and rebuilt._seq_sort == state._seq_sort
    assert _live(rebuilt.promise_timeouts) == _live(state.promise_timeouts)
    assert rebuilt._open_tasks_by_root == state._open_tasks_by_root
    assert rebuilt._active_by_root == state._active_by_root
    assert rebuilt._claimed_by_process == state._claimed_by_process
    assert _live(rebuilt.task_expiry) == _live(state.task_expiry)
    assert set(_live(rebuilt.task_delivery)) == init_ids
    assert _live(rebuilt.lock_expiry) == _live(state.lock_expiry)
    assert rebuilt._locks_by_process == state._locks_by_process
    assert _live(rebuilt.schedule_fires) == _live(state.schedule_fires)
    assert list(rebuilt._schedule_order) == list(state._schedule_order)
