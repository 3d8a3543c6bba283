"""``Server``: wires config → journal → core → NATS transport → ticker, and stops them in order.

Start: open and recover the journal (``store_path``), build the core, start an embedded
nats-server if the configuration asks for one, connect and subscribe, start the ticker, log
one line saying where it serves. Stop (SIGINT/SIGTERM or :meth:`stop`): unsubscribe so no
new request is taken, serve the requests already taken for half of ``nats_timeout_ms`` and
answer the rest 503 (the transport answers any still queued at the deadline), stop the
ticker, wait for a background snapshot still being written, write a final snapshot, close the
journal, stop the embedded nats-server.

Replies: a worker runs the handler and hands (journal ticket, reply) to one reply thread
(:class:`DurableReplies`), which waits for the fsync covering the newest ticket and sends every
reply it covers, so one fsync serves every request handled meanwhile, not one per worker.
Under light load a worker whose reply shows only durable state sends it itself.

Reply size: at every connect the core's ``max_promise_bytes`` is set from the server's NATS
``max_payload``, so writes whose promise could not be returned are refused and search pages are
cut to fit; a reply still too large is answered with a 500 error (PROTOCOL.md 13.7).

Snapshots every ``snapshot_every`` records are written on a thread of their own, one at a
time: the ticker only starts it, so task deliveries and timeouts go on while it writes.

Usable from an application thread as a context manager::

    with Server(Config(nats_addr=url)) as server:
        ...  # talk to it with any NATS client on server.config.nats_subject
"""

import logging
import signal
import threading
import time
import urllib.parse
from typing import Optional

import attrs

from . import __version__
from .api import (
    BUSY_REPLY,
    ERROR_REPLY_PREFIX,
    SHUTTING_DOWN_REPLY,
    STORE_ERROR_REPLY,
    handle_nowait,
    reply_error,
    too_large_reply,
)
from .config import Config
from .core import Clock, CoreSettings, Resonate, State
from .core.resonate import freeze_heap
from .core.sizes import promise_limit
from .errors import ResonateError

__all__ = ["Server", "ServerError"]

log = logging.getLogger(__name__)

_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]", ""}


class ServerError(RuntimeError):
    """The server could not start (NATS unreachable or refused, journal unusable, …)."""


