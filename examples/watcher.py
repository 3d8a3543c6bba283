"""A watcher: prints every promise that settles, from the server's promise events (nats-py).

Start the server with events on: ``resonate dev --events-subject resonate.events``. It then
publishes each promise state change, once it is durable, to
``resonate.events.promises.<state>.<id token>`` with the promise as ``promises.read`` returns
it. This watcher subscribes to ``resonate.events.promises.>`` and prints one line for each
promise that leaves PENDING::

    RESOLVED order.1 value 'shipped'
    REJECTED_TIMEDOUT order.2

The id comes from the subject's last token (``parse_event_subject`` decodes it; an id too long
for a subject has a digest token instead, and then only the body names it). Events are
at-most-once notifications: a watcher that was not connected misses what happened meanwhile.
A program that must act on a settlement registers a subscription (``promises.subscribe``) or
reads the promise.

Run: python examples/watcher.py [--count N]   (N settled promises, then exit; default: forever)
It connects to ``RESONATE_API_NATS_ADDR`` (default nats://localhost:4222) and watches
``RESONATE_EVENTS_SUBJECT`` (default resonate.events).
"""

import argparse
import asyncio
import base64
import json
import os

import nats

from resonate_sync.events import parse_event_subject


def describe(subject: str, body: bytes) -> str:
    """One line for a settled promise: its state, id and value (text if it is UTF-8)."""
    state, promise_id = parse_event_subject(subject)
    promise = json.loads(body)["promise"]
    if promise_id is None:  # a digest token: the id was too long for the subject
        promise_id = promise["id"]
    line = f"{state} {promise_id}"
    data = promise.get("value", {}).get("data")
    if data:
        raw = base64.b64decode(data)
        try:
            line += f" value {raw.decode()!r}"
        except UnicodeDecodeError:
            line += f" value of {len(raw)} bytes"
    return line


async def watch(addr: str, prefix: str, count: int) -> None:
    nc = await nats.connect(addr, name="example-watcher")
    settled = 0
    done = asyncio.Event()

    async def on_event(msg) -> None:
        nonlocal settled
        if msg.subject.startswith(f"{prefix}.promises.pending."):
            return  # created, not settled
        print(describe(msg.subject, msg.data), flush=True)
        settled += 1
        if count and settled >= count:
            done.set()

    await nc.subscribe(f"{prefix}.promises.>", cb=on_event)
    await nc.flush()
    print(f"watching {prefix}.promises.>", flush=True)
    try:
        await done.wait()
    finally:
        await nc.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description="Print every promise that settles.")
    parser.add_argument("--count", type=int, default=0, help="exit after this many settled promises (0: never)")
    args = parser.parse_args()
    addr = os.environ.get("RESONATE_API_NATS_ADDR") or "nats://localhost:4222"
    prefix = os.environ.get("RESONATE_EVENTS_SUBJECT") or "resonate.events"
    try:
        asyncio.run(watch(addr, prefix, args.count))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
