"""Lock operations (PROTOCOL.md 3.12–3.14, 9) and the lock expiry job.

A lock is keyed by ``resourceId`` only. Acquire by the holding execution refreshes it; by
another execution it is refused (403) until the sweeper deleted the expired row, even when
``expiresAt`` has passed — exactly as the Go server behaves.
"""

import attrs

from ..errors import ResonateError, Status
from ..models import (
    AcquireLockRequest,
    DeleteLock,
    EmptyResponse,
    HeartbeatLocksRequest,
    Lock,
    LockResponse,
    LocksAffectedResponse,
    PutLock,
    ReleaseLockRequest,
)
from .common import CoreSettings, Result, clamp_add, require, require_non_negative
from .state import Tx


def validate_acquire(req: AcquireLockRequest, settings: CoreSettings) -> None:
    require(req.resource_id, "resourceId")
    require(req.execution_id, "executionId")
    require(req.process_id, "processId")
    require_non_negative(req.ttl, "ttl")


def validate_release(req: ReleaseLockRequest, settings: CoreSettings) -> None:
    require(req.resource_id, "resourceId")
    require(req.execution_id, "executionId")


def validate_heartbeat(req: HeartbeatLocksRequest, settings: CoreSettings) -> None:
    require(req.process_id, "processId")


def acquire(tx: Tx, req: AcquireLockRequest) -> Result:
    held = tx.state.locks.get(req.resource_id)
    if held is not None and held.execution_id != req.execution_id:
        raise ResonateError.from_status(Status.LOCK_ALREADY_ACQUIRED)
    lock = Lock(
        resource_id=req.resource_id,
        execution_id=req.execution_id,
        process_id=req.process_id,
        ttl=req.ttl,
        expires_at=clamp_add(tx.now, req.ttl),
    )
    tx.put(PutLock(lock))
    return Result(Status.CREATED, LockResponse(lock))


def release(tx: Tx, req: ReleaseLockRequest) -> Result:
    held = tx.state.locks.get(req.resource_id)
    if held is None or held.execution_id != req.execution_id:
        raise ResonateError.from_status(Status.LOCK_NOT_FOUND)
    tx.put(DeleteLock(req.resource_id))
    return Result(Status.NO_CONTENT, EmptyResponse())


def heartbeat(tx: Tx, req: HeartbeatLocksRequest) -> Result:
    resources = tx.state.locks_of(req.process_id)
    for resource_id in resources:
        lock = tx.state.locks[resource_id]
        tx.put(PutLock(attrs.evolve(lock, expires_at=clamp_add(tx.now, lock.ttl))))
    return Result(Status.OK, LocksAffectedResponse(len(resources)))


def expire_locks(tx: Tx, batch: int) -> int:
    """Delete up to ``batch`` locks whose ``expiresAt <= now``."""
    done = 0
    for resource_id in tx.state.lock_expiry.drain_due(tx.now, batch):
        tx.put(DeleteLock(resource_id))
        done += 1
    return done
