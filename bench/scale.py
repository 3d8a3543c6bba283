"""Scale: memory per stored promise, search latency against store size, journal replay time.

In process, no NATS: every promise goes through ``api.handle`` (the server's own decode →
validate → core → journal path, so stored objects are exactly what the server would keep),
into a ``Resonate`` with a ``Journal`` (fsync "never": the data are the same, only slower
to make durable). Measures:

- RSS per promise: (RSS after ``--promises`` creates − RSS before the first) / promises,
  after ``gc.collect()``; small params (16 bytes of data), no tags, timeouts in 2100;
- promises.search ``needle/*`` (10 matches, limit 10) p50/p99 at a tenth of ``--promises``
  and at ``--promises`` stored;
- replay: a fresh process opens that journal and rebuilds the core
  (``Journal.open`` + ``Resonate.recover``), timed; its RSS per promise is reported too, and
  ``bench/bench_journal.py``'s child times the bare open + iterate of the same journal; then
  the same replay of a journal of as many records made by ``bench/bench_durability.py``
  (whole workflows: create with an invoke task, claim, complete).

Usage::

    python bench/scale.py [--promises 1000000] [--dir /tmp] [--max-seconds 1200]

Prints one JSON object (``bench/run.py`` reads it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

NEEDLES = 10
SEARCH_SAMPLES = 2000
SEARCH_SECONDS = 10.0
FAR_FUTURE_MS = 4_102_444_800_000


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def create_envelope(pid: str, n: int) -> bytes:
    import base64

    data = base64.b64encode(b"%016d" % n).decode()  # 16 distinct bytes per promise
    payload = {"id": pid, "timeout": FAR_FUTURE_MS, "param": {"data": data}}
    return json.dumps({"operation": "promises.create", "payload": payload}, separators=(",", ":")).encode()


def search_latency(core, handle) -> dict:
    """p50/p99 (ms) of promises.search ``needle/*`` limit 10; bounded in count and time."""
    raw = json.dumps({"operation": "promises.search", "payload": {"id": "needle/*", "limit": 10}}).encode()
    reply = json.loads(handle(core, raw))
    found = len(reply["response"]["Payload"].get("promises", ()))
    assert found == NEEDLES, reply
    samples = []
    deadline = time.perf_counter() + SEARCH_SECONDS
    while len(samples) < SEARCH_SAMPLES and time.perf_counter() < deadline:
        begin = time.perf_counter()
        handle(core, raw)
        samples.append(time.perf_counter() - begin)
    samples.sort()
    return {
        "p50_ms": samples[len(samples) // 2] * 1000,
        "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000,
        "samples": len(samples),
    }


def build(path: str, promises: int, max_seconds: float) -> dict:
    from resonate_sync.api import handle
    from resonate_sync.core import Resonate
    from resonate_sync.journal import Journal

    journal = Journal(path, fsync="never", snapshot_every=10**12)
    journal.open()
    core = Resonate(journal=journal)
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    cpu_started = time.process_time()
    deadline = started + max_seconds
    small_at = max(NEEDLES + 1, promises // 10)
    result: dict = {"promises_target": promises}
    made = 0
    for j in range(NEEDLES):
        handle(core, create_envelope(f"needle/{j}", j))
        made += 1
    while made < promises:
        if made == small_at:
            result["search_small"] = dict(search_latency(core, handle), promises=made)
        if made % 10_000 == 0 and time.perf_counter() > deadline:
            result["stopped_early"] = f"time bound of {max_seconds:g} s reached"
            break
        reply = handle(core, create_envelope(f"bulk/{made:07d}", made))
        if not reply.startswith(b'{"success":true'):
            raise RuntimeError(f"create failed: {reply[:200]!r}")
        made += 1
    result["build_seconds"] = time.perf_counter() - started
    result["build_cpu_seconds"] = time.process_time() - cpu_started
    result["promises"] = made
    gc.collect()
    after = rss_bytes()
    result["rss_before_mib"] = before / 2**20
    result["rss_after_mib"] = after / 2**20
    result["rss_per_promise_bytes"] = (after - before) / made
    result["search_large"] = dict(search_latency(core, handle), promises=made)
    journal.close()
    return result


def replay_child(path: str) -> None:
    """Child process: rebuild the core from the journal, print seconds and RSS as JSON."""
    from resonate_sync.core import Resonate
    from resonate_sync.journal import Journal

    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    cpu_started = time.process_time()
    journal = Journal(path)
    recovery = journal.open()
    core = Resonate.recover(recovery.snapshot, recovery.records, journal=journal)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    gc.collect()
    promises = len(core.state.promises)
    after = rss_bytes()
    journal.close()
    print(json.dumps({
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "promises": promises,
        "rss_per_promise_bytes": (after - before) / max(1, promises),
    }))


def replay(path: str, max_seconds: float) -> dict:
    """Rebuild a core from the journal at ``path`` in a fresh process (see ``replay_child``)."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--replay-child", path],
        check=True, capture_output=True, text=True, timeout=max_seconds,
    ).stdout  # fmt: skip
    return json.loads(out)


def run(promises: int, directory: str | None, max_seconds: float) -> dict:
    workdir = tempfile.mkdtemp(prefix="bench-scale-", dir=directory)
    path = os.path.join(workdir, "journal")
    try:
        result = build(path, promises, max_seconds)
        result["journal_mib"] = sum(e.stat().st_size for e in os.scandir(path)) / 2**20
        result["replay"] = replay(path, max_seconds)
        try:
            import bench_journal  # the journal engineer's open + iterate child, not a copy of it

            raw = bench_journal.run_child(path, "replay")
            result["replay_iterate_seconds"] = raw["seconds"]
        except Exception as exc:  # an optional extra: say why it is missing
            result["replay_iterate_error"] = repr(exc)[:200]
        shutil.rmtree(path, ignore_errors=True)
        try:
            # The durability engineer's journal of the same length made of whole workflows
            # (create with an invoke task, claim, complete: promises and tasks), replayed the same way.
            import bench_durability

            mixed = os.path.join(workdir, "workflows")
            build_seconds, workflows = bench_durability.build_journal(mixed, promises)
            result["replay_workflows"] = dict(replay(mixed, max_seconds), records=workflows * bench_durability.RECORDS_PER_WORKFLOW)
        except Exception as exc:
            result["replay_workflows_error"] = repr(exc)[:200]
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--promises", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None, help="where the temporary journal goes (default: system temp)")
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="bound on the build and on the replay")
    parser.add_argument("--replay-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay_child:
        replay_child(args.replay_child)
        return
    print(json.dumps(run(args.promises, args.dir, args.max_seconds)))


if __name__ == "__main__":
    main()
