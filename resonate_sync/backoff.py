"""One rule for waiting between attempts, shared by every retry loop (client, reconnects, SDK, store).

``retry_delay(attempt, first, cap)`` is ``first * 2**attempt`` capped at ``cap``; with ``jitter``
it is scaled down by up to half at random, so many clients that failed together do not retry
together. The exponent is bounded: ``2.0 ** 1024`` overflows a float, and a loop that retries for
as long as NATS is away reaches that attempt after about 17 minutes at a one-second cap.
"""

import random

__all__ = ["retry_delay"]

_MAX_EXPONENT = 30  # 2**30 times any sane first delay is past any sane cap


def retry_delay(attempt: int, first: float, cap: float, *, jitter: bool = False) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts failures so far, from 0)."""
    delay = min(cap, first * 2 ** min(attempt, _MAX_EXPONENT))
    return delay * random.uniform(0.5, 1.0) if jitter else delay
