"""``resonate_sync.Client`` over both transports: a real Server over a real nats-server, and a
core in this process (``LocalTransport``, no network). Tests that take ``connect``, ``client`` or
``clocked`` run once per transport and encoding (JSON, MessagePack), with the same assertions, so
every operation gives the same results in both encodings; those that take ``fake`` run against a
scripted responder over NATS and a scripted transport (no network)."""

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import msgpack
import pytest

from resonate_sync import (
    AlreadyExists,
    BadRequest,
    Client,
    Forbidden,
    InternalError,
    NotFound,
    Unavailable,
)
from resonate_sync.client import ConnectionFailed, LocalTransport, Page, RequestTimeout
from resonate_sync.core import Resonate
from resonate_sync.core.clock import FakeClock
from resonate_sync.errors import Retryable
from resonate_sync.models import Value
from resonate_sync.transport import Connection
from resonate_sync.transport.embedded import EmbeddedNatsServer
from helpers import FAR, uid
from helpers import start_server as serve



@pytest.fixture(scope="module")
def server(shared_nats_server):
    srv = serve(shared_nats_server.url)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def replicated_server(tmp_path_factory):
    """A server on the JetStream store, on a nats-server of its own with JetStream on."""
    with EmbeddedNatsServer(extra_args=["-js", "-sd", str(tmp_path_factory.mktemp("js"))]) as nats_server:
        srv = serve(nats_server.url, store="jetstream")
        yield srv
        srv.stop()


@pytest.fixture(scope="module", params=["nats-json", "nats-msgpack", "jetstream-json", "local-json", "local-msgpack"])
def connect(request):
    """``connect(**options)``: a new Client of one server over NATS (state in memory, or on the
    JetStream store), or of one core in this process, speaking JSON or MessagePack."""
    where, encoding = request.param.split("-")
    if where != "local":
        server = request.getfixturevalue("server" if where == "nats" else "replicated_server")
        return lambda **options: Client(server.url, server.config.nats_subject, encoding=encoding, **options)
    core = Resonate()
    return lambda **options: Client(transport=LocalTransport(core), encoding=encoding, **options)


@pytest.fixture(scope="module")
def client(connect):
    with connect() as c:
        yield c


def invoke_tags() -> dict:
    """Tags that make a promise's creation also create an invoke task (sent where nobody listens)."""
    return {"resonate:invoke": f"nats://{uid('sink')}"}


