"""Durable functions with the Resonate Python SDK, on resonate_sync over NATS.

A workflow, run by this process (worker group ``app``), calls ``greet`` on a second worker
process (group ``greeters``) with ``ctx.rpc``, sleeps durably for a second, and returns::

    def workflow(ctx, name):
        greeting = yield ctx.rpc("greet", name).options(target="greeters")
        yield ctx.sleep(1)
        return f"{greeting}, after a durable sleep"

Nothing in it names NATS: ``target="greeters"`` is the SDK's own routing (``poll://any@greeters``),
which the server delivers on the subject ``resonate.recv.greeters``. The sleep is a promise the
server resolves when its timeout passes (tag ``resonate:timeout``); the workflow then resumes.

Needs Python 3.12 or newer and ``pip install 'resonate_sync[sdk]'``. Run, with ``resonate dev``
running: ``python examples/sdk_workflow.py`` (it starts the greeter itself, as
``python examples/sdk_workflow.py greeter``, and stops it at the end). It connects where the
``resonate`` commands do: ``RESONATE_API_NATS_ADDR`` (default nats://localhost:4222),
``RESONATE_API_NATS_SUBJECT`` (default resonate.server), and reads the server's poll prefix
``RESONATE_DELIVERY_POLL_PREFIX`` (default resonate.recv).
"""

import os
import subprocess
import sys
import threading
import uuid

from resonate import Resonate

from resonate_sync.sdk import NatsMessageSource, NatsStore

URL = os.environ.get("RESONATE_API_NATS_ADDR") or "nats://localhost:4222"
SUBJECT = os.environ.get("RESONATE_API_NATS_SUBJECT") or "resonate.server"
PREFIX = os.environ.get("RESONATE_DELIVERY_POLL_PREFIX") or "resonate.recv"


def connect(group: str) -> Resonate:
    """An SDK client whose store and messages go through resonate_sync."""
    return Resonate(store=NatsStore(URL, subject=SUBJECT), message_source=NatsMessageSource(URL, group=group, prefix=PREFIX))


def greet(ctx, name: str) -> str:
    print(f"greeter {os.getpid()}: greeting {name}", flush=True)
    return f"Hello, {name}"


def workflow(ctx, name: str):
    greeting = yield ctx.rpc("greet", name).options(target="greeters")
    yield ctx.sleep(1)
    return f"{greeting}, after a durable sleep"


def serve_greeter() -> None:
    resonate = connect("greeters")
    resonate.register(greet)
    resonate.start()
    print("greeter ready", flush=True)
    threading.Event().wait()  # until killed


def main() -> None:
    greeter = subprocess.Popen([sys.executable, __file__, "greeter"], stdout=subprocess.PIPE, text=True)
    try:
        assert greeter.stdout.readline().strip() == "greeter ready", "the greeter did not start"
        resonate = connect("app")
        resonate.register(workflow)
        run_id = f"hello-{uuid.uuid4().hex[:8]}"
        print(f"running workflow {run_id}", flush=True)
        result = resonate.run(run_id, workflow, "world")
        print(f"result: {result}", flush=True)
        resonate.stop()
    finally:
        greeter.terminate()
        print(greeter.communicate(timeout=10)[0], end="")


if __name__ == "__main__":
    serve_greeter() if sys.argv[1:] == ["greeter"] else main()
