"""``Resonate``: the eighteen operations on one lock-guarded state, in process, no NATS.

Every call: validate the request (outside the lock) → under the lock, read the clock, run the
handler, which decides by the transition tables and records what changed → append those
records to the journal (if any) → release the lock → wait until the journal made them
durable → return the :class:`~resonate_sync.core.common.Result` or raise the
:class:`~resonate_sync.errors.ResonateError`. Changes a failing request made on its way (a
lazy timeout before a 403, say) are kept and journaled too, as in Go.

A read also waits until everything it could have observed is durable, so no reply ever shows
a change that a crash could still take back.
"""

import gc
import logging
import threading
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Protocol, Tuple

import attrs

from ..errors import BadRequest, InternalError, ResonateError, Status, StoreUnavailable, Unavailable
from ..models import (
    AcquireLockRequest,
    ClaimTaskRequest,
    CompletePromiseRequest,
    CompleteTaskRequest,
    CreateCallbackRequest,
    CreatePromiseAndTaskRequest,
    CreatePromiseRequest,
    CreateScheduleRequest,
    CreateSubscriptionRequest,
    DeleteScheduleRequest,
    DropTaskRequest,
    HeartbeatLocksRequest,
    HeartbeatTasksRequest,
    Promise,
    PutPromise,
    PutTask,
    ReadPromiseRequest,
    ReadScheduleRequest,
    ReleaseLockRequest,
    SearchPromisesRequest,
    SearchSchedulesRequest,
    TaskState,
    record_from_json,
    record_to_json,
)
from . import locks, promises, schedules, tasks
from .clock import Clock, SystemClock
from .common import CoreSettings, Result, trace_head
from .state import State, Tx
from .tasks import Delivery

__all__ = ["Resonate", "Operation", "OPERATIONS", "JournalSink"]

log = logging.getLogger(__name__)


class JournalSink(Protocol):
    """What the core needs of a journal (see ``resonate_sync.journal.Journal``)."""

    def encode(self, record: Dict[str, Any]) -> bytes: ...

    def append_encoded(self, raws: List[bytes]) -> int: ...

    def wait_durable(self, ticket: int, timeout: Optional[float] = None) -> None: ...

    def is_durable(self, ticket: int) -> bool: ...


def _nothing(_: Any, __: CoreSettings) -> None:
    return None


@attrs.frozen
class Operation:
    """What the core runs for one operation; :data:`OPERATIONS` holds one per operation name.

    Attributes:
        name: the operation's name (``promises.create``); methods of :class:`Resonate` are
            named after it (``promises_create``).
        request_type: the request model.
        validate: ``(request, settings)``: field rules checked before the lock (400).
        handler: ``(tx, request) -> Result`` run under the lock.
    """

    name: str
    request_type: type
    validate: Callable[[Any, CoreSettings], None]
    handler: Callable[[Tx, Any], Result]


OPERATIONS: Mapping[str, Operation] = {
    op.name: op
    for op in (
        Operation("promises.read", ReadPromiseRequest, _nothing, promises.read),
        Operation("promises.search", SearchPromisesRequest, promises.validate_search, promises.search),
        Operation("promises.create", CreatePromiseRequest, promises.validate_create, promises.create),
        Operation("promises.createtask", CreatePromiseAndTaskRequest, promises.validate_createtask, promises.createtask),
        Operation("promises.complete", CompletePromiseRequest, promises.validate_complete, promises.complete_op),
        Operation("promises.callback", CreateCallbackRequest, promises.validate_callback, promises.callback),
        Operation("promises.subscribe", CreateSubscriptionRequest, promises.validate_subscribe, promises.subscribe),
        Operation("schedules.read", ReadScheduleRequest, _nothing, schedules.read),
        Operation("schedules.search", SearchSchedulesRequest, schedules.validate_search, schedules.search),
        Operation("schedules.create", CreateScheduleRequest, schedules.validate_create, schedules.create),
        Operation("schedules.delete", DeleteScheduleRequest, _nothing, schedules.delete),
        Operation("locks.acquire", AcquireLockRequest, locks.validate_acquire, locks.acquire),
        Operation("locks.release", ReleaseLockRequest, locks.validate_release, locks.release),
        Operation("locks.heartbeat", HeartbeatLocksRequest, locks.validate_heartbeat, locks.heartbeat),
        Operation("tasks.claim", ClaimTaskRequest, tasks.validate_claim, tasks.claim),
        Operation("tasks.complete", CompleteTaskRequest, tasks.validate_complete, tasks.complete),
        Operation("tasks.drop", DropTaskRequest, tasks.validate_drop, tasks.drop),
        Operation("tasks.heartbeat", HeartbeatTasksRequest, tasks.validate_heartbeat, tasks.heartbeat),
    )
}
"""Every operation by name: the in-process API (the methods of :class:`Resonate`) and the
wire API (``resonate_sync.api.operations``) are both built from it."""


