"""Prometheus metrics of one server, served over HTTP at ``--metrics-addr`` (``/metrics``).

The server wires this module to the parts it watches; none of them imports it. Events are
observed where they happen: each answered request (``RequestHandler``'s observer), each group
commit (``Journal.on_flush``), each snapshot. Everything the parts count already is read at
scrape time instead: requests in flight, busy answers and reconnects from the transport's
stats, deliveries from the ticker, promises and tasks by state from the core's counts (kept as
records apply, so a scrape costs no scan of the state).

The request histogram is also the request count: ``resonate_request_duration_seconds_count``
by operation and status (no second counter on the request path).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, Dict, Iterator, Optional, Tuple

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from .core import Resonate
    from .events import EventPublisher
    from .ticker import Ticker
    from .transport import NatsTransport

__all__ = ["Metrics", "MetricsEndpoint"]

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_RECORD_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
_SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """The metrics of one server, in a registry of their own (several servers may share a process).

    Attributes: ``registry``; ``core``, ``transport``, ``ticker`` and ``events``, the parts read at
    scrape time (None until the server built them: their metrics are then left out).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.core: Optional["Resonate"] = None
        self.transport: Optional["NatsTransport"] = None
        self.ticker: Optional["Ticker"] = None
        self.events: Optional["EventPublisher"] = None
        registry = self.registry
        self._requests = Histogram(
            "resonate_request_duration_seconds",
            "Requests answered, by operation and status code (the reply's, HTTP-style), and the seconds"
            " from a worker taking each to its answer (fsync included).",
            ("operation", "status"), buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        for attribute, name, what, buckets in (
            ("_write", "resonate_journal_write_seconds", "Seconds each group commit spent writing its records.",
             _LATENCY_BUCKETS),
            ("_fsync", "resonate_journal_fsync_seconds", "Seconds each group commit spent in fsync (0 with --fsync never).",
             _LATENCY_BUCKETS),
            ("_records", "resonate_journal_records_per_fsync", "Records made durable by each group commit.",
             _RECORD_BUCKETS),
            ("_snapshot", "resonate_snapshot_duration_seconds",
             "Seconds each snapshot took to write (copy under the lock included).", _SNAPSHOT_BUCKETS),
        ):  # fmt: skip
            setattr(self, attribute, Histogram(name, what, buckets=buckets, registry=registry))
        self._children: Dict[Tuple[str, int], Callable[[float], None]] = {}
        self._children_lock = threading.Lock()
        registry.register(_Readings(self))
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)

    def observe_request(self, operation: str, _request_id: str, code: int, elapsed_ns: int) -> None:
        """Count one answered request (an ``api.Observer``)."""
        observe = self._children.get((operation, code))
        if observe is None:
            observe = self._child(operation, code)
        observe(elapsed_ns / 1e9)

    def _child(self, operation: str, code: int) -> Callable[[float], None]:
        # labels() costs a lock and a key build per call; each (operation, status) is looked up once.
        with self._children_lock:
            observe = self._children.get((operation, code))
            if observe is None:
                observe = self._children[(operation, code)] = self._requests.labels(operation, str(code)).observe
            return observe

    def observe_flush(self, write_seconds: float, fsync_seconds: float, records: int) -> None:
        """Count one group commit (``Journal.on_flush``)."""
        self._write.observe(write_seconds)
        self._fsync.observe(fsync_seconds)
        self._records.observe(records)

    def observe_snapshot(self, seconds: float) -> None:
        self._snapshot.observe(seconds)


class _Readings:
    """What the parts count already, read at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the families depend on what is built; nothing to check at register()

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        transport, ticker, core = metrics.transport, metrics.ticker, metrics.core
        if transport is not None:
            stats = transport.stats
            yield GaugeMetricFamily(
                "resonate_requests_in_flight", "Requests taken and not yet answered.", value=stats["in_flight"]
            )
            yield CounterMetricFamily(
                "resonate_requests_busy", "Requests answered 503 at once: --max-pending were in flight.",
                value=stats["busy_rejections"],
            )  # fmt: skip
            yield CounterMetricFamily(
                "resonate_nats_reconnects", "Reconnections to NATS after a lost connection.", value=stats["reconnects"]
            )
        if ticker is not None:
            yield _by_result(
                "resonate_deliveries", "Task messages published (sent) or not (failed; retried later).",
                sent=ticker.sent, failed=ticker.failed,
            )  # fmt: skip
        events = metrics.events
        if events is not None:
            yield _by_result(
                "resonate_promise_events", "Promise events published, or dropped (at-most-once: NATS slow or away).",
                published=events.published, dropped=events.dropped,
            )  # fmt: skip
        if core is not None:
            promise_counts, task_counts = core.counts()
            for name, what, counts in (("resonate_promises", "Promises", promise_counts),
                                       ("resonate_tasks", "Tasks", task_counts)):  # fmt: skip
                family = GaugeMetricFamily(name, f"{what} by state.", labels=("state",))
                for state, count in counts.items():
                    family.add_metric((state,), count)
                yield family


def _by_result(name: str, what: str, **counts: int) -> CounterMetricFamily:
    """A counter family with one sample per ``result`` label value."""
    family = CounterMetricFamily(name, what, labels=("result",))
    for result, count in counts.items():
        family.add_metric((result,), count)
    return family


class MetricsEndpoint:
    """The HTTP server of ``metrics``' registry on ``host:port``; :meth:`stop` ends its thread.

    Raises OSError if it cannot listen there. ``port`` is the bound port (a free one for 0).
    """

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        server: "WSGIServer"
        server, self._thread = start_http_server(port, host, registry=metrics.registry)
        self._server = server
        self.host = host
        self.port: int = server.server_address[1]
        self._thread.name = "resonate-metrics"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
