"""Where a request's CPU goes inside the server, stage by stage, in process (no NATS).

``api.handle`` runs: decode the envelope JSON → structure the payload (cattrs) → build the
reply metadata → ``core.execute`` (validate, lock, handler, journal records) → unstructure the
response (cattrs) → encode the reply JSON. This script runs each stage as its own loop over
prepared inputs and reports CPU microseconds per request (``time.process_time``, so other
processes on a busy machine do not count), plus:

- how long ``core.execute`` holds the state lock (the serial part: at most 1/hold ops/s);
- what a journal adds to ``execute`` for writes: ``record_to_json`` alone (a journal sink
  that drops records) and a real ``Journal`` with fsync "never" (encoding, CRC, write).

The cores hold promises to what a reply of ``--max-payload`` bytes can carry, as a server
connected to NATS does (default 1 MiB; 0 = no limit, the in-process default).

Usage::

    python bench/breakdown.py [--n 20000] [--rounds 3] [--max-payload 1048576]

Stages use private helpers of ``resonate_sync.api.envelope``; if those change, fix this file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Callable, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resonate_sync.api import envelope as env  # noqa: E402
from resonate_sync.api import handle  # noqa: E402
from resonate_sync.api.operations import ROUTES  # noqa: E402
from resonate_sync.core import CoreSettings, Resonate  # noqa: E402
from resonate_sync.core.sizes import promise_limit  # noqa: E402
from resonate_sync.journal import Journal  # noqa: E402
from resonate_sync.models import structure_request, unstructure  # noqa: E402

FAR_FUTURE_MS = 4_102_444_800_000
PARAM = {"headers": {}, "data": "eyJhbW91bnQiOjQyfQ=="}


def raw(operation: str, payload: dict) -> bytes:
    return json.dumps({"operation": operation, "payload": payload}, separators=(",", ":")).encode()


class TimedLock:
    """A stand-in for the core's lock that adds up how long it was held."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.held = 0.0
        self._since = 0.0

    def __enter__(self) -> None:
        self._lock.acquire()
        self._since = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.held += time.perf_counter() - self._since
        self._lock.release()


class DroppingJournal:
    """A journal sink that encodes records and forgets them: isolates record_to_json and encoding."""

    encode = staticmethod(Journal.encode)

    def append_encoded(self, raws: list) -> int:
        return 1

    def wait_durable(self, ticket: int, timeout: float = None) -> None:
        return None


def cpu_us(fn: Callable[[], object], n: int) -> float:
    started = time.process_time()
    fn()
    return (time.process_time() - started) / n * 1e6


def requests_for(op: str, n: int, tag: str) -> List[bytes]:
    if op == "promises.create":
        return [raw(op, {"id": f"{tag}/{i}", "timeout": FAR_FUTURE_MS, "param": PARAM}) for i in range(n)]
    if op == "promises.read":
        return [raw(op, {"id": f"{tag}/{i}"}) for i in range(n)]
    if op == "promises.complete":
        return [raw(op, {"id": f"{tag}/{i}", "state": "RESOLVED", "value": PARAM}) for i in range(n)]
    if op == "promises.search":
        return [raw(op, {"id": f"{tag}/{i % 1000}*", "limit": 10}) for i in range(n)]
    if op == "tasks.claim":
        return [raw(op, {"id": f"__invoke:{tag}/{i}", "counter": 1, "processId": "p", "ttl": 600_000}) for i in range(n)]
    if op == "tasks.complete":
        return [raw(op, {"id": f"__invoke:{tag}/{i}", "counter": 1}) for i in range(n)]
    if op == "locks.acquire":
        return [raw(op, {"resourceId": f"{tag}/{i}", "executionId": "e", "processId": "p", "ttl": 600_000}) for i in range(n)]
    if op == "locks.release":
        return [raw(op, {"resourceId": f"{tag}/{i}", "executionId": "e"}) for i in range(n)]
    raise ValueError(op)


def stages(core: Resonate, op_name: str, raws: List[bytes]) -> dict:
    """CPU µs per request of each stage of handle(), run as separate loops; executes the op."""
    n = len(raws)
    route = ROUTES[op_name]
    op = route.operation
    out = {}
    envelopes: list = []
    out["decode"] = cpu_us(lambda: envelopes.extend(env._decode_envelope(r) for r in raws), n)
    requests: list = []
    out["structure"] = cpu_us(lambda: requests.extend(structure_request(e["payload"], op.request_type) for e in envelopes), n)
    metas: list = []
    out["metadata"] = cpu_us(lambda: metas.extend(env._metadata(e, route.kernel_name) for e in envelopes), n)
    lock = TimedLock()
    core._lock = lock
    results: list = []
    out["execute"] = cpu_us(lambda: results.extend(core.execute(op, q, m) for q, m in zip(requests, metas)), n)
    core._lock = threading.Lock()
    out["lock_held"] = lock.held / n * 1e6  # wall time, measured inside the timed execute loop
    payloads: list = []
    out["unstructure"] = cpu_us(lambda: payloads.extend(unstructure(r.payload) for r in results), n)
    encode = env._encode
    out["encode"] = cpu_us(
        lambda: [
            encode({"success": True, "response": {"Status": int(r.status), "Metadata": m, "Payload": p}}).encode()
            for r, m, p in zip(results, metas, payloads)
        ],
        n,
    )
    return out


