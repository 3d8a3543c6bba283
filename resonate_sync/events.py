"""Promise events on NATS subjects: every promise state change, published once it is durable.

With ``--events-subject PREFIX`` the server publishes each change of a promise's state
(created PENDING, RESOLVED, REJECTED, REJECTED_CANCELED, REJECTED_TIMEDOUT, whether by a
request or by the background timeout sweep) to::

    <PREFIX>.promises.<state>.<token>

``<state>`` is the state in lower case (``pending``, ``resolved``, ``rejected``,
``rejected_canceled``, ``rejected_timedout``); ``<token>`` is the promise id encoded by
:func:`event_token`. The body is ``{"promise": {…}}``: the ``Payload`` of a ``promises.read``
reply for that promise, in its new state.

Events are at-most-once notifications. One is published after the journal made its change
durable (a change that is never durable is never announced), in the order the changes were
made, from one thread of its own: a slow or lost NATS connection never delays a request, and
events it could not take are dropped (counted in :attr:`EventPublisher.dropped`, logged once
per outage), never retried. A client that must not miss a settlement registers a subscription
(``promises.subscribe``) or reads the promise; events are for watching.

The token encoding (safe in a subject token, reversible, one token per id):

* ASCII letters, digits and ``- _ : / = + @ ,`` stand for themselves;
* every other character (``.``, ``*``, ``>``, ``%``, ``~``, white space, non-ASCII, a lone
  surrogate) is written as ``%XX`` for each byte of its UTF-8 encoding (upper-case hex);
* a subject that would pass :data:`MAX_EVENT_SUBJECT_BYTES` gets the token ``~`` + the
  SHA-256 hex digest of the id's UTF-8 bytes instead: ``~`` never starts an encoded id, and
  the body's ``promise.id`` is then the only way to the id (:func:`decode_token` returns None).
"""

import hashlib
import logging
import re
import string
import threading
from collections import deque
from typing import Callable, Deque, List, Optional, Sequence, Tuple

from .jsonenc import compact_encoder
from .models import Promise, PromiseResponse, unstructure

__all__ = [
    "MAX_EVENT_SUBJECT_BYTES",
    "EventPublisher",
    "decode_token",
    "event_subject",
    "event_token",
    "parse_event_subject",
]

log = logging.getLogger(__name__)

MAX_EVENT_SUBJECT_BYTES = 1024
"""Longest event subject. nats-server refuses a control line (``PUB <subject> <size>``) over its
``max_control_line``, 4 KiB by default, and closes the connection: a subject at most a quarter
of that leaves room for every reasonable setting. Longer ids get a digest token."""

DIGEST_MARK = "~"
"""First character of a digest token (an id too long for the subject): never in an encoded id."""

_SAFE = frozenset(string.ascii_letters + string.digits + "-_:/=+@,")
_HEX = "0123456789ABCDEF"
_ENCODED = re.compile(r"(?:[A-Za-z0-9\-_:/=+@,]|%[0-9A-F]{2})+\Z")
_DIGEST = re.compile(r"~[0-9a-f]{64}\Z")


def _id_bytes(promise_id: str) -> bytes:
    # surrogatepass: a lone surrogate (which JSON can carry) encodes and decodes back unchanged
    return promise_id.encode("utf-8", "surrogatepass")


def encode_id(promise_id: str) -> str:
    """``promise_id`` as a subject token of any length (see the module docstring); ValueError for ``""``."""
    if not promise_id:
        raise ValueError("a promise id is never empty")
    if all(char in _SAFE for char in promise_id):
        return promise_id
    out = []
    for char in promise_id:
        if char in _SAFE:
            out.append(char)
        else:
            out.extend("%" + _HEX[byte >> 4] + _HEX[byte & 15] for byte in _id_bytes(char))
    return "".join(out)


def digest_token(promise_id: str) -> str:
    """The token of an id too long for the subject: ``~`` + the SHA-256 hex digest of its UTF-8 bytes."""
    return DIGEST_MARK + hashlib.sha256(_id_bytes(promise_id)).hexdigest()


_LONGEST_STATE = len("rejected_timedout")


def event_token(prefix: str, promise_id: str) -> str:
    """The last token of every event of ``promise_id`` under ``prefix``, whatever the state:
    subscribe to ``<prefix>.promises.*.<token>`` to watch one promise.

    The encoded id (:func:`encode_id`), or its digest (:func:`digest_token`) when the subject
    with the longest state name would pass :data:`MAX_EVENT_SUBJECT_BYTES`.
    """
    token = encode_id(promise_id)
    if len(prefix) + len(".promises..") + _LONGEST_STATE + len(token) > MAX_EVENT_SUBJECT_BYTES:
        return digest_token(promise_id)
    return token


def event_subject(prefix: str, state: str, promise_id: str) -> str:
    """``<prefix>.promises.<state in lower case>.<token>`` (see :func:`event_token`)."""
    return f"{prefix}.promises.{state.lower()}.{event_token(prefix, promise_id)}"