class TestPromises:
    def test_create_replay_and_conflict(self, client):
        """Create says created; a replay with the same key says not created; without a key it is AlreadyExists (409)."""
        pid = uid("p")
        promise, created = client.promises_create(pid, FAR, b"hello", tags={"k": "v"}, idempotency_key="ik")
        assert created and promise.state == "PENDING" and promise.param.raw == b"hello"
        assert promise.tags == {"k": "v"} and promise.idempotency_key_for_create == "ik" and promise.timeout == FAR
        again = client.promises_create(pid, FAR, b"ignored", idempotency_key="ik")
        assert again == (promise, False)
        with pytest.raises(AlreadyExists) as info:
            client.promises_create(pid, FAR)
        assert info.value.code == 409 and info.value.message == "The specified promise already exists"

    def test_binary_data_and_headers_round_trip(self, client):
        """Bytes that are not text go out as base64 and come back as the same bytes, headers too."""
        pid = uid("bin")
        raw = bytes(range(256))
        client.promises_create(pid, FAR, Value.of(raw, headers={"content-type": "application/octet-stream"}))
        promise = client.promises_read(pid)
        assert promise.param.raw == raw and promise.param.headers == {"content-type": "application/octet-stream"}
        client.promises_resolve(pid, "héllo")
        assert client.promises_read(pid).value.raw == "héllo".encode()

    def test_read_unknown_is_not_found(self, client):
        """Reading a promise that does not exist raises NotFound with code 404 and the status text."""
        with pytest.raises(NotFound) as info:
            client.promises_read(uid("missing"))
        assert info.value.code == 404 and info.value.message == "The specified promise was not found"

    @pytest.mark.parametrize(
        "method, state",
        [("promises_resolve", "RESOLVED"), ("promises_reject", "REJECTED"), ("promises_cancel", "REJECTED_CANCELED")],
    )
    def test_complete_shortcuts(self, client, method, state):
        """resolve, reject and cancel complete a pending promise with their state and value."""
        pid = uid("c")
        client.promises_create(pid, FAR)
        promise, created = getattr(client, method)(pid, b"v", idempotency_key="done")
        assert created and promise.state == state and promise.value.raw == b"v" and promise.completed_on
        assert getattr(client, method)(pid, b"v", idempotency_key="done") == (promise, False)

    def test_complete_conflicts(self, client):
        """Completing a completed promise differently is Forbidden (403); an invalid state is BadRequest (400)."""
        pid = uid("c")
        client.promises_create(pid, FAR)
        client.promises_complete(pid, "RESOLVED")
        with pytest.raises(Forbidden) as info:
            client.promises_reject(pid)
        assert info.value.code == 403 and info.value.message == "The promise has already been resolved"
        with pytest.raises(BadRequest) as info:
            client.promises_complete(pid, "PENDING")
        assert info.value.code == 400 and "PENDING" in info.value.message
        with pytest.raises(NotFound):
            client.promises_resolve(uid("missing"))

    def test_search_pages_and_search_all(self, client):
        """A page holds at most limit promises with a cursor to continue; search_all follows cursors to the end."""
        prefix = uid("s")
        ids = [f"{prefix}.{i}" for i in range(5)]
        for pid in ids:
            client.promises_create(pid, FAR, tags={"batch": prefix})
        client.promises_cancel(ids[0])
        first = client.promises_search(f"{prefix}.*", limit=2)
        assert isinstance(first, Page) and [p.id for p in first] == ids[:2:-1] and len(first) == 2 and first.cursor
        second = client.promises_search(cursor=first.cursor)
        assert [p.id for p in second] == [ids[2], ids[1]]
        assert [p.id for p in client.promises_search_all(f"{prefix}.*", limit=2)] == ids[::-1]
        pending = client.promises_search_all("*", states=["PENDING"], tags={"batch": prefix})
        assert [p.id for p in pending] == ids[:0:-1]
        rejected = client.promises_search(f"{prefix}.*", states=["REJECTED"])
        assert [p.id for p in rejected] == [ids[0]] and rejected.cursor is None
        with pytest.raises(BadRequest):
            client.promises_search("*", limit=101)

    def test_createtask(self, client):
        """createtask with a router tag returns the promise and its claimed task; without one, no task."""
        pid = uid("ct")
        promise, task, created = client.promises_createtask(pid, FAR, "proc-1", task_ttl=60_000, tags=invoke_tags())
        assert created and promise.id == pid and task.id == f"__invoke:{pid}" and task.process_id == "proc-1"
        plain = client.promises_createtask(uid("ct"), FAR, "proc-1")
        assert plain.created and plain.task is None
        with pytest.raises(BadRequest):
            client.promises_createtask(uid("ct"), FAR, "")

    def test_callback_and_subscribe(self, client):
        """A callback or subscription is registered once, found again (not created), and never on a completed promise."""
        leaf, root = uid("leaf"), uid("root")
        client.promises_create(leaf, FAR)
        promise, callback, created = client.promises_callback(leaf, root, "poll://any@default", FAR)
        assert created and callback.id == f"__resume:{root}:{leaf}" and promise.id == leaf
        assert client.promises_callback(leaf, root, "poll://any@default", FAR)[1:] == (None, False)
        sub = client.promises_subscribe("sub-1", leaf, {"type": "nats", "data": {"subject": uid("n")}}, FAR)
        assert sub.created and sub.callback.id == f"__notify:{leaf}:sub-1"
        client.promises_resolve(leaf)
        late = client.promises_subscribe("sub-2", leaf, "poll://any@default", FAR)
        assert late.promise.state == "RESOLVED" and late.callback is None and not late.created
        with pytest.raises(NotFound):
            client.promises_callback(uid("missing"), root, "x", FAR)
        with pytest.raises(BadRequest):
            client.promises_callback(leaf, leaf, "x", FAR)


NOW = FAR - 10 * 86_400_000  # the fake clock: ten days before FAR, so nothing times out during a test


@pytest.fixture(scope="module")
def clocked(connect):
    """A client whose "now" is NOW."""
    with connect(clock=FakeClock(NOW)) as c:
        yield c


