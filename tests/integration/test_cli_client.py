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

from resonate_sync import Client, Config, NotFound, Server
from resonate_sync.cli import app
from helpers import FAR, uid
from natsclient import next_message

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

    def test_timeout_is_a_duration_from_now_an_rfc3339_time_or_absolute_ms(self, cli):
        """--timeout 1h is one hour from now; an RFC 3339 time is that time; digits from 2000 on are ms since the epoch."""
        before = time.time() * 1000
        relative = as_json(cli("promises", "create", uid("p"), "--timeout", "1h", "--json"))["promise"]
        assert before + 3_600_000 <= relative["timeout"] <= time.time() * 1000 + 3_600_000
        absolute = as_json(cli("promises", "create", uid("p"), "--timeout", str(FAR), "--json"))["promise"]
        assert absolute["timeout"] == FAR
        for text in ("2100-01-01T00:00:00Z", "2100-01-01T09:00:00+09:00"):
            assert as_json(cli("promises", "create", uid("p"), "--timeout", text, "--json"))["promise"]["timeout"] == FAR
        assert table(ok(cli("promises", "create", uid("p"), "--timeout", "2100-01-01T00:00:00Z")))["timeout"] == (
            "2100-01-01T00:00:00.000Z")

    @pytest.mark.parametrize("args", [
        ["promises", "create", "{pid}", "--timeout", "60000"],
        ["promises", "create-task", "{pid}", "--timeout", "60000", "--process-id", "w"],
        ["promises", "create-task", "{pid}", "--timeout", "1h", "--process-id", "w", "--task-timeout", "60000"],
    ])  # fmt: skip
    def test_a_small_number_is_refused_and_nothing_is_created(self, cli, client, args):
        """A bare number before 2000 as a deadline exits 2 saying it would be 1970 and what to write; nothing is sent."""
        pid = uid("p")
        result = cli(*(arg.format(pid=pid) for arg in args))
        assert result.exit_code == 2, result.output
        message = " ".join(result.stderr.split())
        assert "1970-01-01T00:01:00.000Z" in message and "For 1m from now write 1m" in message
        with pytest.raises(NotFound):
            client.promises_read(pid)

    def test_json_output(self, cli):
        """--json prints the wire form: the promise for get, promise and created for writes."""
        pid = uid("p")
        created = as_json(cli("promises", "create", pid, "--timeout", str(FAR), "--data", "hi", "--idempotency-key",
                              "k", "--json"))
        assert created["created"] is True and created["promise"]["param"] == {"data": "aGk=", "text": "hi"}
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

    def test_create_task_claims_the_invoke_task(self, cli, client):
        """create-task creates the promise and its invoke task claimed by --process-id, shown under "task:"."""
        pid, invoke = uid("ct"), f"resonate:invoke=nats://{uid('sink')}"
        out = ok(cli("promises", "create-task", pid, "--timeout", "1h", "--process-id", "w1", "--ttl", "2m",
                     "--tag", invoke, "--data", "in"))
        assert out.startswith(f"Created promise {pid} and task __invoke:{pid} (counter 1), claimed by w1.")
        assert "\ntask:\n" in out
        shown = table(out)
        assert (shown["state"], shown["param"], shown["process id"]) == ("PENDING", "in", "w1")
        assert client.tasks_complete(f"__invoke:{pid}", 1).created  # only a claimed task can be completed

    def test_create_task_json_task_timeout_and_replay(self, cli):
        """--task-timeout sets the task's deadline; --json adds "task"; a keyed replay creates no task."""
        pid, invoke = uid("ct"), f"resonate:invoke=nats://{uid('sink')}"
        args = ["promises", "create-task", pid, "--timeout", str(FAR), "--process-id", "w2", "--tag", invoke,
                "--idempotency-key", "k", "--json"]
        created = as_json(cli(*args, "--task-timeout", str(FAR - 1000)))
        assert created["created"] is True and created["promise"]["timeout"] == FAR
        assert (created["task"]["processId"], created["task"]["timeout"]) == ("w2", FAR - 1000)
        assert as_json(cli(*args)) == {"promise": created["promise"], "created": False}
        assert ok(cli(*args[:-1])).startswith(f"Promise {pid} already exists with this key; unchanged")

    def test_create_task_without_router_tag_creates_only_the_promise(self, cli):
        """Without a resonate:invoke tag the promise is created and no task; the output says why."""
        pid = uid("ct")
        out = ok(cli("promises", "create-task", pid, "--timeout", "1h", "--process-id", "w"))
        assert out.startswith(f"Created promise {pid}; no task: it has no resonate:invoke tag.")
        assert "task" not in as_json(cli("promises", "create-task", uid("ct"), "--timeout", "1h", "--process-id",
                                         "w", "--json"))

    def test_create_task_errors(self, cli, client):
        """An existing promise is 409; an empty --process-id is the server's 400 naming taskProcessId."""
        pid = uid("ct")
        client.promises_create(pid, FAR)
        fails(cli("promises", "create-task", pid, "--timeout", "1h", "--process-id", "w"), 409,
              "The specified promise already exists")
        assert "taskProcessId" in fails(cli("promises", "create-task", uid("ct"), "--timeout", "1h",
                                            "--process-id", ""), 400)

    def test_callback_registered_once_and_not_on_a_completed_promise(self, cli, client):
        """callback registers a resume callback once; again changes nothing; on a completed promise nothing."""
        root, leaf = uid("root"), uid("leaf")
        client.promises_create(root, FAR)
        client.promises_create(leaf, FAR)
        args = ["promises", "callback", leaf, "--root-promise-id", root, "--recv", "nats://workers", "--timeout", "1h"]
        out = ok(cli(*args))
        assert out.startswith(f"Registered callback __resume:{root}:{leaf}: when promise {leaf} completes, a resume"
                              f" task of {root} goes to nats://workers.")
        assert table(out)["promise id"] == leaf and "\npromise:\n" in out
        assert ok(cli(*args)).startswith(f"A callback of {root} on promise {leaf} was already registered; unchanged.")
        again = as_json(cli(*args, "--json"))
        assert again["created"] is False and "callback" not in again and again["promise"]["id"] == leaf
        client.promises_resolve(leaf)
        other = ["promises", "callback", leaf, "--root-promise-id", uid("root"), "--recv", "default", "--timeout", "1h"]
        assert ok(cli(*other)).startswith(f"Promise {leaf} is already RESOLVED: no callback registered")
        late = as_json(cli(*other, "--json"))
        assert late == {"promise": as_json(cli("promises", "get", leaf, "--json")), "created": False}

    def test_callback_errors(self, cli, client):
        """An unknown promise is 404; the promise as its own root is 400."""
        pid = uid("leaf")
        client.promises_create(pid, FAR)
        recv = ["--recv", "default", "--timeout", "1h"]
        fails(cli("promises", "callback", uid("missing"), "--root-promise-id", pid, *recv), 404,
              "The specified promise was not found")
        fails(cli("promises", "callback", pid, "--root-promise-id", pid, *recv), 400,
              "validation error: promise and root promise must be different")

    def test_subscribe_with_a_json_receiver_delivers_the_promise(self, cli, client, nats_client, server):
        """subscribe with an object --recv registers a notify; completing the promise sends it to that subject."""
        pid, subject = uid("sub"), uid("notify")
        client.promises_create(pid, FAR)
        inbox = nats_client(server.url).inbox(subject)
        recv = json.dumps({"type": "nats", "data": {"subject": subject}})
        args = ["promises", "subscribe", pid, "--subscription-id", "audit", "--recv", recv, "--timeout", str(FAR)]
        created = as_json(cli(*args, "--json"))
        assert created["created"] is True and created["callback"]["id"] == f"__notify:{pid}:audit"
        assert created["callback"]["timeout"] == FAR
        assert ok(cli(*args)).startswith(f"Subscription audit to promise {pid} was already registered; unchanged.")
        client.promises_resolve(pid, b"done")
        message = next_message(inbox)
        assert message is not None and message["type"] == "notify" and message["promise"]["id"] == pid

    def test_subscribe_table_and_errors(self, cli, client):
        """subscribe prints the subscription and the promise; an unknown promise is 404."""
        pid = uid("sub")
        client.promises_create(pid, FAR)
        out = ok(cli("promises", "subscribe", pid, "--subscription-id", "s1", "--recv", "poll://any@default",
                     "--timeout", "1h"))
        assert out.startswith(f"Registered subscription __notify:{pid}:s1: when promise {pid} completes, it is sent"
                              " to poll://any@default.")
        fails(cli("promises", "subscribe", uid("missing"), "--subscription-id", "s1", "--recv", "default",
                  "--timeout", "1h"), 404, "The specified promise was not found")


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

    def test_heartbeat_counts_the_claimed_tasks_of_a_process(self, cli, client):
        """tasks heartbeat extends every task the process has claimed and says how many; 0 is not an error."""
        process = uid("proc")
        for _ in range(2):
            pid = uid("hb")
            client.promises_create(pid, FAR, tags={"resonate:invoke": f"nats://{uid('sink')}"})
            client.tasks_claim(f"__invoke:{pid}", 1, process, 60_000)
        out = ok(cli("tasks", "heartbeat", "--process-id", process))
        assert out.strip() == f"Extended 2 tasks of process {process}."
        assert as_json(cli("tasks", "heartbeat", "--process-id", uid("idle"), "--json")) == {"tasksAffected": 0}
        assert "processId" in fails(cli("tasks", "heartbeat", "--process-id", ""), 400)


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

    def test_heartbeat_counts_the_locks_of_a_process(self, cli, client):
        """locks heartbeat extends every lock acquired through the process and says how many."""
        process = uid("proc")
        client.locks_acquire(uid("res"), "e1", process, 60_000)
        out = ok(cli("locks", "heartbeat", "--process-id", process))
        assert out.strip() == f"Extended 1 lock of process {process}."
        assert as_json(cli("locks", "heartbeat", "--process-id", process, "--json")) == {"locksAffected": 1}
        assert "processId" in fails(cli("locks", "heartbeat", "--process-id", ""), 400)