def _method(name: str) -> Callable[..., Result]:
    op = OPERATIONS[name]

    def call(self: "Resonate", request: Any = None, *, metadata: Optional[Mapping[str, str]] = None, **fields: Any):
        if request is None:
            request = op.request_type(**fields)  # its field converters refuse a bad field (400 naming it)
        elif fields:
            raise TypeError("pass either a request object or keyword fields, not both")
        else:
            request = attrs.evolve(request)  # checked again: a map or list in it may have changed since
        return self.execute(op, request, metadata)

    call.__name__ = name.replace(".", "_")
    call.__doc__ = (
        f"``{name}``: takes a ``{op.request_type.__name__}`` (or its fields as keywords) and returns a "
        f"Result whose payload is the operation's response model; raises ResonateError."
    )
    return call


def freeze_heap() -> None:
    """Move every object alive now out of the cyclic collector's reach (``gc.freeze``).

    The stored promises, tasks and their dicts live until the process ends; without this,
    each full collection walks all of them (a pause of ~0.3 s at 400,000 promises).
    """
    gc.collect()
    gc.freeze()


@attrs.frozen
class Pending:
    """An operation's outcome that may not be durable yet.

    Attributes:
        result: the Result, when the operation succeeded.
        error: the ResonateError (or bug) it raised; changes made before it are kept.
        ticket: the journal ticket to wait for before showing either; 0 when there is none.
    """

    result: Any
    error: Optional[BaseException]
    ticket: int