class TestTimes:
    @pytest.mark.parametrize("timeout, expected", [
        ("1h30m", NOW + 5_400_000),
        (timedelta(minutes=90), NOW + 5_400_000),
        (FAR, FAR),
        (str(FAR), FAR),
        (datetime(2100, 1, 1, tzinfo=timezone.utc), FAR),
        ("2099-12-31T23:00:00-01:00", FAR),
        ("2100-01-01T00:00:00.250Z", FAR + 250),
    ])  # fmt: skip
    def test_deadline_forms(self, clocked, timeout, expected):
        """A deadline is ms since the epoch, an aware datetime, an RFC 3339 string, or a duration from the client's clock."""
        promise, _ = clocked.promises_create(uid("d"), timeout)
        assert promise.timeout == expected

    @pytest.mark.parametrize("timeout, message", [
        (60_000, "as ms since the epoch it is 1970-01-01T00:01:00.000Z"),
        ("60000", "For 1m from now write 1m"),
        (0, "a deadline is ms since the epoch from 2000 on"),
        (datetime(2100, 1, 1), "naive datetime"),
        ("2100-01-01T00:00:00", "has no UTC offset"),
        ("tomorrow", "RFC 3339"),
    ])  # fmt: skip
    def test_a_small_number_is_refused_before_anything_is_sent(self, clocked, timeout, message):
        """An int before 2000 is surely a duration: ValueError naming what it would have meant, and no promise."""
        pid = uid("d")
        with pytest.raises(ValueError, match="^timeout: ") as info:
            clocked.promises_create(pid, timeout)
        assert message in str(info.value)
        with pytest.raises(NotFound):
            clocked.promises_read(pid)

    def test_every_deadline_parameter_follows_the_rule(self, clocked):
        """createtask's task_timeout and the callback and subscription timeouts take the same forms and refuse the same."""
        leaf, root = uid("leaf"), uid("root")
        clocked.promises_create(leaf, "1h")
        _, task, _ = clocked.promises_createtask(uid("ct"), "2h", "w", task_timeout="1h", tags=invoke_tags())
        assert task.timeout == NOW + 3_600_000
        assert clocked.promises_callback(leaf, root, "poll://any@default", "1h").callback.timeout == NOW + 3_600_000
        assert clocked.promises_subscribe("s", leaf, "poll://any@default", FAR).callback.timeout == FAR
        for call in (
            lambda: clocked.promises_createtask(uid("ct"), "1h", "w", task_timeout=3_600_000),
            lambda: clocked.promises_callback(leaf, root, "poll://any@default", 3_600_000),
            lambda: clocked.promises_subscribe("s2", leaf, "poll://any@default", 0),
        ):
            with pytest.raises(ValueError, match="surely a duration|from 2000 on"):
                call()

    def test_durations(self, clocked):
        """A ttl or a schedule's promise_timeout is ms, a timedelta or a Go duration; a bare number string needs a unit."""
        assert clocked.locks_acquire(uid("r"), "e", "p", ttl="2m").ttl == 120_000
        assert clocked.locks_acquire(uid("r"), "e", "p", ttl=timedelta(seconds=30)).ttl == 30_000
        assert clocked.locks_acquire(uid("r"), "e", "p", ttl=45_000).ttl == 45_000
        schedule, _ = clocked.schedules_create(uid("sched"), "0 0 1 1 *", "x", promise_timeout="30m")
        assert schedule.promise_timeout == 1_800_000
        with pytest.raises(ValueError, match=r'ttl: "3600000" is not a duration: .* write 3600000ms \(1h\)'):
            clocked.locks_acquire(uid("r"), "e", "p", ttl="3600000")
        with pytest.raises(TypeError, match="^ttl: "):
            clocked.tasks_claim("t", 1, ttl=datetime(2100, 1, 1, tzinfo=timezone.utc))


class TestSchedules:
    def test_lifecycle(self, client):
        """A schedule is created, replayed with its key, read, found by search, deleted, then NotFound."""
        sid = uid("sched")
        schedule, created = client.schedules_create(
            sid, "0 0 1 1 *", "run.{{.id}}.{{.timestamp}}", promise_timeout=60_000, promise_param=b"p",
            promise_tags={"pt": "1"}, tags={"team": sid}, description="yearly", idempotency_key="ik",
        )  # fmt: skip
        assert created and schedule.description == "yearly" and schedule.promise_param.raw == b"p"
        assert schedule.next_run_time > schedule.created_on and schedule.tags == {"team": sid}
        assert client.schedules_create(sid, "* * * * *", "other", idempotency_key="ik") == (schedule, False)
        with pytest.raises(AlreadyExists) as info:
            client.schedules_create(sid, "* * * * *", "other")
        assert info.value.code == 409
        assert client.schedules_read(sid) == schedule
        assert [s.id for s in client.schedules_search("*", tags={"team": sid})] == [sid]
        assert [s.id for s in client.schedules_search_all(f"{sid}*", limit=1)] == [sid]
        client.schedules_delete(sid)
        with pytest.raises(NotFound) as info:
            client.schedules_read(sid)
        assert info.value.message == "The specified schedule was not found"
        with pytest.raises(NotFound):
            client.schedules_delete(sid)

    def test_invalid_cron_is_bad_request(self, client):
        """A cron expression that does not parse is BadRequest naming the rule."""
        with pytest.raises(BadRequest) as info:
            client.schedules_create(uid("sched"), "not a cron", "x")
        assert "cron" in info.value.message


