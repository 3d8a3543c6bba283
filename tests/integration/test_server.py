"""The server over a real nats-server, spoken to by an independent client (nats-py)."""

import base64
import json
import socket
import time
import uuid

import msgpack
import pytest

from resonate_sync.config import Config
from resonate_sync.journal import Journal
from resonate_sync.server import Server, ServerError
from resonate_sync.transport.embedded import EmbeddedNatsServer, is_reachable

from natsclient import NatsPyClient, next_message
from helpers import FAR, STORE_KINDS, poll, start_server, uid



def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture(scope="module")
def module_nats(tmp_path_factory):
    """One nats-server for the module, with JetStream on for the servers on the JetStream store."""
    with EmbeddedNatsServer(extra_args=["-js", "-sd", str(tmp_path_factory.mktemp("js"))]) as nats_server:
        yield nats_server


@pytest.fixture(scope="module", params=STORE_KINDS)
def server(module_nats, request):
    """The module's server, once per store kind: every operation's test runs against each."""
    srv = start_server(module_nats.url, store=request.param)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(module_nats):
    c = NatsPyClient(module_nats.url)
    yield c
    c.close()


@pytest.fixture(params=["json", "msgpack"])
def api(server, client, request):
    """``api(operation, payload, **envelope)`` → the decoded reply from the module's server, every
    request and reply in JSON or, with the Content-Type header, in MessagePack (nats-py and msgpack)."""
    subject = server.config.nats_subject
    return lambda operation, payload, **extra: client.call(subject, operation, payload, request.param, **extra)


def ok(reply, status):
    assert reply["success"] is True, reply
    assert reply["response"]["Status"] == status, reply
    return reply["response"]["Payload"]


def err(reply, code):
    assert reply["success"] is False, reply
    assert reply["error"]["code"] == code, reply
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    assert "response" not in reply
    return reply["error"]["message"]


