"""Concurrency of the core: many threads racing on the same resources of one ``Resonate``.

Every operation must be atomic and linearizable (PROTOCOL.md 1.1, 10.4): of N racing
requests exactly one wins, the others get the answer the tables give for the winner's
result, and afterwards the indexes agree with the data and the journal replays to the same
state. Threads start together on a barrier, and the interpreter switches threads as often as
it can while a test runs, to make interleavings likely.
"""

import random
import sys
import threading
from typing import Any, Callable, Dict, List

import pytest

from resonate_sync.core import CoreSettings, FakeClock, Resonate
from resonate_sync.errors import ResonateError
from resonate_sync.models import Value

from state_invariants import ListJournal, assert_indexes_consistent, assert_replay_equivalent

THREADS = 16
ROUNDS = 12
FAR = 1_700_000_000_000 + 3_600_000
ALREADY = {"RESOLVED": 40300, "REJECTED": 40301, "REJECTED_CANCELED": 40302, "REJECTED_TIMEDOUT": 40303}
ACTIVE = (2, 4)  # ENQUEUED, CLAIMED


class SnapshotJournal(ListJournal):
    """ListJournal that also lets ``Resonate.snapshot()`` be called (for consistent samples)."""

    def begin_snapshot(self) -> int:
        return self.appends


