"""The official Resonate Python SDK runs its durable functions on resonate_sync (issue 14).

Everything is real: a nats-server, ``resonate serve`` as a process with its journal, SDK worker
processes (``sdk_worker.py``: group ``app`` runs workflows, group ``helpers`` runs ``greet``)
and an SDK client in this process (group ``caller``), all through ``resonate_sync.sdk``. The
functions use the SDK's default routing (``poll://any@<group>``, no ``nats://`` target), which
the server delivers under a poll prefix of each test's own.

Needs Python 3.12+ and the SDK: ``tox -e sdk`` (what the README's test command runs after the
main suite). Elsewhere the module is skipped, saying why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

if sys.version_info < (3, 12):
    pytest.skip("the Resonate SDK (resonate-sdk 0.5-0.6) needs Python 3.12+: run tox -e sdk", allow_module_level=True)
pytest.importorskip("resonate", reason="resonate-sdk is not installed: pip install -e '.[sdk]' (or run tox -e sdk)")

from resonate import Resonate  # noqa: E402

from resonate_sync import Client  # noqa: E402
from resonate_sync.sdk import NatsMessageSource, NatsStore  # noqa: E402

from helpers import poll  # noqa: E402
from natsclient import NatsPyClient  # noqa: E402
from test_crash import RESONATE, Serve  # noqa: E402

WORKER = str(Path(__file__).with_name("sdk_worker.py"))


class Worker:
    """``sdk_worker.py GROUP`` as a child process; its output goes to a file the test reads."""

    def __init__(self, tmp_path: Path, group: str, env: Dict[str, str]) -> None:
        self.group = group
        self.log_path = tmp_path / f"worker-{group}-{uuid.uuid4().hex[:6]}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, WORKER, group], stdout=log, stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self, word: str) -> List[str]:
        return [line for line in self.log().splitlines() if line.startswith(word + " ")]

    def ready(self) -> "Worker":
        poll(lambda: self.lines("ready") or self.process.poll() is not None, timeout=30)
        assert self.process.poll() is None, f"worker {self.group} exited {self.process.returncode}:\n{self.log()}"
        return self

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()


class Stack:
    """One ``resonate serve`` on its own subject, store and poll prefix; its workers; a caller in this process."""

    def __init__(self, tmp_path: Path, nats_url: str) -> None:
        self.tmp_path = tmp_path
        self.prefix = f"sdk{uuid.uuid4().hex[:8]}.recv"
        self.server = Serve(tmp_path, nats_url, None, "--delivery-poll-prefix", self.prefix)
        self.nats_url = nats_url
        self.workers: List[Worker] = []
        self.closers: List[Callable[[], None]] = []
        self.env = {**os.environ, "SDK_URL": nats_url, "SDK_SUBJECT": self.server.subject, "SDK_PREFIX": self.prefix}
        self.caller: Optional[Resonate] = None
        self.client: Optional[Client] = None

    def start(self, probe: NatsPyClient) -> "Stack":
        self.server.start().ready(probe)
        self.client = Client(self.nats_url, self.server.subject)
        self.closers.append(self.client.close)
        return self

    def worker(self, group: str, **env: str) -> Worker:
        worker = Worker(self.tmp_path, group, {**self.env, **env})
        self.workers.append(worker)
        return worker

    def call(self, id: str, function: str, *args: object) -> "Handle":  # noqa: F821 - the SDK's Handle
        """Start ``function`` on group app through the SDK, as an application would; returns its handle."""
        if self.caller is None:
            store = NatsStore(self.nats_url, subject=self.server.subject)
            self.caller = Resonate(store=store, message_source=NatsMessageSource(self.nats_url, "caller", prefix=self.prefix))
            self.caller.start()
            self.closers += [store.close, self.caller.stop]
        return self.caller.options(target="app").begin_rpc(id, function, *args)

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        for worker in self.workers:
            worker.close()
        self.server.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_nats_server):
    """One server with one app worker and one helpers worker, for the tests that disturb nothing."""
    made = Stack(tmp_path_factory.mktemp("sdk"), shared_nats_server.url)
    probe = NatsPyClient(shared_nats_server.url)
    try:
        made.start(probe)
        app, helpers = made.worker("app"), made.worker("helpers")
        app.ready(), helpers.ready()
        made.app, made.helpers = app, helpers
        yield made
    finally:
        made.close()
        probe.close()


@pytest.fixture
def own_stack(tmp_path, shared_nats_server, nats_client):
    """A server of this test's own, to kill; no workers yet."""
    made = Stack(tmp_path, shared_nats_server.url)
    made.probe = nats_client(shared_nats_server.url)
    yield made.start(made.probe)
    made.close()


