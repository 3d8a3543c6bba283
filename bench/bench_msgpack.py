"""MessagePack against JSON, and JSON before against after the MessagePack change, in one run.

One command::

    .venv/bin/python bench/bench_msgpack.py [--before main] [--rounds 3] [--quick]

Three targets, each a ``resonate dev`` process of its own (state in memory, so the codec is not
hidden behind fsync) on one nats-server:

- **before-json**: the code of ``--before`` (a git revision, default ``main``), exported to a
  temporary directory and run there with ``python -m resonate_sync``, sent JSON;
- **after-json**: this tree, sent JSON;
- **after-msgpack**: this tree, sent the same requests written as MessagePack
  (``Content-Type: application/msgpack``).

A process per target, because a create run leaves its promises behind: a target that shared its
server with the one before it would face a larger heap (slower garbage collections) every round. Cases promises.create
(unique ids, a small param) and promises.read (over ``--preload`` stored promises), each at N=1
and N=64 requests in flight, driven by ``bench/loadgen.py`` in its own process. Every round runs
the three targets back to back and the median of ``--rounds`` counts, so ratios compare runs made
seconds apart under the same machine load. The server's CPU time per request (from /proc) is
shown beside throughput: on a shared machine it is the steadier number.

Then, in this process and without NATS, the codec's own share: microseconds per request of
``api.handle_nowait`` (decode, limits, the operation, encode) for the same create and read
envelopes in JSON and in MessagePack, best of five repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import timeit
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from run import PY, ROOT, Responder, code_version, load_average, loadgen, summarise  # noqa: E402

from resonate_sync.transport.embedded import EmbeddedNatsServer  # noqa: E402

TARGETS = (("before", "json"), ("after", "json"), ("after", "msgpack"))
CASES = ("create", "read")


def export(revision: str, into: str) -> str:
    """The tree of ``revision`` written to ``into``; returns its commit."""
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", revision], capture_output=True, text=True, check=True)
    archive = subprocess.Popen(["git", "-C", ROOT, "archive", revision], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", into], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {revision} failed")
    return commit.stdout.strip()


def dev_command(url: str, subject: str) -> List[str]:
    return [PY, "-m", "resonate_sync", "dev", "--api-nats-addr", url, "--api-nats-subject", subject,
            "--log-level", "warning", "--embedded-nats=never"]  # fmt: skip


def run(args: argparse.Namespace, log) -> Dict[str, dict]:
    workdir = tempfile.mkdtemp(prefix="bench-msgpack-")
    before_tree = os.path.join(workdir, "before")
    os.mkdir(before_tree)
    log(f"before: {args.before} = {export(args.before, before_tree)}; after: this tree ({code_version()})")
    nats_server = EmbeddedNatsServer().start()
    url = nats_server.url
    responders = {
        f"{code}-{encoding}": Responder(
            f"{code}-{encoding}", dev_command(url, f"bench.{code}.{encoding}"), f"bench.{code}.{encoding}", workdir,
            cwd=before_tree if code == "before" else ROOT,
        )
        for code, encoding in TARGETS
    }
    rows: Dict[str, dict] = {}
    run_id = f"m{int(time.time())}"
    try:
        for responder in responders.values():
            responder.start(url)
        preload = f"{run_id}/pre"
        for name, responder in responders.items():
            got = loadgen(url, responder.subject, "preload", 64, args.preload, 120, tag=preload)
            if got["requests"] != args.preload or got["errors"]:
                raise RuntimeError(f"preload of {name} incomplete: {got}")
        log(f"preloaded {args.preload:,} promises into each; load {load_average()}")
        for case in args.cases:
            for inflight in args.inflight:
                runs: Dict[str, List[dict]] = {}
                for round_ in range(args.rounds):
                    for code, encoding in TARGETS:
                        responder = responders[f"{code}-{encoding}"]
                        extra = {"encoding": encoding}
                        if case == "create":
                            extra["tag"] = f"{run_id}/{case}{inflight}/{code}-{encoding}/{round_}"
                        else:
                            extra.update(ids=preload, ids_count=args.preload)
                        watch = {"server": responder.pid}
                        got = loadgen(url, responder.subject, case, inflight, args.count, args.seconds, watch, **extra)
                        runs.setdefault(f"{code}-{encoding}", []).append(got)
                for target, target_runs in runs.items():
                    rows[f"{case}|{inflight}|{target}"] = summarise(target_runs)
                log(f"  promises.{case} N={inflight}: " + "; ".join(
                    f"{t} {rows[f'{case}|{inflight}|{t}']['ops_per_s']:,.0f}/s" for t in runs))  # fmt: skip
        return rows
    finally:
        for responder in responders.values():
            responder.stop()
        nats_server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def cpu_us(row: dict) -> float:
    return row["cpu_seconds"].get("server", 0.0) / max(1, row["requests"]) * 1e6


def table(rows: Dict[str, dict], cases: List[str], inflights: List[int]) -> List[str]:
    lines = [
        f"{'case':<16} {'N':>3} {'target':<15} {'ops/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10} "
        f"{'ops vs before-json':>18} {'ops vs after-json':>17} {'CPU vs after-json':>17} {'gen %':>5}  errors",
    ]
    for case in cases:
        for inflight in inflights:
            before, after = rows[f"{case}|{inflight}|before-json"], rows[f"{case}|{inflight}|after-json"]
            for code, encoding in TARGETS:
                target = f"{code}-{encoding}"
                row = rows[f"{case}|{inflight}|{target}"]
                lines.append(
                    f"{'promises.' + case:<16} {inflight:>3} {target:<15} {row['ops_per_s']:>8,.0f} {row['p50_ms']:>7.3f} "
                    f"{row['p99_ms']:>7.3f} {cpu_us(row):>10.1f} {row['ops_per_s'] / before['ops_per_s']:>17.2f}x "
                    f"{row['ops_per_s'] / after['ops_per_s']:>16.2f}x {cpu_us(row) / cpu_us(after):>16.2f}x "
                    f"{row['loadgen_cpu_share'] * 100:>5.0f}  {row['errors'] or ''}"
                )
    return lines


def codec_table(count: int = 20_000) -> List[str]:
    """Microseconds per request of handle_nowait, JSON against MessagePack, in this process."""
    import msgpack

    from resonate_sync.api import JSON, MSGPACK, handle_nowait
    from resonate_sync.core import Resonate

    core = Resonate()
    param = {"headers": {}, "data": "eyJhbW91bnQiOjQyfQ=="}
    ids = iter(range(10**9))

    def create(encoding) -> bytes:
        document = {"operation": "promises.create", "payload": {"id": f"c/{next(ids)}", "timeout": 4_102_444_800_000, "param": param}}
        return json.dumps(document).encode() if encoding is JSON else msgpack.packb(document)

    read = {"operation": "promises.read", "payload": {"id": "c/0"}}
    reads = {JSON: json.dumps(read).encode(), MSGPACK: msgpack.packb(read)}
    handle_nowait(core, create(JSON))
    lines = [f"{'in process':<16} {'JSON us':>8} {'MessagePack us':>14} {'ratio':>6}"]
    for case in ("create", "read"):
        took = {}
        for encoding in (JSON, MSGPACK):
            if case == "create":
                raws = [create(encoding) for _ in range(count)]
                feed = iter(raws)
                run_one = lambda: handle_nowait(core, next(feed), 0, encoding)  # noqa: E731
                took[encoding] = timeit.timeit(run_one, number=count) / count * 1e6
            else:
                raw = reads[encoding]
                run_one = lambda: handle_nowait(core, raw, 0, encoding)  # noqa: E731
                took[encoding] = min(timeit.repeat(run_one, number=count, repeat=5)) / count * 1e6
        lines.append(f"{'promises.' + case:<16} {took[JSON]:>8.1f} {took[MSGPACK]:>14.1f} {took[MSGPACK] / took[JSON]:>5.2f}x")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="main", help="the git revision to compare against (default main)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each case per target; the median counts")
    parser.add_argument("--count", type=int, default=20_000, help="most requests per run")
    parser.add_argument("--seconds", type=float, default=10.0, help="most seconds per run")
    parser.add_argument("--preload", type=int, default=20_000, help="promises stored before the read case")
    parser.add_argument("--cases", nargs="*", choices=CASES, default=list(CASES), help="only these cases")
    parser.add_argument("--inflight", nargs="*", type=int, default=[1, 64], help="values of N (default: 1 64)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.count, args.seconds, args.preload = 1, 2_000, 3.0, 2_000

    def log(text: str) -> None:
        print(text, flush=True)

    log(f"bench_msgpack: rounds {args.rounds}, count {args.count}, seconds {args.seconds}, load {load_average()}")
    rows = run(args, log)
    log("")
    for line in table(rows, args.cases, args.inflight):
        log(line)
    log("")
    for line in codec_table():
        log(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
