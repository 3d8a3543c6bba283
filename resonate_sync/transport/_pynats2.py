"""The one module that knows pynats2: what our connection takes from it, in our own names.

Our :class:`~resonate_sync.transport.connection.Connection` is a ``pynats2.NATSClient`` (so
code written for pynats2 can use it), but replaces its socket handling entirely. From pynats2
it takes only the parsing of the URL and its arguments (:attr:`ClientBase.options`), the NUID
that names inboxes, the subscription record and the exception classes. pynats2 itself needs
``pkg_resources``, which new setuptools no longer ship: :func:`_ensure_pkg_resources` provides
it before pynats2 is imported.
"""

import importlib.metadata
import sys
import types
import warnings
from typing import NamedTuple, Optional
from urllib.parse import unquote


def _ensure_pkg_resources() -> None:
    """Let ``import pynats2`` work where setuptools no longer ships ``pkg_resources``.

    pynats2 imports ``pkg_resources`` for a single call, ``get_distribution("pynats2").version``.
    Rather than pin an old setuptools, provide that one call from ``importlib.metadata``.
    Any failure counts, not only ImportError: an old setuptools on Python >= 3.12 dies with
    AttributeError (``pkgutil.ImpImporter``) while importing ``pkg_resources``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # setuptools warns that pkg_resources is deprecated
            import pkg_resources  # noqa: F401
    except Exception:
        shim = types.ModuleType("pkg_resources")
        shim.__doc__ = "resonate_sync shim: only get_distribution(name).version, for pynats2."

        def get_distribution(name: str) -> types.SimpleNamespace:
            return types.SimpleNamespace(project_name=name, version=importlib.metadata.version(name))

        shim.get_distribution = get_distribution  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim


_ensure_pkg_resources()

import pynats2  # noqa: E402
from pynats2 import NATSConnectionError, NATSError, NATSRequestTimeoutError  # noqa: E402
from pynats2 import NATSSubscription as Subscription  # noqa: E402

from resonate_sync.urls import redact_url  # noqa: E402

__all__ = ["ClientBase", "ClientOptions", "NATSConnectionError", "NATSError", "NATSRequestTimeoutError", "Subscription"]


class ClientOptions(NamedTuple):
    """What the URL and the arguments ask for.

    Attributes:
        host, port: where the server listens (127.0.0.1 and 4222 when the URL leaves them out).
        username, password: from the URL, percent-decoded; a username alone is a token.
        tls: whether the URL is ``tls://``.
        tls_cacert, tls_client_cert, tls_client_key: file names, or None.
        tls_verify: whether the server's certificate and host name are checked.
        name: the client's name, shown by the server.
        version: pynats2's version, sent in CONNECT.
    """

    host: str
    port: int
    username: Optional[str]
    password: Optional[str]
    tls: bool
    tls_cacert: Optional[str]
    tls_client_cert: Optional[str]
    tls_client_key: Optional[str]
    tls_verify: bool
    name: str
    version: str


class ClientBase(pynats2.NATSClient):
    """``pynats2.NATSClient`` as a base class: its URL parsing as :attr:`options`, and :meth:`new_inbox`.

    Raises ValueError for a URL with a path (pynats2 would prefix every subject with it), and
    pynats2's own errors for a URL it cannot parse or whose scheme is not ``nats``/``tls``.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        connect_timeout: float,
        tls_cacert: Optional[str],
        tls_client_cert: Optional[str],
        tls_client_key: Optional[str],
        tls_verify: bool,
    ) -> None:
        super().__init__(
            url,
            name=name,
            tls_cacert=tls_cacert,
            tls_client_cert=tls_client_cert,
            tls_client_key=tls_client_key,
            tls_verify=tls_verify,
            socket_timeout=connect_timeout,
        )
        if self._vhost_name:
            raise ValueError(f"URL paths (pynats2 virtual hosts) are not supported: {redact_url(url)}")
        parsed = self._conn_options
        self.options = ClientOptions(
            host=parsed["hostname"] or "127.0.0.1",
            port=parsed["port"] or 4222,
            username=unquote(parsed["username"]) if parsed["username"] else None,
            password=unquote(parsed["password"]) if parsed["password"] else None,
            tls=parsed["tls"],
            tls_cacert=parsed["tls_cacert"],
            tls_client_cert=parsed["tls_client_cert"],
            tls_client_key=parsed["tls_client_key"],
            tls_verify=parsed["tls_verify"],
            name=parsed["name"],
            version=parsed["version"],
        )

    def new_inbox(self) -> str:
        """A subject no other client uses: ``_INBOX.<nuid>``."""
        return "_INBOX." + self._nuid.next_().decode()

    # pynats2 kept its socket here; code written against pynats2 (and our TLS tests) looks for it.
    _socket = property(lambda self: self.socket)
