"""Replies fit in one NATS message: promise sizes, the write-time limit, search pages cut by size (13.7)."""

import base64
import json
import logging
from json.encoder import encode_basestring_ascii
from types import SimpleNamespace

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core_situations import FAR, NOW, error_of, new_core
from resonate_sync.api import handle
from resonate_sync.core.cursor import cursor_body, cursor_length, encode_cursor
from resonate_sync.core.sizes import (
    ENVELOPE_BYTES,
    ID_COPIES,
    fit_page,
    json_bytes,
    promise_bound,
    promise_bytes,
    promise_json_bytes,
    promise_limit,
    text_bound,
)
from resonate_sync.models import INT64_MAX, INT64_MIN, Promise, Value, unstructure
from resonate_sync.models import PromiseState as PS

# Every kind of character JSON escapes differently: plain, quote/backslash, control, DEL,
# other BMP, lone surrogates, and above U+FFFF (a surrogate pair on the wire).
TRICKY = ["a", '"', "\\", "\n", "\x01", "\x7f", "é", "\u2028", "\ud800", "\udfff", "😀"]
chars = st.one_of(st.sampled_from(TRICKY), st.characters(exclude_categories=()))
texts = st.text(chars, max_size=20)
maps = st.dictionaries(texts, texts, max_size=3)
values = st.builds(
    Value, headers=maps, data=st.one_of(st.none(), st.binary(min_size=1, max_size=30).map(lambda b: base64.b64encode(b).decode()))
)
ints = st.integers(INT64_MIN, INT64_MAX)
promises = st.builds(
    Promise,
    id=texts,
    state=st.sampled_from(PS.ALL),
    param=values,
    value=values,
    timeout=ints,
    idempotency_key_for_create=st.one_of(st.none(), texts),
    idempotency_key_for_complete=st.one_of(st.none(), texts),
    tags=maps,
    created_on=st.one_of(st.none(), ints),
    completed_on=st.one_of(st.none(), ints),
)


def data(size: int) -> str:
    return base64.b64encode(b"x" * size).decode()


def pending(promise_id: str, param: Value = Value(), tags=None, key=None) -> Promise:
    """The promise promises.create builds first in a new core, at NOW with timeout FAR."""
    return Promise(
        id=promise_id,
        state=PS.PENDING,
        param=param,
        timeout=FAR,
        idempotency_key_for_create=key,
        tags=tags or {},
        created_on=NOW,
        sort_id=1,
    )


class TestSizes:
    def test_limit_is_half_of_max_payload_less_the_envelope(self):
        """A claim reply's two promises and the envelope fit in max_payload."""
        assert promise_limit(65536) == (65536 - ENVELOPE_BYTES) // 2
        assert 2 * promise_limit(1048576) + ENVELOPE_BYTES <= 1048576
        assert promise_limit(100) == 0

    @pytest.mark.parametrize("char, escaped", [("a", 1), ('"', 2), ("\x01", 6), ("\x7f", 6), ("é", 6), ("\ud800", 6), ("😀", 12)])
    def test_text_bound_covers_each_kind_of_character(self, char, escaped):
        """ASCII escapes to at most 6 bytes a character, anything else to at most 12 (a surrogate pair)."""
        assert len(encode_basestring_ascii(char)) - 2 == escaped
        assert text_bound(char) >= escaped

    @given(texts)
    def test_text_bound_never_underestimates(self, text):
        """The bound from the length alone is at least the escaped length."""
        assert text_bound(text) >= len(encode_basestring_ascii(text)) - 2

    @given(texts, maps, st.lists(st.sampled_from(PS.ALL)), ints)
    def test_cursor_length_is_exact(self, pattern, tags, states, before):
        """A page reserves exactly a cursor's length, computed without signing it."""
        query = {"id": pattern, "states": states, "tags": tags, "limit": 100, "before": before}
        assert cursor_length(len(cursor_body("promises", query))) == len(encode_cursor(b"secret", "promises", query))

    @given(promises)
    def test_promise_bound_never_underestimates(self, promise):
        """The fast bound is at least what the promise counts, and at least its JSON (how pages count it)."""
        assert promise_bound(promise) >= promise_bytes(promise)
        assert promise_bound(promise) >= json_bytes(promise)

    @given(promises)
    def test_promise_bytes_are_exact(self, promise):
        """What a promise counts is exactly its JSON (timed out, if pending) and ID_COPIES escaped ids."""
        if promise.state == PS.PENDING:
            promise = attrs.evolve(promise, state=PS.REJECTED_TIMEDOUT, completed_on=promise.timeout)
        escaped_id = len(encode_basestring_ascii(promise.id)) - 2
        assert promise_bytes(promise) == json_bytes(promise) + ID_COPIES * escaped_id
        assert promise_json_bytes(promise) == json_bytes(promise)

    def test_promise_counts_its_json_and_its_id_again(self):
        """A completed promise counts its JSON plus ID_COPIES escaped ids."""
        promise = attrs.evolve(pending("é"), state=PS.RESOLVED, completed_on=NOW)
        assert promise_bytes(promise) == len(json.dumps(unstructure(promise), separators=(",", ":"))) + ID_COPIES * 6

    def test_pending_promise_counts_as_timed_out(self):
        """A pending promise is measured in its largest form without a value: REJECTED_TIMEDOUT with completedOn."""
        promise = pending("p")
        timed_out = attrs.evolve(promise, state=PS.REJECTED_TIMEDOUT, completed_on=FAR)
        assert promise_bytes(promise) == json_bytes(timed_out) + ID_COPIES * 1


