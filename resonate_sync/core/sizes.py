"""How many bytes a promise or schedule takes in replies, so that every reply fits in one NATS message.

A reply is one NATS message of at most ``max_payload`` bytes (PROTOCOL.md 13.7). A tasks.claim
reply carries two promises (root and leaf), so each promise may take at most
:func:`promise_limit`: half of ``max_payload`` less :data:`ENVELOPE_BYTES` for the envelope,
the request's metadata, the task and the hrefs. A promise's id also comes back outside the
promise: a claim reply repeats a root id three more times (task id, ``rootPromiseId``, href)
and a task message five times (task id, three hrefs, ``rootPromiseId``), a leaf id two and
four times. So a promise counts as its JSON plus :data:`ID_COPIES` more copies of its escaped
id: with that, an id takes at most a fifth of the limit, and the worst message, a resume task's
(5 root ids + 4 leaf ids), stays under twice the limit. A search page and its cursor may take
twice the limit (:func:`fit_page`).

Sizes are of the compact ASCII JSON every reply is encoded as (``jsonenc.compact_encoder``).
Encoding to measure costs as much as the reply itself, so a check first adds up an upper bound
from string lengths, and encodes only when that bound is over the limit:

* an ASCII character escapes to at most 6 bytes (``\\u00XX`` for control characters and DEL;
  ``"`` and ``\\`` take 2);
* any other code point takes 6 bytes (``\\uXXXX``, lone surrogates included) or 12 (one above
  U+FFFF is written as a surrogate pair): at most 12 per Python character. A pair stored as two
  surrogate characters is two characters of 6 bytes each, within the same bound;
* base64 ``data`` needs no escaping: exactly its length.
"""

from json.encoder import encode_basestring_ascii
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar

import attrs

from ..errors import BadRequest
from ..jsonenc import compact_encoder
from ..models import INT64_MIN, Promise, PromiseState, Schedule, Value, unstructure
from .common import CoreSettings
from .cursor import cursor_body, cursor_length, encode_cursor

__all__ = [
    "ENVELOPE_BYTES",
    "ID_COPIES",
    "promise_limit",
    "text_bound",
    "promise_bound",
    "promise_bytes",
    "promise_json_bytes",
    "json_bytes",
    "check_promise",
    "check_schedule",
    "fit_page",
    "search_page",
]

T = TypeVar("T")

ENVELOPE_BYTES = 4096
"""Room left in every reply for what is not a promise: envelope, metadata, task, hrefs."""

ID_COPIES = 4
"""How many more times than in its own JSON a promise's id is counted (see the module docstring)."""

_encode = compact_encoder()


