"""What an operator sees of a running server: Prometheus metrics, request logs, ``resonate status``."""

from __future__ import annotations

import json
import logging
import socket
import threading
import urllib.request
from typing import Dict, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from resonate_sync import Client, NotFound, __version__
from resonate_sync.cli import app
from resonate_sync.cli.server import configure_logging
from resonate_sync.server import ServerError
from resonate_sync.transport.embedded import EmbeddedNatsServer

from helpers import poll, start_server, uid

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample the endpoint serves, by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def create_and_miss(server) -> None:
    """Two requests: a promise created (201), a promise not found (404)."""
    with Client(server.url, server.config.nats_subject, retries=0) as client:
        client.promises_create(uid("p"), "1h")
        with pytest.raises(NotFound):
            client.promises_read("missing")


def requests_count(samples: Samples, operation: str, status: str) -> float:
    key = ("resonate_request_duration_seconds_count", (("operation", operation), ("status", status)))
    return samples.get(key, 0)


class TestMetrics:
    @pytest.fixture
    def server(self, shared_nats_server, tmp_path):
        server = start_server(shared_nats_server.url, metrics_addr="127.0.0.1:0", store_path=str(tmp_path / "store"))
        yield server
        server.stop()

    def test_counts_after_known_traffic(self, server, nats_client):
        """After known traffic, each count the endpoint serves is exactly what the traffic made."""
        workers = uid("workers")
        inbox = nats_client(server.url).collect(workers)
        with Client(server.url, server.config.nats_subject, retries=0) as client:
            for n in range(3):
                client.promises_create(f"p{n}", "1h")
            client.promises_create("job", "1h", tags={"resonate:invoke": f"nats://{workers}"})
            client.promises_resolve("p0", value=b"done")
            client.promises_read("p1")
            with pytest.raises(NotFound):
                client.promises_read("missing")
        assert poll(lambda: inbox)  # the ticker published the invoke message
        server.snapshot()
        port = server.metrics_endpoint.port
        expected = {("promises.create", "201"): 4, ("promises.complete", "201"): 1,
                    ("promises.read", "200"): 1, ("promises.read", "404"): 1}  # fmt: skip
        # The client has its reply a moment before the server has counted it.
        samples = poll(lambda: (lambda s: s if all(
            requests_count(s, *key) == count for key, count in expected.items()) else None)(scrape(port)))  # fmt: skip
        assert samples, scrape(port)
        answered = {key[1]: value for key, value in samples.items() if key[0] == "resonate_request_duration_seconds_count"}
        assert sum(answered.values()) == 7
        assert samples[("resonate_requests_in_flight", ())] == 0
        assert samples[("resonate_requests_busy_total", ())] == 0
        assert samples[("resonate_nats_reconnects_total", ())] == 0
        promises = {labels[0][1]: value for (name, labels), value in samples.items() if name == "resonate_promises"}
        assert promises == {"PENDING": 3, "RESOLVED": 1, "REJECTED": 0, "REJECTED_CANCELED": 0, "REJECTED_TIMEDOUT": 0}
        tasks = {labels[0][1]: value for (name, labels), value in samples.items() if name == "resonate_tasks"}
        assert tasks == {"INIT": 0, "ENQUEUED": 1, "CLAIMED": 0, "COMPLETED": 0, "TIMEDOUT": 0}
        assert samples[("resonate_deliveries_total", (("result", "sent"),))] == 1
        assert samples[("resonate_deliveries_total", (("result", "failed"),))] == 0
        assert samples[("resonate_journal_records_per_fsync_sum", ())] == server.journal.last_seq
        assert samples[("resonate_journal_fsync_seconds_count", ())] == samples[("resonate_journal_write_seconds_count", ())] >= 1
        assert samples[("resonate_snapshot_duration_seconds_count", ())] == 1

    def test_endpoint_stops_with_the_server(self, shared_nats_server):
        """Once the server stopped, nothing listens on the metrics port and no metrics thread is left."""
        server = start_server(shared_nats_server.url, metrics_addr="127.0.0.1:0")
        port = server.metrics_endpoint.port
        assert scrape(port)
        server.stop()
        assert not [t for t in threading.enumerate() if t.name == "resonate-metrics"]
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()

    def test_address_in_use_fails_the_start(self, shared_nats_server):
        """A metrics address that cannot be bound stops the start with a message naming it and the flag."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            addr = f"127.0.0.1:{taken.getsockname()[1]}"
            with pytest.raises(ServerError, match=rf"cannot serve metrics on {addr} \(--metrics-addr\)"):
                start_server(shared_nats_server.url, metrics_addr=addr)

    def test_no_endpoint_without_an_address(self, shared_nats_server):
        """Without a metrics address (dev's default) no endpoint is started."""
        server = start_server(shared_nats_server.url)
        try:
            assert server.metrics is None and server.metrics_endpoint is None
        finally:
            server.stop()


class TestRequestLog:
    @pytest.fixture
    def json_debug_logging(self):
        root = logging.getLogger()
        level, handlers = root.level, list(root.handlers)
        configure_logging("debug", "json")
        yield
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)

    def test_json_lines_with_one_line_per_request(self, shared_nats_server, json_debug_logging, capsys):
        """With --log-format json every line is a JSON object; at debug each request has one, with its fields."""
        server = start_server(shared_nats_server.url)
        try:
            create_and_miss(server)
            err = []  # the client has its reply a moment before the line is logged
            poll(lambda: err.append(capsys.readouterr().err) or "promises.read" in "".join(err))
        finally:
            server.stop()
        err.append(capsys.readouterr().err)
        lines = [json.loads(line) for line in "".join(err).splitlines() if line.strip()]
        assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
        requests = [line for line in lines if line["logger"] == "resonate_sync.requests"]
        assert [(r["operation"], r["status"]) for r in requests] == [("promises.create", 201), ("promises.read", 404)]
        for line in requests:
            assert line["level"] == "debug" and line["request_id"]
            assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0


