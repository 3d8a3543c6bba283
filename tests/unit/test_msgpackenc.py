"""MessagePack requests are held to exactly the limit JSON requests are: same values in, same refusals out."""

from __future__ import annotations

import json
from typing import Any, Tuple

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resonate_sync import limits, msgpackenc
from resonate_sync.api import JSON, MSGPACK, encoding_for, handle
from resonate_sync.core import Resonate

FAR = 4_102_444_800_000

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()  # NaN and infinities included: both encodings must refuse them at the same path
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=8)  # lone surrogates included
)
keys = st.text(st.characters(codec=None, exclude_categories=()), max_size=4)
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3), max_leaves=40)


def deep(levels: int) -> Any:
    value: Any = None
    for _ in range(levels):
        value = {"d": value}
    return value


def outcome(decode, raw) -> Tuple[str, Any]:
    try:
        return "ok", decode(raw)
    except limits.JsonLimitError as exc:
        return "refused", exc.path


class TestSameLimitAsJson:
    @settings(max_examples=300, deadline=None)
    @given(document=documents | st.integers(min_value=25, max_value=40).map(deep))
    def test_json_and_msgpack_agree(self, document):
        """A document decodes to the same value in both encodings, or is refused in both at the same path."""
        as_json = json.dumps(document).encode()  # ensure_ascii: a lone surrogate becomes a \\ud800 escape
        as_msgpack = msgpack.packb(document, unicode_errors="surrogatepass")
        from_json = outcome(lambda raw: limits.loads(raw.decode()), as_json)
        from_msgpack = outcome(msgpackenc.loads, as_msgpack)
        if from_json[0] == "ok" and from_msgpack[0] == "ok":
            assert json.dumps(from_msgpack[1]) == json.dumps(from_json[1])  # NaN-free here, so equal text is equal values
        else:
            assert from_msgpack == from_json


class TestWhatOnlyMsgpackCarries:
    @pytest.mark.parametrize("value, path, reason", [
        ({"a": [1, b"x"]}, "a[1]", "bin"),
        ({"a": msgpack.ExtType(1, b"x")}, "a", "ext"),
        ({"a": msgpack.Timestamp(0, 0)}, "a", "ext"),
        ({"a": {7: "x"}}, "a", "keys must be strings, not int"),
        ({"a": {b"k": "x"}}, "a", "keys must be strings, not bytes"),
    ])  # fmt: skip
    def test_refused_naming_the_path(self, value, path, reason):
        """Bin, ext and timestamp values and keys that are not strings are refused at their path."""
        with pytest.raises(limits.JsonLimitError) as info:
            msgpackenc.loads(msgpack.packb(value))
        assert info.value.path == path and reason in info.value.reason

    @pytest.mark.parametrize("raw, path", [
        (b"\x81\xa1a\x81\x91\x01\xa1v", "a"),  # an array as a key
        (b"\x81\xa1a" + b"\x91" * 100_000 + b"\xc0", "a" + "[0]" * (limits.MAX_JSON_DEPTH - 1)),  # past the decoder's stack
    ])  # fmt: skip
    def test_what_the_decoder_cannot_build_is_still_named(self, raw, path):
        """Keys the decoder cannot hash and nesting past its own stack are found by a walk that names the path."""
        with pytest.raises(limits.JsonLimitError) as info:
            msgpackenc.loads(raw)
        assert info.value.path == path

    @pytest.mark.parametrize("raw", [b"", b"\xc1", b"\x81\xa1a", b"\x01\x02", b"\xa2\xff\xfe"])
    def test_broken_msgpack_is_a_value_error(self, raw):
        """Bytes that are not one whole MessagePack document raise ValueError (a 400 "invalid request format")."""
        with pytest.raises(ValueError, match="not a MessagePack document"):
            msgpackenc.loads(raw)


class TestEncodings:
    @pytest.mark.parametrize("header, encoding", [
        (None, JSON), ("", JSON), ("application/json", JSON), ("text/plain", JSON),
        ("application/msgpack", MSGPACK), ("Application/MsgPack; charset=x", MSGPACK),
    ])  # fmt: skip
    def test_the_content_type_selects_the_encoding(self, header, encoding):
        """application/msgpack (any case, parameters ignored) is MessagePack; anything else JSON."""
        assert encoding_for(header) is encoding

    def test_a_reply_comes_in_the_encoding_of_its_request(self):
        """The same request in either encoding gets the same reply document, in its own encoding."""
        core = Resonate()
        envelope = {"operation": "promises.create", "requestId": "r", "payload": {"id": "p", "timeout": FAR, "param": {"data": "aGk="}, "idempotencyKey": "k"}}
        from_json = json.loads(handle(core, json.dumps(envelope).encode()))
        from_msgpack = msgpack.unpackb(handle(core, msgpack.packb(envelope), encoding=MSGPACK))
        assert from_json["response"]["Status"] == 20100 and from_msgpack["response"]["Status"] == 20000  # a replay
        assert from_msgpack["response"]["Payload"] == from_json["response"]["Payload"]
        assert from_msgpack["response"]["Payload"]["promise"]["param"]["data"] == "aGk="  # base64 text in both
