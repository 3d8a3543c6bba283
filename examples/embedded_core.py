"""The Resonate state machine inside your program: no NATS, no server, no JSON.

``Resonate`` runs the eighteen operations on an in-memory state guarded by one lock, so any
thread may call it. Each call returns ``Result(status, payload)`` or raises a ResonateError
subclass. Time comes from a clock you choose: here a FakeClock, so the timeout below happens
when we say so instead of an hour from now. (For durability across restarts, run a
``resonate_sync.Server`` with a ``store_path``; see embedded_server.py.)

Run: python examples/embedded_core.py
"""

from resonate_sync import AlreadyExists, NotFound, Resonate
from resonate_sync.core import FakeClock
from resonate_sync.models import Value

HOUR = 3_600_000  # ms


def main() -> None:
    clock = FakeClock()  # starts at 2023-11-14T22:13:20Z, moves only when told
    core = Resonate(clock)

    # A promise: created once, replayed with the same idempotency key, conflicting without one.
    created = core.promises_create(id="order-1", timeout=clock.now() + HOUR, param=Value.of(b'{"qty": 3}'),
                                   idempotency_key="order-1/create")  # fmt: skip
    print(f"create order-1: {created.status.name} state={created.payload.promise.state}")
    replay = core.promises_create(id="order-1", timeout=clock.now() + HOUR, idempotency_key="order-1/create")
    print(f"create order-1 again with its key: {replay.status.name} (nothing changed)")
    try:
        core.promises_create(id="order-1", timeout=clock.now() + HOUR)
    except AlreadyExists as error:
        print(f"create order-1 without the key: {error.code} {error.message}")

    # Complete it; the value's bytes come back as they went in.
    done = core.promises_complete(id="order-1", state="RESOLVED", value=Value.of(b"shipped"))
    print(f"resolve order-1: {done.status.name} value={done.payload.promise.value.raw!r}")

    # Timeouts are lazy and use the injected clock: move it past the deadline and read.
    core.promises_create(id="order-2", timeout=clock.now() + HOUR)
    clock.advance(HOUR)
    print(f"order-2 after an hour: {core.promises_read(id='order-2').payload.promise.state}")

    try:
        core.promises_read(id="order-3")
    except NotFound as error:
        print(f"read order-3: {error.code} {error.message}")

    # A promise with a router tag gets an invoke task; createtask claims it for us at once.
    claimed = core.promises_createtask(id="job-1", timeout=clock.now() + HOUR, task_process_id="worker-1",
                                       task_ttl=60_000, tags={"resonate:invoke": "poll://any@workers"})  # fmt: skip
    task = claimed.payload.task
    print(f"createtask job-1: task {task.id} counter={task.counter} claimed by {task.process_id}")
    # Resolving the root promise completes its task in the same step, so completing the task
    # afterwards answers OK (already completed) rather than CREATED.
    core.promises_complete(id="job-1", state="RESOLVED")
    completed = core.tasks_complete(id=task.id, counter=task.counter)
    print(f"resolve job-1, then complete {task.id}: {completed.status.name} (resolving completed it)")

    # Locks: one holder at a time.
    core.locks_acquire(resource_id="inventory", execution_id="exec-a", process_id="worker-1", ttl=30_000)
    extended = core.locks_heartbeat(process_id="worker-1").payload.locks_affected
    print(f"lock inventory held by exec-a; a heartbeat of worker-1 extended {extended} lock")
    core.locks_release(resource_id="inventory", execution_id="exec-a")

    page = core.promises_search(id="*", states=["RESOLVED", "REJECTED"]).payload
    print("completed promises, newest first:", ", ".join(f"{p.id}={p.state}" for p in page.promises))


if __name__ == "__main__":
    main()
