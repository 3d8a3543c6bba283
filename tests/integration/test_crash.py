"""``resonate serve`` as a real process: kill -9 under load, restart, damaged stores (issue 4).

Each test runs the console script on a store in ``tmp_path`` against a real nats-server and
talks to it with nats-py. What a crash left behind is read straight from the store (the same
recovery the server runs) while the server is down, so the checks see every task and callback,
not only what the API shows; after a restart the API must agree.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest

from resonate_sync.config import Config
from resonate_sync.core import Resonate, State
from resonate_sync.journal import Journal
from resonate_sync.models import PromiseState, TaskState
from resonate_sync.server import Server, ServerError

from helpers import FAR
from natsclient import NatsPyClient

RESONATE = str(Path(sys.executable).with_name("resonate"))
TEN_MINUTES = 600_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def segments(store: Path) -> List[Path]:
    return sorted(store.glob("journal-*.jsonl"))


def durable_state(store: Path) -> State:
    """What a server starting on ``store`` now would recover (run it only while none is running)."""
    journal = Journal(str(store))
    recovery = journal.open()
    try:
        return Resonate.recover(recovery.snapshot, recovery.records).state
    finally:
        journal.close()


class Serve:
    """``resonate serve`` on one store as a child process; output goes to a log file per start."""

    def __init__(self, tmp_path: Path, url: str, store: Optional[Path] = None, *extra: str, env=None) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.store = store or tmp_path / "store"
        self.subject = f"crash.{uuid.uuid4().hex[:8]}"
        self.extra = extra
        self.env = {**os.environ, **(env or {})}
        self.process: Optional[subprocess.Popen] = None
        self.log_path: Optional[Path] = None
        self.starts = 0

    def start(self) -> "Serve":
        self.starts += 1
        self.log_path = self.tmp_path / f"{self.subject}-{self.starts}.log"
        args = [RESONATE, "serve", "--store-path", str(self.store), "--api-nats-addr", self.url]
        args += ["--api-nats-subject", self.subject, "--tick", "100ms", "--api-nats-peer-window", "20ms", *self.extra]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self

    def ready(self, client: NatsPyClient, timeout: float = 20.0) -> "Serve":
        """Wait until the server answers requests (a read of a missing promise is 404)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"server exited {self.process.returncode}:\n{self.log()}"
            try:
                reply = client.send(self.subject, {"operation": "promises.read", "payload": {"id": "?"}}, timeout=0.5)
                if reply.get("error", {}).get("code") == 404:
                    return self
            except Exception:
                pass
            assert time.monotonic() < deadline, f"server not ready after {timeout} s:\n{self.log()}"
            time.sleep(0.05)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM (graceful: drain, final snapshot) and return the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)

    def exit_code(self, timeout: float = 20.0) -> int:
        """Wait for a server that should refuse to start; returns its exit code."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"server kept running:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


@pytest.fixture
def serve(tmp_path, shared_nats_server):
    """``serve(*extra_flags, store=None, env=None)`` → a not yet started :class:`Serve`; killed after the test."""
    made: List[Serve] = []

    def factory(*extra: str, store: Optional[Path] = None, env=None) -> Serve:
        server = Serve(tmp_path, shared_nats_server.url, store, *extra, env=env)
        made.append(server)
        return server

    yield factory
    for server in made:
        server.close()


def call(client: NatsPyClient, server: Serve, operation: str, payload: Dict[str, Any]) -> Dict[str, Any]:
    return client.call(server.subject, operation, payload)


def created(reply: Dict[str, Any]) -> Dict[str, Any]:
    assert reply.get("success") is True and reply["response"]["Status"] == 20100, reply
    return reply["response"]["Payload"]


def create_promises(client: NatsPyClient, server: Serve, ids: Sequence[str]) -> None:
    for pid in ids:
        created(call(client, server, "promises.create", {"id": pid, "timeout": FAR}))


# ------------------------------------------------------------------------------------------
# kill -9 under load


class Acked:
    """Everything the server acknowledged, over every round."""

    def __init__(self) -> None:
        self.promises: set = set()
        self.invoked: set = set()  # created with a resonate:invoke tag
        self.completed: set = set()
        self.callbacks: set = set()  # (leaf, root)
        self.claims: Dict[str, int] = {}  # task id -> counter
        self.tasks_done: set = set()
        self.schedules: set = set()
        self.unscheduled: set = set()
        self.locks: Dict[str, str] = {}  # resource -> execution
        self.released: set = set()
        self.sent: set = set()  # schedules and locks a delete or release was sent for (it may have applied)

    def count(self) -> int:
        return sum(len(x) for x in vars(self).values())


class Load:
    """Workers on nats-py's event loop, each sending one request after another, plus a claimer
    taking the invoke messages the server publishes; every success reply is recorded."""

    OPERATIONS = ("create", "invoke", "createtask", "complete", "callback", "schedule", "unschedule", "lock", "unlock")
    WEIGHTS = (4, 3, 2, 4, 2, 1, 1, 1, 1)

    def __init__(self, client: NatsPyClient, subject: str, acked: Acked, prefix: str, workers: int = 16) -> None:
        self.client, self.subject, self.acked, self.prefix, self.workers = client, subject, acked, prefix, workers
        self.invoke_subject = f"{subject}.invoke"
        self.resume_subject = f"{subject}.resume"
        self.tasks: List[asyncio.Task] = []
        self.inbox: "asyncio.Queue[dict]" = None  # type: ignore[assignment]
        self.subscription = None

    def start(self) -> None:
        async def go() -> None:
            self.inbox = asyncio.Queue()

            async def on_msg(msg: Any) -> None:
                self.inbox.put_nowait(json.loads(msg.data))

            self.subscription = await self.client.nc.subscribe(self.invoke_subject, cb=on_msg)
            await self.client.settle()
            self.tasks = [asyncio.ensure_future(self._worker(w)) for w in range(self.workers)]
            self.tasks.append(asyncio.ensure_future(self._claimer()))

        self.client.run(go())

    def stop(self) -> None:
        """Cancel everything in flight: a request whose reply has not arrived is not acknowledged."""

        async def go() -> None:
            # Cancel until all are done: before Python 3.12 asyncio.wait_for (inside nats-py's
            # request) swallows a cancel that lands as the reply arrives, and the worker loops on.
            pending = set(self.tasks)
            while pending:
                for task in pending:
                    task.cancel()
                _, pending = await asyncio.wait(pending, timeout=0.5)
            results = await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.subscription.unsubscribe()
            for result in results:
                if not isinstance(result, asyncio.CancelledError):
                    raise AssertionError(f"load worker failed: {result!r}")

        self.client.run(go())

    async def _call(self, operation: str, payload: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """The reply's response when it is a success, else None (errors, timeouts, no responders)."""
        data = json.dumps({"operation": operation, "payload": payload}).encode()
        try:
            msg = await self.client.nc.request(self.subject, data, timeout=3)
        except asyncio.CancelledError:
            raise
        except Exception:
            await asyncio.sleep(0.05)  # the server is down: do not spin
            return None
        reply = json.loads(msg.data)
        return reply["response"] if reply.get("success") else None

    async def _worker(self, w: int) -> None:
        rng = random.Random()
        acked = self.acked
        pending: List[str] = []  # my promises known PENDING
        schedules: List[str] = []
        locks: List[str] = []
        n = 0
        while True:
            n += 1
            name = f"{self.prefix}.w{w}.{n}"
            op = rng.choices(self.OPERATIONS, self.WEIGHTS)[0]
            invoke = {"resonate:invoke": f"nats://{self.invoke_subject}"}
            if op in ("create", "invoke"):
                payload = {"id": name, "timeout": FAR, "param": {"data": b64(name)}}
                if op == "invoke":
                    payload["tags"] = invoke
                if await self._call("promises.create", payload):
                    acked.promises.add(name)
                    pending.append(name)
                    if op == "invoke":
                        acked.invoked.add(name)
            elif op == "createtask":
                payload = {"id": name, "timeout": FAR, "tags": invoke, "taskProcessId": f"w{w}", "taskTtl": TEN_MINUTES}
                response = await self._call("promises.createtask", payload)
                if response:
                    acked.promises.add(name)
                    acked.invoked.add(name)
                    task = response["Payload"]["task"]
                    acked.claims[task["id"]] = task["counter"]
            elif op == "complete" and pending:
                pid = pending.pop(rng.randrange(len(pending)))
                payload = {"id": pid, "state": "RESOLVED", "value": {"data": b64("done:" + pid)}}
                response = await self._call("promises.complete", payload)
                if response and response["Status"] == 20100:
                    acked.completed.add(pid)
            elif op == "callback" and len(pending) >= 2:
                leaf, root = rng.sample(pending, 2)
                payload = {"promiseId": leaf, "rootPromiseId": root, "recv": f"nats://{self.resume_subject}", "timeout": FAR}
                if await self._call("promises.callback", payload):
                    acked.callbacks.add((leaf, root))
            elif op == "schedule":
                payload = {"id": name, "cron": "0 0 1 1 *", "promiseId": name + ".{{.timestamp}}", "promiseTimeout": 60_000}
                if await self._call("schedules.create", payload):
                    acked.schedules.add(name)
                    schedules.append(name)
            elif op == "unschedule" and schedules:
                sid = schedules.pop()
                acked.sent.add(sid)
                if await self._call("schedules.delete", {"id": sid}):
                    acked.unscheduled.add(sid)
            elif op == "lock":
                payload = {"resourceId": name, "executionId": "e-" + name, "processId": f"w{w}", "ttl": TEN_MINUTES}
                if await self._call("locks.acquire", payload):
                    acked.locks[name] = "e-" + name
                    locks.append(name)
            elif op == "unlock" and locks:
                rid = locks.pop()
                acked.sent.add(rid)
                if await self._call("locks.release", {"resourceId": rid, "executionId": "e-" + rid}):
                    acked.released.add(rid)

    async def _claimer(self) -> None:
        while True:
            task = (await self.inbox.get())["task"]
            payload = {"id": task["id"], "counter": task["counter"], "processId": "claimer", "ttl": TEN_MINUTES}
            response = await self._call("tasks.claim", payload)
            if response and response["Status"] == 20100:
                self.acked.claims[task["id"]] = task["counter"]
                if random.random() < 0.5:
                    done = await self._call("tasks.complete", {"id": task["id"], "counter": task["counter"]})
                    if done:
                        self.acked.tasks_done.add(task["id"])


