"""Search benchmark: hostile id patterns next to a normal prefix search, through the in-process core.

A script that prints numbers, not a test. Why: a search runs under the core's one lock, so
its cost is how long every other request waits (PROTOCOL.md 13.7). For each store size
(``--sizes``: that many promises and as many schedules) and id length (``--lengths``) it
builds a ``Resonate`` in memory (no journal) whose ids are ``order-<8 digits>-aaa…``, then
times ``promises.search`` and ``schedules.search`` (limit 100) with:

- the baseline ``order-0000004*`` (ten ids, answered from the sorted id index for promises);
- ``*`` × k then ``x`` for each k of ``--stars``: no id ends in ``x``, so every stored id is
  a candidate (with a backtracking regex, each costs about C(len + k, k) steps);
- ``*-*a*a*a*a*z*``: pieces found early in each id, then one that is not there, so the
  matcher searches the whole id: the most a linear matcher spends on an id.

``one request`` is the median of ``--repeat`` first pages: how long one request holds the
lock. ``all pages`` follows the cursors to the end (the whole scan, one bounded page at a
time). ``ids/page`` is how many ids one request examines (the store, or what the scan budget
allows for that pattern), ``per id`` one request divided by them. The ratio compares one
request with the baseline of the same store and kind.

``--code DIR`` imports ``resonate_sync`` from another checkout (a ``git archive`` of an older
commit, say), to measure before and after with one script. ``--cap S`` stops any single
search after S seconds (SIGALRM; Python's ``re`` checks for signals while it backtracks)
and reports ``> S s``.

Usage::

    python bench/bench_search.py [--sizes 10000,100000] [--lengths 40,200] [--stars 25,50,100]
                                 [--repeat 5] [--cap 60] [--code DIR]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from typing import Callable, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
FAR_FUTURE_MS = 4_102_444_800_000
BASELINE = "order-0000004*"
ROW = "  {:<10} {:<10} {:>12} {:>9} {:>9} {:>12} {:>6} {:>9}"


class Capped(Exception):
    """A search ran past ``--cap``."""


def _raise_capped(*_: object) -> None:
    raise Capped()


def build(size: int, length: int):
    from resonate_sync.core import Resonate

    core = Resonate()
    for n in range(size):
        name = f"order-{n:08d}-".ljust(length, "a")
        core.promises_create(id=name, timeout=FAR_FUTURE_MS)
        core.schedules_create(id=name, cron="@every 24h", promise_id=name + "-{{.timestamp}}")
    return core


def timed(call: Callable[[], object], cap: float) -> float:
    """Seconds one call took; raises Capped after ``cap`` seconds."""
    signal.setitimer(signal.ITIMER_REAL, cap)
    try:
        started = time.perf_counter()
        call()
        return time.perf_counter() - started
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def measure(search: Callable, pattern: str, repeat: int, cap: float) -> Tuple[Optional[float], Optional[float], int]:
    """(median seconds of one request, seconds of all pages, pages); None where the cap was hit."""
    try:
        one = statistics.median(timed(lambda: search(id=pattern, limit=100), cap) for _ in range(repeat))
    except Capped:
        return None, None, 0
    pages = [0]

    def every_page() -> None:
        page = search(id=pattern, limit=100)
        pages[0] = 1
        while page.payload.cursor:
            page = search(cursor=page.payload.cursor)
            pages[0] += 1

    try:
        return one, timed(every_page, cap), pages[0]
    except Capped:
        return one, None, pages[0]


def fmt(seconds: Optional[float], cap: float) -> str:
    if seconds is None:
        return f"> {cap:g} s"
    if seconds < 1e-5:
        return f"{seconds * 1e9:.0f} ns"
    return f"{seconds * 1000:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="store sizes (promises, and as many schedules)")
    parser.add_argument("--lengths", default="40,200", help="id lengths in characters")
    parser.add_argument("--stars", default="25,50,100", help="numbers of stars before the x")
    parser.add_argument("--repeat", type=int, default=5, help="first pages timed per case (the median counts)")
    parser.add_argument("--cap", type=float, default=60.0, help="seconds after which one search is stopped")
    parser.add_argument("--code", default=None, help="the checkout whose resonate_sync is measured")
    args = parser.parse_args()
    sys.path.insert(0, args.code or os.path.dirname(HERE))
    signal.signal(signal.SIGALRM, _raise_capped)

    import resonate_sync
    from resonate_sync.core import CoreSettings

    scan_limit = getattr(CoreSettings(), "search_scan_limit", None)
    try:
        from resonate_sync.core.state import scan_cost
    except ImportError:  # code from before the scan budget: every search examines the whole store
        scan_cost = None
    print(f"code: {os.path.dirname(os.path.dirname(resonate_sync.__file__))}; search_scan_limit: {scan_limit}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load}")
    patterns: List[Tuple[str, str]] = [(BASELINE, "baseline")]
    patterns += [("*" * int(k) + "x", f"*x{int(k)}") for k in args.stars.split(",")]
    patterns.append(("*-*a*a*a*a*z*", "pieces"))
    for size in (int(s) for s in args.sizes.split(",")):
        for length in (int(n) for n in args.lengths.split(",")):
            started = time.perf_counter()
            core = build(size, length)
            built = time.perf_counter() - started
            print(f"\n{size:,} promises + {size:,} schedules, ids of {length} characters (built in {built:.1f} s)")
            print(ROW.format("kind", "pattern", "one request", "ids/page", "per id", "all pages", "pages", "ratio"))
            for kind, search in (("promises", core.promises_search), ("schedules", core.schedules_search)):
                base = None
                for pattern, name in patterns:
                    one, every, pages = measure(search, pattern, args.repeat, args.cap)
                    if name == "baseline":
                        base = one
                    examined = size if scan_cost is None else min(size, scan_limit // scan_cost(pattern))
                    per_id = fmt(one / examined, args.cap) if one is not None and name != "baseline" else ""
                    examined_text = f"{examined:,}" if name != "baseline" else ""
                    ratio = f"{one / base:.0f}x" if one is not None else f"> {args.cap / base:.0f}x"
                    cells = (fmt(one, args.cap), examined_text, per_id, fmt(every, args.cap), pages or "", ratio)
                    print(ROW.format(kind, name, *cells), flush=True)
            del core


if __name__ == "__main__":
    main()
