"""Durability benchmark: restart cost of ``resonate serve`` and what fsync costs in throughput.

A script that prints numbers, not a test. Everything runs as real processes on this machine,
against one nats-server it starts itself:

1. **Recovery.** A journal of ``--records`` records (default 1,000,000) made of real core
   records: workflows of create-with-invoke-tag (promise + task), claim (task), complete
   (promise + task), 5 records each. ``resonate serve`` is started on it and timed until its
   first reply; the server's own log line gives the recovery (journal read + core state
   rebuild, every index included) time; the process is then killed and ``wait4`` gives its
   peak RSS. A server on an empty store is the RSS baseline. Then a graceful stop writes a
   snapshot (timed) and a restart from that snapshot is measured the same way.
2. **Throughput.** A separate nats-py load process keeps ``--in-flight`` (default 64)
   ``promises.create`` requests in flight for ``--seconds`` against ``resonate dev`` (memory),
   ``serve --fsync always`` and ``serve --fsync never`` (default 8 workers), and ``serve --fsync
   always --workers 64``, one server at a time, and reports requests/s and latency
   percentiles; the table gives each server's ratio to ``dev``.

Usage::

    python bench/bench_durability.py [--records 1000000] [--seconds 5] [--in-flight 64] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resonate_sync.core import Resonate  # noqa: E402
from resonate_sync.core.clock import FakeClock  # noqa: E402
from resonate_sync.journal import Journal  # noqa: E402
from resonate_sync.models import Value  # noqa: E402
from resonate_sync.transport.embedded import EmbeddedNatsServer  # noqa: E402

RESONATE = str(Path(sys.executable).with_name("resonate"))
FAR = 4_102_444_800_000
TEMPLATE_ID = "wf/000000000"
RECORDS_PER_WORKFLOW = 5
_STARTED: List[subprocess.Popen] = []  # every server process, killed on the way out


# ------------------------------------------------------------------------------------------
# building the journal


def workflow_batches() -> List[List[str]]:
    """The JSON of the records the core journals for one workflow, one list per request."""
    directory = tempfile.mkdtemp(prefix="bench-durability-template-")
    try:
        journal = Journal(os.path.join(directory, "j"), fsync="never")
        journal.open()
        core = Resonate(FakeClock(), journal=journal)
        batches = []
        steps = [
            lambda: core.promises_create(
                id=TEMPLATE_ID, timeout=FAR, param=Value({}, "eyJhbW91bnQiOjQyfQ=="), tags={"resonate:invoke": "nats://workers"}
            ),
            lambda: core.tasks_claim(id=f"__invoke:{TEMPLATE_ID}", counter=1, process_id="worker-1", ttl=60_000),
            lambda: core.promises_complete(id=TEMPLATE_ID, state="RESOLVED", value=Value({}, "ImRvbmUi")),
        ]
        captured: List[List[dict]] = []
        real_append = journal.append

        def capture(records):
            captured.append(list(records))
            return real_append(records)

        journal.append = capture  # type: ignore[method-assign]
        for step in steps:
            step()
        journal.close()
        for records in captured:
            texts = [json.dumps(record, separators=(",", ":")) for record in records]
            assert all(text.count('"sortId":1') == 1 for text in texts), texts
            batches.append(texts)
        assert sum(len(b) for b in batches) == RECORDS_PER_WORKFLOW, batches
        return batches
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def build_journal(path: str, records: int) -> Tuple[float, int]:
    """Write ``records // 5`` workflows as the core would have journaled them; returns (seconds, workflows)."""
    started = time.perf_counter()
    batches = workflow_batches()
    journal = Journal(path, fsync="never", snapshot_every=10**12)
    journal.open()
    workflows = records // RECORDS_PER_WORKFLOW
    loads = json.loads
    ticket = 0
    for n in range(workflows):
        pid, sort_id = f"wf/{n:09d}", f'"sortId":{n + 1}'
        for batch in batches:
            ticket = journal.append([loads(text.replace(TEMPLATE_ID, pid).replace('"sortId":1', sort_id)) for text in batch])
        if n % 2000 == 1999:
            journal.wait_durable(ticket)
    journal.close()
    return time.perf_counter() - started, workflows


# ------------------------------------------------------------------------------------------
# servers as processes


