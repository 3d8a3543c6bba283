"""A pynats2 connection repaired for a long-lived server (see ``NATS-NOTES.md``, defects 2-7).

:class:`Connection` subclasses ``pynats2.NATSClient`` and replaces the parts that break a
long-lived server: its own reader loop that notices EOF and errors, PING/PONG liveness
checks, ``-ERR`` handling, whole-frame publishes written without a socket timeout, payloads
read in full however slowly they arrive, and a thread-safe ``request``. It also speaks
headers (``HMSG``/``HPUB``) and no-responders.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections import deque
from itertools import count
from time import monotonic
from typing import Callable, Deque, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from resonate_sync.transport._pynats2 import ClientBase, Subscription
from resonate_sync.transport.credentials import CredentialsError, NatsCredentials
from resonate_sync.transport.errors import (
    AuthorizationError,
    ConnectionClosedError,
    NatsConnectionError,
    NoRespondersError,
    RequestTimeoutError,
)
from resonate_sync.transport.protocol import (
    DEFAULT_MAX_PAYLOAD,
    Err,
    HMsg,
    Info,
    Message,
    Msg,
    Ok,
    ParseError,
    Parser,
    Ping,
    Pong,
    check_subject,
    encode_connect,
    encode_headers,
    encode_hpub,
    encode_ping,
    encode_pong,
    encode_pub,
    encode_sub,
    encode_unsub,
)
from resonate_sync.urls import redact_url

__all__ = ["Connection", "Subscription"]

LOG = logging.getLogger(__name__)

_RECV_SIZE = 65536
_MAX_RECV = 1 << 20


class _Waiter:
    """A thread waiting for one answer (a PONG or a reply)."""

    __slots__ = ("event", "result", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: Optional[Msg] = None
        self.error: Optional[BaseException] = None


class _Epoch:
    """One TCP connection's life: its socket, parser, threads and liveness counters.

    A reconnect makes a new epoch; threads hold their own epoch, so a late error from an old
    socket can never tear down the new one.
    """

    __slots__ = ("sock", "parser", "lost", "reason", "stop", "pongs", "pings_outstanding", "last_err", "threads")

    def __init__(self, sock: socket.socket, parser: Parser) -> None:
        self.sock = sock
        self.parser = parser
        self.lost = False
        self.reason: Optional[str] = None
        self.stop = threading.Event()
        self.pongs: Deque[Optional[_Waiter]] = deque()
        self.pings_outstanding = 0
        self.last_err: Optional[str] = None
        self.threads: List[threading.Thread] = []


class _ServerClosed(Exception):
    pass


class Connection(ClientBase):
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

    NATS identities (see :mod:`~resonate_sync.transport.credentials`): ``user_credentials``, a
    ``.creds`` file (user JWT and NKey seed, for operator/JWT mode), or ``nkeys_seed``, a file
    holding an NKey user seed; not both. Both are read here (a missing or malformed file is a
    CredentialsError, a ValueError, naming it) and again at every connect, where they sign the
    server's nonce.
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
        user_credentials: Optional[str] = None,
        nkeys_seed: Optional[str] = None,
    ) -> None:
        super().__init__(
            url,
            name=name,
            connect_timeout=connect_timeout,
            tls_cacert=tls_cacert,
            tls_client_cert=tls_client_cert,
            tls_client_key=tls_client_key,
            tls_verify=tls_verify,
        )
        self.url = redact_url(url)
        self._ssl_context = self._tls_context() if self.options.tls else None
        self._credentials = NatsCredentials(creds=user_credentials or None, nkey=nkeys_seed or None)
        self._credentials.check()
        self._connect_timeout = connect_timeout
        self._ping_interval_s = ping_interval
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
        self._subscriptions: Dict[int, Subscription] = {}
        self._next_sid = 1
        self.server_info: Dict[str, object] = {}
        self.max_payload = DEFAULT_MAX_PAYLOAD
        self._announced_max_payload: Optional[int] = None
        self.last_disconnect_reason: Optional[str] = None
        self.last_server_error: Optional[str] = None
        self.server_errors = 0
        self._resp_lock = threading.Lock()
        self._resp_prefix: Optional[str] = None
        self._resp_map: Dict[str, _Waiter] = {}
        self._resp_ids = count(1)

    @property
    def socket(self) -> Optional[socket.socket]:
        """The socket of the current connection (None before the first connect)."""
        epoch = self._epoch
        return epoch.sock if epoch is not None else None

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
            sock, parser = self._handshake()
            epoch = _Epoch(sock, parser)
            with self._state_lock, self._wlock:
                if self._closed:
                    sock.close()
                    raise ConnectionClosedError(f"connection to {self.url} was closed")
                frames = [self._sub_frame(sub) for sub in list(self._subscriptions.values())]
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
                    target=target, args=(epoch,), name=f"nats-{role}-{self.options.name}", daemon=True
                )
                epoch.threads.append(thread)
                self._threads.append(thread)
                thread.start()

    def _handshake(self) -> Tuple[socket.socket, Parser]:
        opts = self.options
        deadline = monotonic() + self._connect_timeout
        try:
            sock = socket.create_connection((opts.host, opts.port), timeout=self._connect_timeout)
        except OSError as exc:
            raise NatsConnectionError(f"cannot connect to {self.url}: {exc}") from None
        parser = Parser()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                first = self._handshake_message(sock, parser, deadline)
            except ParseError as exc:
                raise NatsConnectionError(f"{self.url} is not a NATS server: {exc}") from None
            if type(first) is not Info:
                raise NatsConnectionError(f"{self.url} is not a NATS server: it sent {type(first).__name__.upper()}")
            self._update_info(first.info)
            if bool(self.server_info.get("tls_required")) != opts.tls:
                need = "TLS (use tls://)" if self.server_info.get("tls_required") else "plain TCP (use nats://)"
                raise NatsConnectionError(f"cannot connect to {self.url}: server requires {need}")
            if self._ssl_context is not None:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=opts.host)
            nonce = first.info.get("nonce")
            sock.sendall(encode_connect(self._connect_options(str(nonce or ""))) + encode_ping())
            while True:
                try:
                    message = self._handshake_message(sock, parser, deadline)
                except ParseError as exc:
                    raise NatsConnectionError(f"{self.url}: {exc} during connect") from None
                kind = type(message)
                if kind is Pong:
                    break
                if kind is Ping:
                    sock.sendall(encode_pong())
                elif kind is Err:
                    self._handshake_error(message.message)  # type: ignore[union-attr]
                elif kind is Info:
                    self._update_info(message.info)  # type: ignore[union-attr]
                elif kind is not Ok:
                    raise NatsConnectionError(f"{self.url}: unexpected {kind.__name__.upper()} during connect")
            sock.settimeout(None)  # blocking from now on: a frame is written whole or the socket dies
            return sock, parser
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
        opts = self.options
        ca, cert, key = opts.tls_cacert, opts.tls_client_cert, opts.tls_client_key
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
        if not opts.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    @staticmethod
    def _handshake_message(sock: socket.socket, parser: Parser, deadline: float) -> Message:
        while True:
            message = parser.next()
            if message is not None:
                return message
            remaining = deadline - monotonic()
            if remaining <= 0:
                raise socket.timeout
            sock.settimeout(remaining)
            data = sock.recv(_RECV_SIZE)
            if not data:
                raise _ServerClosed
            parser.feed(data)

    def _handshake_error(self, message: str) -> None:
        text = self._server_error(message)
        lowered = text.lower()
        if "authoriz" in lowered or "authentica" in lowered:
            which = self._credentials.describe()
            raise AuthorizationError(
                f"cannot connect to {self.url}: server refused the credentials{f' ({which})' if which else ''}: {text}"
            )
        raise NatsConnectionError(f"cannot connect to {self.url}: server error: {text}")

    def _connect_options(self, nonce: str) -> Dict[str, object]:
        opts = self.options
        headers = bool(self.server_info.get("headers"))
        options: Dict[str, object] = {
            "verbose": False,
            "pedantic": False,
            "tls_required": opts.tls,
            "name": opts.name,
            "lang": "python",
            "version": opts.version,
            "protocol": 1,
            "headers": headers,
            "no_responders": headers,
        }
        if opts.username and opts.password:
            options["user"] = opts.username
            options["pass"] = opts.password
        elif opts.username:
            options["auth_token"] = opts.username
        if self._credentials:
            try:
                options.update(self._credentials.connect_fields(nonce))
            except CredentialsError as exc:  # changed since start-up: a reconnect fails, and is retried
                raise NatsConnectionError(f"cannot connect to {self.url}: {exc}") from None
        return options

    def _update_info(self, info: Dict[str, object]) -> None:
        self.server_info.update(info)
        self.max_payload = int(self.server_info.get("max_payload", DEFAULT_MAX_PAYLOAD))  # type: ignore[arg-type]
        if self.max_payload != self._announced_max_payload:
            previous, self._announced_max_payload = self._announced_max_payload, self.max_payload
            if self._on_max_payload is not None:
                try:
                    self._on_max_payload(previous, self.max_payload)
                except Exception:
                    self._log.exception("on_max_payload callback failed")
        if info.get("ldm"):
            self._log.info("%s is entering lame duck mode (it will shut down soon)", self.url)

    def _server_error(self, message: str) -> str:
        self.last_server_error = message
        self.server_errors += 1
        return message

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
        sock, parser, subs, log = epoch.sock, epoch.parser, self._subscriptions, self._log
        recv, feed, parse = sock.recv, parser.feed, parser.next
        reason: Optional[str] = "reader stopped"
        try:
            while True:
                message = parse()
                if message is None:
                    data = recv(min(max(_RECV_SIZE, parser.missing), _MAX_RECV))
                    if not data:
                        raise _ServerClosed
                    feed(data)
                    continue
                kind = type(message)
                if kind is Msg or kind is HMsg:
                    sid = message.sid  # type: ignore[union-attr]
                    sub = subs.get(sid)
                    if sub is None:
                        continue  # unsubscribed while the message was on its way
                    try:
                        sub.callback(message)
                    except Exception:
                        log.exception("subscription callback failed for %s", message.subject)  # type: ignore[union-attr]
                    if sub.max_messages is not None:
                        sub.received_messages += 1
                        if sub.received_messages >= sub.max_messages:
                            subs.pop(sid, None)
                elif kind is Ping:
                    self._write(epoch, encode_pong())
                elif kind is Pong:
                    epoch.pings_outstanding = 0
                    if epoch.pongs:
                        waiter = epoch.pongs.popleft()
                        if waiter is not None:
                            waiter.event.set()
                elif kind is Err:
                    epoch.last_err = self._server_error(message.message)  # type: ignore[union-attr]
                    log.warning("%s: server error: %s", self.url, epoch.last_err)
                elif kind is Info:
                    self._update_info(message.info)  # type: ignore[union-attr]
        except _ServerClosed:
            reason = "server closed the connection"
            if epoch.last_err:
                reason += f" after -ERR '{epoch.last_err}'"
        except ParseError as exc:
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

    def _ping_loop(self, epoch: _Epoch) -> None:
        """Send a PING every ``ping_interval``; declare the server dead when PONGs stop coming."""
        interval = self._ping_interval_s
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
                epoch.sock.sendall(encode_ping())
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
        self._send_frame(self._pub_frame(subject, payload, reply, headers))

    def publish_many(self, messages: Iterable[Tuple[str, bytes, str, Optional[Mapping[str, str]]]]) -> None:
        """Publish (subject, payload, reply, headers) messages in order, in one socket write.

        Cheaper than one :meth:`publish` per message when many are ready at once (a writer
        draining its queue). Every message is checked as :meth:`publish` checks it before any
        byte is written: one bad message and none is sent.
        """
        frames = [self._pub_frame(subject, payload, reply, headers) for subject, payload, reply, headers in messages]
        if frames:
            self._send_frame(b"".join(frames))

    def _pub_frame(self, subject: str, payload: bytes, reply: str, headers: Optional[Mapping[str, str]]) -> bytes:
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        if headers:
            if not self.server_info.get("headers", True):
                raise ValueError(f"{self.url} does not support headers")
            head = encode_headers(headers)
            self._check_size(len(head) + len(payload), subject)
            return encode_hpub(subject, head, payload, reply)
        self._check_size(len(payload), subject)
        return encode_pub(subject, payload, reply)

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
        self._send_frame(encode_ping(), waiter)
        if not waiter.event.wait(timeout):
            raise TimeoutError(f"{self.url}: no PONG within {timeout:g} s")
        if waiter.error is not None:
            raise waiter.error

    def ping(self) -> None:
        """Send a PING without waiting (pynats2 API); prefer :meth:`flush`."""
        self._send_frame(encode_ping(), _Waiter())

    # -- subscribing -----------------------------------------------------------------------

    @staticmethod
    def _sub_frame(sub: Subscription) -> bytes:
        frame = encode_sub(sub.subject, sub.sid, sub.queue)
        if sub.max_messages is not None:
            frame += encode_unsub(sub.sid, sub.max_messages - sub.received_messages)
        return frame

    def subscribe(  # type: ignore[override]
        self,
        subject: str,
        *,
        callback: Callable[[Msg], None],
        queue: str = "",
        max_messages: Optional[int] = None,
    ) -> Subscription:
        """Subscribe (in queue group ``queue`` if given); ``callback(msg)`` runs on the reader thread.

        Allowed before :meth:`connect` and while disconnected: the subscription is sent when the
        connection is (re)established. Use :meth:`flush` to know the server has registered it.
        """
        check_subject(subject)
        if queue:
            check_subject(queue, "queue group")
        with self._wlock:
            sub = Subscription(
                sid=self._next_sid, subject=subject, queue=queue, callback=callback, max_messages=max_messages
            )
            self._next_sid += 1
            self._subscriptions[sub.sid] = sub
            epoch = self._epoch
            if self._connected and epoch is not None:
                try:
                    epoch.sock.sendall(self._sub_frame(sub))
                except OSError as exc:
                    self._log.debug("SUB %s not sent (%s); it is resent on reconnect", subject, exc)
        return sub

    def unsubscribe(self, sub: Subscription, *, flush_timeout: Optional[float] = None) -> None:
        """Stop a subscription.

        With ``flush_timeout``, messages the server sent before it processed the UNSUB are still
        delivered: the callback stays registered until the PONG that follows the UNSUB.
        """
        if sub.sid not in self._subscriptions:
            return
        try:
            if flush_timeout is not None:
                waiter = _Waiter()
                self._send_frame(encode_unsub(sub.sid) + encode_ping(), waiter)
                waiter.event.wait(flush_timeout)
            else:
                self._send_frame(encode_unsub(sub.sid))
        except ConnectionClosedError:
            pass  # not connected: forgetting it below means it is not resent on reconnect
        finally:
            self._subscriptions.pop(sub.sid, None)

    def auto_unsubscribe(self, sub: Subscription) -> None:
        """Tell the server to drop ``sub`` after ``sub.max_messages`` messages (pynats2 API)."""
        if sub.max_messages is not None:
            self._send_frame(encode_unsub(sub.sid, sub.max_messages))

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
        token, waiter = self._expect_reply()
        try:
            self.publish(subject, payload, self._resp_prefix + token, headers=headers)
            return self._reply(subject, waiter, timeout, timeout)
        finally:
            with self._resp_lock:
                self._resp_map.pop(token, None)

    def request_many(
        self, requests: Sequence[Tuple[str, bytes, Optional[Mapping[str, str]]]], *, timeout: float
    ) -> List[Union[Msg, Exception]]:
        """Send every ``(subject, payload, headers)`` request at once, then wait for their replies,
        all within one ``timeout`` s: the reply ``Msg`` of each, in order, or the exception
        :meth:`request` would have raised for it. Thread-safe."""
        pending: List[Tuple[str, _Waiter, Optional[Exception]]] = []
        try:
            for subject, payload, headers in requests:
                token, waiter = self._expect_reply()
                try:
                    self.publish(subject, payload, self._resp_prefix + token, headers=headers)
                    pending.append((token, waiter, None))
                except Exception as exc:
                    pending.append((token, waiter, exc))
            deadline = monotonic() + timeout
            results: List[Union[Msg, Exception]] = []
            for (subject, _, _), (_, waiter, failed) in zip(requests, pending):
                try:
                    if failed is not None:
                        raise failed
                    results.append(self._reply(subject, waiter, max(0.0, deadline - monotonic()), timeout))
                except Exception as exc:
                    results.append(exc)
            return results
        finally:
            with self._resp_lock:
                for token, _, _ in pending:
                    self._resp_map.pop(token, None)

    def _expect_reply(self) -> Tuple[str, _Waiter]:
        """A new reply token under the shared inbox (subscribed on first use), and its waiter."""
        with self._resp_lock:
            if self._resp_prefix is None:
                self._resp_prefix = self.new_inbox() + "."
                self.subscribe(self._resp_prefix + "*", callback=self._on_response)
            token = str(next(self._resp_ids))
            waiter = _Waiter()
            self._resp_map[token] = waiter
        return token, waiter

    @staticmethod
    def _reply(subject: str, waiter: _Waiter, wait: float, timeout: float) -> Msg:
        """The reply ``waiter`` gets within ``wait`` s (what is left of ``timeout``), or the error that says why there is none."""
        if not waiter.event.wait(wait):
            raise RequestTimeoutError(f"no reply on {subject!r} within {timeout:g} s")
        if waiter.error is not None:
            raise waiter.error
        msg = waiter.result
        assert msg is not None
        if msg.headers and msg.headers.get("Status") == "503" and not msg.payload:
            raise NoRespondersError(f"no responders on {subject!r}")
        return msg

    def gather(self, subject: str, payload: bytes = b"", *, timeout: float, quiet: float) -> List[bytes]:
        """The payload of every reply to one request on ``subject``, for requests many answer
        (discovery): waits up to ``timeout`` s for the first reply, then until ``quiet`` s pass
        without another; [] at once when NATS says nobody listens, or after ``timeout``.

        Raises ConnectionClosedError when not connected.
        """
        replies: List[bytes] = []
        nobody: List[bool] = []
        arrived = threading.Condition()

        def on_reply(msg: Msg) -> None:
            with arrived:
                if msg.headers and msg.headers.get("Status") == "503" and not msg.payload:
                    nobody.append(True)
                else:
                    replies.append(msg.payload)
                arrived.notify()

        sub = self.subscribe(self.new_inbox(), callback=on_reply)
        try:
            self.publish(subject, payload, sub.subject)
            deadline = monotonic() + timeout
            with arrived:
                seen = 0
                while True:
                    now = monotonic()
                    wait = deadline - now if not replies else min(quiet, deadline - now)
                    if wait <= 0 or not arrived.wait_for(lambda: len(replies) > seen or nobody, wait) or nobody:
                        break
                    seen = len(replies)
        finally:
            self.unsubscribe(sub)
        return list(replies)

    def _on_response(self, msg: Msg) -> None:
        prefix = self._resp_prefix or ""
        with self._resp_lock:
            waiter = self._resp_map.pop(msg.subject[len(prefix) :], None)
        if waiter is not None:
            waiter.result = msg
            waiter.event.set()

