"""NATS transport: serve one request subject over a real NATS connection.

``NatsTransport`` is what the server uses (its handler answers each ``Request``);
``Connection`` is the repaired pynats2 client (also usable by a synchronous client);
``EmbeddedNatsServer`` runs a local nats-server.
"""

from resonate_sync.transport.connection import Connection
from resonate_sync.transport.embedded import EmbeddedNatsServer, is_reachable, nats_server_binary
from resonate_sync.transport.errors import (
    AuthorizationError,
    ConnectionClosedError,
    NatsConnectionError,
    NoRespondersError,
    RequestTimeoutError,
    TransportError,
)
from resonate_sync.transport.protocol import Msg
from resonate_sync.transport.responder import NatsTransport, Request
from resonate_sync.urls import redact_url

__all__ = [
    "AuthorizationError",
    "Connection",
    "ConnectionClosedError",
    "EmbeddedNatsServer",
    "Msg",
    "NatsConnectionError",
    "NatsTransport",
    "NoRespondersError",
    "Request",
    "RequestTimeoutError",
    "TransportError",
    "is_reachable",
    "nats_server_binary",
    "redact_url",
]