@pytest.fixture(autouse=True)
def frequent_thread_switches():
    """Switch threads every microsecond so racing requests interleave (restored afterwards)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.fixture
def core():
    journal = SnapshotJournal()
    resonate = Resonate(FakeClock(1_700_000_000_000), settings=CoreSettings(cursor_secret=b"c" * 32), journal=journal)
    yield resonate
    assert_indexes_consistent(resonate.state)
    assert_replay_equivalent(resonate.state, journal.records)


def race(n: int, call: Callable[[int], Any], timeout: float = 10.0) -> List[Any]:
    """Run ``call(i)`` for i in 0..n-1 on n threads released together; returns results or errors."""
    barrier = threading.Barrier(n)
    outcomes: List[Any] = [None] * n

    def worker(i: int) -> None:
        barrier.wait(timeout)
        try:
            outcomes[i] = call(i)
        except ResonateError as error:
            outcomes[i] = error
        except BaseException as error:  # noqa: B036 - a crash in a thread must fail the test
            outcomes[i] = ("crash", error)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a racing thread did not finish"
    crashes = [o for o in outcomes if isinstance(o, tuple)]
    assert not crashes, f"a thread crashed: {crashes[0][1]!r}"
    return outcomes


def statuses(outcomes: List[Any]) -> List[int]:
    """The 5-digit status of every outcome (a result's status, an error's status)."""
    return [int(o.status) for o in outcomes]


def winners(outcomes: List[Any]) -> List[int]:
    return [i for i, o in enumerate(outcomes) if not isinstance(o, ResonateError) and int(o.status) == 20100]


class TestRaces:
    def test_concurrent_completes_of_one_promise(self, core):
        """Of racing completes exactly one transitions the promise; every other gets 200 or 403 as 4.2 says for the winner's state."""
        states = ("RESOLVED", "REJECTED", "REJECTED_CANCELED", "REJECTED_TIMEDOUT")
        rng = random.Random(7)
        for round_ in range(ROUNDS):
            pid = f"complete-{round_}"
            core.promises_create(id=pid, timeout=FAR)
            requests = [
                dict(state=rng.choice(states), key=rng.choice(("shared", f"own-{i}", "")), strict=rng.random() < 0.5,
                     value=Value(data="b2s=") if i % 2 else Value(headers={"i": str(i)}))
                for i in range(THREADS)
            ]
            outcomes = race(THREADS, lambda i: core.promises_complete(
                id=pid, state=requests[i]["state"], value=requests[i]["value"],
                idempotency_key=requests[i]["key"], strict=requests[i]["strict"]))
            won = winners(outcomes)
            assert len(won) == 1, f"round {round_}: winners {won}, statuses {statuses(outcomes)}"
            w = requests[won[0]]
            final = core.promises_read(id=pid).payload.promise
            assert final.state == w["state"] and final.value == w["value"]
            assert final.idempotency_key_for_complete == (w["key"] or None)
            for i, outcome in enumerate(outcomes):
                if i == won[0]:
                    continue
                req = requests[i]
                match = bool(req["key"]) and req["key"] == w["key"]
                if (match and (not req["strict"] or req["state"] == final.state)) or (
                    not req["strict"] and final.state == "REJECTED_TIMEDOUT"
                ):
                    assert not isinstance(outcome, ResonateError) and int(outcome.status) == 20000, (i, req, outcome)
                    assert outcome.payload.promise == final
                else:
                    assert isinstance(outcome, ResonateError), (i, req, outcome)
                    assert outcome.status == ALREADY[final.state] and outcome.code == 403

    def test_concurrent_claims_of_one_task(self, core):
        """Of racing claims of one task with the right counter exactly one wins; the rest are told it is claimed (403)."""
        for round_ in range(ROUNDS):
            pid = f"claim-{round_}"
            core.promises_create(id=pid, timeout=FAR, tags={"resonate:invoke": "poll://any@default"})
            task_id = f"__invoke:{pid}"
            outcomes = race(THREADS, lambda i: core.tasks_claim(id=task_id, counter=1, process_id=f"w{i}", ttl=60_000))
            won = winners(outcomes)
            assert len(won) == 1, f"round {round_}: winners {won}"
            assert all(o.status == 40305 and o.code == 403 for i, o in enumerate(outcomes) if i != won[0])
            task = core.state.tasks[task_id]
            assert task.state == 4 and task.process_id == f"w{won[0]}" and task.counter == 1
            # racing completes of the claimed task: one 201, the rest 200 (already completed, 3.16)
            outcomes = race(THREADS, lambda i: core.tasks_complete(id=task_id, counter=1))
            assert sorted(statuses(outcomes)) == [20000] * (THREADS - 1) + [20100]
            assert core.state.tasks[task_id].state == 8

    def test_concurrent_drops_then_claims_with_stale_counters(self, core):
        """Racing drops of a claimed task: one wins and bumps the counter; then claims with the old counter all fail."""
        core.promises_create(id="drop", timeout=FAR, tags={"resonate:invoke": "poll://any@default"})
        core.tasks_claim(id="__invoke:drop", counter=1, process_id="w", ttl=60_000)
        outcomes = race(THREADS, lambda i: core.tasks_drop(id="__invoke:drop", counter=1))
        won = winners(outcomes)
        assert len(won) == 1
        # the losers saw either the INIT task (200, no-op) or nothing else (3.17)
        assert all(int(o.status) == 20000 for i, o in enumerate(outcomes) if i != won[0])
        assert core.state.tasks["__invoke:drop"].counter == 2
        outcomes = race(THREADS, lambda i: core.tasks_claim(id="__invoke:drop", counter=1 + i % 2, process_id=f"w{i}"))
        won = winners(outcomes)
        assert len(won) == 1 and won[0] % 2 == 1, "only a claim with the new counter may win"
        for i, o in enumerate(outcomes):
            if i != won[0]:
                assert isinstance(o, ResonateError) and o.status in (40305, 40307)

    def test_concurrent_lock_acquires(self, core):
        """Of racing acquires of one resource by different executions exactly one wins; the rest get 403 (40304)."""
        for round_ in range(ROUNDS):
            resource = f"resource-{round_}"
            outcomes = race(THREADS, lambda i: core.locks_acquire(
                resource_id=resource, execution_id=f"e{i}", process_id=f"p{i}", ttl=60_000))
            won = winners(outcomes)
            assert len(won) == 1, f"round {round_}: winners {won}"
            assert all(o.status == 40304 and o.code == 403 for i, o in enumerate(outcomes) if i != won[0])
            assert core.state.locks[resource].execution_id == f"e{won[0]}"
            # racing releases by every execution: only the holder's succeeds
            outcomes = race(THREADS, lambda i: core.locks_release(resource_id=resource, execution_id=f"e{i}"))
            assert [i for i, o in enumerate(outcomes) if not isinstance(o, ResonateError)] == won
            assert all(o.status == 40402 for i, o in enumerate(outcomes) if i != won[0])
            assert resource not in core.state.locks

    def test_concurrent_creates_without_key(self, core):
        """Of racing creates of one id without a key exactly one creates it (201) and the rest get 409."""
        for round_ in range(ROUNDS):
            pid = f"create-{round_}"
            outcomes = race(THREADS, lambda i: core.promises_create(
                id=pid, timeout=FAR, param=Value(headers={"i": str(i)}), tags={"resonate:invoke": "default"}))
            won = winners(outcomes)
            assert len(won) == 1, f"round {round_}: winners {won}"
            assert all(o.status == 40900 and o.code == 409 for i, o in enumerate(outcomes) if i != won[0])
            assert core.state.promises[pid].param == Value(headers={"i": str(won[0])})
            assert core.state.tasks[f"__invoke:{pid}"].counter == 1

    def test_concurrent_creates_with_one_key(self, core):
        """Racing creates with the same key: one 201, the rest 200 with the same promise (3.3)."""
        outcomes = race(THREADS, lambda i: core.promises_create(id="keyed", timeout=FAR, idempotency_key="k"))
        assert sorted(statuses(outcomes)) == [20000] * (THREADS - 1) + [20100]
        assert all(o.payload.promise == outcomes[0].payload.promise for o in outcomes)


