"""Cron expressions as the Go server reads them (PROTOCOL.md 7.1), evaluated with croniter.

Accepted: 5 fields ``min hour dom month dow`` (fires at second 0); 6 fields with the seconds
field **first** (robfig/cron's optional-seconds parser; croniter would read it last, so we
say ``second_at_beginning``); the descriptors ``@yearly @annually @monthly @weekly @daily
@midnight @hourly``; ``@every <Go duration>`` (sub-second delays round up to 1 s); an optional
``TZ=<zone>`` / ``CRON_TZ=<zone>`` prefix. Anything else is rejected.

Decisions: expressions are evaluated in UTC unless they name a zone (Go uses the server's
local time, which makes a schedule's meaning depend on the host). An expression that never
fires (``0 0 31 2 *``, ``* * 31 4 *``) is rejected like any other invalid one; Go accepts it
and its schedule never runs. croniter looks for the next occurrence at most 50 years ahead
(its ``max_years_between_matches``), so deciding this takes about a millisecond; the longest
gap a satisfiable expression can have (29 February on a given weekday) is shorter.
"""

import re
from datetime import datetime, timezone
from functools import lru_cache
from typing import Optional

import attrs
from croniter import CroniterError, croniter

__all__ = ["CronError", "Cron", "parse_cron"]

_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_INT64_MAX = 2**63 - 1
_REFERENCE = datetime(2000, 1, 1, tzinfo=timezone.utc)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_MAX_DURATION_MS = (2**63 - 1) / 1e6
_UNIT_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


class CronError(ValueError):
    """The expression is not a cron expression this server accepts."""


def parse_go_duration_ms(text: str) -> float:
    """A Go duration (``1m30s``, ``500ms``, ``2h``) in milliseconds; raises ValueError."""
    if text in ("0", "+0", "-0"):
        return 0.0
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    total, pos = 0.0, 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ValueError(f"invalid duration {text!r}")
    if total > _MAX_DURATION_MS:  # Go durations are int64 nanoseconds
        raise ValueError(f"invalid duration {text!r}: longer than about 292 years")
    return sign * total


@attrs.frozen
class Cron:
    """A parsed schedule: either a croniter expression or a constant ``@every`` delay."""

    expression: Optional[str]
    second_first: bool = False
    every_ms: int = 0
    zone: Optional[object] = None

    def next_after(self, ms: int) -> int:
        """The first occurrence strictly after ``ms`` (ms since the epoch), at whole seconds.

        Raises :class:`CronError` when there is none that can be told: the expression never
        fires, or the next occurrence lies beyond the year 9999 or the int64 range.
        """
        if self.every_ms:
            following = ms - ms % 1000 + self.every_ms
            if following > _INT64_MAX:
                raise CronError(f"no occurrence after {ms} ms fits in int64")
            return following
        try:
            start = datetime.fromtimestamp((ms - ms % 1000) / 1000, tz=self.zone or timezone.utc)
            it = croniter(self.expression, start, second_at_beginning=self.second_first)
            return int(round(it.get_next(float) * 1000))
        except (CroniterError, ValueError, OverflowError) as exc:
            raise CronError(f"no occurrence after {ms} ms ({exc})") from None


@lru_cache(maxsize=4096)
def parse_cron(text: str) -> Cron:
    """Parse a cron expression; raises :class:`CronError` naming what is wrong."""
    expr = text.strip()
    zone = None
    if expr.startswith(("TZ=", "CRON_TZ=")):
        spec, _, expr = expr.partition(" ")
        name = spec.split("=", 1)[1]
        try:
            from zoneinfo import ZoneInfo

            zone = ZoneInfo(name)
        except Exception:
            raise CronError(f"unknown time zone {name!r}") from None
        expr = expr.strip()
    if expr.startswith("@every"):
        try:
            delay = parse_go_duration_ms(expr[len("@every") :].strip())
        except ValueError:
            raise CronError(f"invalid @every duration in {text!r}") from None
        if delay <= 0:
            raise CronError(f"@every needs a positive duration, got {text!r}")
        return Cron(None, every_ms=max(1000, -(-int(delay) // 1000) * 1000))
    if expr.startswith("@"):
        if expr not in _DESCRIPTORS:
            raise CronError(f"unknown descriptor {expr!r}")
        expr = _DESCRIPTORS[expr]
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise CronError(f"expected 5 or 6 fields, got {len(fields)}")
    cron = Cron(" ".join(fields), second_first=len(fields) == 6, zone=zone)
    try:
        croniter(cron.expression, _REFERENCE, second_at_beginning=cron.second_first)
    except Exception as exc:  # croniter raises several unrelated types
        raise CronError(str(exc)) from None
    try:
        cron.next_after(int(_REFERENCE.timestamp() * 1000))
    except CronError:
        raise CronError("it never fires") from None
    return cron