class Server:
    """One resonate server.

    Args:
        config: what to serve and where.
        mode: ``"dev"`` or ``"serve"``; only changes the start-up line (defaults live in Config).
        clock: the core's clock (tests inject a fake one).
    """

    def __init__(self, config: Config, *, mode: str = "serve", clock: Optional[Clock] = None) -> None:
        self.config = config
        self.mode = mode
        self._clock = clock
        self.core: Optional[Resonate] = None
        self.journal = None
        self.transport = None
        self.service = None
        self.ticker = None
        self.embedded = None
        self.url = config.nats_addr
        self._stopping = False
        self._drain_until = 0.0
        self._replies: Optional["DurableReplies"] = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._snapshot_lock = threading.Lock()  # one snapshot written at a time
        self._background_lock = threading.Lock()  # guards the two below
        self._background: Optional[threading.Thread] = None
        self._background_closed = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "Server":
        """Start everything; raises :class:`ServerError` with a clear message on failure."""
        try:
            self._start()
        except BaseException:
            self._shutdown(drain=False)
            raise
        return self

    def _start(self) -> None:
        from .ticker import Ticker
        from .transport.micro import Service
        from .transport.nats import NatsTransport

        config = self.config
        settings = CoreSettings(
            href_base=config.href_base,
            task_claim_timeout_ms=config.task_claim_timeout_ms,
            task_retry_timeout_ms=config.task_retry_timeout_ms,
            batch_size=config.batch_size,
        )
        self.core = self._open_core(settings)
        self._replies = DurableReplies(self.core.wait_durable)
        self.url = self._ensure_nats()
        # ADR-32 discovery: `nats micro ls/info/stats` find every server as service "resonate".
        self.service = Service(
            "resonate",
            __version__,
            config.nats_subject,
            queue_group=config.nats_queue,
            description="Resonate durable promises over NATS request-reply (resonate_sync)",
            endpoint="api",
            error_prefix=ERROR_REPLY_PREFIX,
            describe_error=reply_error,
        )
        self.transport = NatsTransport(
            self.url,
            config.nats_subject,
            self._handle,
            workers=config.workers,
            max_pending=config.max_pending,
            busy_reply=BUSY_REPLY,
            stop_reply=SHUTTING_DOWN_REPLY,
            queue=config.nats_queue,
            name=f"resonate-{__version__}",
            service=self.service,
            too_large_reply=too_large_reply,
            on_max_payload=self._fit_replies,
            tls_cacert=config.nats_tls_ca,
            tls_client_cert=config.nats_tls_cert,
            tls_client_key=config.nats_tls_key,
            tls_verify=config.nats_tls_verify,
        )
        try:
            self.transport.start()
        except Exception as exc:
            raise ServerError(f"cannot serve on {_redact(self.url)}: {exc}") from exc
        self.ticker = Ticker(self.core, self.transport.publish, tick_ms=config.tick_ms, after_pass=self._maybe_snapshot)
        self.ticker.start()
        store = config.store_path or "memory (nothing survives a restart)"
        log.info(
            "resonate_sync %s (%s) serving subject %r on %s%s; store: %s%s",
            __version__,
            self.mode,
            config.nats_subject,
            _redact(self.url),
            " (embedded nats-server)" if self.embedded is not None else "",
            store,
            f", fsync {config.fsync}" if config.store_path else "",
        )

    def _open_core(self, settings: CoreSettings) -> Resonate:
        if not self.config.store_path:
            return Resonate(self._clock, settings=settings)
        from .journal import Journal, JournalError

        journal = Journal(self.config.store_path, fsync=self.config.fsync, snapshot_every=self.config.snapshot_every)
        started = time.monotonic()
        try:
            recovery = journal.open()
        except JournalError as exc:  # open() released the directory lock itself
            raise ServerError(str(exc)) from exc
        seq = recovery.snapshot_seq

        def counted(records):
            nonlocal seq
            for seq, record in enumerate(records, seq + 1):
                yield record

        try:
            core = Resonate.recover(recovery.snapshot, counted(recovery.records), clock=self._clock, settings=settings, journal=journal)
        except JournalError as exc:
            journal.close()
            raise ServerError(str(exc)) from exc
        except Exception as exc:  # it passed its checksum, yet is not a state this version can rebuild
            journal.close()
            what = f"journal record seq {seq}" if seq > recovery.snapshot_seq else f"snapshot {recovery.snapshot_seq}"
            raise ServerError(
                f"{self.config.store_path}: cannot rebuild the state from {what}: {type(exc).__name__}: {exc}"
            ) from exc
        except BaseException:
            journal.close()
            raise
        self.journal = journal  # recovery warnings were logged by the journal itself
        freeze_heap()
        log.info(
            "recovered %d promises, %d tasks, %d schedules, %d locks from %s in %.2f s",
            len(core.state.promises),
            len(core.state.tasks),
            len(core.state.schedules),
            len(core.state.locks),
            self.config.store_path,
            time.monotonic() - started,
        )
        return core

    def _ensure_nats(self) -> str:
        """The URL to connect to, after starting an embedded nats-server if configured."""
        from .transport.embedded import EmbeddedNatsServer, is_reachable

        mode, url = self.config.embedded_nats, self.config.nats_addr
        parsed = urllib.parse.urlsplit(url)
        if mode == "never":
            return url
        if mode == "auto":
            if parsed.hostname not in _LOOPBACK or is_reachable(url):
                return url
            log.info("no NATS server answers at %s: starting an embedded nats-server", _redact(url))
        host = parsed.hostname or "127.0.0.1"
        if host == "localhost":
            host = "127.0.0.1"
        try:
            self.embedded = EmbeddedNatsServer(host=host, port=parsed.port or 4222).start()
        except RuntimeError as exc:  # port taken by something that is not NATS, binary missing, ...
            raise ServerError(f"cannot start an embedded nats-server for {_redact(url)}: {exc}") from exc
        return self.embedded.url

    def _handle(self, raw: bytes):
        """The transport's handler: reply bytes now, or a DeferredReply sent once durable."""
        if self._stopping or (self._drain_until and time.monotonic() > self._drain_until):
            return SHUTTING_DOWN_REPLY
        reply, ticket = handle_nowait(self.core, raw, self.transport.max_payload)
        if self.transport.in_flight <= self.config.workers and self.core.is_durable(ticket):
            return reply  # light load, nothing to wait for (a read of durable state): no thread hop
        # Under load, one thread publishing every reply beats workers contending for the
        # connection's write lock (dev, N=64: 0.57x -> 0.87x of the bare responder).
        return self._replies.after_durable(ticket, reply)

    def _fit_replies(self, max_payload: int) -> None:
        """Hold promises to what one NATS message of the connected server can carry (13.7)."""
        self.core.settings = attrs.evolve(self.core.settings, max_promise_bytes=promise_limit(max_payload))
        log.debug("NATS max_payload %d: promises may take up to %d bytes of JSON", max_payload, promise_limit(max_payload))

    def _maybe_snapshot(self) -> None:
        """After each ticker pass: start a background snapshot when one is due and none is running."""
        if self.journal is None or not self.journal.should_snapshot():
            return
        with self._background_lock:
            if self._background_closed or (self._background is not None and self._background.is_alive()):
                return
            self._background = threading.Thread(target=self._background_snapshot, name="resonate-snapshot", daemon=True)
            self._background.start()

    def _background_snapshot(self) -> None:
        try:
            self.snapshot()
        except Exception as exc:
            _snapshot_failed("snapshot", exc)

    def _end_background_snapshots(self) -> None:
        """Start no more background snapshots, and wait for the one being written."""
        with self._background_lock:
            self._background_closed = True
            running = self._background
        if running is not None:
            running.join()

    def snapshot(self) -> None:
        """Write a snapshot of the whole state now and start a new journal segment.

        Waits for a background snapshot being written first. The core's lock is held only
        while the state is copied (shallow); the copy is streamed to disk object by object.
        """
        if self.journal is None:
            return
        with self._snapshot_lock:
            started = time.monotonic()
            ticket, copy = self.core.snapshot()
            count = len(copy["promises"])
            self.journal.write_snapshot(ticket, State.snapshot_entries(copy))
            del copy
            freeze_heap()  # what was stored since the last snapshot is long-lived too
            log.info("snapshot written (%d promises) in %.2f s", count, time.monotonic() - started)

    def stop(self) -> None:
        """Graceful stop; idempotent and safe from any thread."""
        self._shutdown(drain=True)

    def _shutdown(self, drain: bool) -> None:
        with self._stop_lock:
            if self._stopped.is_set():
                return
            # Draining: the transport unsubscribes first, then the requests it already took
            # (running or queued) are served. Without a drain, queued ones get 503 "shutting down".
            self._stopping = not drain
            timeout = self.config.nats_timeout_ms / 1000
            # Serve what was taken for half the drain time, then answer the rest of the queue
            # 503 at once: a backlog that cannot finish in time must not end in silence.
            self._drain_until = time.monotonic() + timeout / 2
            if self.transport is not None:
                self.transport.stop(timeout if drain else 0)
            self._stopping = True
            if self._replies is not None:
                self._replies.stop()
            if self.ticker is not None:
                self.ticker.stop()
            # Before the final snapshot and the close: neither may overlap a snapshot being written.
            self._end_background_snapshots()
            if self.journal is not None:
                try:
                    if drain and self.core is not None:
                        self.snapshot()
                except Exception as exc:
                    _snapshot_failed("final snapshot", exc)
                try:
                    self.journal.close()
                except Exception as exc:  # still stop the rest, and release the directory lock
                    log.error("closing the journal failed: %s", exc)
            if self.embedded is not None:
                self.embedded.stop()
            self._stopped.set()
            if drain:
                log.info("stopped")

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the server stopped; True if it did."""
        return self._stopped.wait(timeout)

    def run(self) -> int:
        """Start, serve until SIGINT or SIGTERM, stop gracefully; returns the exit code."""
        stop_requested = threading.Event()
        if threading.current_thread() is threading.main_thread():
            # Before start(): a signal that arrives while starting must stop us gracefully, not
            # kill us and leave the embedded nats-server we just launched running (orphaned).
            def on_signal(signum, _frame):
                log.info("received %s: stopping (draining for up to %d ms)", signal.Signals(signum).name, self.config.nats_timeout_ms)
                stop_requested.set()

            signal.signal(signal.SIGINT, on_signal)
            signal.signal(signal.SIGTERM, on_signal)
        try:
            self.start()
        except ServerError as exc:
            log.error("%s", exc)
            return 1
        while not stop_requested.wait(0.5) and not self._stopped.is_set():
            pass
        self.stop()
        return 0

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _snapshot_failed(what: str, exc: Exception) -> None:
    """Log a failed snapshot: nothing is lost (the segments stay); a traceback only for a bug."""
    from .journal import JournalError

    expected = isinstance(exc, (JournalError, ResonateError))
    log.error("%s failed: %s; the journal segments still hold every acknowledged change", what, exc, exc_info=not expected)


def _redact(url: str) -> str:
    """The URL without a password or token, for logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