class TestCreateLimit:
    @pytest.mark.parametrize(
        "promise_id, tags, headers",
        [
            ("plain", {}, {}),
            ("é😀\ud800", {"k\udfff": "v\x01"}, {}),
            ("p", {"tag": "😀" * 3}, {"h\u2028": '"\\'}),
        ],
    )
    def test_exactly_at_the_limit_is_created_and_one_byte_past_is_400(self, promise_id, tags, headers):
        """The limit is exact, whatever characters the id, tags and headers use."""
        param = Value(headers=headers, data=data(300))
        size = promise_bytes(pending(promise_id, param, tags))
        at_limit = new_core(max_promise_bytes=size)
        created = at_limit.r.promises_create(id=promise_id, timeout=FAR, param=param, tags=tags)
        assert created.payload.promise == pending(promise_id, param, tags)
        past = new_core(max_promise_bytes=size - 1)
        err = error_of(past.r.promises_create, id=promise_id, timeout=FAR, param=param, tags=tags)
        assert err.code == 400
        assert f"the promise would take {size} bytes of JSON in replies; at most {size - 1} fit" in err.message

    def test_refused_create_stores_nothing(self):
        """A 400 for size leaves no promise and no task behind: a read is 404."""
        core = new_core(max_promise_bytes=promise_limit(65536))
        err = error_of(
            core.r.promises_create, id="big", timeout=FAR, param=Value(data=data(40_000)), tags={"resonate:invoke": "nats://w"}
        )
        assert err.code == 400 and err.message.startswith("validation error: payload.param: ")
        assert error_of(core.r.promises_read, id="big").code == 404
        assert core.r.state.tasks == {}

    @pytest.mark.parametrize(
        "fields, named",
        [
            ({"id": "i" * 7_000}, "id"),
            ({"id": "p", "tags": {"t": "😀" * 3_000}}, "tags"),
            ({"id": "p", "idempotency_key": "k" * 31_000}, "idempotencyKey"),
            ({"id": "p", "param": Value(headers={"h": "v" * 31_000})}, "param"),
        ],
    )
    def test_error_names_the_largest_field(self, fields, named):
        """The message names the field taking the most bytes; an id counts with its copies."""
        core = new_core(max_promise_bytes=30_000)
        err = error_of(core.r.promises_create, timeout=FAR, **fields)
        assert err.message.startswith(f"validation error: payload.{named}: the promise would take ")

    def test_createtask_is_held_to_the_same_limit(self):
        """promises.createtask refuses the same promise, and claims no task."""
        core = new_core(max_promise_bytes=promise_limit(65536))
        err = error_of(
            core.r.promises_createtask,
            id="big",
            timeout=FAR,
            param=Value(data=data(40_000)),
            tags={"resonate:invoke": "nats://w"},
            task_process_id="worker",
            task_ttl=1_000,
        )
        assert err.code == 400 and "payload.param" in err.message
        assert core.r.state.promises == {} and core.r.state.tasks == {}

    def test_no_limit_without_a_setting(self):
        """The in-process core (max_promise_bytes 0) stores a promise of any size."""
        core = new_core()
        assert core.r.promises_create(id="big", timeout=FAR, param=Value(data=data(2_000_000))).status == 20100