def check_durable(state: State, acked: Acked) -> None:
    """Every acknowledged change is in ``state`` and no change in it is half-applied."""
    promises, tasks = state.promises, state.tasks
    missing = acked.promises - promises.keys()
    assert not missing, f"{len(missing)} acknowledged promises lost, e.g. {sorted(missing)[:3]}"
    for pid in acked.completed:
        promise = promises[pid]
        assert promise.state == PromiseState.RESOLVED and promise.value.data == b64("done:" + pid), promise
    for pid in acked.promises - acked.completed:
        # nothing but our own completes (acknowledged or not) may have completed it
        assert promises[pid].state in (PromiseState.PENDING, PromiseState.RESOLVED), promises[pid]
    for pid, promise in promises.items():
        if "resonate:invoke" in promise.tags:
            assert f"__invoke:{pid}" in tasks, f"promise {pid} has an invoke tag but no task"
        if promise.state != PromiseState.PENDING:
            assert pid not in state.callbacks, f"completed promise {pid} still holds callbacks"
        else:
            for callback_id in state.callbacks.get(pid, {}):
                assert callback_id not in tasks, f"{callback_id} is both a callback and a task"
    for leaf, root in acked.callbacks:
        callback_id = f"__resume:{root}:{leaf}"
        if promises[leaf].state == PromiseState.PENDING:
            assert callback_id in state.callbacks.get(leaf, {}), f"acknowledged callback {callback_id} lost"
        else:
            assert callback_id in tasks, f"{leaf} completed but its callback {callback_id} did not become a task"
    for task_id, counter in acked.claims.items():
        task = tasks[task_id]
        assert task.counter == counter and task.state in (TaskState.CLAIMED, TaskState.COMPLETED), task
    for task_id in acked.tasks_done:
        assert tasks[task_id].state == TaskState.COMPLETED, tasks[task_id]
    for task in tasks.values():
        assert task.root_promise_id in promises, f"task {task.id} of a promise that does not exist"
    assert (acked.schedules - acked.sent) <= state.schedules.keys()
    assert not (acked.unscheduled & state.schedules.keys())
    for rid, execution in acked.locks.items():
        if rid in acked.released:
            assert rid not in state.locks, f"released lock {rid} came back"
        elif rid not in acked.sent:
            assert rid in state.locks and state.locks[rid].execution_id == execution, f"acknowledged lock {rid} lost"


