"""Baseline responder: the fastest thing our stack can do, to compare the server with.

It is the server's own transport — ``NatsTransport`` (our pynats2 ``Connection``, its reader
thread handing each message straight to one ``ThreadPoolExecutor`` of the configured worker
count) — with a handler that only parses the request JSON and answers a fixed, pre-encoded
promise document. Whatever the server costs beyond this is ours: decoding, validation, the
lock, the state, the journal, encoding.

Usage (``bench/run.py`` starts it in its own process)::

    python bench/baseline.py --url nats://127.0.0.1:4222 --subject bench.baseline

Serves until SIGTERM/SIGINT or ``--max-seconds``, printing ``ready`` once subscribed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resonate_sync.api import BUSY  # noqa: E402
from resonate_sync.config import Config  # noqa: E402
from resonate_sync.transport import NatsTransport, Request  # noqa: E402

# What a promises.create reply looks like (same size and shape as the server's answer).
FIXED_REPLY = json.dumps(
    {
        "success": True,
        "response": {
            "Status": 20100,
            "Metadata": {"id": "00000000-0000-4000-8000-000000000000", "name": "CreatePromise", "protocol": "nats"},
            "Payload": {
                "promise": {
                    "id": "bench/create1/12345",
                    "state": "PENDING",
                    "param": {"headers": {}, "data": "eyJhbW91bnQiOjQyfQ=="},
                    "value": {},
                    "timeout": 4102444800000,
                    "createdOn": 1767225600000,
                }
            },
        },
    },
    separators=(",", ":"),
).encode()


def handler(request: Request) -> None:
    json.loads(request.data)
    request.respond(FIXED_REPLY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--workers", type=int, default=Config().workers, help="executor threads (default: the server's)")
    parser.add_argument("--max-pending", type=int, default=Config().max_pending)
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long whatever happens")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    transport = NatsTransport(
        args.url, args.subject, handler, workers=args.workers, max_pending=args.max_pending, busy_reply=BUSY, name="bench-baseline"
    )
    transport.start()
    print("ready", flush=True)
    try:
        stop.wait(args.max_seconds)
    finally:
        transport.stop(5.0)


if __name__ == "__main__":
    main()
