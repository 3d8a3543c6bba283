"""compact_encoder gives exactly json.dumps' compact text, sorted or not, and refuses NaN when asked."""

import json
import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resonate_sync.jsonenc import compact_encoder

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),  # non-ASCII, control characters and lone surrogates included
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_same_text_as_json_dumps(value):
    """Every JSON value encodes to json.dumps' text, with and without sorted keys."""
    assert compact_encoder()(value) == json.dumps(value, separators=(",", ":"))
    assert compact_encoder(sort_keys=True, allow_nan=False)(value) == json.dumps(
        value, separators=(",", ":"), sort_keys=True, allow_nan=False
    )


@pytest.mark.parametrize("special", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_follow_allow_nan(special):
    """allow_nan=False refuses NaN and infinities like json.dumps does; the default writes them."""
    with pytest.raises(ValueError):
        compact_encoder(allow_nan=False)({"x": [special]})
    assert compact_encoder()({"x": special}) == json.dumps({"x": special}, separators=(",", ":"))


def test_a_value_json_cannot_encode_is_a_type_error():
    """bytes or objects are refused with TypeError, as json.dumps refuses them."""
    with pytest.raises(TypeError):
        compact_encoder()({"data": b"raw"})


def test_one_encoder_serves_many_threads():
    """The reused encoder keeps no state between calls: 8 threads encoding at once all get the right text."""
    encode = compact_encoder(sort_keys=True)
    docs = [{"id": f"p{i}", "n": i, "tags": {"b": str(i), "a": [i, {"z": None}]}} for i in range(200)]
    wrong = []

    def worker():
        for doc in docs * 5:
            if encode(doc) != json.dumps(doc, separators=(",", ":"), sort_keys=True):
                wrong.append(doc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong
