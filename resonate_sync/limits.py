"""One limit on the JSON a request may carry: nesting depth and number magnitude.

Whatever a request carries may end up in the journal (a ``recv``, a ``resonate:invoke`` tag
that holds JSON), and the journal must be able to write it **and read it back** on every
Python we support. Python's ``json`` reads ``1e400`` as ``inf`` (which strict JSON cannot
write back), reads integers of any length (quadratic time before Python 3.11, an error
after 4,300 digits since), and recurses once per nesting level (``RecursionError`` near
1,000 levels, sooner on a deep stack). So every request is held, when it is decoded, to:

- at most :data:`MAX_JSON_DEPTH` nested arrays/objects, counted from the envelope itself
  (the envelope is level 1, ``payload`` level 2, a ``recv`` object level 3);
- numbers: integers in ``[-2**63, 2**64 - 1]``, floats finite (no ``NaN``, ``Infinity``, no
  overflow to infinity);

and breaking either is a 400 naming the field path (``payload.recv.data.n``). The same limit
applies to free-form values built in Python (:func:`check_value`) and to JSON held in a
``resonate:invoke`` tag, counted as if it stood where a ``recv`` does.

A MessagePack request is held to the same limit (:mod:`resonate_sync.msgpackenc`, with
:func:`check_value` and the helpers that say where and why).

The depth is checked on the text before the decoder recurses, so a document a million
levels deep costs one linear scan, never a ``RecursionError``. The scan runs only when the
text has more brackets than the limit: a typical request pays for two ``str.count`` calls.
"""

import json
import math
import re
from typing import Any, List, Mapping

__all__ = ["MAX_JSON_DEPTH", "PAYLOAD_DEPTH", "JsonLimitError", "loads", "check_value", "key_path", "too_deep", "number_reason"]

MAX_JSON_DEPTH = 32
"""Arrays and objects nested in one request, the envelope included (it is level 1)."""

PAYLOAD_DEPTH = 2
"""Levels above a payload field's value: the envelope and ``payload``."""

MIN_INT = -(2**63)
MAX_INT = 2**64 - 1
_MAX_INT_CHARS = len(str(MIN_INT))  # 20, as many as MAX_INT has digits
_KEY_SHOWN = 40
_PATH_SHOWN = 160
_CONSTANTS = ("NaN", "Infinity", "-Infinity")


class JsonLimitError(ValueError):
    """A value breaks the limit; ``path`` names where (``payload.recv.data``), ``reason`` why.

    ``kind``: ``"depth"``, ``"number"`` (out of range), ``"constant"`` (``NaN``/``Infinity``
    literals, which are not JSON at all) or ``"type"`` (a Python value that is not JSON data).
    """

    def __init__(self, path: str, reason: str, kind: str = "number") -> None:
        shown = path if len(path) <= _PATH_SHOWN else f"{path[:_PATH_SHOWN // 2]}…{path[-_PATH_SHOWN // 2:]}"
        super().__init__(f"{shown}: {reason}" if path else reason)
        self.path = path
        self.reason = reason
        self.kind = kind


