"""NATS transport: serve one request subject over a real NATS connection.

``NatsTransport`` is what the server uses; ``Connection`` is the repaired pynats2 client
(also usable by a synchronous client); ``EmbeddedNatsServer`` runs a local nats-server.
"""

from resonate_sync.transport.embedded import EmbeddedNatsServer, is_reachable, nats_server_binary
from resonate_sync.transport.nats import (
    AuthorizationError,
    Connection,
    ConnectionClosedError,
    Msg,
    NatsConnectionError,
    NatsTransport,
    NoRespondersError,
    RequestTimeoutError,
    TransportError,
    redact_url,
)

__all__ = [
    "AuthorizationError",
    "Connection",
    "ConnectionClosedError",
    "EmbeddedNatsServer",
    "Msg",
    "NatsConnectionError",
    "NatsTransport",
    "NoRespondersError",
    "RequestTimeoutError",
    "TransportError",
    "is_reachable",
    "nats_server_binary",
    "redact_url",
]
