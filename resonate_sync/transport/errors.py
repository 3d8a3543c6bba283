"""What the NATS connection and the responder raise.

Each derives from the matching pynats2 exception, so code written against pynats2 still
catches them; unlike pynats2's, ours carry a message that names the URL and the reason.
"""

from resonate_sync.transport._pynats2 import NATSConnectionError, NATSError, NATSRequestTimeoutError

__all__ = [
    "AuthorizationError",
    "ConnectionClosedError",
    "NatsConnectionError",
    "NoRespondersError",
    "RequestTimeoutError",
    "TransportError",
]


class NatsConnectionError(NATSConnectionError):
    """The connection could not be made, or is gone. ``str(error)`` names the URL and why.

    (pynats2's own exceptions carry no message; ours do.)
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.args = (message,)


class AuthorizationError(NatsConnectionError):
    """The server refused our credentials (``-ERR 'Authorization Violation'`` at connect)."""


class ConnectionClosedError(NatsConnectionError):
    """Not connected right now (lost, not yet connected, or closed): retry later or give up."""


class RequestTimeoutError(NATSRequestTimeoutError):
    """No reply arrived within the request timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class NoRespondersError(NATSError):
    """Nobody subscribes to the request's subject (the server answered with status 503)."""


class TransportError(Exception):
    """The transport cannot do what was asked: cannot connect, or not connected right now."""

