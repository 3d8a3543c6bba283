"""nats-py, the tests' independent client, driven from synchronous test code.

nats-py runs on its own event loop in a background thread; tests call blocking methods.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import uuid
from concurrent.futures import Future
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import msgpack
import nats

MSGPACK_HEADERS = {"Content-Type": "application/msgpack"}


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

    async def settle(self) -> None:
        """Return once nats-server has processed everything this client sent so far.

        nats-py's ``flush()`` cannot promise that: it writes its PING straight to the socket,
        ahead of SUBs and PUBs still in its pending buffer (seen with nats-py 2.16 in a
        nats-server trace: the PING, then the SUB, then 2,000 PUBs), so its PONG can come
        back before they reach the server. A message to a subscription of our own can't
        overtake them: the server handles one connection's commands in order.
        """
        subject = f"_SETTLE.{uuid.uuid4().hex}"
        arrived = asyncio.Event()

        async def on_msg(_msg: Any) -> None:
            arrived.set()

        sub = await self.nc.subscribe(subject, cb=on_msg)
        await self.nc.publish(subject, b"")
        await asyncio.wait_for(arrived.wait(), 10)
        await sub.unsubscribe()

    def publish(self, subject: str, payload: bytes, headers: Optional[Mapping[str, str]] = None) -> None:
        """Publish; nats-server has processed it when this returns."""

        async def go() -> None:
            await self.nc.publish(subject, payload, headers=headers)
            await self.settle()

        self.run(go())

    def collect(self, subject: str) -> List[Any]:
        """Subscribe and return a list that fills with received nats-py ``Msg`` objects."""
        received: List[Any] = []

        async def go() -> None:
            async def on_msg(msg: Any) -> None:
                received.append(msg)

            await self.nc.subscribe(subject, cb=on_msg)
            await self.settle()  # the subscription is registered

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

    # ---------------------------------------------------------------- resonate envelopes

    def send(
        self, subject: str, envelope: Union[Dict[str, Any], str, bytes], timeout: float = 5.0, encoding: str = "json"
    ) -> Dict[str, Any]:
        """Send one request envelope (a dict, JSON text or raw bytes) and decode the JSON reply.

        With ``encoding="msgpack"`` a dict goes out as MessagePack, raw bytes as they are, both with
        ``Content-Type: application/msgpack``; the reply must carry that header and be MessagePack.
        """
        if encoding == "msgpack":
            data = envelope if isinstance(envelope, bytes) else msgpack.packb(envelope, unicode_errors="surrogatepass")
            reply = self.request(subject, data, timeout=timeout, headers=MSGPACK_HEADERS)
            assert (reply.headers or {}).get("Content-Type") == "application/msgpack", reply.headers
            return msgpack.unpackb(reply.data, strict_map_key=False, unicode_errors="surrogatepass")
        if isinstance(envelope, dict):
            data = json.dumps(envelope).encode()
        elif isinstance(envelope, str):
            data = envelope.encode()
        else:
            data = envelope
        reply = self.request(subject, data, timeout=timeout)
        assert not (reply.headers or {}).get("Content-Type"), reply.headers
        return json.loads(reply.data)

    def call(self, subject: str, operation: str, payload: Any, encoding: str = "json", **envelope: Any) -> Dict[str, Any]:
        """``{"operation": …, "payload": …}`` plus extra envelope keys (``requestId``, ``metadata``), in ``encoding``."""
        return self.send(subject, {"operation": operation, "payload": payload, **envelope}, encoding=encoding)

    def inbox(self, subject: str) -> "queue.Queue[Dict[str, Any]]":
        """Subscribe; decoded JSON messages arrive in the returned queue."""
        received: "queue.Queue[Dict[str, Any]]" = queue.Queue()

        async def go() -> None:
            async def on_msg(msg: Any) -> None:
                received.put(json.loads(msg.data))

            await self.nc.subscribe(subject, cb=on_msg)
            await self.settle()  # the subscription is registered

        self.run(go())
        return received


def next_message(inbox: "queue.Queue[Dict[str, Any]]", timeout: float = 10.0) -> Optional[Dict[str, Any]]:
    """The next message of an :meth:`NatsPyClient.inbox`, or None after ``timeout`` seconds."""
    try:
        return inbox.get(timeout=timeout)
    except queue.Empty:
        return None
