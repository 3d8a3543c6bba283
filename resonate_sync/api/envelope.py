"""The NATS request/reply envelope (PROTOCOL.md 1.2–1.6): JSON (or MessagePack) bytes in, the same out.

Processing order, stopping at the first failure: decode the envelope (400 ``invalid request
format``), route on ``operation`` (400 ``unknown operation``), decode the payload into its
model (400 ``invalid payload``), validate fields (400), execute (the kernel status's code),
encode (500). Whatever happens, exactly one reply document comes back and the server keeps
serving: a reply too large for NATS becomes a 500 error reply (:func:`too_large_reply`).

Both ends use this one codec: a client encodes with :func:`encode_request` what :func:`handle`
decodes, and decodes with :func:`decode_reply` what :func:`handle` encodes
(:func:`encode_reply`, :func:`error_reply`).

Two encodings carry the envelope, with exactly the same documents: JSON, the default, and
MessagePack (:data:`MSGPACK`), which a request selects with the NATS header
``Content-Type: application/msgpack`` and which its reply then uses too. Every function here takes
the :class:`Encoding` to use (default :data:`JSON`); ``data`` fields are base64 strings in both.
"""

import json
import logging
import threading
import time
from random import getrandbits
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import cattrs

from .. import limits
from ..core import Resonate
from ..errors import BadRequest, InternalError, ResonateError, Status
from ..jsonenc import compact_encoder
from ..models import WIRE, structure_request, unstructure
from .operations import ROUTES

__all__ = [
    "Encoding",
    "JSON",
    "MSGPACK",
    "ENCODINGS",
    "MSGPACK_CONTENT_TYPE",
    "encoding_for",
    "Answer",
    "handle",
    "handle_nowait",
    "encode_request",
    "encode_reply",
    "decode_reply",
    "Reply",
    "error_reply",
    "too_large_reply",
    "reply_error",
    "ErrorReply",
    "ERROR_REPLY_PREFIX",
    "BUSY",
    "BUSY_REPLY",
    "INTERNAL_ERROR",
    "SHUTTING_DOWN",
    "NOT_LEADER",
    "SHUTTING_DOWN_REPLY",
    "STORE_ERROR",
    "STORE_ERROR_REPLY",
]

log = logging.getLogger(__name__)


_encode = compact_encoder()


class Encoding(NamedTuple):
    """One way to write envelopes as bytes.

    Attributes:
        name: ``"json"`` or ``"msgpack"`` (the Client's ``encoding=``).
        content_type: the NATS ``Content-Type`` header that selects it ("" for JSON, the default).
        loads: bytes -> document held to :mod:`resonate_sync.limits` (raises ``JsonLimitError``
            naming the path, ValueError for bytes that are no document).
        dumps: document -> bytes.
        loads_reply: bytes -> document, for replies (no limit); ValueError for bytes that are none.
        document: what a request must be, for the 400 that says so.
    """

    name: str
    content_type: str
    loads: Callable[[bytes], Any]
    dumps: Callable[[Any], bytes]
    loads_reply: Callable[[bytes], Any]
    document: str


def _json_loads(raw: bytes) -> Any:
    return limits.loads(raw.decode("utf-8"))


def _json_dumps(document: Any) -> bytes:
    return _encode(document).encode()


# msgpack is imported on the first MessagePack document: a JSON-only process never pays its ~4 ms.
_msgpackenc: Any = None


def _msgpack() -> Any:
    global _msgpackenc
    if _msgpackenc is None:
        from .. import msgpackenc

        _msgpackenc = msgpackenc
    return _msgpackenc


def _msgpack_loads(raw: bytes) -> Any:
    return (_msgpackenc or _msgpack()).loads(raw)


def _msgpack_dumps(document: Any) -> bytes:
    return (_msgpackenc or _msgpack()).dumps(document)


def _msgpack_loads_reply(raw: bytes) -> Any:
    return (_msgpackenc or _msgpack()).loads_reply(raw)


MSGPACK_CONTENT_TYPE = "application/msgpack"
JSON = Encoding("json", "", _json_loads, _json_dumps, json.loads, "a JSON object")
MSGPACK = Encoding("msgpack", MSGPACK_CONTENT_TYPE, _msgpack_loads, _msgpack_dumps, _msgpack_loads_reply, "a MessagePack map")
ENCODINGS: Mapping[str, Encoding] = {JSON.name: JSON, MSGPACK.name: MSGPACK}
"""Every encoding by name."""
_BY_CONTENT_TYPE: Mapping[str, Encoding] = {MSGPACK_CONTENT_TYPE: MSGPACK}


