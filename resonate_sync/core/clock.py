"""Time for the core: injected, so tests never sleep.

The core never calls ``time.time()``; it asks its clock for integer milliseconds since the
Unix epoch.
"""

import threading
import time

__all__ = ["Clock", "SystemClock", "FakeClock"]


class Clock:
    """Something that tells the current time in ms since the epoch."""

    def now(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError


class SystemClock(Clock):
    """The wall clock."""

    def now(self) -> int:
        return time.time_ns() // 1_000_000


class FakeClock(Clock):
    """A clock that moves only when told to; thread-safe.

    Attributes:
        ms: the current time, ms since the epoch.
    """

    def __init__(self, ms: int = 1_700_000_000_000) -> None:
        self._ms = ms
        self._lock = threading.Lock()

    def now(self) -> int:
        return self._ms

    def set(self, ms: int) -> None:
        with self._lock:
            self._ms = ms

    def advance(self, ms: int) -> int:
        """Move forward by ``ms`` and return the new time."""
        with self._lock:
            self._ms += ms
            return self._ms