class TestPromisesOverNats:
    def test_create_read_complete_cycle(self, api):
        """A promise is created (201), replayed with its key (200), read, resolved (201), and re-resolving without key is 403."""
        pid = uid("p")
        data = base64.b64encode(b"hello").decode()
        payload = {"id": pid, "timeout": FAR, "param": {"headers": {"h": "v"}, "data": data}, "idempotencyKey": "ik"}
        created = ok(api("promises.create", payload), 20100)["promise"]
        assert created["state"] == "PENDING" and created["param"] == {"headers": {"h": "v"}, "data": data}
        assert created["value"] == {} and created["idempotencyKeyForCreate"] == "ik"
        assert ok(api("promises.create", payload), 20000)["promise"] == created
        err(api("promises.create", {"id": pid, "timeout": FAR}), 409)
        assert ok(api("promises.read", {"id": pid}), 20000)["promise"] == created
        done = ok(api("promises.complete", {"id": pid, "state": "RESOLVED", "value": {"data": "b2s="}}), 20100)
        assert done["promise"]["state"] == "RESOLVED" and done["promise"]["value"] == {"data": "b2s="}
        assert "completedOn" in done["promise"]
        err(api("promises.complete", {"id": pid, "state": "REJECTED"}), 403)

    def test_unknown_promise_is_404(self, api):
        """Reading, completing or calling back on a promise that does not exist is 404."""
        err(api("promises.read", {"id": uid("missing")}), 404)
        err(api("promises.complete", {"id": uid("missing"), "state": "RESOLVED"}), 404)
        err(api("promises.callback", {"promiseId": uid("m"), "rootPromiseId": "r", "recv": "x", "timeout": FAR}), 404)
        err(api("promises.subscribe", {"id": "s", "promiseId": uid("m"), "recv": "x", "timeout": FAR}), 404)

    def test_search_pages_through_every_match(self, api):
        """Search with a prefix, a state filter and a small limit returns every match once, newest first."""
        prefix = uid("s")
        ids = [f"{prefix}.{i}" for i in range(7)]
        for pid in ids:
            ok(api("promises.create", {"id": pid, "timeout": FAR, "tags": {"batch": prefix}}), 20100)
        ok(api("promises.complete", {"id": ids[3], "state": "REJECTED_CANCELED"}), 20100)
        seen, page = [], ok(api("promises.search", {"id": f"{prefix}.*", "states": ["PENDING"], "limit": 2}), 20000)
        while True:
            seen += [p["id"] for p in page.get("promises", [])]
            if "cursor" not in page:
                break
            page = ok(api("promises.search", {"cursor": page["cursor"]}), 20000)
        assert seen == [i for i in reversed(ids) if i != ids[3]]
        rejected = ok(api("promises.search", {"id": f"{prefix}.*", "states": ["REJECTED"]}), 20000)
        assert [p["id"] for p in rejected["promises"]] == [ids[3]]
        err(api("promises.search", {"cursor": "forged.cursor"}), 400)
        err(api("promises.search", {"id": ""}), 400)
        err(api("promises.search", {"id": "*", "limit": 101}), 400)

    def test_createtask_returns_a_claimed_task(self, api):
        """promises.createtask with a resonate:invoke tag creates the promise and a CLAIMED task for the caller."""
        pid = uid("ct")
        reply = ok(
            api(
                "promises.createtask",
                {"id": pid, "timeout": FAR, "tags": {"resonate:invoke": "nats://nobody"}, "taskProcessId": "w1", "taskTtl": 60_000},
            ),
            20100,
        )
        assert reply["task"]["id"] == f"__invoke:{pid}" and reply["task"]["processId"] == "w1"
        assert reply["task"]["counter"] == 1
        err(api("promises.createtask", {"id": uid("ct"), "taskProcessId": "w", "taskTtl": -1}), 400)
        ok(api("tasks.complete", {"id": f"__invoke:{pid}", "counter": 1}), 20100)

    def test_callback_and_subscribe(self, api):
        """A callback on a pending promise is 201 with the callback, again 200 without; on a completed one 200."""
        leaf, root = uid("leaf"), uid("root")
        ok(api("promises.create", {"id": leaf, "timeout": FAR}), 20100)
        ok(api("promises.create", {"id": root, "timeout": FAR}), 20100)
        body = {"promiseId": leaf, "rootPromiseId": root, "recv": "nats://nobody", "timeout": FAR}
        first = ok(api("promises.callback", body), 20100)
        assert first["callback"]["id"] == f"__resume:{root}:{leaf}" and first["callback"]["promiseId"] == leaf
        assert "callback" not in ok(api("promises.callback", body), 20000)
        sub = ok(api("promises.subscribe", {"id": "s1", "promiseId": leaf, "recv": "x", "timeout": FAR}), 20100)
        assert sub["callback"]["id"] == f"__notify:{leaf}:s1"
        err(api("promises.callback", {**body, "rootPromiseId": leaf}), 400)
        err(api("promises.subscribe", {"id": "s1", "promiseId": leaf}), 400)


