"""Opaque search cursors: the query plus the position, signed so forgeries are rejected.

A cursor is ``base64url(JSON) "." base64url(HMAC-SHA256(secret, JSON)[:16])``. The secret is
the core's (random per process unless configured), so a cursor handed out by one server
process is rejected (400) by another: restart the search from the first page.
"""

import base64
import hashlib
import hmac
import json
from typing import Any, Dict

from ..errors import BadRequest

__all__ = ["encode_cursor", "decode_cursor", "cursor_body", "cursor_length"]


_MAC_BYTES = 16


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cursor_body(kind: str, query: Dict[str, Any]) -> bytes:
    """The signed JSON text of a cursor (ASCII)."""
    return json.dumps({"k": kind, **query}, separators=(",", ":"), sort_keys=True).encode()


def encode_cursor(secret: bytes, kind: str, query: Dict[str, Any]) -> str:
    body = cursor_body(kind, query)
    mac = hmac.new(secret, body, hashlib.sha256).digest()[:_MAC_BYTES]
    return f"{_b64(body)}.{_b64(mac)}"


def cursor_length(body_bytes: int) -> int:
    """The length of a cursor whose body takes ``body_bytes``, without signing it."""
    return (4 * body_bytes + 2) // 3 + 1 + (4 * _MAC_BYTES + 2) // 3


def decode_cursor(secret: bytes, kind: str, cursor: str) -> Dict[str, Any]:
    """The query of a cursor this process issued for ``kind``; BadRequest otherwise."""
    try:
        body_text, mac_text = cursor.split(".")
        body, mac = _unb64(body_text), _unb64(mac_text)
    except (ValueError, TypeError):
        raise BadRequest("invalid cursor: not a cursor issued by this server") from None
    if not hmac.compare_digest(mac, hmac.new(secret, body, hashlib.sha256).digest()[:_MAC_BYTES]):
        raise BadRequest("invalid cursor: not a cursor issued by this server (or it was issued before a restart)")
    query = json.loads(body)
    if query.pop("k", None) != kind:
        raise BadRequest(f"invalid cursor: not a {kind} search cursor")
    return query