def crash_rounds(serve, nats_client, rounds: int) -> None:
    rng = random.Random()
    server = serve("--snapshot-every", "500")
    client = nats_client(server.url)
    acked = Acked()
    for round_no in range(rounds):
        server.start().ready(client)
        load = Load(client, server.subject, acked, prefix=f"r{round_no}")
        before = acked.count()
        load.start()
        time.sleep(rng.uniform(0.3, 1.5))
        server.kill()
        load.stop()
        assert acked.count() > before, f"round {round_no}: nothing was acknowledged:\n{server.log()}"
        assert "Traceback" not in server.log(), server.log()
        check_durable(durable_state(server.store), acked)
    # The server recovers the same: every acknowledged promise reads back as the store holds it.
    durable = durable_state(server.store).promises
    server.start().ready(client)
    served = read_promises(client, server, sorted(acked.promises))
    for pid, promise in served.items():
        assert promise["state"] == durable[pid].state and promise["param"].get("data") == durable[pid].param.data
    assert server.stop() == 0


def read_promises(client: NatsPyClient, server: Serve, ids: List[str]) -> Dict[str, dict]:
    """promises.read of every id over NATS, 256 in flight at a time (the server queues 1024); each must be 200."""
    payloads = [json.dumps({"operation": "promises.read", "payload": {"id": pid}}).encode() for pid in ids]
    replies: List[Any] = []
    for start in range(0, len(payloads), 256):
        replies += client.request_many(server.subject, payloads[start : start + 256], timeout=20)
    found = {}
    for pid, data in zip(ids, replies):
        assert not isinstance(data, BaseException), (pid, data)
        reply = json.loads(data)
        assert reply.get("success") and reply["response"]["Status"] == 20000, (pid, reply)
        found[pid] = reply["response"]["Payload"]["promise"]
    return found