class ServerProcess:
    """``resonate <mode>`` as a child process, its log in a file."""

    def __init__(self, directory: str, url: str, mode: str, *flags: str) -> None:
        self.subject = f"bench.{uuid.uuid4().hex[:8]}"
        self.log_path = os.path.join(directory, f"{self.subject}.log")
        args = [RESONATE, mode, "--api-nats-addr", url, "--api-nats-subject", self.subject, *flags]
        if mode == "serve":  # serve's default metrics port may be taken on a shared machine
            args += ["--metrics-addr", "127.0.0.1:0"]
        self.started = time.perf_counter()
        with open(self.log_path, "wb") as log:  # cwd: no resonate.yaml of the caller's applies
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=directory)
        _STARTED.append(self.process)

    def wait_ready(self, url: str, timeout: float = 600.0) -> float:
        """Seconds from spawn until the server answered its first request."""
        import nats

        async def first_reply() -> None:
            nc = await nats.connect(url)
            try:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    if self.process.poll() is not None:
                        break
                    try:
                        msg = await nc.request(self.subject, b'{"operation":"promises.read","payload":{"id":"?"}}', timeout=1)
                        if b'"code":404' in msg.data:
                            return
                    except Exception:
                        await asyncio.sleep(0.01)
                raise RuntimeError(f"server did not answer:\n{self.log()}")
            finally:
                await nc.close()

        asyncio.run(first_reply())
        return time.perf_counter() - self.started

    def kill(self) -> float:
        """SIGKILL; returns the process's peak RSS in MiB (from wait4)."""
        if self.process.poll() is not None:  # already exited and reaped: its usage is gone
            return float("nan")
        self.process.send_signal(signal.SIGKILL)
        _, _, usage = os.wait4(self.process.pid, 0)
        self.process.returncode = -9
        return usage.ru_maxrss / 1024

    def stop(self) -> Tuple[float, float]:
        """SIGTERM (graceful: final snapshot); returns (seconds, peak RSS MiB)."""
        started = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(self.process.pid, 0)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        if self.process.returncode != 0:
            raise RuntimeError(f"server exited {self.process.returncode}:\n{self.log()}")
        return time.perf_counter() - started, usage.ru_maxrss / 1024

    def log(self) -> str:
        with open(self.log_path, errors="replace") as file:
            return file.read()

    def recovery_seconds(self) -> Optional[float]:
        match = re.search(r"recovered .* in ([0-9.]+) s", self.log())
        return float(match.group(1)) if match else None

    def snapshot_seconds(self) -> Optional[float]:
        match = re.search(r"snapshot written .* in ([0-9.]+) s", self.log())
        return float(match.group(1)) if match else None


# ------------------------------------------------------------------------------------------
# the load process


async def load(url: str, subject: str, in_flight: int, seconds: float, warmup: float) -> Dict[str, float]:
    """``in_flight`` workers each sending promises.create back to back; counts after ``warmup``."""
    import nats

    nc = await nats.connect(url)
    prefix = uuid.uuid4().hex[:8]
    latencies: List[float] = []
    failures = 0
    start = time.perf_counter()
    measure_from, end = start + warmup, start + warmup + seconds

    async def worker(w: int) -> None:
        nonlocal failures
        n = 0
        while True:
            n += 1
            body = {"operation": "promises.create", "payload": {"id": f"{prefix}.{w}.{n}", "timeout": FAR}}
            sent = time.perf_counter()
            if sent >= end:
                return
            try:
                msg = await nc.request(subject, json.dumps(body).encode(), timeout=10)
                ok = b'"Status":20100' in msg.data
            except Exception:
                ok = False
            done = time.perf_counter()
            if sent >= measure_from:
                if ok:
                    latencies.append(done - sent)
                else:
                    failures += 1

    await asyncio.gather(*(worker(w) for w in range(in_flight)))
    await nc.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return {"rps": len(latencies) / seconds, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "failures": failures}


def run_load(url: str, subject: str, in_flight: int, seconds: float) -> Dict[str, float]:
    args = [sys.executable, os.path.abspath(__file__), "--load", url, subject, str(in_flight), str(seconds)]
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


# ------------------------------------------------------------------------------------------