def encoding_for(content_type: Optional[str]) -> Encoding:
    """The encoding a request's ``Content-Type`` header selects: MessagePack for ``application/msgpack``
    (any case, parameters ignored), JSON for anything else or no header."""
    if not content_type:
        return JSON
    return _BY_CONTENT_TYPE.get(content_type.split(";", 1)[0].strip().lower(), JSON)


def _decode_envelope(raw: bytes, encoding: Encoding) -> Dict[str, Any]:
    try:
        envelope = encoding.loads(raw)
    except limits.JsonLimitError as exc:
        what = "invalid payload" if exc.path.startswith("payload") else "invalid request format"
        raise BadRequest(f"{what}: {exc}") from None
    except ValueError as exc:  # UnicodeDecodeError too
        raise BadRequest(f"invalid request format: {exc}") from None
    if type(envelope) is not dict:
        raise BadRequest(f"invalid request format: the request must be {encoding.document}")
    operation = envelope.get("operation")
    if operation is not None and type(operation) is not str:
        raise BadRequest("invalid request format: operation must be a string")
    request_id = envelope.get("requestId")
    if request_id is not None and type(request_id) is not str:
        raise BadRequest("invalid request format: requestId must be a string")
    metadata = envelope.get("metadata")
    if metadata is not None:
        if type(metadata) is not dict or any(type(v) is not str for v in metadata.values()):
            raise BadRequest("invalid request format: metadata must be an object of string values")
    if request_id and _echo_size(request_id) > MAX_REQUEST_ID_BYTES:
        raise BadRequest(
            f"invalid request format: requestId takes more than {MAX_REQUEST_ID_BYTES} bytes of JSON; "
            "every reply echoes it, so it must stay short"
        )
    if metadata and _echo_size(metadata) > MAX_METADATA_BYTES:
        raise BadRequest(
            f"invalid request format: metadata takes more than {MAX_METADATA_BYTES} bytes of JSON; "
            "every reply echoes it, so it must stay small"
        )
    return envelope


# Replies echo requestId and metadata. Bounded here, they fit in the envelope allowance that
# core.sizes keeps beside the largest promise, so no request is refused only once its reply is
# too big for NATS (a 500 for what is the client's data).
MAX_REQUEST_ID_BYTES = 512
MAX_METADATA_BYTES = 2048


def _echo_size(value: Any) -> int:
    """The JSON size of a string or string map, exact only when a quick bound says it may matter."""
    if type(value) is str:
        chars = len(value)
    else:
        chars = sum(len(key) + len(item) + 6 for key, item in value.items())
    if chars * 12 <= MAX_REQUEST_ID_BYTES:  # \uXXXX\uXXXX: the most one character can take
        return chars * 12
    return len(_encode(value))


class _FailureLog:
    """Logs the 5xx replies of one kind (code and message): the first at once, then counts.

    After a journal failure every request fails the same way until a restart; a line per
    request would bury the one line that says why and what to do (the core logs it once).
    Repeats within ``interval`` seconds of the last line of their kind are counted, and the
    first failure after the interval logs the count. A failure after a quiet interval is
    logged in full again.

    Attributes:
        interval: seconds between two lines about one kind of failure.
        clock: monotonic seconds (``time.monotonic``; tests pass a fake).
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._kinds: Dict[Tuple[int, str], List[float]] = {}  # kind -> [time of its last line, failures since]

    def failed(self, operation: str, exc: ResonateError) -> None:
        kind = (exc.code, exc.message)
        now = self.clock()
        with self._lock:
            seen = self._kinds.get(kind)
            if seen is None or (seen[1] == 0 and now - seen[0] >= self.interval):
                self._kinds[kind] = [now, 0]
                count = 0
            else:
                seen[1] += 1
                if now - seen[0] < self.interval:
                    return
                count, elapsed = seen[1], now - seen[0]
                seen[:] = [now, 0]
        if count:
            self.logger.error(
                "%d requests failed with %d %s in the last %.0f s", count, exc.code, exc.message, elapsed
            )
        else:
            self.logger.error(
                "%s failed: %d %s (more like it are counted, one line per %.0f s)",
                operation,
                exc.code,
                exc.message,
                self.interval,
                exc_info=exc.__cause__ is not None,
            )


_failures = _FailureLog(log)


def _uuid4() -> str:
    """A random UUID v4 as text; ``str(uuid.uuid4())`` costs ~3 us (os.urandom + UUID object).

    Request ids only correlate replies with requests, so the Mersenne Twister is random enough.
    """
    bits = (getrandbits(128) & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC << 60) | (0x8 << 60)
    h = "%032x" % bits
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _metadata(envelope: Mapping[str, Any], kernel_name: str) -> Dict[str, str]:
    metadata = dict(envelope.get("metadata") or {})
    metadata["id"] = envelope.get("requestId") or _uuid4()
    metadata["name"] = kernel_name
    metadata["protocol"] = "nats"
    return metadata


def encode_request(
    operation: str,
    request: Any,
    request_id: str,
    metadata: Optional[Mapping[str, str]] = None,
    encoding: Encoding = JSON,
) -> bytes:
    """The request envelope of ``operation`` carrying the request model ``request``.

    ``request_id`` comes back in the reply's ``Metadata.id``; ``metadata`` (trace context, say)
    is passed through to the reply's ``Metadata``. Sent as MessagePack, it must go with the
    header ``Content-Type: application/msgpack`` (``encoding.content_type``).
    """
    envelope: Dict[str, Any] = {"operation": operation, "requestId": request_id, "payload": unstructure(request)}
    if metadata:
        envelope["metadata"] = dict(metadata)
    return encoding.dumps(envelope)


def encode_reply(status: int, metadata: Mapping[str, str], payload: Any, encoding: Encoding = JSON) -> bytes:
    """The success reply: the kernel ``status``, the request's ``metadata`` and the response model ``payload``."""
    response = {"Status": int(status), "Metadata": metadata, "Payload": unstructure(payload)}
    return encoding.dumps({"success": True, "response": response})