class DurableReplies:
    """One thread that sends replies once the journal made what they show durable.

    Workers hand over (ticket, reply) and go back to decoding requests; this thread waits for
    the highest ticket handed over so far, which is one group-committed fsync covering all of
    them, then releases every reply it covers. With a worker waiting per request instead, one
    fsync covered at most ``workers`` requests (3.7 on average with 8, measured by bench/).
    If the journal cannot make a change durable, its reply becomes a 500 store error.
    """

    def __init__(self, wait_durable) -> None:
        from .transport.nats import DeferredReply

        self._deferred = DeferredReply
        self._wait_durable = wait_durable
        self._pending: list = []
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="resonate-replies", daemon=True)
        self._thread.start()

    def after_durable(self, ticket: int, reply: bytes):
        deferred = self._deferred()
        with self._cv:
            if self._stopped:
                raise RuntimeError("replies are no longer sent")
            self._pending.append((ticket, reply, deferred))
            self._cv.notify()
        return deferred

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._stopped:
                    self._cv.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
            try:
                self._wait_durable(max(ticket for ticket, _, _ in batch))
                durable = True
            except Exception:  # logged by the core, once
                durable = False
            for _, reply, deferred in batch:
                deferred.resolve(reply if durable else STORE_ERROR_REPLY)

    def stop(self, timeout: float = 10.0) -> None:
        """Send what is pending, then end the thread."""
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout)