class TestOutput:
    def test_json_keeps_base64_and_adds_text_when_it_is_utf8(self, cli, client):
        """--json shows a param or value as base64 "data" (the wire) plus "text" when its bytes are UTF-8 text."""
        pid = uid("p")
        client.promises_create(pid, FAR, b"\xff\x00")
        client.promises_resolve(pid, "héllo")
        promise = as_json(cli("promises", "get", pid, "--json"))
        assert promise["param"] == {"data": "/wA="}
        assert promise["value"] == {"data": "aMOpbGxv", "text": "héllo"}
        assert as_json(cli("promises", "search", pid, "--json"))["promises"] == [promise]
        schedule = as_json(cli("schedules", "create", uid("sched"), "--cron", "0 0 1 1 *", "--promise-id", "x",
                               "--promise-data", "{}", "--json"))["schedule"]
        assert schedule["promiseParam"] == {"data": "e30=", "text": "{}"}

    def test_read_is_get(self, cli, client):
        """promises read and schedules read, the operations' names, do what get does."""
        pid = uid("p")
        client.promises_create(pid, FAR)
        assert as_json(cli("promises", "read", pid, "--json")) == as_json(cli("promises", "get", pid, "--json"))
        fails(cli("schedules", "read", uid("missing")), 404, "The specified schedule was not found")


