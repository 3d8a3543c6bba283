"""The README's code, run as written: the *Walkthrough* story against a real ``resonate dev``, and the
*Embedding* snippet.

Shell blocks (```console, one command per ``$ `` line) run in bash with the venv's ``resonate``
and ``python`` first on PATH, in the checkout, as a reader would run them. Python blocks run with
the interpreter; a ``print(…)  # text`` line promises that ``text`` is a line of the output.
The only thing the test adds is ``RESONATE_API_NATS_ADDR``: the server and every client find NATS
on a free port instead of 4222, which may be in use.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from helpers import poll

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"README.md has no section {title!r}"
    return match.group(1)


def fenced_blocks(text: str) -> List[Tuple[str, str]]:
    """The (language, code) of each fenced block, in order."""
    return re.findall(r"^```(\w+)\n(.*?)^```$", text, re.M | re.S)


def commands(code: str) -> List[str]:
    return [line[2:] for line in code.splitlines() if line.startswith("$ ")]


def promised_lines(code: str) -> List[str]:
    """What each ``print(…)  # text`` line says it prints."""
    return re.findall(r"^\s*print\(.*\)\s+# (.+)$", code, re.M)


def run_python(code: str, env: Dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"{code}\nexited {result.returncode}:\n{result.stdout}{result.stderr}"
    printed = result.stdout.splitlines()
    for line in promised_lines(code):
        assert line in printed, f"the comment says {line!r}; it printed:\n{result.stdout}"
    return result.stdout


def run_shell(command: str, env: Dict[str, str]) -> str:
    result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"$ {command}\nexited {result.returncode}:\n{result.stdout}{result.stderr}"
    return result.stdout


def environment(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESONATE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TestWalkthrough:
    def test_the_story_runs_as_written_and_again(self, nats_client, tmp_path):
        """Every block of the Walkthrough runs as written, in order, with each command exiting 0; run a second time
        against the same server it still does, and the messages the story promises arrive, once."""
        [(language, code), *story] = fenced_blocks(section("Walkthrough"))
        assert language == "console" and commands(code) == ["resonate dev"], "the story starts with the server"
        url = f"nats://127.0.0.1:{free_port()}"
        env = environment(RESONATE_API_NATS_ADDR=url)
        log = tmp_path / "dev.log"
        with open(log, "w") as out:
            server = subprocess.Popen(["bash", "-c", f"exec {commands(code)[0]}"], cwd=ROOT, env=env,
                                      stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            assert poll(lambda: "serving subject" in log.read_text() or server.poll() is not None, 20), log.read_text()
            assert server.poll() is None, log.read_text()
            audit, workers = nats_client(url).collect("audit"), nats_client(url).collect("workers")
            outputs: List[List[str]] = []
            for run in (1, 2):
                printed = []
                for language, code in story:
                    if language == "python":
                        printed.append(run_python(code, env))
                    else:
                        assert language == "console", language
                        printed.extend(run_shell(command, env) for command in commands(code))
                outputs.append(printed)
                poll(lambda: len(workers) >= 1 + run, 10)  # the resume task once, an invoke per worker run
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(20) == 0, log.read_text()

        notify = [json.loads(msg.data) for msg in audit]
        assert [(m["type"], m["promise"]["id"], m["promise"]["state"]) for m in notify] == [("notify", "order-1", "RESOLVED")]
        sent = [json.loads(msg.data) for msg in workers]
        resumes = [m["task"]["rootPromiseId"] for m in sent if m["type"] == "resume"]
        invokes = [m["task"]["rootPromiseId"] for m in sent if m["type"] == "invoke"]
        assert resumes == ["order-2"], sent
        assert len(invokes) == 2 and all(i.startswith("job-") for i in invokes), sent
        assert any("unchanged" in out for out in outputs[1]), "the second run should report writes already done"
        assert "Traceback" not in log.read_text()


class TestEmbedding:
    def test_the_in_process_snippet_prints_what_its_comment_says(self):
        """The first snippet of the Embedding section (a core in process) runs and prints what its comment says."""
        language, code = fenced_blocks(section("Embedding"))[0]
        assert language == "python" and promised_lines(code), code
        run_python(code, environment())
