"""Replies larger than the NATS max_payload are never dropped silently (PROTOCOL.md 13.7).

Each test runs a nats-server configured with a small ``max_payload`` (64 KiB) so that the
limits show with promises of a few tens of kilobytes.
"""

import base64
import json
import logging
import time

import attrs
import pytest

from resonate_sync.core.sizes import promise_bytes, promise_limit
from resonate_sync.models import Promise, PromiseState, Value

from helpers import FAR, poll, start_server, uid
from natsclient import NatsPyClient, next_message
from test_server import err, ok

MAX_PAYLOAD = 65536
LIMIT = promise_limit(MAX_PAYLOAD)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def data(size: int) -> str:
    return base64.b64encode(b"x" * size).decode()


@pytest.fixture
def small_nats(tmp_path, nats_server_factory):
    """A nats-server whose max_payload is 64 KiB (set in a config file: not a flag on every version)."""
    conf = tmp_path / "nats.conf"
    conf.write_text(f"max_payload: {MAX_PAYLOAD}\n")
    server = nats_server_factory(["-c", str(conf)])
    server.conf = conf
    return server


@pytest.fixture
def server(small_nats):
    srv = start_server(small_nats.url)
    yield srv
    srv.stop()


@pytest.fixture
def call(server, small_nats, nats_client):
    """``call(operation, payload)`` → the decoded reply; a request that gets no reply fails the test."""
    client = nats_client(small_nats.url)
    subject = server.config.nats_subject

    def raw(operation, payload):
        envelope = json.dumps({"operation": operation, "payload": payload}).encode()
        return client.request(subject, envelope, timeout=5).data

    def send(operation, payload):
        return json.loads(raw(operation, payload))

    send.raw = raw
    send.client = client
    return send


def padded_to_limit(promise: Promise, pad) -> int:
    """How many characters ``pad(promise, n)`` must add so that the promise counts exactly LIMIT bytes."""
    return LIMIT - promise_bytes(pad(promise, 0))


class TestWriteLimit:
    def test_the_limit_follows_the_servers_max_payload(self, server):
        """At connect the core learns max_payload and holds promises to half of it less the envelope."""
        assert server.transport.max_payload == MAX_PAYLOAD
        assert server.core.settings.max_promise_bytes == LIMIT

    def test_create_too_big_is_400_and_nothing_is_stored(self, call):
        """A promise that could not be returned is refused naming the field; a read then finds nothing."""
        pid = uid("big")
        message = err(call("promises.create", {"id": pid, "timeout": FAR, "param": {"data": data(40_000)}}), 400)
        assert message.startswith("validation error: payload.param: the promise would take ")
        assert f"at most {LIMIT} fit" in message
        err(call("promises.read", {"id": pid}), 404)


class TestSearchPages:
    def test_search_over_big_promises_pages_through_each_once(self, call):
        """Pages shrink to fit max_payload; following cursors returns every promise exactly once."""
        prefix = uid("page")
        ids = [f"{prefix}-{i}" for i in range(9)]
        for pid in ids:
            ok(call("promises.create", {"id": pid, "timeout": FAR, "param": {"data": data(20_000)}}), 20100)
        pages = [ok(call("promises.search", {"id": f"{prefix}-*", "limit": 100}), 20000)]
        while pages[-1].get("cursor"):
            pages.append(ok(call("promises.search", {"cursor": pages[-1]["cursor"]}), 20000))
        seen = [p["id"] for page in pages for p in page["promises"]]
        assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
        assert len(pages) >= 4