class TestCompleteLimit:
    def test_completion_counts_param_and_value(self):
        """The completed promise holds param and value: exactly at the limit is fine, one byte more is 400."""
        param, value = Value(data=data(3_000)), Value(headers={"v": "x" * 100}, data=data(3_000))
        done = attrs.evolve(pending("p", param), state=PS.RESOLVED, value=value, completed_on=NOW)
        size = promise_bytes(done)
        core = new_core(max_promise_bytes=size)
        core.r.promises_create(id="p", timeout=FAR, param=param)
        assert core.r.promises_complete(id="p", state=PS.RESOLVED, value=value).payload.promise == done

        core = new_core(max_promise_bytes=size - 1)
        core.r.promises_create(id="p", timeout=FAR, param=param)
        err = error_of(core.r.promises_complete, id="p", state=PS.RESOLVED, value=value)
        assert err.code == 400 and err.message.startswith("validation error: payload.value: ")
        assert core.promise("p").state == PS.PENDING

    def test_refused_completion_leaves_callbacks_waiting(self):
        """Nothing of the completion happens: the callback stays and no resume task is made."""
        core = new_core(max_promise_bytes=promise_limit(65536))
        core.r.promises_create(id="root", timeout=FAR)
        core.r.promises_create(id="leaf", timeout=FAR)
        core.r.promises_callback(promise_id="leaf", root_promise_id="root", recv="nats://w", timeout=FAR)
        err = error_of(core.r.promises_complete, id="leaf", state=PS.RESOLVED, value=Value(data=data(40_000)))
        assert err.code == 400
        assert core.r.state.tasks == {} and core.r.state.callbacks["leaf"]


