"""The JetStream store under failure: a 3-node nats-server cluster and `resonate serve` replicas.

Every server here is a real process: three routed nats-servers (one cluster for the module, see
``jetstream_cluster``) and `resonate serve --store-kind jetstream --store-jetstream-replicas 3`
instances, each connected to its own node. Load is creates and resolves with idempotency keys
through the Client, which retries what provably reached no leader (no responders) and, because
the keys make them idempotent, what may have (503 from a replica that stepped down, timeouts).

What is checked after each failure: a standby answers within 5 s, and every change that was
acknowledged is there with the state it was acknowledged in: nothing lost, nothing half-applied.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from resonate_sync import Client
from resonate_sync.errors import ResonateError
from resonate_sync.models import PromiseState
from resonate_sync.transport.connection import Connection

from helpers import FAR, poll
from jetstream_cluster import JetStreamCluster, jetstream_cluster  # noqa: F401  (a fixture)

RESONATE = str(Path(sys.executable).with_name("resonate"))
FAILOVER_BUDGET = 5.0  # seconds from kill -9 of the leader to the first reply from a standby


class Replica:
    """One `resonate serve` on the JetStream store, as a child process logging to a file."""

    def __init__(self, tmp_path: Path, url: str, subject: str, name: str, *extra: str) -> None:
        self.url, self.subject, self.name, self.extra = url, subject, name, extra
        self.log_path = tmp_path / f"{subject}-{name}.log"
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "Replica":
        args = [
            RESONATE, "serve", "--store-kind", "jetstream", "--store-jetstream-replicas", "3",
            "--api-nats-addr", self.url, "--api-nats-subject", self.subject, "--tick", "100ms",
            "--api-nats-peer-window", "20ms", "--metrics-addr", "", *self.extra,
        ]  # fmt: skip
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def kill(self) -> None:
        """kill -9, and reap it."""
        self.signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Cluster:
    """The replicas of one subject (and so one stream) on the module's nats-server cluster."""

    def __init__(self, nats: JetStreamCluster, tmp_path: Path) -> None:
        self.nats = nats
        self.tmp_path = tmp_path
        self.subject = f"repl.{uuid.uuid4().hex[:8]}"
        self.replicas: List[Replica] = []
        self._conn: Optional[Connection] = None

    def start(self, node: int, *extra: str) -> Replica:
        replica = Replica(self.tmp_path, self.nats.urls[node], self.subject, f"r{len(self.replicas)}-n{node}", *extra)
        self.replicas.append(replica.start())
        return replica

    def _discovery(self) -> Connection:
        """A connection to a live node (a test may have killed the one used before)."""
        if self._conn is not None and self._conn.connected:
            return self._conn
        if self._conn is not None:
            self._conn.close()
        node = next(node for node in self.nats.nodes if node.running)
        self._conn = Connection(node.url, name="replication-test")
        self._conn.connect()
        return self._conn

    def stats(self, pid: int) -> dict:
        """The $SRV.STATS endpoint document of the replica with ``pid``."""
        for raw in self._discovery().gather("$SRV.STATS.resonate", timeout=1.0, quiet=0.2):
            doc = json.loads(raw)
            if doc.get("metadata", {}).get("pid") == str(pid):
                return doc["endpoints"][0]
        raise AssertionError(f"pid {pid} does not answer $SRV.STATS")

    def roles(self) -> Dict[int, str]:
        """pid → role, as each live replica of this subject answers $SRV.INFO now."""
        roles = {}
        for raw in self._discovery().gather("$SRV.INFO.resonate", timeout=1.0, quiet=0.2):
            doc = json.loads(raw)
            if any(e.get("subject") == self.subject for e in doc.get("endpoints", [])):
                roles[int(doc["metadata"]["pid"])] = doc["metadata"].get("role", "")
        return roles

    def leader(self, timeout: float = 15.0) -> Replica:
        def find() -> Optional[Replica]:
            leaders = [pid for pid, role in self.roles().items() if role == "leader"]
            return next((r for r in self.replicas if [r.pid] == leaders), None)

        leader = poll(find, timeout=timeout, interval=0.1)
        assert leader is not None, f"no single leader among {self.roles()}"
        return leader

    def client(self, node: int = 0, **options) -> Client:
        options = {"timeout": 2.0, "retries": 40, "backoff": 0.05, **options}
        return Client(self.nats.urls[node], self.subject, **options)

    def close(self) -> None:
        for replica in self.replicas:
            replica.stop()
        if self._conn is not None:
            self._conn.close()


