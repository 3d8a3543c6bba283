"""The NATS Services API (ADR-32, "micro"): discovery and statistics of one served endpoint.

A service answers ``$SRV.PING``, ``$SRV.INFO`` and ``$SRV.STATS``, each also as
``$SRV.<VERB>.<name>`` and ``$SRV.<VERB>.<name>.<id>``, with the JSON documents
``io.nats.micro.v1.ping_response``, ``…info_response`` and ``…stats_response``. Tools that
speak the Services API (``nats micro ls``, ``nats micro stats``, the ``micro`` packages of the
NATS clients) then find every running server, its version, its subject and its counters.

:class:`Service` knows the service's identity and its one endpoint, renders the three
documents, and counts the endpoint's requests. Counting is on the request path, so it takes
no lock: each worker thread adds into a cell of its own (see :class:`EndpointStats`) and a
STATS request sums the cells.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import uuid
from datetime import datetime, timezone
from typing import Callable, Dict, List, Mapping, Optional, Tuple

__all__ = [
    "API_PREFIX",
    "EndpointStats",
    "INFO_RESPONSE",
    "PING_RESPONSE",
    "STATS_RESPONSE",
    "Service",
    "VERBS",
]

API_PREFIX = "$SRV"
VERBS = ("PING", "INFO", "STATS")
PING_RESPONSE = "io.nats.micro.v1.ping_response"
INFO_RESPONSE = "io.nats.micro.v1.info_response"
STATS_RESPONSE = "io.nats.micro.v1.stats_response"

# ADR-32: names are [A-Za-z0-9_-]+, versions are SemVer (the regular expression semver.org suggests).
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


class _Cell:
    """One worker thread's counters; only that thread writes them."""

    __slots__ = ("requests", "errors", "processing_ns", "last_error", "last_error_seq")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.processing_ns = 0
        self.last_error = ""
        self.last_error_seq = 0