class TestScheduleLimit:
    def test_schedule_over_the_limit_is_400(self):
        """A schedule whose own JSON is over the limit is refused, naming its largest field."""
        core = new_core(max_promise_bytes=promise_limit(65536))
        err = error_of(core.r.schedules_create, id="s", cron="* * * * *", promise_id="p", description="d" * 40_000)
        assert err.message.startswith("validation error: payload.description: the schedule would take ")
        assert core.r.state.schedules == {}

    def test_promise_the_schedule_would_create_is_checked(self):
        """promiseId templates repeat the schedule id in each fired promise's id: measured as expanded."""
        core = new_core(max_promise_bytes=promise_limit(65536))
        err = error_of(core.r.schedules_create, id="s" * 1_000, cron="* * * * *", promise_id="{{.id}}" * 8)
        assert err.message.startswith("validation error: payload.promiseId: the promise would take ")

    def test_fired_promise_at_the_limit_is_created(self):
        """A schedule accepted at the limit fires promises that fit it."""
        limit = promise_limit(65536)
        core = new_core(max_promise_bytes=limit)
        param = Value(data=data(limit // 2))
        core.r.schedules_create(id="s", cron="* * * * *", promise_id="p-{{.timestamp}}", promise_param=param)
        core.advance(60_000)
        core.tick()
        (fired,) = core.r.state.promises.values()
        assert fired.param == param and promise_bytes(fired) <= limit


class TestSearchPages:
    def test_pages_are_cut_to_fit_and_every_promise_comes_once(self):
        """Big promises come a few per page; following the cursors yields each exactly once, newest first."""
        limit = promise_limit(65536)
        core = new_core(max_promise_bytes=limit)
        sizes = [10_000, 22_000, 3_000, 100, 22_000, 12_000, 7_000, 22_000, 0, 18_000]
        for i, size in enumerate(sizes):
            core.r.promises_create(id=f"p{i}", timeout=FAR, param=Value(data=data(size)) if size else Value())
        pages = self.all_pages(core, lambda **q: core.r.promises_search(**q).payload, "promises", id="p*", limit=100)
        seen = [p.id for page in pages for p in page.promises]
        assert seen == [f"p{i}" for i in reversed(range(len(sizes)))]
        assert len(pages) > 2
        for page in pages:
            assert self.used(page.promises, page.cursor) <= 2 * limit

    def test_a_cut_page_is_as_full_as_fits(self):
        """A page ends only where the next item would not fit; the cursor keeps the requested limit."""
        limit = promise_limit(65536)
        core = new_core(max_promise_bytes=limit)
        for i in range(5):
            core.r.promises_create(id=f"small{i}", timeout=FAR)
        for i in range(3):
            core.r.promises_create(id=f"big{i}", timeout=FAR, param=Value(data=data(20_000)))
        first = core.r.promises_search(id="*", limit=5).payload
        assert [p.id for p in first.promises] == ["big2", "big1"] and first.cursor
        big0 = core.promise("big0")
        assert self.used(first.promises + [big0], first.cursor) > 2 * limit
        second = core.r.promises_search(cursor=first.cursor).payload
        assert [p.id for p in second.promises] == ["big0", "small4", "small3", "small2", "small1"]
        assert second.cursor  # a full page: the requested limit of 5 still holds
        assert [p.id for p in core.r.promises_search(cursor=second.cursor).payload.promises] == ["small0"]

    def test_the_cursor_counts_against_the_page(self):
        """A long query makes a long cursor: items that fit alone are dropped from the end to make room for it.

        The last page has no cursor, so two promises fit there.
        """
        limit = promise_limit(65536)
        core = new_core(max_promise_bytes=limit)
        tags = {"t": "x" * 15_000}
        for i in range(4):
            core.r.promises_create(id=f"p{i}", timeout=FAR, tags=tags, param=Value(data=data(9_000)))
        pages = self.all_pages(core, lambda **q: core.r.promises_search(**q).payload, "promises", id="p*", tags=tags)
        assert [[p.id for p in page.promises] for page in pages] == [["p3"], ["p2"], ["p1", "p0"]]
        for page in pages:
            assert self.used(page.promises, page.cursor) <= 2 * limit
        two = pages[0].promises + pages[1].promises
        assert sum(json_bytes(p) + 1 for p in two) <= 2 * limit < self.used(two, pages[0].cursor)

    def test_pages_cut_by_work_and_by_size_together(self):
        """With a scan bound too, pages end by work (maybe empty) or by size; cursors still yield each match once."""
        limit = promise_limit(65536)
        core = new_core(max_promise_bytes=limit, search_scan_limit=40)
        for i in range(12):
            core.r.promises_create(id=f"a{i}", timeout=FAR, param=Value(data=data(20_000)))
            for j in range(60 if i % 4 == 0 else 0):
                core.r.promises_create(id=f"b{i}-{j}", timeout=FAR)
        search = core.r.promises_search
        pages = [search(id="*a*").payload]
        while pages[-1].cursor:
            pages.append(search(cursor=pages[-1].cursor).payload)
        assert [p.id for page in pages for p in page.promises] == [f"a{i}" for i in reversed(range(12))]
        assert any(not page.promises for page in pages)  # cut by work before any match
        # cut by size: pages of a run of a's end at two, as a third would not fit
        assert max(len(page.promises) for page in pages) == 2
        assert sum(json_bytes(core.promise(f"a{i}")) + 1 for i in range(3)) > 2 * limit
        for page in pages:
            assert self.used(page.promises, page.cursor) <= 2 * limit
        assert pages[-1].cursor is None

    def test_schedule_pages_are_cut_too(self):
        """schedules.search cuts its pages the same way."""
        limit = promise_limit(65536)
        core = new_core(max_promise_bytes=limit)
        for i in range(6):
            core.r.schedules_create(id=f"s{i}", cron="* * * * *", promise_id="p", promise_param=Value(data=data(20_000)))
        pages = self.all_pages(core, lambda **q: core.r.schedules_search(**q).payload, "schedules", id="s*")
        assert [s.id for page in pages for s in page.schedules] == [f"s{i}" for i in reversed(range(6))]
        assert len(pages) == 3
        for page in pages:
            assert self.used(page.schedules, page.cursor) <= 2 * limit

    def test_without_a_limit_pages_go_by_count(self):
        """With no limit, a page holds `limit` items however large."""
        core = new_core()
        for i in range(3):
            core.r.promises_create(id=f"p{i}", timeout=FAR, param=Value(data=data(600_000)))
        assert len(core.r.promises_search(id="*", limit=3).payload.promises) == 3

    @staticmethod
    def all_pages(core, search, items, **query):
        pages = [search(**query)]
        while pages[-1].cursor:
            pages.append(search(cursor=pages[-1].cursor))
        assert all(getattr(page, items) for page in pages)
        return pages

    @staticmethod
    def used(items, cursor) -> int:
        return sum(json_bytes(item) + 1 for item in items) + len(cursor or "")


class TestFitPage:
    """fit_page on items of known sizes (``bound`` says three times more than ``exact``), budget 300 bytes.

    ``fit`` returns the sizes kept and where the next page starts (the cursor's ``before``).
    """

    @staticmethod
    def fit(sizes, full=False, below=None):
        items = [SimpleNamespace(sort_id=100 - i, size=size) for i, size in enumerate(sizes)]
        below = items[-1].sort_id if full else below
        page, below = fit_page(items, below, 150, lambda i: i.size, lambda i: 3 * i.size, "promises", {})
        return [i.size for i in page], below

    def test_cursor_size(self):
        """The cursors here take 61 bytes."""
        assert len(encode_cursor(b"k", "promises", {"before": 99})) == 61

    def test_a_page_that_fits_by_its_bounds_is_kept_as_is(self):
        """No exact measure when the bounds fit."""
        assert self.fit([10, 20]) == ([10, 20], None)

    def test_exact_sizes_decide_before_anything_is_cut(self):
        """Bounds over the budget, exact sizes within: nothing is cut."""
        assert self.fit([100, 100]) == ([100, 100], None)

    def test_a_cut_page_ends_where_the_next_item_does_not_fit_with_the_cursor(self):
        """Items are dropped from the end until they fit with a cursor after the last kept one."""
        assert self.fit([100, 100, 100, 100]) == ([100, 100], 99)  # 202 + 61 <= 300 < 303 + 61
        assert self.fit([100, 100, 100], full=True) == ([100, 100], 99)

    def test_one_item_always_stays(self):
        """A page always moves the search on, even past an item larger than the budget."""
        assert self.fit([500]) == ([500], None)
        assert self.fit([500, 1]) == ([500], 100)

    def test_a_page_cut_by_work_keeps_its_cursor_when_it_fits(self):
        """A scan that ran out of work resumes past the last item (below 98); a page that fits keeps that cursor."""
        assert self.fit([10, 20], below=90) == ([10, 20], 90)
        assert self.fit([], below=90) == ([], 90)
        assert self.fit([100, 100], below=90) == ([100, 100], 90)  # 202 + 61 <= 300

    def test_a_page_cut_by_work_and_then_by_size_resumes_after_its_last_item(self):
        """Cut by size, the next page starts after the last item kept, not where the scan stopped."""
        assert self.fit([100, 100, 100], below=90) == ([100, 100], 99)


class TestReplyOverMaxPayload:
    def test_promise_stored_before_the_limit_answers_500(self, caplog):
        """A promise too large for any reply (stored before the limit) is answered with an error, not dropped."""
        core = new_core()
        core.r.promises_create(id="old", timeout=FAR, param=Value(data=data(100_000)))
        core.r.settings = attrs.evolve(core.r.settings, max_promise_bytes=promise_limit(65536))
        with caplog.at_level(logging.WARNING):
            reply = json.loads(handle(core.r, b'{"operation":"promises.read","payload":{"id":"old"}}', 65536))
        assert reply["success"] is False and reply["error"]["code"] == 500
        assert reply["error"]["message"].startswith("the reply of ") and "exceeds the NATS max_payload of 65536 bytes" in reply["error"]["message"]
        assert any(r.levelno == logging.WARNING and "promises.read" in r.getMessage() for r in caplog.records)

    def test_search_reaching_such_a_promise_answers_500(self):
        """A page holding only that promise is too large too: an error, never silence."""
        core = new_core()
        core.r.promises_create(id="old", timeout=FAR, param=Value(data=data(100_000)))
        core.r.settings = attrs.evolve(core.r.settings, max_promise_bytes=promise_limit(65536))
        reply = json.loads(handle(core.r, b'{"operation":"promises.search","payload":{"id":"*"}}', 65536))
        assert reply["error"]["code"] == 500

    def test_replies_within_max_payload_are_unchanged(self):
        """A reply that fits is sent as built."""
        core = new_core()
        reply = json.loads(handle(core.r, b'{"operation":"promises.create","payload":{"id":"p","timeout":1}}', 65536))
        assert reply["success"] is True

