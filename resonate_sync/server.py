"""``Server``: wires config → journal → core → NATS transport → ticker, and stops them in order.

Start: start an embedded nats-server if the configuration asks for one, connect to NATS, refuse
to start if another instance serves the subject (`resonate_sync.peers`), and only then open and
recover the journal (``store_path``: a start that fails for want of NATS
leaves nothing on disk), build the core, subscribe, start the ticker, log one line saying
where it serves. Stop (SIGINT/SIGTERM or :meth:`stop`): unsubscribe so no
new request is taken, serve the requests already taken for half of ``nats_timeout_ms`` and
answer the rest 503 (the transport answers any still queued at the deadline), stop the
ticker, wait for a background snapshot still being written, write a final snapshot, close the
journal, stop the embedded nats-server.

Requests: the transport hands each one to the api's :class:`~resonate_sync.api.RequestHandler`,
which answers it once what the reply shows is durable (``resonate_sync.api.replies``). Nothing
on the request path reads this class's attributes: each component is given what it needs when
:meth:`Server.start` builds it.

Reply size: at every connect the core's ``max_promise_bytes`` is set from the server's NATS
``max_payload``, so writes whose promise could not be returned are refused and search pages are
cut to fit; a reply still too large is answered with a 500 error (PROTOCOL.md 13.7).

Metrics: with a ``metrics_addr``, a Prometheus endpoint is served from before NATS is reached
(a port that cannot be bound fails the start at once) until the very end of the stop; see
``resonate_sync.metrics``. At debug level each answered request is logged in one line.

Snapshots every ``snapshot_every`` records are written on a thread of their own, one at a
time: the ticker only starts it, so task deliveries and timeouts go on while it writes.

Usable from an application thread as a context manager::

    with Server(Config(nats_addr=url)) as server:
        ...  # talk to it with any NATS client on server.config.nats_subject
"""

import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import urllib.parse
from functools import partial
from typing import TYPE_CHECKING, List, Optional

import attrs

from . import __version__
from .api import BUSY, INTERNAL_ERROR, MSGPACK, SHUTTING_DOWN, Observer, RequestHandler, error_reply, log_request, too_large_reply
from .config import Config, format_go_duration, identity_settings, jetstream_stream_name, split_host_port
from .core import Clock, CoreSettings, Resonate, State
from .core.resonate import freeze_heap
from .core.sizes import promise_limit
from .errors import ResonateError
from .peers import handover_warning, instance_metadata, refusal, serving
from .subjects import parse_patterns, subject_matches
from .urls import redact_url

if TYPE_CHECKING:  # imported when used: importing pynats2 is slow, and the core needs none of it
    from .events import EventPublisher
    from .journal import Journal
    from .store.jetstream import JetStreamStore
    from .metrics import Metrics, MetricsEndpoint
    from .ticker import Ticker
    from .transport import EmbeddedNatsServer, NatsTransport
    from .transport.micro import Service

__all__ = ["Server", "ServerError"]

log = logging.getLogger(__name__)

_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]", ""}