class TestKillUnderLoad:
    def test_acknowledged_changes_survive_kill_9(self, serve, nats_client):
        """Four rounds of kill -9 at a random moment under mixed load: every acknowledged change survives, none is half-applied."""
        crash_rounds(serve, nats_client, rounds=4)

    @pytest.mark.slow
    def test_acknowledged_changes_survive_many_kill_9(self, serve, nats_client):
        """Twenty-five rounds of kill -9 under load, the store growing through many snapshots."""
        crash_rounds(serve, nats_client, rounds=25)


# ------------------------------------------------------------------------------------------
# deadlines that pass while the server is down


class TestDeadlinesAfterRestart:
    def test_background_jobs_catch_up_after_restart(self, serve, nats_client):
        """Deadlines that passed while the server was down are handled by the restarted server's
        background jobs, with no request touching them: a promise times out (and its callback
        becomes a task), an expired lease is revoked with counter+1 and resent, a schedule fires
        every occurrence it missed, and an expired lock is gone."""
        server = serve().start()
        client = nats_client(server.url)
        server.ready(client)
        invoke, resume = f"{server.subject}.invoke", f"{server.subject}.resume"
        invokes, resumes = client.inbox(invoke), client.inbox(resume)
        soon = now_ms() + 2000
        create_promises(client, server, ["root"])
        created(call(client, server, "promises.create", {"id": "times-out", "timeout": soon}))
        created(call(client, server, "promises.callback", {"promiseId": "times-out", "rootPromiseId": "root", "recv": f"nats://{resume}", "timeout": FAR}))
        leased = {"id": "leased", "timeout": FAR, "tags": {"resonate:invoke": f"nats://{invoke}"}, "taskProcessId": "w", "taskTtl": 1500}
        task = created(call(client, server, "promises.createtask", leased))["task"]
        assert task["counter"] == 1
        created(call(client, server, "schedules.create", {"id": "every", "cron": "@every 1s", "promiseId": "every.{{.timestamp}}", "promiseTimeout": TEN_MINUTES}))
        created(call(client, server, "locks.acquire", {"resourceId": "res", "executionId": "e", "processId": "p", "ttl": 1500}))
        server.kill()
        killed_at = now_ms()
        down = durable_state(server.store)
        assert down.promises["times-out"].state == PromiseState.PENDING
        assert down.tasks["__invoke:leased"].state == TaskState.CLAIMED and "res" in down.locks
        time.sleep(max(0.0, (soon + 500 - now_ms()) / 1000))  # every deadline passes while it is down

        restarted_at = now_ms()
        server.start().ready(client)
        resent = invokes.get(timeout=10)["task"]
        assert (resent["id"], resent["counter"]) == ("__invoke:leased", 2)
        resumed = resumes.get(timeout=10)
        assert resumed["type"] == "resume" and resumed["task"]["id"] == "__resume:root:times-out"
        server.kill()  # what the first background pass did was durable before it sent anything

        state = durable_state(server.store)
        timed_out = state.promises["times-out"]
        assert timed_out.state == PromiseState.REJECTED_TIMEDOUT and timed_out.completed_on == soon
        assert "res" not in state.locks
        fired = sorted(int(pid.split(".")[1]) for pid in state.promises if pid.startswith("every."))
        missed = [at for at in fired if at > killed_at]
        assert len(missed) >= 2, fired
        assert all(b - a == 1000 for a, b in zip(fired, fired[1:])), f"occurrences skipped: {fired}"
        assert state.schedules["every"].next_run_time > restarted_at


