"""A worker: the server sends it a task; it claims it, heartbeats, and completes the promise and the task.

What it does, against a running server (``resonate dev``):

1. subscribes to the NATS subject ``workers``;
2. creates a promise tagged ``resonate:invoke`` = ``nats://workers``: the server creates the
   promise's invoke task and publishes ``{"type": "invoke", "task": {…}, "href": {…}}`` there;
3. on that message, claims the task (``tasks.claim`` with the message's id and counter) with a
   lease of 30 s;
4. heartbeats (``tasks.heartbeat``), as work that outlasts the lease must;
5. resolves the promise, then completes the task.

Any NATS client can receive the messages (nats-py, the ``nats`` CLI); this one uses the
connection ``resonate_sync.Client`` is built on, so that it needs nothing else installed. Each
run creates a new promise (``job-<random>``), so the example can run again and again.

Run, with ``resonate dev`` running: python examples/worker.py
It connects where the ``resonate`` commands do: ``RESONATE_API_NATS_ADDR`` (default
nats://localhost:4222), ``RESONATE_API_NATS_SUBJECT`` (default resonate.server).
"""

import json
import os
import queue
import time
import uuid

from resonate_sync import Client
from resonate_sync.transport import Connection

WORKERS = "workers"


def invoke_message(inbox: "queue.Queue", promise_id: str, timeout: float = 10.0) -> dict:
    """The task of the first invoke message for ``promise_id``; other messages are not this example's."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = inbox.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise SystemExit(f"no invoke message for {promise_id} on {WORKERS!r} within {timeout:g} s") from None
        body = json.loads(msg.payload)
        if body.get("type") == "invoke" and body["task"]["rootPromiseId"] == promise_id:
            return body["task"]


def main() -> None:
    addr = os.environ.get("RESONATE_API_NATS_ADDR") or "nats://localhost:4222"
    subject = os.environ.get("RESONATE_API_NATS_SUBJECT") or "resonate.server"
    promise_id, process_id = f"job-{uuid.uuid4().hex[:8]}", f"worker-{os.getpid()}"
    inbox: "queue.Queue" = queue.Queue()

    messages = Connection(addr, name="example-worker")
    messages.subscribe(WORKERS, callback=inbox.put)
    messages.connect()
    messages.flush()  # the subscription is in place before the server sends the task
    try:
        with Client(addr, subject) as client:
            tags = {"resonate:invoke": f"nats://{WORKERS}"}
            client.promises_create(promise_id, "1h", param=b'{"report": "daily"}', tags=tags, idempotency_key=promise_id)
            print(f"created promise {promise_id}; its task goes to nats://{WORKERS}")

            task = invoke_message(inbox, promise_id)
            task_id, counter = task["id"], task["counter"]
            print(f"received invoke task {task_id} (counter {counter})")

            claim = client.tasks_claim(task_id, counter, process_id, ttl="30s")
            print(f"claimed {task_id} for {process_id}: param {claim.root_promise.param.raw.decode()}")

            extended = client.tasks_heartbeat(process_id)
            print(f"heartbeat: {extended} task of {process_id} extended")

            # The promise first: were the worker to crash between the two, a completed task
            # would leave the promise pending with nothing left to finish it.
            promise, _ = client.promises_resolve(promise_id, value=b"report ready", idempotency_key=f"{promise_id}/done")
            print(f"resolved {promise_id}: {promise.state} with {promise.value.raw.decode()!r}")
            _, created = client.tasks_complete(task_id, counter)
            print(f"completed task {task_id}" + ("" if created else " (resolving its promise had completed it already)"))
    finally:
        messages.close()
    print("done")


if __name__ == "__main__":
    main()
