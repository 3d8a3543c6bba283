"""NATS Services API (ADR-32) discovery and queue groups, over a real nats-server.

The documents are checked field by field against the ADR-32 schemas
(``io.nats.micro.v1.{ping,info,stats}_response``): required fields, types, name and SemVer
patterns, RFC 3339 ``started``, nanosecond integers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from datetime import datetime
from typing import Any, Dict, List, Optional

import pytest

from resonate_sync import __version__
from resonate_sync.api import BUSY, BUSY_REPLY, reply_error
from resonate_sync.config import Config
from resonate_sync.server import Server, ServerError
from resonate_sync.transport import NatsTransport, Request
from resonate_sync.transport.embedded import EmbeddedNatsServer
from resonate_sync.transport.micro import Service

from natsclient import NatsPyClient
from helpers import PEER_WINDOW_MS

FAR = 4_102_444_800_000
NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
INT64 = 2**63 - 1


# -- ADR-32 schema checks --------------------------------------------------------------------


def check_string_map(value: Any, where: str) -> None:
    assert value is None or (
        isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    ), f"{where} must be an object of strings or null: {value!r}"


def check_identity(doc: Dict[str, Any], kind: str) -> None:
    """The standard fields every discovery response carries."""
    assert doc["type"] == f"io.nats.micro.v1.{kind}_response"
    assert isinstance(doc["name"], str) and NAME.match(doc["name"]), doc["name"]
    assert isinstance(doc["id"], str) and len(doc["id"]) >= 1
    assert isinstance(doc["version"], str) and len(doc["version"]) >= 5 and SEMVER.match(doc["version"]), doc["version"]
    check_string_map(doc.get("metadata"), "metadata")


def check_int(value: Any, where: str) -> None:
    assert type(value) is int and 0 <= value <= INT64, f"{where} must be a non-negative int64: {value!r}"


def check_ping(doc: Dict[str, Any]) -> None:
    check_identity(doc, "ping")
    assert set(doc) <= {"type", "name", "id", "version", "metadata"}


def check_info(doc: Dict[str, Any]) -> None:
    check_identity(doc, "info")
    assert isinstance(doc["description"], str)
    assert isinstance(doc["endpoints"], list)
    for endpoint in doc["endpoints"]:
        assert isinstance(endpoint["name"], str) and NAME.match(endpoint["name"])
        assert isinstance(endpoint["subject"], str) and endpoint["subject"]
        assert isinstance(endpoint.get("queue_group", ""), str)
        check_string_map(endpoint.get("metadata"), "endpoint metadata")


def check_stats(doc: Dict[str, Any]) -> None:
    check_identity(doc, "stats")
    started = datetime.fromisoformat(doc["started"].replace("Z", "+00:00"))  # RFC 3339 date-time
    assert started.utcoffset() is not None, "started must carry a time zone"
    assert isinstance(doc["endpoints"], list)
    for endpoint in doc["endpoints"]:
        assert isinstance(endpoint["name"], str) and NAME.match(endpoint["name"])
        assert isinstance(endpoint["subject"], str) and endpoint["subject"]
        assert isinstance(endpoint.get("queue_group", ""), str)
        for field in ("num_requests", "num_errors", "processing_time", "average_processing_time"):
            check_int(endpoint[field], field)
        assert isinstance(endpoint["last_error"], str)
        assert isinstance(endpoint.get("data", {}), dict)
        expected = endpoint["processing_time"] // endpoint["num_requests"] if endpoint["num_requests"] else 0
        assert endpoint["average_processing_time"] == expected


CHECKS = {"PING": check_ping, "INFO": check_info, "STATS": check_stats}


# -- helpers ---------------------------------------------------------------------------------


def gather(client: NatsPyClient, subject: str, expect: int, timeout: float = 3.0, grace: float = 0.3) -> List[Dict[str, Any]]:
    """Publish one request to ``subject`` and collect every reply: until ``expect`` arrived and
    ``grace`` more seconds passed (to catch extra ones), or ``timeout``."""

    async def go() -> List[Dict[str, Any]]:
        replies: List[Any] = []
        done = asyncio.Event()

        async def on_reply(msg: Any) -> None:
            replies.append(json.loads(msg.data))
            if len(replies) >= expect:
                done.set()

        inbox = client.nc.new_inbox()
        sub = await client.nc.subscribe(inbox, cb=on_reply)
        await client.nc.publish(subject, b"", reply=inbox)
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        await asyncio.sleep(grace)
        await sub.unsubscribe()
        return replies

    return client.run(go())


def start_server(url: str, subject: Optional[str] = None, **overrides: Any) -> Server:
    config = Config(
        nats_addr=url,
        nats_subject=subject or f"resonate.disco.{uuid.uuid4().hex[:8]}",
        embedded_nats="never",
        **{"peer_window_ms": PEER_WINDOW_MS, **overrides},
    )
    return Server(config, mode="dev").start()


def call(client: NatsPyClient, subject: str, operation: str, payload: Dict[str, Any]) -> Dict[str, Any]:
    return client.call(subject, operation, payload)


@pytest.fixture
def nats(nats_server: EmbeddedNatsServer) -> EmbeddedNatsServer:
    """A nats-server of this test's own, so $SRV requests reach only this test's servers."""
    return nats_server


@pytest.fixture
def servers():
    """``start(url, **config)`` starts a Server; all stopped after the test."""
    started: List[Server] = []

    def start(url: str, subject: Optional[str] = None, **overrides: Any) -> Server:
        server = start_server(url, subject, **overrides)  # raises before it counts as started
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def client(nats, nats_client) -> NatsPyClient:
    return nats_client(nats.url)


# -- tests -----------------------------------------------------------------------------------


class TestDiscoveryDocuments:
    @pytest.mark.parametrize("verb", ["PING", "INFO", "STATS"])
    def test_every_subject_form_answers_with_a_valid_document(self, verb, nats, servers, client):
        """$SRV.<VERB>, $SRV.<VERB>.resonate and $SRV.<VERB>.resonate.<id> each get one valid document."""
        server = servers(nats.url)
        service_id = server.service.id
        for subject in (f"$SRV.{verb}", f"$SRV.{verb}.resonate", f"$SRV.{verb}.resonate.{service_id}"):
            [doc] = gather(client, subject, expect=1)
            CHECKS[verb](doc)
            assert (doc["name"], doc["id"], doc["version"]) == ("resonate", service_id, __version__)
            assert doc["metadata"] == {"host": socket.gethostname(), "pid": str(os.getpid()), "store": "memory"}

    def test_other_names_and_ids_are_not_answered(self, nats, servers, client):
        """A request for another service name, or another instance id, gets no answer."""
        servers(nats.url)
        assert gather(client, "$SRV.PING.other", expect=1, timeout=0.3, grace=0) == []
        assert gather(client, "$SRV.PING.resonate.not-this-one", expect=1, timeout=0.3, grace=0) == []

    def test_info_names_the_configured_subject(self, nats, servers, client):
        """INFO lists the one endpoint on the configured subject; no queue group by default."""
        server = servers(nats.url, subject="orders.resonate")
        [info] = gather(client, f"$SRV.INFO.resonate.{server.service.id}", expect=1)
        assert info["description"]
        assert info["endpoints"] == [{"name": "api", "subject": "orders.resonate", "queue_group": "", "metadata": {}}]

    def test_info_and_stats_name_the_queue_group(self, nats, servers, client):
        """With --api-nats-queue the endpoint reports its queue group in INFO and STATS."""
        server = servers(nats.url, nats_queue="blue-green")
        service_id = server.service.id
        [info] = gather(client, f"$SRV.INFO.resonate.{service_id}", expect=1)
        [stats] = gather(client, f"$SRV.STATS.resonate.{service_id}", expect=1)
        assert info["endpoints"][0]["queue_group"] == stats["endpoints"][0]["queue_group"] == "blue-green"

    def test_ping_reaches_every_instance(self, nats, servers, client):
        """$SRV.PING from two servers returns two answers with distinct ids, each the server's own."""
        first, second = servers(nats.url), servers(nats.url)
        replies = gather(client, "$SRV.PING", expect=2)
        assert sorted(doc["id"] for doc in replies) == sorted([first.service.id, second.service.id])
        assert first.service.id != second.service.id
        [only] = gather(client, f"$SRV.PING.resonate.{second.service.id}", expect=1)
        assert only["id"] == second.service.id