# ------------------------------------------------------------------------------------------
# damaged or unusable stores: what the process does


def assert_refused(server: Serve, *phrases: str) -> str:
    """The server exited 1 with one clear error naming ``phrases``, and no traceback."""
    code = server.exit_code()
    log = server.log()
    assert code == 1, log
    assert "Traceback" not in log, log
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1, log
    for phrase in phrases:
        assert phrase in errors[0], log
    return errors[0]


IDS = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def templates(tmp_path_factory, shared_nats_server) -> Dict[str, Path]:
    """Stores in which a real server acknowledged promises a, b, c, d, one create per record:
    "killed" was left by kill -9 (one segment, no snapshot), "stopped" by SIGTERM (a snapshot)."""
    base = tmp_path_factory.mktemp("templates")
    server = Serve(base, shared_nats_server.url)
    client = NatsPyClient(shared_nats_server.url)
    try:
        create_promises(client, server.start().ready(client), IDS)
        server.kill()
        shutil.copytree(server.store, base / "killed")
        server.start().ready(client)
        assert server.stop() == 0
        shutil.copytree(server.store, base / "stopped")
    finally:
        server.close()
        client.close()
    return {"killed": base / "killed", "stopped": base / "stopped"}


@pytest.fixture
def killed_store(templates, tmp_path) -> Path:
    return Path(shutil.copytree(templates["killed"], tmp_path / "store"))