@pytest.fixture
def cluster(jetstream_cluster, tmp_path):  # noqa: F811  (the fixture imported above)
    made = Cluster(jetstream_cluster, tmp_path)
    yield made
    made.close()
    for index, node in enumerate(jetstream_cluster.nodes):  # a test may have killed one
        if not node.running:
            jetstream_cluster.restart(index)
    jetstream_cluster.wait_ready()


class Load:
    """Threads that create and resolve promises with idempotency keys, recording what was acknowledged."""

    def __init__(self, client: Client, threads: int = 4, pace: float = 0.005) -> None:
        self.client = client
        self.pace = pace  # seconds each thread rests between promises: enough load, a bounded number to check
        self.acked: Dict[str, str] = {}
        self.tried: Dict[str, str] = {}  # id -> the furthest step attempted ("create" / "resolve")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self.client.close()

    def stop(self) -> None:
        """Stop the threads; what they were doing is finished or abandoned (not acknowledged)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def _run(self, number: int) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            pid = f"p-{number}-{i}"
            try:
                with self._lock:
                    self.tried[pid] = "create"
                self.client.promises_create(pid, FAR, idempotency_key=f"c-{pid}")
                with self._lock:
                    self.acked[pid] = PromiseState.PENDING
                if i % 2:
                    with self._lock:
                        self.tried[pid] = "resolve"
                    self.client.promises_resolve(pid, idempotency_key=f"r-{pid}")
                    with self._lock:
                        self.acked[pid] = PromiseState.RESOLVED
            except ResonateError:
                time.sleep(0.05)  # not acknowledged: may or may not have happened
            self._stop.wait(self.pace)

    def check(self, client: Client, last: Optional[int] = None) -> None:
        """Every acknowledged change is there in its acknowledged state (a later attempt may have gone
        further); with ``last``, only the ``last`` acknowledged most recently (those around a failure)."""
        with self._lock:
            acked, tried = dict(self.acked), dict(self.tried)
        assert acked, "the load acknowledged nothing"
        for pid, state in list(acked.items())[-last if last else 0 :]:
            found = client.promises_read(pid).state
            if state == PromiseState.RESOLVED or tried[pid] == "create":
                assert found == state, f"{pid}: acknowledged {state}, found {found}"
            else:
                assert found in (PromiseState.PENDING, PromiseState.RESOLVED), f"{pid}: found {found}"


def first_reply_after(client: Client, started: float, budget: float) -> float:
    """Seconds from ``started`` until a read answers (a promise that is not there: a 404 is an answer)."""
    deadline = started + budget + 10
    while time.monotonic() < deadline:
        try:
            client.promises_read("failover-probe", request_timeout=0.5)
        except ResonateError as error:
            if getattr(error, "code", 0) == 404:
                return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"no reply within {budget + 10:g} s")


class TestLeadership:
    def test_instances_started_at_the_same_moment_elect_exactly_one_leader(self, cluster):
        replicas = [cluster.start(node) for node in range(3)]
        leader = cluster.leader()
        for _ in range(5):  # and it stays that way
            roles = cluster.roles()
            assert sorted(roles.values()) == ["leader", "standby", "standby"], roles
            assert roles[leader.pid] == "leader"
            time.sleep(0.3)
        assert {r.pid for r in replicas} == set(cluster.roles())

    def test_a_file_store_instance_on_a_replicated_subject_is_refused(self, cluster, tmp_path):
        """Another store on the same subject would split the promises between two states: exit 2."""
        replica = cluster.start(0)
        cluster.leader()
        result = subprocess.run(
            [RESONATE, "serve", "--store-path", str(tmp_path / "file-store"), "--api-nats-addr", cluster.nats.urls[1],
             "--api-nats-subject", cluster.subject, "--metrics-addr", ""],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert f"subject '{cluster.subject}' is already served" in result.stderr
        assert f"pid {replica.pid}" in result.stderr and "store: jetstream" in result.stderr
        assert not (tmp_path / "file-store").exists(), "a refused start leaves nothing on disk"


def kill_rounds(request) -> int:
    return 10 if request.config.getoption("--run-slow") else 2


class TestFailover:
    def test_kill_9_of_the_leader_under_load(self, cluster, request):
        """A standby answers within 5 s of kill -9 of the leader, with every acknowledged change."""
        for node in range(3):
            cluster.start(node)
        with cluster.client(node=2) as client, Load(cluster.client(node=1)) as load:
            for round_ in range(kill_rounds(request)):
                leader = cluster.leader()
                before = load.count()
                poll(lambda: load.count() >= before + 20, timeout=20)
                killed_at = time.monotonic()
                leader.kill()
                took = first_reply_after(client, killed_at, FAILOVER_BUDGET)
                assert took <= FAILOVER_BUDGET, f"round {round_}: the first reply came {took:.2f} s after kill -9"
                new_leader = cluster.leader()
                assert new_leader is not leader
                load.check(client, last=300)  # those acknowledged around the kill; all of them at the end
                # the killed one comes back as a standby, so every round has two to choose from
                node = cluster.nats.urls.index(leader.url)
                cluster.replicas.remove(leader)
                cluster.start(node)
            after = load.count()
            poll(lambda: load.count() > after, timeout=20)
            load.stop()
            load.check(client)

    def test_kill_9_of_a_nats_server_keeps_the_cluster_serving(self, cluster):
        """Losing the node the leader is connected to loses that leader, not the service or a write."""
        for node in range(3):
            cluster.start(node)
        leader = cluster.leader()
        node = cluster.nats.urls.index(leader.url)
        other = (node + 1) % 3
        with cluster.client(node=other) as client, Load(cluster.client(node=other)) as load:
            poll(lambda: load.count() >= 20, timeout=20)
            killed_at = time.monotonic()
            cluster.nats.kill(node)
            took = first_reply_after(client, killed_at, FAILOVER_BUDGET + 5)
            assert took <= FAILOVER_BUDGET + 5, f"no reply {took:.2f} s after a nats-server died"
            count = load.count()
            poll(lambda: load.count() >= count + 20, timeout=20)
            load.stop()
            load.check(client)
        assert cluster.leader() is not leader

    def test_a_paused_leader_is_fenced_when_it_resumes(self, cluster):
        """SIGSTOP past the lease: a standby takes over; on SIGCONT the old leader steps down and
        answers 503, and no acknowledged write is lost or doubled."""
        lease = ("--store-jetstream-lease", "1s")
        for node in range(2):
            cluster.start(node, *lease)
        leader = cluster.leader()
        with cluster.client(node=2) as client, Load(cluster.client(node=2)) as load:
            poll(lambda: load.count() >= 20, timeout=20)
            leader.signal(signal.SIGSTOP)
            try:
                time.sleep(2.5)  # past the lease: the standby takes over and writes
                count = load.count()
                poll(lambda: load.count() >= count + 20, timeout=20)
                assert cluster.leader() is not leader
            finally:
                leader.signal(signal.SIGCONT)
            assert poll(lambda: "stepped down" in leader.log(), timeout=10), leader.log()[-2000:]
            assert poll(lambda: cluster.roles().get(leader.pid) == "standby", timeout=10)
            # the requests NATS gave it while it was paused were answered 503, not served from its old state
            stats = cluster.stats(leader.pid)
            assert stats["num_errors"] > 0 and stats["last_error"].startswith("503:"), stats
            count = load.count()
            poll(lambda: load.count() >= count + 20, timeout=20)
            load.stop()
            load.check(client)
            ids = [p.id for p in client.promises_search_all("p-*")]
            assert len(ids) == len(set(ids)), "a promise appears twice"
            assert set(load.acked) <= set(ids)