class TestStatus:
    def status(self, url: str, subject: str, *args: str):
        return CliRunner().invoke(app, ["status", "--addr", url, "--subject", subject, "--request-timeout", "2s", *args])

    def test_one_server(self, shared_nats_server):
        """Each server answering on the subject is one row: id, version, uptime, requests, errors, average latency."""
        server = start_server(shared_nats_server.url)
        try:
            create_and_miss(server)
            result = self.status(server.url, server.config.nats_subject)
        finally:
            server.stop()
        assert result.exit_code == 0, result.output
        heading, header, row = result.output.splitlines()
        assert heading == f"1 server on subject '{server.config.nats_subject}'"
        assert header.split() == ["ID", "VERSION", "STORE", "ROLE", "UPTIME", "REQUESTS", "ERRORS", "AVG", "LATENCY"]
        cells = row.split()
        assert cells[:4] == [server.service.id, __version__, "memory", "-"] and cells[5:7] == ["2", "1"]
        assert cells[4].endswith("s") and cells[8] == "ms"

    def test_replicas_show_their_role(self, tmp_path):
        """On the JetStream store, the leader and a standby say which they are and what they applied."""
        with EmbeddedNatsServer(extra_args=["-js", "-sd", str(tmp_path / "js")]) as nats_server:
            subject = f"resonate.test.{uid('replicas')}"
            leader = start_server(nats_server.url, subject, store="jetstream")
            standby = start_server(nats_server.url, subject, store="jetstream", wait_for_lead=False)
            try:
                create_and_miss(leader)
                assert poll(lambda: standby.store.applied_seq >= 1)
                result = self.status(nats_server.url, subject)
                applied = leader.store.applied_seq
            finally:
                standby.stop()
                leader.stop()
        assert result.exit_code == 0, result.output
        rows = {line.split()[0]: line.split() for line in result.output.splitlines()[2:]}
        assert rows[leader.service.id][2:4] == ["jetstream", f"leader@{applied}"]
        assert rows[standby.service.id][2] == "jetstream" and rows[standby.service.id][3].startswith("standby@")

    def test_two_servers_and_json(self, shared_nats_server):
        """Two servers on one subject (a queue group) are both listed; servers on other subjects are not."""
        subject = f"resonate.test.{uid('status')}"
        other = start_server(shared_nats_server.url)
        servers = [start_server(shared_nats_server.url, subject, nats_queue="q") for _ in range(2)]
        try:
            result = self.status(shared_nats_server.url, subject, "--json")
        finally:
            for server in (*servers, other):
                server.stop()
        assert result.exit_code == 0, result.output
        documents = json.loads(result.output)
        assert sorted(d["id"] for d in documents) == sorted(s.service.id for s in servers)
        assert all(d["endpoints"][0]["subject"] == subject for d in documents)

    def test_no_server_exits_1(self, shared_nats_server):
        """When no server answers on the subject, status says so and exits 1."""
        result = self.status(shared_nats_server.url, f"resonate.test.{uid('nobody')}")
        assert result.exit_code == 1
        assert "no resonate server answers on subject" in result.output
