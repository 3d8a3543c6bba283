"""The JetStream API over a plain NATS connection: JSON request-reply on ``$JS.API.*``.

No NATS client library: the server hands the store any object with the :class:`JsConnection`
methods (``resonate_sync.transport.connection.Connection`` is one). Everything here is
synchronous and thread-safe as long as the connection's ``request`` and ``publish`` are.
"""

from __future__ import annotations

import json
import queue
import threading
from itertools import count
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Tuple

import attrs

from ...errors import StoreUnavailable
from ...journal import JournalError

__all__ = [
    "FencedError",
    "JetStreamError",
    "JsApi",
    "JsConnection",
    "NotLeaderError",
    "StoredMsg",
    "WRONG_LAST_SEQUENCE",
    "WRONG_LAST_MSG_ID",
]

WRONG_LAST_SEQUENCE = 10071  # Nats-Expected-Last-Sequence (and -Subject-Sequence) did not match
WRONG_LAST_MSG_ID = 10070  # Nats-Expected-Last-Msg-Id did not match
STREAM_NAME_IN_USE = 10058  # a stream of that name exists with another configuration
JETSTREAM_NOT_ENABLED_FOR_ACCOUNT = 10039


class JetStreamError(JournalError):
    """JetStream refused or could not do what the store needs; the message names stream, bucket or
    object and what to do. ``err_code`` is JetStream's own code when it gave one."""

    def __init__(self, message: str, err_code: Optional[int] = None) -> None:
        super().__init__(message)
        self.err_code = err_code


class FencedError(JetStreamError, StoreUnavailable):
    """Another writer appended to the stream (or a PubAck never came): this instance is no longer
    the leader, and the records it had in flight may not be in the stream. The core answers 503
    (not the leader) until the store rebuilt the state from the stream."""


class NotLeaderError(JetStreamError, StoreUnavailable):
    """An append on an instance that is not (or not yet) the leader: 503 to the request."""


class JsMsg(Protocol):
    subject: str
    reply: str
    payload: bytes
    headers: Optional[Dict[str, str]]


class JsConnection(Protocol):
    """What the store needs of a NATS connection (``transport.connection.Connection`` fits).

    ``subscribe`` callbacks run on the connection's reader thread: they never block.
    A reply's status line is in ``headers["Status"]`` ("503", "404", "408", "204"...).
    """

    max_payload: int

    def publish(
        self, subject: str, payload: bytes = b"", reply: str = "", *, headers: Optional[Mapping[str, str]] = None
    ) -> None: ...

    def subscribe(self, subject: str, *, callback: Callable[[Any], None], queue: str = "") -> Any: ...

    def unsubscribe(self, sub: Any) -> None: ...

    def request(
        self, subject: str, *, payload: bytes = b"", timeout: float = 5.0, headers: Optional[Mapping[str, str]] = None
    ) -> JsMsg: ...

    def new_inbox(self) -> str: ...


@attrs.frozen
class StoredMsg:
    """A message read back from a stream: its stream ``seq``, ``subject``, ``headers`` and ``payload``."""

    seq: int
    subject: str
    headers: Mapping[str, str]
    payload: bytes


_FETCH_END = object()


