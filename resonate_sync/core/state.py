"""The in-memory state: dictionaries, indexes and deadline heaps, changed only by records.

Every mutation is a record (``models.PutPromise``, ``PutTask``, …) passed to
:meth:`State.apply`. Handlers never assign into the dictionaries themselves; replaying the
journal is therefore the same code path as serving requests, and the record list a handler
produced is exactly what the journal must append.

Nothing here is thread-safe: the caller (``core.Resonate``) holds one lock around every
operation. Stored objects are frozen attrs instances, so a snapshot is a shallow copy of the
dictionaries taken under the lock and serialised outside it, one object at a time
(:meth:`State.snapshot_entries`); :meth:`State.from_entries` rebuilds a state from such a stream.
"""

import heapq
from bisect import bisect_left
from functools import lru_cache
from operator import methodcaller
from typing import (
    Any,
    Callable,
    Dict,
    Generator,
    Generic,
    Hashable,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
    TypeVar,
)

from sortedcontainers import SortedList

from ..models import (
    STORE,
    Callback,
    DeleteCallbacks,
    DeleteLock,
    DeleteSchedule,
    Lock,
    Promise,
    PromiseState,
    PutCallback,
    PutLock,
    PutPromise,
    PutSchedule,
    PutTask,
    Record,
    Schedule,
    Task,
    TaskState,
)

__all__ = ["Candidates", "DeadlineHeap", "State", "Tx", "id_matcher", "scan_cost"]

_NEVER = float("inf")

T = TypeVar("T")


class DeadlineHeap:
    """A min-heap of keys by deadline, with O(1) discard (lazy deletion) and compaction.

    ``set`` replaces a key's deadline; stale heap entries are skipped when they surface and
    the heap is rebuilt when stale entries outnumber live ones, so memory stays proportional
    to the live keys.
    """

    __slots__ = ("_heap", "_live")

    def __init__(self) -> None:
        self._heap: List[Tuple[Any, int, Hashable]] = []
        self._live: Dict[Hashable, Tuple[Any, int]] = {}

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._live

    def set(self, key: Hashable, deadline: Any, order: int = 0) -> None:
        if self._live.get(key) == (deadline, order):
            return
        self._live[key] = (deadline, order)
        heapq.heappush(self._heap, (deadline, order, key))
        self._maybe_compact()

    def discard(self, key: Hashable) -> None:
        if self._live.pop(key, None) is not None:
            self._maybe_compact()

    def peek(self) -> Optional[Tuple[Any, Hashable]]:
        """The earliest (deadline, key), or None."""
        heap, live = self._heap, self._live
        while heap:
            deadline, order, key = heap[0]
            if live.get(key) == (deadline, order):
                return deadline, key
            heapq.heappop(heap)
        return None

    def pop_due(self, now: int) -> Optional[Hashable]:
        """Remove and return the earliest key whose deadline is ``<= now``, or None."""
        top = self.peek()
        if top is None or top[0] > now:
            return None
        heapq.heappop(self._heap)
        del self._live[top[1]]
        return top[1]

    def drain_due(self, now: int, batch: int) -> Iterator[Hashable]:
        """Pop due keys one at a time, at most ``batch``; the caller may change the heap in between."""
        for _ in range(batch):
            key = self.pop_due(now)
            if key is None:
                return
            yield key

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * len(self._live) + 1024:
            self._heap = [(d, o, k) for k, (d, o) in self._live.items()]
            heapq.heapify(self._heap)


@lru_cache(maxsize=1024)
def id_matcher(pattern: str) -> Callable[[str], bool]:
    """A search id pattern as a predicate: ``*`` matches any sequence, every other character itself.

    Linear in the id, whatever the pattern: the literal pieces between the stars are looked up
    in order with ``str.find``, each at its leftmost place after the one before (leaving the
    most room for the rest), the first as a prefix and the last as a suffix. A regex with one
    ``.*`` per star backtracks exponentially instead: ``*`` * 25 + ``x`` against a 40-character
    id would hold the state lock for good.
    """
    if "*" not in pattern:
        return pattern.__eq__
    first, *middle, last = pattern.split("*")
    middle = [piece for piece in middle if piece]  # runs of stars are one star
    if not (first or middle or last):
        return _always
    if not middle and not (first and last):  # the usual shapes, at C speed
        return methodcaller("endswith", last) if last else methodcaller("startswith", first)
    shortest = len(first) + len(last) + sum(map(len, middle))

    def match(text: str) -> bool:
        if len(text) < shortest or not text.startswith(first) or not text.endswith(last):
            return False
        pos, end = len(first), len(text) - len(last)
        for piece in middle:
            pos = text.find(piece, pos, end)
            if pos < 0:
                return False
            pos += len(piece)
        return True

    return match


