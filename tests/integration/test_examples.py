"""The runnable examples under examples/ run to completion, as a user would run them."""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

from helpers import start_server, uid

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, cwd: Path, env: Optional[Dict[str, str]] = None) -> str:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RESONATE_")}
    environment.update(env or {})
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{name} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


class TestExamples:
    def test_embedded_core(self, tmp_path):
        """embedded_core.py drives the in-process core through promises, timeouts, tasks and locks, and exits 0."""
        out = run_example("embedded_core.py", tmp_path)
        assert "create order-1: CREATED state=PENDING" in out
        assert "order-2 after an hour: REJECTED_TIMEDOUT" in out
        assert "read order-3: 404" in out

    def test_embedded_server(self, tmp_path):
        """embedded_server.py serves from a thread, two client threads resolve every order, state survives a restart."""
        out = run_example("embedded_server.py", tmp_path)
        assert "resolved: 5 of 5" in out
        assert "after a restart on the same journal: order-0 is RESOLVED" in out
        assert out.rstrip().endswith("done")



@pytest.fixture
def running_server(shared_nats_server):
    server = start_server(shared_nats_server.url, subject=uid("resonate.example"))
    yield server
    server.stop()


class TestWorkerExample:
    def test_worker_receives_claims_heartbeats_and_completes(self, running_server, tmp_path):
        """worker.py gets the invoke message of the promise it created, claims the task, heartbeats, resolves the
        promise and completes the task; run again, it does it all again with a new promise."""
        env = {"RESONATE_API_NATS_ADDR": running_server.url, "RESONATE_API_NATS_SUBJECT": running_server.config.nats_subject}
        first, second = (run_example("worker.py", tmp_path, env) for _ in range(2))
        for out in (first, second):
            job = re.search(r"^created promise (job-\w+); its task goes to nats://workers$", out, re.M).group(1)
            task = f"__invoke:{job}"
            assert f"received invoke task {task} (counter 1)" in out
            assert re.search(rf"^claimed {task} for worker-\d+: param {{\"report\": \"daily\"}}$", out, re.M), out
            assert re.search(r"^heartbeat: 1 task of worker-\d+ extended$", out, re.M), out
            assert f"resolved {job}: RESOLVED with 'report ready'" in out
            assert f"completed task {task}" in out and out.rstrip().endswith("done")
        assert first.splitlines()[0] != second.splitlines()[0], "the second run reused the first run's promise"