def scenario(n: int, journal_dir: str, rounds: int, max_payload: int) -> dict:
    """For each op, the best (least CPU) of ``rounds`` rounds of every stage, and handle() whole."""
    sequence = ["promises.create", "promises.read", "promises.search", "promises.complete",
                "tasks.claim", "tasks.complete", "locks.acquire", "locks.release"]  # fmt: skip
    best: dict = {}
    for round_ in range(rounds):
        for label, make_journal in (("memory", lambda: None), ("drop", DroppingJournal), ("never", "never")):
            if make_journal == "never":
                journal = Journal(os.path.join(journal_dir, f"j{round_}"), fsync="never", snapshot_every=10**12)
                journal.open()
            else:
                journal = make_journal()
            settings = CoreSettings(max_promise_bytes=promise_limit(max_payload) if max_payload else 0)
            core = Resonate(journal=journal, settings=settings)
            whole = Resonate(journal=None, settings=settings) if label == "memory" else None
            tag = f"r{round_}"
            # promises for the task ops: tagged so each create makes an invoke task
            tagged = [raw("promises.create", {"id": f"{tag}/{i}", "timeout": FAR_FUTURE_MS, "param": PARAM,
                                                 "tags": {"resonate:invoke": "nats://nobody"}}) for i in range(n)]  # fmt: skip
            for op_name in sequence:
                prefix = f"{tag}/c" if op_name.startswith("promises") else tag
                raws = requests_for(op_name, n, prefix)
                if op_name == "tasks.claim":
                    for r in tagged:
                        handle(core, r)
                        if whole is not None:
                            handle(whole, r, max_payload)
                got = stages(core, op_name, raws)
                if whole is not None:
                    got["handle"] = cpu_us(lambda: [handle(whole, r, max_payload) for r in raws], n)
                key = (label, op_name)
                if key not in best:
                    best[key] = got
                else:
                    best[key] = {k: min(v, best[key].get(k, v)) for k, v in got.items()}
            if isinstance(journal, Journal):
                journal.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="requests per op and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the least CPU of each stage counts")
    parser.add_argument("--max-payload", type=int, default=1024 * 1024, help="NATS max_payload the replies must fit (0: none)")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="bench-breakdown-")
    try:
        best = scenario(args.n, directory, args.rounds, args.max_payload)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    cols = ["decode", "structure", "metadata", "execute", "unstructure", "encode"]
    print(f"CPU us per request, in process, {args.n:,} requests per op, best of {args.rounds}, "
          f"max_payload {args.max_payload}; load {open('/proc/loadavg').read().split()[:3]}")  # fmt: skip
    print(f"{'op':<18} " + " ".join(f"{c:>11}" for c in cols) + f" {'sum':>7} {'handle()':>9} {'lock held':>9}"
          f" {'+rec_to_json':>12} {'+journal':>9} {'held w/ journal':>15}")  # fmt: skip
    for op_name in ["promises.create", "promises.read", "promises.search", "promises.complete",
                    "tasks.claim", "tasks.complete", "locks.acquire", "locks.release"]:  # fmt: skip
        mem = best[("memory", op_name)]
        drop, never = best[("drop", op_name)], best[("never", op_name)]
        total = sum(mem[c] for c in cols)
        print(f"{op_name:<18} " + " ".join(f"{mem[c]:>11.1f}" for c in cols)
              + f" {total:>7.1f} {mem['handle']:>9.1f} {mem['lock_held']:>9.1f}"
              + f" {drop['execute'] - mem['execute']:>+12.1f} {never['execute'] - mem['execute']:>+9.1f}"
              + f" {never['lock_held']:>15.1f}")  # fmt: skip
    print("lock held: wall us inside the core lock per request (memory core). +rec_to_json: execute's extra CPU "
          "with a journal that drops records; +journal: with a real Journal(fsync='never'); held w/ journal: "
          "lock hold with that journal (record_to_json and Journal.append run under the lock).")


if __name__ == "__main__":
    main()