@pytest.fixture
def stopped_store(templates, tmp_path) -> Path:
    return Path(shutil.copytree(templates["stopped"], tmp_path / "store"))


class TestStoreProblems:
    def test_second_server_on_the_same_store_exits(self, serve, nats_client):
        """A second serve on a store in use exits 1 naming the first's pid; the first keeps serving."""
        first = serve().start()
        client = nats_client(first.url)
        first.ready(client)
        second = serve(store=first.store).start()
        assert_refused(second, str(first.store), "already in use by another resonate process", f"(pid {first.process.pid})")
        create_promises(client, first, ["still-serving"])

    def test_torn_tail_is_dropped_with_a_warning(self, serve, nats_client, killed_store):
        """A half-written last line (a crash mid-write) is dropped with a warning naming it; everything acknowledged is there."""
        [tail] = segments(killed_store)
        whole = tail.stat().st_size
        with open(tail, "ab") as file:
            file.write(b'{"seq":5,"crc":12345,"r":{"type":"PutPro')
        server = serve(store=killed_store).start()
        client = nats_client(server.url)
        server.ready(client)
        warnings = [line for line in server.log().splitlines() if " WARNING " in line and str(tail) in line]
        assert len(warnings) == 1 and "torn line" in warnings[0], server.log()
        assert tail.stat().st_size == whole
        assert set(read_promises(client, server, IDS)) == set(IDS)
        assert "Traceback" not in server.log()

    def test_corrupt_middle_record_stops_startup_and_changes_nothing(self, serve, killed_store):
        """A damaged record before the end exits 1 naming file, byte and checksum, and leaves the file as it was."""
        [tail] = segments(killed_store)
        lines = tail.read_bytes().splitlines(keepends=True)
        lines[1] = lines[1].replace(b'"b"', b'"B"')
        tail.write_bytes(b"".join(lines))
        server = serve(store=killed_store).start()
        assert_refused(server, str(tail), f"byte {len(lines[0])}", "checksum mismatch")
        assert tail.read_bytes() == b"".join(lines)

    def test_corrupt_snapshot_stops_startup(self, serve, stopped_store):
        """A snapshot whose state does not match its checksum exits 1 naming the snapshot file."""
        [snapshot] = stopped_store.glob("snapshot-*.json")
        snapshot.write_bytes(snapshot.read_bytes().replace(b'"id":"a"', b'"id":"A"'))
        server = serve(store=stopped_store).start()
        assert_refused(server, str(snapshot), "checksum mismatch in snapshot entry")

    def test_verified_record_that_does_not_rebuild_stops_startup(self, serve, killed_store):
        """A record with a good checksum that is not a state change exits 1 naming its seq."""
        journal = Journal(str(killed_store))
        journal.open()
        journal.wait_durable(journal.append([{"type": "NoSuchRecord"}]))
        journal.close()
        server = serve(store=killed_store).start()
        assert_refused(server, str(killed_store), f"cannot rebuild the state from journal record seq {len(IDS) + 1}")

    def test_missing_directories_are_created(self, serve, nats_client, tmp_path):
        """A store path whose directories do not exist yet is created, and serves."""
        server = serve(store=tmp_path / "new" / "dirs" / "store").start()
        client = nats_client(server.url)
        create_promises(client, server.ready(client), ["a"])
        assert (server.store / "LOCK").exists() and segments(server.store)

    def test_uncreatable_directory_stops_startup(self, serve, tmp_path):
        """A store path below a regular file exits 1 saying the directory cannot be created."""
        (tmp_path / "file").write_text("x")
        server = serve(store=tmp_path / "file" / "store").start()
        assert_refused(server, "cannot create the journal directory")

    def test_read_only_directory_stops_startup(self, serve, killed_store):
        """A store whose directory became read-only exits 1 at startup, not at its first snapshot."""
        with read_only(killed_store):
            server = serve(store=killed_store).start()
            assert_refused(server, str(killed_store), "read-only")

    def test_disk_full_fails_every_request_until_restart(self, serve, nats_client, tmp_path):
        """With the disk full (an injected ENOSPC) every request answers 500 and the log says why once;
        after a restart with space again, everything acknowledged before is there."""
        inject = tmp_path / "inject"
        inject.mkdir()
        (inject / "sitecustomize.py").write_text(DISK_FULL)
        full = tmp_path / "disk-is-full"
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(inject), os.environ.get("PYTHONPATH")])), "DISK_FULL_WHEN": str(full)}
        server = serve(env=env).start()
        client = nats_client(server.url)
        create_promises(client, server.ready(client), ["before"])
        full.touch()
        for operation, payload in [
            ("promises.create", {"id": "during", "timeout": FAR}),
            ("promises.read", {"id": "before"}),
            ("promises.create", {"id": "during-2", "timeout": FAR}),
        ]:
            reply = call(client, server, operation, payload)
            assert reply["success"] is False and reply["error"]["code"] == 500, reply
        assert server.process.poll() is None  # it keeps running and answering
        server.kill()
        log = server.log()
        said = [line for line in log.splitlines() if "every request fails (500) until the server is restarted" in line]
        assert len(said) == 1 and "No space left on device" in said[0], log
        full.unlink()
        server.start().ready(client)
        assert set(read_promises(client, server, ["before"])) == {"before"}
        assert call(client, server, "promises.read", {"id": "during"})["error"]["code"] == 404


