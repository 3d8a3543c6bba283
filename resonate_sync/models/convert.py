"""The two converters, built once from the field declarations of every attrs model.

* ``WIRE`` speaks the exact JSON of PROTOCOL.md: wire names, keys omitted when empty (Go
  ``omitempty``), internal fields never serialised, and strict structuring (a string where an
  int64 belongs, a float, an int64 overflow, bad base64 → :class:`~resonate_sync.errors.BadRequest`
  naming the field path).
* ``STORE`` writes and reads every field, internal ones included, in camelCase, for the journal
  and snapshots; it round-trips exactly.

Both register one hook factory on ``attrs.has`` that reads each field's wire rule
(:func:`.fields.wire_rule`), so a new model needs no registration here.
"""

from typing import Any, Callable, Dict, List, Optional, Type, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.json import make_converter

from ..errors import BadRequest
from .entities import EMPTY_VALUE, Value
from .fields import (
    Base64,
    FieldError,
    StrMap,
    camel,
    is_canonical_base64,
    json_value,
    refused,
    strict_base64,
    strict_bool,
    strict_int,
    strict_str,
    strict_str_list,
    strict_str_map,
    wire_name,
    wire_rule,
)
from .records import RECORD_NAMES, RECORD_TYPES, Record

__all__ = [
    "WIRE",
    "STORE",
    "VALUE",
    "structure_request",
    "unstructure",
    "wire_names",
    "record_to_json",
    "record_from_json",
]

T = TypeVar("T")


def _trusted(value: Any, _: Any) -> Any:
    return value


def _as_is(value: Any) -> Any:
    return value


def wire_names(cls: type) -> Dict[str, str]:
    """Attribute name → JSON key on the wire, for a model or request class."""
    return {a.name: wire_name(a) for a in attrs.fields(cls)}


def _wire_structure_fn(cls: type, conv: cattrs.Converter, detailed: Any = "from_converter") -> Any:
    """cattrs' generated structure function for ``cls``, reading its wire names.

    ``detailed``: collect every field's error (True), stop at the first (False), or the converter's setting.
    """
    renames = {name: override(rename=key) for name, key in wire_names(cls).items()}
    return make_dict_structure_fn(cls, conv, _cattrs_detailed_validation=detailed, **renames)


def _wire_unstructure_fn(cls: type, conv: cattrs.Converter) -> Any:
    overrides = {}
    for a in attrs.fields(cls):
        rule = wire_rule(a)
        if rule.internal:
            overrides[a.name] = override(omit=True)
        else:
            overrides[a.name] = override(rename=wire_name(a), omit_if_default=not rule.always)
    return make_dict_unstructure_fn(cls, conv, **overrides)


def _value_hook(structure: Callable[[Any, type], Value]) -> Callable[[Any, Any], Value]:
    """A Value: null and empty objects are the one empty Value; anything but an object is refused."""

    def hook(value: Any, _: Any) -> Value:
        if value is None:
            return EMPTY_VALUE
        if type(value) is not dict:  # cattrs would read a string or list as an empty object
            raise FieldError("expected an object with headers and data")
        result = structure(value, Value)
        return EMPTY_VALUE if result.is_empty else result

    return hook


def _is_str_list(t: Any) -> bool:
    return t == List[str]


def _build_wire() -> cattrs.Converter:
    conv = make_converter()
    conv.register_structure_hook(str, strict_str)
    conv.register_structure_hook(int, strict_int)
    conv.register_structure_hook(bool, strict_bool)
    conv.register_structure_hook(Base64, strict_base64)
    conv.register_structure_hook_func(lambda t: t == Optional[Base64], strict_base64)
    conv.register_structure_hook_func(lambda t: t == StrMap, strict_str_map)
    conv.register_structure_hook_func(_is_str_list, strict_str_list)
    conv.register_structure_hook_func(lambda t: t is Any, json_value)
    conv.register_unstructure_hook_func(lambda t: t is Any, _as_is)
    # Responses are structured and requests unstructured too: the client speaks the same wire.
    conv.register_structure_hook_factory(attrs.has, lambda cls: _wire_structure_fn(cls, conv, detailed=True))
    conv.register_unstructure_hook_factory(attrs.has, lambda cls: _wire_unstructure_fn(cls, conv))
    return conv


