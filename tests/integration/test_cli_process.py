"""The real ``resonate`` program as a child process, over a real nats-server, spoken to by nats-py.

Each test starts ``resonate serve`` or ``resonate dev`` (once ``python -m resonate_sync``) in a
temporary working directory with no ``RESONATE_…`` variables inherited, reads its log from
stderr, and signals it the way a supervisor or a terminal would.
"""

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pytest
from nats.errors import NoRespondersError

from resonate_sync import __version__
from resonate_sync.transport.embedded import is_reachable

from natsclient import next_message
from helpers import FAR, poll

STARTED = "serving subject"  # in the one start-up line
RESONATE = Path(sys.executable).parent / "resonate"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing accepts connections on the port and a new listener may bind it."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except ConnectionRefusedError:
        pass
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    return True


def kill_nats_server_on(port: int) -> None:
    """Safety net after a failed test: stop a nats-server a dead resonate left on ``port``."""
    found = subprocess.run(["pgrep", "-f", f"nats-server -a 127.0.0.1 -p {port} "], capture_output=True, text=True)
    for pid in found.stdout.split():
        os.kill(int(pid), signal.SIGTERM)


def subject() -> str:
    return f"resonate.cli.{uuid.uuid4().hex[:8]}"


class Resonate:
    """One ``resonate`` child process; its merged stdout/stderr is collected line by line."""

    def __init__(self, args: Sequence[str], cwd: Path, env: Optional[Dict[str, str]] = None, module: bool = False) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("RESONATE_")}
        environment["RESONATE_METRICS_ADDR"] = "127.0.0.1:0"  # serve's default, 9090, may be taken
        environment.update(env or {})
        program = [sys.executable, "-m", "resonate_sync"] if module else [str(RESONATE)]
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [*program, *args],
            cwd=cwd, env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: List[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def line_with(self, text: str) -> Optional[str]:
        return next((line for line in self.lines if text in line), None)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        """The first log line containing ``text``; fails with the whole log if the process exits first."""
        poll(lambda: self.line_with(text) or self.proc.poll() is not None, timeout, interval=0.02)
        if self.proc.poll() is not None:
            self._reader.join(5)  # its last lines
        line = self.line_with(text)
        assert line is not None, f"no line with {text!r} (exit code {self.proc.poll()}):\n{self.output}"
        return line

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        """The exit code, once the process exited and its output was read to the end."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"resonate did not exit within {timeout:g} s:\n{self.output}")
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """Teardown: a graceful stop if still running (it owns an embedded nats-server), else SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def resonate(tmp_path) -> Iterator[Callable[..., Resonate]]:
    """``resonate(*args, env=None, module=False, cwd=tmp_path)`` starts the program; stopped after the test."""
    started: List[Resonate] = []

    def launch(*args: str, env: Optional[Dict[str, str]] = None, module: bool = False, cwd: Optional[Path] = None) -> Resonate:
        process = Resonate(args, cwd or tmp_path, env, module)
        started.append(process)
        return process

    yield launch
    for process in started:
        process.kill()


@pytest.fixture
def squatted_port() -> Iterator[int]:
    """A loopback port on which something that is not NATS listens."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        yield squatter.getsockname()[1]


def run_to_exit(launch: Callable[..., Resonate], *args: str, timeout: float = 20.0, **kwargs) -> Resonate:
    process = launch(*args, **kwargs)
    process.wait(timeout)
    return process


def created(reply: Dict) -> Dict:
    assert reply["success"] is True and reply["response"]["Status"] == 20100, reply
    return reply["response"]["Payload"]["promise"]


class TestDev:
    def test_embedded_nats_answers_and_stops_with_it_on_sigterm(self, resonate, nats_client):
        """resonate dev with nothing at a loopback address starts a nats-server there, answers, and takes it down on SIGTERM."""
        port = free_port()
        url = f"nats://127.0.0.1:{port}"
        process = resonate("dev", "--api-nats-addr", url)
        start_line = process.wait_for(STARTED)
        for part in (__version__, url, "'resonate.server'", "embedded nats-server", "store: memory"):
            assert part in start_line, start_line
        client = nats_client(url)
        assert created(client.call("resonate.server", "promises.create", {"id": "dev-1", "timeout": FAR}))["id"] == "dev-1"

        process.send(signal.SIGTERM)
        assert process.wait() == 0, process.output
        assert port_is_free(port), f"the embedded nats-server still listens on {port}"
        assert process.line_with("received SIGTERM"), process.output
        assert process.lines[-1].endswith("stopped"), process.output
        assert "Traceback" not in process.output

    def test_store_kind_jetstream_starts_nats_with_jetstream_and_leads(self, resonate, nats_client, tmp_path):
        """resonate dev --store-kind jetstream: the embedded nats-server runs JetStream, the one replica
        leads, the records are on the stream, and the temporary JetStream directory goes with it."""
        port = free_port()
        url = f"nats://127.0.0.1:{port}"
        process = resonate("dev", "--api-nats-addr", url, "--store-kind", "jetstream")
        process.wait_for("leader of subject 'resonate.server'")
        assert "store: JetStream stream RESONATE_resonate_server (1 replica, lease 3s)" in process.output
        client = nats_client(url)
        assert created(client.call("resonate.server", "promises.create", {"id": "js-1", "timeout": FAR}))["id"] == "js-1"
        info = json.loads(client.request("$JS.API.STREAM.INFO.RESONATE_resonate_server", b"").data)
        assert info["state"]["messages"] >= 1, info
        line = process.wait_for("keeps its JetStream data in")
        directory = Path(line.split("JetStream data in ")[1].split(",")[0])
        assert directory.is_dir()
        process.send(signal.SIGTERM)
        assert process.wait() == 0, process.output
        assert port_is_free(port)
        assert not directory.exists(), "resonate dev keeps nothing: its temporary JetStream directory is removed"

    def test_sigterm_during_start_up_still_stops_the_embedded_nats_server(self, resonate):
        """A SIGTERM that arrives while resonate dev is still starting stops it gracefully, embedded nats-server included."""
        port = free_port()
        url = f"nats://127.0.0.1:{port}"
        process = resonate("dev", "--api-nats-addr", url)
        try:
            poll(lambda: is_reachable(url, timeout=0.05) or process.proc.poll() is not None, 20, interval=0.001)
            process.send(signal.SIGTERM)  # the embedded nats-server is up; resonate is still connecting
            assert process.wait() == 0, process.output
            assert port_is_free(port), f"the embedded nats-server was left running on {port}"
        finally:
            kill_nats_server_on(port)

    def test_port_taken_by_something_else_is_one_line_naming_the_cause(self, resonate, squatted_port):
        """When something that is not NATS holds the port, resonate dev exits 1 with one error line naming the URL and
        the cause; nats-server's own log is not shown."""
        url = f"nats://127.0.0.1:{squatted_port}"
        process = run_to_exit(resonate, "dev", "--api-nats-addr", url)
        assert process.proc.returncode == 1, process.output
        errors = [line for line in process.lines if " ERROR " in line]
        assert len(errors) == 1 and url in errors[0] and "address already in use" in errors[0], process.output
        assert "--api-nats-addr another port" in errors[0] and "--log-level debug" in errors[0], errors[0]
        assert len(process.lines) == 2 and "Traceback" not in process.output, process.output

    def test_port_taken_shows_nats_server_log_at_debug(self, resonate, squatted_port):
        """At --log-level debug the failed nats-server's command line and log are shown too."""
        url = f"nats://127.0.0.1:{squatted_port}"
        process = run_to_exit(resonate, "dev", "--api-nats-addr", url, "--log-level", "debug")
        assert process.proc.returncode == 1, process.output
        assert process.line_with("[FTL] Error listening on port") and process.line_with("Starting nats-server"), process.output


    def test_embedded_nats_on_a_port_another_nats_server_holds_fails_instead_of_joining_it(self, resonate, nats_server):
        """--embedded-nats=always on the port of a running nats-server: its own child cannot bind, so it exits 1
        saying so (the answering server is someone else's), and never serves through that server."""
        process = run_to_exit(resonate, "serve", "--embedded-nats=always", "--api-nats-addr", nats_server.url, "--store-path", "j")
        assert process.proc.returncode == 1, process.output
        [error] = [line for line in process.lines if " ERROR " in line]
        for part in (nats_server.url, "address already in use", "a NATS server already answers there", "--embedded-nats=never"):
            assert part in error, error
        assert not process.line_with(STARTED) and not process.line_with("embedded nats-server)"), process.output


class TestServe:
    def test_state_survives_sigterm_and_restart(self, resonate, shared_nats_server, nats_client, tmp_path):
        """resonate serve journals to --store-path: after SIGTERM and a restart on the same store the promise is still there."""
        url, subj, store = shared_nats_server.url, subject(), tmp_path / "store" / "resonate.journal"
        args = ("serve", "--store-path", str(store), "--api-nats-addr", url, "--api-nats-subject", subj)
        client = nats_client(url)
        first = resonate(*args)
        assert str(store) in first.wait_for(STARTED)
        data = base64.b64encode(b"kept").decode()
        promise = created(client.call(subj, "promises.create", {"id": "kept", "timeout": FAR, "param": {"data": data}}))
        first.send(signal.SIGTERM)
        assert first.wait() == 0, first.output
        assert not first.line_with(" DEBUG "), "debug lines at the default log level"

        second = resonate(*args)
        second.wait_for(STARTED)
        assert second.line_with("recovered 1 promise, 0 tasks, 0 schedules, 0 locks from"), second.output
        reply = client.call(subj, "promises.read", {"id": "kept"})
        assert reply["success"] and reply["response"]["Payload"]["promise"] == promise, reply
        second.send(signal.SIGTERM)
        assert second.wait() == 0, second.output

    def test_sigint_stops_python_dash_m(self, resonate, shared_nats_server, nats_client, tmp_path):
        """python -m resonate_sync serve stops gracefully on SIGINT (Ctrl-C) and exits 0 without a traceback."""
        url, subj = shared_nats_server.url, subject()
        process = resonate(
            "serve", "--store-path", str(tmp_path / "j"), "--api-nats-addr", url, "--api-nats-subject", subj, module=True
        )
        process.wait_for(STARTED)
        created(nats_client(url).call(subj, "promises.create", {"id": "ctrl-c", "timeout": FAR}))
        process.send(signal.SIGINT)
        assert process.wait() == 0, process.output
        assert process.line_with("received SIGINT") and process.lines[-1].endswith("stopped"), process.output
        assert "Traceback" not in process.output and "KeyboardInterrupt" not in process.output

    @pytest.mark.parametrize("drain", [None, "200ms"], ids=["default-drain", "drain-too-short-for-the-backlog"])
    def test_requests_in_flight_at_sigterm_are_all_answered(self, resonate, shared_nats_server, nats_client, tmp_path, drain):
        """Every request the server was sent before SIGTERM gets a reply, the result or 503 shutting down; none is lost.

        With a drain time too short for the backlog, the requests not served by then get 503 at once.
        """
        url, subj, count = shared_nats_server.url, subject(), 2000
        process = resonate(
            "serve", "--store-path", str(tmp_path / "j"), "--api-nats-addr", url, "--api-nats-subject", subj,
            "--workers", "2", "--max-pending", str(count), *(("--api-nats-timeout", drain) if drain else ()),
        )  # fmt: skip
        process.wait_for(STARTED)
        client = nats_client(url)
        replies: Dict[int, Dict] = {}
        inbox = f"_INBOX.drain.{uuid.uuid4().hex}"

        async def send_all() -> None:
            async def on_reply(msg) -> None:
                replies[int(msg.subject.rsplit(".", 1)[1])] = json.loads(msg.data)

            await client.nc.subscribe(f"{inbox}.*", cb=on_reply)
            for i in range(count):
                body = {"operation": "promises.create", "payload": {"id": f"drain-{i}", "timeout": FAR}}
                await client.nc.publish(subj, json.dumps(body).encode(), reply=f"{inbox}.{i}")
            await client.settle()  # nats-server has routed every request to the resonate process

        # Frozen while the requests arrive, so that all of them are in flight when SIGTERM lands.
        process.send(signal.SIGSTOP)
        try:
            client.run(send_all())
            process.send(signal.SIGTERM)
        finally:
            process.send(signal.SIGCONT)
        assert process.wait() == 0, process.output
        poll(lambda: len(replies) == count, 5)

        done = [i for i, r in replies.items() if r.get("success") and r["response"]["Status"] == 20100]
        refused = [i for i, r in replies.items() if not r.get("success") and r["error"]["code"] == 503 and "shutting down" in r["error"]["message"]]
        lost = sorted(set(range(count)) - set(replies))
        assert not lost, f"{len(lost)} requests got no reply (first {lost[:5]}); {len(done)} done, {len(refused)} refused\n{process.output[-3000:]}"
        assert len(done) + len(refused) == count, [r for r in replies.values() if r not in done and r not in refused][:3]

    def test_log_level_debug_shows_debug_lines(self, resonate, shared_nats_server, nats_client, tmp_path):
        """--log-level debug prints debug lines, e.g. one per task message the ticker sends."""
        url, subj, worker = shared_nats_server.url, subject(), subject()
        process = resonate(
            "serve", "--store-path", str(tmp_path / "j"), "--api-nats-addr", url, "--api-nats-subject", subj,
            "--log-level", "debug",
        )  # fmt: skip
        process.wait_for(STARTED)
        client = nats_client(url)
        inbox = client.inbox(worker)
        created(client.call(subj, "promises.create", {"id": "dbg", "timeout": FAR, "tags": {"resonate:invoke": f"nats://{worker}"}}))
        assert next_message(inbox) is not None, "no invoke message arrived"
        assert " DEBUG resonate_sync" in process.wait_for(" DEBUG ", timeout=10)


    def test_nats_outage_is_a_warning_until_it_is_back(self, resonate, nats_server, nats_client, tmp_path):
        """When its NATS goes away, resonate serve logs a WARNING that it is not serving; once NATS is back it logs
        how long the outage lasted and answers again."""
        url, subj = nats_server.url, subject()
        process = resonate("serve", "--store-path", str(tmp_path / "j"), "--api-nats-addr", url, "--api-nats-subject", subj)
        process.wait_for(STARTED)
        nats_server.stop()
        lost = process.wait_for("lost connection")
        assert " WARNING " in lost and f"{subj} is not served until it is back" in lost, lost
        nats_server.start()
        assert " INFO " in process.wait_for("reconnected to", timeout=10)
        created(nats_client(url).call(subj, "promises.create", {"id": "after-outage", "timeout": FAR}))


class TestOneWriterPerSubject:
    """Real ``resonate serve`` processes on one nats-server: a subject has one writer, unless in a handover."""

    @staticmethod
    def serve(resonate, url: str, subj: str, store: Path, *extra: str) -> Resonate:
        return resonate("serve", "--api-nats-addr", url, "--api-nats-subject", subj, "--store-path", str(store), *extra)

    def test_a_second_serve_on_a_served_subject_exits_2_naming_the_first(self, resonate, nats_server, tmp_path):
        """The second exits 2 with one error line naming the first instance's id and the remedies; the first serves on."""
        subj = subject()
        first = self.serve(resonate, nats_server.url, subj, tmp_path / "a")
        first_id = first.wait_for(STARTED).split(" instance ")[1].split()[0]
        second = self.serve(resonate, nats_server.url, subj, tmp_path / "b")
        assert second.wait() == 2, second.output
        [error] = [line for line in second.lines if " ERROR " in line]
        for part in (first_id, f"pid {first.proc.pid}", str(tmp_path / "a"), "--api-nats-subject", "stop that instance"):
            assert part in error, error
        assert not second.line_with(STARTED) and not (tmp_path / "b").exists(), second.output
        assert first.proc.poll() is None, first.output

    def test_the_same_queue_group_on_both_is_a_handover_with_a_warning(self, resonate, nats_server, nats_client, tmp_path):
        """Both started with the same --api-nats-queue: both serve, and the second warns that the first must stop."""
        subj = subject()
        first = self.serve(resonate, nats_server.url, subj, tmp_path / "a", "--api-nats-queue", "handover")
        first_id = first.wait_for(STARTED).split(" instance ")[1].split()[0]
        second = self.serve(resonate, nats_server.url, subj, tmp_path / "b", "--api-nats-queue", "handover")
        second.wait_for(STARTED)
        warning = second.line_with(" WARNING ")
        assert warning and first_id in warning and "blue/green handover" in warning, second.output
        assert first.proc.poll() is None and second.proc.poll() is None
        created(nats_client(nats_server.url).call(subj, "promises.create", {"id": "either", "timeout": FAR}))

    def test_other_subjects_on_one_nats_server_both_serve(self, resonate, nats_server, tmp_path):
        """Servers on different subjects of one nats-server start side by side, without a warning."""
        first = self.serve(resonate, nats_server.url, subject(), tmp_path / "a")
        first.wait_for(STARTED)
        second = self.serve(resonate, nats_server.url, subject(), tmp_path / "b")
        second.wait_for(STARTED)
        assert not second.line_with(" WARNING ") and first.proc.poll() is None, second.output


class TestStartFailures:
    def test_nats_disabled_is_nothing_to_serve(self, resonate):
        """--api-nats-enable=false exits 2 saying there is nothing to serve."""
        process = run_to_exit(resonate, "serve", "--api-nats-enable=false")
        assert process.proc.returncode == 2
        assert "nothing to serve" in process.output and "Traceback" not in process.output

    def test_nothing_listening_fails_fast_saying_how_to_get_a_nats_server(self, resonate, tmp_path):
        """resonate serve with no NATS at the address exits 1 within seconds with one line naming the URL and the ways
        to get a NATS server, and leaves no store directory behind."""
        url, store = f"nats://127.0.0.1:{free_port()}", tmp_path / "data" / "j"
        process = run_to_exit(resonate, "serve", "--store-path", str(store), "--api-nats-addr", url)
        assert process.proc.returncode == 1
        assert time.monotonic() - process.started_at < 10
        [error] = process.lines
        assert url in error and "Connection refused" in error, process.output
        for remedy in ("resonate dev", "--embedded-nats", "--api-nats-addr"):
            assert remedy in error, error
        assert not (tmp_path / "data").exists(), list((tmp_path / "data").rglob("*"))

    @pytest.mark.parametrize(
        "args, env, yaml, named",
        [
            ((), {}, "api:\n  subsystems:\n    nats:\n      timeout: ten\n", "api.subsystems.nats.timeout"),
            ((), {}, "api:\n  subsystems:\n    nats:\n      subjet: x\n", "api.subsystems.nats.subjet"),
            ((), {"RESONATE_API_NATS_TIMEOUT": "ten"}, None, "RESONATE_API_NATS_TIMEOUT"),
            (("--api-nats-timeout", "ten"), {}, None, "--api-nats-timeout"),
            (("--bogus",), {}, None, "--bogus"),
            (("--config", "missing.yaml"), {}, None, "--config"),
        ],
        ids=["file-value", "file-unknown-key", "env", "flag-value", "unknown-flag", "missing-config"],
    )
    def test_bad_configuration_exits_2_naming_the_key(self, resonate, tmp_path, args, env, yaml, named):
        """A bad config file, environment variable or flag exits 2 with a message naming it, and no traceback."""
        if yaml is not None:
            (tmp_path / "resonate.yaml").write_text(yaml)
        process = run_to_exit(resonate, "serve", *args, env=env)
        assert process.proc.returncode == 2, process.output
        assert named in process.output and "Traceback" not in process.output, process.output

    def test_wrong_password_is_an_authorization_error(self, resonate, nats_server_factory, nats_client, tmp_path):
        """With the right credentials the server answers; with a wrong password it exits non-zero saying so, password hidden."""
        nats = nats_server_factory(["--user", "u", "--pass", "s3cret"])
        good, bad = f"nats://u:s3cret@127.0.0.1:{nats.port}", f"nats://u:wrong-pw@127.0.0.1:{nats.port}"
        subj = subject()
        process = resonate("serve", "--store-path", str(tmp_path / "j"), "--api-nats-addr", good, "--api-nats-subject", subj)
        process.wait_for(STARTED)
        created(nats_client(good).call(subj, "promises.create", {"id": "authorized", "timeout": FAR}))
        assert "s3cret" not in process.output

        refused = run_to_exit(resonate, "serve", "--store-path", str(tmp_path / "k"), "--api-nats-addr", bad)
        assert refused.proc.returncode != 0
        assert "Authorization Violation" in refused.output and "refused the credentials" in refused.output, refused.output
        assert "resonate dev" not in refused.output, "NATS answered: no advice to start one"
        assert not (tmp_path / "k").exists(), "the store was created although NATS refused the server"
        assert "wrong-pw" not in refused.output and "Traceback" not in refused.output, refused.output


class TestPrecedence:
    @pytest.mark.parametrize("layers", ["file", "file+env", "file+env+flag"])
    def test_subject_from_the_highest_layer(self, resonate, shared_nats_server, nats_client, tmp_path, layers):
        """The subject comes from resonate.yaml in the working directory, overridden by the environment, overridden by the flag."""
        url = shared_nats_server.url
        subjects = {layer: subject() for layer in ("file", "env", "flag")}
        (tmp_path / "resonate.yaml").write_text(
            f"api:\n  subsystems:\n    nats:\n      addr: {url}\n      subject: {subjects['file']}\n"
        )
        env = {"RESONATE_API_NATS_SUBJECT": subjects["env"]} if "env" in layers else {}
        args = ("--api-nats-subject", subjects["flag"]) if "flag" in layers else ()
        process = resonate("dev", "--embedded-nats=never", *args, env=env)
        process.wait_for(STARTED)
        expected = layers.rsplit("+", 1)[-1]
        client = nats_client(url)
        for layer, subj in subjects.items():
            if layer == expected:
                created(client.call(subj, "promises.create", {"id": "p", "timeout": FAR}))
            else:
                with pytest.raises(NoRespondersError):
                    client.call(subj, "promises.create", {"id": "p", "timeout": FAR})