class TestClaim:
    def test_claim_with_root_and_leaf_at_the_limit_is_answered(self, call):
        """A resume task whose root and leaf promises both count exactly LIMIT bytes is claimed in one reply."""
        worker = uid("worker")
        inbox = call.client.inbox(worker)
        root, leaf = uid("root"), uid("leaf")
        created = now_ms()

        def root_padded(promise, n):
            return attrs.evolve(promise, tags={"pad": "r" * n})

        root_model = Promise(id=root, state=PromiseState.PENDING, param=Value(data=data(12_000)), timeout=FAR, created_on=created)
        pad = padded_to_limit(root_model, root_padded)
        create = {"id": root, "timeout": FAR, "param": {"data": data(12_000)}}
        err(call("promises.create", {**create, "tags": {"pad": "r" * (pad + 1)}}), 400)
        ok(call("promises.create", {**create, "tags": {"pad": "r" * pad}}), 20100)

        def leaf_padded(promise, n):
            return attrs.evolve(promise, value=Value(headers={"pad": "l" * n}, data=data(12_000)))

        leaf_model = Promise(
            id=leaf, state=PromiseState.RESOLVED, timeout=FAR, created_on=created, completed_on=created
        )
        pad = padded_to_limit(leaf_model, leaf_padded)
        ok(call("promises.create", {"id": leaf, "timeout": FAR}), 20100)
        callback = {"promiseId": leaf, "rootPromiseId": root, "recv": f"nats://{worker}", "timeout": FAR}
        ok(call("promises.callback", callback), 20100)
        value = {"headers": {"pad": "l" * pad}, "data": data(12_000)}
        ok(call("promises.complete", {"id": leaf, "state": "RESOLVED", "value": value}), 20100)

        message = next_message(inbox)
        assert message is not None and message["type"] == "resume"
        task = message["task"]
        raw = call.raw("tasks.claim", {"id": task["id"], "counter": task["counter"], "processId": "w", "ttl": 30_000})
        claimed = ok(json.loads(raw), 20100)
        assert claimed["rootPromise"]["id"] == root and claimed["leafPromise"]["id"] == leaf
        # Both promises nearly fill their half (less their id copies and, for the pending root, its timed-out growth).
        assert 2 * LIMIT - 300 < len(raw) <= MAX_PAYLOAD


class TestTooLargeAtSendTime:
    def test_promise_stored_without_the_limit_answers_500(self, server, call):
        """A promise put in the state by other means (an old journal) is answered with an error, not silence."""
        pid = uid("old")
        limit = server.core.settings.max_promise_bytes
        server.core.settings = attrs.evolve(server.core.settings, max_promise_bytes=0)
        server.core.promises_create(id=pid, timeout=FAR, param=Value(data=data(100_000)))
        server.core.settings = attrs.evolve(server.core.settings, max_promise_bytes=limit)
        message = err(call("promises.read", {"id": pid}), 500)
        assert message.startswith("the reply of ") and message.endswith(f"exceeds the NATS max_payload of {MAX_PAYLOAD} bytes")
        err(call("promises.search", {"id": pid}), 500)

    def test_smaller_max_payload_after_reconnect(self, server, small_nats, nats_client, caplog):
        """After a reconnect to a server with a smaller max_payload, replies that no longer fit are errors."""
        pid = uid("shrunk")
        client = NatsPyClient(small_nats.url, allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        subject = server.config.nats_subject
        try:
            created = client.call(subject, "promises.create", {"id": pid, "timeout": FAR, "param": {"data": data(20_000)}})
            ok(created, 20100)
            small_nats.conf.write_text("max_payload: 16384\n")
            with caplog.at_level(logging.WARNING):
                small_nats.restart()

                def answered():
                    try:
                        return client.call(subject, "promises.read", {"id": pid})
                    except Exception:  # reconnecting, or the server's subscription is not back yet
                        return None

                reply = poll(answered, timeout=15, interval=0.2)
            assert reply is not None, "no answer after the restart"
            assert err(reply, 500).endswith("exceeds the NATS max_payload of 16384 bytes")
            assert any("down from 65536" in r.getMessage() for r in caplog.records)
            assert server.core.settings.max_promise_bytes == promise_limit(16384)
            refused = client.call(subject, "promises.create", {"id": uid("p"), "timeout": FAR, "param": {"data": data(8_000)}})
            assert err(refused, 400).startswith("validation error: payload.param: ")
        finally:
            client.close()
