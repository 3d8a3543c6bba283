"""The benchmark suite of issue 5: the server against a bare responder on the same stack.

One command::

    .venv/bin/python bench/run.py [--quick]      # or: tox -e bench [-- --quick]

What runs, all on loopback, each in its own process:

- a nats-server (``EmbeddedNatsServer``);
- the **baseline** (``bench/baseline.py``): our ``NatsTransport`` with a handler that only
  ``json.loads`` the request and answers a fixed promise document;
- ``resonate dev`` (state in memory) and ``resonate serve --fsync always`` (journal in a
  temporary directory), each on its own subject;
- one load generator process per case (``bench/loadgen.py``, nats-py asyncio), N requests in
  flight: N=1 for latency, N=64 for throughput, bounded by ``--count`` requests and
  ``--seconds`` per case.

Cases: promises.create (unique ids), promises.read, promises.complete (of the promises the
create case made), promises.search (prefix, limit 10, over ``--preload`` stored promises),
tasks.claim+complete, locks.acquire+release. For each case and N the three responders run
back to back, ``--rounds`` times, and the median is kept, so every ratio compares runs made
minutes apart under the same machine load. Then ``bench/scale.py`` measures RSS per promise,
search latency at a tenth of and at ``--scale`` promises, and journal replay time.

Output: a table (ops/s, p50, p99, ratio to the baseline, peak RSS of the responder), a scale
table, and PASS/MISS for each target of issue 5. ``--quick`` shrinks every size (targets are
then only indicative and say so).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from resonate_sync.transport.embedded import EmbeddedNatsServer  # noqa: E402

PY = sys.executable
RESONATE = os.path.join(os.path.dirname(PY), "resonate")

CASES = ["create", "read", "complete", "search", "task", "lock"]
CASE_NAMES = {
    "create": "promises.create",
    "read": "promises.read",
    "complete": "promises.complete",
    "search": "promises.search",
    "task": "tasks.claim+complete",
    "lock": "locks.acquire+release",
}
INFLIGHT = (1, 64)
TARGETS = ("baseline", "dev", "serve")


# -- processes ------------------------------------------------------------------------------


def proc_status(pid: int, key: str) -> Optional[int]:
    """A ``/proc/<pid>/status`` memory field in bytes (VmRSS, VmHWM = peak RSS), or None."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def code_version() -> str:
    """The commit under test, and how many files under resonate_sync/ differ from it."""
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "resonate_sync"],
                               capture_output=True, text=True).stdout.splitlines()  # fmt: skip
    except OSError:
        return "unknown (no git)"
    return f"{head or 'unknown'}" + (f" + uncommitted changes in {len(dirty)} file(s) under resonate_sync/" if dirty else "")


def load_average() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


async def _ping(url: str, subject: str) -> bool:
    import nats

    try:
        nc = await nats.connect(url, max_reconnect_attempts=0, connect_timeout=2)
    except Exception:
        return False
    try:
        raw = json.dumps({"operation": "promises.read", "payload": {"id": "bench/ping"}}).encode()
        await nc.request(subject, raw, timeout=2)
        return True
    except Exception:
        return False
    finally:
        await nc.close()


class Responder:
    """One responder process (baseline, dev or serve) on its own subject, with a log file; ``cwd``:
    the directory it runs in (``python -m resonate_sync`` there runs the code found there)."""

    def __init__(self, name: str, cmd: List[str], subject: str, workdir: str, cwd: Optional[str] = None) -> None:
        self.name = name
        self.cmd = cmd
        self.cwd = cwd
        self.subject = subject
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.process: Optional[subprocess.Popen] = None

    def start(self, url: str, timeout: float = 60.0) -> "Responder":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if asyncio.run(_ping(url, self.subject)):
                return self
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer on {self.subject} within {timeout:g} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def peak_rss(self) -> Optional[int]:
        return proc_status(self.pid, "VmHWM") if self.process is not None else None

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def responder_command(target: str, url: str, subject: str, workdir: str, extra: Sequence[str] = ()) -> List[str]:
    """The command line of the baseline, ``resonate dev`` or ``resonate serve --fsync always``."""
    if target == "baseline":
        return [PY, os.path.join(HERE, "baseline.py"), "--url", url, "--subject", subject, *extra]
    cmd = [RESONATE, target, "--api-nats-addr", url, "--api-nats-subject", subject, "--log-level", "warning"]
    if target == "dev":
        cmd.append("--embedded-nats=never")
    else:
        # Metrics on, as serve runs by default, on a free port: 9090 may be taken on a shared machine.
        cmd += ["--fsync", "always", "--store-path", os.path.join(workdir, f"{target}.journal"),
                "--metrics-addr", "127.0.0.1:0"]
    return cmd + list(extra)