def bench_recovery(directory: str, url: str, records: int) -> None:
    store = os.path.join(directory, "recovery.journal")
    build_s, workflows = build_journal(store, records)
    size = sum(entry.stat().st_size for entry in os.scandir(store))
    print(
        f"\nrecovery: {workflows * RECORDS_PER_WORKFLOW:,} records, {size / 2**20:.0f} MiB "
        f"({workflows:,} promises + {workflows:,} tasks; built in {build_s:.1f} s)"
    )
    print(f"{'start from':<28} {'recover s':>10} {'first reply s':>14} {'peak RSS MiB':>13}")
    empty = ServerProcess(directory, url, "serve", "--store-path", os.path.join(directory, "empty.journal"))
    ready = empty.wait_ready(url)
    rss = empty.kill()
    print(f"{'an empty store (baseline)':<28} {empty.recovery_seconds():>10.2f} {ready:>14.2f} {rss:>13.0f}")

    # --snapshot-every above the journal's length: measure recovery alone, not a first snapshot
    flags = ("--store-path", store, "--snapshot-every", str(10 * records + 1))
    journal_run = ServerProcess(directory, url, "serve", *flags)
    ready = journal_run.wait_ready(url)
    rss = journal_run.kill()
    print(f"{'the journal alone':<28} {journal_run.recovery_seconds():>10.2f} {ready:>14.2f} {rss:>13.0f}")

    stopping = ServerProcess(directory, url, "serve", *flags)
    stopping.wait_ready(url)
    stop_s, stop_rss = stopping.stop()
    snapshot_run = ServerProcess(directory, url, "serve", *flags)
    ready = snapshot_run.wait_ready(url)
    rss = snapshot_run.kill()
    print(f"{'its snapshot':<28} {snapshot_run.recovery_seconds():>10.2f} {ready:>14.2f} {rss:>13.0f}")
    print(
        f"(writing that snapshot at a graceful stop: {stopping.snapshot_seconds():.2f} s, "
        f"stop took {stop_s:.2f} s, peak RSS of that run {stop_rss:.0f} MiB)"
    )


def bench_throughput(directory: str, url: str, seconds: float, in_flight: int) -> None:
    print(f"\nthroughput: promises.create, {in_flight} in flight from a nats-py process, {seconds:g} s each")
    print(f"{'server':<26} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs dev':>7}")
    cases = [
        ("dev (memory)", "dev", ()),
        ("serve --fsync always", "serve", ("--fsync", "always")),
        ("serve --fsync never", "serve", ("--fsync", "never")),
        # each worker thread waits for its fsync: --workers bounds the records one fsync covers
        ("serve always, 64 workers", "serve", ("--fsync", "always", "--workers", "64")),
    ]
    dev_rps = None
    for name, mode, flags in cases:
        store = ("--store-path", os.path.join(directory, f"tp-{uuid.uuid4().hex[:6]}.journal")) if mode == "serve" else ()
        server = ServerProcess(directory, url, mode, *store, *flags)
        try:
            server.wait_ready(url)
            row = run_load(url, server.subject, in_flight, seconds)
        finally:
            server.kill()
        dev_rps = dev_rps or row["rps"]
        failures = f"  ({row['failures']:.0f} failed)" if row["failures"] else ""
        print(
            f"{name:<26} {row['rps']:>9,.0f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} "
            f"{row['rps'] / dev_rps:>7.2f}{failures}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the recovery journal")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--in-flight", type=int, default=64, help="requests the load process keeps in flight")
    parser.add_argument("--dir", default=None, help="where to put stores (default: system temp)")
    parser.add_argument("--skip-recovery", action="store_true", help="only the throughput table")
    parser.add_argument("--load", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        url, subject, in_flight, seconds = args.load
        print(json.dumps(asyncio.run(load(url, subject, int(in_flight), float(seconds), warmup=1.0))))
        return

    directory = tempfile.mkdtemp(prefix="bench-durability-", dir=args.dir)
    try:
        with EmbeddedNatsServer() as nats_server:
            print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, stores in {directory}")
            bench_throughput(directory, nats_server.url, args.seconds, args.in_flight)
            if not args.skip_recovery:
                bench_recovery(directory, nats_server.url, args.records)
    finally:
        for process in _STARTED:
            if process.returncode is None and process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
