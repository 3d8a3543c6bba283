"""What promise events cost the request path: the core's promises.create with events off and on.

One command::

    .venv/bin/python bench/bench_events.py [--rounds 3] [--before-tree DIR]

Each variant runs in a process of its own, alternating, ``--rounds`` times: ``off`` (no
``--events-subject``: the core tells nobody), ``on`` (an EventPublisher whose publish does
nothing, so the cost is the queueing under the lock plus the publisher thread's encoding,
competing for the GIL), and with ``--before-tree`` (an unpacked older source tree, e.g.
``git archive <commit> | tar -x -C DIR``) ``before``: that tree's core, for a before/after
comparison in the same run. Each process times ``execute_nowait`` of 20,000 creates in memory
(no journal, no NATS) seven times and reports the best; the table keeps each variant's best
over the rounds and its ratio to ``off``. The whole server's numbers come from ``bench/run.py``
(``--dev-args "--events-subject bench.events"``).
"""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CREATES = 20_000


def measure(mode: str) -> float:
    """Best seconds per create over seven runs of CREATES, in this process."""
    from resonate_sync.core import OPERATIONS, Resonate
    from resonate_sync.models import CreatePromiseRequest

    op = OPERATIONS["promises.create"]
    best = float("inf")
    for run in range(7):
        core = Resonate()
        publisher = None
        if mode == "on":
            from resonate_sync.events import EventPublisher

            publisher = EventPublisher("bench.events", lambda subject, body: None, core.wait_durable).start()
            core.on_promises = publisher.changed
        requests = [CreatePromiseRequest(id=f"p{run}-{i}", timeout=4_102_444_800_000) for i in range(CREATES)]
        started = time.perf_counter()
        for request in requests:
            core.execute_nowait(op, request)
        best = min(best, (time.perf_counter() - started) / CREATES)
        if publisher is not None:
            publisher.stop()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the variants (default 3)")
    parser.add_argument("--before-tree", help="an older source tree to compare with (its resonate_sync/ is imported)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(measure(args.measure))
        return
    variants = [("before", args.before_tree)] if args.before_tree else []
    variants += [("off", ROOT), ("on", ROOT)]
    best = {name: float("inf") for name, _ in variants}
    for _ in range(args.rounds):
        for name, tree in variants:
            env = dict(os.environ, PYTHONPATH=tree)
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--measure", "off" if name == "before" else name],
                env=env, cwd=tree, capture_output=True, text=True, check=True,
            )  # fmt: skip
            best[name] = min(best[name], float(out.stdout))
    print(f"promises.create in the core (memory, no NATS), best of {args.rounds} x 7 x {CREATES:,}")
    for name, seconds in best.items():
        print(f"  {name:<7} {seconds * 1e6:6.2f} us/create  {seconds / best['off']:.2f}x of off")


if __name__ == "__main__":
    main()