class ServerError(RuntimeError):
    """The server could not start (NATS unreachable or refused, journal unusable, …).

    ``exit_code`` is what :meth:`Server.run` returns for it: 2 when another instance already
    serves the subject (as for a configuration to change), else 1.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Server:
    """One resonate server.

    Args:
        config: what to serve and where.
        mode: ``"dev"`` or ``"serve"``; only changes the start-up line (defaults live in Config).
        clock: the core's clock (tests inject a fake one).

    Attributes (None until :meth:`start` built them): ``core``, ``journal`` (None without a
    ``store_path``), ``embedded`` (the embedded nats-server, if one was started), ``service``
    (the Services API identity and stats), ``transport``, ``ticker``, ``metrics`` and
    ``metrics_endpoint`` (None without a ``metrics_addr``; the endpoint's ``port`` is the one
    bound), ``events`` (the promise events publisher; None without an ``events_subject``).
    ``url`` is the NATS URL served (the embedded server's, when there is one).
    """

    def __init__(self, config: Config, *, mode: str = "serve", clock: Optional[Clock] = None) -> None:
        self.config = config
        self.mode = mode
        self._clock = clock
        self.core: Optional[Resonate] = None
        self.journal: Optional["Journal"] = None
        self.store: Optional["JetStreamStore"] = None
        self.embedded: Optional["EmbeddedNatsServer"] = None
        self.service: Optional["Service"] = None
        self.transport: Optional["NatsTransport"] = None
        self.ticker: Optional["Ticker"] = None
        self.metrics: Optional["Metrics"] = None
        self.metrics_endpoint: Optional["MetricsEndpoint"] = None
        self.events: Optional["EventPublisher"] = None
        self.url = config.nats_addr
        self._handler: Optional[RequestHandler] = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._snapshot_lock = threading.Lock()  # one snapshot written at a time
        self._background_lock = threading.Lock()  # guards the two below
        self._background: Optional[threading.Thread] = None
        self._background_closed = False
        self._stopping = False  # set once a stop began: a lease won from then on is not taken up
        self._store_closed = False
        self._jetstream_tmp: Optional[str] = None  # the embedded nats-server's JetStream directory, if temporary

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
        """Build and start each component, handing it the ones it uses; each is kept as soon as
        it exists, so that a failure further on stops what was started."""
        from .transport import NatsTransport
        from .transport.credentials import CredentialsError, NatsCredentials
        from .transport.micro import Service

        config = self.config
        stream = jetstream_stream_name(config) if config.store_kind == "jetstream" else ""
        if config.events_subject and subject_matches(f"{config.events_subject}.promises.>", config.nats_subject):
            raise ServerError(
                f"--events-subject {config.events_subject} would publish events on --api-nats-subject"
                f" {config.nats_subject}, where they would be read as requests: give one of them another subject"
            )
        try:  # before anything starts, an embedded nats-server included
            NatsCredentials(creds=config.nats_creds or None, nkey=config.nats_nkey or None).check()
        except CredentialsError as exc:
            raise ServerError(f"cannot use the NATS credentials of {identity_settings(config)}: {exc}") from None
        settings = CoreSettings(
            href_base=config.href_base,
            task_claim_timeout_ms=config.task_claim_timeout_ms,
            task_retry_timeout_ms=config.task_retry_timeout_ms,
            batch_size=config.batch_size,
            delivery_allow=parse_patterns(config.delivery_allow),
            reserved_subjects=(config.nats_subject,),
            poll_prefix=config.delivery_poll_prefix,
        )
        if config.metrics_addr:
            self._start_metrics(config.metrics_addr)
        metrics = self.metrics
        self.url = url = self._ensure_nats()
        # ADR-32 discovery: `nats micro ls/info/stats` find every server as service "resonate".
        self.service = service = Service(
            "resonate",
            __version__,
            config.nats_subject,
            queue_group=config.nats_queue,
            description="Resonate durable promises over NATS request-reply (resonate_sync)",
            endpoint="api",
            metadata=instance_metadata(config.store_path, stream, config.events_subject),
        )
        self.transport = transport = NatsTransport(
            url,
            config.nats_subject,
            workers=config.workers,
            max_pending=config.max_pending,
            busy_reply=BUSY,
            stop_reply=SHUTTING_DOWN,
            failure_reply=INTERNAL_ERROR,
            queue=config.nats_queue,
            name=f"resonate-{__version__}",
            service=service,
            too_large_reply=too_large_reply,
            content_types={MSGPACK.content_type: partial(error_reply, encoding=MSGPACK)},
            on_max_payload=self._on_max_payload,
            tls_cacert=config.nats_tls_ca,
            tls_client_cert=config.nats_tls_cert,
            tls_client_key=config.nats_tls_key,
            tls_verify=config.nats_tls_verify,
            user_credentials=config.nats_creds,
            nkeys_seed=config.nats_nkey,
        )
        # Before the store: a start that fails for want of NATS leaves no directory or LOCK behind.
        try:
            transport.connect()
        except Exception as exc:
            raise ServerError(_cannot_serve(url, exc)) from exc
        self._claim_subject(transport, url, stream)
        if stream:
            self._serve_replicated(settings, transport, service, stream)
            return
        self.core = core = self._open_core(settings)
        _fit_replies(core, transport.max_payload)  # announced at connect, before there was a core
        self._start_events(core, transport)
        self._handler = handler = RequestHandler(core, workers=config.workers, observe=self._observer())
        try:
            transport.start(handler)
        except Exception as exc:
            raise ServerError(_cannot_serve(url, exc)) from exc
        self._start_ticker()
        if metrics is not None:
            metrics.core, metrics.transport, metrics.events = core, transport, self.events
        store = config.store_path or "memory (nothing survives a restart)"
        log.info(
            "resonate_sync %s (%s) instance %s serving subject %r on %s%s; store: %s%s%s",
            __version__,
            self.mode,
            service.id,
            config.nats_subject,
            redact_url(url),
            " (embedded nats-server)" if self.embedded is not None else "",
            store,
            f", fsync {config.fsync}" if config.store_path else "",
            f"; promise events on {config.events_subject}.promises.>" if config.events_subject else "",
        )
        if self.metrics_endpoint is not None:
            log.info("metrics at %s", self.metrics_endpoint.url)

    def _start_events(self, core: Resonate, transport: "NatsTransport") -> None:
        """Publish promise events, if configured: before any request, so every change from the first one is announced."""
        if self.config.events_subject:
            from .events import EventPublisher

            self.events = EventPublisher(self.config.events_subject, transport.publish, core.wait_durable).start()
            core.on_promises = self.events.changed

    def _start_ticker(self) -> None:
        from .ticker import Ticker

        assert self.core is not None and self.transport is not None
        transport = self.transport
        self.ticker = Ticker(
            self.core, transport.publish, request_many=transport.request_many, tick_ms=self.config.tick_ms,
            after_pass=self._maybe_snapshot,
        )  # fmt: skip
        self.ticker.start()
        if self.metrics is not None:
            self.metrics.ticker = self.ticker

    # ------------------------------------------------------------------ the JetStream store

    def _serve_replicated(self, settings: CoreSettings, transport: "NatsTransport", service: "Service", stream: str) -> None:
        """Start as one replica of ``stream``: recover from it, stand by, and serve while leader.

        Every instance recovers the state from the stream (newest snapshot + later records) and
        starts its workers without subscribing to the subject. The store's role thread then tails
        the stream into the state and tries for the lease; when it wins, it catches up to the
        stream's last sequence and calls :meth:`_lead`, which subscribes and starts the ticker.
        A leader that loses the lease or is fenced calls :meth:`_stand_by`, which undoes that;
        the store then rebuilds the state from the stream (``reload``) and stands by again.
        """
        from .store.jetstream import JetStreamError, JetStreamStore
        from .journal import JournalError

        config = self.config
        conn = transport.connection
        assert conn is not None
        self.store = store = JetStreamStore(
            conn,
            stream=stream,
            replicas=config.store_jetstream_replicas,
            lease_ms=config.store_jetstream_lease_ms,
            instance=service.id,
            snapshot_every=config.snapshot_every,
        )
        started = time.monotonic()
        try:
            recovery = store.open()
            core = Resonate.recover(recovery.snapshot, recovery.records, clock=self._clock, settings=settings, journal=store)
        except (JetStreamError, JournalError) as exc:
            raise ServerError(f"cannot use JetStream stream {stream!r} on {redact_url(self.url)}: {exc}") from exc
        self.core = core
        core.on_unavailable = store.request_reload  # a change applied here that the stream refused
        self.journal = store  # type: ignore[assignment]  # the same journal interface; snapshots go through it
        _fit_replies(core, transport.max_payload)
        log.info("recovered %s from JetStream stream %s (up to sequence %d) in %.2f s",
                 _counts(core), stream, recovery.last_seq, time.monotonic() - started)  # fmt: skip
        service.live_metadata = lambda: {"role": store.role, "applied_seq": str(store.applied_seq)}
        self._start_events(core, transport)
        self._handler = handler = RequestHandler(core, workers=config.workers, observe=self._observer(), gate=store.may_serve)
        try:
            transport.start(handler, serve=False)
        except Exception as exc:
            raise ServerError(_cannot_serve(self.url, exc)) from exc
        if self.metrics is not None:
            self.metrics.core, self.metrics.transport, self.metrics.events = core, transport, self.events
            store.on_flush = self.metrics.observe_flush  # publish → PubAck, as the journal's write + fsync
        log.info(
            "resonate_sync %s (%s) instance %s standing by for subject %r on %s%s; store: JetStream stream %s"
            " (%d replica%s, lease %s), applied up to sequence %d",
            __version__, self.mode, service.id, config.nats_subject, redact_url(self.url),
            " (embedded nats-server)" if self.embedded is not None else "",
            stream, config.store_jetstream_replicas, "" if config.store_jetstream_replicas == 1 else "s",
            format_go_duration(config.store_jetstream_lease_ms), store.applied_seq,
        )  # fmt: skip
        store.start(
            apply=core.apply_replicated,
            reload=lambda recovery: core.reload(recovery.snapshot, recovery.records),
            on_leader=self._lead,
            on_standby=self._stand_by,
        )

    def _lead(self) -> None:
        """The store's role thread: this instance holds the lease and applied the whole stream."""
        assert self.store is not None and self.transport is not None
        if self._stopping:
            return
        self._start_ticker()
        try:
            self.transport.serve()
        except Exception as exc:  # a leader nobody can reach must not keep the lease: step down
            log.error("took the lease but cannot subscribe to %r: %s; stepping down", self.config.nats_subject, exc)
            raise
        log.info(
            "leader of subject %r (JetStream stream %s) from sequence %d: serving",
            self.config.nats_subject, self.store.status().get("stream"), self.store.applied_seq,
        )  # fmt: skip

    def _stand_by(self, reason: str) -> None:
        """The store's role thread: this instance is no leader any more (``reason`` says why)."""
        assert self.transport is not None
        self.transport.withdraw()
        ticker, self.ticker = self.ticker, None
        if ticker is not None:
            ticker.stop()
        log.warning(
            "stepped down as leader of subject %r: %s; answering 503 to requests already taken, rebuilding the"
            " state from the stream and standing by",
            self.config.nats_subject, reason,
        )  # fmt: skip

    def _start_metrics(self, addr: str) -> None:
        from .metrics import Metrics, MetricsEndpoint

        self.metrics = Metrics()
        host, port = split_host_port(addr)
        try:
            self.metrics_endpoint = MetricsEndpoint(self.metrics, host, port)
        except OSError as exc:
            raise ServerError(
                f"cannot serve metrics on {addr} (--metrics-addr): {exc.strerror or exc}; give --metrics-addr"
                " a free host:port, or \"\" for no metrics endpoint"
            ) from exc

    def _observer(self) -> Optional[Observer]:
        """What hears of each answered request: the metrics, the debug line, both or nothing."""
        observers = [observe for observe in (
            self.metrics.observe_request if self.metrics is not None else None,
            log_request if logging.getLogger("resonate_sync.requests").isEnabledFor(logging.DEBUG) else None,
        ) if observe is not None]  # fmt: skip
        if len(observers) < 2:
            return observers[0] if observers else None
        first, second = observers

        def both(operation: str, request_id: str, code: int, elapsed_ns: int) -> None:
            first(operation, request_id, code, elapsed_ns)
            second(operation, request_id, code, elapsed_ns)

        return both

    def _claim_subject(self, transport: "NatsTransport", url: str, stream: str) -> None:
        """Refuse to serve a subject another instance serves (one writer per subject), then answer
        discovery at once, before the store is opened: an instance starting meanwhile sees this one.

        Instances on the same JetStream ``stream`` are replicas of this one, not rivals: the
        store's lease and fenced appends keep them to one writer."""
        subject, queue, window_ms = self.config.nats_subject, self.config.nats_queue, self.config.peer_window_ms
        try:
            peers = serving(subject, transport.discover(window_ms / 1000)) if window_ms else []
        except Exception as exc:
            raise ServerError(_cannot_serve(url, exc)) from exc
        refused = refusal(subject, queue, redact_url(url), peers, stream)
        if refused:
            raise ServerError(refused, exit_code=2)
        warning = handover_warning(subject, queue, peers, stream)
        if warning:
            log.warning("%s", warning)
        transport.announce()

    def _on_max_payload(self, max_payload: int) -> None:
        if self.core is not None:
            _fit_replies(self.core, max_payload)

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
        if self.metrics is not None:
            journal.on_flush = self.metrics.observe_flush
        freeze_heap()
        log.info("recovered %s from %s in %.2f s", _counts(core), self.config.store_path, time.monotonic() - started)
        return core

    def _ensure_nats(self) -> str:
        """The URL to connect to, after starting an embedded nats-server if configured."""
        from .transport.embedded import EmbeddedNatsError, EmbeddedNatsServer, is_reachable

        mode, url = self.config.embedded_nats, self.config.nats_addr
        parsed = urllib.parse.urlsplit(url)
        if mode == "never":
            return url
        if mode == "auto":
            if parsed.hostname not in _LOOPBACK or is_reachable(url):
                return url
            log.info("no NATS server answers at %s: starting an embedded nats-server", redact_url(url))
        host = parsed.hostname or "127.0.0.1"
        if host == "localhost":
            host = "127.0.0.1"
        port = parsed.port or 4222
        failed = f"cannot start an embedded nats-server for {redact_url(url)}"
        try:
            self.embedded = EmbeddedNatsServer(host=host, port=port, extra_args=self._embedded_jetstream()).start()
        except EmbeddedNatsError as exc:
            log.debug("%s\n%s", exc.command, exc.output)
            hint = "" if log.isEnabledFor(logging.DEBUG) else "; run with --log-level debug for nats-server's log"
            if "address already in use" in str(exc):
                if is_reachable(url):
                    taken = "a NATS server already answers there: use it with --embedded-nats=never, stop it,"
                else:
                    taken = f"something else listens on {host}:{port}: stop it,"
                hint = f"; {taken} or give --api-nats-addr another port{hint}"
            raise ServerError(f"{failed}: {exc}{hint}") from exc
        except RuntimeError as exc:  # the nats-server binary is missing
            raise ServerError(f"{failed}: {exc}") from exc
        return self.embedded.url

    def _embedded_jetstream(self) -> List[str]:
        """The embedded nats-server's JetStream flags: none for the file store; for the JetStream
        store, ``-js`` with its data in ``<store-path>/jetstream``, or, with no store path (``resonate
        dev``), in a temporary directory removed when the server stops: nothing survives a restart."""
        if self.config.store_kind != "jetstream":
            return []
        if self.config.store_path:
            directory = os.path.join(self.config.store_path, "jetstream")
            os.makedirs(directory, exist_ok=True)
            log.info("the embedded nats-server keeps its JetStream data in %s", directory)
        else:
            directory = self._jetstream_tmp = tempfile.mkdtemp(prefix="resonate-jetstream-")
            log.info("the embedded nats-server keeps its JetStream data in %s, removed when it stops", directory)
        return ["-js", "-sd", directory]

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
            took = time.monotonic() - started
            if self.metrics is not None:
                self.metrics.observe_snapshot(took)
            log.info("snapshot written (%d promises) in %.2f s", count, took)

    def stop(self) -> None:
        """Graceful stop; idempotent and safe from any thread."""
        self._shutdown(drain=True)

    def _shutdown(self, drain: bool) -> None:
        with self._stop_lock:
            if self._stopped.is_set():
                return
            # Draining: the transport unsubscribes first, then the requests it already took
            # (running or queued) are served. Without a drain, queued ones get 503 "shutting down".
            timeout = self.config.nats_timeout_ms / 1000
            if self._handler is not None:
                # Serve what was taken for half the drain time, then answer the rest of the queue
                # 503 at once: a backlog that cannot finish in time must not end in silence.
                self._handler.refuse_after(time.monotonic() + timeout / 2)
                if not drain:
                    self._handler.refuse()
            self._stopping = True
            if self.transport is not None:
                # The JetStream store talks over the transport's connection: it is closed (final
                # snapshot, lease released) after the drain and before the connection closes.
                self.transport.stop(timeout if drain else 0, before_close=lambda: self._close_store(drain))
            self._close_store(drain)
            if self.embedded is not None:
                self.embedded.stop()
            if self._jetstream_tmp is not None:
                shutil.rmtree(self._jetstream_tmp, ignore_errors=True)
            if self.metrics_endpoint is not None:
                self.metrics_endpoint.stop()
            self._stopped.set()
            if drain:
                log.info("stopped")

    def _close_store(self, drain: bool) -> None:
        """Stop what changes the state, write the final snapshot (a leader's, for JetStream) and
        close the journal or store; idempotent."""
        if self._store_closed:
            return
        self._store_closed = True
        if self._handler is not None:
            self._handler.stop()
        if self.ticker is not None:
            self.ticker.stop()
        if self.events is not None:  # before the journal closes: events wait for it
            self.events.stop()
        # Before the final snapshot and the close: neither may overlap a snapshot being written.
        self._end_background_snapshots()
        if self.journal is None:
            return
        try:
            if drain and self.core is not None and (self.store is None or self.store.role == "leader"):
                self.snapshot()
        except Exception as exc:
            _snapshot_failed("final snapshot", exc)
        try:
            self.journal.close()
        except Exception as exc:  # still stop the rest, and release the directory lock
            log.error("closing the %s failed: %s", "JetStream store" if self.store is not None else "journal", exc)

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
            return exc.exit_code
        while not stop_requested.wait(0.5) and not self._stopped.is_set():
            pass
        self.stop()
        return 0

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _cannot_serve(url: str, exc: Exception) -> str:
    """Why the server cannot serve on ``url``, and how to get a NATS server when none answers there."""
    from .transport.embedded import is_reachable

    message = f"cannot serve on {redact_url(url)}: {exc}"
    if is_reachable(url):
        return message
    return (
        f"{message}; no NATS server answers there. Start one, point --api-nats-addr at a running one,"
        " or let resonate start one: `resonate dev` (for development) or `resonate serve --embedded-nats`"
    )


def _counts(core: Resonate) -> str:
    """``3 promises, 1 task, 0 schedules, 0 locks``: what a recovered state holds."""
    state = core.state
    counts = (("promise", state.promises), ("task", state.tasks), ("schedule", state.schedules), ("lock", state.locks))
    return ", ".join(f"{len(items)} {name}{'' if len(items) == 1 else 's'}" for name, items in counts)


def _fit_replies(core: Resonate, max_payload: int) -> None:
    """Hold ``core``'s promises to what one NATS message of the connected server can carry (13.7)."""
    core.settings = attrs.evolve(core.settings, max_promise_bytes=promise_limit(max_payload))
    log.debug("NATS max_payload %d: promises may take up to %d bytes of JSON", max_payload, promise_limit(max_payload))


def _snapshot_failed(what: str, exc: Exception) -> None:
    """Log a failed snapshot: nothing is lost (the segments stay); a traceback only for a bug."""
    from .journal import JournalError

    expected = isinstance(exc, (JournalError, ResonateError))
    log.error("%s failed: %s; the journal segments still hold every acknowledged change", what, exc, exc_info=not expected)
