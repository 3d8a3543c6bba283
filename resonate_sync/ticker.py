"""The background thread: runs the core's jobs when a deadline comes due and sends task messages.

It sleeps until the earliest deadline the core knows (promise timeout, task delivery or
expiry, schedule firing, lock expiry), at most one tick (``tick_ms``), and wakes early when a
request creates a task that can be delivered now. Sending happens outside the core's lock;
results are reported back in one step.

Receivers (PROTOCOL.md 2.8): ``nats://<subject>`` and ``{"type": "nats", "data": {"subject":
…}}`` are published to, and so are the SDK's ``poll://`` ones, under the poll prefix
(:func:`~.core.receivers.poll_subject_of`). Every other receiver is stored as given, and its deliveries fail and
are retried every ``task_retry_timeout_ms`` (the spec's behaviour for an unresolvable
receiver) until the task times out; each such receiver is logged once.
"""

import json
import logging
import threading
from typing import Callable, Optional, Set

from .core import Delivery, Resonate
from .core.receivers import nats_subject_of, poll_subject_of, receiver_problem
from .errors import ResonateError

__all__ = ["Ticker"]

log = logging.getLogger(__name__)


class Ticker:
    """Drives ``core.tick()`` and publishes the deliveries it returns.

    Args:
        core: the state machine.
        publish: ``publish(subject, payload_bytes)``; raises on failure.
        tick_ms: the longest sleep between passes.
        after_pass: called after each pass (the server starts its background snapshots there).

    Attributes: ``passes``; ``sent`` and ``failed``, task messages published and not (counters
    only this thread writes, read by the metrics).
    """

    def __init__(
        self,
        core: Resonate,
        publish: Callable[[str, bytes], None],
        *,
        tick_ms: int = 1000,
        after_pass: Optional[Callable[[], None]] = None,
    ) -> None:
        self._core = core
        self._publish = publish
        self._tick_s = tick_ms / 1000
        self._after_pass = after_pass
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._unsupported: Set[str] = set()
        self.passes = 0
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="resonate-ticker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._core.wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_once(self) -> int:
        """One pass: run the jobs, send what is due, report the results. Returns messages sent."""
        deliveries = self._core.tick()
        if deliveries:
            results = [(d, self._send(d)) for d in deliveries]
            sent = sum(ok for _, ok in results)
            self.sent += sent
            self.failed += len(results) - sent
            self._core.record_deliveries(results)
        if self._after_pass is not None:
            self._after_pass()
        self.passes += 1
        return sum(1 for d in deliveries)

    def _send(self, delivery: Delivery) -> bool:
        subject = nats_subject_of(delivery.recv)
        if subject is None:
            subject = self._poll_subject(delivery.recv)
        if subject is None:
            problem = 'it is not a NATS receiver (nats://<subject>, {"type":"nats","data":{"subject":…}} or poll://…)'
        else:
            # Requests are checked when they name a receiver; this catches receivers stored
            # before those checks existed, or since excluded by --delivery-allow.
            problem = receiver_problem(delivery.recv, self._core.settings)
        if problem is not None:
            key = json.dumps(delivery.recv, sort_keys=True)
            if key not in self._unsupported:
                self._unsupported.add(key)
                log.warning(
                    "task %s: receiver %s cannot be delivered to: %s; keeping the task and retrying later",
                    delivery.task_id,
                    key[:300],
                    problem,
                )
            return False
        try:
            self._publish(subject, json.dumps(delivery.body, separators=(",", ":")).encode())
        except Exception as exc:
            log.warning("task %s: could not publish to %s: %s; will retry", delivery.task_id, subject, exc)
            return False
        log.debug("task %s (counter %d) sent to %s", delivery.task_id, delivery.counter, subject)
        return True

    def _poll_subject(self, recv: object) -> Optional[str]:
        poll = poll_subject_of(recv, self._core.settings.poll_prefix)
        return None if poll is None else poll[0]

    def _loop(self) -> None:
        core = self._core
        failed = 0  # passes failed in a row
        while not self._stop.is_set():
            sent = 0
            try:
                sent = self.run_once()
            except ResonateError as exc:  # the core said why (a journal failure) when it began
                failed += 1
                if failed == 1:
                    log.error("background pass failed: %s; retrying every tick, not logging each", exc.message)
            except Exception:
                failed += 1
                log.exception("background pass failed; retrying in one tick")
            else:
                if failed:
                    log.warning("background pass succeeded after %d failed", failed)
                failed = 0
            if self._stop.is_set():
                break
            if sent >= core.settings.batch_size:
                continue  # more may be due right now
            wait = self._tick_s
            # After a failure the deadline may be one the pass did not handle: already past.
            deadline = None if failed else core.next_deadline()
            if deadline is not None:
                wait = min(wait, max(0.0, (deadline - core.clock.now()) / 1000))
            if wait > 0:
                core.wakeup.wait(wait)