def decode_token(token: str) -> Optional[str]:
    """The promise id of an event subject's last token; None for a digest token (the id is in the body).

    Raises ValueError naming the token when it is no encoding made by :func:`event_subject`.
    """
    if _DIGEST.match(token):
        return None
    if not _ENCODED.match(token):
        raise ValueError(f"{token[:80]!r} is not a promise id token (safe characters and %XX escapes)")
    if "%" not in token:
        return token
    raw = bytearray()
    pieces = token.split("%")
    raw += pieces[0].encode("ascii")
    for piece in pieces[1:]:
        raw.append(int(piece[:2], 16))
        raw += piece[2:].encode("ascii")
    try:
        promise_id = bytes(raw).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise ValueError(f"{token[:80]!r} is not a promise id token: its escapes are not UTF-8") from None
    if encode_id(promise_id) != token:  # one token per id: %41 for A, say, is no encoding
        raise ValueError(f"{token[:80]!r} is not a promise id token: not in its one encoded form")
    return promise_id


def parse_event_subject(subject: str) -> Tuple[str, Optional[str]]:
    """``(state, promise id)`` of an event subject (upper-case state; id None for a digest token).

    ValueError when ``subject`` is not ``<prefix>.promises.<state>.<token>``.
    """
    rest, _, token = subject.rpartition(".")
    rest, _, state = rest.rpartition(".")
    if not rest.endswith(".promises") or not state:
        raise ValueError(f"{subject[:120]!r} is not a promise event subject (<prefix>.promises.<state>.<token>)")
    return state.upper(), decode_token(token)


_encode_json = compact_encoder()


class EventPublisher:
    """Publishes promise events from a thread of its own, each after its change is durable.

    Args:
        prefix: the events subject prefix (``--events-subject``).
        publish: ``publish(subject, payload)``; raises when it cannot (not connected).
        wait_durable: ``wait_durable(ticket)``, the core's; raises when the change never will be.
        max_queued: events waiting at most; more are dropped (a stalled publisher must not
            grow memory without bound).

    :meth:`changed` is called by the core under its lock for every step that changed
    promises: it only appends to a queue. Attributes: ``published``, ``dropped`` (counts).
    Each counter has one writer: the core's lock holder or this publisher's thread.
    """

    def __init__(
        self,
        prefix: str,
        publish: Callable[[str, bytes], None],
        wait_durable: Callable[[int], None],
        *,
        max_queued: int = 10_000,
    ) -> None:
        self.prefix = prefix
        self._publish = publish
        self._wait_durable = wait_durable
        self._max_queued = max_queued
        self._queue: Deque[Tuple[int, Sequence[Promise]]] = deque()
        self._enqueued = 0  # written under the core's lock only
        self._dequeued = 0  # written by the publisher's thread only
        self._refused = 0  # events refused by a full queue (under the core's lock)
        self._lost = 0  # events the publisher could not send (its thread)
        self._wake = threading.Event()
        self._stopping = False
        self._failing = False  # dropping since the last success: warned once
        self._thread: Optional[threading.Thread] = None
        self.published = 0

    @property
    def dropped(self) -> int:
        """Events never published: refused by a full queue, not durable, or not taken by NATS."""
        return self._refused + self._lost

    def start(self) -> "EventPublisher":
        self._thread = threading.Thread(target=self._run, name="resonate-events", daemon=True)
        self._thread.start()
        return self

    def changed(self, ticket: int, promises: Sequence[Promise]) -> None:
        """Queue the events of ``promises`` (new states), to go out once journal ticket ``ticket`` is durable."""
        if self._enqueued - self._dequeued >= self._max_queued:
            self._refused += len(promises)
            self._warn(f"{self._max_queued} events are waiting to be published")
            return
        self._enqueued += len(promises)
        self._queue.append((ticket, promises))
        self._wake.set()

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._wake.wait()
            self._wake.clear()
            batch: List[Tuple[int, Sequence[Promise]]] = []
            while queue:
                batch.append(queue.popleft())
            if batch:
                self._send(batch)
            if self._stopping and not queue:
                return

    def _send(self, batch: List[Tuple[int, Sequence[Promise]]]) -> None:
        count = sum(len(promises) for _, promises in batch)
        self._dequeued += count
        # Each ticket is waited for: a later one covers the earlier ones only within one leadership
        # of a replicated store (a ticket of an ended one is never durable, whatever came after).
        durable: dict = {}
        for ticket, _ in batch:
            if ticket not in durable:
                try:
                    self._wait_durable(ticket)
                    durable[ticket] = True
                except Exception:  # the core logged why; what is not durable is never announced
                    durable[ticket] = False
        prefix, publish = self.prefix, self._publish
        for ticket, promises in batch:
            if not durable[ticket]:
                self._lost += len(promises)
                continue
            for promise in promises:
                try:  # whatever fails, this thread goes on: one event is lost, not every later one
                    body = _encode_json(unstructure(PromiseResponse(promise))).encode()
                    publish(event_subject(prefix, promise.state, promise.id), body)
                except Exception as exc:
                    self._lost += 1
                    self._warn(f"publishing failed: {exc}")
                else:
                    self.published += 1
                    if self._failing:
                        self._failing = False
                        log.info("promise events are published again (%d dropped so far)", self.dropped)

    def _warn(self, why: str) -> None:
        if not self._failing and not self._stopping:  # stopping: the connection closes before the queue empties
            self._failing = True
            log.warning(
                "promise events on %s.promises.> are being dropped (%s); they are at-most-once notifications,"
                " nothing else is affected. Logged once until they flow again",
                self.prefix,
                why,
            )

    def stop(self, timeout: float = 5.0) -> None:
        """Publish what is queued (for up to ``timeout`` s), then end the thread."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
