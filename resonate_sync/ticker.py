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

Persistent receivers (``nats+js://<subject>``, ``"jetstream": true``) are published to
JetStream: a request whose reply is the stream's PubAck, with ``Nats-Msg-Id`` = task id and
counter so a retry after a lost ack is stored once. A delivery counts as sent only when a
stream acknowledged it; otherwise (no stream captures the subject, a stream error, no ack
within :data:`JETSTREAM_ACK_TIMEOUT_S`) it is retried as any failed delivery, with one warning
per subject until a publish there is acknowledged again. The JetStream deliveries of one pass
are all in flight at once and share one deadline, so a pass waits at most that long whatever
their number: timeouts and schedules are late by at most that much while JetStream is stuck.
"""

import json
import logging
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from .core import Delivery, Resonate
from .core.receivers import is_jetstream, nats_subject_of, poll_subject_of, receiver_problem
from .errors import ResonateError
from .events import digest_token, encode_id
from .transport.errors import NoRespondersError, RequestTimeoutError

__all__ = ["JETSTREAM_ACK_TIMEOUT_S", "Ticker", "msg_id", "pub_ack_problem"]

log = logging.getLogger(__name__)

JETSTREAM_ACK_TIMEOUT_S = 2.0
"""How long one pass waits for the PubAcks of its JetStream deliveries, all together."""

RequestMany = Callable[[Sequence[Tuple[str, bytes, Optional[Mapping[str, str]]]]], List[Any]]
"""``request_many(requests, timeout=…)``: ``NatsTransport.request_many``."""


def msg_id(delivery: Delivery) -> str:
    """``Nats-Msg-Id`` of a persistent delivery: ``<task id token>/<counter>``, the same for every retry
    of one task generation, so that JetStream stores it once; a long task id by its digest (the header
    must stay small next to the message)."""
    token = encode_id(delivery.task_id)
    return f"{digest_token(delivery.task_id) if len(token) > 128 else token}/{delivery.counter}"


def pub_ack_problem(reply: Any) -> Optional[str]:
    """Why a JetStream publish's reply (a ``Msg``, or the exception raised instead) is no PubAck; None for one."""
    if isinstance(reply, NoRespondersError):
        return "no JetStream stream captures the subject (NATS: no responders)"
    if isinstance(reply, RequestTimeoutError):
        return (
            f"no PubAck within {JETSTREAM_ACK_TIMEOUT_S:g} s (is a stream capturing the subject? a plain"
            " subscriber does not acknowledge)"
        )
    if isinstance(reply, Exception):
        return f"the publish failed: {reply}"
    try:
        ack = json.loads(reply.payload)
    except (ValueError, UnicodeDecodeError):
        ack = None
    if type(ack) is dict and type(ack.get("error")) is dict:
        error = ack["error"]
        return f"the stream refused it: {error.get('description', 'no description')} (code {error.get('err_code', '?')})"
    if type(ack) is dict and type(ack.get("stream")) is str and type(ack.get("seq")) is int:
        return None
    return f"the reply is not a JetStream PubAck: {bytes(reply.payload[:80])!r}"


class Ticker:
    """Drives ``core.tick()`` and publishes the deliveries it returns.

    Args:
        core: the state machine.
        publish: ``publish(subject, payload_bytes)``; raises on failure.
        request_many: sends JetStream publishes and returns their PubAcks (a :data:`RequestMany`);
            None: persistent receivers cannot be delivered to (each fails, with one warning).
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
        request_many: Optional[RequestMany] = None,
        tick_ms: int = 1000,
        after_pass: Optional[Callable[[], None]] = None,
    ) -> None:
        self._core = core
        self._publish = publish
        self._request_many = request_many
        self._unacked: Dict[str, str] = {}  # JetStream subject -> why its last publish failed (warned)
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
            results: List[Tuple[Delivery, bool]] = []
            persistent: List[Delivery] = []
            for delivery in deliveries:
                if is_jetstream(delivery.recv):
                    persistent.append(delivery)
                else:
                    results.append((delivery, self._send(delivery)))
            if persistent:
                results += self._send_persistent(persistent)
            sent = sum(ok for _, ok in results)
            self.sent += sent
            self.failed += len(results) - sent
            self._core.record_deliveries(results)
        if self._after_pass is not None:
            self._after_pass()
        self.passes += 1
        return sum(1 for d in deliveries)

    def _send(self, delivery: Delivery) -> bool:
        subject = self._subject(delivery)
        if subject is None:
            return False
        try:
            self._publish(subject, json.dumps(delivery.body, separators=(",", ":")).encode())
        except Exception as exc:
            log.warning("task %s: could not publish to %s: %s; will retry", delivery.task_id, subject, exc)
            return False
        log.debug("task %s (counter %d) sent to %s", delivery.task_id, delivery.counter, subject)
        return True

    def _send_persistent(self, deliveries: List[Delivery]) -> List[Tuple[Delivery, bool]]:
        """Publish to JetStream, all at once; each is sent once its PubAck came (see the module docstring)."""
        results: List[Tuple[Delivery, bool]] = []
        sending: List[Tuple[Delivery, str]] = []
        for delivery in deliveries:
            subject = self._subject(delivery)
            if subject is None:
                results.append((delivery, False))
            elif self._request_many is None:
                results.append((delivery, self._unacked_warning(delivery, subject, "this server cannot publish to JetStream")))
            else:
                sending.append((delivery, subject))
        if not sending:
            return results
        requests = [
            (s, json.dumps(d.body, separators=(",", ":")).encode(), {"Nats-Msg-Id": msg_id(d)})
            for d, s in sending
        ]
        try:
            replies = self._request_many(requests, timeout=JETSTREAM_ACK_TIMEOUT_S)
        except Exception as exc:  # not connected: every one failed alike
            replies = [exc] * len(requests)
        for (delivery, subject), reply in zip(sending, replies):
            problem = pub_ack_problem(reply)
            if problem is None:
                if self._unacked.pop(subject, None) is not None:
                    log.info("JetStream acknowledges deliveries to %s again", subject)
                log.debug("task %s (counter %d) stored by JetStream on %s", delivery.task_id, delivery.counter, subject)
                results.append((delivery, True))
            else:
                results.append((delivery, self._unacked_warning(delivery, subject, problem)))
        return results

    def _unacked_warning(self, delivery: Delivery, subject: str, problem: str) -> bool:
        """Log a persistent delivery that failed, once per subject and problem; returns False (not sent)."""
        if self._unacked.get(subject) != problem:
            self._unacked[subject] = problem
            log.warning(
                "task %s: persistent delivery to nats+js://%s failed: %s; the task is kept and retried every"
                " --task-retry-timeout. Create a JetStream stream whose subjects include %r (logged once per"
                " subject until a delivery there is acknowledged)",
                delivery.task_id, subject, problem, subject,
            )  # fmt: skip
        return False

    def _subject(self, delivery: Delivery) -> Optional[str]:
        """The subject to send ``delivery`` to, or None (with a warning once per receiver) when it may not be sent."""
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
            return None
        return subject

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
