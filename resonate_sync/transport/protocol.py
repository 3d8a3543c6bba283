"""The NATS client protocol: received messages, headers, subjects.

No sockets here; the connection moves the bytes.
"""

from __future__ import annotations

import re
from typing import Dict, Mapping, Optional
from urllib.parse import urlparse, urlunparse

__all__ = ["Msg", "check_subject", "decode_headers", "encode_headers", "redact_url"]

CRLF = b"\r\n"
PING = b"PING\r\n"
PONG = b"PONG\r\n"
DEFAULT_MAX_PAYLOAD = 1024 * 1024
_BAD_SUBJECT = re.compile(r"\s")


class Msg:
    """One received message: ``subject``, ``reply`` ("" if none), ``payload`` (bytes),
    ``headers`` (dict or None; a status line becomes ``Status``/``Description``), ``sid``.

    Attribute names match ``pynats2.NATSMessage`` so pynats2-style callbacks keep working;
    slotted because the reader builds one per message.
    """

    __slots__ = ("subject", "reply", "payload", "headers", "sid")

    def __init__(
        self, subject: str, reply: str, payload: bytes, headers: Optional[Dict[str, str]], sid: int
    ) -> None:
        self.subject = subject
        self.reply = reply
        self.payload = payload
        self.headers = headers
        self.sid = sid

    def __repr__(self) -> str:
        return f"Msg(subject={self.subject!r}, reply={self.reply!r}, payload={self.payload[:64]!r}, headers={self.headers!r})"


def encode_headers(headers: Mapping[str, str]) -> bytes:
    lines = ["NATS/1.0"]
    for key, value in headers.items():
        key, value = str(key), str(value)
        if not key or ":" in key or _BAD_SUBJECT.search(key) or "\r" in value or "\n" in value:
            raise ValueError(f"invalid header {key!r}: {value!r}")
        lines.append(f"{key}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def decode_headers(raw: bytes) -> Dict[str, str]:
    lines = raw.decode("utf-8", "replace").split("\r\n")
    headers: Dict[str, str] = {}
    status = lines[0][len("NATS/1.0") :].strip()
    if status:
        code, _, description = status.partition(" ")
        headers["Status"] = code
        if description:
            headers["Description"] = description
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            key, value = key.strip(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def redact_url(url: str) -> str:
    """``url`` with any password or token replaced by ``***``, for logs and error messages."""
    parsed = urlparse(url)
    if not parsed.username:
        return url
    host = parsed.hostname or ""
    if parsed.port:
        host = f"{host}:{parsed.port}"
    auth = f"{parsed.username}:***" if parsed.password else "***"
    return urlunparse(parsed._replace(netloc=f"{auth}@{host}"))


def check_subject(subject: str, what: str = "subject") -> bytes:
    if not subject or _BAD_SUBJECT.search(subject):
        raise ValueError(f"invalid NATS {what} {subject!r}: must be non-empty without whitespace")
    return subject.encode()

