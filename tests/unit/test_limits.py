"""The one limit on request JSON (depth, numbers), and that the journal writes and replays all it lets through."""

from __future__ import annotations

import json

import pytest

from resonate_sync.api import handle
from resonate_sync.core import Resonate
from resonate_sync.errors import Status
from resonate_sync.journal import Journal
from resonate_sync.limits import MAX_JSON_DEPTH, PAYLOAD_DEPTH, JsonLimitError, check_value, loads

FAR = 4_102_444_800_000


def nested(levels: int, leaf: object = 1) -> object:
    """``levels`` objects, one inside the other: ``{"a": {"a": … leaf}}``."""
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


def callback_envelope(recv: object) -> bytes:
    return json.dumps({
        "operation": "promises.callback",
        "payload": {"promiseId": "p", "rootPromiseId": "root", "recv": recv, "timeout": FAR},
    }).encode()


def reply(core: Resonate, raw: bytes) -> dict:
    return json.loads(handle(core, raw))


def open_core(path) -> Resonate:
    journal = Journal(str(path))
    recovery = journal.open()
    return Resonate.recover(recovery.snapshot, recovery.records, journal=journal)


class TestDepth:
    def test_document_at_the_limit_decodes(self):
        """A document of exactly MAX_JSON_DEPTH levels decodes to itself."""
        value = nested(MAX_JSON_DEPTH)
        assert loads(json.dumps(value)) == value

    def test_one_level_past_the_limit_names_the_path(self):
        """One level more is refused, and the error names where the limit was passed."""
        with pytest.raises(JsonLimitError) as caught:
            loads(json.dumps(nested(MAX_JSON_DEPTH + 1)))
        assert caught.value.kind == "depth"
        assert caught.value.path == ".".join(["a"] * MAX_JSON_DEPTH)

    def test_arrays_count_and_paths_show_indexes(self):
        """Arrays are levels too, and the path names their indexes."""
        text = json.dumps({"x": [0, [[[1]]]]})
        with pytest.raises(JsonLimitError) as caught:
            loads(text, depth=MAX_JSON_DEPTH - 3)
        assert caught.value.path == "x[1][0]"

    @pytest.mark.parametrize("levels", [1_000, 100_000, 1_000_000])
    def test_very_deep_documents_are_refused_without_recursion(self, levels):
        """However deep, a document is refused by one scan, never by a RecursionError."""
        with pytest.raises(JsonLimitError):
            loads("[" * levels + "]" * levels)
        with pytest.raises(JsonLimitError):
            loads('{"a":' * levels + "1" + "}" * levels)

    def test_brackets_inside_strings_do_not_count(self):
        """Brackets in strings (escaped quotes included) are text, not nesting."""
        value = {"s": "[{" * 100 + '\\"[' * 50, "t": ["]]]}}}"]}
        assert loads(json.dumps(value)) == value

    def test_depth_counts_the_levels_above(self):
        """``depth`` counts levels above the text: the same text passes or fails by where it stands."""
        text = json.dumps(nested(3))
        assert loads(text, depth=MAX_JSON_DEPTH - 3) == nested(3)
        with pytest.raises(JsonLimitError) as caught:
            loads(text, root="payload.tags.t", depth=MAX_JSON_DEPTH - 2)
        assert caught.value.path == "payload.tags.t.a.a"

    def test_python_values_are_held_to_the_same_depth(self):
        """check_value applies the same limit to values built in Python, iteratively."""
        check_value(nested(MAX_JSON_DEPTH))
        with pytest.raises(JsonLimitError):
            check_value(nested(MAX_JSON_DEPTH + 1))
        with pytest.raises(JsonLimitError):
            check_value(nested(100_000))


