"""Persistent delivery (nats+js://) over a real 1-node JetStream nats-server: a task message waits in
the stream for a worker that starts later; without a stream the delivery warns once and is retried."""

import json
import logging
import time

import pytest

from resonate_sync import Client

from helpers import FAR, poll, start_server, uid


@pytest.fixture
def js_nats(nats_server_factory, tmp_path):
    """A nats-server with JetStream, storing in tmp_path."""
    return nats_server_factory(extra_args=["-js", "-sd", str(tmp_path / "js")])


def create_stream(client, name: str, subject: str) -> None:
    """The operator's step: a file stream capturing ``subject`` (a JetStream API request)."""
    config = {"name": name, "subjects": [subject], "storage": "file", "num_replicas": 1}
    reply = json.loads(client.request(f"$JS.API.STREAM.CREATE.{name}", json.dumps(config).encode()).data)
    assert reply.get("config", {}).get("name") == name, reply


def fetch_one(client, subject: str, durable: str) -> dict:
    """What a worker started later does: a durable pull consumer on the stream, one message fetched and acked."""

    async def go() -> dict:
        js = client.nc.jetstream()
        sub = await js.pull_subscribe(subject, durable=durable)
        (msg,) = await sub.fetch(1, timeout=10)
        await msg.ack()
        return json.loads(msg.data)

    return client.run(go())


class TestPersistentDelivery:
    def test_worker_started_later_finds_its_invoke_message(self, js_nats, nats_client):
        """A promise created while no worker runs: its invoke message is acknowledged by the stream; a worker
        started afterwards reads it from a durable pull consumer, claims the task and completes it."""
        work = uid("work").replace("-", ".")
        admin = nats_client(js_nats.url)
        create_stream(admin, "WORK", work)
        server = start_server(js_nats.url)
        try:
            pid = uid("job")
            with Client(server.url, server.config.nats_subject) as client:
                client.promises_create(pid, FAR, tags={"resonate:invoke": f"nats+js://{work}"})
                assert poll(lambda: server.ticker.sent >= 1), "the stream did not acknowledge the delivery"
                assert server.ticker.failed == 0
                stream = json.loads(admin.request("$JS.API.STREAM.INFO.WORK", b"").data)
                assert stream["state"]["messages"] == 1

                body = fetch_one(nats_client(js_nats.url), work, durable="workers")  # the worker starts now
                assert body["type"] == "invoke" and body["task"]["rootPromiseId"] == pid
                task = body["task"]
                claim = client.tasks_claim(task["id"], task["counter"], "worker-1", ttl="30s")
                assert claim.root_promise.id == pid
                client.promises_resolve(pid, b"done")
                client.tasks_complete(task["id"], task["counter"])
                assert client.promises_read(pid).state == "RESOLVED"
        finally:
            server.stop()

    def test_no_stream_warns_once_retries_then_delivers(self, js_nats, nats_client, caplog):
        """Without a stream on the subject the delivery fails with one warning (not one per retry) and is retried;
        once the operator creates the stream, the next retry is acknowledged. The object form works alike."""
        work = uid("orphan").replace("-", ".")
        server = start_server(js_nats.url)
        try:
            recv = json.dumps({"type": "nats", "data": {"subject": work, "jetstream": True}})
            with caplog.at_level(logging.INFO, logger="resonate_sync.ticker"), \
                    Client(server.url, server.config.nats_subject) as client:  # fmt: skip
                client.promises_create(uid("job"), FAR, tags={"resonate:invoke": recv})
                assert poll(lambda: server.ticker.failed >= 3), "the delivery was not retried"
                warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
                assert len(warnings) == 1, warnings
                assert "no JetStream stream captures the subject" in warnings[0] and repr(work) in warnings[0]
                assert server.ticker.sent == 0

                create_stream(nats_client(js_nats.url), "LATE", work)
                assert poll(lambda: server.ticker.sent >= 1), "the retry after the stream appeared was not acknowledged"
                assert any("acknowledges deliveries to" in r.getMessage() for r in caplog.records)
        finally:
            server.stop()

    def test_plain_subscriber_is_no_stream(self, js_nats, nats_client, caplog):
        """A plain subscriber on the subject does not acknowledge: the delivery times out and is retried, not counted sent."""
        work = uid("plain").replace("-", ".")
        received = nats_client(js_nats.url).collect(work)
        server = start_server(js_nats.url)
        try:
            started = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="resonate_sync.ticker"), \
                    Client(server.url, server.config.nats_subject) as client:  # fmt: skip
                client.promises_create(uid("job"), FAR, tags={"resonate:invoke": f"nats+js://{work}"})
                assert poll(lambda: server.ticker.failed >= 1, timeout=15)
            assert server.ticker.sent == 0 and received
            assert any("no PubAck within 2 s" in r.getMessage() for r in caplog.records)
            assert time.monotonic() - started < 10  # one pass waits at most the ack timeout
        finally:
            server.stop()


def test_many_pending_deliveries_share_one_wait(js_nats, nats_client):
    """Fifty persistent deliveries of one pass are all in flight at once: the stream holds every message."""
    work = uid("many").replace("-", ".")
    admin = nats_client(js_nats.url)
    create_stream(admin, "MANY", work)
    server = start_server(js_nats.url)
    try:
        with Client(server.url, server.config.nats_subject) as client:
            for i in range(50):
                client.promises_create(uid(f"job{i}"), FAR, tags={"resonate:invoke": f"nats+js://{work}"})
            assert poll(lambda: server.ticker.sent >= 50)
        assert json.loads(admin.request("$JS.API.STREAM.INFO.MANY", b"").data)["state"]["messages"] == 50
        assert server.ticker.failed == 0
    finally:
        server.stop()