def _always(_: str) -> bool:
    return True


class Candidates(Generic[T]):
    """The candidates of one search page, newest first, from a scan with a bounded amount of work.

    Iterate it for the items whose id matches. When the scan ran out of work before it ran out
    of ids, ``resume`` is then the sort id of the last id it examined: the next page goes on
    strictly below it. It stays None when the scan saw everything, or when the consumer
    stopped first.
    """

    __slots__ = ("_scan", "resume")

    def __init__(self, scan: Generator[T, None, Optional[int]]) -> None:
        self._scan = scan
        self.resume: Optional[int] = None

    def __iter__(self) -> Iterator[T]:
        self.resume = yield from self._scan


_FILTER_COST = 6
"""Work units for an id handed on to a search's state and tag filters: a tag filter that rejects
it costs about 1.2 us, an id the pattern rejects (one unit) about 0.18 us."""


def scan_cost(pattern: str) -> int:
    """Work units to examine one id: one, plus one per literal piece between two stars (a ``str.find`` each).

    About 0.15-0.25 us a unit on 40- to 200-character ids (2 cores); length adds little: ``find`` is C.
    """
    return 1 + sum(1 for piece in pattern.split("*")[1:-1] if piece)


def _bounded_scan(
    entries: Iterable[Tuple[int, str]], items: Mapping[str, T], pattern: str, budget: int
) -> Generator[T, None, Optional[int]]:
    """The items whose key matches ``pattern``, in the order of ``entries`` ((sort id, key) pairs).

    It stops once ``budget`` work units are spent, and returns the sort id of the last entry
    examined when the budget ran out before the entries did, else None. The first entry is
    always examined, so paging always progresses.
    """
    match, cost = id_matcher(pattern), scan_cost(pattern)
    left, last = budget, None
    for sort_id, key in entries:
        if left <= 0:
            return last
        left -= cost
        last = sort_id
        if match(key):
            left -= _FILTER_COST
            yield items[key]
    return None


def _exact(items: Mapping[str, Any], key: str, before: Optional[int]) -> Generator[Any, None, None]:
    item = items.get(key)
    if item is not None and (before is None or item.sort_id < before):
        yield item


def _prefix_successor(prefix: str) -> Optional[str]:
    """The least string above every string that starts with ``prefix`` (None: there is none)."""
    stripped = prefix.rstrip("\U0010ffff")
    return stripped[:-1] + chr(ord(stripped[-1]) + 1) if stripped else None


