"""The JSON of every model, request, response and journal record stays byte for byte what it was.

``data/wire-forms.json`` was written by the converters before they were rebuilt from field
declarations: for each class, one instance with every field set and one with every field at
its zero value, given as the constructor arguments, and the compact JSON text that the WIRE
converter (models, requests, responses) or the STORE converter (journal records) made of it.

Regenerate it only for an intended change of the JSON (a new class, say), and review the diff:
``python tests/unit/test_wire_forms.py``.
"""

import json
import os
import sys
import typing
from typing import Any, Dict, List, Tuple

import attrs
import pytest

from resonate_sync import models
from resonate_sync.jsonenc import compact_encoder

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "wire-forms.json")
INT64_MAX = 2**63 - 1

_encode = compact_encoder()

# Fields whose value must mean something for the instance to be a realistic one.
_FULL_BY_NAME: Dict[Tuple[str, str], Any] = {
    ("Promise", "state"): "RESOLVED",
    ("CompletePromiseRequest", "state"): "REJECTED_CANCELED",
    ("Task", "state"): models.TaskState.CLAIMED,
    ("SearchPromisesRequest", "states"): ["PENDING", "resolved"],
    ("Value", "data"): "eyJhIjoxfQ==",
    ("Mesg", "type"): "resume",
}
_ANY_FULL = {"type": "nats", "data": {"subject": "work", "nested": [1, {"x": None}], "ü": "✓"}}


def model_classes() -> List[type]:
    """Every attrs class ``resonate_sync.models`` exports, in name order."""
    return sorted(
        (obj for obj in vars(models).values() if isinstance(obj, type) and attrs.has(obj)
         and obj.__module__.startswith("resonate_sync.models")),
        key=lambda cls: cls.__name__,
    )  # fmt: skip


def _is_record(cls: type) -> bool:
    return cls in set(models.RECORD_TYPES.values())


def _spec(cls: type, full: bool, counter: List[int]) -> Dict[str, Any]:
    """Constructor arguments for ``cls`` as JSON: nested instances are ``{"$": class name, ...}``."""
    hints = typing.get_type_hints(cls)
    spec: Dict[str, Any] = {"$": cls.__name__}
    for field in attrs.fields(cls):
        spec[field.name] = _value(cls, field.name, hints[field.name], full, counter)
    return spec


def _value(owner: type, name: str, type_: Any, full: bool, counter: List[int]) -> Any:
    origin, args = typing.get_origin(type_), typing.get_args(type_)
    if origin is typing.Union and type(None) in args:
        if not full:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(owner, name, inner, full, counter)
    if full and (owner.__name__, name) in _FULL_BY_NAME:
        return _FULL_BY_NAME[(owner.__name__, name)]
    counter[0] += 1
    if type_ is Any:
        return _ANY_FULL if full else None
    if type_ is bool:
        return full
    if type_ is int:
        return (INT64_MAX - counter[0] if counter[0] % 2 else counter[0]) if full else 0
    if type_ is str or getattr(type_, "__supertype__", None) is str:
        return f"{name}-{counter[0]} ü" if full else ""
    if origin in (dict, typing.Dict):
        return {"k": f"v{counter[0]}", "resonate:invoke": "default", "": ""} if full else {}
    if origin in (list, typing.List):
        (item,) = args
        if item is str:
            return [f"s{counter[0]}", ""] if full else []
        return [_spec(item, True, counter), _spec(item, False, counter)] if full else []
    if attrs.has(type_):
        return _spec(type_, full, counter)
    raise TypeError(f"no sample value for {owner.__name__}.{name}: {type_!r}")


def build(spec: Any) -> Any:
    """The instance a spec describes."""
    if isinstance(spec, list):
        return [build(item) for item in spec]
    if isinstance(spec, dict) and "$" in spec:
        cls = getattr(models, spec["$"])
        return cls(**{k: build(v) for k, v in spec.items() if k != "$"})
    return spec


def json_text(obj: Any) -> str:
    """The compact JSON a record gets in the journal (STORE), or anything else on the wire (WIRE)."""
    if _is_record(type(obj)):
        return _encode(models.record_to_json(obj))
    return _encode(models.unstructure(obj))


def generate() -> List[Dict[str, Any]]:
    cases = []
    for cls in model_classes():
        for label, full in (("full", True), ("zero", False)):
            spec = _spec(cls, full, [0])
            cases.append({"class": cls.__name__, "case": label, "spec": spec, "json": json_text(build(spec))})
    return cases


def _load() -> List[Dict[str, Any]]:
    with open(FIXTURE, encoding="utf-8") as f:
        return json.load(f)


CASES = _load() if os.path.exists(FIXTURE) else []


class TestWireForms:
    """The converters' output against the fixture written before they were rebuilt."""

    def test_every_model_class_has_cases(self):
        """Each attrs class that resonate_sync.models exports is in the fixture, and nothing else is."""
        assert {case["class"] for case in CASES} == {cls.__name__ for cls in model_classes()}

    @pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['class']}-{c['case']}")
    def test_json_is_unchanged(self, case):
        """The instance's JSON text is byte for byte the recorded one (key order included)."""
        assert json_text(build(case["spec"])) == case["json"]


if __name__ == "__main__":
    with open(FIXTURE, "w", encoding="utf-8") as out:
        json.dump(generate(), out, indent=1, ensure_ascii=False)
        out.write("\n")
    print(f"wrote {FIXTURE}", file=sys.stderr)
