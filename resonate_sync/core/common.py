"""Small pieces every operation module shares: results, settings, validation, reserved tags."""

import json
import os
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, TypeVar

import attrs

from ..errors import BadRequest, Status
from ..models import INT64_MAX

T = TypeVar("T")

__all__ = ["Result", "take_page", "tags_match", "CoreSettings", "clamp_add", "require", "require_non_negative", "trace_head", "invoke_recv"]


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
        cursor_secret: key that signs search cursors.
        max_promise_bytes: the most bytes of JSON a promise may take in replies (see
            :mod:`.sizes`): larger creates and completions are a 400, and a search page holds at
            most twice this. 0 = no limit (the in-process core); a server sets it from the NATS
            ``max_payload`` with ``sizes.promise_limit``.
    """

    href_base: str = "http://localhost:8001"
    task_claim_timeout_ms: int = 60_000
    task_retry_timeout_ms: int = 15_000
    batch_size: int = 100
    cursor_secret: bytes = attrs.field(factory=lambda: os.urandom(32))
    max_promise_bytes: int = 0


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


def invoke_recv(tags: Mapping[str, str]) -> Any:
    """The receiver named by a ``resonate:invoke`` tag, or None when the tag does not match (2.9).

    A value that is valid JSON counts only as a physical receiver: an object with a non-empty
    ``type`` and no keys but ``type``/``data``. Any other valid JSON (``"\\"foo\\""``, ``123``)
    is no match. A string that is not JSON (``poll://any@default``) is a logical receiver.
    """
    value = tags.get("resonate:invoke")
    if value is None:
        return None
    try:
        decoded = json.loads(value, parse_constant=_not_json)
    except ValueError:
        return value
    if (
        isinstance(decoded, dict)
        and isinstance(decoded.get("type"), str)
        and decoded["type"]
        and set(decoded) <= {"type", "data"}
    ):
        return decoded
    return None


def _not_json(name: str) -> Any:
    """Python's json reads NaN/Infinity; JSON (and Go) does not, so such a tag is a logical recv."""
    raise ValueError(f"{name} is not JSON")


def tags_match(tags: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Every wanted pair is present with exactly that value (search filters, 8)."""
    return all(tags.get(k) == v for k, v in wanted.items())


def take_page(items: Iterable[T], keep: Callable[[T], Optional[T]], limit: int) -> List[T]:
    """The first ``limit`` items that ``keep`` maps to something other than None."""
    page: List[T] = []
    for item in items:
        kept = keep(item)
        if kept is not None:
            page.append(kept)
            if len(page) == limit:
                break
    return page
