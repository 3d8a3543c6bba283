"""A Resonate SDK worker process for test_sdk.py: ``python sdk_worker.py GROUP``.

Connects through resonate_sync.sdk to ``SDK_URL`` / ``SDK_SUBJECT`` / ``SDK_PREFIX``, registers
the functions below, prints ``ready`` and serves until killed. Each function prints what it
does (with this process's pid) so a test can tell which process ran what. No function names a
``nats://`` target: group ``app`` runs the workflows, group ``helpers`` runs ``greet``, reached
with the SDK's own routing (``target="helpers"`` is ``poll://any@helpers``).
"""

import os
import sys
import threading
import time

from resonate import Resonate

from resonate_sync.sdk import NatsMessageSource, NatsStore


def say(*words: object) -> None:
    print(*words, os.getpid(), flush=True)


def greet(ctx, name):
    say("greet", name)
    return f"Hello, {name}"


def workflow(ctx, name):
    """One rpc to a process of group helpers."""
    greeting = yield ctx.rpc("greet", name).options(target="helpers")
    return f"{greeting}!"


def sleeper(ctx, secs):
    say("sleeping", ctx.id)
    yield ctx.sleep(secs)
    say("woke", ctx.id)
    return f"slept {secs}"


def fanout(ctx, n):
    """n rpcs started at once, then awaited in order."""
    handles = []
    for i in range(n):
        handle = yield ctx.begin_rpc("greet", f"n{i}").options(target="helpers")
        handles.append(handle)
    results = []
    for handle in handles:
        results.append((yield handle))
    return results


def approval(ctx, who):
    """Waits for a promise a person resolves (resonate promises resolve approval-<id>)."""
    promise = yield ctx.promise(id=f"approval-{ctx.id}")
    say("waiting", promise.id)
    answer = yield promise
    return f"{who}: {answer}"


def pause(ctx, secs):
    say("pausing", ctx.id)
    time.sleep(secs)
    return secs


def slow(ctx, name, secs):
    """rpc, then a local step long enough to kill the process running it."""
    greeting = yield ctx.rpc("greet", name).options(target="helpers")
    yield ctx.run(pause, secs)
    return f"{greeting} after {secs}"


def scheduled(ctx):
    say("scheduled", ctx.id)
    return "tick"


def main(group: str) -> None:
    url, subject, prefix = os.environ["SDK_URL"], os.environ["SDK_SUBJECT"], os.environ["SDK_PREFIX"]
    resonate = Resonate(
        store=NatsStore(url, subject=subject),
        message_source=NatsMessageSource(url, group=group, prefix=prefix),
        ttl=int(os.environ.get("SDK_TTL", "10")),
    )
    for function in (greet, workflow, sleeper, fanout, approval, pause, slow, scheduled):
        resonate.register(function)
    resonate.start()
    say("ready")
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1])
