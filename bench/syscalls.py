"""Count the system calls a responder makes per request under N=64 load (``perf stat``).

Thread hand-offs show up as ``futex`` calls and group commit as ``fsync`` calls, so per
request they tell how much of the CPU goes to waking threads and how many records one fsync
covers. Starts a nats-server and one responder (the baseline, ``resonate dev`` or ``resonate
serve --fsync always``), runs one case for ``--seconds`` with ``perf stat`` attached.

Usage (needs ``perf`` with syscall tracepoints, i.e. root or perf_event_paranoid <= 1)::

    python bench/syscalls.py [--target baseline|dev|serve] [--case create] [--workers 8] [--seconds 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from run import Responder, load_average, loadgen, serving  # noqa: E402

SYSCALLS = ("futex", "fsync", "sendto", "recvfrom")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=["baseline", "dev", "serve"], default="serve")
    parser.add_argument("--case", choices=["create", "lock"], default="create", help="a case that needs no preload")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    if shutil.which("perf") is None:
        sys.exit("perf not found")
    with serving(args.target, ["--workers", str(args.workers)]) as (nats_server, server):
        with tempfile.TemporaryDirectory(prefix="bench-syscalls-") as workdir:
            count_syscalls(args, nats_server.url, server, os.path.join(workdir, "perf.txt"))


def count_syscalls(args: argparse.Namespace, url: str, server: Responder, counts_path: str) -> None:
    events = ",".join(f"syscalls:sys_enter_{name}" for name in SYSCALLS)
    perf = subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-p", str(server.pid), "-o", counts_path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.5)
    try:
        got = loadgen(url, server.subject, args.case, 64, 10**7, args.seconds, {"server": server.pid}, tag=f"s{int(time.time())}")
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait(30)
    counts = {}
    with open(counts_path) as f:
        for line in f:
            fields = line.strip().split(",")
            if len(fields) > 2 and "sys_enter_" in fields[2]:
                counts[fields[2].rsplit("sys_enter_", 1)[1]] = int(fields[0]) if fields[0].isdigit() else 0
    n = max(1, got["requests"])
    per = ", ".join(f"{name} {counts.get(name, 0) / n:.2f}" for name in SYSCALLS)
    fsyncs = counts.get("fsync", 0)
    print(f"{args.target} {args.case} N=64, {args.workers} workers: {got['ops_per_s']:,.0f} ops/s, "
          f"server CPU {got['cpu_seconds']['server'] / n * 1e6:.0f} us/request; syscalls per request: {per}"
          + (f"; {n / fsyncs:.1f} records per fsync" if fsyncs else "") + f"; load {load_average()}")  # fmt: skip


if __name__ == "__main__":
    main()