class JsApi:
    """``$JS.API`` calls: each answers a dict or raises :class:`JetStreamError` with JetStream's error.

    ``where`` names the NATS server in messages (its URL). ``timeout`` bounds each call (s).
    """

    def __init__(self, conn: JsConnection, *, timeout: float = 5.0, where: str = "") -> None:
        self.conn = conn
        self.timeout = timeout
        self.where = where or str(getattr(conn, "url", "the NATS server"))
        self._fetch_lock = threading.Lock()
        self._fetch_prefix: Optional[str] = None
        self._fetch_sub: Any = None
        self._fetches: Dict[str, "queue.SimpleQueue[Any]"] = {}
        self._fetch_ids = count(1)

    def call(self, api: str, body: Optional[Mapping[str, Any]] = None, *, what: str = "") -> Dict[str, Any]:
        """Request ``$JS.API.<api>`` with ``body`` as JSON; a reply with ``error`` raises JetStreamError."""
        subject = "$JS.API." + api
        try:
            msg = self.conn.request(subject, payload=json.dumps(body or {}).encode(), timeout=self.timeout)
        except Exception as exc:
            raise JetStreamError(f"{self.where}: {what or subject} failed: {exc}") from exc
        status = (msg.headers or {}).get("Status")
        if status == "503":
            raise self.no_jetstream()
        reply = _json_object(msg.payload, subject)
        error = reply.get("error")
        if isinstance(error, dict):
            code = error.get("err_code")
            raise JetStreamError(
                f"{self.where}: {what or subject} refused: {error.get('description')} "
                f"(code {error.get('code')}, err_code {code})",
                code if isinstance(code, int) else None,
            )
        return reply

    def no_jetstream(self) -> JetStreamError:
        return JetStreamError(
            f"nats-server at {self.where} has no JetStream: start it with -js (or `resonate dev --store-kind"
            " jetstream`), or point the server at a NATS with JetStream enabled for this account"
        )

    def check_jetstream(self) -> Dict[str, Any]:
        """The account's JetStream info; a server (or account) without JetStream is a clear error."""
        try:
            msg = self.conn.request("$JS.API.INFO", payload=b"", timeout=self.timeout)
        except Exception as exc:
            if "no responders" in str(exc).lower():
                raise self.no_jetstream() from None
            raise JetStreamError(f"{self.where}: JetStream did not answer $JS.API.INFO: {exc}") from exc
        if (msg.headers or {}).get("Status") == "503":
            raise self.no_jetstream()
        info = _json_object(msg.payload, "$JS.API.INFO")
        error = info.get("error")
        if isinstance(error, dict):
            if error.get("err_code") == JETSTREAM_NOT_ENABLED_FOR_ACCOUNT:
                raise JetStreamError(f"{self.no_jetstream()} ({error.get('description')})", JETSTREAM_NOT_ENABLED_FOR_ACCOUNT)
            raise JetStreamError(f"{self.where}: JetStream account info refused: {error.get('description')}")
        return info

    def ensure_stream(self, config: Mapping[str, Any]) -> Dict[str, Any]:
        """Create stream ``config["name"]``, or check that the existing one has the settings the store
        relies on (subjects, replicas, TTLs, direct gets, rollups): another is an error naming it."""
        name = config["name"]
        try:
            return self.call(f"STREAM.CREATE.{name}", config, what=f"creating stream {name}")
        except JetStreamError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                if "insufficient resources" in str(exc) or "replicas" in str(exc):
                    raise JetStreamError(
                        f"{exc}: stream {name} asks for {config.get('num_replicas')} replicas; the JetStream "
                        "cluster must have at least that many servers (lower --store-jetstream-replicas)",
                        exc.err_code,
                    ) from None
                raise
        info = self.call(f"STREAM.INFO.{name}", what=f"reading stream {name}")
        existing = info.get("config", {})
        for key in ("subjects", "num_replicas", "allow_msg_ttl", "allow_direct", "allow_rollup_hdrs"):
            if key in config and existing.get(key, False) != config[key]:
                raise JetStreamError(
                    f"{self.where}: stream {name} exists with {key} {existing.get(key)!r}, this server needs "
                    f"{config[key]!r}: use another --store-jetstream-stream, or change or delete that stream "
                    f"(`nats stream edit {name}`) if nothing else uses it"
                )
        return info

    def stream_state(self, name: str) -> Dict[str, Any]:
        return self.call(f"STREAM.INFO.{name}", what=f"reading stream {name}").get("state", {})

    def direct_get(self, stream: str, body: Mapping[str, Any]) -> Optional[StoredMsg]:
        """One message by ``{"seq": n}`` or ``{"last_by_subj": s}``...; None when there is none."""
        subject = f"$JS.API.DIRECT.GET.{stream}"
        try:
            msg = self.conn.request(subject, payload=json.dumps(body).encode(), timeout=self.timeout)
        except Exception as exc:
            raise JetStreamError(f"{self.where}: reading stream {stream} ({body}) failed: {exc}") from exc
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "404":
            return None
        if status:
            raise JetStreamError(f"{self.where}: reading stream {stream} ({body}): status {status} {headers.get('Description', '')}")
        return _stored(msg)

    def fetch(self, stream: str, subject: str, start: int, *, batch: int = 256, max_bytes: int = 8 << 20) -> List[StoredMsg]:
        """Up to ``batch`` messages on ``subject`` from stream seq ``start`` on, in order ([] if none).

        One batched direct get: the replies arrive on an inbox of ours, ended by a 204 (EOB).
        """
        with self._fetch_lock:
            if self._fetch_prefix is None:
                self._fetch_prefix = self.conn.new_inbox() + "."
                self._fetch_sub = self.conn.subscribe(self._fetch_prefix + "*", callback=self._on_fetched)
                flush = getattr(self.conn, "flush", None)
                if flush is not None:
                    flush(self.timeout)
            token = str(next(self._fetch_ids))
            replies: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
            self._fetches[token] = replies
        try:
            body = {"seq": max(start, 1), "batch": batch, "max_bytes": max_bytes, "next_by_subj": subject}
            self.conn.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(body).encode(), self._fetch_prefix + token)
            found: List[StoredMsg] = []
            while True:
                try:
                    msg = replies.get(timeout=self.timeout)
                except queue.Empty:
                    raise JetStreamError(
                        f"{self.where}: reading stream {stream} from seq {start}: no reply within {self.timeout:g} s"
                    ) from None
                if msg is _FETCH_END:
                    raise JetStreamError(f"{self.where}: reading stream {stream}: connection lost")
                headers = msg.headers or {}
                status = headers.get("Status")
                if status in ("404", "408") or (status == "204"):
                    return found
                if status == "503":
                    raise self.no_jetstream()
                if status:
                    raise JetStreamError(
                        f"{self.where}: reading stream {stream} from seq {start}: status {status} {headers.get('Description', '')}"
                    )
                found.append(_stored(msg))
        finally:
            with self._fetch_lock:
                self._fetches.pop(token, None)

    def close(self) -> None:
        """Drop the fetch inbox subscription (the connection itself is the caller's)."""
        with self._fetch_lock:
            sub, self._fetch_sub = self._fetch_sub, None
            self._fetch_prefix = None
        if sub is not None:
            try:
                self.conn.unsubscribe(sub)
            except Exception:  # the connection may be gone already
                pass

    def _on_fetched(self, msg: Any) -> None:
        prefix = self._fetch_prefix or ""
        replies = self._fetches.get(msg.subject[len(prefix) :])
        if replies is not None:
            replies.put(msg)

    def publish_acked(
        self, subject: str, payload: bytes, headers: Optional[Mapping[str, str]] = None, *, what: str = ""
    ) -> Tuple[int, Optional[JetStreamError]]:
        """Publish to a stream subject and wait for the PubAck: (stream seq, None) or (0, the refusal)."""
        try:
            msg = self.conn.request(subject, payload=payload, timeout=self.timeout, headers=headers)
        except Exception as exc:
            raise JetStreamError(f"{self.where}: {what or subject}: no PubAck: {exc}") from exc
        if (msg.headers or {}).get("Status") == "503":
            raise self.no_jetstream()
        ack = _json_object(msg.payload, subject)
        return parse_ack(ack, what or subject, self.where)


def parse_ack(ack: Mapping[str, Any], what: str, where: str) -> Tuple[int, Optional[JetStreamError]]:
    """A PubAck's stream seq, or the error it carries (as a JetStreamError, not raised)."""
    error = ack.get("error")
    if isinstance(error, dict):
        code = error.get("err_code")
        return 0, JetStreamError(
            f"{where}: {what} refused: {error.get('description')} (err_code {code})", code if isinstance(code, int) else None
        )
    seq = ack.get("seq")
    if not isinstance(seq, int) or seq < 1:
        return 0, JetStreamError(f"{where}: {what}: a PubAck without a stream seq: {dict(ack)!r}")
    return seq, None


def _stored(msg: Any) -> StoredMsg:
    headers = msg.headers or {}
    try:
        seq = int(headers["Nats-Sequence"])
    except (KeyError, ValueError):
        raise JetStreamError(f"a direct get reply without Nats-Sequence: {headers!r}") from None
    return StoredMsg(seq, headers.get("Nats-Subject", ""), headers, msg.payload)


def _json_object(payload: bytes, subject: str) -> Dict[str, Any]:
    try:
        value = json.loads(payload)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise JetStreamError(f"{subject}: the reply is not a JSON object: {payload[:200]!r}")
    return value
