"""Promise events over a real nats-server: a server with --events-subject and a journal, watched by nats-py."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resonate_sync import Client
from resonate_sync.core import OPERATIONS
from resonate_sync.models import CreatePromiseRequest
from resonate_sync.events import event_token, parse_event_subject
from resonate_sync.server import ServerError
from resonate_sync.transport.embedded import EmbeddedNatsServer

from helpers import FAR, poll, start_server, uid

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def events_server(shared_nats_server, tmp_path):
    """A server journaling to tmp_path that publishes promise events under its own prefix."""
    server = start_server(shared_nats_server.url, events_subject=uid("ev").replace("-", "."), store_path=str(tmp_path / "j"))
    yield server
    server.stop()


def events_of(received):
    """(state, id) of each received event, checked against its body."""
    out = []
    for msg in received:
        state, promise_id = parse_event_subject(msg.subject)
        body = json.loads(msg.data)["promise"]
        assert (body["state"], body["id"]) == (state, promise_id)
        out.append((state, promise_id))
    return out


class TestPromiseEvents:
    def test_every_transition_once_in_order(self, events_server, nats_client):
        """Create, resolve, reject, cancel and a background timeout each publish one event, in order per promise,
        ids with dots, spaces and non-ASCII characters included."""
        prefix = events_server.config.events_subject
        watcher = nats_client(events_server.url)
        received = watcher.collect(f"{prefix}.promises.>")
        ids = {name: f"{name}.order 1 \u00e9\u65e5" for name in ("res", "rej", "can", "tmo")}
        with Client(events_server.url, events_server.config.nats_subject) as client:
            for name, pid in ids.items():
                client.promises_create(pid, now_ms() + 1_500 if name == "tmo" else FAR)
            client.promises_resolve(ids["res"], b"ok")
            client.promises_reject(ids["rej"])
            client.promises_cancel(ids["can"])
            poll(lambda: len(received) >= 8, timeout=15)
        time.sleep(0.3)  # nothing more may follow
        events = events_of(received)
        assert len(events) == 8, events
        by_id: dict = {}
        for state, pid in events:
            by_id.setdefault(pid, []).append(state)
        assert by_id == {
            ids["res"]: ["PENDING", "RESOLVED"],
            ids["rej"]: ["PENDING", "REJECTED"],
            ids["can"]: ["PENDING", "REJECTED_CANCELED"],
            ids["tmo"]: ["PENDING", "REJECTED_TIMEDOUT"],
        }
        resolved = next(json.loads(m.data) for m in received if m.subject.split(".")[-2] == "resolved")
        assert resolved["promise"]["value"]["data"] == "b2s="  # base64 of b"ok", as promises.read shows it

    def test_one_promise_watched_by_its_token(self, events_server, nats_client):
        """<prefix>.promises.*.<event_token(id)> receives the events of that one promise."""
        prefix = events_server.config.events_subject
        pid, other = uid("a.b*c>d"), uid("other")
        received = nats_client(events_server.url).collect(f"{prefix}.promises.*.{event_token(prefix, pid)}")
        with Client(events_server.url, events_server.config.nats_subject) as client:
            for each in (pid, other):
                client.promises_create(each, FAR)
                client.promises_resolve(each)
        assert poll(lambda: len(received) >= 2)
        time.sleep(0.2)
        assert events_of(received) == [("PENDING", pid), ("RESOLVED", pid)]

    def test_changes_just_before_a_stop_are_still_announced(self, shared_nats_server, nats_client, tmp_path):
        """A graceful stop publishes the events still queued before the connection closes."""
        server = start_server(shared_nats_server.url, events_subject=uid("ev").replace("-", "."), store_path=str(tmp_path / "j"))
        received = nats_client(server.url).collect(f"{server.config.events_subject}.promises.>")
        create = OPERATIONS["promises.create"]
        for n in range(200):  # straight into the core, then stop at once: the events are still queued
            server.core.execute_nowait(create, CreatePromiseRequest(id=f"last-{n}", timeout=FAR))
        server.stop()
        assert poll(lambda: len(received) >= 200, timeout=5), len(received)
        assert sorted(pid for _, pid in events_of(received)) == sorted(f"last-{n}" for n in range(200))

    def test_on_the_jetstream_store_the_leader_announces_each_change_once(self, nats_client, tmp_path):
        """Replicas apply the leader's records without announcing them: one event per change, not one per replica."""
        with EmbeddedNatsServer(extra_args=["-js", "-sd", str(tmp_path / "js")]) as nats_server:
            subject, prefix = uid("resonate.ev"), uid("ev").replace("-", ".")
            leader = start_server(nats_server.url, subject, store="jetstream", events_subject=prefix)
            standby = start_server(nats_server.url, subject, store="jetstream", events_subject=prefix, wait_for_lead=False)
            try:
                received = nats_client(nats_server.url).collect(f"{prefix}.promises.>")
                with Client(nats_server.url, subject) as client:
                    client.promises_create("once", FAR)
                    client.promises_resolve("once")
                assert poll(lambda: standby.store.applied_seq >= 2)
                assert poll(lambda: len(received) >= 2)
                time.sleep(0.3)
                assert events_of(received) == [("PENDING", "once"), ("RESOLVED", "once")]
            finally:
                standby.stop()
                leader.stop()

    def test_announced_in_discovery(self, events_server, nats_client):
        """$SRV.INFO metadata names the events subject, for tools that look for it."""
        info = json.loads(nats_client(events_server.url).request(f"$SRV.INFO.resonate.{events_server.service.id}", b"").data)
        assert info["metadata"]["events_subject"] == events_server.config.events_subject

    def test_counted_in_metrics(self, shared_nats_server, nats_client):
        """resonate_promise_events_total counts the events published (and none dropped while NATS is fine)."""
        from test_observability import scrape

        server = start_server(shared_nats_server.url, events_subject=uid("ev").replace("-", "."), metrics_addr="127.0.0.1:0")
        try:
            with Client(server.url, server.config.nats_subject) as client:
                client.promises_create(uid("p"), FAR)
                client.promises_create(uid("p"), FAR)
            published = ("resonate_promise_events_total", (("result", "published"),))
            samples = poll(lambda: (lambda s: s if s.get(published) == 2 else None)(scrape(server.metrics_endpoint.port)))
            assert samples and samples[("resonate_promise_events_total", (("result", "dropped"),))] == 0
        finally:
            server.stop()

    def test_events_on_the_request_subject_refused(self, shared_nats_server):
        """An events prefix whose subjects would include the server's own request subject stops the start."""
        with pytest.raises(ServerError, match="would be read as requests"):
            start_server(shared_nats_server.url, subject="ev.promises.resolved.x", events_subject="ev")


class TestWatcherExample:
    def test_prints_each_settled_promise(self, events_server, tmp_path):
        """watcher.py prints one line per settled promise (not the creations) and exits after --count."""
        environment = {k: v for k, v in os.environ.items() if not k.startswith("RESONATE_")}
        environment.update(RESONATE_API_NATS_ADDR=events_server.url, RESONATE_EVENTS_SUBJECT=events_server.config.events_subject)
        watcher = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "watcher.py"), "--count", "2"],
            cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert watcher.stdout.readline().startswith("watching ")
            with Client(events_server.url, events_server.config.nats_subject) as client:
                client.promises_create("order.1", FAR)
                client.promises_create("order 2", now_ms() + 1_500)
                client.promises_resolve("order.1", b"shipped")
            out, err = watcher.communicate(timeout=30)
        finally:
            watcher.kill()
        assert watcher.returncode == 0, err
        assert out.splitlines() == ["RESOLVED order.1 value 'shipped'", "REJECTED_TIMEDOUT order 2"]