class Reply(NamedTuple):
    """A success reply, decoded.

    Attributes:
        status: the kernel status (a :class:`Status`; a plain int if this version knows no such status).
        metadata: the request's metadata as the server echoed it (``id``, ``name``, …).
        payload: the response model.
    """

    status: Union[Status, int]
    metadata: Mapping[str, Any]
    payload: Any


def decode_reply(raw: bytes, response_type: type) -> Reply:
    """The reply envelope ``raw``, its payload structured as ``response_type``.

    JSON or MessagePack, whichever ``raw`` is (a MessagePack reply starts with a map's first
    byte, never ``{``): a MessagePack request may still get a JSON reply from a server that
    does not speak it. An error reply raises the :class:`ResonateError` subclass of its code,
    with its message; anything that is not a reply envelope raises :class:`InternalError`.
    """
    encoding = MSGPACK if raw[:1] in _MSGPACK_MAP_STARTS else JSON
    try:
        reply = encoding.loads_reply(raw)
    except ValueError:
        raise InternalError(f"unreadable reply from the server: {raw[:80]!r}") from None
    if type(reply) is not dict:
        raise InternalError(f"unexpected reply from the server: {raw[:80]!r}")
    if reply.get("success") is not True:
        error = reply.get("error")
        code = error.get("code") if type(error) is dict else None
        if type(code) is not int:
            raise InternalError(f"unexpected error reply from the server: {raw[:80]!r}")
        message = error.get("message")
        raise ResonateError.from_code(code, message if type(message) is str and message else f"error {code}")
    response = reply.get("response")
    if type(response) is not dict:
        raise InternalError(f"unexpected reply from the server: {raw[:80]!r}")
    try:
        payload = WIRE.structure(response.get("Payload") or {}, response_type)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        raise InternalError(f"unexpected reply payload from the server: {exc}") from None
    metadata = response.get("Metadata")
    return Reply(_status(response.get("Status")), metadata if type(metadata) is dict else {}, payload)


_MSGPACK_MAP_STARTS = frozenset(bytes((byte,)) for byte in (*range(0x80, 0x90), 0xDE, 0xDF))


def _status(value: Any) -> Union[Status, int]:
    try:
        return Status(value)
    except ValueError:
        return value


def error_reply(code: int, message: str, encoding: Encoding = JSON) -> bytes:
    return encoding.dumps({"success": False, "error": {"code": code, "message": message}})


# Every JSON reply is encoded here, compact, with "success" first: what an error reply starts with.
ERROR_REPLY_PREFIX = b'{"success":false,'


def reply_error(reply: bytes) -> Optional[str]:
    """``"code:message"`` if ``reply`` is a JSON error reply of this module, else None (for clients and tests)."""
    if not reply.startswith(ERROR_REPLY_PREFIX):
        return None
    try:
        error = json.loads(reply)["error"]
        return f"{error['code']}:{error['message']}"
    except (ValueError, KeyError, TypeError):
        return "500:unreadable error reply"


class ErrorReply(NamedTuple):
    """An error reply: its ``code`` and ``message``, and ``data``, the envelope that carries them."""

    code: int
    message: str
    data: bytes


def _error(status: Status, code: int) -> ErrorReply:
    return ErrorReply(code, status.text, error_reply(code, status.text))


BUSY = _error(Status.API_SUBMISSION_QUEUE_FULL, 503)
SHUTTING_DOWN = _error(Status.SYSTEM_SHUTTING_DOWN, 503)
NOT_LEADER = _error(Status.NOT_LEADER, 503)
STORE_ERROR = _error(Status.STORE_ERROR, 500)
INTERNAL_ERROR = _error(Status.INTERNAL_SERVER_ERROR, 500)
BUSY_REPLY, SHUTTING_DOWN_REPLY, STORE_ERROR_REPLY = BUSY.data, SHUTTING_DOWN.data, STORE_ERROR.data