class TestNumbers:
    @pytest.mark.parametrize("text", ["1e400", "-1e400", "1E999", "123456789e305"])
    def test_floats_that_overflow_are_refused(self, text):
        """A number that overflows a double is refused, with its path."""
        with pytest.raises(JsonLimitError) as caught:
            loads('{"n": [%s]}' % text)
        assert caught.value.path == "n[0]" and caught.value.kind == "number"

    @pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
    def test_non_json_constants_are_refused(self, text):
        """NaN and Infinity literals are not JSON."""
        with pytest.raises(JsonLimitError) as caught:
            loads('{"n": %s}' % text)
        assert caught.value.path == "n" and caught.value.kind == "constant"

    @pytest.mark.parametrize("number", [-(2**63), 2**63 - 1, 2**64 - 1, 0, -1, 1.5e300, -0.0, 5e-324])
    def test_numbers_in_range_decode_exactly(self, number):
        """Integers in [-2^63, 2^64-1] and finite floats decode to themselves."""
        assert loads(json.dumps({"n": number})) == {"n": number}

    @pytest.mark.parametrize("number", [-(2**63) - 1, 2**64, 10**19 * 10, -(10**40)])
    def test_integers_out_of_range_are_refused(self, number):
        """Integers outside [-2^63, 2^64-1] are refused, in text and in Python values."""
        with pytest.raises(JsonLimitError):
            loads(json.dumps({"n": number}))
        with pytest.raises(JsonLimitError):
            check_value({"n": number})

    def test_a_million_digit_integer_is_refused_by_length(self):
        """An integer too long is refused before int() could spend quadratic time on it."""
        with pytest.raises(JsonLimitError) as caught:
            loads('{"n": ' + "9" * 1_000_000 + "}")
        assert len(str(caught.value)) < 400

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
    def test_python_non_finite_floats_are_refused(self, value):
        """check_value refuses non-finite floats."""
        with pytest.raises(JsonLimitError):
            check_value([value])

    @pytest.mark.parametrize("value", [{1: "x"}, {"a": object()}, {"a": b"bytes"}, {"a": (1, 2)}])
    def test_python_values_that_are_not_json_are_refused(self, value):
        """Only dicts with string keys, lists, strings, numbers, booleans and None are JSON data."""
        with pytest.raises(JsonLimitError) as caught:
            check_value(value)
        assert caught.value.kind == "type"