class TestLocks:
    def test_acquire_heartbeat_release(self, client):
        """A lock is held by one execution; others are Forbidden; heartbeats count it; release twice is NotFound."""
        resource, process = uid("res"), uid("proc")
        lock = client.locks_acquire(resource, "exec-1", process, ttl=60_000)
        assert (lock.resource_id, lock.execution_id, lock.process_id, lock.ttl) == (resource, "exec-1", process, 60_000)
        assert lock.expires_at > time.time() * 1000
        with pytest.raises(Forbidden) as info:
            client.locks_acquire(resource, "exec-2", process, ttl=60_000)
        assert info.value.message == "The lock is already acquired"
        assert client.locks_heartbeat(process) == 1
        client.locks_release(resource, "exec-1")
        assert client.locks_heartbeat(process) == 0
        with pytest.raises(NotFound):
            client.locks_release(resource, "exec-1")


class TestTasks:
    def test_claim_heartbeat_drop_complete(self, client):
        """An invoke task is claimed with its root promise, heartbeated, dropped (counter+1), reclaimed, completed once."""
        pid, process = uid("t"), uid("proc")
        client.promises_create(pid, FAR, b"input", tags=invoke_tags())
        task_id = f"__invoke:{pid}"
        claim = client.tasks_claim(task_id, 1, process, ttl=60_000)
        assert claim.task.id == task_id and claim.task.process_id == process and claim.task.counter == 1
        assert claim.root_promise.id == pid and claim.root_promise.param.raw == b"input" and claim.leaf_promise is None
        assert claim.root_promise_href.endswith(f"/promises/{pid}")
        with pytest.raises(Forbidden) as info:
            client.tasks_claim(task_id, 1, "someone-else")
        assert info.value.message == "The task is already claimed"
        assert client.tasks_heartbeat(process) == 1
        dropped, created = client.tasks_drop(task_id, 1)
        assert created and dropped.counter == 2 and dropped.process_id is None
        assert client.tasks_drop(task_id, 2).created is False
        with pytest.raises(Forbidden):
            client.tasks_claim(task_id, 1)
        client.tasks_claim(task_id, 2, ttl=60_000)
        done, created = client.tasks_complete(task_id, 2)
        assert created and done.completed_on
        assert client.tasks_complete(task_id, 99).created is False
        with pytest.raises(NotFound):
            client.tasks_claim(uid("__invoke:missing"), 1)
        with pytest.raises(BadRequest):
            client.tasks_complete(task_id, 0)

    def test_resume_task_claim_has_the_leaf_promise(self, client):
        """Claiming a resume task returns the root and the completed leaf promise."""
        root, leaf = uid("root"), uid("leaf")
        client.promises_create(root, FAR)
        client.promises_create(leaf, FAR)
        client.promises_callback(leaf, root, f"nats://{uid('sink')}", FAR)
        client.promises_resolve(leaf, b"result")
        claim = client.tasks_claim(f"__resume:{root}:{leaf}", 1, ttl=60_000)
        assert claim.root_promise.id == root and claim.leaf_promise.value.raw == b"result"
        assert claim.leaf_promise_href.endswith(f"/promises/{leaf}")


class TestConcurrency:
    def test_sixteen_threads_share_one_client(self, client):
        """16 threads doing create/read/complete cycles on one Client all succeed, each seeing only its own replies."""
        cycles, errors, done = 25, [], []
        barrier = threading.Barrier(16)

        def worker(n: int) -> None:
            try:
                barrier.wait()
                for i in range(cycles):
                    pid, data = uid(f"mt{n}.{i}"), f"{n}:{i}".encode()
                    promise, created = client.promises_create(pid, FAR, data, idempotency_key=pid)
                    assert created and promise.id == pid and promise.param.raw == data
                    assert client.promises_read(pid).param.raw == data
                    resolved, created = client.promises_resolve(pid, data[::-1])
                    assert created and resolved.id == pid and resolved.value.raw == data[::-1]
                done.append(n)
            except BaseException as exc:  # reported below with the thread's number
                errors.append((n, exc))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors and sorted(done) == list(range(16))


