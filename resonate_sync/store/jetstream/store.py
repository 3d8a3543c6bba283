"""``JetStreamStore``: the journal interface on a replicated JetStream stream, one fenced leader.

What lives where (``<S>`` is the ``stream`` name):

- records: stream ``<S>``, subject ``<prefix>.records`` (``prefix`` defaults to
  ``resonate.store.<S>``). One message per ``append_encoded`` call: its records' canonical JSON,
  one per line. The ticket is durable once the PubAck came (see ``writer``: fencing).
- lease: KV bucket ``<S>`` (stream ``KV_<S>``), key ``leader`` (see ``lease``).
- snapshots: Object Store bucket ``<S>`` (stream ``OBJ_<S>``), objects ``snapshot-<seq>``
  (see ``snapshots``). After a snapshot the newest two are kept and the records stream is
  purged below the older one, so a damaged newest snapshot can be deleted and the previous
  one still recovers.

Roles. ``open()`` reads the newest snapshot and every record after it. ``start()`` runs the
role thread: as a standby it applies every new message in order (batched direct gets: no
consumer state on the server, and a standby that fell behind a purge reloads from the newest
snapshot) and polls the lease every lease/6. Having won it, it reads the stream's last seq,
applies up to it, arms the writer expecting that seq, and calls ``on_leader``. As leader it
renews every lease/3 and watches the writer; any loss (lease taken or expired locally, a
renewal refused, an append fenced, a PubAck late or an error) steps down: ``on_standby``, then
the state is rebuilt from the stream (``reload``) and the standby loop goes on.

Default lease: 3 s. A leader killed with -9 loses its key 2-3 s later (3 s after its last
renewal, by the server's per-message TTL; expiry measured within ~20 ms of it), a standby sees
that within its 0.5 s poll and catches up: failover measured at 2.1-3.1 s, under the 5 s
asked for. Shorter leases fail over faster but step down for smaller stalls (GC pauses, a slow
renewal); a longer one would also ride out the JetStream stream-leader election that follows
the death of a cluster node (~4.5 s measured), at the price of a slower failover.

Durability: a PubAck means the message is stored on a quorum of the stream's replicas, written
to the OS at least: nats-server fsyncs on its ``sync_interval`` (2 min by default). It survives
kill -9 of nats-server (measured: 3 runs of 3,000 acknowledged messages, none lost) and of a
minority of a cluster's servers; power loss only with ``jetstream { sync_interval: always }``.

Step-down order: the writer is disarmed first (appends raise FencedError from that moment),
then ``on_standby`` runs, then the lease is released and the state rebuilt.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from ...backoff import retry_delay
from ...journal import Journal, JournalError, Recovery, SnapshotTicket
from .api import FencedError, JetStreamError, JsApi, JsConnection, NotLeaderError, StoredMsg
from .lease import Lease, check_lease_ms
from .snapshots import SnapshotInfo, SnapshotStore
from .writer import PART_HEADER, TICKET_EPOCH, Writer

__all__ = ["JetStreamStore"]

_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,200}\Z")
_SUBJECT_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\Z")
_HEADROOM = 1024  # bytes of a message's max_payload kept for its headers
_IDLE_POLL = 0.05  # s between reads of the stream when a standby is caught up
_FETCH_BATCH = 256


class _Restart(Exception):
    """Raised inside the role loop to step down / reload (the message says why)."""


class JetStreamStore:
    """The journal interface (``encode``/``append_encoded``/``wait_durable``/snapshots) on JetStream.

    Args:
        conn: a connected :class:`~resonate_sync.store.jetstream.api.JsConnection`.
        stream: the records stream's name; the KV and Object Store buckets take the same name.
        subject_prefix: the records subject is ``<prefix>.records`` (default ``resonate.store.<stream>``).
        replicas: of every stream (1, 3 or 5 in a cluster).
        lease_ms: the lease (>= 1000 ms); renewed every third of it.
        instance: this server's instance id, written in the lease.
        snapshot_every: records after which ``should_snapshot`` says yes.
        ack_timeout: seconds for a PubAck (and each JetStream API call).
        clock: monotonic seconds (tests inject their own).
        publish_inline: publish in ``append_encoded`` itself (under the caller's lock), one
            message per socket write, rather than on the writer thread, which sends everything
            queued in one write. Kept for the benchmark: inline is slower (about 0.6x, see
            bench/results/jetstream-store-2026-12-04.txt) and writes to a socket under the core's lock.
    """

    def __init__(
        self,
        conn: JsConnection,
        *,
        stream: str,
        subject_prefix: Optional[str] = None,
        replicas: int = 1,
        lease_ms: int = 3000,
        instance: str,
        snapshot_every: int = 100_000,
        ack_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        logger: Optional[logging.Logger] = None,
        publish_inline: bool = False,
    ) -> None:
        if not isinstance(stream, str) or not _STREAM_NAME.match(stream):
            raise ValueError(f"stream must be a JetStream stream name (letters, digits, _ and -), not {stream!r}")
        if subject_prefix is not None and (not isinstance(subject_prefix, str) or not _SUBJECT_PREFIX.match(subject_prefix)):
            raise ValueError(
                f"subject_prefix must be dot-separated tokens of letters, digits, _ and - (no wildcards), not {subject_prefix!r}"
            )
        if not _is_int(replicas) or not 1 <= replicas <= 5:
            raise ValueError(f"replicas must be an integer from 1 to 5, not {replicas!r}")
        check_lease_ms(lease_ms)
        if not _is_int(snapshot_every) or snapshot_every < 1:
            raise ValueError(f"snapshot_every must be a positive record count, not {snapshot_every!r}")
        if not isinstance(ack_timeout, (int, float)) or not ack_timeout > 0 or ack_timeout == float("inf"):
            raise ValueError(f"ack_timeout must be a positive number of seconds, not {ack_timeout!r}")
        if not instance or not isinstance(instance, str):
            raise ValueError("instance must be this server's (non-empty) instance id")
        self.conn = conn
        self.stream = stream
        self.subject = f"{subject_prefix or 'resonate.store.' + stream}.records"
        self.replicas = replicas
        self.lease_ms = lease_ms
        self.instance = instance
        self.snapshot_every = snapshot_every
        self.ack_timeout = ack_timeout
        self.clock = clock
        self._log = logger or logging.getLogger(__name__)
        self._api = JsApi(conn, timeout=ack_timeout)
        self._lease = Lease(self._api, stream, instance=instance, lease_ms=lease_ms, clock=clock)
        self._snapshots = SnapshotStore(self._api, stream, chunk_size=self._budget())
        self._writer = Writer(
            self._api, self.subject, instance=_msg_id_safe(instance), ack_timeout=ack_timeout, clock=clock, logger=self._log
        )
        self._writer.inline = publish_inline
        self._role = "standby"
        self._opened = False
        self._applied = 0
        self._appended_records = 0  # since the last snapshot began
        self._parts = _Parts(stream, self._log)  # a batch of several messages being read
        self._snapshot_lock = threading.Lock()
        self._stop = threading.Event()
        self._needs_reload = False
        self._failures = 0  # unexpected failures of the role loop in a row (backoff)
        self._thread: Optional[threading.Thread] = None
        self._callbacks: Dict[str, Callable[..., Any]] = {}

    # ------------------------------------------------------------------ opening

    def open(self) -> Recovery:
        """Create (or check) the three streams and return the newest snapshot + every record after it."""
        if self._opened:
            raise JetStreamError(f"stream {self.stream}: open() called twice")
        self._api.check_jetstream()
        self._api.ensure_stream(self._records_config())
        self._api.ensure_stream(self._lease.stream_config(self.replicas))
        self._api.ensure_stream(self._snapshots.stream_config(self.replicas))
        recovery = self._recover()
        self._opened = True
        return recovery

    def _records_config(self) -> dict:
        return {
            "name": self.stream,
            "subjects": [self.subject],
            "storage": "file",
            "num_replicas": self.replicas,
            "allow_direct": True,
            "deny_delete": True,
            "discard": "old",
            # Msg ids serve the fencing chain (Nats-Expected-Last-Msg-Id, which works whatever the
            # window: measured), never de-duplication; the server keeps every id of the window in
            # memory, so the window is as short as allowed: at 15k appends/s, 2 min would be 1.8M ids.
            "duplicate_window": 1_000_000_000,
        }

    def _recover(self) -> Recovery:
        """Newest snapshot (verified) + a lazy read of every record after it up to the stream's last seq."""
        self._parts.reset()
        state = self._api.stream_state(self.stream)
        first, last = int(state.get("first_seq", 0)), int(state.get("last_seq", 0))
        snapshots = self._snapshots.list()
        snap = snapshots[-1] if snapshots else None
        snapshot_seq = snap.seq if snap is not None else 0
        if last < snapshot_seq:
            raise JetStreamError(
                f"stream {self.stream} ends at seq {last} but object store {self.stream} holds {snap.name}, "
                f"a snapshot of seq {snapshot_seq}: the stream was deleted or replaced. Restore it, or delete "
                f"the object store bucket {self.stream} (`nats object rm {self.stream}`) to start from the stream alone"
            )
        if last > snapshot_seq and first > snapshot_seq + 1:
            needed = f"{snap.name} (seq {snapshot_seq})" if snap else "a snapshot"
            raise JetStreamError(
                f"stream {self.stream} starts at seq {first}, but recovery needs seq {snapshot_seq + 1} on, after "
                f"{needed}: records {snapshot_seq + 1}..{first - 1} were purged and no snapshot in object store "
                f"{self.stream} covers them. Restore the stream and bucket from a backup"
            )
        if snap is not None:
            self._snapshots.verify(snap)
        entries = self._snapshots.entries(snap) if snap is not None else iter(())
        self._applied = last
        self._snapshot_base = snapshot_seq
        self._appended_records = 0
        return Recovery(
            snapshot=entries,
            records=self._records(snapshot_seq + 1, last),
            last_seq=last,
            warnings=[],
            snapshot_seq=snapshot_seq,
        )

    def _records(self, start: int, last: int) -> Iterator[dict]:
        seq = start
        while seq <= last:
            found = self._fetch(seq)
            deadline = time.monotonic() + self.ack_timeout
            while not found and time.monotonic() < deadline:  # a replica answering may lag the leader
                time.sleep(0.05)
                found = self._fetch(seq)
            if not found:
                raise JetStreamError(f"stream {self.stream}: seq {seq}..{last} went missing while recovering")
            for msg in found:
                if msg.seq != seq:
                    raise JetStreamError(
                        f"stream {self.stream}: expected seq {seq}, found {msg.seq} (purged while recovering?): restart"
                    )
                if msg.seq > last:
                    return
                for record in self._parts.complete(msg):
                    self._appended_records += 1
                    yield record
                seq += 1

    def _fetch(self, start: int) -> List[StoredMsg]:
        return self._api.fetch(self.stream, self.subject, start, batch=_FETCH_BATCH)

    def _budget(self) -> int:
        return max(int(getattr(self.conn, "max_payload", 1 << 20)) - _HEADROOM, 1024)

    # ------------------------------------------------------------------ the journal interface

    # ``_appended_records`` counts the records since the newest snapshot: read by recovery, applied
    # as a standby, appended as the leader; so a new leader snapshots when the stream needs it.

    @property
    def last_seq(self) -> int:
        """A ticket covering every change so far (a stream seq until this instance first led)."""
        return self._writer.last_ticket if self._writer.armed else self._applied

    def encode(self, record: dict) -> bytes:
        """A record's canonical JSON; ValueError when one record alone cannot fit a message.

        The core turns an encode error into the request's 400, before the state changes.
        """
        raw = Journal.encode(record)
        if len(raw) > self._budget():
            raise ValueError(
                f"a record of {len(raw)} bytes cannot fit one JetStream message (max_payload "
                f"{self._budget() + _HEADROOM} bytes, {_HEADROOM} kept for headers)"
            )
        return raw

    def append_encoded(self, raws: Iterable[bytes]) -> int:
        """Queue the records as ONE stream message; returns its ticket. No I/O under the caller's lock.

        A batch larger than one message (a background pass that timed out many large promises:
        each record fits, see :meth:`encode`, but not all together) goes out as consecutive
        messages marked ``Resonate-Part: i/n``; readers apply them all or none, and the ticket is
        the last one's. The fenced message-id chain keeps the parts consecutive in the stream: a
        part that would land after another writer's message is refused, and a batch missing its
        last part was never acknowledged. NotLeaderError before this instance leads, FencedError
        once it was fenced.
        """
        raws = list(raws)
        if not raws:
            return self.last_seq
        if self._role == "closed":
            raise JetStreamError(f"stream {self.stream}: the store is closed")
        budget = self._budget()
        payload = b"\n".join(raws)
        if len(payload) <= budget:
            ticket = self._writer.append(payload, len(raws))
        else:
            parts = _split(raws, budget)
            for index, part in enumerate(parts, 1):
                ticket = self._writer.append(b"\n".join(part), len(part), f"{index}/{len(parts)}")
        self._appended_records += len(raws)
        return ticket

    def is_durable(self, ticket: int) -> bool:
        if ticket < TICKET_EPOCH:
            return ticket <= self._applied
        return self._writer.is_durable(ticket)

    def wait_durable(self, ticket: int, timeout: Optional[float] = None) -> None:
        """Return once ``ticket``'s message is acknowledged; FencedError when it never will be."""
        if ticket < TICKET_EPOCH:
            if ticket > self._applied:
                raise ValueError(f"ticket {ticket} was never issued (applied seq is {self._applied})")
            return
        self._writer.wait_durable(ticket, timeout)

    @property
    def on_flush(self) -> Optional[Callable[[float, float, int], None]]:
        """None, or ``on_flush(0.0, seconds publish→PubAck, records)`` per acknowledged message."""
        return self._writer.on_flush

    @on_flush.setter
    def on_flush(self, callback: Optional[Callable[[float, float, int], None]]) -> None:
        self._writer.on_flush = callback

    # ------------------------------------------------------------------ snapshots

    def should_snapshot(self) -> bool:
        """This instance leads and the stream holds ``snapshot_every`` records after the last snapshot."""
        return self._role == "leader" and self._appended_records >= self.snapshot_every

    def begin_snapshot(self) -> SnapshotTicket:
        """Call under the core lock: the state then reflects every message up to the ticket's seq."""
        if not self._writer.armed:
            raise NotLeaderError(f"stream {self.stream}: only the leader snapshots")
        self._appended_records = 0
        return SnapshotTicket(self._writer.last_ticket)

    def write_snapshot(self, ticket: SnapshotTicket, entries: Iterable[Tuple[str, object]]) -> None:
        """Wait until the ticket is durable, stream ``entries`` into an object, keep the newest two,
        then purge the stream below the older kept one. Outside the core lock."""
        self.wait_durable(ticket.seq)
        seq = ticket.seq % TICKET_EPOCH
        with self._snapshot_lock:
            if self._role == "closed":
                raise JetStreamError(f"stream {self.stream}: the store is closed: snapshot {seq} not written")
            snapshots = self._snapshots.list()
            if snapshots and snapshots[-1].seq >= seq:
                return
            written = self._snapshots.write(seq, entries)
            kept: List[SnapshotInfo] = (snapshots + [written])[-2:]
            for old in snapshots[:-1]:
                self._snapshots.delete(old)
            self._api.call(
                f"STREAM.PURGE.{self.stream}", {"seq": kept[0].seq + 1}, what=f"purging stream {self.stream} below seq {kept[0].seq + 1}"
            )
            self._log.info("jetstream: snapshot %s written (%d bytes); stream %s purged below seq %d",
                           written.name, written.size, self.stream, kept[0].seq + 1)  # fmt: skip

    # ------------------------------------------------------------------ roles

    @property
    def role(self) -> str:
        return self._role

    @property
    def applied_seq(self) -> int:
        """The stream seq the state reflects (as leader: the last acknowledged one)."""
        if self._role == "leader":
            return self._writer.durable_seq
        return self._applied

    @property
    def leader_id(self) -> Optional[str]:
        return self.instance if self._role == "leader" else self._lease.holder

    @property
    def max_in_flight(self) -> int:
        """The most appends ever waiting for their PubAck at once (a statistic: pipelining at work)."""
        return self._writer.max_in_flight

    def may_serve(self) -> bool:
        """Leader, writer armed, and the lease valid by the local clock."""
        return self._role == "leader" and self._writer.armed and self._lease.valid()

    def status(self) -> Dict[str, Any]:
        return {
            "role": self._role,
            "applied_seq": self.applied_seq,
            "stream": self.stream,
            "replicas": self.replicas,
            "leader": self.leader_id or "",
        }

    def start(
        self,
        *,
        apply: Callable[[List[dict]], None],
        reload: Callable[[Recovery], None],
        on_leader: Callable[[], None],
        on_standby: Callable[[str], None],
    ) -> None:
        """Start the role thread (after :meth:`open`, once the recovered state was built)."""
        if not self._opened:
            raise JetStreamError(f"stream {self.stream}: start() before open()")
        if self._thread is not None:
            raise JetStreamError(f"stream {self.stream}: start() called twice")
        self._callbacks = {"apply": apply, "reload": reload, "on_leader": on_leader, "on_standby": on_standby}
        self._thread = threading.Thread(target=self._run, name=f"jetstream-role-{self.stream}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the role thread; a leader waits (up to ``ack_timeout``) for its PubAcks, then releases
        the lease so a standby takes over at once. Idempotent."""
        if self._role == "closed":
            return
        was_leader = self._role == "leader"
        self._stop.set()
        self._writer.failed.set()  # wakes the role thread
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.ack_timeout + 5)
        if was_leader:
            deadline = time.monotonic() + self.ack_timeout
            while not self._writer.idle() and time.monotonic() < deadline and not self._writer.failure:
                time.sleep(0.005)
        self._role = "closed"
        self._writer.disarm(JetStreamError(f"stream {self.stream}: the store is closed"))
        self._writer.close()
        self._api.close()
        if self._lease.held:
            try:
                self._lease.release()
            except JetStreamError as exc:
                self._log.warning("jetstream: could not release the lease (a standby takes over when it expires): %s", exc)

    # ------------------------------------------------------------------ the role thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._needs_reload:  # before anything else: the state may hold changes the stream lacks
                    self._reload()
                    self._needs_reload = False
                elif self._role == "leader":
                    self._lead()
                else:
                    self._stand_by()
            except _Restart as exc:
                self._step_down(str(exc))
            except JournalError as exc:
                if self._stop.is_set():
                    break
                if self._role == "leader":
                    self._step_down(str(exc))
                else:
                    self._log.warning("jetstream (standby): %s; retrying", exc)
                    self._stop.wait(min(1.0, self.lease_ms / 6000))
            except Exception as exc:  # a callback failed: rebuild from the stream rather than drift
                if self._stop.is_set():
                    break
                self._failures += 1
                delay = retry_delay(self._failures, 0.1, 10.0)
                self._log.exception(
                    "jetstream (%s): unexpected failure %d in a row; rebuilding from the stream in %.1f s",
                    self._role, self._failures, delay,
                )  # fmt: skip
                self._step_down(f"failure: {exc}")
                self._stop.wait(delay)  # a record this version cannot apply must not spin a core

    def request_reload(self) -> None:
        """The caller's state holds a change the stream refused (an append after a step-down): rebuild
        it from the stream (``reload``) once more. Only sets a flag: safe under the caller's lock."""
        self._needs_reload = True  # both role loops check it within 0.1 s

    def _stand_by(self) -> None:
        next_poll = 0.0
        while not self._stop.is_set() and not self._needs_reload:
            now = self.clock()
            if now >= next_poll:  # first: a standby names its leader before it applies anything
                next_poll = now + self.lease_ms / 6000
                if self._lease.try_acquire():
                    self._take_over()
                    return
            applied_any = self._tail()
            if not applied_any:
                self._stop.wait(_IDLE_POLL)

    def _tail(self, upto: Optional[int] = None) -> bool:
        """Apply the messages after ``applied_seq`` (one batch); True if any. A gap means a purge: reload."""
        found = self._fetch(self._applied + 1)
        if not found:
            return False
        for msg in found:
            if upto is not None and msg.seq > upto:
                break
            if msg.seq != self._applied + 1:
                self._log.warning(
                    "jetstream: stream %s now starts after seq %d (purged past this standby): reloading from the newest snapshot",
                    self.stream, self._applied,
                )  # fmt: skip
                self._needs_reload = True  # the role loop reloads, and again until it succeeds
                raise _Restart("purged past this standby")
            records = self._parts.complete(msg)
            if records:
                self._callbacks["apply"](records)
                self._failures = 0
            self._applied = msg.seq
            self._appended_records += len(records)
        return True

    def _take_over(self) -> None:
        """We hold the lease: catch up to the stream's last seq, arm the writer, and lead."""
        last = int(self._api.stream_state(self.stream).get("last_seq", 0))
        while self._applied < last:
            if not self._lease.valid() or self._stop.is_set():
                self._lease.forget()
                return
            if self.clock() > self._lease.deadline - 2 * self.lease_ms / 3000:
                if not self._lease.renew():
                    return
            if not self._tail(upto=last):
                first = int(self._api.stream_state(self.stream).get("first_seq", 0))
                if first > self._applied + 1:  # purged past us, down to nothing left to read: a gap unseen
                    self._needs_reload = True
                    raise _Restart(f"the stream was purged past seq {self._applied} (a snapshot): reloading")
                self._stop.wait(_IDLE_POLL)
        self._writer.arm(self._applied)
        self._failures = 0
        self._role = "leader"
        self._log.info("jetstream: %s leads stream %s from seq %d", self.instance, self.stream, self._applied)
        self._callbacks["on_leader"]()

    def _lead(self) -> None:
        renew_every = self.lease_ms / 3000
        next_renew = self.clock() + renew_every
        while not self._stop.is_set():
            self._writer.failed.wait(min(0.1, renew_every))
            if self._stop.is_set():
                return
            if self._needs_reload:
                raise _Restart("a change was refused by the stream after it was applied here: rebuilding")
            if self._writer.failure is not None:
                raise _Restart(f"append failed: {self._writer.failure}")
            self._writer.check_timeouts()
            now = self.clock()
            if now >= next_renew:
                try:
                    renewed = self._lease.renew()
                except JetStreamError as exc:
                    self._log.warning("jetstream: lease renewal failed (%s); retrying until it expires", exc)
                    renewed = None
                if renewed is False:
                    raise _Restart(f"the lease in KV bucket {self.stream} was taken by {self._lease.holder or 'another instance'}")
                next_renew = now + (renew_every if renewed else min(0.2, renew_every))
            if not self._lease.valid():
                raise _Restart("the lease expired by this instance's clock (renewals did not get through)")

    def _step_down(self, reason: str) -> None:
        """on_standby first, then fail what is in flight, give the lease back, and rebuild from the stream."""
        was_leader = self._role == "leader"
        self._role = "standby"
        if was_leader:
            self._log.warning("jetstream: %s steps down as leader of %s: %s", self.instance, self.stream, reason)
            self._writer.disarm(FencedError(f"stepped down: {reason}"))
            try:
                self._callbacks["on_standby"](reason)
            except Exception:
                self._log.exception("jetstream: on_standby failed")
        if self._lease.held:
            try:
                self._lease.release()
            except JetStreamError:
                self._lease.forget()
        self._needs_reload = True

    def _reload(self) -> None:
        self._callbacks["reload"](self._recover())


def _split(raws: List[bytes], budget: int) -> List[List[bytes]]:
    """``raws`` in consecutive groups whose newline-joined size fits ``budget`` (each raw does, by ``encode``)."""
    parts: List[List[bytes]] = [[]]
    size = -1
    for raw in raws:
        if parts[-1] and size + 1 + len(raw) > budget:
            parts.append([])
            size = -1
        parts[-1].append(raw)
        size += 1 + len(raw)
    return parts


class _Parts:
    """Reassembles batches written as several messages (``Resonate-Part: i/n``): all or nothing.

    :meth:`complete` takes every message in stream order and returns the records to apply now:
    a whole message's, a completed batch's, or none while a batch is incomplete. A batch cut off
    (the next message is not its next part: its writer was fenced or died before the last part)
    was never acknowledged, and is dropped with a warning.
    """

    def __init__(self, stream: str, log: logging.Logger) -> None:
        self.stream = stream
        self._log = log
        self._records: List[dict] = []
        self._next = 0  # the part expected next (0: none)
        self._count = 0
        self._first = 0

    def reset(self) -> None:
        self._records, self._next, self._count = [], 0, 0

    def complete(self, msg: StoredMsg) -> List[dict]:
        part = msg.headers.get(PART_HEADER, "") if msg.headers else ""
        index, count = _part(part, msg.seq, self.stream) if part else (0, 0)
        if self._next and (index != self._next or count != self._count):
            self._log.warning(
                "jetstream: stream %s: a batch of %d messages from seq %d ends after part %d (its writer stopped"
                " before the rest, so it was never acknowledged): dropped",
                self.stream, self._count, self._first, self._next - 1,
            )  # fmt: skip
            self.reset()
        if not part:
            return list(_decode(msg, self.stream))
        if index == 1:
            self._records, self._count, self._first = [], count, msg.seq
        elif not self._next:
            # a batch whose first parts are behind a snapshot or a purge cannot be whole: never acked
            self._log.warning("jetstream: stream %s: seq %d is part %s of a batch whose start is gone: dropped",
                              self.stream, msg.seq, part)  # fmt: skip
            return []
        self._records.extend(_decode(msg, self.stream))
        if index == count:
            records = self._records
            self.reset()
            return records
        self._next = index + 1
        return []


def _part(value: str, seq: int, stream: str) -> Tuple[int, int]:
    index, slash, count = value.partition("/")
    if slash and index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count):
        return int(index), int(count)
    raise JetStreamError(f"stream {stream}: seq {seq} has a {PART_HEADER} header that is not i/n: {value[:40]!r}")


def _decode(msg: StoredMsg, stream: str) -> Iterator[dict]:
    for line in msg.payload.split(b"\n"):
        try:
            record = json.loads(line)
        except ValueError:
            raise JetStreamError(f"stream {stream}: seq {msg.seq} holds a line that is not JSON: {line[:80]!r}") from None
        if not isinstance(record, dict):
            raise JetStreamError(f"stream {stream}: seq {msg.seq} holds a record that is not an object")
        yield record


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _msg_id_safe(instance: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", instance)[:64]