class TestSchedulesLocksTasksOverNats:
    def test_schedule_lifecycle(self, api):
        """A schedule is created, read, found, deleted (204), then 404."""
        sid = uid("sched")
        created = ok(api("schedules.create", {"id": sid, "cron": "0 0 * * *", "promiseId": "r-{{.timestamp}}", "description": "d"}), 20100)
        assert created["schedule"]["desc"] == "d" and created["schedule"]["nextRunTime"] > now_ms()
        err(api("schedules.create", {"id": sid, "cron": "0 0 * * *", "promiseId": "x"}), 409)
        assert ok(api("schedules.read", {"id": sid}), 20000)["schedule"]["id"] == sid
        found = ok(api("schedules.search", {"id": f"{sid}*"}), 20000)
        assert [s["id"] for s in found["schedules"]] == [sid]
        assert ok(api("schedules.delete", {"id": sid}), 20400) == {}
        err(api("schedules.read", {"id": sid}), 404)
        err(api("schedules.delete", {"id": sid}), 404)
        err(api("schedules.create", {"id": uid("bad"), "cron": "not a cron", "promiseId": "x"}), 400)

    def test_schedule_fires_promises(self, api):
        """An every-second schedule creates promises tagged with the schedule id within a few seconds."""
        sid = uid("tick")
        ok(api("schedules.create", {"id": sid, "cron": "* * * * * *", "promiseId": sid + ".{{.timestamp}}", "promiseTimeout": 60_000}), 20100)
        found = poll(lambda: ok(api("promises.search", {"id": f"{sid}.*", "tags": {"resonate:schedule": sid}}), 20000).get("promises"))
        assert found, "the schedule never fired"
        assert found[0]["tags"]["resonate:invocation"] == "true"
        ok(api("schedules.delete", {"id": sid}), 20400)

    def test_locks(self, api):
        """Acquire (201) by one execution, refused (403) for another, heartbeat counts it, release (204), release again 404."""
        rid = uid("res")
        lock = ok(api("locks.acquire", {"resourceId": rid, "executionId": "e1", "processId": "p1", "ttl": 60_000}), 20100)["lock"]
        assert lock["executionId"] == "e1" and lock["expiresAt"] >= now_ms()
        err(api("locks.acquire", {"resourceId": rid, "executionId": "e2", "processId": "p2", "ttl": 10}), 403)
        assert ok(api("locks.heartbeat", {"processId": "p1"}), 20000)["locksAffected"] >= 1
        assert ok(api("locks.release", {"resourceId": rid, "executionId": "e1"}), 20400) == {}
        err(api("locks.release", {"resourceId": rid, "executionId": "e1"}), 404)
        err(api("locks.acquire", {"resourceId": rid, "executionId": "e1"}), 400)

    def test_invoke_task_is_delivered_claimed_and_completed(self, server, client, api):
        """A promise tagged resonate:invoke=nats://S sends an invoke message to S; a worker claims and completes the task."""
        worker = uid("worker")
        inbox = client.inbox(worker)
        pid = uid("job")
        ok(api("promises.create", {"id": pid, "timeout": FAR, "tags": {"resonate:invoke": f"nats://{worker}"}}), 20100)
        message = next_message(inbox)
        assert message is not None, "no invoke message arrived"
        assert message["type"] == "invoke" and message["task"]["id"] == f"__invoke:{pid}"
        assert message["href"]["claim"].endswith(f"/tasks/claim/__invoke:{pid}/1")
        task = message["task"]
        claimed = ok(api("tasks.claim", {"id": task["id"], "counter": task["counter"], "processId": "w", "ttl": 30_000}), 20100)
        assert claimed["rootPromise"]["id"] == pid and claimed["rootPromiseHref"].endswith(f"/promises/{pid}")
        err(api("tasks.claim", {"id": task["id"], "counter": task["counter"]}), 403)
        assert ok(api("tasks.heartbeat", {"processId": "w"}), 20000)["tasksAffected"] == 1
        ok(api("promises.complete", {"id": pid, "state": "RESOLVED"}), 20100)
        done = ok(api("tasks.complete", {"id": task["id"], "counter": task["counter"]}), 20000)
        assert done["task"]["id"] == task["id"]
        err(api("tasks.claim", {"id": "__invoke:nothing", "counter": 1}), 404)
        err(api("tasks.drop", {"id": task["id"], "counter": 0}), 400)

    def test_notify_is_delivered_to_a_physical_nats_receiver(self, client, api):
        """A subscription with recv {"type":"nats","data":{"subject":S}} gets one notify message with the completed promise."""
        listener = uid("listener")
        inbox = client.inbox(listener)
        pid = uid("watched")
        ok(api("promises.create", {"id": pid, "timeout": FAR}), 20100)
        recv = {"type": "nats", "data": {"subject": listener}}
        ok(api("promises.subscribe", {"id": "sub", "promiseId": pid, "recv": recv, "timeout": FAR}), 20100)
        ok(api("promises.complete", {"id": pid, "state": "REJECTED", "value": {"data": "bm8="}}), 20100)
        message = next_message(inbox)
        assert message == {"type": "notify", "promise": message["promise"]}
        assert message["promise"]["id"] == pid and message["promise"]["state"] == "REJECTED"
        assert next_message(inbox, timeout=1.0) is None, "notify must be sent once"

    def test_dropped_task_is_redelivered_with_a_new_counter(self, client, api):
        """After tasks.drop the task goes back to INIT with counter+1 and is sent again."""
        worker = uid("w")
        inbox = client.inbox(worker)
        pid = uid("again")
        ok(api("promises.create", {"id": pid, "timeout": FAR, "tags": {"resonate:invoke": f"nats://{worker}"}}), 20100)
        first = next_message(inbox)["task"]
        ok(api("tasks.claim", {"id": first["id"], "counter": 1, "processId": "w", "ttl": 30_000}), 20100)
        dropped = ok(api("tasks.drop", {"id": first["id"], "counter": 1}), 20100)["task"]
        assert dropped["counter"] == 2
        second = next_message(inbox)
        assert second is not None and second["task"]["counter"] == 2
        err(api("tasks.complete", {"id": first["id"], "counter": 1}), 403)


