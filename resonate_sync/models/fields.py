"""How a model field is declared: its rule on the wire, and the rule its value must follow.

**Wire rules** live in the field's metadata (``attrs.field(metadata=ALWAYS)``) and are read by
the converters (``models.convert``):

* the JSON key is the camelCase name (``idempotency_key_for_create`` → ``idempotencyKeyForCreate``),
  unless ``wire(name=...)`` renames it;
* a key is omitted when its value is the field's default (Go ``omitempty``), unless the field is
  declared :data:`ALWAYS`; a field without a default is always present;
* an :data:`INTERNAL` field is never written on the wire (the journal keeps it).

**Value rules** (``expected an integer``…) are the WIRE converter's structure hooks: each
returns the value in its canonical form or raises :class:`FieldError`. JSON ``null`` is the zero
value, as Go decodes it.
"""

import base64
import binascii
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, NewType, Optional

import attrs

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
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Base64 = NewType("Base64", str)
"""A standard base64 string (RFC 4648 §4, padded), re-encoded canonically on input."""

StrMap = Dict[str, str]


class FieldError(ValueError):
    """A field's value breaks its rule; the message says the rule, cattrs adds the path."""


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


# --------------------------------------------------------------------------- value rules (structure hooks)


def strict_str(value: Any, _: Any) -> str:
    if value is None:  # Go decodes null into the zero value
        return ""
    if type(value) is not str:
        raise FieldError("expected a string")
    return value


def strict_int(value: Any, _: Any) -> int:
    if value is None:
        return 0
    if type(value) is not int:
        raise FieldError("expected an integer")
    if not INT64_MIN <= value <= INT64_MAX:
        raise FieldError("integer out of the int64 range")
    return value


def strict_bool(value: Any, _: Any) -> bool:
    if value is None:
        return False
    if type(value) is not bool:
        raise FieldError("expected true or false")
    return value


def strict_str_map(value: Any, _: Any) -> StrMap:
    if value is None:
        return {}
    if type(value) is not dict:
        raise FieldError("expected an object of string values")
    for key, item in value.items():
        if type(item) is not str:
            raise FieldError(f"expected a string value for key {key!r}")
    return value


def strict_str_list(value: Any, _: Any) -> List[str]:
    if value is None:
        return []
    if type(value) is not list:
        raise FieldError("expected an array of strings")
    for item in value:
        if type(item) is not str:
            raise FieldError("expected an array of strings")
    return value


def strict_base64(value: Any, _: Any) -> Optional[str]:
    if value is None:
        return None
    if type(value) is not str:
        raise FieldError("expected a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FieldError("invalid base64 (standard alphabet, padded)") from None
    # Python < 3.11 ignores '=' beyond the padding ("aGk==" is b"hi"); Go's StdEncoding and
    # this check refuse it on every Python.
    if len(value) % 4 or value.endswith("==="):
        raise FieldError("invalid base64 (standard alphabet, padded)")
    return base64.b64encode(raw).decode("ascii") if raw else None


def json_value(value: Any, _: Any) -> Any:
    """A free-form field (``recv``): any JSON data within the request limit (see ``limits``).

    Values decoded from an envelope passed the limit already; this holds values built in
    Python to the same rule, so nothing the journal cannot write and replay gets in.
    """
    try:
        check_value(value, "", PAYLOAD_DEPTH)
    except JsonLimitError as exc:
        raise FieldError(f"{exc.reason} (at {exc.path.lstrip('.')})" if exc.path else exc.reason) from None
    return value
