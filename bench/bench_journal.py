"""Journal benchmark: append+wait throughput and replay cost. A script that prints numbers, not a test.

Why: the server replies only after ``wait_durable``, so journal throughput bounds request
throughput, and replay time bounds restart time. Measures:

- append+wait_durable throughput with fsync "always" and "never", from 1 and 16 threads that
  share a state lock the way the core does (append under it, wait outside it), with the
  records each fsync covered on average (the group-commit factor);
- replay of a journal of ``--records`` records (default 1,000,000) in a fresh child process:
  seconds to open + iterate, the child's peak RSS (ru_maxrss, next to a child that only
  imports), and, in a second child, the tracemalloc peak of Python allocations.

Usage::

    python bench/bench_journal.py [--seconds 3] [--records 1000000] [--dir /tmp]
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resonate_sync.journal import Journal  # noqa: E402


def promise_record(n: int) -> dict:
    """A record shaped like the core's promise creation (about 250 bytes as a line)."""
    return {
        "op": "promise.create",
        "id": f"bench/promise-{n:09d}",
        "state": "PENDING",
        "timeout": 1_735_689_600_000 + n,
        "param": {"headers": {"h": "v"}, "data": "eyJhbW91bnQiOjQyfQ=="},
        "tags": {"resonate:invoke": "poll://any@default"},
        "createdOn": 1_735_689_500_000 + n,
    }


def run_threads(worker, threads: int) -> float:
    """Run ``worker(index)`` on ``threads`` threads at once; the seconds until all returned."""
    started = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return time.perf_counter() - started


def throughput(directory: str, fsync: str, threads: int, seconds: float) -> dict:
    """Append one record and wait for it, in a loop, from ``threads`` threads for ``seconds``."""
    path = os.path.join(directory, f"throughput-{fsync}-{threads}")
    journal = Journal(path, fsync=fsync, snapshot_every=10**9)
    journal.open()
    state_lock = threading.Lock()
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def worker(index: int) -> None:
        n = 0
        while time.perf_counter() < deadline:
            with state_lock:
                ticket = journal.append([promise_record(index * 10**8 + n)])
            journal.wait_durable(ticket)
            n += 1
        counts[index] = n

    elapsed = run_threads(worker, threads)
    fsyncs = journal.fsync_count
    journal.close()
    shutil.rmtree(path)
    total = sum(counts)
    return {
        "fsync": fsync,
        "threads": threads,
        "ops_per_s": total / elapsed,
        "records_per_fsync": total / fsyncs if fsyncs else None,
    }


def build_journal(path: str, records: int) -> float:
    """Write ``records`` records in batches of 1000 (fsync never; closed with one fsync)."""
    started = time.perf_counter()
    journal = Journal(path, fsync="never", snapshot_every=10**12)
    journal.open()
    for start in range(0, records, 1000):
        batch = [[promise_record(n)] for n in range(start, min(start + 1000, records))]
        ticket = 0
        for records_of_one_call in batch:
            ticket = journal.append(records_of_one_call)
        journal.wait_durable(ticket)
    journal.close()
    return time.perf_counter() - started


def replay_child(path: str, mode: str) -> None:
    """Child process body: open + iterate the journal, print JSON with time and memory."""
    if mode == "tracemalloc":
        import tracemalloc

        tracemalloc.start()
    started = time.perf_counter()
    count = 0
    if mode != "baseline":
        journal = Journal(path)
        recovery = journal.open()
        for _ in recovery.records:
            count += 1
        journal.close()
    result = {
        "seconds": time.perf_counter() - started,
        "records": count,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if mode == "tracemalloc":
        result["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    print(json.dumps(result))


def run_child(path: str, mode: str) -> dict:
    output = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--replay-child", path, "--mode", mode],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput run")
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the replay journal")
    parser.add_argument("--dir", default=None, help="where to put temporary journals (default: system temp)")
    parser.add_argument("--replay-child", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="replay", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay_child:
        replay_child(args.replay_child, args.mode)
        return

    directory = tempfile.mkdtemp(prefix="bench-journal-", dir=args.dir)
    try:
        print(f"python {sys.version.split()[0]}, journals in {directory}")
        print(f"\nappend + wait_durable, one 1-record batch per call, {args.seconds:g} s each")
        print(f"{'fsync':>7} {'threads':>7} {'ops/s':>10} {'records/fsync':>14}")
        rows = {}
        for fsync in ("always", "never"):
            for threads in (1, 16):
                row = throughput(directory, fsync, threads, args.seconds)
                rows[fsync, threads] = row["ops_per_s"]
                per_fsync = row["records_per_fsync"]
                print(
                    f"{fsync:>7} {threads:>7} {row['ops_per_s']:>10,.0f} "
                    f"{'-' if per_fsync is None else f'{per_fsync:.1f}':>14}"
                )
        for threads in (1, 16):
            ratio = rows["always", threads] / rows["never", threads]
            print(f"always/never throughput with {threads} thread(s): {ratio:.2f}")

        path = os.path.join(directory, "replay")
        build_seconds = build_journal(path, args.records)
        size = sum(entry.stat().st_size for entry in os.scandir(path))
        print(f"\nreplay of {args.records:,} records ({size / 2**20:.0f} MiB, built in {build_seconds:.1f} s)")
        baseline = run_child(path, "baseline")
        replay = run_child(path, "replay")
        traced = run_child(path, "tracemalloc")
        assert replay["records"] == traced["records"] == args.records, (replay, traced)
        print(f"open + iterate: {replay['seconds']:.2f} s ({args.records / replay['seconds']:,.0f} records/s)")
        print(
            f"peak RSS: {replay['maxrss_mib']:.1f} MiB "
            f"(a child that only imports: {baseline['maxrss_mib']:.1f} MiB)"
        )
        print(
            f"tracemalloc peak: {traced['tracemalloc_peak_mib']:.2f} MiB "
            f"(that run took {traced['seconds']:.2f} s under tracing)"
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