class TestEnvelope:
    BAD = [
        b"not json",
        b"[1, 2]",
        b'"a string"',
        b"{}",
        b'{"operation": "promises.get", "payload": {}}',
        b'{"operation": "", "payload": {}}',
        b'{"operation": 5, "payload": {}}',
        b'{"operation": "promises.read"}',
        b'{"operation": "promises.read", "payload": [1]}',
        b'{"operation": "promises.create", "payload": {"id": 1}}',
        b'{"operation": "promises.create", "payload": {"id": "x", "timeout": "soon"}}',
        b'{"operation": "promises.create", "payload": {"id": "x", "timeout": 9223372036854775808}}',
        b'{"operation": "promises.create", "payload": {"id": "x", "timeout": 1.5}}',
        b'{"operation": "promises.create", "payload": {"id": "x", "param": {"data": "%%%"}}}',
        b'{"operation": "promises.create", "payload": {"id": "x", "tags": {"a": 1}}}',
        b'{"operation": "promises.read", "payload": {"id": "x"}, "metadata": {"a": 1}}',
        b'{"operation": "promises.complete", "payload": {"id": "x", "state": "resolved"}}',
        b"\xff\xfe\x00",
    ]

    @pytest.mark.parametrize("raw", BAD, ids=[b.decode("latin-1")[:40] for b in BAD])
    def test_malformed_requests_are_400_and_the_server_keeps_serving(self, server, client, raw):
        """A malformed envelope or payload gets a 400 reply, and the next valid request is answered."""
        subject = server.config.nats_subject
        reply = json.loads(client.request(subject, raw).data)
        err(reply, 400)
        assert ok(client.call(subject, "promises.search", {"id": "*", "limit": 1}), 20000) is not None

    MSGPACK_BAD = {
        "not MessagePack (0xc1)": b"\xc1",
        "empty": b"",
        "truncated": msgpack.packb({"operation": "promises.read", "payload": {"id": "x"}})[:-1],
        "trailing bytes": msgpack.packb({"operation": "promises.read", "payload": {"id": "x"}}) + b"\x00",
        "JSON text": b'{"operation": "promises.read", "payload": {"id": "x"}}',
        "an array": msgpack.packb(["promises.read"]),
        "not UTF-8": b"\x82\xa9operation\xadpromises.read\xa7payload\x81\xa2id\xa2\xff\xfe",
        "bin id": msgpack.packb({"operation": "promises.read", "payload": {"id": b"x"}}),
    }

    @pytest.mark.parametrize("name", sorted(MSGPACK_BAD))
    def test_malformed_msgpack_is_400_in_msgpack_and_the_server_keeps_serving(self, server, client, name):
        """A malformed MessagePack body gets a 400 reply, in MessagePack; the next request is answered."""
        subject = server.config.nats_subject
        err(client.send(subject, self.MSGPACK_BAD[name], encoding="msgpack"), 400)
        assert ok(client.call(subject, "promises.search", {"id": "*", "limit": 1}, "msgpack"), 20000) is not None

    @pytest.mark.parametrize("written, read", [("json", "msgpack"), ("msgpack", "json")])
    def test_a_promise_reads_back_the_same_in_the_other_encoding(self, server, client, written, read):
        """A promise written in one encoding reads back identically in the other: lone surrogates,
        non-ASCII text and base64 data included."""
        subject = server.config.nats_subject
        pid = uid("cross") + ".é \ud800 ✓"
        payload = {"id": pid, "timeout": FAR, "param": {"headers": {"ü": "\udfff"}, "data": "AAEC/w=="}, "tags": {"k": "日本"}}
        created = ok(client.call(subject, "promises.create", payload, written), 20100)["promise"]
        again = ok(client.call(subject, "promises.read", {"id": pid}, read), 20000)["promise"]
        assert again == created and again["id"] == pid and again["param"]["data"] == "AAEC/w=="

    def test_field_errors_name_the_field(self, api):
        """The 400 message names the offending field path."""
        assert "payload.timeout" in err(api("promises.create", {"id": "x", "timeout": "soon"}), 400)
        assert "payload.param.data" in err(api("promises.create", {"id": "x", "param": {"data": "%%%"}}), 400)

    def test_request_id_and_metadata_are_echoed(self, api):
        """Metadata.id echoes requestId (or is a fresh UUID), name is the kernel name, protocol nats, extra keys kept."""
        reply = api("promises.search", {"id": "*", "limit": 1}, requestId="req-1", metadata={"trace": "t"})
        assert reply["response"]["Metadata"] == {"id": "req-1", "name": "SearchPromises", "protocol": "nats", "trace": "t"}
        generated = api("promises.search", {"id": "*", "limit": 1})["response"]["Metadata"]["id"]
        assert uuid.UUID(generated).version == 4

    def test_request_without_reply_subject_still_executes(self, server, client, api):
        """A published request with no reply subject is executed; its reply is dropped."""
        pid = uid("fire-and-forget")
        client.publish(server.config.nats_subject, json.dumps({"operation": "promises.create", "payload": {"id": pid, "timeout": FAR}}).encode())
        assert poll(lambda: api("promises.read", {"id": pid})["success"], timeout=5)