class TestStats:
    def test_counts_requests_errors_and_time(self, nats, servers, client):
        """After 5 successes and 3 errors, STATS counts 8 requests, 3 errors, the last error and the time."""
        server = servers(nats.url)
        subject = server.config.nats_subject
        [before] = gather(client, f"$SRV.STATS.resonate.{server.service.id}", expect=1)
        check_stats(before)
        assert before["endpoints"][0]["num_requests"] == 0
        assert before["endpoints"][0]["last_error"] == ""
        for i in range(5):
            reply = call(client, subject, "promises.create", {"id": f"p{i}", "timeout": FAR})
            assert reply["success"] is True
        call(client, subject, "promises.read", {"id": "missing"})
        call(client, subject, "no.such.operation", {})
        last = call(client, subject, "promises.read", {"id": "missing-too"})
        assert last["success"] is False
        [stats] = gather(client, f"$SRV.STATS.resonate.{server.service.id}", expect=1)
        check_stats(stats)
        endpoint = stats["endpoints"][0]
        assert (endpoint["num_requests"], endpoint["num_errors"]) == (8, 3)
        assert endpoint["last_error"] == f"{last['error']['code']}:{last['error']['message']}"
        assert endpoint["last_error"].startswith("404:")
        assert endpoint["processing_time"] > 0
        assert stats["started"] == before["started"]

    def test_replies_are_unchanged_by_counting(self, nats, servers, client):
        """Counting changes no reply: an error reply carries no headers; its body says it failed,
        as the Go server's replies do."""
        server = servers(nats.url)
        subject = server.config.nats_subject
        error = client.request(subject, json.dumps({"operation": "promises.read", "payload": {"id": "nope"}}).encode())
        assert json.loads(error.data)["error"]["code"] == 404
        assert not error.headers