class TestRequests:
    def test_recv_at_the_limit_is_acknowledged_and_replayed(self, tmp_path):
        """A recv nested to the limit is acknowledged, journaled, and read back identically after a restart."""
        core = open_core(tmp_path / "j")
        core.promises_create(id="p", timeout=FAR)
        core.promises_create(id="root", timeout=FAR)
        recv = {"type": "x", "data": nested(MAX_JSON_DEPTH - PAYLOAD_DEPTH - 2, [1e308, -(2**63), 2**64 - 1, "\ud800"])}
        answer = reply(core, callback_envelope(recv))
        assert answer["success"], answer
        core._journal.close()
        recovered = open_core(tmp_path / "j")
        assert [c.recv for c in recovered.state.callbacks["p"].values()] == [recv]

    def test_recv_one_past_the_limit_is_a_400_naming_it(self, tmp_path):
        """One level more is a 400 naming payload.recv, nothing is stored, and the server keeps serving."""
        core = open_core(tmp_path / "j")
        core.promises_create(id="p", timeout=FAR)
        core.promises_create(id="root", timeout=FAR)
        recv = {"type": "x", "data": nested(MAX_JSON_DEPTH - PAYLOAD_DEPTH - 1, [1])}
        answer = reply(core, callback_envelope(recv))
        assert answer["error"]["code"] == 400
        assert answer["error"]["message"].startswith("invalid payload: payload.recv.data.a")
        assert core.state.callbacks == {}
        assert reply(core, b'{"operation":"promises.read","payload":{"id":"p"}}')["success"]

    @pytest.mark.parametrize(
        "recv_text, named",
        [
            ('{"type":"x","data":{"n":1e400}}', "payload.recv.data.n"),
            ('{"type":"x","data":[' + "9" * 5000 + "]}", "payload.recv.data[0]"),
            ('{"type":"x","data":' + "[" * 1000 + "]" * 1000 + "}", "payload.recv.data"),
        ],
        ids=["1e400", "5000-digits", "1000-levels"],
    )
    def test_reported_attacks_are_400_and_the_server_keeps_serving(self, tmp_path, recv_text, named):
        """The recv values that once put the server into 500-until-restart are a 400 naming the field; creates still work and a restart recovers."""
        core = open_core(tmp_path / "j")
        core.promises_create(id="p", timeout=FAR)
        core.promises_create(id="root", timeout=FAR)
        for operation, payload in (
            ("promises.callback", '{"promiseId":"p","rootPromiseId":"root","timeout":%d,"recv":%s}' % (FAR, recv_text)),
            ("promises.subscribe", '{"id":"s","promiseId":"p","timeout":%d,"recv":%s}' % (FAR, recv_text)),
        ):
            raw = ('{"operation":"%s","payload":%s}' % (operation, payload)).encode()
            answer = reply(core, raw)
            assert answer["error"]["code"] == 400, answer
            assert named in answer["error"]["message"]
        tag = json.dumps({"operation": "promises.create", "payload": {
            "id": "q", "timeout": FAR, "tags": {"resonate:invoke": recv_text}}}).encode()
        answer = reply(core, tag)
        assert answer["error"]["code"] == 400
        assert "payload.tags.resonate:invoke" in answer["error"]["message"]
        assert reply(core, b'{"operation":"promises.create","payload":{"id":"after","timeout":%d}}' % FAR)["success"]
        core._journal.close()
        assert set(open_core(tmp_path / "j").state.promises) == {"p", "root", "after"}

    def test_recv_with_infinity_is_a_400(self):
        """An Infinity literal in a recv is a 400 naming where it stands."""
        core = Resonate()
        raw = b'{"operation":"promises.subscribe","payload":{"id":"s","promiseId":"p","recv":{"n":-Infinity}}}'
        answer = reply(core, raw)
        assert answer["error"]["code"] == 400 and "payload.recv.n" in answer["error"]["message"]

    def test_invoke_tag_with_nan_is_still_a_logical_receiver(self):
        """A resonate:invoke tag that is not JSON (NaN is not) stays a logical receiver, as in Go."""
        core = Resonate()
        result = core.promises_create(id="q", timeout=FAR, tags={"resonate:invoke": '{"type":"x","data":NaN}'})
        assert result.status == Status.CREATED
        assert core.state.tasks["__invoke:q"].recv == '{"type":"x","data":NaN}'


class TestEchoedFields:
    @pytest.mark.parametrize("field, limit", [("requestId", "MAX_REQUEST_ID_BYTES"), ("metadata", "MAX_METADATA_BYTES")])
    def test_echoed_fields_are_bounded_by_their_json_size(self, field, limit):
        """requestId and metadata, echoed by every reply, are a 400 past their JSON size limit, counted as encoded."""
        from resonate_sync.api import envelope

        bound = getattr(envelope, limit)
        core = Resonate()

        def send(text: str) -> dict:
            value = text if field == "requestId" else {"k": text}
            raw = json.dumps({"operation": "promises.read", field: value, "payload": {"id": "x"}}).encode()
            return reply(core, raw)

        overhead = 2 if field == "requestId" else len('{"k":""}')
        assert send("r" * (bound - overhead))["error"]["code"] == 404
        answer = send("r" * (bound - overhead + 1))
        assert answer["error"]["code"] == 400 and field in answer["error"]["message"]
        # Non-ASCII is escaped on the way out (\u00e9 is six bytes), so it counts six times.
        assert send("\u00e9" * ((bound - overhead) // 6))["error"]["code"] == 404
        assert send("\u00e9" * ((bound - overhead) // 6 + 1))["error"]["code"] == 400


@pytest.mark.parametrize("text, path", [
    ('{"":-9223372036854775809,"":null}', ""),
    ('{"n":1e400,"n":0}', "n"),
    ('{"a":{"b":[NaN]},"a":1}', "a.b[0]"),
    ('{"a":1,"a":{"b":18446744073709551616}}', "a.b"),
])  # fmt: skip
def test_a_refused_number_shadowed_by_a_repeated_key_is_still_a_400(text, path):
    """json keeps the last of a repeated key, but the refused number was read first: it is named, never a 500."""
    with pytest.raises(JsonLimitError) as caught:
        loads(text)
    assert caught.value.path == path