def run_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


class TestDurableFunctions:
    def test_rpc_runs_the_callee_on_a_second_worker_process(self, stack):
        """A workflow's ctx.rpc reaches group helpers through the server; the result comes back to the caller."""
        id = run_id("wf")
        assert stack.call(id, "workflow", "Ada").result(timeout=30) == "Hello, Ada!"
        assert [line.split()[1:] for line in stack.helpers.lines("greet")][-1] == ["Ada", str(stack.helpers.pid)]
        assert stack.client.promises_read(id).state == "RESOLVED"

    def test_a_durable_sleep_is_a_promise_the_server_resolves_on_time(self, stack):
        """ctx.sleep(1) suspends the workflow; the server resolves the sleep's promise at its timeout and it resumes."""
        id = run_id("sleep")
        started = time.monotonic()
        assert stack.call(id, "sleeper", 1).result(timeout=30) == "slept 1"
        assert time.monotonic() - started >= 1.0
        sleeps = [p for p in stack.client.promises_search_all(f"{id}.*") if p.tags.get("resonate:timeout") == "true"]
        assert len(sleeps) == 1 and sleeps[0].state == "RESOLVED"
        assert sleeps[0].completed_on >= sleeps[0].timeout

    def test_fan_out_and_in_of_ten_calls(self, stack):
        """Ten rpcs started at once all run on group helpers and come back in order."""
        id = run_id("fan")
        assert stack.call(id, "fanout", 10).result(timeout=60) == [f"Hello, n{i}" for i in range(10)]

    def test_a_workflow_waits_for_a_person_to_resolve_a_promise(self, stack):
        """The workflow waits on a promise until `resonate promises resolve` completes it; then it finishes."""
        id = run_id("approve")
        handle = stack.call(id, "approval", "Grace")
        approval = f"approval-{id}"
        poll(lambda: any(line.split()[1] == approval for line in stack.app.lines("waiting")), timeout=30)
        assert not handle.done()
        cli = [RESONATE, "promises", "resolve", approval, "--data", '"approved"']
        env = {**os.environ, "RESONATE_API_NATS_ADDR": stack.nats_url, "RESONATE_API_NATS_SUBJECT": stack.server.subject}
        subprocess.run(cli, env=env, check=True, capture_output=True, timeout=60)
        assert handle.result(timeout=30) == "Grace: approved"

    def test_a_schedule_starts_a_workflow(self, stack):
        """A schedule created through the SDK's store creates promises that group app runs."""
        id = run_id("sched")
        stack.call(run_id("warm"), "workflow", "x").result(timeout=30)  # the caller (and its store) is up
        schedules = stack.caller.schedules
        schedules.create(
            id, "@every 1s", f"{id}.{{{{.timestamp}}}}", 60_000,
            promise_data='{"func": "scheduled", "args": [], "kwargs": {}, "version": 1}',
            promise_tags={"resonate:invoke": "poll://any@app"},
        )
        try:
            def ran():
                return [p for p in stack.client.promises_search_all(f"{id}.*", states=["RESOLVED"])]
            resolved = poll(ran, timeout=30)
        finally:
            schedules.delete(id)
        assert resolved[0].value.raw == b'"tick"'
        assert any(line.split()[1] == resolved[0].id for line in stack.app.lines("scheduled"))


