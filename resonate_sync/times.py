"""Deadlines and durations as people write them, turned into the wire's milliseconds.

The protocol has two kinds of time, both integers of milliseconds: a *deadline* (a promise's
``timeout``, a task's or a callback's ``timeout``) is an absolute time since the Unix epoch; a
*duration* (a ``ttl``, a schedule's ``promiseTimeout``) is a length of time. The wire cannot
tell them apart: a duration of 60000 sent as a deadline is 1970-01-01T00:01:00Z, and the
promise times out on its first read. So the `Client` and the CLI take only forms that say
which they mean.

A **deadline** is one of:

* an ``int``: ms since the epoch, as on the wire, from 2000-01-01T00:00:00Z
  (`EARLIEST_DEADLINE_MS`) on. A smaller number is surely a duration: ValueError, naming the
  time it would have meant and what to write instead;
* an aware ``datetime``. A naive one is refused: its time zone would be a guess;
* a ``timedelta``: that long from now;
* a string: a Go duration from now (``60s``, ``1h30m``); an RFC 3339 time
  (``2026-12-31T00:00:00Z``, ``2026-12-31T01:00:00+01:00``; the offset is required); or
  digits, which follow the ``int`` rule.

A **duration** is an ``int`` of ms (0 or more, as on the wire), a ``timedelta``, or a Go
duration string (a number without a unit is refused, as in the config).

Datetimes and timedeltas are truncated to whole milliseconds.
"""

import datetime
import json
import re
from typing import Union

from .config import format_go_duration, parse_go_duration

__all__ = [
    "Deadline",
    "Duration",
    "EARLIEST_DEADLINE_MS",
    "deadline_ms",
    "duration_ms",
    "format_ms",
    "parse_rfc3339",
]

Deadline = Union[int, datetime.datetime, datetime.timedelta, str]
"""An absolute time: ms since the epoch (from 2000 on), an aware datetime, a timedelta or duration string from now,
or an RFC 3339 string."""

Duration = Union[int, datetime.timedelta, str]
"""A length of time: ms, a timedelta, or a Go duration string."""

EARLIEST_DEADLINE_MS = 946_684_800_000
"""2000-01-01T00:00:00Z: the smallest int taken as a deadline; anything smaller is surely a duration."""

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_MS = datetime.timedelta(milliseconds=1)
_EXAMPLE_TIME = "2026-12-31T00:00:00Z"
_YEAR_10000_MS = 253_402_300_800_000
_DIGITS = re.compile(r"[0-9]+")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))?)?"
)


def format_ms(ms: int) -> str:
    """A time in ms since the epoch as RFC 3339 in UTC with milliseconds (``2026-12-31T00:00:00.000Z``)."""
    moment = _EPOCH + datetime.timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _shown(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def parse_rfc3339(text: str) -> int:
    """An RFC 3339 date-time (``2026-12-31T00:00:00Z``, ``…T01:00:00.5+01:00``) as ms since the epoch.

    The UTC offset is required; digits past milliseconds are dropped. Raises ValueError naming
    what is missing or wrong.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"{_shown(text)} is not an RFC 3339 time (example: {_EXAMPLE_TIME})")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if hour is None:
        raise ValueError(f"{_shown(text)} has no time of day: write {text}T00:00:00Z, say")
    if zulu is None and sign is None:
        raise ValueError(f"{_shown(text)} has no UTC offset: add Z (UTC) or one such as +02:00")
    try:
        offset = datetime.timedelta(hours=int(off_h or 0), minutes=int(off_m or 0))
        zone = datetime.timezone(-offset if sign == "-" else offset)
        moment = datetime.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=zone
        )
    except ValueError as error:
        raise ValueError(f"{_shown(text)} is not a valid time: {error}") from None
    ms = (moment - _EPOCH) // _MS + int((fraction or "0")[:3].ljust(3, "0"))
    if ms < 0:
        raise ValueError(f"{_shown(text)} is before 1970, which the protocol cannot carry")
    return ms


def _epoch_ms(number: int, written: str) -> int:
    """The int rule: ms since the epoch, from 2000 on; below that, say what it would have meant."""
    if number >= EARLIEST_DEADLINE_MS:
        return number
    fixed = f"for a fixed time, an RFC 3339 time such as {_EXAMPLE_TIME}"
    if number <= 0:
        raise ValueError(
            f"{written} is not a deadline: a deadline is ms since the epoch from 2000 on; write a duration"
            f" from now (30s, 1h) or, {fixed}"
        )
    duration = format_go_duration(number)
    message = (
        f"{written} is not a deadline: as ms since the epoch it is {format_ms(number)}, before 2000, so it"
        f" is surely a duration. For {duration} from now write {duration}; {fixed}"
    )
    if EARLIEST_DEADLINE_MS <= number * 1000 < _YEAR_10000_MS:
        message += f"; if it is seconds since the epoch ({format_ms(number * 1000)}), write {number}000"
    raise ValueError(message)


def deadline_ms(value: Deadline, now_ms: int) -> int:
    """``value`` as an absolute deadline in ms since the epoch (the rules in the module docstring).

    ``now_ms`` is the time durations count from. Raises ValueError for a value of the right
    type that breaks a rule, TypeError for any other type.
    """
    if isinstance(value, bool):
        raise TypeError(f"{value!r} is not a deadline")
    if isinstance(value, int):
        return _epoch_ms(value, str(value))
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"{value.isoformat()} is a naive datetime: give it a time zone"
                " (datetime.now(timezone.utc) + timedelta(hours=1), say)"
            )
        ms = (value - _EPOCH) // _MS
        if ms < 0:
            raise ValueError(f"{value.isoformat()} is before 1970, which the protocol cannot carry")
        return ms
    if isinstance(value, datetime.timedelta):
        return now_ms + duration_ms(value)
    if isinstance(value, str):
        if _DIGITS.fullmatch(value):
            return _epoch_ms(int(value), _shown(value))
        if _RFC3339.match(value):
            return parse_rfc3339(value)
        try:
            return now_ms + parse_go_duration(value)
        except ValueError as error:
            raise ValueError(f"{error}; a deadline may also be an RFC 3339 time such as {_EXAMPLE_TIME}") from None
    raise TypeError(
        f"{value!r} is not a deadline: pass ms since the epoch (int), an aware datetime, a timedelta"
        ' or a string ("1h", "2026-12-31T00:00:00Z")'
    )


def duration_ms(value: Duration) -> int:
    """``value`` as a length of time in ms: an int of ms (0 or more), a timedelta, or a Go duration string."""
    if isinstance(value, bool) or isinstance(value, datetime.datetime):
        raise TypeError(f"{value!r} is not a duration: pass ms (int), a timedelta or a string such as \"30s\"")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative; a duration must be 0 or more")
        return value
    if isinstance(value, datetime.timedelta):
        if value < datetime.timedelta(0):
            raise ValueError(f"{value} is negative; a duration must be 0 or more")
        return value // _MS
    if isinstance(value, str):
        if _DIGITS.fullmatch(value) and int(value):
            raise ValueError(
                f"{_shown(value)} is not a duration: the number needs a unit; for {value} ms write"
                f" {value}ms ({format_go_duration(int(value))})"
            )
        return parse_go_duration(value)
    raise TypeError(f"{value!r} is not a duration: pass ms (int), a timedelta or a string such as \"30s\"")
