"""Profile the server under N=64 load with py-spy and summarise where the time goes.

Starts a nats-server and ``resonate dev`` (or ``serve --fsync always``), preloads promises,
then for each case runs the load generator at N=64 while ``py-spy record`` samples the
server (only samples holding the GIL with ``--gil``: on a GIL-bound server those are the
ones that cost throughput). Prints, per case, the functions with the largest inclusive and
self share of samples, and keeps the raw collapsed stacks (``<out>/<target>-<case>.txt``,
feed them to any flamegraph tool).

Usage (needs ``pip install py-spy``)::

    python bench/pyspy_profile.py [--target dev|serve] [--cases create read complete] [--seconds 15] [--out DIR]

Numbers measured while profiling are slower than unprofiled ones; use ``bench/run.py`` for
throughput and this for proportions.
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
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from run import PY, Responder, load_average, loadgen, serving  # noqa: E402

PY_SPY = shutil.which("py-spy", path=os.path.dirname(PY)) or shutil.which("py-spy")


def summarise(path: str, top: int) -> list[str]:
    """Inclusive and self shares of the functions in a py-spy raw (collapsed) file."""
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            for frame in set(frames):
                inclusive[frame] += n
            own[frames[-1]] += n
    if not total:
        return ["  (no samples)"]
    lines = [f"  {total} samples; inclusive share (this function and what it calls):"]
    for frame, n in inclusive.most_common(top):
        lines.append(f"    {100 * n / total:5.1f}%  {frame}")
    lines.append("  self share (the leaf frame):")
    for frame, n in own.most_common(top):
        lines.append(f"    {100 * n / total:5.1f}%  {frame}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=["dev", "serve"], default="dev")
    parser.add_argument("--cases", nargs="*", default=["create", "read", "complete"],
                        choices=["create", "read", "complete", "search", "task", "lock"])  # fmt: skip
    parser.add_argument("--seconds", type=float, default=15.0, help="load (and sampling) per case")
    parser.add_argument("--count", type=int, default=200_000, help="most requests per case")
    parser.add_argument("--preload", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--all-threads", action="store_true", help="sample every thread, not only the GIL holder")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=None, help="keep the raw stacks here (default: a temporary directory)")
    args = parser.parse_args()
    if PY_SPY is None:
        sys.exit("py-spy not found: pip install py-spy")

    out = args.out or tempfile.mkdtemp(prefix="bench-profile-")
    os.makedirs(out, exist_ok=True)
    with serving(args.target) as (nats_server, server):
        profile_cases(args, nats_server.url, server, out)
    print(f"\nraw stacks in {out}")


def profile_cases(args: argparse.Namespace, url: str, server: Responder, out: str) -> None:
    """Preload, then each case at N=64 with py-spy attached; prints the summaries."""
    run_id = f"p{int(time.time())}"
    print(f"load {load_average()}; preloading {args.preload:,} promises", file=sys.stderr)
    loadgen(url, server.subject, "preload", 64, args.preload, 600, tag=f"{run_id}/pre")
    created = 0
    for case in args.cases:
        extra: dict = {}
        if case in ("create", "lock"):
            extra = {"tag": f"{run_id}/{case}"}
        elif case in ("read", "search"):
            extra = {"ids": f"{run_id}/pre", "ids_count": args.preload}
        elif case == "complete":
            if not created:
                print("complete needs the create case before it; skipped", file=sys.stderr)
                continue
            extra = {"ids": f"{run_id}/create", "ids_count": created}
        elif case == "task":
            extra = {"tag": f"{run_id}/task", "ids_count": args.count // 2 + 64, "setup_seconds": 600}
        raw = os.path.join(out, f"{args.target}-{case}.txt")
        spy_cmd = [PY_SPY, "record", "--pid", str(server.pid), "--rate", str(args.rate), "--format", "raw",
                   "--nolineno", "--output", raw, "--duration", str(int(args.seconds + 30))]  # fmt: skip
        if not args.all_threads:
            spy_cmd.append("--gil")
        spy = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # let py-spy attach before the load starts
        try:
            got = loadgen(url, server.subject, case, 64, args.count, args.seconds,
                          {"server": server.pid}, **extra)  # fmt: skip
        finally:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
        if case == "create":
            created = got["issued"]
        cpu = got["cpu_seconds"].get("server", 0.0)
        print(f"\n== {args.target} {case} N=64 under py-spy: {got['ops_per_s']:,.0f} ops/s, "
              f"server CPU {cpu / max(1, got['requests']) * 1e6:.0f} us/request, load {load_average()}")  # fmt: skip
        if os.path.exists(raw):
            for line in summarise(raw, args.top):
                print(line)
        else:
            print(f"  py-spy wrote nothing: {spy.stderr.read().decode(errors='replace')[-500:] if spy.stderr else ''}")


if __name__ == "__main__":
    main()
