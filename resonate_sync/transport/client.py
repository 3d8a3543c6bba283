"""``NatsClientTransport``: a client's requests over NATS request-reply.

What :class:`resonate_sync.Client` sends through when it is given a URL: one connection and one
wildcard reply inbox shared by every thread, each request answered on its own inbox subject.
It knows nothing of operations: envelope bytes go out on the server's subject, reply bytes
come back. NATS failures become the client's errors: :class:`ConnectionFailed` and
:class:`RequestTimeout`, wrapped in :class:`Retryable` where another attempt may succeed.
"""

from __future__ import annotations

import threading
from typing import List, Optional

from resonate_sync.errors import BadRequest, ConnectionFailed, NoServer, RequestTimeout, Retryable
from resonate_sync.transport.connection import Connection
from resonate_sync.transport.errors import (
    AuthorizationError,
    ConnectionClosedError,
    NatsConnectionError,
    NoRespondersError,
    RequestTimeoutError,
)
from resonate_sync.urls import redact_url

__all__ = ["NatsClientTransport"]


class NatsClientTransport:
    """Requests on ``subject`` over one NATS connection; thread-safe.

    Args:
        url: NATS server URL; ``nats://user:pass@host:4222`` or ``nats://token@host:4222`` for auth.
        subject: the server's request subject.
        name: the NATS connection name (shows in the nats-server's connection list).
        connect_timeout: seconds to wait for the NATS handshake.
        tls_cacert, tls_client_cert, tls_client_key: PEM files for ``tls://`` URLs: the CA that signed
            the server's certificate (default: the system's CAs), and a client certificate and key
            for servers that verify their clients.
        tls_verify: check the server's certificate and host name (``tls://``); False only for tests.
        user_credentials: a NATS ``.creds`` file (user JWT and NKey seed), for servers in
            operator/JWT mode.
        nkeys_seed: a file holding an NKey user seed (``SU…``), for servers listing NKey users.
            Not with ``user_credentials``.

    Connects at once; raises :class:`ConnectionFailed` naming the URL when it cannot (refused
    credentials or certificates included), ValueError for a TLS, ``.creds`` or seed file it
    cannot use (naming the file). After a lost connection, the next request reconnects.
    """

    def __init__(
        self,
        url: str = "nats://localhost:4222",
        subject: str = "resonate.server",
        *,
        name: str = "resonate-client",
        connect_timeout: float = 2.0,
        tls_cacert: Optional[str] = None,
        tls_client_cert: Optional[str] = None,
        tls_client_key: Optional[str] = None,
        tls_verify: bool = True,
        user_credentials: Optional[str] = None,
        nkeys_seed: Optional[str] = None,
    ) -> None:
        files = {
            "tls_cacert": tls_cacert,
            "tls_client_cert": tls_client_cert,
            "tls_client_key": tls_client_key,
            "user_credentials": user_credentials,
            "nkeys_seed": nkeys_seed,
        }
        given = {key: value for key, value in files.items() if value}
        self.url = redact_url(url)
        self.subject = subject
        self._closed = threading.Event()
        self._conn = Connection(url, name=name, connect_timeout=connect_timeout, tls_verify=tls_verify, **given)
        try:
            self._conn.connect()
        except (NatsConnectionError, OSError, ValueError) as exc:
            self._conn.close()
            raise ConnectionFailed(str(exc)) from exc

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up right now (a request reconnects if it is not)."""
        return self._conn.connected

    def request(self, data: bytes, timeout: float, content_type: str = "") -> bytes:
        """Send ``data`` to the server's subject; the reply's bytes, within ``timeout`` seconds.

        ``content_type`` ("": none) goes with it as its ``Content-Type`` header.
        """
        conn = self._conn
        if self._closed.is_set():
            raise ConnectionFailed("the client was closed")
        if not conn.connected:
            try:
                conn.connect()
            except AuthorizationError as exc:
                raise ConnectionFailed(str(exc)) from exc
            except ConnectionClosedError as exc:
                raise ConnectionFailed("the client was closed") from exc
            except (NatsConnectionError, OSError) as exc:
                raise Retryable(ConnectionFailed(str(exc)), delivered=False) from exc
        try:
            headers = {"Content-Type": content_type} if content_type else None
            return conn.request(self.subject, payload=data, timeout=timeout, headers=headers).payload
        except NoRespondersError:
            unheard = NoServer(f"no resonate server listens on subject {self.subject!r} at {self.url}")
            raise Retryable(unheard, delivered=False) from None
        except RequestTimeoutError:
            message = f"no reply on subject {self.subject!r} at {self.url} within {timeout:g} s"
            raise Retryable(RequestTimeout(message), delivered=True) from None
        except ConnectionClosedError as exc:
            if self._closed.is_set():
                raise ConnectionFailed("the client was closed") from None
            raise Retryable(ConnectionFailed(str(exc)), delivered=True) from None
        except ValueError as exc:  # larger than the server's max_payload: nothing was sent
            raise BadRequest(str(exc)) from None

    def gather(self, subject: str, data: bytes, timeout: float, quiet: float = 0.3) -> List[bytes]:
        """Every reply to one request on ``subject``, for requests many answer (discovery).

        Waits up to ``timeout`` seconds for the first reply, then until ``quiet`` seconds pass
        without another; [] at once when NATS says nobody listens, or after ``timeout``.
        Raises :class:`ConnectionFailed` if it cannot connect.
        """
        conn = self._conn
        try:
            if not conn.connected:
                conn.connect()
            return conn.gather(subject, data, timeout=timeout, quiet=quiet)
        except (NatsConnectionError, OSError) as exc:
            raise ConnectionFailed(str(exc)) from exc

    def close(self) -> None:
        """Close the connection; requests in flight and later fail with :class:`ConnectionFailed`. Idempotent."""
        self._closed.set()
        self._conn.close()

    def __repr__(self) -> str:
        return f"NatsClientTransport(url={self.url!r}, subject={self.subject!r})"
