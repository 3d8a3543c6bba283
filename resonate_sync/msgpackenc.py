"""MessagePack documents held to the one request limit of :mod:`resonate_sync.limits`.

A MessagePack request must carry exactly what a JSON request may, no more: MessagePack can also
carry binary (bin) and extension (ext, timestamps) values, maps keyed by numbers or arrays,
NaN and infinite floats, and containers nested as deep as the decoder's stack. Each is a 400
naming the field path, as the JSON decoder names it. Integers need no check: MessagePack's
range is the limit's, ``[-2**63, 2**64 - 1]``.

Strings are UTF-8 read and written with ``surrogatepass``: a lone surrogate, which a JSON
request can carry as ``\\ud800``, travels as its three UTF-8-style bytes, so both encodings carry
exactly the same values (a strict UTF-8 decoder refuses those bytes: only such a value needs a
decoder that passes surrogates).

This module imports ``msgpack`` (about 4 ms): :mod:`resonate_sync.api.envelope` imports it on the
first MessagePack document, so a JSON-only server or CLI never pays.
"""

import math
from typing import Any, List, Tuple

import msgpack

from . import limits

__all__ = ["dumps", "loads", "loads_reply"]

_BIN = "a MessagePack bin value is not JSON data: binary data travels as a base64 string"
_EXT = "a MessagePack ext value is not JSON data"
_FOREIGN = {bytes: _BIN, msgpack.ExtType: _EXT, msgpack.Timestamp: _EXT}

_MAPS = frozenset((*range(0x80, 0x90), 0xDE, 0xDF))
_ARRAYS = frozenset((*range(0x90, 0xA0), 0xDC, 0xDD))
_BINS = frozenset((0xC4, 0xC5, 0xC6))
_EXTS = frozenset((0xC7, 0xC8, 0xC9, *range(0xD4, 0xD9)))
_FLOATS = frozenset((0xCA, 0xCB))
# For bytes.translate: every byte but those that can start a container, a float, a bin or an ext.
_ORDINARY = bytes(b for b in range(256) if b not in _MAPS | _ARRAYS | _BINS | _EXTS | _FLOATS)
_CONTAINERS = bytes(sorted(_MAPS | _ARRAYS))
_ALL_BUT_BINS = bytes(b for b in range(256) if b not in _BINS)
_SCALARS = frozenset((str, int, bool, type(None)))


def dumps(value: Any) -> bytes:
    """``value`` (JSON data) as MessagePack."""
    try:
        return msgpack.packb(value)  # strict UTF-8 packs at about half the cost
    except UnicodeEncodeError:  # a lone surrogate somewhere
        return msgpack.packb(value, unicode_errors="surrogatepass")


def loads(raw: bytes) -> Any:
    """Decode one MessagePack document held to the request limit.

    Raises :class:`~resonate_sync.limits.JsonLimitError` naming the path of the first value the
    limit refuses, ValueError for bytes that are not one whole MessagePack document.
    """
    try:
        value = msgpack.unpackb(raw, strict_map_key=True, unicode_errors="surrogatepass")
    except Exception as exc:  # StackError, FormatError, ExtraData, UnicodeDecodeError, …
        _scan(raw)  # names the path when the limit is why (too deep for the decoder, a key not a string)
        raise ValueError(f"not a MessagePack document: {str(exc) or type(exc).__name__}") from None
    # Only bytes that can start a container, float, bin or ext matter. None of the last three anywhere
    # and no more of the first than the limit: nothing to check (a sufficient test, not a necessary
    # one: those bytes also occur inside numbers and UTF-8 text), at a fraction of a walk's cost.
    markers = raw.translate(None, _ORDINARY)
    if len(markers) > limits.MAX_JSON_DEPTH or markers.translate(None, _CONTAINERS):
        # strict_map_key leaves str and bytes keys; a bytes key needs a bin byte somewhere.
        if not _within(value, check_keys=bool(markers.translate(None, _ALL_BUT_BINS))):
            limits.check_value(value, foreign=_FOREIGN)  # raises, naming the path
    return value


def _within(value: Any, check_keys: bool) -> bool:
    """Whether decoded ``value`` is JSON data within the limit (keys not checked unless ``check_keys``):
    :func:`limits.check_value` without building a path for every value, about twice as fast; a level
    at a time, so without recursion."""
    level, depth = [value], 0
    while level:
        depth += 1
        below: List[Any] = []
        for item in level:
            cls = type(item)
            if cls is dict:
                if depth > limits.MAX_JSON_DEPTH or (check_keys and any(type(key) is not str for key in item)):
                    return False
                below.extend(item.values())
            elif cls is list:
                if depth > limits.MAX_JSON_DEPTH:
                    return False
                below.extend(item)
            elif cls is float:
                if not math.isfinite(item):
                    return False
            elif cls not in _SCALARS:
                return False
        level = below
    return True


def loads_reply(raw: bytes) -> Any:
    """Decode a MessagePack reply (from our server: no limit to hold it to). ValueError if it is none."""
    try:
        return msgpack.unpackb(raw, strict_map_key=False, unicode_errors="surrogatepass")
    except Exception as exc:
        raise ValueError(f"not a MessagePack document: {str(exc) or type(exc).__name__}") from None


def _scan(raw: bytes) -> None:
    """Walk ``raw`` one value at a time, without recursion: raise JsonLimitError at the first value
    the limit refuses; return when there is none before the document ends or breaks."""
    unpacker = msgpack.Unpacker(strict_map_key=False, unicode_errors="surrogatepass", max_buffer_size=max(1, len(raw)))
    unpacker.feed(raw)
    open_: List[list] = []  # per open container: [is a map, items left (a map's keys count), path, key or index]
    try:
        while unpacker.tell() < len(raw):
            marker = raw[unpacker.tell()]
            where, is_key = _position(open_)
            if marker in _MAPS or marker in _ARRAYS:
                is_map = marker in _MAPS
                if is_key:
                    raise limits.JsonLimitError(where, f"object keys must be strings, not {'map' if is_map else 'array'}", "type")
                if len(open_) + 1 > limits.MAX_JSON_DEPTH:
                    raise limits.JsonLimitError(where, limits.too_deep(), "depth")
                size = unpacker.read_map_header() if is_map else unpacker.read_array_header()
                _advance(open_)
                open_.append([is_map, 2 * size if is_map else size, where, None if is_map else 0])
            elif marker in _BINS or marker in _EXTS:
                raise limits.JsonLimitError(where, _BIN if marker in _BINS else _EXT, "type")
            else:
                value = unpacker.unpack()
                if is_key:
                    if type(value) is not str:
                        raise limits.JsonLimitError(where, f"object keys must be strings, not {type(value).__name__}", "type")
                    open_[-1][3] = value
                elif type(value) is float and not math.isfinite(value):
                    raise limits.JsonLimitError(where, limits.number_reason(value))
                _advance(open_)
            while open_ and open_[-1][1] == 0:
                open_.pop()
    except limits.JsonLimitError:
        raise
    except (ValueError, msgpack.OutOfData):  # broken here: the decoder's own error says so
        return


def _position(open_: List[list]) -> Tuple[str, bool]:
    """The path of the next value, and whether it is a map key (whose path is its map's)."""
    if not open_:
        return "", False
    is_map, left, path, step = open_[-1]
    if not is_map:
        return f"{path}[{step}]", False
    if left % 2 == 0:
        return path, True
    return limits.key_path(path, step), False


def _advance(open_: List[list]) -> None:
    """Count one item of the innermost open container as read."""
    if open_:
        top = open_[-1]
        top[1] -= 1
        if not top[0]:
            top[3] += 1

