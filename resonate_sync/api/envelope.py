"""The NATS request/reply envelope (PROTOCOL.md 1.2–1.6): JSON bytes in, JSON bytes out.

Processing order, stopping at the first failure: decode the envelope (400 ``invalid request
format``), route on ``operation`` (400 ``unknown operation``), decode the payload into its
model (400 ``invalid payload``), validate fields (400), execute (the kernel status's code),
encode (500). Whatever happens, exactly one reply document comes back and the server keeps
serving: a reply too large for NATS becomes a 500 error reply (:func:`too_large_reply`).
"""

import json
import logging
from random import getrandbits
from typing import Any, Dict, Mapping, Optional, Tuple

from ..core import OPERATIONS, Resonate
from ..errors import BadRequest, ResonateError, Status
from ..jsonenc import compact_encoder
from ..models import structure_request, unstructure

__all__ = [
    "handle",
    "handle_nowait",
    "error_reply",
    "too_large_reply",
    "reply_error",
    "ERROR_REPLY_PREFIX",
    "BUSY_REPLY",
    "SHUTTING_DOWN_REPLY",
    "STORE_ERROR_REPLY",
]

log = logging.getLogger(__name__)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


# Built once: json.loads/dumps with keyword arguments build a new decoder/encoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_encode = compact_encoder()


def _decode_envelope(raw: bytes) -> Dict[str, Any]:
    try:
        envelope = _DECODER.decode(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid request format: {exc}") from None
    if type(envelope) is not dict:
        raise BadRequest("invalid request format: the request must be a JSON object")
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
    return envelope


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


def error_reply(code: int, message: str) -> bytes:
    return _encode({"success": False, "error": {"code": code, "message": message}}).encode()


def too_large_reply(size: int, max_payload: int) -> bytes:
    """The error sent instead of a reply of ``size`` bytes that NATS would not carry."""
    return error_reply(500, f"the reply of {size} bytes exceeds the NATS max_payload of {max_payload} bytes")


# Every reply is encoded here, compact, with "success" first: a prefix test tells errors apart
# without decoding anything (it runs once per request, for the Services API stats).
ERROR_REPLY_PREFIX = b'{"success":false,'


def reply_error(reply: bytes) -> Optional[str]:
    """``"code:message"`` if ``reply`` is an error reply of this module, else None."""
    if not reply.startswith(ERROR_REPLY_PREFIX):
        return None
    try:
        error = json.loads(reply)["error"]
        return f"{error['code']}:{error['message']}"
    except (ValueError, KeyError, TypeError):
        return "500:unreadable error reply"


BUSY_REPLY = error_reply(503, Status.API_SUBMISSION_QUEUE_FULL.text)
SHUTTING_DOWN_REPLY = error_reply(503, Status.SYSTEM_SHUTTING_DOWN.text)
STORE_ERROR_REPLY = error_reply(500, Status.STORE_ERROR.text)


def handle(core: Resonate, raw: bytes, max_payload: int = 0) -> bytes:
    """Answer one request envelope with one reply envelope, once what it shows is durable."""
    reply, ticket = handle_nowait(core, raw, max_payload)
    try:
        core.wait_durable(ticket)
    except ResonateError as exc:
        return error_reply(exc.code, exc.message)
    return reply


def handle_nowait(core: Resonate, raw: bytes, max_payload: int = 0) -> Tuple[bytes, int]:
    """The reply to one request envelope and the journal ticket it must wait for (0: none).

    The reply must not be sent before ``core.wait_durable(ticket)`` returned; if that fails,
    send :data:`STORE_ERROR_REPLY` instead. A reply over ``max_payload`` bytes (0: no limit)
    is replaced by :func:`too_large_reply`. The core keeps replies under it, so this means a
    promise stored before the limit existed or under a larger ``max_payload``, or request
    metadata too large to echo.
    """
    operation: Optional[str] = None
    ticket = 0
    try:
        envelope = _decode_envelope(raw)
        operation = envelope.get("operation") or ""
        op = OPERATIONS.get(operation)
        if op is None:
            raise BadRequest(f"unknown operation: {operation}")
        if "payload" not in envelope:
            raise BadRequest("invalid payload: payload is required (an object)")
        payload = envelope["payload"]
        if op.aliases and type(payload) is dict:
            for name, alias in op.aliases:
                if name not in payload and alias in payload:
                    payload = {**payload, name: payload[alias]}
        request = structure_request(payload, op.request_type)
        metadata = _metadata(envelope, op.kernel_name)
        pending = core.execute_nowait(op, request, metadata)
        ticket = pending.ticket
        if pending.error is not None:
            raise pending.error
        result = pending.result
        response = {"Status": int(result.status), "Metadata": metadata, "Payload": unstructure(result.payload)}
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %d", operation, metadata["id"], int(result.status))
    except ResonateError as exc:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> %d %s", operation or "request", exc.code, exc.message)
        if exc.code >= 500:
            log.error("%s failed: %s", operation or "request", exc.message, exc_info=exc.__cause__ is not None)
        return error_reply(exc.code, exc.message), ticket
    except Exception as exc:  # a bug: answer 500 and keep serving
        log.exception("%s failed unexpectedly", operation or "request")
        return error_reply(500, f"{Status.INTERNAL_SERVER_ERROR.text}: {type(exc).__name__}"), ticket
    try:
        reply = _encode({"success": True, "response": response}).encode()
    except (TypeError, ValueError) as exc:
        log.exception("%s: failed to encode response", operation)
        return error_reply(500, f"failed to encode response: {exc}"), ticket
    if max_payload and len(reply) > max_payload:
        log.warning(
            "%s %s: the reply of %d bytes exceeds the NATS max_payload of %d bytes; answering 500 instead",
            operation,
            metadata["id"],
            len(reply),
            max_payload,
        )
        return too_large_reply(len(reply), max_payload), ticket
    return reply, ticket
