"""Builders for the core's unit tests: a core on a fake clock, and promises and tasks brought
into a given state through real operations (never by writing into the state directly).

Internal fields that the wire never shows (a task's state, ``expiresAt``, ``attempt``) are read
from ``core.r.state``; everything else goes through the operations.
"""

import json
from typing import Any, Dict, List, Optional

import attrs

from resonate_sync.api import handle
from resonate_sync.core import CoreSettings, Delivery, FakeClock, Resonate
from resonate_sync.core.tables import ABSENT
from resonate_sync.errors import ResonateError
from resonate_sync.models import Promise, Task, Value
from resonate_sync.models import PromiseState as PS
from resonate_sync.models import TaskState as TS

NOW = 1_700_000_000_000
"""The fake clock's start, ms since the epoch (2023-11-14T22:13:20Z)."""

FAR = 1_893_456_000_000
"""A deadline no test reaches (2030-01-01), ms since the epoch."""

INT64_MAX = 2**63 - 1

PROMISE_STATES = (ABSENT, PS.PENDING, PS.RESOLVED, PS.REJECTED, PS.REJECTED_CANCELED, PS.REJECTED_TIMEDOUT)
COMPLETED_STATES = (PS.RESOLVED, PS.REJECTED, PS.REJECTED_CANCELED, PS.REJECTED_TIMEDOUT)
TASK_STATES = (TS.INIT, TS.ENQUEUED, TS.CLAIMED, TS.COMPLETED, TS.TIMEDOUT)

CREATE_KEY = "create-key"
COMPLETE_KEY = "complete-key"
STORED_VALUE = Value(headers={"stored": "yes"}, data="c3RvcmVk")

ROOT = "root"
LEAF = "leaf"
RESUME_ID = f"__resume:{ROOT}:{LEAF}"
WORKER = "nats://worker"
CLAIM_TTL = 10_000


@attrs.define
class Core:
    """A ``Resonate`` and the fake clock it reads."""

    r: Resonate
    clock: FakeClock

    @property
    def now(self) -> int:
        return self.clock.now()

    def advance(self, ms: int) -> int:
        return self.clock.advance(ms)

    def promise(self, promise_id: str) -> Optional[Promise]:
        """The stored promise, as is (no lazy timeout)."""
        return self.r.state.promises.get(promise_id)

    def task(self, task_id: str) -> Optional[Task]:
        return self.r.state.tasks.get(task_id)

    def tick(self, sent: Optional[bool] = True) -> List[Delivery]:
        """Run the background jobs once; report every selected message as ``sent`` (None: report nothing)."""
        deliveries = self.r.tick()
        if sent is not None:
            self.r.record_deliveries([(d, sent) for d in deliveries])
        return deliveries

    def call(self, operation: str, payload: Any = None, **envelope: Any) -> Dict[str, Any]:
        """One envelope through ``api.handle``, as JSON bytes in and out."""
        request = {"operation": operation, **envelope}
        if payload is not None:
            request["payload"] = payload
        return json.loads(handle(self.r, json.dumps(request).encode()))

    def raw(self, data: bytes) -> Dict[str, Any]:
        return json.loads(handle(self.r, data))


def new_core(**settings: Any) -> Core:
    clock = FakeClock(NOW)
    return Core(Resonate(clock, settings=CoreSettings(**settings)), clock)


def error_of(call, *args: Any, **kwargs: Any) -> ResonateError:
    """The ResonateError a core call raises (fails the test if it succeeds)."""
    try:
        result = call(*args, **kwargs)
    except ResonateError as exc:
        return exc
    raise AssertionError(f"expected an error, got {result!r}")


def other_completed(state: str) -> str:
    """A completed state different from ``state``."""
    return PS.REJECTED if state == PS.RESOLVED else PS.RESOLVED


def promise_in(core: Core, state: str, promise_id: str = "p", **create: Any) -> Optional[Promise]:
    """A promise in ``state``, created with key CREATE_KEY and completed (if at all) with COMPLETE_KEY."""
    if state == ABSENT:
        return None
    fields = {"timeout": FAR, "idempotency_key": CREATE_KEY, **create}
    core.r.promises_create(id=promise_id, **fields)
    if state != PS.PENDING:
        core.r.promises_complete(id=promise_id, state=state, value=STORED_VALUE, idempotency_key=COMPLETE_KEY)
    return core.promise(promise_id)


def resume_task(core: Core, *, timeout: int = FAR, recv: Any = WORKER) -> Task:
    """An INIT resume task ``__resume:root:leaf``: root and leaf pending, then the leaf resolved."""
    core.r.promises_create(id=ROOT, timeout=FAR)
    core.r.promises_create(id=LEAF, timeout=FAR)
    core.r.promises_callback(promise_id=LEAF, root_promise_id=ROOT, recv=recv, timeout=timeout)
    core.r.promises_complete(id=LEAF, state=PS.RESOLVED)
    return core.task(RESUME_ID)


def task_in(core: Core, state: int) -> Task:
    """The resume task brought into ``state`` by real operations and ticks."""
    if state == TS.TIMEDOUT:
        resume_task(core, timeout=core.now + 1_000)
        core.advance(1_000)
        core.tick()
    else:
        resume_task(core)
    if state == TS.ENQUEUED:
        core.tick(sent=True)
    if state in (TS.CLAIMED, TS.COMPLETED):
        core.r.tasks_claim(id=RESUME_ID, counter=1, process_id="worker", ttl=CLAIM_TTL)
    if state == TS.COMPLETED:
        core.r.tasks_complete(id=RESUME_ID, counter=1)
    task = core.task(RESUME_ID)
    assert task.state == state, f"situation builder reached {TS.NAMES[task.state]}, not {TS.NAMES[state]}"
    return task


def invoke_tags(recv: str = WORKER, **more: str) -> Dict[str, str]:
    return {"resonate:invoke": recv, **more}
