"""Fixtures that run a real nats-server on loopback, and a synchronous nats-py client.

Nothing here mocks NATS: every server is a ``nats-server`` child process on a port it picked
itself, and the independent client is nats-py (asyncio) driven from a background loop.

Fixtures:
- ``nats_server``: a fresh server per test (restart or pause it freely).
- ``shared_nats_server``: one server for the whole session (use distinct subjects).
- ``nats_server_factory``: ``factory(extra_args=(), **kwargs)`` starts more servers, e.g.
  with ``["-c", conf]``; all stopped after the test.
- ``nats_client``: ``factory(url, **connect_kwargs)`` returns a connected :class:`NatsPyClient`;
  all closed after the test.
- ``jetstream_cluster`` (one 3-node JetStream cluster per module) and ``jetstream_server`` (one
  JetStream node per test): see ``jetstream_cluster.py``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, List, Sequence

import pytest

from resonate_sync.transport.embedded import EmbeddedNatsServer

from jetstream_cluster import jetstream_cluster, jetstream_server  # noqa: E402,F401  (fixtures for every module)
from natsclient import NatsPyClient  # noqa: E402  (tests/integration is on sys.path)


@pytest.fixture(autouse=True)
def free_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """``resonate serve`` processes serve metrics on a free port: the default, 9090, may be taken."""
    monkeypatch.setenv("RESONATE_METRICS_ADDR", "127.0.0.1:0")


@pytest.fixture
def nats_server() -> Iterator[EmbeddedNatsServer]:
    """A nats-server of this test's own; tests may restart, pause or stop it."""
    with EmbeddedNatsServer() as server:
        yield server


@pytest.fixture(scope="session")
def shared_nats_server() -> Iterator[EmbeddedNatsServer]:
    """One nats-server for the session: fast, but tests must not disturb it (use own subjects)."""
    with EmbeddedNatsServer() as server:
        yield server


@pytest.fixture
def nats_server_factory() -> Iterator[Callable[..., EmbeddedNatsServer]]:
    """``factory(extra_args=(), **kwargs)`` starts a server with extra flags; stopped after the test."""
    servers: List[EmbeddedNatsServer] = []

    def factory(extra_args: Sequence[str] = (), **kwargs: Any) -> EmbeddedNatsServer:
        server = EmbeddedNatsServer(extra_args=extra_args, **kwargs)
        servers.append(server)
        return server.start()

    try:
        yield factory
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def nats_client() -> Iterator[Callable[..., NatsPyClient]]:
    """``factory(url, **connect_kwargs)`` returns a connected :class:`NatsPyClient`; closed after the test."""
    clients: List[NatsPyClient] = []

    def factory(url: str, **connect_kwargs: Any) -> NatsPyClient:
        client = NatsPyClient(url, **connect_kwargs)
        clients.append(client)
        return client

    try:
        yield factory
    finally:
        for client in clients:
            client.close()
