"""JetStream store benchmark: appends/s with 64 concurrent appenders. A script that prints numbers, not a test.

Why: a reply waits for its append to be durable, so the store's acknowledged appends/s bound
request throughput. Each appender does what a request does: under a shared state lock, append
one record (a promise creation, ~250 bytes); outside it, wait until durable. Compared in the
same run (ratios against the file journal with fsync "always"):

- file: ``resonate_sync.journal.Journal`` with fsync="always" (group commit);
- jetstream R1: one nats-server (``-js``), default ``sync_interval`` (a PubAck means written to
  the OS, fsynced within 2 min), and again with ``sync_interval: always`` (fsync per write);
- jetstream R3: a 3-node cluster on this machine (a PubAck means stored on 2 of 3 nodes);
- each jetstream row twice: publishing on the store's writer thread (the default) and
  inline in ``append_encoded`` under the state lock (``publish_inline=True``).

Then how fast a store reads those streams back (recovery, and a standby catching up: the same
batched direct gets), and failover with the default 3 s lease: a leader in a child process is killed with SIGKILL
and the time until a standby's ``on_leader`` is measured (``--failovers`` times).

Usage::

    python bench/bench_jetstream_store.py [--seconds 3] [--threads 64] [--rounds 1] [--failovers 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))

from bench_journal import promise_record, run_threads  # noqa: E402
from jetstream_cluster import JetStreamCluster  # noqa: E402

from resonate_sync.journal import Journal  # noqa: E402
from resonate_sync.store.jetstream import JetStreamStore  # noqa: E402
from resonate_sync.transport.connection import Connection  # noqa: E402
from resonate_sync.transport.embedded import EmbeddedNatsServer  # noqa: E402


def drive(store, threads: int, seconds: float) -> Dict[str, float]:
    """``threads`` appenders for ``seconds``: append under a shared lock, wait outside it."""
    state_lock = threading.Lock()
    counts = [0] * threads
    latencies: List[float] = []
    deadline = time.perf_counter() + seconds

    def worker(index: int) -> None:
        n = 0
        mine = []
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            with state_lock:
                ticket = store.append_encoded([store.encode(promise_record(index * 10**8 + n))])
            store.wait_durable(ticket)
            mine.append(time.perf_counter() - started)
            n += 1
        counts[index] = n
        latencies.extend(mine)

    elapsed = run_threads(worker, threads)
    latencies.sort()
    return {
        "appends_s": sum(counts) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else 0.0,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0,
    }


def file_journal(directory: str, threads: int, seconds: float) -> Dict[str, float]:
    path = os.path.join(directory, "journal")
    journal = Journal(path, fsync="always", snapshot_every=10**9)
    journal.open()
    try:
        return drive(journal, threads, seconds)
    finally:
        journal.close()
        shutil.rmtree(path)


def jetstream(url: str, stream: str, replicas: int, inline: bool, threads: int, seconds: float) -> Dict[str, float]:
    conn = Connection(url, name="bench")
    conn.connect()
    store = JetStreamStore(conn, stream=stream, instance="bench", replicas=replicas, snapshot_every=10**9,
                           publish_inline=inline)  # fmt: skip
    leading = threading.Event()
    try:
        store.open()
        store.start(apply=lambda records: None, reload=lambda recovery: None, on_leader=leading.set,
                    on_standby=lambda reason: print(f"  (stepped down: {reason})"))  # fmt: skip
        if not leading.wait(15):
            raise RuntimeError(f"{stream}: never became the leader")
        result = drive(store, threads, seconds)
        result["max_in_flight"] = store.max_in_flight
        return result
    finally:
        store.close()
        conn.close()


def catch_up(url: str, stream: str) -> Dict[str, float]:
    """A new store reads ``stream`` from the start (recovery; a standby tails the same way): records/s."""
    conn = Connection(url, name="bench-reader")
    conn.connect()
    store = JetStreamStore(conn, stream=stream, instance="reader", replicas=3 if stream.startswith("R3") else 1)
    try:
        started = time.perf_counter()
        recovery = store.open()
        count = sum(1 for _ in recovery.records)
        return {"records": count, "per_s": count / (time.perf_counter() - started)}
    finally:
        store.close()
        conn.close()


def child_leader(url: str, stream: str) -> None:
    """In a child process: lead ``stream``, say so on stdout, append now and then until killed."""
    conn = Connection(url, name="bench-doomed")
    conn.connect()
    store = JetStreamStore(conn, stream=stream, instance="doomed")
    store.open()
    leading = threading.Event()
    store.start(apply=lambda records: None, reload=lambda recovery: None, on_leader=leading.set,
                on_standby=lambda reason: None)  # fmt: skip
    leading.wait()
    print("leader", flush=True)
    while True:
        store.wait_durable(store.append_encoded([store.encode(promise_record(0))]))
        time.sleep(0.01)


def failover(url: str, stream: str) -> float:
    """Seconds from SIGKILL of a leading child process to a standby's on_leader (default lease)."""
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child-leader", url, stream],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    conn = Connection(url, name="bench-survivor")
    conn.connect()
    store = JetStreamStore(conn, stream=stream, instance="survivor")
    leading = threading.Event()
    try:
        if child.stdout.readline().strip() != "leader":
            raise RuntimeError("the child never led")
        store.open()
        store.start(apply=lambda records: None, reload=lambda recovery: None, on_leader=leading.set,
                    on_standby=lambda reason: None)  # fmt: skip
        time.sleep(1.0)  # the standby tails for a while, the leader renews
        child.send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        if not leading.wait(30):
            raise RuntimeError("the standby never led")
        return time.perf_counter() - killed
    finally:
        child.kill()
        child.wait()
        store.close()
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--failovers", type=int, default=3)
    parser.add_argument("--child-leader", nargs=2, metavar=("URL", "STREAM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_leader:
        child_leader(*args.child_leader)
        return
    directory = tempfile.mkdtemp(prefix="bench-jetstream-")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))  # fmt: skip
    print(f"{args.threads} appenders, {args.seconds:g} s per row, one ~250-byte record per append\n")
    single = EmbeddedNatsServer(extra_args=["-js", "-sd", os.path.join(directory, "js1")]).start()
    conf = os.path.join(directory, "always.conf")
    with open(conf, "w") as f:
        f.write(f'jetstream {{ store_dir: "{os.path.join(directory, "js-always")}", sync_interval: always }}\n')
    always = EmbeddedNatsServer(extra_args=["-c", conf]).start()
    cluster = JetStreamCluster(os.path.join(directory, "cluster"), size=3)
    rows: List[tuple] = []
    try:
        cases: List[tuple] = [("file journal, fsync always", lambda: file_journal(directory, args.threads, args.seconds))]
        for inline in (False, True):
            how = "inline" if inline else "writer thread"
            cases += [
                (f"jetstream R1, {how}", _js(single.url, "R1", 1, inline, args)),
                (f"jetstream R1 sync always, {how}", _js(always.url, "R1S", 1, inline, args)),
                (f"jetstream R3 (3 nodes), {how}", _js(cluster.urls[0], "R3", 3, inline, args)),
            ]
        for round_ in range(args.rounds):
            for name, run in cases:
                rows.append((round_, name, run()))
        reads = [(name, catch_up(url, stream)) for name, url, stream in (
            ("R1, one node", single.url, "R1T"), ("R3, 3 nodes", cluster.urls[0], "R3T"))]  # fmt: skip
        failovers = [failover(single.url, f"FAIL{n}") for n in range(args.failovers)]
    finally:
        cluster.close()
        always.stop()
        single.stop()
        shutil.rmtree(directory, ignore_errors=True)
    baseline = {r: res["appends_s"] for r, name, res in rows if name.startswith("file")}
    print(f"{'store':40} {'appends/s':>10} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>8} {'in flight':>10}")
    for round_, name, res in rows:
        print(f"{name:40} {res['appends_s']:>10,.0f} {res['appends_s'] / baseline[round_]:>6.2f}x "
              f"{res['p50_ms']:>8.2f} {res['p99_ms']:>8.2f} {res.get('max_in_flight', ''):>10}")  # fmt: skip
    print("\nreading a stream from its start (batched direct gets of 256, as a standby tails):")
    for name, res in reads:
        print(f"  {name:30} {res['records']:>9,} records in {res['records'] / res['per_s']:.2f} s: {res['per_s']:>9,.0f} records/s")
    if failovers:
        print("\nfailover after kill -9 of the leader, lease 3000 ms (R1): "
              + ", ".join(f"{s:.2f} s" for s in failovers) + f"; max {max(failovers):.2f} s")  # fmt: skip


def _js(url: str, stream: str, replicas: int, inline: bool, args) -> Callable[[], Dict[str, float]]:
    return lambda: jetstream(url, f"{stream}{'I' if inline else 'T'}", replicas, inline, args.threads, args.seconds)


if __name__ == "__main__":
    main()