class TestStartFailureReleasesTheStore:
    """In process: whatever stops Server.start(), the store is unlocked again (an embedding
    application may retry in the same process)."""

    def reopens(self, store: Path) -> bool:
        journal = Journal(str(store))
        journal.open()
        journal.close()
        return True

    def test_nats_unreachable(self, tmp_path):
        """A server whose NATS cannot be reached raises ServerError and leaves its store unlocked."""
        config = Config(store_path=str(tmp_path / "store"), nats_addr="nats://127.0.0.1:1", embedded_nats="never")
        with pytest.raises(ServerError, match="cannot serve on"):
            Server(config).start()
        assert self.reopens(tmp_path / "store")

    def test_store_that_does_not_rebuild(self, killed_store, shared_nats_server):
        """A store whose records verify but do not rebuild raises ServerError and leaves the store unlocked."""
        journal = Journal(str(killed_store))
        journal.open()
        journal.wait_durable(journal.append([{"type": "NoSuchRecord"}]))
        journal.close()
        config = Config(store_path=str(killed_store), nats_addr=shared_nats_server.url, embedded_nats="never")
        with pytest.raises(ServerError, match="cannot rebuild the state"):
            Server(config).start()
        assert self.reopens(killed_store)


DISK_FULL = """
import errno, os
_when = os.environ["DISK_FULL_WHEN"]

def _failing(real):
    def call(fd, *args):
        if os.path.exists(_when) and os.readlink(f"/proc/self/fd/{fd}").endswith(".jsonl"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, *args)
    return call

os.write = _failing(os.write)
os.fsync = _failing(os.fsync)
"""


class read_only:
    """Make a directory unwritable for the block: chattr +i as root (permission bits do not stop root), chmod otherwise."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i", str(self.path)], check=True)
        else:
            self.path.chmod(0o500)
        return self.path

    def __exit__(self, *exc_info: Any) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(self.path)], check=True)
        else:
            self.path.chmod(0o700)
