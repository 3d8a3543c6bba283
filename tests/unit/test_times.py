"""Deadlines and durations as the Client and the CLI read them (resonate_sync.times)."""

from datetime import datetime, timedelta, timezone

import pytest

from resonate_sync.times import EARLIEST_DEADLINE_MS, deadline_ms, duration_ms, format_ms, parse_rfc3339

NOW = 1_800_000_000_000


class TestDeadline:
    @pytest.mark.parametrize("value, expected", [
        (EARLIEST_DEADLINE_MS, EARLIEST_DEADLINE_MS),
        (str(EARLIEST_DEADLINE_MS), EARLIEST_DEADLINE_MS),
        ("60s", NOW + 60_000),
        ("1h30m", NOW + 5_400_000),
        ("0", None),
        (timedelta(seconds=1, microseconds=1500), NOW + 1_001),
        (datetime(2030, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))), 1_893_456_000_000),
        ("2030-01-01T00:00:00Z", 1_893_456_000_000),
        ("2030-01-01t01:30:00.1239+01:30", 1_893_456_000_123),
        ("2030-01-01 00:00:00z", 1_893_456_000_000),
        ("1999-12-31T23:59:59Z", EARLIEST_DEADLINE_MS - 1_000),
    ])  # fmt: skip
    def test_accepted_forms(self, value, expected):
        """ms from 2000 on, a duration from now, an aware datetime or an RFC 3339 time with its offset."""
        if expected is None:
            with pytest.raises(ValueError):
                deadline_ms(value, NOW)
        else:
            assert deadline_ms(value, NOW) == expected

    def test_the_rule_is_the_year_2000(self):
        """The last ms of 1999 is refused as surely a duration; the first of 2000 is a deadline."""
        assert deadline_ms(EARLIEST_DEADLINE_MS, NOW) == EARLIEST_DEADLINE_MS
        assert format_ms(EARLIEST_DEADLINE_MS) == "2000-01-01T00:00:00.000Z"
        with pytest.raises(ValueError, match="1999-12-31T23:59:59.999Z, before 2000, so it is surely a duration"):
            deadline_ms(EARLIEST_DEADLINE_MS - 1, NOW)

    def test_a_small_number_says_what_it_would_have_meant(self):
        """The message names the 1970 time, the duration to write instead and, for plausible seconds, the ms form."""
        with pytest.raises(ValueError) as info:
            deadline_ms(1_767_225_600, NOW)
        message = str(info.value)
        assert "it is 1970-01-21T10:53:45.600Z" in message
        assert "if it is seconds since the epoch (2026-01-01T00:00:00.000Z), write 1767225600000" in message
        with pytest.raises(ValueError, match="For 1m from now write 1m; for a fixed time, an RFC 3339 time"):
            deadline_ms("60000", NOW)

    @pytest.mark.parametrize("value, message", [
        (datetime(2030, 1, 1), "naive datetime"),
        ("2030-01-01", "has no time of day"),
        ("2030-01-01T00:00:00", "has no UTC offset"),
        ("2030-02-30T00:00:00Z", "is not a valid time"),
        ("1969-12-31T23:59:59Z", "before 1970"),
        ("-1h", "negative"),
        ("soon", "RFC 3339"),
        (-5, "from 2000 on"),
        (timedelta(seconds=-1), "negative"),
    ])  # fmt: skip
    def test_refused(self, value, message):
        """Anything that is not clearly a moment is a ValueError that says why."""
        with pytest.raises(ValueError, match=message):
            deadline_ms(value, NOW)

    @pytest.mark.parametrize("value", [True, 1.8e12, None, b"1h"])
    def test_other_types(self, value):
        """Floats, bools, bytes and None are not deadlines."""
        with pytest.raises(TypeError):
            deadline_ms(value, NOW)


class TestDuration:
    @pytest.mark.parametrize("value, expected", [
        (0, 0), ("0", 0), (1_500, 1_500), ("1m30s", 90_000), (timedelta(minutes=1), 60_000),
    ])  # fmt: skip
    def test_accepted_forms(self, value, expected):
        """ms, a timedelta or a Go duration."""
        assert duration_ms(value) == expected

    def test_a_bare_number_string_needs_a_unit(self):
        """"3600000" is refused with the spelling to use and what it comes to."""
        with pytest.raises(ValueError, match=r"for 3600000 ms write 3600000ms \(1h\)"):
            duration_ms("3600000")

    @pytest.mark.parametrize("value, error", [
        (-1, ValueError), (timedelta(seconds=-1), ValueError), (datetime(2030, 1, 1, tzinfo=timezone.utc), TypeError),
        (True, TypeError), (1.5, TypeError),
    ])  # fmt: skip
    def test_refused(self, value, error):
        """Negative lengths and points in time are not durations."""
        with pytest.raises(error):
            duration_ms(value)


class TestRfc3339:
    def test_offsets_and_fractions(self):
        """The offset is applied and digits past the millisecond are dropped."""
        assert parse_rfc3339("1970-01-01T00:00:00.0019Z") == 1
        assert parse_rfc3339("1970-01-01T01:00:00+01:00") == 0
        assert parse_rfc3339("1970-01-01T00:00:00-00:01") == 60_000