class State:
    """Everything the server knows, with the indexes the operations and jobs need.

    Attributes:
        promises: id → Promise. Promises are never deleted.
        callbacks: promise id → {callback id → Callback}, for pending promises only.
        tasks: id → Task, final ones included (tasks.complete on a completed task answers 200).
        schedules: id → Schedule.
        locks: resource id → Lock.
        promise_counts: promise state → promises in it; task_counts: task state → tasks in it
            (kept as records apply, so counting costs no scan).
    """

    def __init__(self) -> None:
        self.promises: Dict[str, Promise] = {}
        self._promise_ids = SortedList()
        self._seq_ids: List[str] = []  # ids in creation order
        self._seq_sort: List[int] = []  # their sort ids (ascending), for cursor positioning
        self.promise_timeouts = DeadlineHeap()  # PENDING promises by timeout
        self.promise_counts: Dict[str, int] = dict.fromkeys(PromiseState.ALL, 0)

        self.callbacks: Dict[str, Dict[str, Callback]] = {}

        self.tasks: Dict[str, Task] = {}
        self.task_seq = 0
        self.task_counts: Dict[int, int] = dict.fromkeys(TaskState.NAMES, 0)
        self._open_tasks_by_root: Dict[str, Set[str]] = {}  # non-final tasks
        self._active_by_root: Dict[str, int] = {}  # ENQUEUED or CLAIMED tasks per root
        self._claimed_by_process: Dict[str, Set[str]] = {}
        self.task_delivery = DeadlineHeap()  # INIT tasks by expires_at, then creation order
        self.task_expiry = DeadlineHeap()  # ENQUEUED/CLAIMED tasks by min(expires_at, timeout)
        self.parked: Dict[str, Set[str]] = {}  # due INIT tasks waiting for their root to be free

        self.schedules: Dict[str, Schedule] = {}
        self._schedule_order = SortedList()  # (sort id, id) of every schedule, for search
        self.schedule_seq = 0
        self.schedule_fires = DeadlineHeap()

        self.locks: Dict[str, Lock] = {}
        self.lock_expiry = DeadlineHeap()
        self._locks_by_process: Dict[str, Set[str]] = {}

    # ------------------------------------------------------------------ apply

    def apply(self, record: Record) -> None:
        """Apply one record; the only way state changes."""
        _APPLY[type(record)](self, record)

    def _put_promise(self, record: PutPromise) -> None:
        promise = record.promise
        old = self.promises.get(promise.id)
        self.promises[promise.id] = promise
        counts = self.promise_counts
        counts[promise.state] += 1
        if old is not None:
            counts[old.state] -= 1
        else:
            self._promise_ids.add(promise.id)
            if self._seq_sort and promise.sort_id <= self._seq_sort[-1]:
                raise ValueError(f"promise {promise.id!r}: sort id {promise.sort_id} is not increasing")
            self._seq_ids.append(promise.id)
            self._seq_sort.append(promise.sort_id)
        if promise.state == PromiseState.PENDING:
            self.promise_timeouts.set(promise.id, promise.timeout)
        else:
            self.promise_timeouts.discard(promise.id)

    def _put_callback(self, record: PutCallback) -> None:
        callback = record.callback
        self.callbacks.setdefault(callback.promise_id, {})[callback.id] = callback

    def _delete_callbacks(self, record: DeleteCallbacks) -> None:
        self.callbacks.pop(record.promise_id, None)

    def _put_task(self, record: PutTask) -> None:
        task = record.task
        tid, root = task.id, task.root_promise_id
        old = self.tasks.get(tid)
        self.tasks[tid] = task
        if task.sort_id > self.task_seq:
            self.task_seq = task.sort_id
        old_state = old.state if old is not None else 0
        state = task.state
        counts = self.task_counts
        counts[state] += 1
        if old_state:
            counts[old_state] -= 1

        if old is not None and old_state == TaskState.CLAIMED and old.process_id:
            owned = self._claimed_by_process.get(old.process_id)
            if owned is not None:
                owned.discard(tid)
                if not owned:
                    del self._claimed_by_process[old.process_id]
        if state == TaskState.CLAIMED and task.process_id:
            self._claimed_by_process.setdefault(task.process_id, set()).add(tid)

        if state & TaskState.FINAL:
            open_tasks = self._open_tasks_by_root.get(root)
            if open_tasks is not None:
                open_tasks.discard(tid)
                if not open_tasks:
                    del self._open_tasks_by_root[root]
        else:
            self._open_tasks_by_root.setdefault(root, set()).add(tid)

        if state == TaskState.INIT:
            self.task_delivery.set(tid, task.expires_at, task.sort_id)
        else:
            self.task_delivery.discard(tid)
            parked = self.parked.get(root)
            if parked is not None:
                parked.discard(tid)
                if not parked:
                    del self.parked[root]

        if state & TaskState.ACTIVE:
            self.task_expiry.set(tid, min(task.expires_at or _NEVER, task.timeout))
        else:
            self.task_expiry.discard(tid)

        was_active = bool(old_state & TaskState.ACTIVE)
        is_active = bool(state & TaskState.ACTIVE)
        if is_active and not was_active:
            self._active_by_root[root] = self._active_by_root.get(root, 0) + 1
        elif was_active and not is_active:
            left = self._active_by_root[root] - 1
            if left:
                self._active_by_root[root] = left
            else:
                del self._active_by_root[root]
                self.unpark(root)

    def _put_schedule(self, record: PutSchedule) -> None:
        schedule = record.schedule
        old = self.schedules.get(schedule.id)
        self.schedules[schedule.id] = schedule
        if old is None or old.sort_id != schedule.sort_id:
            if old is not None:
                self._schedule_order.remove((old.sort_id, old.id))
            self._schedule_order.add((schedule.sort_id, schedule.id))
        if schedule.sort_id > self.schedule_seq:
            self.schedule_seq = schedule.sort_id
        self.schedule_fires.set(schedule.id, schedule.next_run_time)

    def _delete_schedule(self, record: DeleteSchedule) -> None:
        old = self.schedules.pop(record.id, None)
        if old is not None:
            self._schedule_order.remove((old.sort_id, old.id))
        self.schedule_fires.discard(record.id)

    def _put_lock(self, record: PutLock) -> None:
        lock = record.lock
        old = self.locks.get(lock.resource_id)
        if old is not None:
            self._forget_lock_owner(old)
        self.locks[lock.resource_id] = lock
        self._locks_by_process.setdefault(lock.process_id, set()).add(lock.resource_id)
        self.lock_expiry.set(lock.resource_id, lock.expires_at)

    def _delete_lock(self, record: DeleteLock) -> None:
        old = self.locks.pop(record.resource_id, None)
        if old is not None:
            self._forget_lock_owner(old)
        self.lock_expiry.discard(record.resource_id)

    def _forget_lock_owner(self, lock: Lock) -> None:
        owned = self._locks_by_process.get(lock.process_id)
        if owned is not None:
            owned.discard(lock.resource_id)
            if not owned:
                del self._locks_by_process[lock.process_id]

    # ------------------------------------------------------------------ queries

    @property
    def promise_seq(self) -> int:
        """The sort id of the newest promise (0 when there is none)."""
        return self._seq_sort[-1] if self._seq_sort else 0

    def open_tasks_of_root(self, root: str) -> List[Task]:
        """The INIT, ENQUEUED and CLAIMED tasks whose root is ``root``, in creation order."""
        ids = self._open_tasks_by_root.get(root)
        if not ids:
            return []
        return sorted((self.tasks[i] for i in ids), key=lambda t: t.sort_id)

    def root_busy(self, root: str) -> bool:
        """True while a task of ``root`` is ENQUEUED or CLAIMED (per-root serialisation, 6.2)."""
        return root in self._active_by_root

    def claimed_by(self, process_id: str) -> List[str]:
        return sorted(self._claimed_by_process.get(process_id, ()))

    def locks_of(self, process_id: str) -> List[str]:
        return sorted(self._locks_by_process.get(process_id, ()))

    def park(self, task_id: str, root: str) -> None:
        """Hold a due INIT task until no other task of its root is ENQUEUED or CLAIMED."""
        self.parked.setdefault(root, set()).add(task_id)

    def unpark(self, root: str) -> None:
        for tid in self.parked.pop(root, ()):
            task = self.tasks[tid]
            if task.state == TaskState.INIT:
                self.task_delivery.set(tid, task.expires_at, task.sort_id)

    def search_promises(self, pattern: str, before: Optional[int], budget: int) -> Candidates[Promise]:
        """Promises whose id matches ``pattern`` and whose sort id is < ``before``, newest first.

        The scan spends at most ``budget`` work units (see :func:`scan_cost`), so one page holds
        the lock for a bounded time even when the pattern matches nothing among a million
        promises; the caller pages on from ``Candidates.resume``.

        A literal prefix (the text before the first ``*``) narrows the candidates to a range of
        the sorted id index, O(log n + m) for m ids with that prefix, when that range is within
        the budget and selective. Otherwise the creation-order list is walked backwards from
        the cursor, which finds ``limit`` dense matches without touching the rest.
        """
        return Candidates(self._scan_promises(pattern, before, budget))

    def _scan_promises(
        self, pattern: str, before: Optional[int], budget: int
    ) -> Generator[Promise, None, Optional[int]]:
        promises = self.promises
        if "*" not in pattern:
            return (yield from _exact(promises, pattern, before))
        prefix = pattern.split("*", 1)[0]
        if prefix:
            ids = self._promise_ids
            lo = ids.bisect_left(prefix)
            hi = ids.bisect_left(after) if (after := _prefix_successor(prefix)) else len(ids)
            m = hi - lo
            if m <= budget and (m <= 10_000 or m * 8 <= len(ids)):
                limit = _NEVER if before is None else before
                ranked = [(p.sort_id, p.id) for p in map(promises.__getitem__, ids.islice(lo, hi)) if p.sort_id < limit]
                ranked.sort(reverse=True)
                return (yield from _bounded_scan(ranked, promises, pattern, budget))
        end = len(self._seq_sort) if before is None else bisect_left(self._seq_sort, before)
        newest_first = range(end - 1, -1, -1)
        entries = zip(map(self._seq_sort.__getitem__, newest_first), map(self._seq_ids.__getitem__, newest_first))
        return (yield from _bounded_scan(entries, promises, pattern, budget))

    def search_schedules(self, pattern: str, before: Optional[int], budget: int) -> Candidates[Schedule]:
        """Schedules whose id matches ``pattern`` with sort id < ``before``, newest first; as :meth:`search_promises`.

        Walked in creation order from the cursor (there is no id index for schedules).
        """
        return Candidates(self._scan_schedules(pattern, before, budget))

    def _scan_schedules(
        self, pattern: str, before: Optional[int], budget: int
    ) -> Generator[Schedule, None, Optional[int]]:
        if "*" not in pattern:
            return (yield from _exact(self.schedules, pattern, before))
        below = None if before is None else (before,)
        entries = self._schedule_order.irange(maximum=below, inclusive=(True, False), reverse=True)
        return (yield from _bounded_scan(entries, self.schedules, pattern, budget))

    def next_deadline(self) -> Optional[int]:
        """The earliest time at which a background job has work, or None."""
        tops = [
            top[0]
            for top in (
                self.promise_timeouts.peek(),
                self.task_delivery.peek(),
                self.task_expiry.peek(),
                self.schedule_fires.peek(),
                self.lock_expiry.peek(),
            )
            if top is not None
        ]
        return min(tops) if tops else None

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> Dict[str, list]:
        """A consistent copy (shallow: the objects are immutable) for a snapshot; take under the lock."""
        callbacks = [cb for per_promise in self.callbacks.values() for cb in per_promise.values()]
        return {
            "promises": [self.promises[i] for i in self._seq_ids],
            "callbacks": callbacks,
            "tasks": list(self.tasks.values()),
            "schedules": list(self.schedules.values()),
            "locks": list(self.locks.values()),
        }

    @staticmethod
    def snapshot_entries(snapshot: Dict[str, list]) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """The JSON form of :meth:`snapshot` as (kind, object) pairs, made one at a time; call outside the lock.

        Promises come in sort id order, as :meth:`from_entries` needs them; no list is built.
        """
        unstructure = STORE.unstructure
        for kind, objs in snapshot.items():
            for obj in objs:
                yield kind, unstructure(obj)

    @classmethod
    def from_entries(cls, entries: Iterable[Tuple[str, Dict[str, Any]]]) -> "State":
        """Rebuild a state (and all its indexes) from :meth:`snapshot_entries` output, one entry at a time.

        Promises must come in sort id order; the other kinds may come in any order.
        """
        state = cls()
        apply, structure = state.apply, STORE.structure
        for kind, obj in entries:
            try:
                model, put = _SNAPSHOT_KINDS[kind]
            except KeyError:
                raise ValueError(f"unknown snapshot entry kind {kind!r}") from None
            apply(put(structure(obj, model)))
        return state