class TestSeedReadmeExamples:
    """Every ``nats req`` example of the seed README, sent as written (its timeouts are 1970 deadlines)."""

    def test_examples_as_written(self, module_nats, client):
        srv = start_server(module_nats.url, subject=f"resonate.seed.{uuid.uuid4().hex[:6]}")
        subject = srv.config.nats_subject
        try:
            send = lambda text: client.send(subject, text)  # noqa: E731
            err(send('{"operation": "promises.read", "payload": {"id": "my-promise-id"}}'), 404)
            created = send(
                '{"operation": "promises.create", "requestId": "req-123", "payload": {"id": "my-promise", "timeout": 3600000,'
                ' "param": {"headers": {}, "data": null}, "tags": {"environment": "production"}}}'
            )
            assert ok(created, 20100)["promise"]["state"] == "PENDING"
            assert created["response"]["Metadata"]["id"] == "req-123"
            found = ok(
                send('{"operation": "promises.search", "payload": {"id": "my-promise-*", "states": ["PENDING", "RESOLVED"], "tags": {}, "limit": 10}}'),
                20000,
            )
            assert found.get("promises", []) == []
            completed = send(
                '{"operation": "promises.complete", "payload": {"id": "my-promise", "state": "RESOLVED",'
                ' "value": {"headers": {"content-type": "application/json"}, "data": "eyJyZXN1bHQiOiAic3VjY2VzcyJ9"}}}'
            )
            # the 1970 deadline passed: the promise times out instead, and a non-strict complete gets it back
            assert ok(completed, 20000)["promise"]["state"] == "REJECTED_TIMEDOUT"
            schedule = send(
                '{"operation": "schedules.create", "payload": {"id": "daily-report", "cron": "0 0 * * *",'
                ' "promiseId": "report-{{.timestamp}}", "promiseTimeout": 3600000, "promiseParam": {"headers": {}, "data": null}}}'
            )
            assert ok(schedule, 20100)["schedule"]["promiseId"] == "report-{{.timestamp}}"
            ok(send('{"operation": "promises.create", "requestId": "test-123", "payload": {"id": "test-promise", "timeout": 3600000, "param": {"headers": {}, "data": null}}}'), 20100)
            assert ok(send('{"operation": "promises.read", "payload": {"id": "test-promise"}}'), 20000)["promise"]["state"] == "REJECTED_TIMEDOUT"
            ok(send('{"operation": "promises.search", "payload": {"id": "*", "states": ["PENDING"], "tags": {}, "limit": 10}}'), 20000)
            ok(send('{"operation": "promises.complete", "payload": {"id": "test-promise", "state": "RESOLVED", "value": {"headers": {}, "data": null}}}'), 20000)
            ok(send('{"operation": "schedules.create", "payload": {"id": "daily-job", "cron": "0 0 * * *", "promiseId": "job-{{.timestamp}}", "promiseTimeout": 3600000, "promiseParam": {"headers": {}, "data": null}}}'), 20100)
            lock = send('{"operation": "locks.acquire", "payload": {"resourceId": "resource-id", "processId": "process-id", "executionId": "execution-id", "expiryInMilliseconds": 60000}}')
            assert ok(lock, 20100)["lock"]["ttl"] == 60000
            # the README's tasks.claim shows counter 0, which this server rejects: counters start at 1
            err(send('{"operation": "tasks.claim", "payload": {"id": "promise-id", "counter": 0, "processId": "optional-process-id", "frequency": 60000}}'), 400)
        finally:
            srv.stop()