def promise_limit(max_payload: int) -> int:
    """``CoreSettings.max_promise_bytes`` for replies of at most ``max_payload`` bytes."""
    return max(0, (max_payload - ENVELOPE_BYTES) // 2)


def json_bytes(value: Any) -> int:
    """The exact size of ``value``'s reply JSON (a model is unstructured first)."""
    return len(_encode(unstructure(value)))


def text_bound(text: str) -> int:
    """An upper bound of ``text``'s escaped length in JSON, quotes excluded."""
    return 6 * len(text) if text.isascii() else 12 * len(text)


def _map_bound(strings: Mapping[str, str]) -> int:
    # each entry is "key":"value" and a comma: 6 bytes besides the two escaped texts
    return sum(text_bound(k) + text_bound(v) + 6 for k, v in strings.items())


# Every key present, the longest state, the widest integers, one empty entry per map.
_PROMISE_FIXED = len(
    _encode(
        unstructure(
            Promise(
                id="",
                state=PromiseState.REJECTED_CANCELED,
                param=Value({"": ""}, ""),
                value=Value({"": ""}, ""),
                timeout=INT64_MIN,
                idempotency_key_for_create="",
                idempotency_key_for_complete="",
                tags={"": ""},
                created_on=INT64_MIN,
                completed_on=INT64_MIN,
            )
        )
    )
)


def promise_bound(promise: Promise) -> int:
    """An upper bound of :func:`promise_bytes`, from string lengths only (no encoding).

    It runs for every create and every search result, so the common case (short ASCII id, no
    tags or keys, a value with data only) takes a few attribute reads.
    """
    bound = _PROMISE_FIXED + (1 + ID_COPIES) * text_bound(promise.id)
    if promise.tags:
        bound += _map_bound(promise.tags)
    if promise.idempotency_key_for_create:
        bound += text_bound(promise.idempotency_key_for_create)
    if promise.idempotency_key_for_complete:
        bound += text_bound(promise.idempotency_key_for_complete)
    param, value = promise.param, promise.value
    if param.headers:
        bound += _map_bound(param.headers)
    if value.headers:
        bound += _map_bound(value.headers)
    return bound + len(param.data or "") + len(value.data or "")


def promise_bytes(promise: Promise) -> int:
    """What ``promise`` counts against the limit: its JSON plus :data:`ID_COPIES` escaped ids.

    A PENDING promise is measured as it will be once timed out (state ``REJECTED_TIMEDOUT``,
    ``completedOn`` set), the largest it can grow without a new value.
    """
    if promise.state == PromiseState.PENDING:
        promise = attrs.evolve(promise, state=PromiseState.REJECTED_TIMEDOUT, completed_on=promise.timeout)
    return promise_json_bytes(promise) + ID_COPIES * (len(encode_basestring_ascii(promise.id)) - 2)


def promise_json_bytes(promise: Promise) -> int:
    """The exact size of ``promise``'s JSON, without encoding its ``data`` (base64 is never escaped)."""
    data = len(promise.param.data or "") + len(promise.value.data or "")
    if data:
        promise = attrs.evolve(promise, param=_no_data(promise.param), value=_no_data(promise.value))
    return json_bytes(promise) + data


def _no_data(value: Value) -> Value:
    return attrs.evolve(value, data="") if value.data else value


def check_promise(promise: Promise, limit: int, fields: Callable[[], Mapping[str, Any]], id_field: str = "id") -> None:
    """400 if ``promise`` would take more than ``limit`` bytes (0 = no limit) in a reply.

    ``fields()`` gives the request fields (wire name → value) that made the promise; the error
    names the one taking the most bytes (``id_field`` counted with its copies).
    """
    if not limit or promise_bound(promise) <= limit:
        return
    size = promise_bytes(promise)
    if size > limit:
        field = _largest(fields(), id_field)
        raise BadRequest(
            f"validation error: payload.{field}: the promise would take {size} bytes of JSON in replies; "
            f"at most {limit} fit ({_WHY})"
        )


def check_schedule(schedule: Schedule, limit: int, fields: Mapping[str, Any]) -> None:
    """400 if the schedule's JSON is over ``limit`` bytes (0 = no limit); names the largest field.

    Schedules are created rarely: measured exactly, no bound first.
    """
    if not limit:
        return
    size = json_bytes(schedule)
    if size > limit:
        raise BadRequest(
            f"validation error: payload.{_largest(fields, None)}: the schedule would take {size} bytes of JSON; "
            f"at most {limit} fit ({_WHY})"
        )


_WHY = f"half the NATS max_payload less {ENVELOPE_BYTES} bytes of envelope: a tasks.claim reply carries two promises"


def _largest(fields: Mapping[str, Any], id_field: Optional[str]) -> str:
    def weight(name: str) -> int:
        value = fields[name]
        if isinstance(value, str):
            size = len(encode_basestring_ascii(value))
            return size * (1 + ID_COPIES) if name == id_field else size
        return json_bytes(value) if value is not None else 0

    return max(fields, key=weight)


def fit_page(
    page: List[T],
    below: Optional[int],
    max_promise_bytes: int,
    exact: Callable[[T], int],
    bound: Callable[[T], int],
    kind: str,
    query: Dict[str, Any],
) -> Tuple[List[T], Optional[int]]:
    """A search page and where the next one starts, cut if need be to fit twice ``max_promise_bytes``.

    ``page`` and ``below`` are what :func:`.common.take_page` returns: items with a ``sort_id``
    and the sort id the next page goes on below (None: nothing more; it may lie past the last
    item when the scan ran out of work). ``query`` is what the cursor encodes besides the
    position. Items are counted by ``bound`` (their JSON and a comma); only a page over the
    budget is measured with ``exact`` and cut after the most items that fit with a cursor
    continuing after the last of them, so a page is cut only where the next item does not fit,
    and a cut page always has a cursor. At least one item stays: a page must move the search on
    (an item too large for any reply is answered with an error when sent).
    """
    budget = 2 * max_promise_bytes

    def cursor_bytes(before: Optional[int]) -> int:
        return 0 if before is None else cursor_length(len(cursor_body(kind, {**query, "before": before})))

    if len(page) < 2:
        return page, below
    with_cursor = cursor_bytes(below)
    if sum(bound(item) + 1 for item in page) + with_cursor <= budget:
        return page, below
    sizes = [exact(item) + 1 for item in page]
    used = sum(sizes)
    if used + with_cursor <= budget:
        return page, below
    kept = len(page) - 1  # the whole page does not fit: a cursor will follow what does
    used -= sizes[kept]
    while kept > 1 and used + cursor_bytes(page[kept - 1].sort_id) > budget:  # type: ignore[attr-defined]
        kept -= 1
        used -= sizes[kept]
    return page[:kept], page[kept - 1].sort_id  # type: ignore[attr-defined]


def search_page(
    settings: CoreSettings,
    page: List[T],
    below: Optional[int],
    exact: Callable[[T], int],
    bound: Callable[[T], int],
    kind: str,
    query: Dict[str, Any],
) -> Tuple[List[T], Optional[str]]:
    """A search page as :func:`.common.take_page` found it, cut by :func:`fit_page` when
    ``settings.max_promise_bytes`` is set, and its signed cursor (None: nothing more)."""
    if settings.max_promise_bytes:
        page, below = fit_page(page, below, settings.max_promise_bytes, exact, bound, kind, query)
    return page, None if below is None else encode_cursor(settings.cursor_secret, kind, {**query, "before": below})