_SNAPSHOT_KINDS = {
    "promises": (Promise, PutPromise),
    "callbacks": (Callback, PutCallback),
    "tasks": (Task, PutTask),
    "schedules": (Schedule, PutSchedule),
    "locks": (Lock, PutLock),
}

_APPLY = {
    PutPromise: State._put_promise,
    PutCallback: State._put_callback,
    DeleteCallbacks: State._delete_callbacks,
    PutTask: State._put_task,
    PutSchedule: State._put_schedule,
    DeleteSchedule: State._delete_schedule,
    PutLock: State._put_lock,
    DeleteLock: State._delete_lock,
}


class Tx:
    """One atomic step: applies records to the state as they are made and keeps them for the journal.

    Attributes:
        state: the state being changed.
        now: the operation's time, ms since the epoch.
        records: what changed, in order.
        head: trace context (``traceparent``/``tracestate``) for messages this step creates.
        encode: turns a record into the journal's bytes, or None when nothing is journaled.
        encoded: the encoded records, in order (empty without ``encode``).
    """

    __slots__ = ("state", "now", "records", "head", "config", "encode", "encoded")

    def __init__(
        self,
        state: State,
        now: int,
        config: Any,
        head: Optional[Dict[str, str]] = None,
        encode: Optional[Callable[[Record], bytes]] = None,
    ) -> None:
        self.state = state
        self.now = now
        self.records: List[Record] = []
        self.head = head or {}
        self.config = config
        self.encode = encode
        self.encoded: List[bytes] = []

    def put(self, record: Record) -> None:
        if self.encode is not None:
            # Encoded before it is applied: a record the journal cannot write fails this
            # request alone and leaves the state as the journal will know it.
            self.encoded.append(self.encode(record))
        self.state.apply(record)
        self.records.append(record)

    def next_promise_sort_id(self) -> int:
        return self.state.promise_seq + 1

    def next_task_sort_id(self) -> int:
        return self.state.task_seq + 1
