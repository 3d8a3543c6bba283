"""The Resonate state machine inside your program: no NATS, no server, one Client API.

``Client(transport=LocalTransport(core))`` sends each request straight into a ``Resonate`` core
in this process, through the same request and reply path a server uses; the methods, results
and errors are those of a Client of a server over NATS (see embedded_server.py), so code
written against one runs against the other. The core runs the eighteen operations on an
in-memory state guarded by one lock, so any thread may call it. Time comes from a clock you
choose: here a FakeClock, given to both the core and the client, so "1h" means an hour of the
fake clock and the timeout below happens when we say so. (For durability across restarts, run
a ``resonate_sync.Server`` with a ``store_path``; see embedded_server.py.)

Run: python examples/embedded_core.py
"""

from resonate_sync import AlreadyExists, Client, LocalTransport, NotFound, Resonate
from resonate_sync.core import FakeClock


def outcome(created: bool) -> str:
    return "CREATED" if created else "OK (nothing changed)"


def main() -> None:
    clock = FakeClock()  # starts at 2023-11-14T22:13:20Z, moves only when told
    core = Resonate(clock)
    with Client(transport=LocalTransport(core), clock=clock) as client:
        # A promise: created once, replayed with the same idempotency key, conflicting without one.
        promise, created = client.promises_create("order-1", "1h", b'{"qty": 3}', idempotency_key="order-1/create")
        print(f"create order-1: {outcome(created)} state={promise.state}")
        _, created = client.promises_create("order-1", "1h", idempotency_key="order-1/create")
        print(f"create order-1 again with its key: {outcome(created)}")
        try:
            client.promises_create("order-1", "1h")
        except AlreadyExists as error:
            print(f"create order-1 without the key: {error.code} {error.message}")

        # Complete it; the value's bytes come back as they went in.
        promise, created = client.promises_resolve("order-1", b"shipped")
        print(f"resolve order-1: {outcome(created)} value={promise.value.raw!r}")

        # Timeouts are lazy and use the injected clock: move it past the deadline and read.
        client.promises_create("order-2", "1h")
        clock.advance(3_600_000)
        print(f"order-2 after an hour: {client.promises_read('order-2').state}")

        try:
            client.promises_read("order-3")
        except NotFound as error:
            print(f"read order-3: {error.code} {error.message}")

        # A promise with a router tag gets an invoke task; createtask claims it for us at once.
        _, task, _ = client.promises_createtask("job-1", "1h", "worker-1", task_ttl="1m",
                                                tags={"resonate:invoke": "poll://any@workers"})  # fmt: skip
        print(f"createtask job-1: task {task.id} counter={task.counter} claimed by {task.process_id}")
        # Resolving the root promise completes its task in the same step, so completing the task
        # afterwards finds it completed and changes nothing.
        client.promises_resolve("job-1")
        _, created = client.tasks_complete(task.id, task.counter)
        print(f"resolve job-1, then complete {task.id}: {outcome(created)} (resolving completed it)")

        # Locks: one holder at a time.
        client.locks_acquire("inventory", "exec-a", "worker-1", ttl="30s")
        extended = client.locks_heartbeat("worker-1")
        print(f"lock inventory held by exec-a; a heartbeat of worker-1 extended {extended} lock")
        client.locks_release("inventory", "exec-a")

        completed = client.promises_search_all("*", states=["RESOLVED", "REJECTED"])
        print("completed promises, newest first:", ", ".join(f"{p.id}={p.state}" for p in completed))


if __name__ == "__main__":
    main()