class _Rejected:
    """Stands in for a number the limit refuses, so a second decode can find its path."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _NumberRefused(Exception):
    pass


def _int_strict(text: str) -> int:
    # The length test comes first: int() of a long digit string is quadratic before 3.11.
    if len(text) > _MAX_INT_CHARS:
        raise _NumberRefused(text)
    value = int(text)
    if not MIN_INT <= value <= MAX_INT:
        raise _NumberRefused(text)
    return value


def _float_strict(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NumberRefused(text)
    return value


def _constant_strict(text: str) -> Any:
    raise _NumberRefused(text)


def _lenient(parse):
    def hook(text: str) -> Any:
        try:
            return parse(text)
        except _NumberRefused:
            return _Rejected(text)

    return hook


def _holds_rejected(value: Any) -> bool:
    """Whether ``value`` is, or contains, a refused number (depth is already bounded by the limit)."""
    cls = type(value)
    if cls is _Rejected:
        return True
    if cls is dict:
        return any(_holds_rejected(child) for child in value.values())
    return cls is list and any(_holds_rejected(child) for child in value)


def _keep_rejected(pairs: List[tuple]) -> dict:
    """An object whose repeated key keeps the value holding a refused number: the strict decoder
    refused the first of ``{"n": 1e400, "n": 0}``, so the second pass must find it again."""
    result: dict = {}
    for key, value in pairs:
        if key not in result or not _holds_rejected(result[key]):
            result[key] = value
    return result


# Built once: a decoder per call would cost a microsecond.
_STRICT = json.JSONDecoder(parse_int=_int_strict, parse_float=_float_strict, parse_constant=_constant_strict)
_LENIENT = json.JSONDecoder(
    parse_int=_lenient(_int_strict),
    parse_float=_lenient(_float_strict),
    parse_constant=_lenient(_constant_strict),
    object_pairs_hook=_keep_rejected,
)

# A string (then group 1 tells a key), or a bracket or comma. Strings are matched whole so
# that brackets inside them do not count.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"(\s*:)?|[\[\]{},]', re.DOTALL)


def loads(text: str, *, root: str = "", depth: int = 0) -> Any:
    """Decode JSON ``text`` held to the limit, or raise :class:`JsonLimitError` naming the path.

    ``root`` names the text's place (``payload.tags.resonate:invoke``) and ``depth`` the
    levels above it. Text that is not JSON raises ``ValueError`` as ``json.loads`` does.
    """
    if text.count("{") + text.count("[") + depth > MAX_JSON_DEPTH:
        _check_depth(text, root, depth)
    try:
        return _STRICT.decode(text)
    except _NumberRefused:
        pass
    check_value(_LENIENT.decode(text), root, depth)
    raise AssertionError("a refused number was not found again")  # pragma: no cover


def _check_depth(text: str, root: str, depth: int) -> None:
    """Scan ``text`` (no recursion) and raise at the first container past the limit."""
    open_: List[list] = []  # per open container: [bracket, key or index]
    for match in _TOKEN.finditer(text):
        token = match.group()
        first = token[0]
        if first == '"':
            if match.group(1) is not None and open_ and open_[-1][0] == "{":
                open_[-1][1] = _key_text(token[: token.rindex('"') + 1])
        elif first in "{[":
            if depth + len(open_) + 1 > MAX_JSON_DEPTH:
                raise JsonLimitError(_path(root, open_), too_deep(), "depth")
            open_.append([first, None if first == "{" else 0])
        elif first in "}]":
            if open_:
                open_.pop()
        elif open_ and open_[-1][0] == "[":
            open_[-1][1] += 1


def _key_text(token: str) -> str:
    try:
        key = json.loads(token)
    except ValueError:
        key = token[1:-1]
    return _shown(key)


def _shown(key: str) -> str:
    return key if len(key) <= _KEY_SHOWN else key[:_KEY_SHOWN] + "…"


def key_path(path: str, key: str) -> str:
    """The path of the value under ``key`` of the object at ``path`` (a long key is cut short)."""
    shown = _shown(key)
    return f"{path}.{shown}" if path else shown


def _path(root: str, open_: List[list]) -> str:
    path = root
    for bracket, step in open_:
        if step is None:
            continue
        if bracket == "[":
            path += f"[{step}]"
        else:
            path = f"{path}.{step}" if path else step
    return path


def too_deep() -> str:
    """Why a value past :data:`MAX_JSON_DEPTH` is refused."""
    return f"nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects (the envelope counts as one)"


def check_value(value: Any, path: str = "", depth: int = 0, foreign: Mapping[type, str] = {}) -> None:
    """Raise :class:`JsonLimitError` unless ``value`` is JSON data within the limit.

    JSON data: dicts with string keys, lists, strings, booleans, None, integers in
    ``[-2**63, 2**64 - 1]`` and finite floats. ``depth`` counts the levels above ``value``.
    ``foreign`` says why a value of another type is refused (MessagePack's bin and ext types),
    else the reason is that it is not a JSON value. Iterative, so no value is too deep to check.
    """
    stack = [(value, path, depth)]
    while stack:
        item, where, level = stack.pop()
        cls = type(item)
        if cls is dict or cls is list:
            if level + 1 > MAX_JSON_DEPTH:
                raise JsonLimitError(where, too_deep(), "depth")
            if cls is list:
                stack.extend((child, f"{where}[{i}]", level + 1) for i, child in enumerate(item))
                continue
            for key, child in item.items():
                if type(key) is not str:
                    raise JsonLimitError(where, f"object keys must be strings, not {type(key).__name__}", "type")
                stack.append((child, key_path(where, key), level + 1))
        elif cls is int:
            if not MIN_INT <= item <= MAX_INT:
                raise JsonLimitError(where, number_reason(item))
        elif cls is float:
            if not math.isfinite(item):
                raise JsonLimitError(where, number_reason(item))
        elif cls is _Rejected:
            if item.text in _CONSTANTS:
                raise JsonLimitError(where, f"{item.text} is not JSON (numbers must be finite)", "constant")
            raise JsonLimitError(where, number_reason(item.text))
        elif item is not None and cls is not str and cls is not bool:
            raise JsonLimitError(where, foreign.get(cls) or f"{cls.__name__} is not a JSON value", "type")


def number_reason(number: Any) -> str:
    """Why ``number`` is refused: out of range, or not finite."""
    if isinstance(number, int) and abs(number) >= 10**30:  # str() of a huge int is slow, or refused
        text = f"of {number.bit_length()} bits"
    else:
        text = str(number)
    if len(text) > 40:
        text = text[:40] + "…"
    return (
        f"number {text} is out of range: integers must lie in [-2^63, 2^64-1] and other numbers be "
        "finite (no NaN, Infinity or overflow)"
    )
