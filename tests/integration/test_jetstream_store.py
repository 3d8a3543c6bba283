"""The JetStream store against real nats-servers: durability, pipelining, fencing, leases, standbys, snapshots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

from resonate_sync.store.jetstream import FencedError, JetStreamError, JetStreamStore, NotLeaderError
from resonate_sync.transport.connection import Connection

from jetstream_cluster import JetStreamCluster

REPO = Path(__file__).resolve().parents[2]


class Roles:
    """The callbacks a server would give ``start``; records what the store told it."""

    def __init__(self) -> None:
        self.records: List[dict] = []
        self.snapshot: List[Any] = []
        self.events: List[Any] = []
        self.reloads = 0
        self.changed = threading.Condition()

    def apply(self, records: List[dict]) -> None:
        with self.changed:
            self.records.extend(records)
            self.changed.notify_all()

    def reload(self, recovery: Any) -> None:
        snapshot, records = list(recovery.snapshot), list(recovery.records)
        with self.changed:
            self.snapshot, self.records = snapshot, records
            self.reloads += 1
            self.events.append(("reload", recovery.last_seq))
            self.changed.notify_all()

    def on_leader(self) -> None:
        with self.changed:
            self.events.append("leader")
            self.changed.notify_all()

    def on_standby(self, reason: str) -> None:
        with self.changed:
            self.events.append(("standby", reason))
            self.changed.notify_all()

    def callbacks(self) -> Dict[str, Callable[..., Any]]:
        return {"apply": self.apply, "reload": self.reload, "on_leader": self.on_leader, "on_standby": self.on_standby}

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)


class Harness:
    """Connections and stores made by a test, all closed after it."""

    def __init__(self) -> None:
        self.conns: List[Connection] = []
        self.stores: List[JetStreamStore] = []

    def connect(self, url: str) -> Connection:
        conn = Connection(url, name="jetstream-test")
        conn.connect()
        self.conns.append(conn)
        return conn

    def store(self, url: str, stream: str, instance: str, **kwargs: Any) -> JetStreamStore:
        kwargs.setdefault("lease_ms", 1000)
        store = JetStreamStore(self.connect(url), stream=stream, instance=instance, **kwargs)
        self.stores.append(store)
        return store

    def leader(self, url: str, stream: str, instance: str = "a", **kwargs: Any) -> "tuple[JetStreamStore, Roles, Any]":
        """An opened, started store that leads (it is alone)."""
        store = self.store(url, stream, instance, **kwargs)
        recovery = store.open()
        roles = Roles()
        roles.reload(recovery)
        store.start(**roles.callbacks())
        assert roles.wait(lambda: "leader" in roles.events), roles.events
        return store, roles, recovery

    def close(self) -> None:
        for store in self.stores:
            store.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    try:
        yield h
    finally:
        h.close()


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def append(store: JetStreamStore, *records: dict) -> int:
    return store.append_encoded([store.encode(record) for record in records])


def recovered(url: str, harness: Harness, stream: str, **kwargs: Any) -> "tuple[List[Any], List[dict], Any]":
    """What a fresh store opening ``stream`` recovers: (snapshot entries, records, recovery)."""
    recovery = harness.store(url, stream, "reader", **kwargs).open()
    return list(recovery.snapshot), list(recovery.records), recovery


def stream_messages(conn: Connection, stream: str) -> List[bytes]:
    info = json.loads(conn.request(f"$JS.API.STREAM.INFO.{stream}").payload)["state"]
    bodies = []
    for seq in range(info["first_seq"], info["last_seq"] + 1):
        msg = conn.request(f"$JS.API.DIRECT.GET.{stream}", payload=json.dumps({"seq": seq}).encode())
        bodies.append(msg.payload)
    return bodies


class TestAppendAndRecover:
    def test_appended_batches_come_back_in_order_after_a_restart(self, jetstream_server, harness):
        """Every acknowledged batch is recovered, in append order, by a store opened later."""
        store, _, recovery = harness.leader(jetstream_server.url, "RT")
        assert recovery.last_seq == 0
        tickets = [append(store, {"kind": "a", "n": n}, {"kind": "b", "n": n}) for n in range(5)]
        for ticket in tickets:
            store.wait_durable(ticket)
            assert store.is_durable(ticket)
        store.close()
        _, records, again = recovered(jetstream_server.url, harness, "RT")
        assert records == [{"kind": kind, "n": n} for n in range(5) for kind in "ab"]
        assert again.last_seq == 5  # one stream message per batch

    def test_one_message_per_batch_of_newline_separated_canonical_records(self, jetstream_server, harness):
        """A batch is one stream message holding its records' canonical JSON, one per line."""
        store, _, _ = harness.leader(jetstream_server.url, "ONE")
        store.wait_durable(append(store, {"b": 1, "a": "x"}, {"c": [1, 2]}))
        assert stream_messages(harness.connect(jetstream_server.url), "ONE") == [b'{"a":"x","b":1}\n{"c":[1,2]}']

    def test_appends_before_leading_are_refused(self, jetstream_server, harness):
        """An opened store that does not lead yet refuses appends with NotLeaderError."""
        store = harness.store(jetstream_server.url, "NL", "a")
        store.open()
        with pytest.raises(NotLeaderError):
            append(store, {"x": 1})
        assert not store.may_serve()
        assert store.status() == {"role": "standby", "applied_seq": 0, "stream": "NL", "replicas": 1, "leader": ""}

    def test_a_record_larger_than_a_message_is_refused_before_anything_changes(self, jetstream_server, harness):
        """One record over max_payload is a ValueError at encode (the core's 400); the store goes on."""
        store, _, _ = harness.leader(jetstream_server.url, "BIG")
        with pytest.raises(ValueError, match="cannot fit one JetStream message"):
            store.encode({"data": "x" * store.conn.max_payload})
        store.wait_durable(append(store, {"ok": True}))
        assert store.may_serve()

    def test_a_batch_larger_than_a_message_is_several_messages_read_back_as_one(self, jetstream_server, harness):
        """A background pass may time out many large promises at once: each record fits, not all
        together. The batch goes out in parts, and readers (recovery and a standby) apply it whole."""
        store, _, _ = harness.leader(jetstream_server.url, "PARTS", lease_ms=3000)
        standby = harness.store(jetstream_server.url, "PARTS", "b", lease_ms=3000)
        roles = Roles()
        roles.reload(standby.open())
        standby.start(**roles.callbacks())
        big = [{"n": n, "data": "x" * (store.conn.max_payload // 3)} for n in range(7)]
        store.wait_durable(append(store, *big))
        store.wait_durable(append(store, {"after": True}))
        parts = stream_messages(store.conn, "PARTS")
        assert len(parts) > 2, "the batch took several messages"
        _, records, _ = recovered(jetstream_server.url, harness, "PARTS")
        assert records == [*big, {"after": True}]
        assert roles.wait(lambda: len(roles.records) == 8) and roles.records == [*big, {"after": True}]

    def test_a_batch_cut_off_before_its_last_part_is_never_applied(self, jetstream_server, harness):
        """Parts 1..k of a batch whose writer stopped before the last were never acknowledged: dropped."""
        store, _, _ = harness.leader(jetstream_server.url, "CUT", lease_ms=3000)
        store.wait_durable(append(store, {"before": True}))
        conn = store.conn
        for part, body in (("1/3", b'{"half":1}'), ("2/3", b'{"half":2}')):  # a writer that died mid-batch
            reply = conn.request("resonate.store.CUT.records", payload=body, headers={"Resonate-Part": part})
            assert b'"seq"' in reply.payload, reply.payload
        conn.request("resonate.store.CUT.records", payload=b'{"next":true}')  # the next writer's message
        _, records, _ = recovered(jetstream_server.url, harness, "CUT")
        assert records == [{"before": True}, {"next": True}]

    def test_pipelined_appends_from_many_threads_are_all_acknowledged_in_order(self, jetstream_server, harness):
        """Many publishes are in flight at once; every ticket is acknowledged and the stream keeps append order."""
        store, _, _ = harness.leader(jetstream_server.url, "PIPE")
        lock = threading.Lock()  # the core's lock: appends happen under it
        order: List[int] = []
        tickets: List[int] = []

        def appender(worker: int) -> None:
            for n in range(100):
                with lock:
                    value = len(order)
                    order.append(value)
                    ticket = append(store, {"v": value})
                store.wait_durable(ticket)
                tickets.append(ticket)

        threads = [threading.Thread(target=appender, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(tickets) == 800 and all(store.is_durable(t) for t in tickets)
        assert store.max_in_flight > 1
        _, records, _ = recovered(jetstream_server.url, harness, "PIPE")
        assert [r["v"] for r in records] == list(range(800))


class TestFencing:
    def test_another_writer_fences_the_leader(self, jetstream_server, harness):
        """After a foreign append the leader's next batch is refused: FencedError, on_standby, and a rebuild
        from the stream that holds the foreign record and not the refused one."""
        store, roles, _ = harness.leader(jetstream_server.url, "FENCE", lease_ms=3000)
        store.wait_durable(append(store, {"n": 1}))
        intruder = harness.connect(jetstream_server.url)
        ack = json.loads(intruder.request(store.subject, payload=b'{"intruder":true}').payload)
        assert ack["seq"] == 2
        ticket = append(store, {"n": 2})
        with pytest.raises(FencedError, match="another writer"):
            store.wait_durable(ticket)
        assert not store.is_durable(ticket)
        assert roles.wait(lambda: any(e[0] == "standby" for e in roles.events if isinstance(e, tuple)))
        assert roles.wait(lambda: roles.reloads >= 2)
        standby_at = next(i for i, e in enumerate(roles.events) if isinstance(e, tuple) and e[0] == "standby")
        assert roles.events[standby_at + 1][0] == "reload"  # on_standby came first
        assert roles.records == [{"n": 1}, {"intruder": True}]
        _, records, _ = recovered(jetstream_server.url, harness, "FENCE")
        assert {"n": 2} not in records

    def test_a_pipelined_message_never_lands_after_another_writers(self, jetstream_server, harness):
        """Two batches in flight behind a foreign message: the first is refused by its expected sequence, and the
        second, whose expected sequence now matches, by the msg-id chain; neither is in the stream."""
        store, _, _ = harness.leader(jetstream_server.url, "CHAIN", lease_ms=5000, ack_timeout=5)
        store.wait_durable(append(store, {"n": 1}))
        harness.connect(jetstream_server.url).request(store.subject, payload=b'{"intruder":1}')
        jetstream_server.pause()  # both batches reach the server before it handles either
        try:
            first, second = append(store, {"n": 2}), append(store, {"n": 3})
            time.sleep(0.2)
        finally:
            jetstream_server.resume()
        for ticket in (first, second):
            with pytest.raises(FencedError):
                store.wait_durable(ticket)
        assert stream_messages(harness.connect(jetstream_server.url), "CHAIN") == [b'{"n":1}', b'{"intruder":1}']

    def test_a_fenced_leader_refuses_appends_until_it_leads_again(self, jetstream_server, harness):
        """Between the fence and its next lease the store refuses appends; then it leads from the stream's end."""
        store, roles, _ = harness.leader(jetstream_server.url, "FENCE2", lease_ms=1000)
        intruder = harness.connect(jetstream_server.url)
        intruder.request(store.subject, payload=b'{"intruder":1}')
        with pytest.raises(FencedError):
            store.wait_durable(append(store, {"n": 1}))
        with pytest.raises((FencedError, NotLeaderError)):
            append(store, {"n": 2})
        assert roles.wait(lambda: roles.events.count("leader") == 2), roles.events
        store.wait_durable(append(store, {"n": 3}))
        _, records, _ = recovered(jetstream_server.url, harness, "FENCE2")
        assert records == [{"intruder": 1}, {"n": 3}]

    def test_a_late_puback_steps_the_leader_down(self, jetstream_server, harness):
        """No PubAck within ack_timeout (the server hangs) fails the in-flight ticket and steps down."""
        store, roles, _ = harness.leader(jetstream_server.url, "LATE", lease_ms=3000, ack_timeout=0.5)
        jetstream_server.pause()
        try:
            ticket = append(store, {"n": 1})
            with pytest.raises(FencedError, match="no PubAck"):
                store.wait_durable(ticket, timeout=5)
            assert not store.may_serve()
        finally:
            jetstream_server.resume()
        assert roles.wait(lambda: any(isinstance(e, tuple) and e[0] == "standby" for e in roles.events))


    def test_a_nats_server_restart_steps_down_and_the_store_leads_again_after_reconnect(self, jetstream_server, harness):
        """Appends while NATS is away fail with FencedError; once the connection is back (the transport's
        job) the store rebuilds, takes its own lease back at once, and every acknowledged record is there."""
        store, roles, _ = harness.leader(jetstream_server.url, "BOUNCE", lease_ms=3000)
        store.wait_durable(append(store, {"n": 1}))
        jetstream_server.restart()
        with pytest.raises(FencedError, match="publishing stream seq 2 failed"):
            store.wait_durable(append(store, {"n": 2}), timeout=10)
        assert roles.wait(lambda: any(isinstance(e, tuple) and e[0] == "standby" for e in roles.events))
        store.conn.connect()
        reconnected = time.monotonic()
        assert roles.wait(lambda: roles.events.count("leader") == 2, 10), roles.events
        assert time.monotonic() - reconnected < 2.0  # not the lease's 3 s: the lease was taken back
        store.wait_durable(append(store, {"n": 3}))
        assert roles.records == [{"n": 1}]
        _, records, _ = recovered(jetstream_server.url, harness, "BOUNCE")
        assert records == [{"n": 1}, {"n": 3}]


class TestLeadership:
    def test_exactly_one_of_two_stores_started_together_leads(self, jetstream_server, harness):
        """Two instances racing for the lease: one leads, the other stays standby and names it."""
        stores = [harness.store(jetstream_server.url, "RACE", name) for name in ("a", "b")]
        roles = [Roles() for _ in stores]
        for store, role in zip(stores, roles):
            role.reload(store.open())
        for store, role in zip(stores, roles):
            store.start(**role.callbacks())
        assert wait_until(lambda: any("leader" in role.events for role in roles), 5)
        time.sleep(0.6)  # a few lease polls
        leaders = [s for s in stores if s.role == "leader"]
        assert len(leaders) == 1
        standby = next(s for s in stores if s.role == "standby")
        assert standby.leader_id == leaders[0].instance and not standby.may_serve() and leaders[0].may_serve()

    def test_close_hands_the_lease_over_at_once(self, jetstream_server, harness):
        """A leader's close() releases the lease: the standby leads well before the lease would expire."""
        first, _, _ = harness.leader(jetstream_server.url, "HAND", "a", lease_ms=5000)
        first.wait_durable(append(first, {"n": 1}))
        second = harness.store(jetstream_server.url, "HAND", "b", lease_ms=5000)
        roles = Roles()
        roles.reload(second.open())
        second.start(**roles.callbacks())
        time.sleep(0.3)
        assert second.role == "standby"
        closed = time.monotonic()
        first.close()
        assert roles.wait(lambda: "leader" in roles.events, 3)
        assert time.monotonic() - closed < 2.5  # the lease poll (5 s / 6), not the 5 s lease
        second.wait_durable(append(second, {"n": 2}))
        assert roles.records == [{"n": 1}]

    def test_kill_9_of_the_leader_hands_over_within_the_lease(self, jetstream_server, harness, tmp_path):
        """A leader process killed with SIGKILL stops renewing; the standby leads within the lease (+ a poll)."""
        script = tmp_path / "leader.py"
        script.write_text(textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {str(REPO)!r})
            from resonate_sync.store.jetstream import JetStreamStore
            from resonate_sync.transport.connection import Connection
            conn = Connection(sys.argv[1]); conn.connect()
            store = JetStreamStore(conn, stream="KILL", instance="doomed", lease_ms=2000)
            store.open()
            store.start(apply=lambda r: None, reload=lambda r: None, on_leader=lambda: print("leader", flush=True),
                        on_standby=lambda why: None)
            line = sys.stdin.readline()
            store.wait_durable(store.append_encoded([store.encode({{"from": "doomed"}})]))
            print("appended", flush=True)
            time.sleep(60)
        """))
        proc = subprocess.Popen([sys.executable, str(script), jetstream_server.url], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert proc.stdout.readline().strip() == "leader"
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "appended"
            survivor = harness.store(jetstream_server.url, "KILL", "survivor", lease_ms=2000)
            roles = Roles()
            roles.reload(survivor.open())
            survivor.start(**roles.callbacks())
            time.sleep(0.5)
            assert survivor.role == "standby" and survivor.leader_id == "doomed"
            os.kill(proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            assert roles.wait(lambda: "leader" in roles.events, 6)
            assert time.monotonic() - killed < 2.0 + 1.0  # lease + poll + catch-up
            assert roles.records == [{"from": "doomed"}]
            survivor.wait_durable(append(survivor, {"from": "survivor"}))
        finally:
            proc.kill()
            proc.wait()

    def test_a_leader_that_cannot_renew_stops_serving_by_its_own_clock(self, jetstream_server, harness):
        """With renewals blocked (hung server), may_serve turns False once the local deadline passes; a renewal
        that gets through later (nobody took the lease meanwhile) lets it serve again."""
        now = [0.0]
        store, roles, _ = harness.leader(jetstream_server.url, "CLOCK", lease_ms=3000, ack_timeout=0.3,
                                         clock=lambda: now[0])  # fmt: skip
        assert store.may_serve()
        jetstream_server.pause()
        try:
            now[0] = 2.69  # lease 3 s, margin 0.3 s: still valid
            assert store.may_serve()
            now[0] = 2.71
            assert not store.may_serve()
        finally:
            jetstream_server.resume()
        assert roles.wait(lambda: store.may_serve(), 5)
        assert roles.events == [("reload", 0), "leader"]


class TestStandby:
    def test_a_standby_applies_every_record_in_order(self, jetstream_server, harness):
        """A standby's apply sees each message's records, in stream order, as the leader appends."""
        leader, _, _ = harness.leader(jetstream_server.url, "TAIL", "a", lease_ms=3000)
        standby = harness.store(jetstream_server.url, "TAIL", "b", lease_ms=3000)
        roles = Roles()
        roles.reload(standby.open())
        standby.start(**roles.callbacks())
        tickets = [append(leader, {"n": n}, {"m": n}) for n in range(200)]
        leader.wait_durable(tickets[-1])
        assert roles.wait(lambda: len(roles.records) == 400)
        assert roles.records == [r for n in range(200) for r in ({"n": n}, {"m": n})]
        assert standby.applied_seq == 200 and standby.role == "standby" and standby.leader_id == "a"


def snapshot_entries(n: int) -> List[tuple]:
    return [("promises", {"id": f"p{i}", "blob": "z" * 50}) for i in range(n)]


class TestSnapshots:
    def test_snapshots_purge_the_stream_and_recovery_reads_the_newest_plus_later_records(self, jetstream_server, harness):
        """Three snapshots: the newest two are kept, the stream is purged below the older, and recovery is the
        newest snapshot plus every later record; a standby that fell behind the purge reloads from it."""
        conn = harness.connect(jetstream_server.url)
        behind = harness.store(jetstream_server.url, "SNAP", "behind", lease_ms=3000)
        behind.open()
        # small chunks: snapshots span many messages
        store, _, _ = harness.leader(jetstream_server.url, "SNAP", "a", lease_ms=3000, snapshot_every=3)
        store._snapshots.chunk_size = 1000
        for round_ in range(3):
            tickets = [append(store, {"round": round_, "n": n}) for n in range(3)]
            store.wait_durable(tickets[-1])
            assert store.should_snapshot()
            ticket = store.begin_snapshot()
            assert not store.should_snapshot()
            store.write_snapshot(ticket, snapshot_entries(30 * (round_ + 1)))
        store.wait_durable(append(store, {"after": True}))
        state = json.loads(conn.request("$JS.API.STREAM.INFO.SNAP").payload)["state"]
        assert (state["first_seq"], state["last_seq"]) == (7, 10)  # purged below the older kept snapshot (seq 6)
        names = [snap.name for snap in store._snapshots.list()]
        assert names == ["snapshot-00000000000000000006", "snapshot-00000000000000000009"]
        entries, records, recovery = recovered(jetstream_server.url, harness, "SNAP")
        assert recovery.snapshot_seq == 9 and recovery.last_seq == 10
        assert [tuple(e) for e in entries] == snapshot_entries(90)
        assert records == [{"after": True}]
        roles = Roles()
        behind.start(**roles.callbacks())
        assert roles.wait(lambda: roles.reloads == 1)
        assert len(roles.snapshot) == 90 and roles.records == [{"after": True}]

    def test_a_new_leader_counts_the_records_since_the_last_snapshot(self, jetstream_server, harness):
        """A store that takes over a stream with snapshot_every records after the last snapshot snapshots at once."""
        first, _, _ = harness.leader(jetstream_server.url, "COUNT", "a", lease_ms=3000, snapshot_every=4)
        first.wait_durable(append(first, {"n": 1}, {"n": 2}))
        first.wait_durable(append(first, {"n": 3}))
        assert not first.should_snapshot()
        first.close()
        second, _, _ = harness.leader(jetstream_server.url, "COUNT", "b", lease_ms=3000, snapshot_every=4)
        assert not second.should_snapshot()
        second.wait_durable(append(second, {"n": 4}))
        assert second.should_snapshot()

    def test_a_corrupt_snapshot_is_a_clear_error(self, jetstream_server, harness):
        """A snapshot whose bytes do not match its digest stops recovery with an error naming bucket, object and seq."""
        store, _, _ = harness.leader(jetstream_server.url, "BAD", "a", lease_ms=3000)
        store.wait_durable(append(store, {"n": 1}))
        store.write_snapshot(store.begin_snapshot(), snapshot_entries(5))
        snap = store._snapshots.list()[-1]
        store.close()
        conn = harness.connect(jetstream_server.url)
        chunk = f"$O.BAD.C.{snap.nuid}"
        original = conn.request("$JS.API.DIRECT.GET.OBJ_BAD", payload=json.dumps({"last_by_subj": chunk}).encode())
        conn.request("$JS.API.STREAM.PURGE.OBJ_BAD", payload=json.dumps({"filter": chunk}).encode())
        conn.request(chunk, payload=original.payload.replace(b"p1", b"p9"))
        with pytest.raises(JetStreamError, match=r"object store BAD, object snapshot-00000000000000000001 .*damaged.*digest"):
            harness.store(jetstream_server.url, "BAD", "b").open()

    def test_a_purged_stream_without_its_snapshot_is_a_clear_error(self, jetstream_server, harness):
        """Records purged with no snapshot covering them: recovery refuses, naming the missing seqs."""
        store, _, _ = harness.leader(jetstream_server.url, "GONE", "a", lease_ms=3000)
        for n in range(3):
            store.wait_durable(append(store, {"n": n}))
        store.close()
        conn = harness.connect(jetstream_server.url)
        conn.request("$JS.API.STREAM.PURGE.GONE", payload=json.dumps({"seq": 2}).encode())
        with pytest.raises(JetStreamError, match=r"starts at seq 2, but recovery needs seq 1 on.*records 1\.\.1 were purged"):
            harness.store(jetstream_server.url, "GONE", "b").open()


class TestSetup:
    def test_a_server_without_jetstream_is_a_clear_error(self, nats_server, harness):
        """Opening on a nats-server without -js says how to start one with JetStream."""
        with pytest.raises(JetStreamError, match=r"has no JetStream: start it with -js \(or `resonate dev --store-kind jetstream`\)"):
            harness.store(nats_server.url, "NOJS", "a").open()

    def test_an_account_without_jetstream_is_the_same_clear_error(self, nats_server_factory, harness, tmp_path):
        """JetStream on, but not for this account: the same advice, and the server's own words."""
        conf = tmp_path / "accounts.conf"
        conf.write_text(
            f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
            "accounts { A: { jetstream: enabled, users: [{user: a, password: a}] }, B: { users: [{user: b, password: b}] } }\n"
        )
        server = nats_server_factory(["-c", str(conf)])
        with pytest.raises(JetStreamError, match=r"has no JetStream: start it with -js .*not enabled for account"):
            harness.store(server.url.replace("nats://", "nats://b:b@"), "NOACCT", "a").open()

    def test_more_replicas_than_servers_passes_on_the_servers_error(self, jetstream_server, harness):
        """replicas=3 on a single node: the server's refusal, and what to change."""
        with pytest.raises(JetStreamError, match=r"replicas.*lower --store-jetstream-replicas"):
            harness.store(jetstream_server.url, "R3ON1", "a", replicas=3).open()

    def test_an_existing_stream_with_other_subjects_is_a_clear_error(self, jetstream_server, harness):
        """A stream of that name on other subjects is not taken over."""
        conn = harness.connect(jetstream_server.url)
        conn.request("$JS.API.STREAM.CREATE.OTHER", payload=json.dumps({"name": "OTHER", "subjects": ["other.>"]}).encode())
        with pytest.raises(JetStreamError, match=r"stream OTHER exists with subjects \['other.>'\]"):
            harness.store(jetstream_server.url, "OTHER", "a").open()

    @pytest.mark.parametrize("garbage", [b"not json", b'{"a":1}\n[1,2]', b'{"a":NaN', b"\xff\xfe", b""])
    def test_a_message_that_is_not_records_stops_recovery_naming_its_seq(self, jetstream_server, harness, garbage):
        """Something else published on the records subject is found by recovery, which names stream and seq."""
        store, _, _ = harness.leader(jetstream_server.url, "JUNK", "a", lease_ms=3000)
        store.wait_durable(append(store, {"n": 1}))
        store.close()
        harness.connect(jetstream_server.url).request(store.subject, payload=garbage)
        reader = harness.store(jetstream_server.url, "JUNK", "b")
        with pytest.raises(JetStreamError, match=r"stream JUNK: seq 2 holds"):
            list(reader.open().records)

    def test_a_lease_value_that_is_not_ours_is_no_holder(self, jetstream_server, harness):
        """A foreign value under the lease key keeps others from leading; it names no leader and breaks nothing."""
        conn = harness.connect(jetstream_server.url)
        store = harness.store(jetstream_server.url, "ALIEN", "a", lease_ms=3000)
        store.open()
        conn.request("$KV.ALIEN.leader", payload=b"\xff{", headers={"Nats-TTL": "1s"})
        roles = Roles()
        store.start(**roles.callbacks())
        time.sleep(0.6)
        assert store.role == "standby" and store.leader_id is None
        assert roles.wait(lambda: "leader" in roles.events, 5)  # once it expired

    @pytest.mark.parametrize("bad", [
        {"stream": "a.b"}, {"stream": ""}, {"stream": "x" * 201}, {"replicas": 0}, {"replicas": "3"},
        {"replicas": True}, {"replicas": 6}, {"lease_ms": 500}, {"lease_ms": float("nan")}, {"lease_ms": 3000.0},
        {"ack_timeout": 0}, {"ack_timeout": float("nan")}, {"ack_timeout": "5"}, {"instance": ""},
        {"snapshot_every": 0}, {"snapshot_every": "10"}, {"subject_prefix": "a.*"}, {"subject_prefix": "a b"},
        {"subject_prefix": "a..b"}, {"subject_prefix": ""},
    ])  # fmt: skip
    def test_bad_settings_are_refused_naming_the_field(self, bad):
        """Each setting is checked when the store is built."""
        kwargs: Dict[str, Any] = {"stream": "S", "instance": "i", **bad}
        field = next(iter(bad))
        with pytest.raises(ValueError, match=field):
            JetStreamStore(Connection("nats://127.0.0.1:1"), **kwargs)


class TestCluster:
    def test_r3_appends_survive_kill_9_of_a_node(self, jetstream_cluster: JetStreamCluster, harness):
        """On three nodes with three replicas, every acknowledged record survives SIGKILL of the node leading
        the stream; the store steps down while JetStream elects a new stream leader, then leads again."""
        url = jetstream_cluster.urls[0]
        store, _, _ = harness.leader(url, "R3", "a", replicas=3, lease_ms=3000)
        for n in range(20):
            store.wait_durable(append(store, {"n": n}))
        conn = harness.connect(url)
        for _ in range(20):  # the stream's leader must be a node the store is not connected to
            leader = int(json.loads(conn.request("$JS.API.STREAM.INFO.R3").payload)["cluster"]["leader"][1:])
            if leader != 0:
                break
            conn.request("$JS.API.STREAM.LEADER.STEPDOWN.R3")
            time.sleep(0.5)
        assert leader != 0
        jetstream_cluster.kill(leader)
        try:
            acknowledged = [n for n in range(20)]
            deadline = time.monotonic() + 40
            n = 20
            while time.monotonic() < deadline and n < 30:
                try:
                    store.wait_durable(append(store, {"n": n}), timeout=10)
                    acknowledged.append(n)
                    n += 1
                except (FencedError, NotLeaderError):
                    time.sleep(0.2)  # stream leader moved: the store steps down and leads again
            assert n == 30
            survivor = 3 - leader  # neither 0 nor the killed one
            jetstream_cluster.wait_ready(nodes=[0, survivor])
            _, records, _ = recovered(jetstream_cluster.urls[survivor], harness, "R3", replicas=3)
            assert [r["n"] for r in records] == acknowledged
        finally:
            jetstream_cluster.restart(leader)
            jetstream_cluster.wait_ready(nodes=[leader])


class TestTakeOverAfterPurge:
    def test_a_standby_behind_a_purge_that_emptied_the_stream_reloads_and_leads(self, jetstream_server, harness):
        """The leader's snapshot at a graceful stop purges the whole stream; a standby still applying
        an old batch finds nothing to fetch after it. It must reload from the snapshot and lead, not
        hold the lease forever waiting for records that are gone."""
        leader, _, _ = harness.leader(jetstream_server.url, "EMPTIED")
        standby = harness.store(jetstream_server.url, "EMPTIED", "b")
        roles = Roles()
        busy = threading.Event()
        applying = roles.apply

        def slow_apply(records: List[dict]) -> None:
            if not busy.is_set():
                busy.set()
                time.sleep(2)  # behind: busy applying while the leader snapshots and stops
            applying(records)

        roles.apply = slow_apply  # type: ignore[method-assign]
        roles.reload(standby.open())
        standby.start(**roles.callbacks())
        for n in range(300):
            ticket = append(leader, {"n": n})
        leader.wait_durable(ticket)
        assert busy.wait(10)
        leader.write_snapshot(leader.begin_snapshot(), snapshot_entries(3))
        leader.close()
        assert roles.wait(lambda: "leader" in roles.events, timeout=15), roles.events
        assert any(isinstance(e, tuple) and e[0] == "reload" for e in roles.events[1:]), roles.events


class TestFailingApply:
    def test_a_record_a_replica_cannot_apply_backs_off_instead_of_spinning(self, jetstream_server, harness):
        """A record this version cannot apply (say, from a newer one) makes the replica rebuild, with a
        growing wait between tries: not thousands of reloads and tracebacks a second."""
        leader, _, _ = harness.leader(jetstream_server.url, "UNAPPLIABLE", lease_ms=3000)
        standby = harness.store(jetstream_server.url, "UNAPPLIABLE", "b", lease_ms=3000)
        roles = Roles()
        roles.reload(standby.open())

        def refuse(records: List[dict]) -> None:
            raise ValueError("unknown record kind")

        roles.apply = refuse  # type: ignore[method-assign]
        reloads = roles.reloads
        standby.start(**roles.callbacks())
        leader.wait_durable(append(leader, {"k": "from-the-future"}))
        time.sleep(2.5)
        assert 1 <= roles.reloads - reloads <= 4, roles.reloads - reloads  # 0.2, 0.4, 0.8, 1.6 s apart
