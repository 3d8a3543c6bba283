"""Search in bounded work (PROTOCOL.md 8, 13.7): ids match in linear time, whatever the pattern."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core_situations import FAR, new_core
from resonate_sync.core.state import id_matcher

# Regex metacharacters, a newline (which `.` does not match without DOTALL) and `*` in ids too.
ID_CHARS = "ab.+?()[]{}^$|\\\n*"
PATTERN_CHARS = "*" + ID_CHARS


def regex_semantics(pattern: str, text: str) -> bool:
    """How patterns matched before: one ``.*`` per star, every other character escaped."""
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), text, re.DOTALL) is not None


@st.composite
def pattern_and_filling(draw):
    """A pattern and an id made from it by filling each star with some text (a match), maybe mutated."""
    pattern = draw(st.text(PATTERN_CHARS, max_size=8))
    pieces = pattern.split("*")
    text = pieces[0] + "".join(draw(st.text(ID_CHARS, max_size=3)) + piece for piece in pieces[1:])
    if text and draw(st.booleans()):
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.text(ID_CHARS, max_size=2)) + text[at + 1 :]
    return pattern, text


def ids(result) -> list:
    return [p.id for p in result.payload.promises]


class TestIdMatcher:
    """The id pattern matcher (8): `*` is the only wildcard, every other character matches itself."""

    @settings(max_examples=1500, deadline=None)
    @given(st.text(PATTERN_CHARS, max_size=8), st.text(ID_CHARS, max_size=12))
    def test_agrees_with_the_regex_semantics(self, pattern, text):
        """On any pattern and id, the matcher answers as the escaped regex with `.*` per star did."""
        assert id_matcher(pattern)(text) == regex_semantics(pattern, text)

    @settings(max_examples=1500, deadline=None)
    @given(pattern_and_filling())
    def test_agrees_on_ids_made_from_the_pattern(self, case):
        """On ids built to (nearly) match the pattern, the matcher answers as the regex did."""
        pattern, text = case
        assert id_matcher(pattern)(text) == regex_semantics(pattern, text)

    @pytest.mark.parametrize(
        "pattern, text, expected",
        [
            ("*" * 25 + "x", "a" * 40, False),
            ("*" * 25 + "x", "a" * 39 + "x", True),
            ("*" * 100 + "x", "a" * 200, False),
            ("*" * 100 + "x", "x" * 200, True),
            ("*a" * 25 + "*x", "a" * 40, False),
            ("*a" * 25 + "*x", "a" * 40 + "x", True),
            ("*a" * 25 + "*x", "a" * 24 + "x", False),
            ("*a*" * 30, "a" * 29, False),
            ("*a*" * 30, "b" + "a" * 30 + "b", True),
            ("a*a*a*a*a*a*a*a*b", "a" * 200, False),
            ("*ab*ab*ab*abc", "ab" * 100 + "c", True),
            ("*ab*ab*ab*abc", "ab" * 100, False),
        ],
    )
    def test_pathological_patterns(self, pattern, text, expected):
        """Patterns that make a backtracking regex explode (many stars, repeated pieces) answer correctly."""
        assert id_matcher(pattern)(text) is expected

    def test_pathological_search_through_the_core(self):
        """Both searches with 25 stars then `x` against 40-character ids find exactly the id ending in x."""
        core = new_core()
        for name in ("a" * 40, "b" * 39 + "x", "c" * 40):
            core.r.promises_create(id=name, timeout=FAR)
            core.r.schedules_create(id=name, cron="@daily", promise_id=name)
        pattern = "*" * 25 + "x"
        assert ids(core.r.promises_search(id=pattern)) == ["b" * 39 + "x"]
        assert [s.id for s in core.r.schedules_search(id=pattern).payload.schedules] == ["b" * 39 + "x"]

    def test_overlapping_prefix_and_suffix_do_not_share_characters(self):
        """`ab*ba` needs both pieces in full: `aba` has them only if they overlap, so it does not match."""
        match = id_matcher("ab*ba")
        assert (match("aba"), match("abba"), match("ab-ba")) == (False, True, True)