class TestConnectionAndUsage:
    def test_connection_options_before_the_command(self, server):
        """--addr, --subject and --json may come before the command; after it, they win over those before it."""
        where = ["--addr", server.url, "--subject", server.config.nats_subject]
        result = CliRunner(**_RUNNER).invoke(app, [*where, "--json", "promises", "search", uid("none")])
        assert json.loads(ok(result)) == {"promises": []}
        wrong_subject = ["--subject", uid("nobody"), "--addr", server.url]
        result = CliRunner(**_RUNNER).invoke(app, [*wrong_subject, "promises", "search", uid("none"), "--subject",
                                                   server.config.nats_subject])
        assert ok(result).strip() == "No promises found."

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

    def test_unreachable_nats_is_not_a_server_answer(self, nats_server):
        """When no NATS answers at --addr, the command exits 1 saying that NATS is not reachable there (no status code,
        which would look like a server's answer) and asking whether resonate dev is running."""
        url = nats_server.url
        nats_server.stop()
        result = CliRunner(**_RUNNER).invoke(app, ["promises", "get", "p", "--addr", url])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert result.stderr.startswith(f"Error: NATS is not reachable at {url} ("), result.stderr
        assert "Is `resonate dev` running?" in result.stderr and "--addr" in result.stderr, result.stderr

    def test_refused_credentials_say_so(self, nats_server_factory):
        """When NATS answers but refuses the credentials, the command says that, not that NATS is unreachable."""
        nats = nats_server_factory(["--user", "u", "--pass", "right"])
        url = f"nats://u:wrong@127.0.0.1:{nats.port}"
        result = CliRunner(**_RUNNER).invoke(app, ["promises", "get", "p", "--addr", url])
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: cannot connect to nats://u:***@") and "refused the credentials" in result.stderr
        assert "not reachable" not in result.stderr and "wrong" not in result.stderr, result.stderr

    def test_no_server_on_the_subject_exits_1(self, shared_nats_server):
        """When no resonate server listens on the subject, the command says so, not as a server's 503, says what to check, and exits 1."""
        result = CliRunner(**_RUNNER).invoke(app, ["promises", "get", "p", "--addr", shared_nats_server.url,
                                          "--subject", uid("nobody.here"), "--request-timeout", "200ms"])
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: no resonate server listens"), result.stderr
        assert "--subject" in result.stderr and "resonate status" in result.stderr
        assert "Traceback" not in result.output

    def test_no_reply_in_time_says_the_outcome_is_unknown(self, shared_nats_server, nats_client):
        """When something listens on the subject but does not answer in time, the command says the outcome is unknown, not a server's 503."""
        subject = uid("silent")
        nats_client(shared_nats_server.url).inbox(subject)  # takes requests, never replies
        result = CliRunner(**_RUNNER).invoke(app, ["promises", "get", "p", "--addr", shared_nats_server.url,
                                          "--subject", subject, "--request-timeout", "200ms"])
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: no reply on subject"), result.stderr
        assert "may or may not have carried it out" in result.stderr and "--request-timeout" in result.stderr

    @pytest.mark.parametrize("args, flag", [
        (["promises", "create", "p", "--timeout", "soon"], "--timeout"),
        (["promises", "create", "p", "--timeout", "1h", "--tag", "novalue"], "--tag"),
        (["promises", "get", "p", "--addr", "http://x"], "--addr"),
        (["promises", "get", "p", "--request-timeout", "5"], "--request-timeout"),
        (["promises", "callback", "p", "--root-promise-id", "r", "--recv", "x", "--timeout", "0"], "--timeout"),
        (["promises", "subscribe", "p", "--subscription-id", "s", "--recv", "x", "--timeout", "2026-12-31"], "--timeout"),
        (["schedules", "create", "s", "--cron", "* * * * *", "--promise-id", "x", "--promise-timeout", "3600000"],
         "--promise-timeout"),
        (["promises", "search", "--limit", "101"], "--limit"),
        (["tasks", "claim", "t"], "--counter"),
        (["locks", "acquire", "r", "--execution-id", "e", "--process-id", "p", "--ttl", "-1s"], "--ttl"),
        (["promises", "create-task", "p", "--timeout", "1h", "--process-id", "w", "--ttl", "-1s"], "--ttl"),
        (["promises", "create-task", "p", "--timeout", "1h", "--process-id", "w", "--task-timeout", "later"],
         "--task-timeout"),
        (["promises", "create-task", "p", "--timeout", "1h"], "--process-id"),
        (["promises", "callback", "p", "--root-promise-id", "r", "--recv", "{not json", "--timeout", "1h"], "--recv"),
        (["promises", "callback", "p", "--root-promise-id", "r", "--recv", '{"data": {}}', "--timeout", "1h"], "--recv"),
        (["promises", "subscribe", "p", "--subscription-id", "s", "--recv", "", "--timeout", "1h"], "--recv"),
        (["promises", "subscribe", "p", "--subscription-id", "s", "--recv", "default", "--timeout", "x"], "--timeout"),
        (["tasks", "heartbeat"], "--process-id"),
        (["locks", "heartbeat"], "--process-id"),
    ])  # fmt: skip
    def test_usage_errors_exit_2_naming_the_option(self, args, flag):
        """A malformed option is a usage error (exit 2) that names the option; nothing is sent."""
        result = CliRunner(**_RUNNER).invoke(app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 2 and flag in result.stderr, result.output

    @pytest.mark.parametrize("group, commands", [
        ("promises", ["get", "read", "create", "create-task", "resolve", "reject", "cancel", "search", "callback", "subscribe"]),
        ("schedules", ["get", "read", "create", "delete", "search"]),
        ("tasks", ["claim", "heartbeat", "complete", "drop"]),
        ("locks", ["acquire", "heartbeat", "release"]),
    ])  # fmt: skip
    def test_help_lists_commands_and_common_options(self, group, commands):
        """Each group's help lists its commands; each command's help shows the connection options."""
        listing = CliRunner(**_RUNNER).invoke(app, [group, "--help"], env={"COLUMNS": "200"})
        assert listing.exit_code == 0 and all(c in listing.stdout for c in commands)
        for command in commands:
            text = CliRunner(**_RUNNER).invoke(app, [group, command, "--help"], env={"COLUMNS": "200"}).stdout
            assert all(option in text for option in ("--addr", "--subject", "--request-timeout", "--json")), text

    @pytest.mark.parametrize("command", ["callback", "subscribe"])
    def test_recv_help_names_both_forms(self, command):
        """--recv's help says a receiver is a string such as nats://<subject> or a JSON object."""
        text = CliRunner(**_RUNNER).invoke(app, ["promises", command, "--help"], env={"COLUMNS": "200"}).stdout
        assert "nats://<subject>" in text and "JSON object" in text

    def test_promise_timeout_help_explains_every_form(self):
        """promises create --help says --timeout is a duration from now, an RFC 3339 time or ms from 2000 on."""
        text = CliRunner(**_RUNNER).invoke(app, ["promises", "create", "--help"], env={"COLUMNS": "200"}).stdout
        text = " ".join(text.replace("│", " ").split())
        assert "a duration from now" in text and "an RFC 3339 time" in text
        assert "milliseconds since the epoch from 2000 on" in text

    def test_installed_program(self, server):
        """The installed resonate program runs a client command as a child process."""
        result = subprocess.run(
            [str(RESONATE), "promises", "search", uid("none"), "--json", "--addr", server.url,
             "--subject", server.config.nats_subject],
            capture_output=True, text=True, timeout=60, env=dict(os.environ),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"promises": []}
