"""Load generator: one benchmark case against one subject, from its own process (nats-py asyncio).

Keeps ``--inflight`` requests outstanding until ``--count`` requests were sent or ``--seconds``
passed, whichever comes first, and prints one JSON line: requests, seconds, ops/s, p50/p99
latency (ms), and errors by code. It is a separate process so that the client never competes
with the server under test for a GIL; ``bench/run.py`` starts one per case.

Cases (the payloads are the same whoever answers, so the baseline sees the same bytes):

- ``create``: promises.create with unique ids ``<tag>/<i>`` (a small param, no tags).
- ``read``: promises.read of ids spread over a preloaded set (``--ids PREFIX --ids-count K``).
- ``complete``: promises.complete (RESOLVED) of ids ``<ids>/<i>``, i < ``--ids-count``,
  i.e. the promises a ``create`` case made.
- ``search``: promises.search ``<ids>/<group>/*`` with limit 10; each group of the preload
  holds ``GROUP_SIZE`` promises.
- ``task``: tasks.claim then tasks.complete of ``__invoke:<tag>/<i>``; the promises (tagged
  ``resonate:invoke`` with a nats:// receiver nobody listens to) are created first, untimed.
- ``lock``: locks.acquire then locks.release, each in-flight slot on its own resource.
- ``preload``: promises.create of ``<tag>/<group:06d>/<j>`` in groups of ``GROUP_SIZE``
  (setup for read and search; bounded by count and time like every case).

``--encoding msgpack`` sends every request as MessagePack with ``Content-Type:
application/msgpack`` (the same documents, ``data`` still base64 text) instead of JSON.

Usage::

    python bench/loadgen.py --url nats://127.0.0.1:4222 --subject resonate.server \\
        --case create --inflight 64 --count 20000 --seconds 20 --tag run1/create64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter

GROUP_SIZE = 10
SMALL_PARAM = {"headers": {}, "data": "eyJhbW91bnQiOjQyfQ=="}  # base64 of {"amount":42}
FAR_FUTURE_MS = 4_102_444_800_000  # 2100-01-01: nothing times out during a benchmark
NOBODY = "bench.nobody.listens"


ENCODING = "json"  # set by --encoding before any request is built
MSGPACK_HEADERS = {"Content-Type": "application/msgpack"}
SUCCESS = {"json": b'{"success":true', "msgpack": b"\x82\xa7success\xc3"}  # how a success reply starts


def envelope(operation: str, payload: dict) -> bytes:
    document = {"operation": operation, "payload": payload}
    if ENCODING == "msgpack":
        import msgpack

        return msgpack.packb(document)
    return json.dumps(document, separators=(",", ":")).encode()


def decode(reply: bytes) -> dict:
    if ENCODING == "msgpack":
        import msgpack

        return msgpack.unpackb(reply)
    return json.loads(reply)


def preload_id(prefix: str, n: int) -> str:
    return f"{prefix}/{n // GROUP_SIZE:06d}/{n % GROUP_SIZE}"


def create_request(pid: str, tags: dict | None = None) -> bytes:
    payload = {"id": pid, "timeout": FAR_FUTURE_MS, "param": SMALL_PARAM}
    if tags:
        payload["tags"] = tags
    return envelope("promises.create", payload)


class Case:
    """Yields the requests of one in-flight slot; ``next_index`` hands out unique numbers."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.issued = 0

    def next_index(self) -> int:
        index = self.issued
        self.issued += 1
        return index

    def requests(self, slot: int, index: int) -> list[bytes]:
        """The requests of one step (one or two); raises StopIteration when the case has no more."""
        a = self.args
        case = a.case
        if case == "create":
            return [create_request(f"{a.tag}/{index}")]
        if case == "preload":
            return [create_request(preload_id(a.tag, index))]
        if case == "read":
            spread = (index * 7919) % a.ids_count  # a prime stride: every id, not in insertion order
            return [envelope("promises.read", {"id": preload_id(a.ids, spread)})]
        if case == "complete":
            if index >= a.ids_count:
                raise StopIteration
            payload = {"id": f"{a.ids}/{index}", "state": "RESOLVED", "value": SMALL_PARAM}
            return [envelope("promises.complete", payload)]
        if case == "search":
            groups = max(1, a.ids_count // GROUP_SIZE)
            group = (index * 7919) % groups
            return [envelope("promises.search", {"id": f"{a.ids}/{group:06d}/*", "limit": 10})]
        if case == "task":
            if index >= a.ids_count:
                raise StopIteration
            task_id = f"__invoke:{a.tag}/{index}"
            claim = {"id": task_id, "counter": 1, "processId": f"bench-{slot}", "ttl": 600_000}
            return [envelope("tasks.claim", claim), envelope("tasks.complete", {"id": task_id, "counter": 1})]
        if case == "lock":
            lock = {"resourceId": f"{a.tag}/{slot}", "executionId": f"e{slot}"}
            acquire = dict(lock, processId=f"bench-{slot}", ttl=600_000)
            return [envelope("locks.acquire", acquire), envelope("locks.release", lock)]
        raise ValueError(f"unknown case {case!r}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far, from /proc (0.0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def drive(
    nc, subject: str, case: Case, inflight: int, count: int, seconds: float, timeout: float, watch: dict | None = None
) -> dict:
    """Run the slots until ``count`` requests were sent or ``seconds`` passed.

    ``watch`` maps names to pids whose CPU time during the run is reported (the server under
    test, the nats-server): CPU per request is steadier than throughput on a busy machine.
    """
    watch = watch or {}
    watched_before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    latencies: list[float] = []
    errors: Counter = Counter()
    success = SUCCESS[ENCODING]
    headers = MSGPACK_HEADERS if ENCODING == "msgpack" else None
    samples: dict[str, str] = {}
    sent = 0
    started = time.perf_counter()
    cpu_started = time.process_time()
    deadline = started + seconds

    async def slot(number: int) -> None:
        nonlocal sent
        while sent < count and time.perf_counter() < deadline:
            try:
                step = case.requests(number, case.next_index())
            except StopIteration:
                return
            for payload in step:
                sent += 1
                begin = time.perf_counter()
                try:
                    msg = await nc.request(subject, payload, timeout=timeout, headers=headers)
                except Exception as exc:  # a timeout or no responders: count it, keep going
                    errors[type(exc).__name__] += 1
                    samples.setdefault(type(exc).__name__, repr(exc)[:200])
                    continue
                latencies.append(time.perf_counter() - begin)
                reply = msg.data
                if not reply.startswith(success):
                    try:
                        code = str(decode(reply)["error"]["code"])
                    except Exception:
                        code = "unparsable"
                    errors[code] += 1
                    samples.setdefault(code, reply[:200].decode(errors="replace"))

    await asyncio.gather(*(slot(i) for i in range(inflight)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    watched = {name: cpu_seconds(pid) - watched_before[name] for name, pid in watch.items()}
    latencies.sort()
    return {
        "requests": len(latencies),
        "sent": sent,
        "seconds": elapsed,
        "ops_per_s": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": dict(errors),
        "error_samples": samples,
        "issued": case.issued,
        "loadgen_cpu_share": cpu / elapsed if elapsed > 0 else 0.0,
        "cpu_seconds": watched,
    }


async def main_async(args: argparse.Namespace) -> dict:
    import nats

    nc = await nats.connect(args.url, max_reconnect_attempts=0, connect_timeout=5)
    try:
        setup = None
        if args.case == "task":
            # The promises whose invoke tasks the timed part claims; their receiver exists but
            # nobody listens, so the server's deliveries go nowhere and the tasks stay claimable.
            creator = argparse.Namespace(**vars(args))
            creator.case = "create"

            class TaskPromises(Case):
                def requests(self, slot: int, index: int) -> list[bytes]:
                    if index >= args.ids_count:
                        raise StopIteration
                    return [create_request(f"{args.tag}/{index}", {"resonate:invoke": f"nats://{NOBODY}"})]

            setup = await drive(nc, args.subject, TaskPromises(creator), 64, args.ids_count, args.setup_seconds, args.timeout)
        watch = dict(item.split("=", 1) for item in args.watch)
        watch = {name: int(pid) for name, pid in watch.items()}
        result = await drive(nc, args.subject, Case(args), args.inflight, args.count, args.seconds, args.timeout, watch)
        if setup is not None:
            result["setup"] = {k: setup[k] for k in ("requests", "seconds", "errors")}
        return result
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--case", required=True, choices=["create", "preload", "read", "complete", "search", "task", "lock"])
    parser.add_argument("--inflight", type=int, default=1, help="requests outstanding at once (N)")
    parser.add_argument("--count", type=int, default=20_000, help="most requests to send")
    parser.add_argument("--seconds", type=float, default=20.0, help="most seconds to run")
    parser.add_argument("--tag", default="bench", help="prefix of the ids this case creates")
    parser.add_argument("--ids", default="", help="prefix of the ids this case reads (read/complete/search)")
    parser.add_argument("--ids-count", type=int, default=0, help="how many such ids exist (task: how many to create)")
    parser.add_argument("--setup-seconds", type=float, default=120.0, help="most seconds for the task case's setup")
    parser.add_argument("--watch", action="append", default=[], metavar="NAME=PID",
                        help="report this process's CPU seconds during the timed part (repeatable)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout (s)")
    parser.add_argument("--encoding", choices=["json", "msgpack"], default="json", help="how requests are written")
    args = parser.parse_args(argv)
    global ENCODING
    ENCODING = args.encoding
    if args.case in ("read", "complete", "search", "task") and args.ids_count <= 0:
        parser.error(f"--case {args.case} needs --ids-count")
    print(json.dumps(asyncio.run(main_async(args))))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
