"""Real JetStream servers for tests: an n-node cluster, and one node with JetStream on.

``JetStreamCluster(tmp_path, size=3)`` starts ``size`` nats-servers on free loopback ports,
routed to each other (cluster ``resonate-test``), each with its own store directory and
``server_name``, and returns once JetStream has a meta leader and answers on every node.
``kill(i)`` is SIGKILL (kill -9), ``stop(i)`` a graceful stop, ``restart(i)`` starts node
``i`` again on the same ports and store directory (its data survives), ``pause(i)`` /
``resume(i)`` SIGSTOP/SIGCONT it (a hung server).

Fixtures (import them into a test module, or from a conftest, to use them):
- ``jetstream_cluster``: one 3-node cluster per test module; tests use their own stream names.
- ``jetstream_server``: a single JetStream node per test (``-js -sd <tmp>``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from resonate_sync.transport.connection import Connection
from resonate_sync.transport.embedded import EmbeddedNatsServer

__all__ = ["JetStreamCluster", "jetstream_cluster", "jetstream_server", "wait_for_jetstream"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_jetstream(url: str, timeout: float = 20.0) -> None:
    """Return once ``$JS.API.INFO`` answers without error at ``url`` (a meta leader exists)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    conn = Connection(url, name="jetstream-wait")
    try:
        while time.monotonic() < deadline:
            try:
                if not conn.connected:
                    conn.connect()
                reply = json.loads(conn.request("$JS.API.INFO", timeout=1.0).payload)
                if "error" not in reply:
                    return
                last = str(reply["error"])
            except Exception as exc:  # not up yet, no meta leader yet
                last = repr(exc)
            time.sleep(0.1)
    finally:
        conn.close()
    raise TimeoutError(f"JetStream at {url} not ready within {timeout:g} s: {last}")


class JetStreamCluster:
    """``size`` routed nats-servers with JetStream, their store directories under ``tmp_path``."""

    def __init__(self, tmp_path: Path, size: int = 3, *, sync_always: bool = False) -> None:
        self.size = size
        self.dir = Path(tmp_path)
        self.cluster_ports = [_free_port() for _ in range(size)]
        self.nodes: List[EmbeddedNatsServer] = []
        for index in range(size):
            store = self.dir / f"n{index}"
            store.mkdir(parents=True, exist_ok=True)
            routes = ", ".join(f'"nats://127.0.0.1:{port}"' for port in self.cluster_ports)
            conf = store / "nats.conf"
            conf.write_text(
                f'server_name: "n{index}"\n'
                f'jetstream {{ store_dir: "{store / "js"}"'
                + (", sync_interval: always" if sync_always else "")
                + " }\n"
                f'cluster {{ name: "resonate-test", listen: "127.0.0.1:{self.cluster_ports[index]}", routes: [{routes}] }}\n'
            )
            self.nodes.append(EmbeddedNatsServer(extra_args=["-c", str(conf)], log_file=str(store / "nats.log")))
        try:
            for node in self.nodes:
                node.start()
            self.wait_ready()
        except BaseException:
            self.close()
            raise

    @property
    def urls(self) -> List[str]:
        return [node.url for node in self.nodes if node.port is not None]

    @property
    def url(self) -> str:
        """All the nodes' URLs in one string (for clients that take a list)."""
        return ",".join(self.urls)

    def wait_ready(self, timeout: float = 30.0, nodes: Optional[List[int]] = None) -> None:
        for index in nodes if nodes is not None else range(self.size):
            if self.nodes[index].running:
                wait_for_jetstream(self.nodes[index].url, timeout)

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (no clean shutdown); ``restart`` brings it back with its data."""
        node = self.nodes[index]
        if node.pid is not None:
            os.kill(node.pid, signal.SIGKILL)
        node.stop(timeout=1.0)  # reaps it; its store directory stays

    def stop(self, index: int) -> None:
        self.nodes[index].stop()

    def restart(self, index: int) -> None:
        node = self.nodes[index]
        node.stop()
        node.start()

    def pause(self, index: int) -> None:
        self.nodes[index].pause()

    def resume(self, index: int) -> None:
        self.nodes[index].resume()

    def close(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "JetStreamCluster":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@pytest.fixture(scope="module")
def jetstream_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JetStreamCluster]:
    """One 3-node JetStream cluster for the module (tests use their own stream names)."""
    with JetStreamCluster(tmp_path_factory.mktemp("jetstream-cluster"), size=3) as cluster:
        yield cluster


@pytest.fixture
def jetstream_server(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    """One nats-server with JetStream (``-js -sd <tmp>``), for this test alone."""
    with EmbeddedNatsServer(extra_args=["-js", "-sd", str(tmp_path / "js")]) as server:
        yield server