def _build_store() -> cattrs.Converter:
    """The journal's converter: every field under its camelCase name, no re-validation.

    Stored records were validated when their request came in and are covered by the
    journal's checksums, so structuring them trusts scalars (no base64 re-check, no int64
    range test): recovery of a large journal spends its time on JSON, not on checks.
    """
    conv = make_converter()
    for scalar in (str, int, bool, Base64):
        conv.register_structure_hook(scalar, _trusted)
    conv.register_structure_hook_func(lambda t: t == Optional[Base64], _trusted)
    conv.register_structure_hook_func(lambda t: t == StrMap or _is_str_list(t) or t is Any, _trusted)
    conv.register_unstructure_hook_func(lambda t: t is Any, _as_is)

    def renames(cls: type) -> Dict[str, Any]:
        return {a.name: override(rename=camel(a.name)) for a in attrs.fields(cls)}

    conv.register_structure_hook_factory(attrs.has, lambda cls: make_dict_structure_fn(cls, conv, **renames(cls)))
    conv.register_unstructure_hook_factory(attrs.has, lambda cls: make_dict_unstructure_fn(cls, conv, **renames(cls)))
    return conv


WIRE = _build_wire()
STORE = _build_store()
_structure_value = _value_hook(_wire_structure_fn(Value, WIRE, detailed=True))
WIRE.register_structure_hook(Value, _structure_value)


def to_value(value: Any, field: "attrs.Attribute") -> Value:
    """A request's Value from a Value, its wire object or None, with its data in canonical form."""
    if value is EMPTY_VALUE or value is None:
        return EMPTY_VALUE
    if type(value) is Value:
        headers, data = value.headers, value.data
        if (
            type(headers) is dict
            and all(type(item) is str for item in headers.values())
            and (data is None or (type(data) is str and data and is_canonical_base64(data)))
        ):
            return value if headers or data else EMPTY_VALUE
        value = {"headers": headers, "data": data}
    try:
        return _structure_value(value, Value)
    except FieldError as exc:
        raise refused(str(exc), field, exc.at) from None
    except cattrs.ClassValidationError as exc:
        raise _bad_payload(exc, f"payload.{wire_name(field)}") from None


VALUE = attrs.Converter(to_value, takes_field=True)
"""The converter of a request's Value field."""


class _FirstPass(dict):
    """Per request class, a structure function that stops at the first bad field (built on first use).

    It hands each value to the request's own field converters (``fields.TEXT``…), which are
    WIRE's structure hooks, so it accepts and builds exactly what WIRE does, checking each field
    once; it skips cattrs' per-field error collection (about 1 us of a promises.create). On any
    failure :func:`structure_request` runs WIRE's detailed function for the message.
    """

    def __missing__(self, cls: type) -> Any:
        renames = {name: override(rename=key) for name, key in wire_names(cls).items()}
        fn = self[cls] = make_dict_structure_fn(
            cls, WIRE, _cattrs_detailed_validation=False, _cattrs_prefer_attrib_converters=True, **renames
        )
        return fn


_FAST_REQUESTS = _FirstPass()


def _format_error(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, FieldError):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field missing"
    return cattrs.v.format_exception(exc, type_)


def structure_request(payload: Any, cls: Type[T]) -> T:
    """Decode an operation payload into its request model, strictly.

    A payload of JSON ``null`` decodes as ``{}`` (Go behaviour); anything but an object is
    rejected. Unknown keys are ignored. Raises :class:`BadRequest` with ``invalid payload: …``
    naming every offending field path in wire (camelCase) names.
    """
    if payload is None:
        payload = {}
    if type(payload) is not dict:
        raise BadRequest("invalid payload: payload must be a JSON object")
    try:
        return _FAST_REQUESTS[cls](payload, cls)
    except Exception:  # noqa: S110  the detailed pass below names every bad field
        pass
    try:
        return WIRE.structure(payload, cls)
    except cattrs.ClassValidationError as exc:
        raise _bad_payload(exc, "payload") from None
    except FieldError as exc:
        raise BadRequest(f"invalid payload: {exc}") from None


def _bad_payload(exc: cattrs.ClassValidationError, path: str) -> BadRequest:
    messages = cattrs.transform_error(exc, path=path, format_exception=_format_error)
    return BadRequest("invalid payload: " + "; ".join(_wire_path(m) for m in messages))


def _wire_path(message: str) -> str:
    """``expected an integer @ payload.task_ttl`` → ``payload.taskTtl: expected an integer``."""
    text, _, path = message.rpartition(" @ ")
    return f"{'.'.join(camel(part) for part in path.split('.'))}: {text}"


def unstructure(obj: Any) -> Any:
    """The wire JSON (dicts, lists, scalars) of a model or response."""
    return WIRE.unstructure(obj)


def record_to_json(record: Record) -> Dict[str, Any]:
    """A journal record as a JSON object: ``{"type": <name>, "data": {...}}``."""
    return {"type": RECORD_NAMES[type(record)], "data": STORE.unstructure(record)}


def record_from_json(obj: Dict[str, Any]) -> Record:
    """The inverse of :func:`record_to_json`."""
    return STORE.structure(obj["data"], RECORD_TYPES[obj["type"]])