class TestTopology:
    def test_two_servers_on_one_nats_keep_separate_state(self, module_nats, client):
        """Two servers on their own subjects answer independently (the seed's Multiple Server Setup)."""
        one = start_server(module_nats.url, subject="resonate.server1." + uuid.uuid4().hex[:6])
        two = start_server(module_nats.url, subject="resonate.server2." + uuid.uuid4().hex[:6])
        try:
            ok(client.call(one.config.nats_subject, "promises.create", {"id": "shared-id", "timeout": FAR}), 20100)
            err(client.call(two.config.nats_subject, "promises.read", {"id": "shared-id"}), 404)
            ok(client.call(two.config.nats_subject, "promises.create", {"id": "shared-id", "timeout": FAR}), 20100)
        finally:
            one.stop()
            two.stop()

    def test_reconnects_after_nats_server_restart(self, client):
        """After the nats-server restarts on the same port the server answers again within seconds, state intact."""
        with EmbeddedNatsServer() as nats_server:
            srv = start_server(nats_server.url)
            own = NatsPyClient(nats_server.url, allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
            try:
                subject = srv.config.nats_subject
                ok(own.call(subject, "promises.create", {"id": "survivor", "timeout": FAR}), 20100)
                nats_server.restart()

                def answered():
                    try:
                        return own.call(subject, "promises.read", {"id": "survivor"})
                    except Exception:
                        return None

                reply = poll(answered, timeout=15, interval=0.2)
                assert reply is not None, "no answer within 15 s of the restart"
                assert ok(reply, 20000)["promise"]["id"] == "survivor"
            finally:
                own.close()
                srv.stop()


class TestStartFailures:
    def test_store_in_use_after_nats_connected_leaves_nothing_running(self, tmp_path):
        """A store that cannot be opened once NATS accepted the server: ServerError, the connection is closed and
        the embedded nats-server it started is stopped."""
        store = str(tmp_path / "store")
        holder = Journal(store)
        holder.open()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            url = f"nats://127.0.0.1:{probe.getsockname()[1]}"
        server = Server(Config(nats_addr=url, embedded_nats="always", store_path=store), mode="dev")
        try:
            with pytest.raises(ServerError, match="already in use by another resonate process"):
                server.start()
            assert server.transport is not None and not server.transport.connected
            assert not is_reachable(url), "the embedded nats-server was left running"
        finally:
            holder.close()
