"""The fenced, pipelined writer: one stream message per batch of records, durable on its PubAck.

Fencing. Message ``s`` is published with ``Nats-Expected-Last-Sequence: s - 1`` and, but for
the first after arming, ``Nats-Expected-Last-Msg-Id`` naming this writer's previous message.
The sequence alone would not do with many publishes in flight: were another writer's message
stored at ``s - 1`` after ours at ``s - 1`` was refused, our message ``s`` (expecting ``s - 1``)
would be stored after a record it never saw. The message-id chain refuses it: the last message
is then not our ``s - 1``. The first message after arming has no predecessor of ours in the
stream; the sequence fences it.

Any refusal, a PubAck that does not come within ``ack_timeout``, or a publish that fails,
fails the writer: every ticket not yet acknowledged raises :class:`FencedError` from then on,
and ``failed`` is set for the role thread, which steps down. A ticket is the stream seq of its
message, so ``is_durable(t)`` is "every message up to t acknowledged".
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Callable, Deque, Dict, Optional, Tuple

from .api import FencedError, JetStreamError, JsApi, NotLeaderError, _json_object, parse_ack

__all__ = ["PART_HEADER", "TICKET_EPOCH", "Writer"]

PART_HEADER = "Resonate-Part"
"""``i/n`` on each of the n messages of one batch too large for one message (``store``)."""

# A ticket is epoch * TICKET_EPOCH + stream seq: each arming starts an epoch, so a ticket of an
# epoch that ended is never taken for one of the next (whose seqs may be another writer's).
# Epoch 0 is the store's own: stream seqs it read, durable by definition.
TICKET_EPOCH = 1 << 40


class Writer:
    """Publishes batches in ``append`` order on one thread and collects PubAcks on one inbox.

    The thread takes every message queued since its last write and sends them in one socket
    write (``publish_many``): with 64 appenders that is ~1.7x the appends/s of publishing each
    in ``append`` under the caller's lock.

    Attributes:
        failed: set once the writer failed (fenced, timed out, a publish failed); ``failure`` says why.
        max_in_flight: the most messages ever waiting for their PubAck at once (a statistic).
        inline: publish inside ``append`` (the caller's thread, under its lock) instead of on
            the writer thread; False by default (slower, see ``bench/bench_jetstream_store.py``).
        on_flush: None, or ``on_flush(0.0, seconds from publish to PubAck, records)`` per PubAck
            (the journal's signature: write seconds, sync seconds, records made durable).
    """

    def __init__(
        self,
        api: JsApi,
        subject: str,
        *,
        instance: str,
        ack_timeout: float,
        clock: Callable[[], float],
        logger: logging.Logger,
    ) -> None:
        self.api = api
        self.subject = subject
        self.instance = instance
        self.ack_timeout = ack_timeout
        self.clock = clock
        self.on_flush: Optional[Callable[[float, float, int], None]] = None
        self.failed = threading.Event()
        self.failure: Optional[JetStreamError] = None
        self.max_in_flight = 0
        self.inline = False
        self._publish_lock = threading.Lock()
        self._log = logger
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._armed = False
        self._closing = False
        self._epoch = 0
        self._next_seq = 1  # the stream seq the next message will get
        self._durable_seq = 0  # every message up to here is acknowledged
        self._last_msg_id = ""  # of the last message queued in this epoch ("" before the first)
        self._queue: Deque[Tuple[int, bytes, Dict[str, str]]] = collections.deque()
        self._in_flight: Dict[int, Tuple[float, int]] = {}  # seq -> (clock when queued, records)
        self._acked_early: set = set()
        self._final: Dict[int, int] = {}  # epoch -> its last acknowledged seq, for epochs that ended
        self._inbox = ""
        self._sub: Any = None
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ roles

    def arm(self, last_seq: int) -> None:
        """Accept appends from now on; the stream's last seq is ``last_seq`` (none of ours in flight)."""
        with self._lock:
            if self._sub is None:
                self._inbox = self.api.conn.new_inbox()
                self._sub = self.api.conn.subscribe(self._inbox + ".>", callback=self._on_ack)
                flush = getattr(self.api.conn, "flush", None)
                if flush is not None:
                    flush(self.api.timeout)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="jetstream-writer", daemon=True)
                self._thread.start()
            if self._epoch and self._epoch not in self._final:
                self._final[self._epoch] = self._durable_seq
            self._epoch += 1
            self._armed = True
            self.failure = None
            self.failed.clear()
            self._next_seq = last_seq + 1
            self._durable_seq = last_seq
            self._last_msg_id = ""
            self._queue.clear()
            self._in_flight.clear()
            self._acked_early.clear()

    def disarm(self, error: JetStreamError) -> None:
        """Refuse appends, and fail every ticket not acknowledged yet with ``error``."""
        with self._lock:
            self._fail(error)

    @property
    def armed(self) -> bool:
        return self._armed

    @property
    def last_ticket(self) -> int:
        """The ticket of the last message queued (epoch 0's form, a stream seq, before any arming)."""
        return self._epoch * TICKET_EPOCH + self._next_seq - 1

    @property
    def durable_seq(self) -> int:
        """The stream seq up to which this epoch's messages are acknowledged."""
        return self._durable_seq

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._armed = False
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        if self._sub is not None:
            try:
                self.api.conn.unsubscribe(self._sub)
            except Exception:  # the connection may be gone already
                pass
            self._sub = None

    # ------------------------------------------------------------------ appending

    def append(self, payload: bytes, records: int, part: str = "") -> int:
        """Queue one message; returns its ticket (the stream seq it will get).

        ``part``: ``"i/n"`` for the i-th of n messages holding one batch too large for one (see
        ``store``), sent as the ``Resonate-Part`` header; "" for a batch in one message.
        Does no I/O unless ``inline`` (then it publishes here, in ``append`` order, outside the
        lock the PubAck callback takes).
        """
        if not self.inline:
            return self._queue_message(payload, records, part, queue=True)[0]
        with self._publish_lock:
            ticket, epoch, seq, headers = self._queue_message(payload, records, part, queue=False)
            self._publish(epoch, seq, payload, headers)
        return ticket

    def _queue_message(self, payload: bytes, records: int, part: str, *, queue: bool) -> Tuple[int, int, int, Dict[str, str]]:
        with self._lock:
            if not self._armed:
                if self.failure is not None:
                    raise FencedError(f"refusing records: {self.failure}")
                raise NotLeaderError(f"this instance is not the leader of the stream ({self.subject}): no appends")
            seq = self._next_seq
            self._next_seq += 1
            msg_id = f"{self.instance}.{self._epoch}.{seq}"
            headers = {"Nats-Msg-Id": msg_id, "Nats-Expected-Last-Sequence": str(seq - 1)}
            if self._last_msg_id:
                headers["Nats-Expected-Last-Msg-Id"] = self._last_msg_id
            if part:
                headers[PART_HEADER] = part
            self._last_msg_id = msg_id
            if queue:
                self._queue.append((seq, payload, headers))
                self._cond.notify()
            self._in_flight[seq] = (self.clock(), records)
            self.max_in_flight = max(self.max_in_flight, len(self._in_flight))
            return self._epoch * TICKET_EPOCH + seq, self._epoch, seq, headers

    def _publish(self, epoch: int, seq: int, payload: bytes, headers: Dict[str, str]) -> bool:
        try:
            self.api.conn.publish(self.subject, payload, f"{self._inbox}.{epoch}.{seq}", headers=headers)
            return True
        except Exception as exc:
            with self._lock:
                if epoch == self._epoch:
                    self._fail(FencedError(f"publishing stream seq {seq} failed: {exc}"))
            return False

    def is_durable(self, ticket: int) -> bool:
        """Whether ticket (of epoch >= 1) is acknowledged; takes no lock."""
        epoch, seq = divmod(ticket, TICKET_EPOCH)
        if epoch == self._epoch:
            return self._durable_seq >= seq
        return seq <= self._final.get(epoch, -1)

    def wait_durable(self, ticket: int, timeout: Optional[float] = None) -> None:
        """Return once ``ticket`` is acknowledged; FencedError if it never will be, TimeoutError after ``timeout``."""
        epoch, seq = divmod(ticket, TICKET_EPOCH)
        with self._cond:
            if epoch > self._epoch or (epoch == self._epoch and seq >= self._next_seq):
                raise ValueError(f"ticket {ticket} was never issued (last is {self.last_ticket})")
            ok = self._cond.wait_for(
                lambda: epoch != self._epoch or self._durable_seq >= seq or self.failure is not None, timeout
            )
            if epoch != self._epoch:
                if seq <= self._final.get(epoch, -1):
                    return
                raise FencedError(f"stream seq {seq} (epoch {epoch}) was never acknowledged: the writer stepped down")
            if self._durable_seq >= seq:
                return
            if self.failure is not None:
                raise FencedError(f"stream seq {seq} not acknowledged: {self.failure}")
            if not ok:
                raise TimeoutError(f"stream seq {seq} not acknowledged after {timeout} s")

    def check_timeouts(self) -> None:
        """Fail the writer if the oldest unacknowledged message waited longer than ``ack_timeout``."""
        with self._lock:
            if not self._in_flight or not self._armed:
                return
            oldest = min(self._in_flight)
            queued, _ = self._in_flight[oldest]
            if self.clock() - queued > self.ack_timeout:
                self._fail(FencedError(
                    f"no PubAck for stream seq {oldest} within {self.ack_timeout:g} s: it may or may not "
                    "be in the stream, so this instance steps down and rebuilds from the stream"
                ))

    def idle(self) -> bool:
        """Whether every queued message is acknowledged."""
        return not self._in_flight

    def _fail(self, error: JetStreamError) -> None:
        """Called holding ``_lock``."""
        if self.failure is None:
            self.failure = error
        if self._epoch:
            self._final[self._epoch] = self._durable_seq
        self._armed = False
        self._queue.clear()
        self._in_flight.clear()
        self.failed.set()
        self._cond.notify_all()

    # ------------------------------------------------------------------ threads

    def _run(self) -> None:
        """Publish queued messages in order; a thread of its own so ``append`` never blocks on the socket."""
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                batch = list(self._queue)
                self._queue.clear()
                epoch = self._epoch
            publish_many = getattr(self.api.conn, "publish_many", None)
            if publish_many is not None and len(batch) > 1:
                self._publish_batch(publish_many, epoch, batch)
                continue
            for seq, payload, headers in batch:
                if not self._publish(epoch, seq, payload, headers):
                    break

    def _publish_batch(self, publish_many: Callable[..., None], epoch: int, batch: list) -> None:
        """Every queued message in one socket write (``publish_many``, when the connection has it)."""
        try:
            publish_many([(self.subject, payload, f"{self._inbox}.{epoch}.{seq}", headers) for seq, payload, headers in batch])
        except Exception as exc:
            with self._lock:
                if epoch == self._epoch:
                    self._fail(FencedError(f"publishing stream seqs {batch[0][0]}..{batch[-1][0]} failed: {exc}"))

    def _on_ack(self, msg: Any) -> None:
        """On the reader thread: record a PubAck, or fail the writer on a refusal."""
        try:
            epoch, seq = (int(part) for part in msg.subject[len(self._inbox) + 1 :].split("."))
        except ValueError:
            return
        status = (msg.headers or {}).get("Status")
        try:
            stored, error = parse_ack(_json_object(msg.payload, self.subject), f"stream seq {seq}", self.api.where)
        except JetStreamError as exc:
            stored, error = 0, exc
        if status == "503":
            error = JetStreamError(f"{self.api.where}: no JetStream stream answers on {self.subject} (503)")
        flushed = None
        with self._lock:
            if epoch != self._epoch or seq not in self._in_flight:
                return
            if error is not None:
                fenced = error.err_code in (10071, 10070)
                self._fail(FencedError(
                    f"{error}: another writer appended to the stream, so this instance is no longer the leader"
                    if fenced else str(error),
                    error.err_code,
                ))
                return
            if stored != seq:
                self._fail(FencedError(f"stream seq {seq} was stored as seq {stored}: another writer exists"))
                return
            queued, records = self._in_flight.pop(seq)
            self._acked_early.add(seq)
            durable = self._durable_seq
            while durable + 1 in self._acked_early:
                durable += 1
                self._acked_early.discard(durable)
            if durable != self._durable_seq:
                self._durable_seq = durable
                self._cond.notify_all()
            flushed = (self.clock() - queued, records)
        if flushed is not None and self.on_flush is not None:
            try:
                self.on_flush(0.0, flushed[0], flushed[1])
            except Exception:
                self._log.exception("on_flush callback failed")
