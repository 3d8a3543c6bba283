"""The runnable examples under examples/ run to completion, as a user would run them."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], cwd=cwd, capture_output=True, text=True, timeout=120
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

