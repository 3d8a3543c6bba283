"""The operator commands (``resonate promises|schedules|tasks|locks …``) against a real server."""

import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resonate_sync import Client, Config, Server
from resonate_sync.cli import app
from helpers import FAR, uid

RESONATE = Path(sys.executable).parent / "resonate"
# click 8.1 (the last for Python 3.9) mixes stderr into stdout unless told not to; 8.2 dropped the option.
_RUNNER = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters else {}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No RESONATE_… variables from the developer's shell and no stray resonate.yaml."""
    for name in list(os.environ):
        if name.startswith("RESONATE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def server(shared_nats_server):
    config = Config(nats_addr=shared_nats_server.url, nats_subject=uid("resonate.cli"), embedded_nats="never")
    srv = Server(config, mode="dev").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with Client(server.url, server.config.nats_subject) as c:
        yield c


@pytest.fixture
def cli(server):
    """``cli(*args, env=None)`` runs ``resonate *args --addr … --subject …`` in-process; returns the result."""

    def run(*args: str, env=None):
        where = ["--addr", server.url, "--subject", server.config.nats_subject]
        return CliRunner(**_RUNNER).invoke(app, [*args, *where], env={"COLUMNS": "200", **(env or {})})

    return run


def ok(result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def as_json(result):
    return json.loads(ok(result))


def fails(result, code: int, message: str = "") -> str:
    """The command exited 1 and said ``Error <code>: <message>`` on stderr, without a traceback."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"Error {code}: {message}"), result.stderr
    assert "Traceback" not in result.output
    return result.stderr


def table(text: str) -> dict:
    """A two-column table printed by a get/create command, as a dict (headings dropped)."""
    rows = [line.split("  ", 1) for line in text.splitlines() if "  " in line]
    return {key.strip(): value.strip() for key, value in rows}


class TestPromises:
    def test_create_get_resolve(self, cli):
        """create prints the new promise, get shows it, resolve completes it; data and headers are shown as text."""
        pid = uid("p")
        out = ok(cli("promises", "create", pid, "--timeout", "1h", "--data", "hello", "--header", "h=v", "--tag",
                     "a=b"))
        assert out.startswith(f"Created promise {pid}.")
        shown = table(out)
        assert (shown["id"], shown["state"], shown["param"], shown["param headers"], shown["tags"]) == (
            pid, "PENDING", "hello", "h=v", "a=b")
        assert table(ok(cli("promises", "get", pid)))["state"] == "PENDING"
        resolved = ok(cli("promises", "resolve", pid, "--data", "done"))
        assert resolved.startswith(f"Resolved promise {pid}.") and table(resolved)["value"] == "done"

    def test_timeout_is_a_duration_from_now_or_absolute_ms(self, cli):
        """--timeout 1h is one hour from now; --timeout with digits is that absolute time in ms."""
        before = time.time() * 1000
        relative = as_json(cli("promises", "create", uid("p"), "--timeout", "1h", "--json"))["promise"]
        assert before + 3_600_000 <= relative["timeout"] <= time.time() * 1000 + 3_600_000
        absolute = as_json(cli("promises", "create", uid("p"), "--timeout", str(FAR), "--json"))["promise"]
        assert absolute["timeout"] == FAR

    def test_json_output(self, cli):
        """--json prints the wire form: the promise for get, promise and created for writes."""
        pid = uid("p")
        created = as_json(cli("promises", "create", pid, "--timeout", str(FAR), "--data", "hi", "--idempotency-key",
                              "k", "--json"))
        assert created["created"] is True and created["promise"]["param"] == {"data": "aGk="}
        replay = as_json(cli("promises", "create", pid, "--timeout", str(FAR), "--idempotency-key", "k", "--json"))
        assert replay == {"promise": created["promise"], "created": False}
        assert as_json(cli("promises", "get", pid, "--json")) == created["promise"]

    @pytest.mark.parametrize("command, state", [("reject", "REJECTED"), ("cancel", "REJECTED_CANCELED")])
    def test_reject_and_cancel(self, cli, client, command, state):
        """reject and cancel complete the promise with their state."""
        pid = uid("p")
        client.promises_create(pid, FAR)
        done = as_json(cli("promises", command, pid, "--json"))
        assert done["created"] and done["promise"]["state"] == state

    def test_idempotent_complete_is_reported_unchanged(self, cli, client):
        """Completing again with the same key succeeds and says nothing changed."""
        pid = uid("p")
        client.promises_create(pid, FAR)
        ok(cli("promises", "resolve", pid, "--idempotency-key", "k"))
        assert ok(cli("promises", "resolve", pid, "--idempotency-key", "k")).startswith(
            f"Promise {pid} was already RESOLVED; unchanged.")

    def test_errors_exit_1_with_code_and_message(self, cli, client):
        """Server errors print 'Error <code>: <message>' on stderr and exit 1."""
        fails(cli("promises", "get", uid("missing")), 404, "The specified promise was not found")
        pid = uid("p")
        client.promises_create(pid, FAR)
        fails(cli("promises", "create", pid, "--timeout", "1h"), 409, "The specified promise already exists")
        client.promises_resolve(pid)
        fails(cli("promises", "reject", pid), 403, "The promise has already been resolved")
        fails(cli("promises", "search", "--state", "unknown"), 400)

    def test_search_table_pages_and_all(self, cli, client):
        """search prints a table newest first, a hint with the next cursor, and every page with --all."""
        prefix = uid("s")
        ids = [f"{prefix}.{i}" for i in range(3)]
        for pid in ids:
            client.promises_create(pid, FAR, tags={"batch": prefix})
        client.promises_cancel(ids[0])
        out = ok(cli("promises", "search", f"{prefix}.*", "--limit", "2"))
        lines = out.splitlines()
        assert lines[0].split() == ["ID", "STATE", "TIMEOUT", "CREATED", "TAGS"]
        assert [line.split()[0] for line in lines[1:3]] == [ids[2], ids[1]]
        assert lines[3].startswith("more: resonate promises search --cursor ")
        cursor = lines[3].split()[-1]
        continued = ok(cli("promises", "search", "--cursor", cursor)).splitlines()
        assert continued[1].split()[:2] == [ids[0], "REJECTED_CANCELED"]
        everything = as_json(cli("promises", "search", f"{prefix}.*", "--limit", "1", "--all", "--json"))
        assert [p["id"] for p in everything["promises"]] == ids[::-1] and "cursor" not in everything
        pending = as_json(cli("promises", "search", "--tag", f"batch={prefix}", "--state", "pending", "--json"))
        assert [p["id"] for p in pending["promises"]] == [ids[2], ids[1]]
        assert ok(cli("promises", "search", uid("none"))).strip() == "No promises found."
        page = as_json(cli("promises", "search", f"{prefix}.*", "--limit", "1", "--json"))
        assert len(page["promises"]) == 1 and page["cursor"]


class TestSchedules:
    def test_lifecycle(self, cli):
        """create, get, search and delete a schedule; get afterwards is 404."""
        sid = uid("sched")
        out = ok(cli("schedules", "create", sid, "--cron", "0 2 * * *", "--promise-id", "r.{{.timestamp}}",
                     "--promise-timeout", "30m", "--promise-data", "x", "--promise-tag", "t=u", "--tag",
                     f"team={sid}", "--description", "nightly"))
        assert out.startswith(f"Created schedule {sid}.")
        shown = table(out)
        assert (shown["cron"], shown["promise timeout"], shown["promise param"], shown["description"]) == (
            "0 2 * * *", "1800000 ms", "x", "nightly")
        got = as_json(cli("schedules", "get", sid, "--json"))
        assert got["promiseTimeout"] == 1_800_000 and got["desc"] == "nightly" and got["promiseTags"] == {"t": "u"}
        found = ok(cli("schedules", "search", "--tag", f"team={sid}")).splitlines()
        assert found[0].split()[:3] == ["ID", "CRON", "PROMISE"] and found[1].split()[0] == sid
        everything = as_json(cli("schedules", "search", f"{sid}*", "--all", "--json"))
        assert [s["id"] for s in everything["schedules"]] == [sid]
        fails(cli("schedules", "create", sid, "--cron", "* * * * *", "--promise-id", "x"), 409)
        assert ok(cli("schedules", "delete", sid)).strip() == f"Deleted schedule {sid}."
        fails(cli("schedules", "get", sid), 404, "The specified schedule was not found")
        assert as_json(cli("schedules", "search", sid, "--json")) == {"schedules": []}
        fails(cli("schedules", "delete", sid, "--json"), 404)

    def test_invalid_cron_is_400(self, cli):
        """A cron the server cannot parse is Error 400."""
        fails(cli("schedules", "create", uid("sched"), "--cron", "nonsense", "--promise-id", "x"), 400)


class TestTasks:
    def test_claim_drop_complete(self, cli, client):
        """claim shows the task and its root promise; drop gives it back with counter+1; complete finishes it."""
        pid = uid("t")
        client.promises_create(pid, FAR, b"input", tags={"resonate:invoke": f"nats://{uid('sink')}"})
        task_id = f"__invoke:{pid}"
        out = ok(cli("tasks", "claim", task_id, "--counter", "1", "--process-id", "op"))
        assert out.startswith(f"Claimed task {task_id} (counter 1).")
        assert "root promise:" in out and "input" in out
        fails(cli("tasks", "claim", task_id, "--counter", "1"), 403, "The task is already claimed")
        dropped = as_json(cli("tasks", "drop", task_id, "--counter", "1", "--json"))
        assert dropped["created"] and dropped["task"]["counter"] == 2
        unchanged = ok(cli("tasks", "drop", task_id, "--counter", "2"))
        assert unchanged.startswith(f"Task {task_id} was not claimed; unchanged.")
        claim = as_json(cli("tasks", "claim", task_id, "--counter", "2", "--ttl", "30s", "--json"))
        assert claim["task"]["processId"] == f"{task_id}/2" and claim["rootPromise"]["id"] == pid
        assert ok(cli("tasks", "complete", task_id, "--counter", "2")).startswith(f"Completed task {task_id}.")
        again = as_json(cli("tasks", "complete", task_id, "--counter", "2", "--json"))
        assert again["created"] is False and again["task"]["completedOn"]
        fails(cli("tasks", "complete", uid("__invoke:none"), "--counter", "1"), 404, "The specified task was not found")


class TestLocks:
    def test_acquire_and_release(self, cli):
        """acquire shows the lock; another execution gets 403; release, then release again is 404."""
        resource = uid("res")
        out = ok(cli("locks", "acquire", resource, "--execution-id", "e1", "--process-id", "p1", "--ttl", "2m"))
        assert out.startswith(f"Acquired lock {resource} for e1.") and table(out)["ttl"] == "120000 ms"
        lock = as_json(cli("locks", "acquire", resource, "--execution-id", "e1", "--process-id", "p2", "--json"))
        assert lock["processId"] == "p2" and lock["ttl"] == 60_000
        fails(cli("locks", "acquire", resource, "--execution-id", "e2", "--process-id", "p1"), 403,
              "The lock is already acquired")
        assert as_json(cli("locks", "release", resource, "--execution-id", "e1", "--json")) == {}
        fails(cli("locks", "release", resource, "--execution-id", "e1"), 404, "The specified lock was not found")


class TestConnectionAndUsage:
    def test_address_and_subject_come_from_the_environment(self, server):
        """Without --addr/--subject the RESONATE_API_NATS_ADDR/SUBJECT variables are used."""
        env = {"RESONATE_API_NATS_ADDR": server.url, "RESONATE_API_NATS_SUBJECT": server.config.nats_subject}
        result = CliRunner(**_RUNNER).invoke(app, ["promises", "get", uid("missing")], env=env)
        fails(result, 404)

    def test_address_and_subject_come_from_resonate_yaml(self, server, tmp_path):
        """Without flags or variables, resonate.yaml in the working directory is read, as the server does."""
        (tmp_path / "resonate.yaml").write_text(
            f"api:\n  subsystems:\n    nats:\n      addr: {server.url}\n      subject: {server.config.nats_subject}\n"
        )
        fails(CliRunner(**_RUNNER).invoke(app, ["locks", "release", uid("r"), "--execution-id", "e"]), 404)

    def test_unreachable_server_exits_1(self, nats_server):
        """When nothing listens at --addr, the command says so and exits 1."""
        url = nats_server.url
        nats_server.stop()
        result = CliRunner(**_RUNNER).invoke(app, ["promises", "get", "p", "--addr", url])
        assert url in fails(result, 503, "cannot connect")

    def test_no_server_on_the_subject_exits_1(self, shared_nats_server):
        """When no resonate server listens on the subject, the command says so and exits 1."""
        result = CliRunner(**_RUNNER).invoke(app, ["promises", "get", "p", "--addr", shared_nats_server.url,
                                          "--subject", uid("nobody.here"), "--request-timeout", "200ms"])
        assert "no resonate server listens" in fails(result, 503)

    @pytest.mark.parametrize("args, flag", [
        (["promises", "create", "p", "--timeout", "soon"], "--timeout"),
        (["promises", "create", "p", "--timeout", "1h", "--tag", "novalue"], "--tag"),
        (["promises", "get", "p", "--addr", "http://x"], "--addr"),
        (["promises", "get", "p", "--request-timeout", "5"], "--request-timeout"),
        (["promises", "search", "--limit", "101"], "--limit"),
        (["tasks", "claim", "t"], "--counter"),
        (["locks", "acquire", "r", "--execution-id", "e", "--process-id", "p", "--ttl", "-1s"], "--ttl"),
    ])  # fmt: skip
    def test_usage_errors_exit_2_naming_the_option(self, args, flag):
        """A malformed option is a usage error (exit 2) that names the option; nothing is sent."""
        result = CliRunner(**_RUNNER).invoke(app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 2 and flag in result.stderr, result.output

    @pytest.mark.parametrize("group, commands", [
        ("promises", ["get", "create", "resolve", "reject", "cancel", "search"]),
        ("schedules", ["get", "create", "delete", "search"]),
        ("tasks", ["claim", "complete", "drop"]),
        ("locks", ["acquire", "release"]),
    ])  # fmt: skip
    def test_help_lists_commands_and_common_options(self, group, commands):
        """Each group's help lists its commands; each command's help shows the connection options."""
        listing = CliRunner(**_RUNNER).invoke(app, [group, "--help"], env={"COLUMNS": "200"})
        assert listing.exit_code == 0 and all(c in listing.stdout for c in commands)
        for command in commands:
            text = CliRunner(**_RUNNER).invoke(app, [group, command, "--help"], env={"COLUMNS": "200"}).stdout
            assert all(option in text for option in ("--addr", "--subject", "--request-timeout", "--json")), text

    def test_promise_timeout_help_explains_both_forms(self):
        """promises create --help says --timeout is a duration from now or absolute ms."""
        text = CliRunner(**_RUNNER).invoke(app, ["promises", "create", "--help"], env={"COLUMNS": "200"}).stdout
        assert "duration from now" in text and "milliseconds since the epoch" in text

    def test_installed_program(self, server):
        """The installed resonate program runs a client command as a child process."""
        result = subprocess.run(
            [str(RESONATE), "promises", "search", uid("none"), "--json", "--addr", server.url,
             "--subject", server.config.nats_subject],
            capture_output=True, text=True, timeout=60, env=dict(os.environ),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"promises": []}
