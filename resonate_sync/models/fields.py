"""How a model field is declared: its rule on the wire, and the rule its value must follow.

**Wire rules** live in the field's metadata (``attrs.field(metadata=ALWAYS)``) and are read by
the converters (``models.convert``):

* the JSON key is the camelCase name (``idempotency_key_for_create`` → ``idempotencyKeyForCreate``),
  unless ``wire(name=...)`` renames it;
* a key is omitted when its value is the field's default (Go ``omitempty``), unless the field is
  declared :data:`ALWAYS`; a field without a default is always present;
* an :data:`INTERNAL` field is never written on the wire (the journal keeps it).

**Value rules** (``expected an integer``…) are functions that return the value in its
canonical form or refuse it. Each serves twice: as the WIRE converter's structure hook for its
type, and as the attrs converter of every request field of that type (``TEXT``, ``INT64``…),
so a request built in Python is held to the same rules when it is built, with the 400 the wire
would answer, naming the field. JSON ``null`` (or Python ``None``) is the zero value, as in Go.
"""

import base64
import binascii
import re
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, NewType, Optional

import attrs

from ..errors import BadRequest
from ..limits import PAYLOAD_DEPTH, JsonLimitError, check_value

__all__ = [
    "INT64_MIN",
    "INT64_MAX",
    "Base64",
    "StrMap",
    "FieldError",
    "WireRule",
    "wire",
    "ALWAYS",
    "INTERNAL",
    "wire_rule",
    "wire_name",
    "camel",
    "refused",
    "TEXT",
    "INT64",
    "FLAG",
    "STR_MAP",
    "STR_LIST",
    "JSON",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Base64 = NewType("Base64", str)
"""A standard base64 string (RFC 4648 §4, padded), re-encoded canonically on input."""

StrMap = Dict[str, str]


class FieldError(ValueError):
    """A field's value breaks its rule; the message says the rule, cattrs adds the path.

    ``at``: where below the field the value broke it (``data`` of a Value), or "".
    """

    def __init__(self, message: str, at: str = "") -> None:
        super().__init__(message)
        self.at = at


# --------------------------------------------------------------------------- wire rules


@attrs.frozen
class WireRule:
    """How one field appears in the protocol's JSON (see the module docstring)."""

    name: Optional[str] = None
    internal: bool = False
    always: bool = False


_WIRE_KEY = "resonate_sync.wire"
_DEFAULT_RULE = WireRule()


def wire(*, name: Optional[str] = None, internal: bool = False, always: bool = False) -> Mapping[str, WireRule]:
    """Field metadata declaring its wire rule: ``attrs.field(metadata=wire(name="desc"))``."""
    return MappingProxyType({_WIRE_KEY: WireRule(name, internal, always)})


ALWAYS = wire(always=True)
INTERNAL = wire(internal=True)


def wire_rule(attribute: "attrs.Attribute") -> WireRule:
    return attribute.metadata.get(_WIRE_KEY, _DEFAULT_RULE)


def camel(name: str) -> str:
    """``idempotency_key_for_create`` → ``idempotencyKeyForCreate``."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def wire_name(attribute: "attrs.Attribute") -> str:
    """The field's JSON key on the wire."""
    return wire_rule(attribute).name or camel(attribute.name)


# --------------------------------------------------------------------------- value rules


def refused(message: str, context: Any, at: str = "") -> Exception:
    """The error for a value that breaks its rule.

    In a structure hook (``context`` is the type), a :class:`FieldError`: cattrs adds the path.
    As a request field's converter (``context`` is the field), the 400 naming the field.
    """
    if isinstance(context, attrs.Attribute):
        return BadRequest(f"invalid payload: payload.{wire_name(context)}{'.' + at if at else ''}: {message}")
    return FieldError(message, at)


# Each rule is a cattrs structure hook ``(value, type)`` and an attrs converter ``(value, field)``
# alike. JSON null is the zero value, as Go decodes it (and None is, in Python).


def strict_str(value: Any, context: Any) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    raise refused("expected a string", context)


def strict_int(value: Any, context: Any) -> int:
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:
        return value
    if value is None:
        return 0
    raise refused("expected an integer" if type(value) is not int else "integer out of the int64 range", context)


def strict_bool(value: Any, context: Any) -> bool:
    if type(value) is bool:
        return value
    if value is None:
        return False
    raise refused("expected true or false", context)


def strict_str_map(value: Any, context: Any) -> StrMap:
    if value is None:
        return {}
    if type(value) is not dict:
        raise refused("expected an object of string values", context)
    for key, item in value.items():
        if type(item) is not str:
            raise refused(f"expected a string value for key {key!r}", context)
    return value


def strict_str_list(value: Any, context: Any) -> List[str]:
    if value is None:
        return []
    if type(value) is not list:
        raise refused("expected an array of strings", context)
    for item in value:
        if type(item) is not str:
            raise refused("expected an array of strings", context)
    return value


# Canonical base64 (what b64encode gives): 4-character groups, and a padded last group whose
# unused low bits are zero. Matching it costs a fraction of a decode and re-encode.
_CANONICAL_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?")


def is_canonical_base64(text: str) -> bool:
    return _CANONICAL_BASE64.fullmatch(text) is not None


def strict_base64(value: Any, context: Any) -> Optional[str]:
    """Base64 data in canonical form (unused trailing bits dropped), or None for no bytes."""
    if value is None:
        return None
    if type(value) is not str:
        raise refused("expected a base64 string", context)
    if _CANONICAL_BASE64.fullmatch(value):
        return value or None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise refused("invalid base64 (standard alphabet, padded)", context) from None
    # Python < 3.11 ignores '=' beyond the padding ("aGk==" is b"hi"); Go's StdEncoding and
    # this check refuse it on every Python.
    if len(value) % 4 or value.endswith("==="):
        raise refused("invalid base64 (standard alphabet, padded)", context)
    return base64.b64encode(raw).decode("ascii") if raw else None


def json_value(value: Any, context: Any) -> Any:
    """A free-form field (``recv``): any JSON data within the request limit (see ``limits``).

    Values decoded from an envelope passed the limit already; this holds values built in
    Python to the same rule, so nothing the journal cannot write and replay gets in.
    """
    try:
        check_value(value, "", PAYLOAD_DEPTH)
    except JsonLimitError as exc:
        raise refused(f"{exc.reason} (at {exc.path.lstrip('.')})" if exc.path else exc.reason, context) from None
    return value


def _rule(fn: Callable[[Any, Any], Any]) -> "attrs.Converter":
    return attrs.Converter(fn, takes_field=True)


TEXT = _rule(strict_str)
INT64 = _rule(strict_int)
FLAG = _rule(strict_bool)
STR_MAP = _rule(strict_str_map)
STR_LIST = _rule(strict_str_list)
JSON = _rule(json_value)