@contextlib.contextmanager
def serving(target: str, extra: Sequence[str] = ()) -> Iterator[Tuple[EmbeddedNatsServer, Responder]]:
    """A nats-server and one responder on it, both stopped (and their files removed) on exit."""
    workdir = tempfile.mkdtemp(prefix=f"bench-{target}-")
    nats_server = EmbeddedNatsServer().start()
    responder = Responder(target, responder_command(target, nats_server.url, f"bench.{target}", workdir, extra),
                          f"bench.{target}", workdir)  # fmt: skip
    try:
        responder.start(nats_server.url)
        yield nats_server, responder
    finally:
        responder.stop()
        nats_server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def loadgen(url: str, subject: str, case: str, inflight: int, count: int, seconds: float,
            watch: Optional[Dict[str, int]] = None, **extra) -> dict:  # fmt: skip
    """Run one case in a fresh load generator process; returns its JSON result."""
    cmd = [PY, os.path.join(HERE, "loadgen.py"), "--url", url, "--subject", subject, "--case", case,
           "--inflight", str(inflight), "--count", str(count), "--seconds", str(seconds)]  # fmt: skip
    for name, pid in (watch or {}).items():
        cmd += ["--watch", f"{name}={pid}"]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    bound = seconds + extra.get("setup_seconds", 0) + 120  # the generator bounds itself; this is a backstop
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=bound)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


# -- the request benchmark ------------------------------------------------------------------


def run_requests(args: argparse.Namespace, workdir: str, log) -> dict:
    """Start the responders, preload, run every case; returns rows keyed by (case, N, target)."""
    nats_server = EmbeddedNatsServer().start()
    url = nats_server.url
    run_id = f"r{int(time.time())}"
    extra = {"baseline": [], "dev": shlex.split(args.dev_args), "serve": shlex.split(args.serve_args)}
    responders = {
        target: Responder(target, responder_command(target, url, f"bench.{target}", workdir, extra[target]),
                          f"bench.{target}", workdir)
        for target in TARGETS
    }  # fmt: skip
    results: Dict[str, dict] = {"rows": {}, "preload": {}, "peak_rss": {}}
    try:
        for responder in responders.values():
            responder.start(url)
        log(f"nats-server {url}; responders up (pids: "
            + ", ".join(f"{n} {r.pid}" for n, r in responders.items()) + f"); load {load_average()}")  # fmt: skip

        preload_tag = f"{run_id}/pre"
        for name in ("dev", "serve"):
            started = time.perf_counter()
            got = loadgen(url, responders[name].subject, "preload", 64, args.preload, args.preload_seconds, tag=preload_tag)
            results["preload"][name] = got
            if got["requests"] != args.preload or got["errors"]:
                raise RuntimeError(f"preload of {name} incomplete: {got}")
            log(f"preloaded {args.preload:,} promises into {name} in {time.perf_counter() - started:.1f} s")

        created: Dict[tuple, int] = {}
        for case in CASES:
            if args.cases and case not in args.cases:
                continue
            for inflight in args.inflight:
                runs: Dict[str, List[dict]] = {t: [] for t in TARGETS}
                for round_ in range(args.rounds):
                    for target in TARGETS:
                        subject = responders[target].subject
                        tag = f"{run_id}/{case}{inflight}/{target}/{round_}"
                        extra: dict = {}
                        if case == "create":
                            extra = {"tag": tag}
                        elif case in ("read", "search"):
                            extra = {"ids": preload_tag, "ids_count": args.preload}
                        elif case == "complete":
                            source = f"{run_id}/create{inflight}/{target}/{round_}"
                            count = created.get((inflight, target, round_), 0)
                            if count == 0:
                                continue
                            extra = {"ids": source, "ids_count": count}
                        elif case == "task":
                            extra = {"tag": tag, "ids_count": args.count // 2 + inflight,
                                     "setup_seconds": args.preload_seconds}  # fmt: skip
                        elif case == "lock":
                            extra = {"tag": tag}
                        watch = {"server": responders[target].pid, "nats": nats_server.pid}
                        got = loadgen(url, subject, case, inflight, args.count, args.seconds, watch, **extra)
                        if case == "create":
                            created[inflight, target, round_] = got["issued"]
                        got["peak_rss"] = responders[target].peak_rss()
                        got["load"] = load_average()
                        runs[target].append(got)
                for target in TARGETS:
                    if runs[target]:
                        results["rows"][f"{case}|{inflight}|{target}"] = summarise(runs[target])
                log(progress_line(case, inflight, results["rows"]))
        for name, responder in responders.items():
            results["peak_rss"][name] = responder.peak_rss()
        return results
    finally:
        for responder in responders.values():
            try:
                responder.stop()
            except Exception as exc:
                log(f"stopping {responder.name} failed: {exc!r}")
        nats_server.stop()


