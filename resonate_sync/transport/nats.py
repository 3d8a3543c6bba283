"""NATS request-reply transport: a repaired pynats2 connection and the server-side wrapper.

:class:`Connection` subclasses ``pynats2.NATSClient`` and replaces the parts that break a
long-lived server (see ``NATS-NOTES.md``, defects 2-7): its own reader loop that notices
EOF and errors, PING/PONG liveness checks, ``-ERR`` handling, whole-frame publishes written
without a socket timeout, payloads read in full however slowly they arrive, and a
thread-safe ``request``. It also speaks headers (``HMSG``/``HPUB``) and no-responders.

:class:`NatsTransport` serves one subject: the reader thread hands each request straight to
one ``ThreadPoolExecutor`` (no second hop), bounds the backlog with a busy reply, reconnects
and resubscribes forever with backoff, and drains gracefully on :meth:`NatsTransport.stop`.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import random
import re
import socket
import ssl
import sys
import threading
import types
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import count
from time import monotonic, perf_counter_ns
from typing import Callable, Deque, Dict, List, Mapping, Optional, Tuple
from urllib.parse import unquote, urlparse, urlunparse


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
from pynats2 import NATSConnectionError, NATSError, NATSRequestTimeoutError, NATSSubscription  # noqa: E402

from resonate_sync.transport.micro import Service  # noqa: E402

__all__ = [
    "AuthorizationError",
    "Connection",
    "DeferredReply",
    "ConnectionClosedError",
    "Msg",
    "NatsConnectionError",
    "NatsTransport",
    "NoRespondersError",
    "RequestTimeoutError",
    "TransportError",
    "redact_url",
]

LOG = logging.getLogger(__name__)

_CRLF = b"\r\n"
_RECV_SIZE = 65536
_MAX_RECV = 1 << 20
_PING = b"PING\r\n"
_PONG = b"PONG\r\n"
_BAD_SUBJECT = re.compile(r"\s")
_DEFAULT_MAX_PAYLOAD = 1024 * 1024


# -- errors -------------------------------------------------------------------------------


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


# -- messages -----------------------------------------------------------------------------


class Msg:
    """One received message: ``subject``, ``reply`` ("" if none), ``payload`` (bytes),
    ``headers`` (dict or None; a status line becomes ``Status``/``Description``), ``sid``.

    Attribute names match ``pynats2.NATSMessage`` so pynats2-style callbacks keep working;
    slotted because the reader builds one per message.
    """

    __slots__ = ("subject", "reply", "payload", "headers", "sid")

    def __init__(
        self, subject: str, reply: str, payload: bytes, headers: Optional[Dict[str, str]], sid: int
    ) -> None:
        self.subject = subject
        self.reply = reply
        self.payload = payload
        self.headers = headers
        self.sid = sid

    def __repr__(self) -> str:
        return f"Msg(subject={self.subject!r}, reply={self.reply!r}, payload={self.payload[:64]!r}, headers={self.headers!r})"


def _encode_headers(headers: Mapping[str, str]) -> bytes:
    lines = ["NATS/1.0"]
    for key, value in headers.items():
        key, value = str(key), str(value)
        if not key or ":" in key or _BAD_SUBJECT.search(key) or "\r" in value or "\n" in value:
            raise ValueError(f"invalid header {key!r}: {value!r}")
        lines.append(f"{key}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _decode_headers(raw: bytes) -> Dict[str, str]:
    lines = raw.decode("utf-8", "replace").split("\r\n")
    headers: Dict[str, str] = {}
    status = lines[0][len("NATS/1.0") :].strip()
    if status:
        code, _, description = status.partition(" ")
        headers["Status"] = code
        if description:
            headers["Description"] = description
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            key, value = key.strip(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def redact_url(url: str) -> str:
    """``url`` with any password or token replaced by ``***``, for logs and error messages."""
    parsed = urlparse(url)
    if not parsed.username:
        return url
    host = parsed.hostname or ""
    if parsed.port:
        host = f"{host}:{parsed.port}"
    auth = f"{parsed.username}:***" if parsed.password else "***"
    return urlunparse(parsed._replace(netloc=f"{auth}@{host}"))


def _check_subject(subject: str, what: str = "subject") -> bytes:
    if not subject or _BAD_SUBJECT.search(subject):
        raise ValueError(f"invalid NATS {what} {subject!r}: must be non-empty without whitespace")
    return subject.encode()


# -- connection ---------------------------------------------------------------------------


class _Waiter:
    """A thread waiting for one answer (a PONG or a reply)."""

    __slots__ = ("event", "result", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: Optional[Msg] = None
        self.error: Optional[BaseException] = None


class _Epoch:
    """One TCP connection's life: its socket, read buffer, threads and liveness counters.

    A reconnect makes a new epoch; threads hold their own epoch, so a late error from an old
    socket can never tear down the new one.
    """

    __slots__ = ("sock", "buf", "lost", "reason", "stop", "pongs", "pings_outstanding", "last_err", "threads")

    def __init__(self, sock: socket.socket, buf: bytearray) -> None:
        self.sock = sock
        self.buf = buf
        self.lost = False
        self.reason: Optional[str] = None
        self.stop = threading.Event()
        self.pongs: Deque[Optional[_Waiter]] = deque()
        self.pings_outstanding = 0
        self.last_err: Optional[str] = None
        self.threads: List[threading.Thread] = []


class _ServerClosed(Exception):
    pass


class _ProtocolError(Exception):
    pass


class Connection(pynats2.NATSClient):
    """A pynats2 client that survives a long life: reconnectable, liveness-checked, thread-safe.

    ``connect()`` fails (AuthorizationError) when the server refuses the credentials: after
    CONNECT it sends PING and waits for PONG or ``-ERR``. It may be called again after the
    connection was lost; every subscription is then sent again under its old sid.
    ``on_disconnect(reason)`` is called once per loss (never for :meth:`close`) from the thread
    that noticed it; reconnecting is the caller's job (see :class:`NatsTransport`).
    ``on_max_payload(previous, current)`` is called whenever a server's INFO announces a
    ``max_payload`` other than the last one seen (``previous`` is None the first time); at
    connect that is before any subscription is sent, so no request arrives before it.

    Subscription callbacks run on the reader thread and receive a :class:`Msg`; they must be
    quick (hand work to a pool). A callback that raises is logged and does not stop the reader.
    A server that stops answering is noticed after ``max_outstanding_pings`` unanswered PINGs
    sent ``ping_interval`` seconds apart.

    TLS (``tls://`` URLs): ``tls_cacert`` is the CA file that signed the server's certificate
    (else the system's CAs), ``tls_client_cert``/``tls_client_key`` the client certificate for
    servers that verify clients (a combined PEM may be given as the certificate alone), and
    ``tls_verify`` whether the server's certificate and host name are checked. Unlike plain
    pynats2, the CA and client certificate are used whether or not ``tls_verify`` is set, and
    unreadable files are a ValueError here, not a failure at connect time.
    """

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        name: str = "resonate",
        connect_timeout: float = 2.0,
        ping_interval: float = 2.0,
        max_outstanding_pings: int = 2,
        on_disconnect: Optional[Callable[[str], None]] = None,
        on_max_payload: Optional[Callable[[Optional[int], int], None]] = None,
        logger: Optional[logging.Logger] = None,
        tls_cacert: Optional[str] = None,
        tls_client_cert: Optional[str] = None,
        tls_client_key: Optional[str] = None,
        tls_verify: bool = False,
    ) -> None:
        super().__init__(
            url,
            name=name,
            tls_cacert=tls_cacert,
            tls_client_cert=tls_client_cert,
            tls_client_key=tls_client_key,
            tls_verify=tls_verify,
            socket_timeout=connect_timeout,
            ping_interval=ping_interval,
        )
        if self._vhost_name:
            raise ValueError(f"URL paths (pynats2 virtual hosts) are not supported: {redact_url(url)}")
        for key in ("username", "password"):
            if self._conn_options[key]:
                self._conn_options[key] = unquote(self._conn_options[key])
        self.url = redact_url(url)
        self._ssl_context = self._tls_context() if self._conn_options["tls"] else None
        self._connect_timeout = connect_timeout
        self._max_outstanding_pings = max_outstanding_pings
        self._on_disconnect = on_disconnect
        self._on_max_payload = on_max_payload
        self._log = logger or LOG
        self._wlock = threading.Lock()  # serialises writes: a frame is never interleaved
        self._state_lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._epoch: Optional[_Epoch] = None
        self._connected = False
        self._closed = False
        self._threads: List[threading.Thread] = []
        self._ssid = 1
        self.server_info: Dict[str, object] = {}
        self.max_payload = _DEFAULT_MAX_PAYLOAD
        self._announced_max_payload: Optional[int] = None
        self.last_disconnect_reason: Optional[str] = None
        self.last_server_error: Optional[str] = None
        self.server_errors = 0
        self._resp_lock = threading.Lock()
        self._resp_prefix: Optional[str] = None
        self._resp_map: Dict[str, _Waiter] = {}
        self._resp_ids = count(1)

    @property
    def connected(self) -> bool:
        """Whether the connection is up right now."""
        return self._connected

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the connection cannot be used again)."""
        return self._closed

    # -- connecting ------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect, authenticate (wait for PONG or ``-ERR``), resend every subscription.

        Raises AuthorizationError for refused credentials, NatsConnectionError (naming the URL)
        when the server is unreachable or silent for ``connect_timeout`` seconds, and
        ConnectionClosedError after :meth:`close`. A no-op when already connected.
        """
        with self._connect_lock:
            if self._closed:
                raise ConnectionClosedError(f"connection to {self.url} was closed")
            if self._connected:
                return
            sock, buf = self._handshake()
            epoch = _Epoch(sock, buf)
            with self._state_lock, self._wlock:
                if self._closed:
                    sock.close()
                    raise ConnectionClosedError(f"connection to {self.url} was closed")
                frames = [self._sub_frame(sub) for sub in list(self._subs.values())]
                try:
                    if frames:
                        sock.sendall(b"".join(frames))
                except OSError as exc:
                    sock.close()
                    raise NatsConnectionError(f"lost {self.url} while subscribing: {exc}") from None
                self._epoch = epoch
                self._connected = True
            self._threads = [t for t in self._threads if t.is_alive()]
            for target, role in ((self._read_loop, "reader"), (self._ping_loop, "pinger")):
                thread = threading.Thread(
                    target=target, args=(epoch,), name=f"nats-{role}-{self._conn_options['name']}", daemon=True
                )
                epoch.threads.append(thread)
                self._threads.append(thread)
                thread.start()

    def _handshake(self) -> Tuple[socket.socket, bytearray]:
        opts = self._conn_options
        host, port = opts["hostname"] or "127.0.0.1", opts["port"] or 4222
        deadline = monotonic() + self._connect_timeout
        try:
            sock = socket.create_connection((host, port), timeout=self._connect_timeout)
        except OSError as exc:
            raise NatsConnectionError(f"cannot connect to {self.url}: {exc}") from None
        buf = bytearray()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            line = self._handshake_line(sock, buf, deadline)
            if not line.startswith(b"INFO "):
                raise NatsConnectionError(f"{self.url} is not a NATS server: it sent {line[:80]!r}")
            self._update_info(line)
            if bool(self.server_info.get("tls_required")) != opts["tls"]:
                need = "TLS (use tls://)" if self.server_info.get("tls_required") else "plain TCP (use nats://)"
                raise NatsConnectionError(f"cannot connect to {self.url}: server requires {need}")
            if opts["tls"]:
                self._socket = sock
                self._connect_tls()
                sock = self._socket
            sock.sendall(b"CONNECT " + json.dumps(self._connect_options()).encode() + _CRLF + _PING)
            while True:
                line = self._handshake_line(sock, buf, deadline)
                if line == b"PONG":
                    break
                if line == b"PING":
                    sock.sendall(_PONG)
                elif line.startswith(b"-ERR"):
                    self._handshake_error(line)
                elif line.startswith(b"INFO "):
                    self._update_info(line)
                elif not line.startswith(b"+OK"):
                    raise NatsConnectionError(f"{self.url}: unexpected {line[:80]!r} during connect")
            sock.settimeout(None)  # blocking from now on: a frame is written whole or the socket dies
            return sock, buf
        except socket.timeout:
            sock.close()
            raise NatsConnectionError(
                f"cannot connect to {self.url}: no answer within {self._connect_timeout:g} s"
            ) from None
        except _ServerClosed:
            sock.close()
            raise NatsConnectionError(f"cannot connect to {self.url}: server closed the connection") from None
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise NatsConnectionError(
                f"cannot connect to {self.url}: the server's TLS certificate was not accepted: {exc.verify_message}"
                " (is the CA that signed it configured, and does it name this host?)"
            ) from None
        except ssl.SSLError as exc:
            sock.close()
            if "CERTIFICATE_REQUIRED" in str(exc.reason):
                raise NatsConnectionError(
                    f"cannot connect to {self.url}: the server requires a TLS client certificate (and its key)"
                ) from None
            raise NatsConnectionError(f"cannot connect to {self.url}: TLS failed: {exc}") from None
        except OSError as exc:
            sock.close()
            raise NatsConnectionError(f"cannot connect to {self.url}: {exc}") from None
        except BaseException:
            sock.close()
            raise

    def _tls_context(self) -> ssl.SSLContext:
        opts = self._conn_options
        ca, cert, key = opts["tls_cacert"], opts["tls_client_cert"], opts["tls_client_key"]
        context = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH)
        if ca:
            try:
                context.load_verify_locations(cafile=str(ca))
            except OSError as exc:  # ssl.SSLError is an OSError
                raise ValueError(f"cannot use TLS CA file {str(ca)!r} for {self.url}: {exc}") from None
        if key and not cert:
            raise ValueError(f"TLS client key {str(key)!r} given without its certificate for {self.url}")
        if cert:
            try:
                context.load_cert_chain(certfile=str(cert), keyfile=str(key) if key else None)
            except OSError as exc:
                raise ValueError(
                    f"cannot use TLS client certificate {str(cert)!r}"
                    + (f" with key {str(key)!r}" if key else "")
                    + f" for {self.url}: {exc}"
                ) from None
        if not opts["tls_verify"]:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect_tls(self) -> None:
        context = self._ssl_context or self._tls_context()
        self._socket = context.wrap_socket(self._socket, server_hostname=str(self._conn_options["hostname"]))

    @staticmethod
    def _handshake_line(sock: socket.socket, buf: bytearray, deadline: float) -> bytes:
        while True:
            end = buf.find(_CRLF)
            if end >= 0:
                line = bytes(buf[:end])
                del buf[: end + 2]
                return line
            remaining = deadline - monotonic()
            if remaining <= 0:
                raise socket.timeout
            sock.settimeout(remaining)
            data = sock.recv(_RECV_SIZE)
            if not data:
                raise _ServerClosed
            buf += data

    def _handshake_error(self, line: bytes) -> None:
        text = self._server_error(line)
        lowered = text.lower()
        if "authoriz" in lowered or "authentica" in lowered:
            raise AuthorizationError(f"cannot connect to {self.url}: server refused the credentials: {text}")
        raise NatsConnectionError(f"cannot connect to {self.url}: server error: {text}")

    def _connect_options(self) -> Dict[str, object]:
        opts = self._conn_options
        headers = bool(self.server_info.get("headers"))
        options: Dict[str, object] = {
            "verbose": False,
            "pedantic": False,
            "tls_required": opts["tls"],
            "name": opts["name"],
            "lang": "python",
            "version": opts["version"],
            "protocol": 1,
            "headers": headers,
            "no_responders": headers,
        }
        if opts["username"] and opts["password"]:
            options["user"] = opts["username"]
            options["pass"] = opts["password"]
        elif opts["username"]:
            options["auth_token"] = opts["username"]
        return options

    def _update_info(self, line: bytes) -> None:
        try:
            info = json.loads(line[5:])
        except ValueError:
            raise NatsConnectionError(f"{self.url}: unreadable INFO {line[:80]!r}") from None
        self.server_info.update(info)
        self.max_payload = int(self.server_info.get("max_payload", _DEFAULT_MAX_PAYLOAD))  # type: ignore[arg-type]
        if self.max_payload != self._announced_max_payload:
            previous, self._announced_max_payload = self._announced_max_payload, self.max_payload
            if self._on_max_payload is not None:
                self._on_max_payload(previous, self.max_payload)
        if info.get("ldm"):
            self._log.info("%s is entering lame duck mode (it will shut down soon)", self.url)

    def _server_error(self, line: bytes) -> str:
        text = line[4:].strip().decode("utf-8", "replace").strip("'")
        self.last_server_error = text
        self.server_errors += 1
        return text

    def reconnect(self) -> None:
        """Drop the current connection (if any) and connect again."""
        epoch = self._epoch
        if epoch is not None:
            self._connection_lost(epoch, "reconnect requested", notify=False)
        self.connect()

    # -- losing and closing ----------------------------------------------------------------

    def _connection_lost(self, epoch: _Epoch, reason: Optional[str], notify: bool = True) -> None:
        """Mark ``epoch`` dead (once), wake every thread blocked on its socket, fail waiters."""
        with self._state_lock:
            if epoch.lost:
                return
            epoch.lost = True
            epoch.reason = reason
            if self._epoch is epoch:
                self._connected = False
                self.last_disconnect_reason = reason
        try:
            # Wakes the reader's recv and any blocked sendall. socket.socket's own shutdown even
            # for TLS: SSLSocket.shutdown would drop its SSL object under the reader's feet.
            socket.socket.shutdown(epoch.sock, socket.SHUT_RDWR)
        except OSError:
            pass
        epoch.stop.set()
        error = ConnectionClosedError(f"connection to {self.url} lost: {reason or 'closed'}")
        while epoch.pongs:
            waiter = epoch.pongs.popleft()
            if waiter is not None:
                waiter.error = error
                waiter.event.set()
        with self._resp_lock:
            waiters = list(self._resp_map.values())
        for waiter in waiters:
            waiter.error = error
            waiter.event.set()
        if notify and reason is not None and not self._closed and self._on_disconnect is not None:
            try:
                self._on_disconnect(reason)
            except Exception:
                self._log.exception("on_disconnect callback failed")

    def close(self) -> None:
        """Close for good: stop the reader and pinger threads and close the socket. Idempotent.

        Does not wait for anything in flight; use :meth:`flush` first for that.
        """
        with self._state_lock:
            self._closed = True
            epoch = self._epoch
        if epoch is not None:
            self._connection_lost(epoch, None)
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join(5.0)
                if thread.is_alive():
                    self._log.warning("thread %s did not stop (a subscription callback is blocked?)", thread.name)

    # -- threads ---------------------------------------------------------------------------

    def _read_loop(self, epoch: _Epoch) -> None:
        """Parse the server's stream and dispatch messages until the connection dies."""
        sock, buf, subs, log = epoch.sock, epoch.buf, self._subs, self._log
        recv = sock.recv
        reason: Optional[str] = "reader stopped"
        try:
            while True:
                end = buf.find(_CRLF)
                while end < 0:
                    data = recv(_RECV_SIZE)
                    if not data:
                        raise _ServerClosed
                    scan_from = len(buf) - 1 if buf else 0
                    buf += data
                    end = buf.find(_CRLF, scan_from)
                line = bytes(buf[:end])
                del buf[: end + 2]
                op = line[:4]
                if op == b"MSG ":
                    args = line.split()
                    payload = self._take(buf, recv, int(args[-1]))
                    headers = None
                elif op == b"HMSG":
                    args = line.split()
                    header_size = int(args[-2])
                    raw = self._take(buf, recv, int(args[-1]))
                    headers = _decode_headers(raw[:header_size])
                    payload = raw[header_size:]
                    del args[-1]
                elif op == b"PING":
                    self._write(epoch, _PONG)
                    continue
                elif op == b"PONG":
                    epoch.pings_outstanding = 0
                    if epoch.pongs:
                        waiter = epoch.pongs.popleft()
                        if waiter is not None:
                            waiter.event.set()
                    continue
                elif op == b"-ERR":
                    epoch.last_err = self._server_error(line)
                    log.warning("%s: server error: %s", self.url, epoch.last_err)
                    continue
                elif op == b"INFO":
                    self._update_info(line)
                    continue
                elif line.startswith(b"+OK"):
                    continue
                else:
                    raise _ProtocolError(f"unexpected {line[:80]!r}")
                sid = int(args[2])
                sub = subs.get(sid)
                if sub is None:
                    continue  # unsubscribed while the message was on its way
                msg = Msg(args[1].decode(), args[3].decode() if len(args) == 5 else "", payload, headers, sid)
                try:
                    sub.callback(msg)
                except Exception:
                    log.exception("subscription callback failed for %s", msg.subject)
                if sub.max_messages is not None:
                    sub.received_messages += 1
                    if sub.received_messages >= sub.max_messages:
                        subs.pop(sid, None)
        except _ServerClosed:
            reason = "server closed the connection"
            if epoch.last_err:
                reason += f" after -ERR '{epoch.last_err}'"
        except _ProtocolError as exc:
            reason = f"protocol error: {exc}"
        except OSError as exc:
            reason = f"read failed: {exc}"
        except Exception as exc:  # a bug here must still end in a clean disconnect
            log.exception("reader for %s crashed", self.url)
            reason = f"reader crashed: {exc!r}"
        finally:
            if epoch.lost:
                reason = epoch.reason
            self._connection_lost(epoch, reason)
            with self._wlock:  # no writer is inside sendall on this socket once we hold the lock
                sock.close()

    @staticmethod
    def _take(buf: bytearray, recv: Callable[[int], bytes], size: int) -> bytes:
        """Remove and return ``size`` payload bytes plus CRLF, waiting however long they take."""
        need = size + 2
        while len(buf) < need:
            data = recv(min(max(_RECV_SIZE, need - len(buf)), _MAX_RECV))
            if not data:
                raise _ServerClosed
            buf += data
        if buf[size:need] != _CRLF:
            raise _ProtocolError(f"payload of {size} bytes not followed by CRLF")
        payload = bytes(buf[:size])
        del buf[:need]
        return payload

    def _ping_loop(self, epoch: _Epoch) -> None:
        """Send a PING every ``ping_interval``; declare the server dead when PONGs stop coming."""
        interval = self._ping_interval
        while not epoch.stop.wait(interval):
            if epoch.pings_outstanding >= self._max_outstanding_pings:
                self._connection_lost(
                    epoch,
                    f"no PONG to {epoch.pings_outstanding} PINGs sent {interval:g} s apart (server not responding)",
                )
                return
            epoch.pings_outstanding += 1
            # A writer stuck in sendall (server not reading) holds the lock; the ping still counts.
            if not self._wlock.acquire(timeout=interval):
                continue
            error = None
            try:
                if epoch.lost:
                    return
                epoch.pongs.append(None)
                epoch.sock.sendall(_PING)
            except OSError as exc:
                error = exc
            finally:
                self._wlock.release()
            if error is not None:
                self._connection_lost(epoch, f"write failed: {error}")
                return

    def _write(self, epoch: _Epoch, frame: bytes) -> None:
        """Write one whole frame on ``epoch``'s socket (reader-side replies such as PONG)."""
        with self._wlock:
            if epoch.lost:
                raise _ServerClosed
            epoch.sock.sendall(frame)

    def _send_frame(self, frame: bytes, waiter: Optional[_Waiter] = None) -> None:
        """Write ``frame`` whole on the current connection, or raise ConnectionClosedError.

        With ``waiter``, the frame must end in PING and the waiter is queued for its PONG.
        """
        with self._wlock:
            epoch = self._epoch
            if not self._connected or epoch is None:
                raise ConnectionClosedError(
                    f"not connected to {self.url}" + (f" ({self.last_disconnect_reason})" if self.last_disconnect_reason else "")
                )
            try:
                if waiter is not None:
                    epoch.pongs.append(waiter)
                epoch.sock.sendall(frame)
                return
            except OSError as exc:
                error = exc
        self._connection_lost(epoch, f"write failed: {error}")
        raise ConnectionClosedError(f"connection to {self.url} lost: {error}")

    # -- publishing ------------------------------------------------------------------------

    def publish(  # type: ignore[override]
        self,
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        *,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        """Publish ``payload`` (bytes only) to ``subject``; thread-safe, one whole frame per call.

        TypeError for a non-bytes payload and ValueError for one larger than the server's
        ``max_payload`` (or a bad subject) are raised before anything is written, and leave the
        connection usable. ConnectionClosedError when not connected.
        """
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        subj = _check_subject(subject)
        reply_part = b" " + _check_subject(reply, "reply subject") if reply else b""
        size = len(payload)
        if headers:
            if not self.server_info.get("headers", True):
                raise ValueError(f"{self.url} does not support headers")
            head = _encode_headers(headers)
            total = len(head) + size
            self._check_size(total, subject)
            frame = b"HPUB %s%s %d %d\r\n%s%s\r\n" % (subj, reply_part, len(head), total, head, payload)
        else:
            self._check_size(size, subject)
            frame = b"PUB %s%s %d\r\n%s\r\n" % (subj, reply_part, size, payload)
        self._send_frame(frame)

    def _check_size(self, size: int, subject: str) -> None:
        if size > self.max_payload:
            raise ValueError(
                f"message of {size} bytes for {subject!r} exceeds the server's max_payload of {self.max_payload} bytes"
            )

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until the server has processed everything written so far (PING → PONG).

        Raises TimeoutError if no PONG within ``timeout`` s, ConnectionClosedError if not connected.
        """
        waiter = _Waiter()
        self._send_frame(_PING, waiter)
        if not waiter.event.wait(timeout):
            raise TimeoutError(f"{self.url}: no PONG within {timeout:g} s")
        if waiter.error is not None:
            raise waiter.error

    def ping(self) -> None:
        """Send a PING without waiting (pynats2 API); prefer :meth:`flush`."""
        self._send_frame(_PING, _Waiter())

    # -- subscribing -----------------------------------------------------------------------

    @staticmethod
    def _sub_frame(sub: NATSSubscription) -> bytes:
        frame = b"SUB %s %s%d\r\n" % (sub.subject.encode(), sub.queue.encode() + b" " if sub.queue else b"", sub.sid)
        if sub.max_messages is not None:
            frame += b"UNSUB %d %d\r\n" % (sub.sid, sub.max_messages - sub.received_messages)
        return frame

    def subscribe(  # type: ignore[override]
        self,
        subject: str,
        *,
        callback: Callable[[Msg], None],
        queue: str = "",
        max_messages: Optional[int] = None,
    ) -> NATSSubscription:
        """Subscribe (in queue group ``queue`` if given); ``callback(msg)`` runs on the reader thread.

        Allowed before :meth:`connect` and while disconnected: the subscription is sent when the
        connection is (re)established. Use :meth:`flush` to know the server has registered it.
        """
        _check_subject(subject)
        if queue:
            _check_subject(queue, "queue group")
        with self._wlock:
            sub = NATSSubscription(
                sid=self._ssid, subject=subject, queue=queue, callback=callback, max_messages=max_messages
            )
            self._ssid += 1
            self._subs[sub.sid] = sub
            epoch = self._epoch
            if self._connected and epoch is not None:
                try:
                    epoch.sock.sendall(self._sub_frame(sub))
                except OSError as exc:
                    self._log.debug("SUB %s not sent (%s); it is resent on reconnect", subject, exc)
        return sub

    def unsubscribe(self, sub: NATSSubscription, *, flush_timeout: Optional[float] = None) -> None:
        """Stop a subscription.

        With ``flush_timeout``, messages the server sent before it processed the UNSUB are still
        delivered: the callback stays registered until the PONG that follows the UNSUB.
        """
        if sub.sid not in self._subs:
            return
        try:
            if flush_timeout is not None:
                waiter = _Waiter()
                self._send_frame(b"UNSUB %d\r\n" % sub.sid + _PING, waiter)
                waiter.event.wait(flush_timeout)
            else:
                self._send_frame(b"UNSUB %d\r\n" % sub.sid)
        except ConnectionClosedError:
            pass  # not connected: forgetting it below means it is not resent on reconnect
        finally:
            self._subs.pop(sub.sid, None)

    def auto_unsubscribe(self, sub: NATSSubscription) -> None:
        """Tell the server to drop ``sub`` after ``sub.max_messages`` messages (pynats2 API)."""
        if sub.max_messages is not None:
            self._send_frame(b"UNSUB %d %d\r\n" % (sub.sid, sub.max_messages))

    # -- requests --------------------------------------------------------------------------

    def request(  # type: ignore[override]
        self,
        subject: str,
        *,
        payload: bytes = b"",
        timeout: float = 5.0,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Msg:
        """Send a request and wait for its reply; thread-safe, any number at once.

        All requests share one wildcard inbox subscription, so a request is one PUB and one MSG.
        Raises RequestTimeoutError, NoRespondersError, ConnectionClosedError.
        """
        with self._resp_lock:
            if self._resp_prefix is None:
                self._resp_prefix = "_INBOX." + self._nuid.next_().decode() + "."
                self.subscribe(self._resp_prefix + "*", callback=self._on_response)
            token = str(next(self._resp_ids))
            waiter = _Waiter()
            self._resp_map[token] = waiter
        try:
            self.publish(subject, payload, self._resp_prefix + token, headers=headers)
            if not waiter.event.wait(timeout):
                raise RequestTimeoutError(f"no reply on {subject!r} within {timeout:g} s")
            if waiter.error is not None:
                raise waiter.error
            msg = waiter.result
            assert msg is not None
            if msg.headers and msg.headers.get("Status") == "503" and not msg.payload:
                raise NoRespondersError(f"no responders on {subject!r}")
            return msg
        finally:
            with self._resp_lock:
                self._resp_map.pop(token, None)

    def _on_response(self, msg: Msg) -> None:
        prefix = self._resp_prefix or ""
        with self._resp_lock:
            waiter = self._resp_map.pop(msg.subject[len(prefix) :], None)
        if waiter is not None:
            waiter.result = msg
            waiter.event.set()


# -- the server side ----------------------------------------------------------------------


class DeferredReply:
    """A reply the handler does not have yet: return one, then call :meth:`resolve` from any thread.

    The request stays in flight until then (it counts against ``max_pending`` and ``stop()``
    waits for it), but the worker thread is free: a server whose replies wait for an fsync
    hands them to one thread that covers many requests per fsync, instead of parking a worker
    on each.
    """

    __slots__ = ("_callback", "_value", "_lock")

    def __init__(self) -> None:
        self._callback: Optional[Callable[[bytes], None]] = None
        self._value: Optional[bytes] = None
        self._lock = threading.Lock()

    def resolve(self, reply: bytes) -> None:
        """Hand over the reply; the transport publishes it (once)."""
        with self._lock:
            self._value = reply
            callback = self._callback
        if callback is not None:
            callback(reply)

    def _then(self, callback: Callable[[bytes], None]) -> None:
        with self._lock:
            self._callback = callback
            value = self._value
        if value is not None:
            callback(value)


class NatsTransport:
    """Serve ``handler`` on ``subject``: each request's payload in, its returned bytes out.

    The reader thread submits each request straight to one ``ThreadPoolExecutor(workers)``;
    a worker calls ``handler(payload)`` and publishes the returned bytes to the request's
    reply subject (``None`` means no reply). At most ``max_pending`` requests are queued or
    running; beyond that the reader answers ``busy_reply`` at once instead of queueing, so a
    burst cannot grow memory without bound. On connection loss a supervisor thread reconnects
    with jittered exponential backoff (``reconnect_backoff`` = first delay, cap) forever until
    :meth:`stop`, resubscribing as it goes.

    With ``service`` (an ADR-32 :class:`~resonate_sync.transport.micro.Service`) it also
    answers the Services API discovery subjects (``$SRV.PING|INFO|STATS[.name[.id]]``) and
    counts every request, error and nanosecond of handler time into ``service.stats``.
    Error replies carry no ``Nats-Service-Error`` headers: the reply itself says it failed, the
    Go server sends none either, and they would cost every client a header parse.
    Discovery requests are answered on the reader thread itself: they are cheap, never queue
    behind API requests, never get the busy reply, and use plain subscriptions (every instance
    answers, which is what discovery needs) whatever ``queue`` the API subject uses.

    A reply larger than the server's ``max_payload`` is never published (NATS would drop the
    connection): the request is answered ``too_large_reply(size, max_payload)`` instead, with a
    warning. ``on_max_payload(max_payload)`` is called at connect, before any request is taken,
    and again whenever a reconnect finds a different ``max_payload`` (a smaller one is logged as
    a warning), so the handler can keep its replies under it.

    ``tls_*`` configure ``tls://`` connections (see :class:`Connection`); unlike pynats2,
    ``tls_verify`` defaults to True.
    """

    def __init__(
        self,
        url: str,
        subject: str,
        handler: Callable[[bytes], Optional[bytes]],
        *,
        workers: int = 8,
        max_pending: int = 1024,
        busy_reply: bytes,
        stop_reply: Optional[bytes] = None,
        queue: str = "",
        name: str = "resonate",
        reconnect_backoff: Tuple[float, float] = (0.1, 2.0),
        ping_interval: float = 2.0,
        max_outstanding_pings: int = 2,
        connect_timeout: float = 2.0,
        logger: Optional[logging.Logger] = None,
        service: Optional[Service] = None,
        too_large_reply: Optional[Callable[[int, int], bytes]] = None,
        on_max_payload: Optional[Callable[[int], None]] = None,
        tls_cacert: Optional[str] = None,
        tls_client_cert: Optional[str] = None,
        tls_client_key: Optional[str] = None,
        tls_verify: bool = True,
    ) -> None:
        if not isinstance(busy_reply, bytes) or not isinstance(stop_reply, (bytes, type(None))):
            raise TypeError("busy_reply and stop_reply must be bytes")
        if workers < 1 or max_pending < 1:
            raise ValueError("workers and max_pending must be at least 1")
        _check_subject(subject)
        self.url = redact_url(url)
        self.subject = subject
        self._raw_url = url
        self._handler = handler
        self._workers = workers
        self._max_pending = max_pending
        self._busy_reply = busy_reply
        self._stop_reply = stop_reply
        self._queue = queue
        self._name = name
        self._backoff = reconnect_backoff
        self._ping_interval = ping_interval
        self._max_outstanding_pings = max_outstanding_pings
        self._connect_timeout = connect_timeout
        self._tls = {
            "tls_cacert": tls_cacert or None,
            "tls_client_cert": tls_client_cert or None,
            "tls_client_key": tls_client_key or None,
            "tls_verify": tls_verify,
        }
        self._service = service
        self._too_large_reply = too_large_reply
        self._on_max_payload = on_max_payload
        self._log = logger or logging.getLogger("resonate_sync.transport")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        # Requests submitted to the executor and not yet picked up by a worker, by receive
        # number: at stop()'s deadline they are answered from there, even if every worker is stuck.
        self._queued: Dict[int, Msg] = {}
        self._received = 0
        self._replied = 0
        self._busy = 0
        self._handler_errors = 0
        self._reconnects = 0
        self._started = False
        self._stopping = False
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        self._conn: Optional[Connection] = None
        self._sub: Optional[NATSSubscription] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._supervisor: Optional[threading.Thread] = None

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up right now."""
        return self._conn is not None and self._conn.connected

    @property
    def max_payload(self) -> int:
        """The largest message the connected server takes (from its INFO; 1 MiB before connecting)."""
        conn = self._conn
        return conn.max_payload if conn is not None else _DEFAULT_MAX_PAYLOAD

    @property
    def stats(self) -> Dict[str, int]:
        """Counters since start: received, replied, busy_rejections, reconnects, handler_errors, in_flight."""
        with self._lock:
            return {
                "received": self._received,
                "replied": self._replied,
                "busy_rejections": self._busy,
                "reconnects": self._reconnects,
                "handler_errors": self._handler_errors,
                "in_flight": self._in_flight,
            }

    def start(self) -> "NatsTransport":
        """Connect, subscribe, and start serving; returns once the subscription is registered.

        Raises TransportError naming the URL if the server is unreachable, refuses the
        credentials, or refuses the subscription.
        """
        if self._started:
            raise RuntimeError("NatsTransport.start() called twice")
        self._started = True
        conn = Connection(
            self._raw_url,
            name=self._name,
            connect_timeout=self._connect_timeout,
            ping_interval=self._ping_interval,
            max_outstanding_pings=self._max_outstanding_pings,
            on_disconnect=self._on_disconnect,
            on_max_payload=self._max_payload_changed,
            logger=self._log,
            **self._tls,
        )
        self._sub = conn.subscribe(self.subject, callback=self._on_message, queue=self._queue)
        if self._service is not None:
            for subject, verb in self._service.subjects():
                conn.subscribe(subject, callback=partial(self._on_discovery, verb))
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix=f"{self._name}-worker")
        self._conn = conn  # before connect(): requests may arrive as soon as the SUB is sent
        try:
            conn.connect()
            conn.flush(self._connect_timeout)
            if conn.server_errors and "subscription" in (conn.last_server_error or "").lower():
                raise TransportError(
                    f"{self.url} refused the subscription to {self.subject!r}: {conn.last_server_error}"
                )
        except BaseException as exc:
            conn.close()
            self._executor.shutdown()
            self._conn = None
            if isinstance(exc, (NATSError, OSError, TimeoutError)):
                raise TransportError(str(exc)) from exc
            raise
        self._supervisor = threading.Thread(target=self._supervise, name=f"{self._name}-nats-supervisor", daemon=True)
        self._supervisor.start()
        self._log.info("serving %s on %s", self.subject, self.url)
        return self

    # -- message path ----------------------------------------------------------------------

    def _on_message(self, msg: Msg) -> None:
        """Reader thread: queue the request, or answer busy when the backlog is full."""
        with self._lock:
            self._received += 1
            busy = self._in_flight >= self._max_pending
            if busy:
                self._busy += 1
            else:
                self._in_flight += 1
                number = self._received
                self._queued[number] = msg
        if busy:
            if self._service is not None:
                self._service.record(0, self._busy_reply)
            if msg.reply:
                try:
                    self._conn.publish(msg.reply, self._busy_reply)  # type: ignore[union-attr]
                except NatsConnectionError:
                    pass
            return
        try:
            self._executor.submit(self._serve, number)  # type: ignore[union-attr]
        except RuntimeError:  # executor shut down: stop() gave up waiting
            with self._lock:
                taken = self._queued.pop(number, None)
            if taken is not None:
                self._done(0, 0)

    def _serve(self, number: int) -> None:
        """Worker thread: run the handler, publish its reply now or when a DeferredReply resolves."""
        started = perf_counter_ns()
        with self._lock:
            msg = self._queued.pop(number, None)
        if msg is None:
            return  # stop() answered it at its deadline
        try:
            reply = self._handler(msg.payload)
        except Exception as exc:
            self._log.exception("handler failed for a request on %s", msg.subject)
            if self._service is not None:
                self._service.stats.record(perf_counter_ns() - started, error=f"500:handler failed: {type(exc).__name__}")
            self._done(0, 1)
            return
        if isinstance(reply, DeferredReply):
            reply._then(lambda data: self._reply(msg, data, started))
        else:
            self._reply(msg, reply, started)

    def _reply(self, msg: Msg, reply: Optional[bytes], started: int) -> None:
        """Publish a handler's reply (from a worker, or whichever thread resolved it); the request is done."""
        replied = failed = 0
        try:
            if reply is not None and self._too_large_reply is not None:
                max_payload = self._conn.max_payload  # type: ignore[union-attr]
                if len(reply) > max_payload:
                    self._log.warning(
                        "the reply of %d bytes to a request on %s exceeds the NATS max_payload of %d bytes; "
                        "answering an error instead",
                        len(reply), msg.subject, max_payload,
                    )  # fmt: skip
                    reply = self._too_large_reply(len(reply), max_payload)
            if self._service is not None:
                self._service.record(perf_counter_ns() - started, reply)
            if reply is not None and msg.reply:
                try:
                    self._conn.publish(msg.reply, reply)  # type: ignore[union-attr]
                    replied = 1
                except ConnectionClosedError as exc:
                    self._log.debug("reply to %s lost: %s", msg.reply, exc)
        except Exception:
            failed = 1
            self._log.exception("reply to a request on %s failed", msg.subject)
        finally:
            self._done(replied, failed)

    def _on_discovery(self, verb: str, msg: Msg) -> None:
        """Reader thread: answer a Services API PING, INFO or STATS request at once."""
        if not msg.reply:
            return
        try:
            self._conn.publish(msg.reply, self._service.respond(verb))  # type: ignore[union-attr]
        except NatsConnectionError:
            pass

    def _done(self, replied: int, failed: int) -> None:
        with self._lock:
            self._in_flight -= 1
            self._replied += replied
            self._handler_errors += failed
            if self._stopping and self._in_flight == 0:
                self._idle.notify_all()

    @property
    def in_flight(self) -> int:
        """Requests taken and not yet answered (read without the lock: a hint, not an exact count)."""
        return self._in_flight

    def publish(self, subject: str, payload: bytes) -> None:
        """Publish ``payload`` to ``subject`` (thread-safe; used to deliver task messages).

        Raises TransportError if not connected right now (retry later), TypeError/ValueError
        for a bad payload.
        """
        conn = self._conn
        if conn is None:
            raise TransportError(f"transport for {self.url} is not started")
        try:
            conn.publish(subject, payload)
        except ConnectionClosedError as exc:
            raise TransportError(str(exc)) from exc

    # -- reconnecting ----------------------------------------------------------------------

    def _on_disconnect(self, reason: str) -> None:
        self._wake.set()

    def _max_payload_changed(self, previous: Optional[int], current: int) -> None:
        if previous is not None and current < previous:
            self._log.warning(
                "%s now takes messages of at most %d bytes (max_payload), down from %d: replies that no longer "
                "fit (promises stored under the larger limit) are answered with an error",
                self.url, current, previous,
            )  # fmt: skip
        if self._on_max_payload is not None:
            self._on_max_payload(current)

    def _delay(self, attempt: int) -> float:
        first, cap = self._backoff
        return min(cap, first * (2**attempt)) * random.uniform(0.5, 1.0)

    def _supervise(self) -> None:
        """Reconnect after every loss, with backoff, until stop(); log one line each way."""
        conn = self._conn
        assert conn is not None
        while True:
            self._wake.wait()
            if self._stop_event.is_set():
                return
            self._wake.clear()
            if conn.connected:
                continue
            lost_at = monotonic()
            self._log.info("lost connection to %s: %s; reconnecting", self.url, conn.last_disconnect_reason)
            attempt, warned_at = 0, lost_at
            while True:
                if self._stop_event.wait(self._delay(attempt)):
                    return
                try:
                    conn.connect()
                    break
                except ConnectionClosedError:
                    return
                except (NATSError, OSError) as exc:
                    attempt += 1
                    self._log.debug("reconnect attempt %d to %s failed: %s", attempt, self.url, exc)
                    if monotonic() - warned_at >= 30.0:
                        warned_at = monotonic()
                        self._log.warning("still disconnected from %s after %.0f s: %s", self.url, warned_at - lost_at, exc)
            with self._lock:
                self._reconnects += 1
            self._log.info("reconnected to %s after %.1f s", self.url, monotonic() - lost_at)

    # -- stopping --------------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop gracefully; returns True if every in-flight request finished in time. Idempotent.

        Unsubscribes first (requests the server already sent are still served), waits up to
        ``timeout`` s for in-flight handlers and flushes their replies, then closes the
        connection and joins the threads. Handlers still running after ``timeout`` are
        abandoned. Requests still queued then are answered ``stop_reply`` from this thread
        without running the handler (a few microseconds each, even if every worker is stuck),
        so that a backlog too long for ``timeout`` ends in replies a client can act on instead
        of silence; without a ``stop_reply`` they get no reply.
        """
        with self._lock:
            if self._stopping or self._conn is None:
                return True
            self._stopping = True
        deadline = monotonic() + timeout
        conn, executor = self._conn, self._executor
        assert executor is not None and self._sub is not None and self._supervisor is not None
        self._stop_event.set()
        self._wake.set()
        self._supervisor.join(max(0.0, deadline - monotonic()))
        conn.unsubscribe(self._sub, flush_timeout=max(0.0, deadline - monotonic()))
        if not conn.connected:
            self._log.warning(
                "connection to %s lost while stopping (%s): requests it had not delivered yet get no reply from this server",
                self.url, conn.last_disconnect_reason,
            )  # fmt: skip
        with self._lock:
            drained = self._idle.wait_for(lambda: self._in_flight == 0, max(0.0, deadline - monotonic()))
            left = self._in_flight
            unserved = list(self._queued.values())
            self._queued.clear()
        if not drained:
            for msg in unserved:
                self._reply(msg, self._stop_reply, perf_counter_ns())
            if unserved and self._stop_reply is not None:
                self._log.warning("drain deadline: answered %d queued requests without serving them", len(unserved))
        if conn.connected:
            try:  # past the deadline too: the replies just written must leave before the close
                conn.flush(max(0.25, deadline - monotonic()))
            except (NATSError, TimeoutError):
                pass
        conn.close()
        executor.shutdown(wait=drained, cancel_futures=True)
        self._supervisor.join(max(0.0, deadline - monotonic()))
        if drained:
            self._log.info("stopped serving %s on %s (%d requests received, %d replied)", self.subject, self.url, self._received, self._replied)
        else:
            self._log.warning(
                "stopped serving %s after %g s, abandoning %d requests still being handled", self.subject, timeout, left - len(unserved)
            )
        return drained

    def __enter__(self) -> "NatsTransport":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