class EndpointStats:
    """Request, error and processing-time counters of one endpoint, safe to update from many threads.

    :meth:`record` takes no lock: every thread gets its own cell on its first call (the only
    time a lock is taken), and :meth:`snapshot` adds the cells up. Under the GIL each cell's
    fields are plain int/str stores, so a snapshot taken while workers run may miss a request
    that is being recorded at that instant, never invent or corrupt one.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._cells: List[_Cell] = []
        self._cells_lock = threading.Lock()
        self._seq = itertools.count(1)  # next() on a count is atomic under the GIL: orders last errors

    def _cell(self) -> _Cell:
        cell = _Cell()
        with self._cells_lock:
            self._cells.append(cell)
        self._local.cell = cell
        return cell

    def record(self, elapsed_ns: int, error: Optional[str] = None) -> None:
        """Count one request answered ``elapsed_ns`` after it was taken; ``error``
        (``"code:message"``) when its answer was an error."""
        try:
            cell = self._local.cell
        except AttributeError:
            cell = self._cell()
        cell.requests += 1
        cell.processing_ns += elapsed_ns
        if error is None:
            return
        cell.errors += 1
        cell.last_error = error
        cell.last_error_seq = next(self._seq)

    def snapshot(self) -> Dict[str, object]:
        """``num_requests``, ``num_errors``, ``last_error``, ``processing_time`` and
        ``average_processing_time`` (nanoseconds, truncated; 0 before the first request)."""
        with self._cells_lock:
            cells = list(self._cells)
        requests = errors = processing = 0
        last_error, last_seq = "", 0
        for cell in cells:
            requests += cell.requests
            errors += cell.errors
            processing += cell.processing_ns
            if cell.last_error_seq > last_seq:
                last_error, last_seq = cell.last_error, cell.last_error_seq
        return {
            "num_requests": requests,
            "num_errors": errors,
            "last_error": last_error,
            "processing_time": processing,
            "average_processing_time": processing // requests if requests else 0,
        }


def _dumps(document: Mapping[str, object]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


class Service:
    """One ADR-32 service instance with one endpoint, and what its discovery subjects answer.

    Args:
        name: the kind of service, shared by every instance (``[A-Za-z0-9_-]+``).
        version: SemVer of the software.
        subject: the endpoint's subject; ``queue_group`` its queue group ("" for none).
        description: one line for INFO.
        endpoint: the endpoint's name.
        metadata / endpoint_metadata: free-form string maps, fixed for the instance's life.
        live_metadata: None, or called for every PING/INFO/STATS answer for string entries
            that change while the instance runs (a replica's role and applied sequence); they
            are merged over ``metadata``.
        service_id: the instance's id; by default a fresh random one (uuid4 hex).
    """

    def __init__(
        self,
        name: str,
        version: str,
        subject: str,
        *,
        queue_group: str = "",
        description: str = "",
        endpoint: str = "default",
        metadata: Optional[Mapping[str, str]] = None,
        endpoint_metadata: Optional[Mapping[str, str]] = None,
        service_id: Optional[str] = None,
        live_metadata: Optional[Callable[[], Mapping[str, str]]] = None,
    ) -> None:
        for what, value in (("service name", name), ("endpoint name", endpoint)):
            if not _NAME.match(value):
                raise ValueError(f"invalid {what} {value!r}: use letters, digits, '-' and '_' only")
        if not _SEMVER.match(version):
            raise ValueError(f"invalid service version {version!r}: must be SemVer (e.g. 1.2.3)")
        self.name = name
        self.version = version
        self.id = service_id or uuid.uuid4().hex
        self.description = description
        self.subject = subject
        self.queue_group = queue_group
        self.endpoint = endpoint
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.endpoint_metadata: Dict[str, str] = dict(endpoint_metadata or {})
        self.stats = EndpointStats()
        # Count one answered request: ``record(elapsed_ns, error)`` (the bound method itself,
        # one call less on the request path).
        self.record: Callable[[int, Optional[str]], None] = self.stats.record
        self.started = datetime.now(timezone.utc)
        self.live_metadata = live_metadata
        self._ping = _dumps(self._identity(PING_RESPONSE))
        self._info = _dumps(self.info())

    # -- discovery -------------------------------------------------------------------------

    def subjects(self) -> List[Tuple[str, str]]:
        """Every discovery subject this instance answers, with its verb (9 of them)."""
        return [
            (subject, verb)
            for verb in VERBS
            for subject in (
                f"{API_PREFIX}.{verb}",
                f"{API_PREFIX}.{verb}.{self.name}",
                f"{API_PREFIX}.{verb}.{self.name}.{self.id}",
            )
        ]

    def respond(self, verb: str) -> bytes:
        """The JSON document answering ``verb`` (PING, INFO or STATS)."""
        if verb == "PING":
            return self._ping if self.live_metadata is None else _dumps(self._identity(PING_RESPONSE))
        if verb == "INFO":
            return self._info if self.live_metadata is None else _dumps(self.info())
        if verb == "STATS":
            return _dumps(self.stats_response())
        raise ValueError(f"unknown Services API verb {verb!r}")

    def _identity(self, kind: str) -> Dict[str, object]:
        return {
            "type": kind,
            "name": self.name,
            "id": self.id,
            "version": self.version,
            "metadata": {**self.metadata, **self.live_metadata()} if self.live_metadata else dict(self.metadata),
        }

    def _endpoint(self) -> Dict[str, object]:
        return {"name": self.endpoint, "subject": self.subject, "queue_group": self.queue_group}

    def info(self) -> Dict[str, object]:
        """The ``io.nats.micro.v1.info_response`` document."""
        document = self._identity(INFO_RESPONSE)
        document["description"] = self.description
        document["endpoints"] = [{**self._endpoint(), "metadata": dict(self.endpoint_metadata)}]
        return document

    def stats_response(self) -> Dict[str, object]:
        """The ``io.nats.micro.v1.stats_response`` document, counters as of now."""
        document = self._identity(STATS_RESPONSE)
        document["started"] = self.started.isoformat(timespec="microseconds").replace("+00:00", "Z")
        document["endpoints"] = [{**self._endpoint(), **self.stats.snapshot()}]
        return document