class _FakeServer:
    """A responder on a subject that answers each request with ``reply(n, envelope)`` (None: stay silent)."""

    def __init__(self, url: str, subject: str, reply) -> None:
        self.requests = []
        self.headers = []
        self._reply = reply
        self.subject = subject
        self._conn = Connection(url, name="fake-resonate")
        self._conn.subscribe(subject, callback=self._on_message)
        self._conn.connect()
        self._conn.flush()

    def _on_message(self, msg) -> None:
        self.headers.append(msg.headers)
        msgpacked = (msg.headers or {}).get("Content-Type") == "application/msgpack"
        envelope = msgpack.unpackb(msg.payload) if msgpacked else json.loads(msg.payload)
        self.requests.append(envelope)
        answer = self._reply(len(self.requests), envelope)
        if answer is not None:
            self._conn.publish(msg.reply, json.dumps(answer).encode())

    def close(self) -> None:
        self._conn.close()


class _FakeTransport:
    """The same fake without NATS: a transport that answers ``reply(n, envelope)`` (None: a timeout)."""

    def __init__(self, reply) -> None:
        self.requests = []
        self._reply = reply

    def request(self, data: bytes, timeout: float) -> bytes:
        envelope = json.loads(data)
        self.requests.append(envelope)
        answer = self._reply(len(self.requests), envelope)
        if answer is None:
            raise Retryable(RequestTimeout(f"no reply within {timeout:g} s"), delivered=True)
        return json.dumps(answer).encode()

    def close(self) -> None:
        pass


def unavailable(_n, _envelope):
    return {"success": False, "error": {"code": 503, "message": "The system is shutting down"}}


def promise_reply(envelope, status=20000):
    promise = {"id": envelope["payload"]["id"], "state": "PENDING", "param": {}, "value": {}, "timeout": FAR}
    response = {"Status": status, "Metadata": {"id": envelope["requestId"]}, "Payload": {"promise": promise}}
    return {"success": True, "response": response}


@pytest.fixture(params=["nats", "mock"])
def fake(request):
    """``fake(reply)``: a responder answering ``reply(n, envelope)`` and a Client of it, over NATS or in process."""
    fakes = []
    options = {"timeout": 0.3, "retries": 2, "backoff": 0.01}

    def start(reply):
        if request.param == "mock":
            fakes.append(_FakeTransport(reply))
            return fakes[-1], Client(transport=fakes[-1], **options)
        url, subject = request.getfixturevalue("shared_nats_server").url, uid("resonate.fake")
        fakes.append(_FakeServer(url, subject, reply))
        return fakes[-1], Client(url, subject, **options)

    yield start
    for f in fakes:
        f.close()


class TestEnvelope:
    def test_operation_payload_metadata_and_request_id_are_sent(self, fake):
        """A call sends its operation, the camelCase payload, the caller's metadata and a request id."""
        responder, client = fake(lambda n, env: promise_reply(env, 20100))
        with client:
            client.promises_create("p", FAR, b"x", idempotency_key="k", metadata={"traceparent": "00-ab-cd-01"})
        [envelope] = responder.requests
        assert envelope["operation"] == "promises.create" and envelope["metadata"] == {"traceparent": "00-ab-cd-01"}
        assert envelope["payload"] == {"id": "p", "timeout": FAR, "param": {"data": "eA=="}, "idempotencyKey": "k"}
        assert isinstance(envelope["requestId"], str) and envelope["requestId"]


class TestEncoding:
    def test_msgpack_client_sends_msgpack_with_its_content_type(self, shared_nats_server):
        """encoding="msgpack" sends the envelope as MessagePack with Content-Type: application/msgpack,
        data as a base64 string; a JSON reply (a server that speaks no MessagePack) is still read."""
        responder = _FakeServer(shared_nats_server.url, uid("resonate.fake"), lambda n, env: promise_reply(env, 20100))
        try:
            with Client(shared_nats_server.url, responder.subject, encoding="msgpack") as client:
                promise, created = client.promises_create("p", FAR, b"x", idempotency_key="k")
            assert created and promise.id == "p"
            [headers], [envelope] = responder.headers, responder.requests
            assert headers == {"Content-Type": "application/msgpack"}
            assert envelope["payload"] == {"id": "p", "timeout": FAR, "param": {"data": "eA=="}, "idempotencyKey": "k"}
        finally:
            responder.close()

    def test_json_client_sends_no_headers(self, shared_nats_server):
        """The default encoding is JSON, sent as before: no headers at all."""
        responder = _FakeServer(shared_nats_server.url, uid("resonate.fake"), lambda n, env: promise_reply(env))
        try:
            with Client(shared_nats_server.url, responder.subject) as client:
                client.promises_read("p")
            assert responder.headers == [None] and responder.requests[0]["payload"] == {"id": "p"}
        finally:
            responder.close()

    def test_unknown_encoding_is_refused(self):
        """An encoding other than json or msgpack is a ValueError naming the choices."""
        with pytest.raises(ValueError, match="'json', 'msgpack'"):
            Client(transport=LocalTransport(Resonate()), encoding="cbor")


