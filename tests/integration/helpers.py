"""Helpers shared by the integration tests (importable: tests/integration is on sys.path)."""

import time
import uuid

from resonate_sync.config import Config
from resonate_sync.server import Server

FAR = 4_102_444_800_000  # 2100-01-01: a deadline that will not pass during the tests
PEER_WINDOW_MS = 20
"""How long test servers wait for other instances to name their subjects: tests start hundreds of
servers on shared nats-servers, each on a subject of its own, so nobody needs the real wait."""


def uid(prefix: str) -> str:
    """A unique name, so tests sharing one nats-server or server never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def poll(check, timeout: float = 10.0, interval: float = 0.05):
    """Call ``check`` until it returns something truthy or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


STORE_KINDS = ("memory", "jetstream")
"""What the integration tests of the operations run against: ``jetstream`` needs a nats-server with ``-js``."""


def start_server(url: str, subject: str = "", store: str = "memory", wait_for_lead: bool = True, **overrides) -> Server:
    """A started server on ``url`` (its own subject unless given), with fast background ticks.

    ``store``: ``memory``, or ``jetstream`` (a stream of its own on ``url``, which must have
    JetStream on); returns once the JetStream replica leads."""
    if store == "jetstream":
        overrides.setdefault("store_kind", "jetstream")
    config = Config(
        nats_addr=url,
        nats_subject=subject or f"resonate.test.{uuid.uuid4().hex[:8]}",
        embedded_nats="never",
        tick_ms=100,
        task_retry_timeout_ms=500,
        **{"peer_window_ms": PEER_WINDOW_MS, **overrides},
    )
    server = Server(config, mode="dev").start()
    if store == "jetstream" and wait_for_lead:
        if not poll(lambda: server.store.role == "leader", timeout=15):
            server.stop()
            raise AssertionError(f"the JetStream replica did not take the lead within 15 s (role {server.store.role})")
    return server
