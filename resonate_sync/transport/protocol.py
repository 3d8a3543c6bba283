"""The NATS client protocol, apart from any socket: frames to send, and a parser for what arrives.

``encode_*`` return the bytes of one whole frame (``PUB``, ``HPUB``, ``SUB``, ``UNSUB``,
``CONNECT``, ``PING``, ``PONG``) and raise ValueError for a subject or header that would
corrupt the stream. :class:`Parser` turns the server's bytes, however they were cut into
chunks, into typed messages: :class:`Msg`, :class:`HMsg`, :class:`Info`, :class:`Err`,
:class:`Ping`, :class:`Pong`, :class:`Ok`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Mapping, Optional, Tuple, Union

__all__ = [
    "Err",
    "HMsg",
    "Info",
    "Message",
    "Msg",
    "Ok",
    "ParseError",
    "Parser",
    "Ping",
    "Pong",
    "check_subject",
    "decode_headers",
    "encode_connect",
    "encode_headers",
    "encode_hpub",
    "encode_ping",
    "encode_pong",
    "encode_pub",
    "encode_sub",
    "encode_unsub",
]

CRLF = b"\r\n"
DEFAULT_MAX_PAYLOAD = 1024 * 1024
_PING = b"PING\r\n"
_PONG = b"PONG\r\n"
_BAD_SUBJECT = re.compile(r"\s")


# -- messages the server sends ---------------------------------------------------------------


class Msg:
    """A message on a subscription: ``subject``, ``reply`` ("" if none), ``payload`` (bytes),
    ``headers`` (None: a ``MSG`` has none), ``sid`` (the subscription's id).

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
        return (
            f"{type(self).__name__}(subject={self.subject!r}, reply={self.reply!r}, "
            f"payload={self.payload[:64]!r}, headers={self.headers!r})"
        )


class HMsg(Msg):
    """A message that came with headers (``HMSG``): ``headers`` is a dict, where a status line
    becomes ``Status`` and ``Description`` and repeated keys are joined with ", "."""

    __slots__ = ()


class Info:
    """``INFO``: the server's description of itself (``info``, the decoded JSON object)."""

    __slots__ = ("info",)

    def __init__(self, info: Dict[str, Any]) -> None:
        self.info = info


class Err:
    """``-ERR``: ``message`` is the server's text without its quotes."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class Ping:
    """``PING``: the server asks whether we are alive (answer ``PONG``)."""

    __slots__ = ()


class Pong:
    """``PONG``: the answer to our oldest ``PING`` not answered yet."""

    __slots__ = ()


class Ok:
    """``+OK``: sent only in verbose mode, which we never ask for."""

    __slots__ = ()


Message = Union[Msg, HMsg, Info, Err, Ping, Pong, Ok]

_PING_MESSAGE, _PONG_MESSAGE, _OK_MESSAGE = Ping(), Pong(), Ok()


class ParseError(Exception):
    """The bytes are not the NATS protocol: the stream cannot be trusted any further."""


# -- parsing ---------------------------------------------------------------------------------


class Parser:
    """The messages in a NATS server's byte stream, however it was cut into chunks.

    :meth:`feed` what the socket returned, then call :meth:`next` until it returns None (the
    rest of a message has not arrived yet). :attr:`missing` says how many more bytes the
    message begun so far needs, so that a large payload can be read in large chunks.

    The common case, one whole message per chunk, copies nothing but the payload: the chunk is
    parsed where it is, and only an incomplete tail waits in a buffer for the next chunk.
    """

    __slots__ = ("_data", "_pos", "_rest", "_wanted")

    def __init__(self) -> None:
        self._data = b""  # the chunk being parsed; the next message starts at _pos
        self._pos = 0
        self._rest = bytearray()  # an incomplete message, waiting for more bytes
        self._wanted = 0  # bytes _rest must hold before it is worth parsing again (0: any)

    @property
    def missing(self) -> int:
        """Bytes the incomplete message still needs, when its size is known; else 0."""
        return max(0, self._wanted - len(self._rest))

    def feed(self, data: bytes) -> None:
        """Add the next bytes of the stream."""
        if self._pos < len(self._data):  # the caller stopped before next() returned None
            self._rest += self._data[self._pos :]
        rest = self._rest
        if rest:
            rest += data
            self._data, self._pos = b"", 0
            if len(rest) < self._wanted:
                return
            data = bytes(rest)
            rest.clear()
        self._data, self._pos, self._wanted = data, 0, 0

    def next(self) -> Optional[Message]:
        """The next whole message, or None until more bytes are fed.

        Raises :class:`ParseError` for bytes that are not the protocol; the parser is then
        unusable (the stream has lost its framing).
        """
        data, pos = self._data, self._pos
        end = data.find(CRLF, pos)
        if end < 0:
            return self._incomplete(0) if data else None
        op = data[pos : pos + 4]
        if op == b"MSG " or op == b"HMSG":
            args = data[pos:end].split()
            fixed = 4 if op == b"MSG " else 5  # the arguments without a reply subject
            try:
                if len(args) - fixed not in (0, 1):
                    raise ValueError
                sid, size = int(args[2]), int(args[-1])
                header_size = int(args[-2]) if fixed == 5 else 0
            except ValueError:
                raise ParseError(f"malformed {data[pos:end][:80]!r}") from None
            if not 0 <= header_size <= size:
                raise ParseError(f"malformed {data[pos:end][:80]!r}")
            reply = args[3].decode() if len(args) > fixed else ""
            start, stop = end + 2, end + 2 + size
            if len(data) < stop + 2:
                return self._incomplete(stop + 2 - pos)
            if data[stop : stop + 2] != CRLF:
                raise ParseError(f"payload of {size} bytes not followed by CRLF")
            self._pos = stop + 2
            if fixed == 4:
                return Msg(args[1].decode(), reply, data[start:stop], None, sid)
            headers = decode_headers(data[start : start + header_size])
            return HMsg(args[1].decode(), reply, data[start + header_size : stop], headers, sid)
        self._pos = end + 2
        if op == b"PING":
            return _PING_MESSAGE
        if op == b"PONG":
            return _PONG_MESSAGE
        if op == b"-ERR":
            return Err(data[pos + 4 : end].strip().decode("utf-8", "replace").strip("'"))
        if op == b"INFO":
            try:
                info = json.loads(data[pos + 5 : end])
            except ValueError:
                raise ParseError(f"unreadable INFO {data[pos:end][:80]!r}") from None
            if type(info) is not dict:
                raise ParseError(f"unreadable INFO {data[pos:end][:80]!r}")
            return Info(info)
        if op[:3] == b"+OK":
            return _OK_MESSAGE
        raise ParseError(f"unexpected {data[pos:end][:80]!r}")

    def _incomplete(self, wanted: int) -> None:
        """Keep the unparsed tail until more bytes come; ``wanted``: the whole message's size, if known."""
        data, pos = self._data, self._pos
        if pos < len(data):
            self._rest += data[pos:]
        self._data, self._pos, self._wanted = b"", 0, wanted
        return None


# Header blocks seen lately, decoded or encoded: most requests with headers repeat one block
# (``Content-Type: application/msgpack``), and every reply to them too. At most _SEEN_MAX
# blocks of at most _SEEN_BYTES each; when full the cache starts again, so varied headers
# (a trace id per request) cost only the work the cache would have saved.
_SEEN_MAX, _SEEN_BYTES = 64, 256
_decoded: Dict[bytes, Dict[str, str]] = {}
_encoded: Dict[Tuple[Tuple[str, str], ...], bytes] = {}


def decode_headers(raw: bytes) -> Dict[str, str]:
    """The headers of an ``HMSG``: a status line becomes ``Status``/``Description``; repeated keys are joined."""
    seen = _decoded.get(raw)
    if seen is not None:
        return dict(seen)
    headers = _decode_headers(raw)
    if len(raw) <= _SEEN_BYTES:
        if len(_decoded) >= _SEEN_MAX:
            _decoded.clear()
        _decoded[raw] = dict(headers)
    return headers


def _decode_headers(raw: bytes) -> Dict[str, str]:
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


# -- frames we send --------------------------------------------------------------------------


def check_subject(subject: str, what: str = "subject") -> bytes:
    """``subject`` as bytes; ValueError if it is empty or holds whitespace (it would split the frame)."""
    if not subject or _BAD_SUBJECT.search(subject):
        raise ValueError(f"invalid NATS {what} {subject!r}: must be non-empty without whitespace")
    return subject.encode()


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """The ``NATS/1.0`` header block of an ``HPUB``, blank line included."""
    items = tuple(headers.items())
    try:
        block = _encoded.get(items)
    except TypeError:  # a value that is not hashable: str() of it is sent, uncached
        return _encode_headers(headers)
    if block is None:
        block = _encode_headers(headers)
        if len(block) <= _SEEN_BYTES:
            if len(_encoded) >= _SEEN_MAX:
                _encoded.clear()
            _encoded[items] = block
    return block


def _encode_headers(headers: Mapping[str, str]) -> bytes:
    lines = ["NATS/1.0"]
    for key, value in headers.items():
        key, value = str(key), str(value)
        if not key or ":" in key or _BAD_SUBJECT.search(key) or "\r" in value or "\n" in value:
            raise ValueError(f"invalid header {key!r}: {value!r}")
        lines.append(f"{key}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _reply_part(reply: str) -> bytes:
    return b" " + check_subject(reply, "reply subject") if reply else b""


def encode_pub(subject: str, payload: bytes, reply: str = "") -> bytes:
    """``PUB``: ``payload`` to ``subject``, answers to ``reply`` ("" for none)."""
    return b"PUB %s%s %d\r\n%s\r\n" % (check_subject(subject), _reply_part(reply), len(payload), payload)


def encode_hpub(subject: str, header_block: bytes, payload: bytes, reply: str = "") -> bytes:
    """``HPUB``: like :func:`encode_pub`, with ``header_block`` from :func:`encode_headers`."""
    return b"HPUB %s%s %d %d\r\n%s%s\r\n" % (
        check_subject(subject),
        _reply_part(reply),
        len(header_block),
        len(header_block) + len(payload),
        header_block,
        payload,
    )


def encode_sub(subject: str, sid: int, queue: str = "") -> bytes:
    """``SUB``: subscription ``sid`` to ``subject``, in queue group ``queue`` ("" for none)."""
    queue_part = check_subject(queue, "queue group") + b" " if queue else b""
    return b"SUB %s %s%d\r\n" % (check_subject(subject), queue_part, sid)


def encode_unsub(sid: int, max_messages: Optional[int] = None) -> bytes:
    """``UNSUB``: end subscription ``sid`` now, or after ``max_messages`` more messages."""
    if max_messages is None:
        return b"UNSUB %d\r\n" % sid
    return b"UNSUB %d %d\r\n" % (sid, max_messages)


def encode_connect(options: Mapping[str, Any]) -> bytes:
    """``CONNECT`` with ``options`` (protocol version, credentials, headers support, ...)."""
    return b"CONNECT " + json.dumps(options).encode() + CRLF


def encode_ping() -> bytes:
    """``PING``: the server answers ``PONG`` once it has processed everything sent before it."""
    return _PING


def encode_pong() -> bytes:
    """``PONG``: the answer to the server's ``PING``."""
    return _PONG
