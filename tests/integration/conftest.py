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
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence

import nats
import pytest

from resonate_sync.transport.embedded import EmbeddedNatsServer


class NatsPyClient:
    """nats-py on its own event-loop thread, with blocking methods for tests."""

    def __init__(self, url: str, **connect_kwargs: Any) -> None:
        connect_kwargs.setdefault("allow_reconnect", False)
        connect_kwargs.setdefault("connect_timeout", 2)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nats-py-loop", daemon=True)
        self._thread.start()
        try:
            self.nc = self.run(nats.connect(url, **connect_kwargs))
        except BaseException:
            self._shutdown_loop()
            raise

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the client's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def request(
        self, subject: str, payload: bytes, timeout: float = 2.0, headers: Optional[Mapping[str, str]] = None
    ) -> Any:
        """One request; returns the nats-py ``Msg`` (``.data``, ``.headers``)."""
        return self.run(self.nc.request(subject, payload, timeout=timeout, headers=headers))

    def request_many(self, subject: str, payloads: Sequence[bytes], timeout: float = 5.0) -> List[Any]:
        """All requests in flight at once; returns each reply's data, or the exception it raised."""
        return self.start_requests(subject, payloads, timeout).result(timeout + 10)

    def start_requests(self, subject: str, payloads: Sequence[bytes], timeout: float = 5.0) -> "Future[List[Any]]":
        """Like :meth:`request_many` but returns at once, with a Future of the result list."""

        async def gather() -> List[Any]:
            replies = await asyncio.gather(
                *(self.nc.request(subject, p, timeout=timeout) for p in payloads), return_exceptions=True
            )
            return [r if isinstance(r, BaseException) else r.data for r in replies]

        return asyncio.run_coroutine_threadsafe(gather(), self._loop)

    def publish(self, subject: str, payload: bytes, headers: Optional[Mapping[str, str]] = None) -> None:
        """Publish and flush (the server has it when this returns)."""

        async def go() -> None:
            await self.nc.publish(subject, payload, headers=headers)
            await self.nc.flush()

        self.run(go())

    def collect(self, subject: str) -> List[Any]:
        """Subscribe and return a list that fills with received nats-py ``Msg`` objects."""
        received: List[Any] = []

        async def go() -> None:
            async def on_msg(msg: Any) -> None:
                received.append(msg)

            await self.nc.subscribe(subject, cb=on_msg)
            await self.nc.flush()

        self.run(go())
        return received

    def close(self) -> None:
        """Close the connection and stop the loop thread."""
        try:
            if not self.nc.is_closed:
                self.run(self.nc.close(), timeout=5)
        except Exception:
            pass
        self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


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
