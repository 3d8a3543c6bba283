"""Small pieces every operation module shares: results, settings, validation, reserved tags."""

import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar

import attrs

from ..errors import BadRequest, Status
from ..models import INT64_MAX

T = TypeVar("T")

__all__ = ["Result", "take_page", "tags_match", "CoreSettings", "clamp_add", "require", "require_non_negative", "trace_head"]


@attrs.frozen
class Result:
    """What an operation returns: the 5-digit status and the response payload model."""

    status: Status
    payload: Any


@attrs.frozen
class CoreSettings:
    """Settings the operations need.

    Attributes:
        href_base: base URL of hrefs in claim replies and task messages.
        task_claim_timeout_ms: how long a delivered (ENQUEUED) task waits to be claimed before
            it is redelivered; 0 = forever.
        task_retry_timeout_ms: delay before a failed delivery is retried.
        batch_size: how many items each background job handles per pass.
        search_scan_limit: the work one search request may do under the lock, in units of
            one stored id examined (plus one per literal piece between stars, six per id handed
            to the state/tag filters: ``state.scan_cost``). A page cut short by it carries a
            cursor to the rest (see :func:`take_page`). 50,000 units hold the lock for about
            10 ms on 2 cores; a search of a million promises that matches nothing takes 20 pages.
        cursor_secret: key that signs search cursors.
        max_promise_bytes: the most bytes of JSON a promise may take in replies (see
            :mod:`.sizes`): larger creates and completions are a 400, and a search page holds at
            most twice this. 0 = no limit (the in-process core); a server sets it from the NATS
            ``max_payload`` with ``sizes.promise_limit``.
        delivery_allow: NATS subject patterns receivers must match; empty allows any valid subject.
        reserved_subjects: subjects no receiver may name (the server's own request subject).
        poll_prefix: the subject prefix ``poll://`` receivers are delivered under (see
            :mod:`.receivers`).
    """

    href_base: str = "http://localhost:8001"
    task_claim_timeout_ms: int = 60_000
    task_retry_timeout_ms: int = 15_000
    batch_size: int = 100
    search_scan_limit: int = attrs.field(default=50_000, validator=attrs.validators.ge(1))
    cursor_secret: bytes = attrs.field(factory=lambda: os.urandom(32))
    max_promise_bytes: int = 0
    delivery_allow: Tuple[str, ...] = ()
    reserved_subjects: Tuple[str, ...] = ()
    poll_prefix: str = "resonate.recv"


def clamp_add(a: int, b: int) -> int:
    """``a + b`` clamped to the int64 maximum (PROTOCOL.md 10.3)."""
    total = a + b
    return INT64_MAX if total > INT64_MAX else total


def require(value: str, name: str) -> None:
    """400 unless the string field ``name`` is non-empty."""
    if not value:
        raise BadRequest(f"validation error: payload.{name} is required")


def require_non_negative(value: int, name: str) -> None:
    if value < 0:
        raise BadRequest(f"validation error: payload.{name} must be >= 0 (ms), got {value}")


def trace_head(metadata: Optional[Mapping[str, str]]) -> Dict[str, str]:
    """The message head for trace context: ``traceparent``, and ``tracestate`` only with it (1.6)."""
    if not metadata or "traceparent" not in metadata:
        return {}
    head = {"traceparent": metadata["traceparent"]}
    if "tracestate" in metadata:
        head["tracestate"] = metadata["tracestate"]
    return head


def tags_match(tags: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Every wanted pair is present with exactly that value (search filters, 8)."""
    return all(tags.get(k) == v for k, v in wanted.items())


def take_page(candidates: Any, keep: Callable[[T], Optional[T]], limit: int) -> Tuple[List[T], Optional[int]]:
    """The first ``limit`` candidates ``keep`` maps to something other than None, and where the next page starts.

    ``candidates`` is a ``state.Candidates``. The second value is the sort id the next page
    goes on below, or None when no page follows. A page follows a full page (PROTOCOL.md 8:
    the last page may then be empty), and also a page cut short because the scan spent its
    budget of work: then fewer than ``limit`` items (maybe none) come with a cursor. This
    departs from 8's "a cursor iff exactly limit items", in the direction a client expects:
    a cursor whenever more may follow, no cursor only when nothing does. It is what lets a
    search over a million promises hold the lock for one bounded slice at a time.
    """
    page: List[T] = []
    for item in candidates:
        kept = keep(item)
        if kept is not None:
            page.append(kept)
            if len(page) == limit:
                return page, kept.sort_id
    return page, candidates.resume
