"""Snapshot benchmark: wall time and peak RSS of writing a snapshot, and of starting from one.

A script that prints numbers, not a test. Three processes, one after the other:

1. the parent builds a journal: ``--workflows`` workflows as ``bench_durability.py`` makes
   them (create with an invoke task, claim, complete: one promise and one task each), then
   ``--promises`` plain creates (one promise each);
2. a **write** child recovers that journal into a ``Server``'s core (``Server._open_core``,
   the start-up path), resets its peak RSS (``/proc/self/clear_refs``), and calls
   ``Server.snapshot()`` on a thread while the main thread samples how late a 10 ms sleep
   wakes up (the longest such lateness is what any other thread, the ticker's say, waited);
3. a **load** child starts from that snapshot (the segment after it is empty) and reports
   its time and its whole peak RSS (``ru_maxrss``: the snapshot load dominates it).

``--code DIR`` runs the children on another checkout's ``resonate_sync`` (a ``git archive``
of an older commit, say), so one script measures before and after. The load child can also
be pointed at an existing store with ``--load-only DIR`` (a snapshot an older version wrote).

Usage::

    python bench/bench_snapshot.py [--workflows 200000] [--promises 0] [--dir /tmp] [--code DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def open_server(store: str):
    from resonate_sync import Config, Server
    from resonate_sync.core import CoreSettings

    server = Server(Config(store_path=store, fsync="never", snapshot_every=10**12))
    server.core = server._open_core(CoreSettings())
    return server


def write_child(store: str) -> dict:
    import resonate_sync

    server = open_server(store)
    promises, tasks = len(server.core.state.promises), len(server.core.state.tasks)
    rss_before = status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # VmHWM := VmRSS, so the peak below is the snapshot's own
    done = threading.Event()
    seconds = [0.0]

    def write() -> None:
        started = time.perf_counter()
        server.snapshot()
        seconds[0] = time.perf_counter() - started
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    late = 0.0
    while not done.is_set():
        asked = time.perf_counter()
        time.sleep(0.01)
        late = max(late, time.perf_counter() - asked - 0.01)
    thread.join()
    peak = status_kib("VmHWM")
    server.journal.close()
    size = sum(e.stat().st_size for e in os.scandir(store) if e.name.startswith("snapshot-"))
    return {
        "code": os.path.dirname(os.path.dirname(resonate_sync.__file__)),
        "promises": promises,
        "tasks": tasks,
        "write_seconds": round(seconds[0], 2),
        "rss_before_mib": round(rss_before / 1024),
        "write_peak_rss_mib": round(peak / 1024),
        "write_peak_over_state_mib": round((peak - rss_before) / 1024),
        "other_thread_max_late_ms": round(late * 1000, 1),
        "snapshot_mib": round(size / 2**20, 1),
    }


def load_child(store: str) -> dict:
    import resonate_sync

    started = time.perf_counter()
    server = open_server(store)
    seconds = time.perf_counter() - started
    promises, tasks = len(server.core.state.promises), len(server.core.state.tasks)
    rss_after = status_kib("VmRSS")
    server.journal.close()
    return {
        "code": os.path.dirname(os.path.dirname(resonate_sync.__file__)),
        "promises": promises,
        "tasks": tasks,
        "load_seconds": round(seconds, 2),
        "load_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_after_load_mib": round(rss_after / 1024),
    }


def build_promises(path: str, count: int) -> None:
    """Append ``count`` plain promise creates (the core's own records) to the journal at ``path``."""
    from resonate_sync.core import Resonate
    from resonate_sync.journal import Journal
    from resonate_sync.models import Value

    journal = Journal(path, fsync="never", snapshot_every=10**12)
    recovery = journal.open()
    core = Resonate.recover(recovery.snapshot, recovery.records, journal=journal)
    data = Value({}, "eyJhbW91bnQiOjQyfQ==")
    for n in range(count):
        core.promises_create(id=f"p/{n:09d}", timeout=4_102_444_800_000, param=data)
    journal.close()


def child(kind: str, store: str, code: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=code) if code else None
    script = "import sys, json; sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2]); import bench_snapshot as b; "
    script += f"print(json.dumps(b.{kind}_child(sys.argv[3])))"
    out = subprocess.run(
        [sys.executable, "-c", script, code or os.path.dirname(HERE), HERE, store],
        check=True, capture_output=True, text=True, env=env,
    ).stdout  # fmt: skip
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workflows", type=int, default=200_000, help="workflows (a promise and a task each)")
    parser.add_argument("--promises", type=int, default=0, help="plain promises on top")
    parser.add_argument("--dir", default=None, help="where the temporary store goes (default: system temp)")
    parser.add_argument("--code", default=None, help="the checkout whose resonate_sync the children run")
    parser.add_argument("--load-only", default=None, help="only the load child, on this existing store")
    parser.add_argument("--keep", action="store_true", help="keep the store (its path is printed)")
    args = parser.parse_args()
    if args.load_only:
        print(json.dumps({"load": child("load", args.load_only, args.code)}))
        return
    sys.path.insert(0, os.path.dirname(HERE))
    sys.path.insert(0, HERE)
    import bench_durability

    workdir = tempfile.mkdtemp(prefix="bench-snapshot-", dir=args.dir)
    store = os.path.join(workdir, "store")
    try:
        started = time.perf_counter()
        if args.workflows:
            bench_durability.build_journal(store, args.workflows * bench_durability.RECORDS_PER_WORKFLOW)
        if args.promises:
            build_promises(store, args.promises)
        result = {"build_seconds": round(time.perf_counter() - started, 1), "store": store if args.keep else None}
        result["write"] = child("write", store, args.code)
        result["load"] = child("load", store, args.code)
        print(json.dumps(result))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