class TestDiscoveryUnderLoad:
    def test_discovery_bypasses_the_busy_backlog(self, nats, client):
        """With every worker stuck and the backlog full, API requests get the busy reply (counted as
        errors) while PING and STATS are still answered at once."""
        release = threading.Event()
        subject = f"busy.{uuid.uuid4().hex[:8]}"

        def stuck(request: Request) -> None:
            release.wait(10)
            request.respond(b'{"success":true,"response":{}}')

        service = Service("resonate", __version__, subject)
        transport = NatsTransport(
            nats.url, subject, stuck, workers=1, max_pending=1, busy_reply=BUSY, service=service
        ).start()
        try:
            pending = client.start_requests(subject, [b"{}"], timeout=10)  # takes the one slot
            time.sleep(0.2)
            assert client.request(subject, b"{}", timeout=2).data == BUSY_REPLY
            started = time.monotonic()
            [ping] = gather(client, "$SRV.PING", expect=1, grace=0)
            [stats] = gather(client, f"$SRV.STATS.resonate.{service.id}", expect=1, grace=0)
            assert time.monotonic() - started < 1.0
            check_ping(ping)
            endpoint = stats["endpoints"][0]
            assert (endpoint["num_requests"], endpoint["num_errors"]) == (1, 1)  # the busy one; the stuck one is not done
            assert endpoint["last_error"] == reply_error(BUSY_REPLY)
            release.set()
            assert pending.result(10) == [b'{"success":true,"response":{}}']
        finally:
            release.set()
            transport.stop(5)

    def test_discovery_survives_a_reconnect(self, nats_server):
        """After the nats-server restarts, the discovery subjects are subscribed again."""
        subject = f"reconnect.{uuid.uuid4().hex[:8]}"
        service = Service("resonate", __version__, subject)
        transport = NatsTransport(
            nats_server.url, subject, lambda request: request.respond(request.data), busy_reply=BUSY, service=service,
            reconnect_backoff=(0.05, 0.2),
        ).start()
        try:
            nats_server.restart()
            deadline = time.monotonic() + 10
            while not transport.connected and time.monotonic() < deadline:
                time.sleep(0.02)
            fresh = NatsPyClient(nats_server.url)
            try:
                time.sleep(0.1)  # the resubscription is sent right after the reconnect
                [doc] = gather(fresh, f"$SRV.PING.resonate.{service.id}", expect=1)
                assert doc["id"] == service.id
            finally:
                fresh.close()
        finally:
            transport.stop(5)


class TestQueueGroups:
    def test_queue_group_splits_requests(self, nats, servers, client):
        """Two servers in one queue group on one subject each get some of the requests, and every
        request is answered exactly once; discovery still reaches both (no queue group there)."""
        subject = f"shared.{uuid.uuid4().hex[:8]}"
        first = servers(nats.url, subject=subject, nats_queue="handover")
        second = servers(nats.url, subject=subject, nats_queue="handover")
        payloads = [json.dumps({"operation": "promises.read", "payload": {"id": f"x{i}"}}).encode() for i in range(60)]
        replies = client.request_many(subject, payloads)
        assert all(json.loads(r)["error"]["code"] == 404 for r in replies)
        stats = {doc["id"]: doc["endpoints"][0] for doc in gather(client, "$SRV.STATS.resonate", expect=2)}
        counts = [stats[first.service.id]["num_requests"], stats[second.service.id]["num_requests"]]
        assert sum(counts) == 60
        assert min(counts) > 0, counts