def too_large_reply(size: int, max_payload: int, encoding: Encoding = JSON) -> ErrorReply:
    """The error sent instead of a reply of ``size`` bytes that NATS would not carry."""
    message = f"the reply of {size} bytes exceeds the NATS max_payload of {max_payload} bytes"
    return ErrorReply(500, message, error_reply(500, message, encoding))


def handle(core: Resonate, raw: bytes, max_payload: int = 0, encoding: Encoding = JSON) -> bytes:
    """Answer one request envelope with one reply envelope, once what it shows is durable."""
    answer = handle_nowait(core, raw, max_payload, encoding)
    try:
        core.wait_durable(answer.ticket)
    except ResonateError as exc:
        return error_reply(exc.code, exc.message, encoding)
    return answer.reply


class Answer(NamedTuple):
    """What :func:`handle_nowait` made of one request envelope.

    Attributes:
        reply: the reply envelope.
        ticket: the journal ticket it must wait for (0: none).
        failure: the reply's (code, message) when it is an error reply; None for a success.
        operation: the operation's wire name, ``"unknown"`` for a request naming none this
            server knows (a bounded set of names, fit for a metric label).
        request_id: the request's id as the reply's metadata carries it; ``""`` if not decoded.
        code: the reply's HTTP-style code (200, 201, 404, …).
    """

    reply: bytes
    ticket: int
    failure: Optional[Tuple[int, str]]
    operation: str
    request_id: str
    code: int


UNKNOWN_OPERATION = "unknown"


def handle_nowait(core: Resonate, raw: bytes, max_payload: int = 0, encoding: Encoding = JSON) -> Answer:
    """The :class:`Answer` to one request envelope, read and answered in ``encoding``.

    The reply must not be sent before ``core.wait_durable(answer.ticket)`` returned; if that
    fails, send :data:`STORE_ERROR` instead. A reply over ``max_payload`` bytes (0: no limit) is
    replaced by :func:`too_large_reply`. The core keeps replies under it, so this means a
    promise stored before the limit existed or under a larger ``max_payload``, or request
    metadata too large to echo.
    """
    operation = UNKNOWN_OPERATION
    request_id = ""
    ticket = 0
    try:
        envelope = _decode_envelope(raw, encoding)
        route = ROUTES.get(envelope.get("operation") or "")
        if route is None:
            raise BadRequest(f"unknown operation: {envelope.get('operation') or ''}")
        operation = route.operation.name
        if "payload" not in envelope:
            raise BadRequest("invalid payload: payload is required (an object)")
        payload = envelope["payload"]
        if route.aliases and type(payload) is dict:
            for name, alias in route.aliases:
                if name not in payload and alias in payload:
                    payload = {**payload, name: payload[alias]}
        op = route.operation
        request = structure_request(payload, op.request_type)
        metadata = _metadata(envelope, route.kernel_name)
        request_id = metadata["id"]
        pending = core.execute_nowait(op, request, metadata)
        ticket = pending.ticket
        if pending.error is not None:
            raise pending.error
        result = pending.result
    except ResonateError as exc:
        if exc.code >= 500:
            _failures.failed(operation, exc)
        return _failed(exc.code, exc.message, ticket, operation, request_id, encoding)
    except Exception as exc:  # a bug: answer 500 and keep serving
        log.exception("%s failed unexpectedly", operation)
        message = f"{Status.INTERNAL_SERVER_ERROR.text}: {type(exc).__name__}"
        return _failed(500, message, ticket, operation, request_id, encoding)
    try:
        reply = encode_reply(result.status, metadata, result.payload, encoding)
    except Exception as exc:  # a bug: answer 500 and keep serving
        log.exception("%s: failed to encode response", operation)
        return _failed(500, f"failed to encode response: {exc}", ticket, operation, request_id, encoding)
    if max_payload and len(reply) > max_payload:
        log.warning(
            "%s %s: the reply of %d bytes exceeds the NATS max_payload of %d bytes; answering 500 instead",
            operation,
            request_id,
            len(reply),
            max_payload,
        )
        too_large = too_large_reply(len(reply), max_payload, encoding)
        return Answer(too_large.data, ticket, (too_large.code, too_large.message), operation, request_id, too_large.code)
    return Answer(reply, ticket, None, operation, request_id, int(result.status) // 100)


def _failed(code: int, message: str, ticket: int, operation: str, request_id: str, encoding: Encoding) -> Answer:
    return Answer(error_reply(code, message, encoding), ticket, (code, message), operation, request_id, code)