def summarise(runs: List[dict]) -> dict:
    """The median run by ops/s (its latencies too), plus every round's ops/s and the errors."""
    ordered = sorted(runs, key=lambda r: r["ops_per_s"])
    median = dict(ordered[len(ordered) // 2])
    median["rounds_ops_per_s"] = [r["ops_per_s"] for r in runs]
    median["p50_median_ms"] = statistics.median(r["p50_ms"] for r in runs)
    errors: Dict[str, int] = {}
    for r in runs:
        for code, n in r["errors"].items():
            errors[code] = errors.get(code, 0) + n
    median["errors"] = errors
    return median


def progress_line(case: str, inflight: int, rows: dict) -> str:
    parts = []
    for target in TARGETS:
        row = rows.get(f"{case}|{inflight}|{target}")
        if row:
            parts.append(f"{target} {row['ops_per_s']:,.0f}/s p50 {row['p50_ms']:.2f} ms")
    return f"  {CASE_NAMES[case]} N={inflight}: " + "; ".join(parts)


# -- output ---------------------------------------------------------------------------------


def mib(value: Optional[float]) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def request_table(rows: dict, inflights=INFLIGHT) -> List[str]:
    lines = [
        f"{'case':<22} {'N':>3} {'target':<8} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'ops ratio':>9} {'p50 ratio':>9} {'CPU us/req':>10} {'nats':>5} {'gen %':>5} {'peak RSS MiB':>12}  errors",
    ]
    for case in CASES:
        for inflight in inflights:
            base = rows.get(f"{case}|{inflight}|baseline")
            for target in TARGETS:
                row = rows.get(f"{case}|{inflight}|{target}")
                if row is None:
                    continue
                ratio = p50_ratio = "-"
                if base and target != "baseline" and base["ops_per_s"]:
                    ratio = f"{row['ops_per_s'] / base['ops_per_s']:.2f}"
                    p50_ratio = f"{row['p50_median_ms'] / base['p50_median_ms']:.2f}"
                errors = ", ".join(f"{code}×{n}" for code, n in sorted(row["errors"].items())) or ""
                requests = max(1, row["requests"])
                cpu = row.get("cpu_seconds", {})
                lines.append(
                    f"{CASE_NAMES[case]:<22} {inflight:>3} {target:<8} {row['ops_per_s']:>8,.0f} "
                    f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {ratio:>9} {p50_ratio:>9} "
                    f"{cpu.get('server', 0) / requests * 1e6:>10.0f} {cpu.get('nats', 0) / requests * 1e6:>5.0f} "
                    f"{row.get('loadgen_cpu_share', 0) * 100:>5.0f} {mib(row.get('peak_rss')):>12}  {errors}"
                )
    return lines


def targets(results: dict, scale: Optional[dict]) -> List[tuple]:
    """(target text, measured text, PASS/MISS/-) for each target of issue 5."""
    rows = results.get("rows", {})
    out = []

    def ratio(case: str, inflight: int, target: str, field: str) -> Optional[float]:
        row, base = rows.get(f"{case}|{inflight}|{target}"), rows.get(f"{case}|{inflight}|baseline")
        if not row or not base or not base[field]:
            return None
        return row[field] / base[field]

    def verdict(ok: Optional[bool]) -> str:
        return "-" if ok is None else ("PASS" if ok else "MISS")

    for case, bound in (("create", 0.7), ("complete", 0.7), ("read", 0.8)):
        r = ratio(case, 64, "dev", "ops_per_s")
        out.append((f"dev {CASE_NAMES[case]} N=64 ops/s >= {bound}x baseline",
                    "-" if r is None else f"{r:.3f}x", verdict(None if r is None else r >= bound)))  # fmt: skip
    for case in ("create", "read", "complete"):
        r = ratio(case, 1, "dev", "p50_median_ms")
        out.append((f"dev {CASE_NAMES[case]} N=1 p50 <= 1.25x baseline",
                    "-" if r is None else f"{r:.3f}x", verdict(None if r is None else r <= 1.25)))  # fmt: skip
    r = ratio("create", 64, "serve", "ops_per_s")
    out.append(("serve (fsync always) promises.create N=64 ops/s >= 0.5x baseline",
                "-" if r is None else f"{r:.3f}x", verdict(None if r is None else r >= 0.5)))  # fmt: skip
    if scale and "search_small" in scale:
        small, large = scale["search_small"]["p50_ms"], scale["search_large"]["p50_ms"]
        sizes = f"{scale['search_large']['promises']:,} <= 2x at {scale['search_small']['promises']:,}"
        out.append((f"promises.search p50 at {sizes}",
                    f"{large / small:.2f}x ({small * 1000:.0f} -> {large * 1000:.0f} us)", verdict(large <= 2 * small)))  # fmt: skip
    if scale:
        per = scale["rss_per_promise_bytes"]
        out.append(("RSS per stored promise <= 1 KB (1024 B)", f"{per:.0f} B", verdict(per <= 1024)))
        for label, run in (("promise creations", scale["replay"]), ("workflow records", scale.get("replay_workflows"))):
            if not run:
                continue
            records = run.get("records", scale["promises"])
            seconds = run["seconds"] * 1_000_000 / records
            note = "" if records == 1_000_000 else f" (extrapolated from {records:,})"
            cpu = run["cpu_seconds"] * 1_000_000 / records
            out.append((f"replay of 1,000,000 records ({label}) <= 30 s",
                        f"{seconds:.1f} s, {cpu:.1f} s CPU{note}", verdict(seconds <= 30)))  # fmt: skip
    return out


def scale_table(scale: dict) -> List[str]:
    n = scale["promises"]
    lines = [f"promises stored (in process, small params): {n:,} (built in {scale['build_seconds']:.0f} s, "
             f"{scale['build_cpu_seconds']:.0f} s CPU); journal {scale['journal_mib']:.0f} MiB"]  # fmt: skip
    if scale.get("stopped_early"):
        lines.append(f"  stopped early: {scale['stopped_early']}")
    lines.append(f"RSS per promise: {scale['rss_per_promise_bytes']:.0f} B while serving "
                 f"({scale['rss_before_mib']:.0f} -> {scale['rss_after_mib']:.0f} MiB); "
                 f"{scale['replay']['rss_per_promise_bytes']:.0f} B after a replay")  # fmt: skip
    if "search_small" in scale:
        for key in ("search_small", "search_large"):
            s = scale[key]
            lines.append(f"search 'needle/*' limit 10 over {s['promises']:>9,} promises: "
                         f"p50 {s['p50_ms'] * 1000:.0f} us, p99 {s['p99_ms'] * 1000:.0f} us ({s['samples']} samples)")  # fmt: skip
    replay = scale["replay"]
    lines.append(f"replay (Journal.open + Resonate.recover) of {replay['promises']:,} records: "
                 f"{replay['seconds']:.1f} s ({replay['cpu_seconds']:.1f} s CPU)")  # fmt: skip
    if "replay_iterate_seconds" in scale:
        lines.append(f"  of which reading the journal (bench_journal.py open + iterate): {scale['replay_iterate_seconds']:.1f} s")
    mixed = scale.get("replay_workflows")
    if mixed:
        lines.append(f"replay of {mixed['records']:,} workflow records (bench_durability.py's journal: create+task, claim, "
                     f"complete): {mixed['seconds']:.1f} s ({mixed['cpu_seconds']:.1f} s CPU)")  # fmt: skip
    elif scale.get("replay_workflows_error"):
        lines.append(f"replay of bench_durability.py's journal failed: {scale['replay_workflows_error']}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a minute or two")
    parser.add_argument("--count", type=int, help="most requests per case (default 20000; quick 2000)")
    parser.add_argument("--seconds", type=float, help="most seconds per case (default 20; quick 3)")
    parser.add_argument("--rounds", type=int, help="runs of each case per responder; the median counts (default 3; quick 1)")
    parser.add_argument("--preload", type=int, help="promises stored before read/search (default 100000; quick 10000)")
    parser.add_argument("--scale", type=int, help="promises for the scale table (default 1000000; quick 100000); 0 skips it")
    parser.add_argument("--cases", nargs="*", choices=CASES, help="only these cases (default: all)")
    parser.add_argument("--inflight", nargs="*", type=int, default=list(INFLIGHT), help="values of N (default: 1 64)")
    parser.add_argument("--dev-args", default="", help="extra flags for `resonate dev` (e.g. '--workers 16')")
    parser.add_argument("--serve-args", default="", help="extra flags for `resonate serve` (e.g. '--workers 64')")
    parser.add_argument("--no-requests", action="store_true", help="only the scale table")
    parser.add_argument("--json", help="also write every number to this file")
    parser.add_argument("--dir", default=None, help="where temporary journals go (default: system temp)")
    args = parser.parse_args()
    quick = args.quick
    args.count = args.count or (2_000 if quick else 20_000)
    args.seconds = args.seconds or (3.0 if quick else 20.0)
    args.rounds = args.rounds or (1 if quick else 3)
    args.preload = args.preload if args.preload is not None else (10_000 if quick else 100_000)
    args.preload_seconds = 600.0
    args.scale = args.scale if args.scale is not None else (100_000 if quick else 1_000_000)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = time.time()
    load_start = load_average()
    version = code_version()
    log(f"bench: {'quick' if quick else 'full'} run, {args.count:,} requests or {args.seconds:g} s per case, "
        f"{args.rounds} round(s), preload {args.preload:,}, scale {args.scale:,}; python {sys.version.split()[0]}; "
        f"{os.cpu_count()} CPUs; load {load_start}")  # fmt: skip
    workdir = tempfile.mkdtemp(prefix="bench-run-", dir=args.dir)
    results: dict = {}
    scale: Optional[dict] = None
    try:
        if not args.no_requests:
            results = run_requests(args, workdir, log)
        if args.scale:
            log(f"scale: building {args.scale:,} promises in process ...")
            done = subprocess.run(
                [PY, os.path.join(HERE, "scale.py"), "--promises", str(args.scale), "--dir", workdir],
                capture_output=True, text=True, timeout=3600,
            )  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"bench/scale.py failed:\n{done.stderr[-2000:]}")
            scale = json.loads(done.stdout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_end = load_average()

    print(f"\nresonate_sync benchmark ({'quick' if quick else 'full'}): {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{os.cpu_count()} CPUs, load average {load_start} at start, {load_end} at end, "
          f"{(time.time() - started) / 60:.1f} min; code {version}")  # fmt: skip
    if results.get("rows"):
        print(f"\nrequests over NATS: {args.count:,} requests or {args.seconds:g} s per case, median of "
              f"{args.rounds} round(s); {args.preload:,} promises preloaded; ratios are against the baseline of the "
              "same case and N (ops: higher is better, p50: lower is better)")  # fmt: skip
        for name in ("dev", "serve"):
            if getattr(args, f"{name}_args"):
                print(f"extra flags for {name}: {getattr(args, f'{name}_args')}")
        for line in request_table(results["rows"], args.inflight):
            print(line)
    if scale:
        print("\nscale (in process)")
        for line in scale_table(scale):
            print(line)
    print("\ntargets (issue 5)" + (" — quick run: sizes are reduced, verdicts only indicative" if quick else ""))
    verdicts = targets(results, scale)
    width = max(len(t) for t, _, _ in verdicts) if verdicts else 0
    for text, measured, verdict in verdicts:
        print(f"  {verdict:<4}  {text:<{width}}  {measured}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "code": version, "load": [load_start, load_end], "requests": results, "scale": scale,
                       "targets": verdicts}, f, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