class TestExample:
    def test_the_readme_example_runs_an_rpc_on_a_second_process_and_a_durable_sleep(self, own_stack):
        """examples/sdk_workflow.py, run as a user runs it, prints the workflow's result and exits 0."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESONATE_")}
        env.update(RESONATE_API_NATS_ADDR=own_stack.nats_url, RESONATE_API_NATS_SUBJECT=own_stack.server.subject,
                   RESONATE_DELIVERY_POLL_PREFIX=own_stack.prefix)
        example = Path(__file__).resolve().parents[2] / "examples" / "sdk_workflow.py"
        done = subprocess.run([sys.executable, str(example)], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "result: Hello, world, after a durable sleep" in done.stdout
        greeter = next(line for line in done.stdout.splitlines() if line.startswith("greeter ") and "greeting" in line)
        assert greeter.split()[1] != str(os.getpid())


class TestCrashes:
    def test_kill_9_of_a_worker_mid_workflow_another_of_its_group_finishes_it(self, own_stack):
        """The worker running a workflow is killed in a step; its lease lapses and the other app worker finishes it."""
        helpers = own_stack.worker("helpers")
        first, second = own_stack.worker("app", SDK_TTL="2"), own_stack.worker("app", SDK_TTL="2")
        for worker in (helpers, first, second):
            worker.ready()
        id = run_id("slow")
        handle = own_stack.call(id, "slow", "Edsger", 3)
        victim = poll(lambda: next((w for w in (first, second) if w.lines("pausing")), None), timeout=30)
        victim.kill()
        survivor = second if victim is first else first
        assert handle.result(timeout=60) == "Hello, Edsger after 3"
        assert survivor.lines("pausing"), "the other worker of the group ran the step again"
        assert len(helpers.lines("greet")) == 1, "the rpc done before the kill is not done again"

    def test_kill_9_of_the_server_mid_workflow_it_finishes_after_a_restart(self, own_stack):
        """The server is killed while a workflow sleeps; restarted on its journal, the workflow finishes the same."""
        app = own_stack.worker("app")
        app.ready()
        id = run_id("crash")
        handle = own_stack.call(id, "sleeper", 2)
        poll(lambda: any(line.split()[1] == id for line in app.lines("sleeping")), timeout=30)
        sleep_promise = poll(lambda: [p for p in own_stack.client.promises_search_all(f"{id}.*")], timeout=10)
        assert sleep_promise[0].state == "PENDING"
        own_stack.server.kill()
        time.sleep(0.5)
        own_stack.server.start().ready(own_stack.probe)
        assert handle.result(timeout=60) == "slept 2"
        assert app.process.poll() is None and app.lines("woke")


class LosesReplies:
    """A transport into a core in this process that loses the replies of the first ``lose`` requests it passes on."""

    def __init__(self, core, lose: int) -> None:
        from resonate_sync import LocalTransport

        self.inner, self.lose = LocalTransport(core), lose

    def request(self, data: bytes, timeout: float) -> bytes:
        from resonate_sync.errors import RequestTimeout, Retryable

        reply = self.inner.request(data, timeout)
        if self.lose > 0:
            self.lose -= 1
            raise Retryable(RequestTimeout("reply lost"), delivered=True)
        return reply

    def close(self) -> None:
        pass


class TestAdapter:
    def test_a_claim_whose_reply_was_lost_is_taken_as_claimed(self):
        """A claim retried after a lost reply gets "already claimed": the adapter reads the promises instead of failing."""
        from resonate_sync import LocalTransport, Resonate as Core

        core = Core()
        with Client(transport=LocalTransport(core)) as client:
            client.promises_create("root", "1h", tags={"resonate:invoke": "poll://any@app"})
        store = NatsStore(transport=LosesReplies(core, lose=1))
        root, leaf = store.tasks.claim("__invoke:root", 1, "w1", 10_000)
        assert (root.id, leaf) == ("root", None)
        assert core.state.tasks["__invoke:root"].process_id == "w1"

    def test_other_errors_raise_the_sdks_store_error_with_the_code(self):
        """A 404 or 403 is no outage: it raises ResonateStoreError at once, carrying the reply's code."""
        from resonate.errors import ResonateStoreError

        from resonate_sync import LocalTransport, Resonate as Core

        store = NatsStore(transport=LocalTransport(Core()))
        with pytest.raises(ResonateStoreError) as caught:
            store.promises.get("missing")
        assert caught.value.mesg == "The specified promise was not found" and "404" in str(caught.value.code)

    @pytest.mark.parametrize("group, id", [("a.b", None), ("g", "x y"), ("", None), ("g", "*"), ("ü", None)])
    def test_a_group_or_id_that_is_no_subject_token_is_refused(self, group, id):
        """The message source refuses names the server would refuse in its addresses."""
        with pytest.raises(ValueError, match="NatsMessageSource"):
            NatsMessageSource("nats://127.0.0.1:1", group=group, id=id)

    @pytest.mark.parametrize("payload", [b"", b"nan", b"[]", b'{"type": "invoke"}', b'{"type": "invoke", "task": {"id": 1}}',
                                         b'{"type": "notify", "promise": 3}', b'{"type": "x"}', b"\xff\xfe"])
    def test_messages_that_are_no_task_message_are_dropped(self, payload):
        """Whatever else arrives on the subjects is logged and dropped; next() only ever sees the SDK's messages."""
        from resonate_sync.sdk import _sdk_message

        assert _sdk_message(payload) is None
        body = b'{"type":"resume","task":{"id":"__resume:a:b","counter":2,"timeout":1},"href":{}}'
        assert _sdk_message(body) == {"type": "resume", "task": {"id": "__resume:a:b", "counter": 2}}