class Resonate:
    """The durable-promise state machine.

    Args:
        clock: where ``now`` comes from (ms since the epoch); a ``FakeClock`` in tests.
        settings: hrefs, task delivery timings, batch size, cursor secret.
        journal: where records go before a reply; None keeps everything in memory.
        state: a recovered state to start from (see :meth:`recover`).

    Methods are named after the operations: ``promises_create(id="p", timeout=…)``,
    ``tasks_claim(ClaimTaskRequest(...))`` and so on; each returns a ``Result(status, payload)``.
    """

    promises_read = _method("promises.read")
    promises_search = _method("promises.search")
    promises_create = _method("promises.create")
    promises_createtask = _method("promises.createtask")
    promises_complete = _method("promises.complete")
    promises_callback = _method("promises.callback")
    promises_subscribe = _method("promises.subscribe")
    schedules_read = _method("schedules.read")
    schedules_search = _method("schedules.search")
    schedules_create = _method("schedules.create")
    schedules_delete = _method("schedules.delete")
    locks_acquire = _method("locks.acquire")
    locks_release = _method("locks.release")
    locks_heartbeat = _method("locks.heartbeat")
    tasks_claim = _method("tasks.claim")
    tasks_complete = _method("tasks.complete")
    tasks_drop = _method("tasks.drop")
    tasks_heartbeat = _method("tasks.heartbeat")

    def __init__(
        self,
        clock: Optional[Clock] = None,
        *,
        settings: Optional[CoreSettings] = None,
        journal: Optional[JournalSink] = None,
        state: Optional[State] = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.settings = settings or CoreSettings()
        self.state = state or State()
        self._journal = journal
        self._encode = self._encode_record if journal is not None else None
        self._ticket = 0
        self._unjournaled: Optional[str] = None
        self._unavailable = False  # _unjournaled because the store stepped down: 503, until reload()
        self.on_unavailable: Optional[Callable[[], None]] = None
        """Called (under the lock, so it must only set a flag) when a replicated store refused an append
        after the change was applied here: the store must rebuild this state (``reload``) again."""
        self._lock = threading.Lock()
        self.wakeup = threading.Event()
        """Set when a change may have created work due now (a new INIT task); the ticker waits on it."""
        self.on_promises: Optional[Callable[[int, List[Promise]], None]] = None
        """``on_promises(ticket, promises)``: told, under the lock, of the new state of every promise a
        step created or completed and the journal ticket that makes them durable (the events
        publisher). It must only queue them: it runs with the lock held. None: nobody is told."""

    # ------------------------------------------------------------------ operations

    def execute(self, op: Operation, request: Any, metadata: Optional[Mapping[str, str]] = None) -> Result:
        """Validate and run one operation atomically; durable before it returns."""
        return self.finish(self.execute_nowait(op, request, metadata))

    def execute_nowait(self, op: Operation, request: Any, metadata: Optional[Mapping[str, str]] = None) -> "Pending":
        """Validate and run one operation atomically, without waiting for the journal.

        The caller must not show the outcome to anyone before ``wait_durable(pending.ticket)``
        returned (or use :meth:`finish`): this lets a server hand the wait to one thread that
        covers many requests with each fsync, instead of blocking a worker per request.
        """
        op.validate(request, self.settings)
        return self._atomically_nowait(lambda tx: op.handler(tx, request), trace_head(metadata))

    def finish(self, pending: "Pending") -> Any:
        """Wait until ``pending`` is durable, then return its result or raise its error."""
        self.wait_durable(pending.ticket)
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _atomically(self, step: Callable[[Tx], Any], head: Optional[Dict[str, str]] = None) -> Any:
        return self.finish(self._atomically_nowait(step, head))

    def _atomically_nowait(self, step: Callable[[Tx], Any], head: Optional[Dict[str, str]] = None) -> "Pending":
        error: Optional[BaseException] = None
        result = None
        with self._lock:
            if self._unjournaled is not None:
                raise self._store_error()
            tx = Tx(self.state, self.clock.now(), self.settings, head, self._encode)
            try:
                result = step(tx)
            except Exception as exc:  # what changed before the error is kept, so it is journaled
                error = exc
            ticket = self._commit(tx)
        return Pending(result, error, ticket)

    def _commit(self, tx: Tx) -> int:
        """Journal the records of one step (under the lock); returns the ticket to wait for."""
        records = tx.records
        if not records:
            return self._ticket
        if any(type(r) is PutTask and r.task.state == TaskState.INIT for r in records):
            self.wakeup.set()
        if self._journal is not None:
            try:
                self._ticket = self._journal.append_encoded(tx.encoded)
            except Exception as exc:
                raise self._journal_failed("append", exc) from None
        if self.on_promises is not None:
            # Every promise state change is a PutPromise (created PENDING, or completed):
            # one place sees them all, from requests and background jobs alike.
            changed = [r.promise for r in records if type(r) is PutPromise]
            if changed:
                self.on_promises(self._ticket, changed)
        return self._ticket

    def _encode_record(self, record: Any) -> bytes:
        """The journal's bytes for a record; a value it cannot write is this request's 400.

        Requests are held to ``limits`` when they are decoded, so this only fires if a value
        slipped past them: the request is refused before its record changes the state,
        instead of leaving the state ahead of the journal (500 until a restart).
        """
        try:
            return self._journal.encode(record_to_json(record))
        except (TypeError, ValueError, RecursionError) as exc:
            log.warning("refused a record the journal cannot write (%s): %s", type(record).__name__, exc)
            raise BadRequest(f"invalid payload: the request holds a value the store cannot write: {exc}") from None

    def is_durable(self, ticket: int) -> bool:
        """Whether ``ticket`` is durable already (no wait, no lock): a reply may go out at once."""
        return not ticket or self._journal.is_durable(ticket)

    def wait_durable(self, ticket: int) -> None:
        """Return once every record up to ``ticket`` is durable (at once for 0, or without a journal).

        Raises InternalError (500) if it cannot be.
        """
        if not ticket:
            return
        try:
            self._journal.wait_durable(ticket)
        except Exception as exc:
            raise self._journal_failed("fsync", exc) from None

    def _journal_failed(self, what: str, exc: Exception) -> ResonateError:
        """Stop answering for good and log why, once; returns the error to raise (its cause is in that log line).

        The state already holds changes the journal could not make durable and cannot take
        them back: answering anything from it could acknowledge a change a restart would lose.
        A replicated store that stepped down (:class:`StoreUnavailable`) is the exception: 503
        until :meth:`reload` replaced the state with the stream's.
        """
        if isinstance(exc, StoreUnavailable):
            # A replicated store stepped down (fenced, or its lease lapsed). A refused append left a
            # change here the stream never took: nothing is answered from this state until the
            # store rebuilt it, which it is asked to do. A failed wait only means that ticket's
            # change is not in the stream; the step-down behind it rebuilds the state anyway, and a
            # late one (of a leadership that ended before the last rebuild) must not block the next.
            if what == "append":
                if self._unjournaled is None:
                    self._unjournaled, self._unavailable = f"store {what}: {exc}", True
                if self.on_unavailable is not None:
                    self.on_unavailable()
            return Unavailable(Status.NOT_LEADER.text, status=Status.NOT_LEADER)
        if self._unjournaled is None:
            self._unjournaled = f"journal {what} failed: {exc}"
            if isinstance(exc, (TypeError, ValueError)):
                remedy = "a change that cannot be journaled is a bug: restart the server and report it"
            else:
                remedy = (
                    "free disk space or repair the journal directory named in this message (permissions, a failing "
                    "disk), then restart the server; records acknowledged before this are safe"
                )
            log.error(
                "journal %s failed: %s; the in-memory state holds changes the journal may not, so "
                "every request fails (500) until the server is restarted. To recover: %s",
                what,
                exc,
                remedy,
            )
        return self._store_error()

    def _store_error(self) -> ResonateError:
        if self._unavailable:
            return Unavailable(Status.NOT_LEADER.text, status=Status.NOT_LEADER)
        return InternalError(Status.STORE_ERROR.text, status=Status.STORE_ERROR)

    # ------------------------------------------------------------------ replication

    def apply_replicated(self, records: Iterable[Dict[str, Any]]) -> None:
        """Apply records another instance made durable (a standby tailing the leader's stream)."""
        with self._lock:
            apply = self.state.apply
            for obj in records:
                apply(record_from_json(obj))

    def reload(self, snapshot: Optional[Iterable[Tuple[str, Any]]], records: Iterable[Dict[str, Any]]) -> None:
        """Replace the whole state with one rebuilt from ``snapshot`` and ``records`` (as :meth:`recover`),
        and answer again: after a replicated store stepped down, the state may hold changes the
        stream never took, so it is rebuilt from what the stream holds. Built outside the lock."""
        state = type(self).recover(snapshot, records, clock=self.clock).state
        with self._lock:
            self.state = state
            self._ticket = 0
            self._unjournaled, self._unavailable = None, False
    # ------------------------------------------------------------------ background

    def tick(self) -> List[Delivery]:
        """Run every background job once (10.1) and return the messages to send.

        Order: promise timeouts, schedule firings, lock expiry, task expiry, then delivery
        selection, so a task created by a timeout or a firing can go out in the same tick.
        Each job handles at most ``settings.batch_size`` items per call.

        Contract: the caller reports every returned delivery with :meth:`record_deliveries`
        before calling ``tick`` again (the ticker thread does both, in turn). A task being sent
        is still INIT and out of the delivery heap until then, so skipping the report would hold
        it back until the next restart, and a second ``tick`` in between could send a second task
        of the same root.
        """
        self.wakeup.clear()
        batch = self.settings.batch_size

        def step(tx: Tx) -> List[Delivery]:
            promises.timeout_promises(tx, batch)
            schedules.fire_schedules(tx, batch)
            locks.expire_locks(tx, batch)
            tasks.expire_tasks(tx, batch)
            return tasks.select_deliveries(tx, batch)

        return self._atomically(step)

    def record_deliveries(self, results: List[Tuple[Delivery, bool]]) -> None:
        """Report which messages the transport sent (True) or could not send (False)."""

        def step(tx: Tx) -> None:
            for delivery, sent in results:
                tasks.record_delivery(tx, delivery, sent)

        self._atomically(step)

    def counts(self) -> Tuple[Dict[str, int], Dict[str, int]]:
        """Promises by state and tasks by state (state name → count), as of now; O(1)."""
        with self._lock:
            promises = dict(self.state.promise_counts)
            tasks = self.state.task_counts.copy()
        return promises, {TaskState.NAMES[state]: n for state, n in tasks.items()}

    def next_deadline(self) -> Optional[int]:
        """When a background job next has work (ms since the epoch), or None."""
        with self._lock:
            return self.state.next_deadline()

    # ------------------------------------------------------------------ durability

    @classmethod
    def recover(cls, snapshot: Optional[Iterable[Tuple[str, Any]]], records, **kwargs: Any) -> "Resonate":
        """A core rebuilt from a snapshot and the records after it.

        ``snapshot`` is the journal's ``Recovery.snapshot`` (the ``State.snapshot_entries``
        stream, old-format files included), or None for none.
        """
        # Recovery allocates millions of long-lived objects: the cyclic collector would
        # traverse them again and again (a third of replay time) and find nothing to free.
        collecting = gc.isenabled()
        gc.disable()
        try:
            state = State.from_entries(snapshot or ())
            for obj in records:
                state.apply(record_from_json(obj))
        finally:
            if collecting:
                gc.enable()
        return cls(state=state, **kwargs)

    def snapshot(self) -> Tuple[Any, Dict[str, list]]:
        """Begin a journal snapshot under the lock; returns (journal ticket, state copy).

        Stream the copy with ``State.snapshot_entries`` to ``Journal.write_snapshot`` outside the lock.
        """
        with self._lock:
            if self._unjournaled is not None:
                raise InternalError(f"no snapshot: the state holds unjournaled changes ({self._unjournaled})")
            ticket = self._journal.begin_snapshot() if self._journal is not None else None
            return ticket, self.state.snapshot()