class TestRetries:
    def test_idempotent_read_is_retried_after_503(self, fake):
        """A read answered 503 twice succeeds on the third attempt."""
        responder, client = fake(lambda n, env: unavailable(n, env) if n < 3 else promise_reply(env))
        with client:
            assert client.promises_read("p").id == "p"
        assert len(responder.requests) == 3
        assert len({r["requestId"] for r in responder.requests}) == 1

    def test_keyless_create_is_not_retried_after_503(self, fake):
        """A create without an idempotency key is sent once: a 503 is raised as Unavailable."""
        responder, client = fake(unavailable)
        with client, pytest.raises(Unavailable) as info:
            client.promises_create("p", FAR)
        assert info.value.code == 503 and len(responder.requests) == 1

    def test_create_with_key_is_retried(self, fake):
        """A create with an idempotency key is retried like a read."""
        responder, client = fake(lambda n, env: unavailable(n, env) if n < 2 else promise_reply(env, 20100))
        with client:
            assert client.promises_create("p", FAR, idempotency_key="k").created
        assert len(responder.requests) == 2

    def test_timeouts_retry_idempotent_calls_only(self, fake):
        """Without a reply, a read is tried 1 + retries times, a claim or an acquire once; both raise RequestTimeout."""
        responder, client = fake(lambda n, env: None)
        with client:
            with pytest.raises(RequestTimeout):
                client.promises_search("*")
            assert len(responder.requests) == 3
            with pytest.raises(RequestTimeout) as info:
                client.tasks_claim("__invoke:p", 1)
            assert len(responder.requests) == 4 and info.value.code == 503
            with pytest.raises(RequestTimeout):
                client.locks_acquire("r", "e", "p", request_timeout=0.1)
            assert len(responder.requests) == 5

    def test_reply_for_another_request_is_an_internal_error(self, fake):
        """A reply whose Metadata.id is another request's is refused, not returned as this call's result."""
        _, client = fake(lambda n, env: promise_reply({**env, "requestId": "someone-else"}))
        with client, pytest.raises(InternalError):
            client.promises_read("p")

    def test_unreachable_request_is_retried_even_without_key(self, shared_nats_server):
        """No responders means no server saw the request: a keyless create waits for the server to come up."""
        subject = uid("resonate.late")
        started = []
        timer = threading.Timer(0.3, lambda: started.append(serve(shared_nats_server.url, subject)))
        with Client(shared_nats_server.url, subject, retries=8, backoff=0.1) as client:
            timer.start()
            try:
                assert client.promises_create(uid("p"), FAR).created
            finally:
                timer.join()
                for srv in started:
                    srv.stop()

    def test_read_survives_a_nats_server_restart(self, nats_server):
        """After the nats-server restarts, an idempotent call reconnects and succeeds."""
        srv = serve(nats_server.url)
        try:
            with Client(nats_server.url, srv.config.nats_subject, retries=10, backoff=0.1) as client:
                pid = uid("p")
                client.promises_create(pid, FAR)
                nats_server.restart()
                deadline = time.monotonic() + 5
                while client.connected and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert not client.connected  # the loss was noticed: the read below has to reconnect
                assert client.promises_read(pid).id == pid
                assert client.connected
        finally:
            srv.stop()


class TestConnection:
    def test_unreachable_url_fails_at_construction(self, nats_server):
        """A Client for a URL where nothing listens raises ConnectionFailed naming the URL."""
        url = nats_server.url
        nats_server.stop()
        with pytest.raises(ConnectionFailed) as info:
            Client(url)
        assert url in info.value.message and info.value.code == 503

    def test_closed_client_refuses_calls(self, connect):
        """After close(), calls raise ConnectionFailed at once."""
        client = connect()
        client.close()
        client.close()
        with pytest.raises(ConnectionFailed):
            client.promises_read("p")

