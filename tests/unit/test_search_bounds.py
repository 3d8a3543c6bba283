"""Search in bounded work (PROTOCOL.md 8, 13.7): ids match in linear time, and one request examines
a bounded number of stored ids, handing out a cursor to the rest."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core_situations import FAR, NOW, Core, new_core
from resonate_sync.core import CoreSettings
from resonate_sync.core.state import id_matcher, scan_cost
from resonate_sync.models import PromiseState as PS

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


def walk(search, **query) -> list:
    """Every page of a search, following the cursors; fails if the cursors do not come to an end."""
    pages = [search(**query)]
    for _ in range(10_000):
        if not pages[-1].payload.cursor:
            return pages
        pages.append(search(cursor=pages[-1].payload.cursor))
    raise AssertionError("search cursors did not come to an end")


def promise_pages(core: Core, **query) -> list:
    return [ids(page) for page in walk(core.r.promises_search, **query)]


def schedule_pages(core: Core, **query) -> list:
    return [[s.id for s in page.payload.schedules] for page in walk(core.r.schedules_search, **query)]


class TestScanBound:
    """One search request does a bounded amount of work (`search_scan_limit` units); a cursor leads on to the rest."""

    def stored(self, *names: str, budget: int) -> Core:
        core = new_core(search_scan_limit=budget)
        for name in names:
            core.r.promises_create(id=name, timeout=FAR)
        return core

    NEEDLES_UNDER_HAY = tuple(f"needle-{i}" for i in range(3)) + tuple(f"hay-{i}" for i in range(10))

    def test_scan_spends_its_budget_then_says_where_it_stopped(self):
        """Each id costs scan_cost(pattern) units; when they are spent, `resume` is the last examined id's sort id."""
        state = self.stored(*(f"p{i}" for i in range(10)), budget=1).r.state
        sort_id = {p.id: p.sort_id for p in state.promises.values()}
        for pattern, cost, last_examined in (("*x", 1, "p4"), ("**a*b**x", 3, "p8"), ("*a*b*c*d*e*x", 6, "p9")):
            assert scan_cost(pattern) == cost
            candidates = state.search_promises(pattern, None, 6)
            assert list(candidates) == [] and candidates.resume == sort_id[last_examined]
        candidates = state.search_promises("*x", sort_id["p2"], 6)
        assert list(candidates) == [] and candidates.resume is None

    def test_partial_page_carries_a_cursor(self):
        """When the work runs out before the page is full, the page holds what was found, and a cursor."""
        core = self.stored(*self.NEEDLES_UNDER_HAY, budget=8)
        first = core.r.promises_search(id="*-2", limit=10)
        assert ids(first) == ["hay-2"] and first.payload.cursor

    def test_a_page_may_be_empty_and_still_lead_on(self):
        """A page whose scan found nothing yet is empty with a cursor; paging on finds the matches."""
        core = self.stored(*self.NEEDLES_UNDER_HAY, budget=5)
        pages = promise_pages(core, id="*e-*", limit=10)
        assert pages[0] == [] and len(pages) > 1
        assert [i for page in pages for i in page] == ["needle-2", "needle-1", "needle-0"]

    def test_paging_reaches_every_match_once_newest_first(self):
        """Following the cursors of pages cut short yields the unbounded answer, in order, pages within limit."""
        core = self.stored(*self.NEEDLES_UNDER_HAY, budget=3)
        pages = promise_pages(core, id="*-*", limit=4)
        everything = [f"hay-{i}" for i in range(9, -1, -1)] + ["needle-2", "needle-1", "needle-0"]
        assert [i for page in pages for i in page] == everything
        assert all(len(page) <= 4 for page in pages)

    def test_pieces_between_stars_cost_more(self):
        """A pattern with literal pieces between stars examines fewer ids per page than one without."""
        core = self.stored(*self.NEEDLES_UNDER_HAY, budget=20)
        assert len(promise_pages(core, id="*x")) == 1
        assert len(promise_pages(core, id="*a*b*c*x")) > 1

    def test_filters_count_towards_the_budget(self):
        """Ids that match the pattern but not the tags or states are charged too: such a search takes several pages."""
        core = new_core(search_scan_limit=20)
        core.r.promises_create(id="p-old", timeout=FAR, tags={"keep": "1"})
        for i in range(12):
            core.r.promises_create(id=f"p-{i}", timeout=FAR)
        core.r.promises_complete(id="p-old", state=PS.RESOLVED)
        for query in ({"tags": {"keep": "1"}}, {"states": ["RESOLVED"]}):
            pages = promise_pages(core, id="*", **query)
            assert pages[0] == [] and [i for page in pages for i in page] == ["p-old"]

    @pytest.mark.parametrize(
        "pattern, expected", [("needle/*", ["needle/2", "needle/1", "needle/0"]), ("needle/*2", ["needle/2"])]
    )
    def test_a_selective_prefix_is_answered_from_the_id_index(self, pattern, expected):
        """A pattern whose literal prefix selects few ids is answered in one page, however many more ids are newer."""
        core = self.stored(*(f"needle/{i}" for i in range(3)), *(f"hay/{i:02}" for i in range(60)), budget=30)
        page = core.r.promises_search(id=pattern)
        assert ids(page) == expected and page.payload.cursor is None
        assert promise_pages(core, id="*" + pattern)[0] == [], "without the prefix the same budget does not reach them"

    def test_lazy_timeouts_apply_to_what_a_page_returns(self):
        """Expired promises found on a page cut short are timed out before they are shown."""
        core = new_core(search_scan_limit=2)
        core.r.promises_create(id="old", timeout=NOW + 10)
        for i in range(5):
            core.r.promises_create(id=f"new-{i}", timeout=FAR)
        core.advance(10)
        pages = walk(core.r.promises_search, id="*ld")
        shown = [p for page in pages for p in page.payload.promises]
        assert len(pages) > 1 and [(p.id, p.state) for p in shown] == [("old", PS.REJECTED_TIMEDOUT)]

    def test_schedules_are_bounded_the_same_way(self):
        """schedules.search does bounded work per page too; its cursors reach every match once, also after a delete."""
        core = new_core(search_scan_limit=2)
        for name in ("s-old-a", "s-old-b", "x1", "x2", "x3", "x4", "x5"):
            core.r.schedules_create(id=name, cron="@daily", promise_id=name)
        pages = schedule_pages(core, id="s-*")
        assert pages[0] == [] and [i for page in pages for i in page] == ["s-old-b", "s-old-a"]
        core.r.schedules_delete(id="x3")
        pages = schedule_pages(core, id="*", limit=4)
        assert len(pages) > 1 and [i for page in pages for i in page] == ["x5", "x4", "x2", "x1", "s-old-b", "s-old-a"]

    def test_budget_is_at_least_one_unit(self):
        """A search_scan_limit below 1 could never make progress, so it is refused."""
        with pytest.raises(ValueError):
            CoreSettings(search_scan_limit=0)

    @settings(max_examples=150, deadline=None)
    @given(
        names=st.lists(st.text("ab-", min_size=1, max_size=4), min_size=0, max_size=25, unique=True),
        pattern=st.text("ab-*", min_size=1, max_size=5),
        budget=st.integers(1, 12),
        limit=st.integers(1, 4),
    )
    def test_any_budget_pages_to_the_unbounded_answer(self, names, pattern, budget, limit):
        """For any ids, pattern, budget and limit, the pages together are the unbounded answer, pages within limit."""
        bounded, unbounded = new_core(search_scan_limit=budget), new_core()
        for core in (bounded, unbounded):
            for name in names:
                core.r.promises_create(id=name, timeout=FAR)
                core.r.schedules_create(id=name, cron="@daily", promise_id=name)
        for pages_of in (promise_pages, schedule_pages):
            (expected,) = pages_of(unbounded, id=pattern, limit=100)
            pages = pages_of(bounded, id=pattern, limit=limit)
            assert [i for page in pages for i in page] == expected
            assert all(len(page) <= limit for page in pages)
            assert len(pages) <= len(names) + 1, "a page examined nothing"
