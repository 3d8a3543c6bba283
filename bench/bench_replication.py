"""The JetStream store against the file journal, failover time, and recovery from the stream (issue 12).

One command::

    .venv/bin/python bench/bench_replication.py [--quick]

Three parts, each on loopback:

1. **Throughput**: `resonate serve`, promises.create at N=64 in flight (``bench/loadgen.py``, its own
   process), on three stores in the same run: the file journal (``--fsync always``), the JetStream
   store on one nats-server (R1) and on a three-node cluster (R3, the server and the load on node 0).
   ``--rounds`` runs each, alternating, and the median counts. Targets: R1 >= 0.5x file, R3 >= 0.3x.
   The nats-servers run JetStream's default ``sync_interval`` (fsync in the background): the file
   journal fsyncs each group commit, so the comparison favours JetStream on durability per ack.
2. **Failover**: two `resonate serve` replicas of one R3 stream (nodes 0 and 1) with the default
   lease; each round kills the leader with -9 and times the first successful reply (a read) to a
   client on node 2, then starts the killed one again as a standby. p50 and max over
   ``--failover-rounds``; target <= 5 s.
3. **Recovery**: ``--records`` promises created in process through the JetStream store (R1), a
   snapshot after half of them, then a new store recovers: newest snapshot + replay of the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))  # the test suite's cluster launcher

from jetstream_cluster import JetStreamCluster  # noqa: E402
from run import RESONATE, Responder, code_version, load_average, loadgen  # noqa: E402

from resonate_sync.core import OPERATIONS, Resonate, State  # noqa: E402
from resonate_sync.models import CreatePromiseRequest  # noqa: E402
from resonate_sync.store.jetstream import JetStreamStore  # noqa: E402
from resonate_sync.transport.connection import Connection  # noqa: E402
from resonate_sync.transport.embedded import EmbeddedNatsServer  # noqa: E402

FAR = 4_102_444_800_000


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def serve_command(url: str, subject: str, workdir: str, store: str) -> List[str]:
    cmd = [RESONATE, "serve", "--api-nats-addr", url, "--api-nats-subject", subject, "--log-level", "warning",
           "--metrics-addr", "127.0.0.1:0", "--api-nats-peer-window", "0"]  # fmt: skip
    if store == "file":
        return cmd + ["--fsync", "always", "--store-path", os.path.join(workdir, f"{subject}.journal")]
    return cmd + ["--store-kind", "jetstream", "--store-jetstream-replicas", "3" if store == "R3" else "1"]


def throughput(args: argparse.Namespace, workdir: str) -> Dict[str, List[dict]]:
    """Create N=64 against each store, ``rounds`` times, alternating; a fresh server (and stream) each run."""
    runs: Dict[str, List[dict]] = {"file": [], "R1": [], "R3": []}
    single = EmbeddedNatsServer(extra_args=["-js", "-sd", os.path.join(workdir, "js1")]).start()
    cluster = JetStreamCluster(Path(workdir) / "cluster", size=3)
    try:
        for round_ in range(args.rounds):
            for store in runs:
                url = cluster.urls[0] if store == "R3" else single.url
                subject = f"bench.repl.{store.lower()}.{round_}"
                responder = Responder(f"{store}-{round_}", serve_command(url, subject, workdir, store), subject, workdir)
                responder.start(url)
                try:
                    result = loadgen(url, subject, "create", 64, args.count, args.seconds, tag=f"{subject}/c")
                finally:
                    responder.stop()
                runs[store].append(result)
                log(f"  round {round_ + 1} {store:<4} {result['ops_per_s']:8.0f} ops/s  p50 {result['p50_ms']:.2f} ms"
                    f"  p99 {result['p99_ms']:.2f} ms  errors {result.get('errors') or 0}")  # fmt: skip
    finally:
        cluster.close()
        single.stop()
    return runs


def _roles(conn: Connection, subject: str) -> Dict[int, str]:
    roles = {}
    for raw in conn.gather("$SRV.INFO.resonate", timeout=1.0, quiet=0.2):
        doc = json.loads(raw)
        if any(e.get("subject") == subject for e in doc.get("endpoints", [])):
            roles[int(doc["metadata"]["pid"])] = doc["metadata"].get("role", "")
    return roles


def _answers(conn: Connection, subject: str) -> bool:
    """Whether a read is answered by a leader now (a 404 is an answer; no responders or a 503 is not)."""
    raw = json.dumps({"operation": "promises.read", "payload": {"id": "bench/failover-probe"}}).encode()
    try:
        reply = json.loads(conn.request(subject, payload=raw, timeout=0.5).payload)
    except Exception:
        return False
    return reply.get("success") is True or reply.get("error", {}).get("code") == 404


def failover(args: argparse.Namespace, workdir: str) -> List[float]:
    """Seconds from kill -9 of the leader to the first reply, per round."""
    cluster = JetStreamCluster(Path(workdir) / "failover", size=3)
    subject = "bench.failover"
    replicas: Dict[int, subprocess.Popen] = {}
    logs = open(os.path.join(workdir, "failover.log"), "ab")

    def start(node: int) -> None:
        replicas[node] = subprocess.Popen(serve_command(cluster.urls[node], subject, workdir, "R3"),
                                          stdout=logs, stderr=subprocess.STDOUT)  # fmt: skip

    probe = Connection(cluster.urls[2], name="bench-failover")
    probe.connect()
    times: List[float] = []
    try:
        start(0)
        start(1)
        for round_ in range(args.failover_rounds):
            deadline = time.monotonic() + 30
            while True:
                roles = _roles(probe, subject)
                if sorted(roles.values()) == ["leader", "standby"] and _answers(probe, subject):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"round {round_}: no leader and standby after 30 s: {roles}")
                time.sleep(0.1)
            leader_pid = next(pid for pid, role in roles.items() if role == "leader")
            node = next(n for n, p in replicas.items() if p.pid == leader_pid)
            killed_at = time.monotonic()
            os.kill(leader_pid, signal.SIGKILL)
            replicas[node].wait()
            while not _answers(probe, subject):
                if time.monotonic() - killed_at > 60:
                    raise RuntimeError(f"round {round_}: no reply 60 s after kill -9")
                time.sleep(0.01)
            times.append(time.monotonic() - killed_at)
            log(f"  round {round_ + 1}: first reply {times[-1]:.2f} s after kill -9 of the leader")
            start(node)
    finally:
        for process in replicas.values():
            if process.poll() is None:
                process.terminate()
                process.wait(20)
        probe.close()
        cluster.close()
        logs.close()
    return times


def recovery(args: argparse.Namespace, workdir: str) -> dict:
    """Write ``records`` creates through the store (a snapshot halfway), then time a recovery."""
    nats_server = EmbeddedNatsServer(extra_args=["-js", "-sd", os.path.join(workdir, "js-recovery")]).start()
    stream = "BENCH_RECOVERY"
    conn = Connection(nats_server.url, name="bench-recovery")
    conn.connect()
    try:
        store = JetStreamStore(conn, stream=stream, instance="bench-writer", snapshot_every=10**9)
        recovered = store.open()
        core = Resonate.recover(recovered.snapshot, recovered.records, journal=store)
        leading = threading.Event()
        store.start(apply=core.apply_replicated, reload=lambda r: core.reload(r.snapshot, r.records),
                    on_leader=leading.set, on_standby=lambda reason: None)  # fmt: skip
        if not leading.wait(30):
            raise RuntimeError("the writer never led")
        create = OPERATIONS["promises.create"]
        started = time.monotonic()
        for i in range(args.records):
            pending = core.execute_nowait(create, CreatePromiseRequest(id=f"bench/{i:08d}", timeout=FAR))
            if i % 2000 == 1999 or i == args.records - 1:
                core.wait_durable(pending.ticket)
            if i == args.records // 2:
                core.wait_durable(pending.ticket)
                ticket, copy = core.snapshot()
                store.write_snapshot(ticket, State.snapshot_entries(copy))
                del copy
        wrote = time.monotonic() - started
        log(f"  wrote {args.records:,} records in {wrote:.1f} s ({args.records / wrote:,.0f}/s), snapshot at half")
        store.close()

        reader = JetStreamStore(conn, stream=stream, instance="bench-reader", snapshot_every=10**9)
        started = time.monotonic()
        found = reader.open()
        state = Resonate.recover(found.snapshot, found.records).state
        took = time.monotonic() - started
        reader.close()
        if len(state.promises) != args.records:
            raise RuntimeError(f"recovered {len(state.promises)} promises, wrote {args.records}")
        return {"records": args.records, "write_s": wrote, "recover_s": took, "last_seq": found.last_seq}
    finally:
        conn.close()
        nats_server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--rounds", type=int, help="throughput runs per store (default 3; quick 1)")
    parser.add_argument("--count", type=int, help="most creates per run (default 20000; quick 3000)")
    parser.add_argument("--seconds", type=float, help="most seconds per run (default 15; quick 3)")
    parser.add_argument("--failover-rounds", type=int, help="kill -9 rounds (default 10; quick 3)")
    parser.add_argument("--records", type=int, help="records for the recovery part (default 1000000; quick 50000)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "failover", "recovery"])
    args = parser.parse_args()
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 3)
    args.count = args.count or (3_000 if quick else 20_000)
    args.seconds = args.seconds or (3.0 if quick else 15.0)
    args.failover_rounds = args.failover_rounds or (3 if quick else 10)
    args.records = args.records or (50_000 if quick else 1_000_000)
    load_start, began = load_average(), time.time()
    workdir = tempfile.mkdtemp(prefix="bench-replication-")
    runs: Dict[str, List[dict]] = {}
    times: List[float] = []
    rec: Optional[dict] = None
    if "throughput" not in args.skip:
        log("throughput: serve, promises.create, N=64")
        runs = throughput(args, workdir)
    if "failover" not in args.skip:
        log("failover: kill -9 of the leader, R3, default lease")
        times = failover(args, workdir)
    if "recovery" not in args.skip:
        log(f"recovery: {args.records:,} records through the JetStream store (R1)")
        rec = recovery(args, workdir)

    print(f"\nresonate_sync replication benchmark ({'quick' if quick else 'full'}): {time.strftime('%Y-%m-%d %H:%M')},"
          f" {os.cpu_count()} CPUs, load {load_start} at start, {load_average()} at end,"
          f" {(time.time() - began) / 60:.1f} min; code {code_version()}")  # fmt: skip
    verdicts = []
    if runs:
        median = {store: statistics.median(r["ops_per_s"] for r in results) for store, results in runs.items()}
        print(f"\nserve promises.create N=64, median of {args.rounds} round(s) ({args.count:,} creates or {args.seconds:g} s each)")
        print(f"  {'store':<31}{'ops/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'x file':>8}")
        names = {"file": "file journal, fsync always", "R1": "JetStream R1 (1 node)", "R3": "JetStream R3 (3-node cluster)"}
        for store, results in runs.items():
            p50 = statistics.median(r["p50_ms"] for r in results)
            p99 = statistics.median(r["p99_ms"] for r in results)
            print(f"  {names[store]:<31}{median[store]:>9.0f}{p50:>9.2f}{p99:>9.2f}{median[store] / median['file']:>8.2f}")
        for store, target in (("R1", 0.5), ("R3", 0.3)):
            ratio = median[store] / median["file"]
            verdicts.append((f"JetStream {store} create N=64 >= {target}x file", f"{ratio:.2f}x", ratio >= target))
    if times:
        p50, worst = statistics.median(times), max(times)
        print(f"\nfailover over {len(times)} rounds: p50 {p50:.2f} s, max {worst:.2f} s"
              f" (each: {', '.join(f'{t:.2f}' for t in times)})")  # fmt: skip
        verdicts.append(("failover (kill -9 of the leader to first reply) max <= 5 s", f"{worst:.2f} s", worst <= 5.0))
    if rec:
        print(f"\nrecovery of {rec['records']:,} records (snapshot at half + replay of the rest): {rec['recover_s']:.1f} s"
              f" (writing them took {rec['write_s']:.1f} s)")  # fmt: skip
    if verdicts:
        print("\ntargets (issue 12)" + (" — quick run: only indicative" if quick else ""))
        for text, measured, ok in verdicts:
            print(f"  {'PASS' if ok else 'MISS':<4}  {text:<60}  {measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