class TestMixedWorkload:
    def test_mixed_workload_with_ticker(self, core):
        """Workers, a ticker moving the clock and delivering, and a sampler, all at once: the invariants hold throughout."""
        clock: FakeClock = core.clock
        stop = threading.Event()
        errors: List[BaseException] = []
        deliveries: List[Any] = []
        delivery_lock = threading.Lock()
        created_201: Dict[str, List[Any]] = {}
        claims_won: List[str] = []
        bookkeeping = threading.Lock()
        ids = [f"m{i}" for i in range(48)]

        def guarded(body: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    body()
                except BaseException as error:  # noqa: B036
                    errors.append(error)
                    stop.set()
            return run

        def ticker() -> None:
            rng = random.Random(1)
            while not stop.is_set():
                clock.advance(rng.choice((0, 10, 100, 1_000)))
                sent = core.tick()
                with delivery_lock:
                    deliveries.extend(sent)
                # Every send succeeds here: a failed send leaves the task INIT with the same counter,
                # and a worker holding that old delivery may then claim it straight from INIT while
                # a sibling is active, which 3.15 allows. The model-based test covers failed sends.
                core.record_deliveries([(d, True) for d in sent])

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(250):
                if stop.is_set():
                    return
                pid = rng.choice(ids)
                op = rng.choice((0, 0, 1, 2, 3, 4, 4, 4, 5, 6, 7))
                try:
                    if op == 0:
                        tags = {"resonate:invoke": "poll://any@default"} if rng.random() < 0.7 else {}
                        core.promises_create(id=pid, timeout=clock.now() + rng.choice((500, 60_000, 600_000)),
                                             tags=tags, idempotency_key=rng.choice(("", "k")))
                    elif op == 1:
                        state = rng.choice(tuple(ALREADY))
                        result = core.promises_complete(id=pid, state=state, idempotency_key=rng.choice(("", "k")))
                        if int(result.status) == 20100:
                            with bookkeeping:
                                created_201.setdefault(pid, []).append(result.payload.promise)
                    elif op == 2:
                        core.promises_callback(promise_id=pid, root_promise_id=rng.choice(ids), recv="poll://r",
                                               timeout=clock.now() + 60_000)
                    elif op == 3:
                        core.promises_subscribe(id=f"s{seed}", promise_id=pid, recv="poll://r",
                                                timeout=clock.now() + 60_000)
                    elif op == 4:
                        with delivery_lock:
                            delivery = rng.choice(deliveries) if deliveries else None
                        if delivery is not None:
                            core.tasks_claim(id=delivery.task_id, counter=delivery.counter, process_id=f"w{seed}",
                                             ttl=rng.choice((0, 2_000, 60_000)))
                            claims_won.append(delivery.task_id)
                            action = rng.choice((core.tasks_complete, core.tasks_drop, None))
                            if action is not None:
                                action(id=delivery.task_id, counter=delivery.counter)
                    elif op == 5:
                        core.promises_search(id=rng.choice(("*", "m1*", "m*")), limit=rng.choice((1, 3, 100)))
                    elif op == 6:
                        core.locks_acquire(resource_id=rng.choice(("l1", "l2")), execution_id=f"e{seed}",
                                           process_id=f"w{seed}", ttl=rng.choice((0, 5_000)))
                        core.locks_heartbeat(process_id=f"w{seed}")
                    else:
                        core.tasks_heartbeat(process_id=f"w{seed}")
                        core.locks_release(resource_id=rng.choice(("l1", "l2")), execution_id=f"e{seed}")
                except ResonateError as error:
                    assert error.code in (400, 403, 404, 409), repr(error)

        def sampler() -> None:
            counters: Dict[str, int] = {}
            completed: Dict[str, Any] = {}
            while not stop.is_set():
                _, snapshot = core.snapshot()
                for p in snapshot["promises"]:
                    if p.state != "PENDING":
                        assert completed.setdefault(p.id, p) == p, f"completed promise {p.id} changed"
                    else:
                        assert p.id not in completed, f"promise {p.id} went back to PENDING"
                active: Dict[str, int] = {}
                for t in snapshot["tasks"]:
                    assert t.counter >= counters.get(t.id, 1), f"counter of {t.id} went down"
                    counters[t.id] = t.counter
                    if t.state in ACTIVE:
                        active[t.root_promise_id] = active.get(t.root_promise_id, 0) + 1
                # workers claim only delivered tasks, so per-root serialisation (6.2) must hold strictly
                assert all(n == 1 for n in active.values()), f"two active tasks of one root: {active}"

        threads = [threading.Thread(target=guarded(ticker), daemon=True),
                   threading.Thread(target=guarded(sampler), daemon=True)]
        workers = [threading.Thread(target=guarded(lambda s=s: worker(s)), daemon=True) for s in range(THREADS)]
        for thread in threads + workers:
            thread.start()
        for thread in workers:
            thread.join(20)
            assert not thread.is_alive(), "a worker did not finish"
        stop.set()
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive()
        assert not errors, f"{len(errors)} thread(s) failed; first: {errors[0]!r}"

        # a final pass settles what was handed out; then every invariant on the final state
        core.record_deliveries([(d, True) for d in core.tick()])
        for pid, wins in created_201.items():
            assert len(wins) == 1, f"promise {pid} was completed {len(wins)} times"
            assert core.state.promises[pid] == wins[0], f"promise {pid} changed after its completion"
        assert set(core.state.promises) <= set(ids)
        assert deliveries and claims_won and created_201, "the workload should deliver, claim and complete"
        print(f"{len(deliveries)} deliveries, {len(claims_won)} claims won, {len(created_201)} promises completed, "
              f"{len(core.state.tasks)} tasks, clock +{clock.now() - 1_700_000_000_000} ms")