class TestOneWriter:
    """One writer per subject: a server asks $SRV.INFO who serves its subject before it takes it."""

    REAL_WINDOW_MS = Config().peer_window_ms

    def test_a_second_instance_on_a_served_subject_is_refused(self, nats, servers):
        """Another instance on the same subject, without a shared queue group, is a ServerError
        with exit code 2 naming the first instance and what to do instead."""
        first = servers(nats.url, subject="orders.one", peer_window_ms=self.REAL_WINDOW_MS)
        with pytest.raises(ServerError) as refused:
            servers(nats.url, subject="orders.one", peer_window_ms=self.REAL_WINDOW_MS)
        message = str(refused.value)
        assert refused.value.exit_code == 2
        for part in (first.service.id, f"pid {os.getpid()}", "'orders.one'", "--api-nats-subject", "--api-nats-queue"):
            assert part in message, message

    @pytest.mark.parametrize("queues", [("", "green"), ("blue", ""), ("blue", "green")])
    def test_queue_groups_that_differ_are_refused(self, nats, servers, queues):
        """Only the same queue group on both is a handover: different groups each get every request."""
        servers(nats.url, subject="orders.one", nats_queue=queues[0], peer_window_ms=self.REAL_WINDOW_MS)
        with pytest.raises(ServerError, match="already served"):
            servers(nats.url, subject="orders.one", nats_queue=queues[1], peer_window_ms=self.REAL_WINDOW_MS)

    def test_the_same_queue_group_is_a_handover_with_a_warning(self, nats, servers, caplog):
        """Both in one queue group: the second starts, warning that both keep their own writes until the first stops."""
        first = servers(nats.url, subject="orders.one", nats_queue="handover", peer_window_ms=self.REAL_WINDOW_MS)
        with caplog.at_level(logging.WARNING, logger="resonate_sync.server"):
            second = servers(nats.url, subject="orders.one", nats_queue="handover", peer_window_ms=self.REAL_WINDOW_MS)
        [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert first.service.id in warning and "'handover'" in warning and "blue/green" in warning, warning
        assert second.transport.connected

    def test_other_subjects_are_no_conflict(self, nats, servers, caplog):
        """Instances on other subjects of the same NATS start without a word."""
        servers(nats.url, subject="orders.one", peer_window_ms=self.REAL_WINDOW_MS)
        with caplog.at_level(logging.WARNING):
            servers(nats.url, subject="orders.two", peer_window_ms=self.REAL_WINDOW_MS)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    def test_a_refused_start_leaves_nothing_on_disk(self, nats, servers, tmp_path):
        """The check comes before the store: a refused server creates no store directory."""
        servers(nats.url, subject="orders.one", peer_window_ms=self.REAL_WINDOW_MS)
        store = tmp_path / "second"
        with pytest.raises(ServerError):
            servers(nats.url, subject="orders.one", store_path=str(store), peer_window_ms=self.REAL_WINDOW_MS)
        assert not store.exists()

    def test_info_names_the_store(self, nats, servers, client, tmp_path):
        """INFO metadata says where the instance runs and which store it writes, for the refusal to name."""
        server = servers(nats.url, store_path=str(tmp_path / "store"))
        [info] = gather(client, f"$SRV.INFO.resonate.{server.service.id}", expect=1)
        assert info["metadata"] == {
            "host": socket.gethostname(), "pid": str(os.getpid()), "store": "file", "store_path": str(tmp_path / "store"),
        }

    def test_no_other_instance_costs_no_wait(self, nats, servers):
        """With no instance running, NATS answers "no responders" at once: the start does not wait the window."""
        started = time.monotonic()
        servers(nats.url, peer_window_ms=10_000)
        assert time.monotonic() - started < 5

    def test_no_permission_to_ask_is_a_warning(self, nats_server_factory, servers, tmp_path, caplog):
        """A NATS user that may not publish to $SRV.> starts, warning that another instance would go unnoticed."""
        conf = tmp_path / "nats.conf"
        conf.write_text('authorization { users = [ {user: a, password: a, permissions: {publish: {deny: ["$SRV.>"]}}} ] }\n')
        url = nats_server_factory(["-c", str(conf)]).url.replace("nats://", "nats://a:a@")
        with caplog.at_level(logging.WARNING):
            servers(url, peer_window_ms=self.REAL_WINDOW_MS)
        assert any("would go unnoticed" in r.getMessage() for r in caplog.records), caplog.text

    def test_a_window_of_0_skips_the_check(self, nats, servers):
        """--api-nats-peer-window 0 turns the check off: the operator takes the subject on trust."""
        servers(nats.url, subject="orders.one", peer_window_ms=self.REAL_WINDOW_MS)
        assert servers(nats.url, subject="orders.one", peer_window_ms=0).transport.connected
