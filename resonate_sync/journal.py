"""Append-only JSON-lines journal: group commit, snapshots, crash recovery.

The journal stores opaque records (JSON-able dicts) and snapshots (streams of entries, each a
kind and a JSON-able value); it knows nothing of promises. Its one promise: a record whose
ticket ``wait_durable`` returned for survives ``kill -9`` and power loss, and startup never
silently drops one.

On-disk layout
--------------
``Journal(path)`` owns the directory ``path`` (created if missing)::

    resonate-data/resonate.journal/
        LOCK                                   flock()ed by the owning process; holds its pid
        snapshot-00000000000000120000.json     the caller's state after record 120000
        journal-00000000000000120000.jsonl     records 120001, 120002, ... (a "segment")
        journal-00000000000000240000.jsonl     records 240001, ... (begun by begin_snapshot)

Names carry 20-digit, zero-padded sequence numbers so they sort by name. A segment's
number is its *base*: the seq of the record just before its first one, which is also the
seq of the snapshot that makes every older segment obsolete.

A segment holds one record per line::

    {"seq":120001,"crc":2841594412,"r":{"kind":"promise.create","id":"p1"}}
    {"seq":120002,"crc":1104328797,"more":1,"r":{...}}
    {"seq":120003,"crc":3998103040,"r":{...}}

``crc`` is the CRC-32 of the canonical JSON of ``r`` (sorted keys, no spaces, ASCII): exactly
the bytes after ``"r":``. The records of one ``append()`` call form a batch; every record but
the batch's last carries ``"more":1``, so recovery can tell a whole batch from one a crash cut
short and never half-applies a caller's change.

A snapshot is a header line, then one line per entry, then an end line::

    {"format":2,"seq":120000}
    {"seq":1,"crc":3344556677,"r":{"k":"promises","v":{"id":"p1",...}}}
    {"seq":2,"crc":1029384756,"r":{"k":"tasks","v":{...}}}
    {"seq":3,"crc":2211334455,"r":{"end":2}}

The header's ``seq`` is the journal seq the snapshot covers. An entry is a (kind, value) pair
the caller passed to ``write_snapshot``; its line has a segment line's form and checksum, its
``seq`` counting the entries from 1, so a changed, lost or repeated line is found at its byte
offset. The last line is the record ``{"end":N}``, N the number of entries: without it the file
is incomplete. ``write_snapshot`` streams: it encodes one entry at a time and writes the lines in
chunks of ``_SNAPSHOT_CHUNK`` bytes, so its memory does not grow with the state. The file is
written to ``snapshot-<seq>.json.tmp``, fsynced, renamed into place and the directory fsynced;
only then are older snapshots and segments with a smaller base deleted.

Snapshots written before this format, a header ``{"bytes":B,"crc":C,"seq":S}`` and the whole
state as one JSON object of lists on the second line, still open: their entries are
(key, item) for each item of each list.

Recovery (``open``)
-------------------
Startup verifies the newest snapshot, then every segment whose base is at least the
snapshot's seq, line by line and by checksum alone; ``Recovery`` then streams the snapshot's
entries and the segments' records from disk, decoding one line at a time. Outcomes:

- a torn tail of the last segment, and a trailing batch missing its last record, are
  dropped with a warning and truncated away; no waiter can have been told they were
  durable. Only the bytes after the last newline can be a torn tail, and only if they are
  what an interrupted write leaves: a prefix of the line ``append`` writes for the next seq
  (``{"seq":N,"crc":``, digits, ``,"more":1`` or not, ``,"r":``, the start of the record),
  possibly followed by NUL bytes (a power cut on some filesystems zero-fills blocks that were
  not synced), or NUL bytes alone. A whole record without its newline, its checksum right,
  is torn too: ``wait_durable`` returns only once the newline is written, so the write did
  not complete and no waiter was told;
- any other damage is a ``JournalError`` naming the file, byte offset and record seq, saying
  to restore from a backup: a line that ends in a newline but does not parse or check (the
  last one too: one changed byte of an acknowledged record is damage, not a crash), bytes
  after the last newline that no write of this module starts with, a whole record followed
  by anything but its newline, a sequence gap, or a snapshot that does not parse or check.
  Skipping such damage could drop acknowledged records. A snapshot is renamed into place
  only once complete, so a snapshot cut short (no end line, a last line without its
  newline) is damage too, never a torn tail;
- ``snapshot-*.json.tmp`` files (a snapshot a crash interrupted) are deleted with a warning.

Durability policy
-----------------
``fsync="always"`` (default): ``wait_durable`` returns only after ``fsync`` covered the
records, the segment's directory entry included. ``fsync="never"`` returns once the bytes
reached the OS: they survive ``kill -9`` but NOT power loss or a kernel crash. It is unsafe
and meant for benchmarks only.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import threading
import time
import zlib
from typing import Callable, Iterable, Iterator

import attrs

from .jsonenc import compact_encoder

__all__ = ["FSYNC_POLICIES", "Journal", "JournalError", "Recovery", "SnapshotTicket"]

FSYNC_POLICIES = ("always", "never")

_SEGMENT_NAME = re.compile(r"journal-(\d{20})\.jsonl\Z")
_SNAPSHOT_NAME = re.compile(r"snapshot-(\d{20})\.json\Z")
_SNAPSHOT_TMP_NAME = re.compile(r"snapshot-(\d{20})\.json\.tmp\Z")
_LOCK_NAME = "LOCK"

# Built once: json.dumps() with options builds a new encoder per call.
_encode_record = compact_encoder(sort_keys=True, allow_nan=False)
# Replay parses already-verified lines: raw_decode skips json.loads' encoding sniffing.
_decode_json = json.JSONDecoder().raw_decode

_MORE = b',"more":1'
_RECORD_STARTS = (b',"r":', _MORE + b',"r":')  # what follows a record line's crc digits
_CRC_DIGITS = re.compile(rb"\d{0,10}")
_PRINTABLE = re.compile(rb"[ -~]*")  # record lines are ASCII JSON: control bytes are escaped
_SNAPSHOT_FORMAT = 2
_SNAPSHOT_CHUNK = 1 << 20  # bytes of snapshot lines buffered between writes


class JournalError(Exception):
    """The journal cannot guarantee durability or read its files; the message names file and byte."""


@attrs.frozen
class Recovery:
    """What ``Journal.open`` found on disk.

    Attributes:
        snapshot: the entries last passed to ``write_snapshot``, (kind, value) pairs in the
            order written, streamed from disk (empty when there is no snapshot).
        records: the records appended after that snapshot, oldest first, streamed from disk.
            Iterate each once, before the first ``write_snapshot`` (which may delete their files).
        last_seq: the sequence number of the last record; the next append gets ``last_seq + 1``.
        warnings: what recovery dropped or cleaned up (torn tail, interrupted snapshot), also logged.
        snapshot_seq: the seq the snapshot covers (0 without one).
    """

    snapshot: Iterator[tuple[str, object]]
    records: Iterator[dict]
    last_seq: int
    warnings: list
    snapshot_seq: int = 0


@attrs.frozen
class SnapshotTicket:
    """Handed out by ``begin_snapshot``: the state passed with it must reflect records 1..``seq``."""

    seq: int


@attrs.frozen
class _Segment:
    """A segment file found by recovery; ``end`` is the byte offset after its last whole batch."""

    base: int
    path: str
    end: int


@attrs.frozen
class _Snapshot:
    """A verified snapshot file: its entries lie between byte ``start`` and byte ``end``."""

    path: str
    start: int
    end: int


class _BadLine(Exception):
    """A segment line that is not a well-formed record (the reason is the message)."""


def _segment_name(base: int) -> str:
    return f"journal-{base:020d}.jsonl"


def _snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:020d}.json"


def _parse_line(line: bytes) -> tuple[int, int, bool, bytes]:
    """Split a record line into (seq, stored crc, more, raw record JSON); raise ``_BadLine``.

    Lines this module wrote take the fast path (slicing, no JSON parse); anything else,
    say a line re-indented by hand, is parsed and its record re-encoded canonically.
    """
    if line[:7] == b'{"seq":' and line[-2:] == b"}\n":
        crc_at = line.find(b',"crc":', 7)
        record_at = line.find(b',"r":', crc_at) if crc_at > 0 else -1
        if record_at > 0:
            head = line[crc_at + 7 : record_at]
            more = head.endswith(_MORE)
            try:
                seq = int(line[7:crc_at])
                crc = int(head[: -len(_MORE)] if more else head)
            except ValueError:
                pass
            else:
                return seq, crc, more, line[record_at + 5 : -2]
    try:
        line_obj = json.loads(line.decode())  # bytes would make json guess UTF-16/32 from NULs
    except ValueError as exc:
        raise _BadLine(f"not valid JSON ({exc})") from None
    if not (
        isinstance(line_obj, dict)
        and isinstance(line_obj.get("seq"), int)
        and isinstance(line_obj.get("crc"), int)
        and isinstance(line_obj.get("r"), dict)
        and line_obj.get("more", 0) in (0, 1)
    ):
        raise _BadLine('not a journal record {"seq":int,"crc":int,"r":{...}}')
    raw = _encode_record(line_obj["r"]).encode()
    return line_obj["seq"], line_obj["crc"], bool(line_obj.get("more")), raw


def _verify_line(path: str, start: int, line: bytes, expected: int, noun: str) -> tuple[bool, bytes]:
    """Check a line's checksum and that its seq is ``expected``; return (more, raw record JSON).

    Raises ``_BadLine`` for a line that is no record, JournalError for a checksum mismatch or
    a sequence gap (``noun`` names what is numbered).
    """
    if line[-1:] != b"\n":
        raise _BadLine("the line has no newline")
    line_seq, crc, more, raw = _parse_line(line)
    computed = zlib.crc32(raw)
    if computed != crc:
        raise JournalError(
            f"{path}: byte {start}: checksum mismatch in {noun} {line_seq} (stored {crc}, computed {computed})"
        )
    if line_seq != expected:
        raise JournalError(f"{path}: byte {start}: sequence gap: expected {noun} {expected}, found {line_seq}")
    return more, raw


def _torn_write(tail: bytes, seq: int) -> str:
    """Say what interrupted write left ``tail``, the bytes after a segment's last newline.

    ``seq`` is the record the next line would hold. Raises ``_BadLine`` when no write of
    ``append`` starts with these bytes: then they were damaged after being written.
    """
    written = tail.rstrip(b"\0")
    zeros = len(tail) - len(written)
    zero_filled = f"{zeros} NUL bytes, as a power cut leaves unsynced blocks on some filesystems"
    if not written:
        return zero_filled
    cut = f"record seq {seq} cut short after {len(written)} bytes" + (f", then {zero_filled}" if zeros else "")
    head = b'{"seq":%d,"crc":' % seq
    not_a_write = _BadLine(
        f"the last line has no newline, and no record line of seq {seq} begins with it ({tail[:40]!r})"
    )
    if len(written) <= len(head):
        if head.startswith(written):
            return cut
        raise not_a_write
    if not written.startswith(head) or not _PRINTABLE.fullmatch(written):
        raise not_a_write
    crc_end = _CRC_DIGITS.match(written, len(head)).end()
    if crc_end == len(written):
        return cut
    if crc_end == len(head):
        raise not_a_write
    rest = written[crc_end:]
    for record_start in _RECORD_STARTS:
        if record_start.startswith(rest):
            return cut
        if rest.startswith(record_start):
            raw = rest[len(record_start) :]
            break
    else:
        raise not_a_write
    if not raw:
        return cut
    if raw[:1] != b"{":
        raise not_a_write
    try:
        end = _decode_json(raw.decode())[1]
    except ValueError:  # unfinished; damage inside is not told apart: an acknowledged record is whole
        return cut
    after = raw[end:]
    if after == b"":
        return cut
    if after[:1] != b"}":
        raise not_a_write
    if after != b"}" or zeros:
        extra = tail[len(written) - len(after) + 1 :]
        raise _BadLine(f"record seq {seq} is whole but followed by {extra[:20]!r} where its newline belongs")
    stored, computed = int(written[len(head) : crc_end]), zlib.crc32(raw[:end])
    if stored != computed:
        raise _BadLine(
            f"record seq {seq} has no newline and a checksum mismatch (stored {stored}, computed {computed})"
        )
    return f"record seq {seq} whole but for its newline: the write stopped just before it"


def _damage_advice(path: str, start: int, seq: int) -> str:
    return (
        f". This is damage, not an interrupted write, and record seq {seq} or later ones may have "
        f"been acknowledged, so startup stops rather than drop them. Inspect the line with "
        f"`tail -c +{start + 1} {path} | head -c 300`, then restore the journal directory from a backup"
    )


def _read_records(path: str, start: int, end: int) -> Iterator[dict]:
    """Yield the records of the verified lines of ``path`` from byte ``start`` up to byte ``end``."""
    with open(path, "rb") as file:
        file.seek(start)
        offset = start
        for line in file:
            if offset >= end:
                break
            start, offset = offset, offset + len(line)
            try:
                record = _decode_json(line.decode().lstrip())[0]["r"]
            except (ValueError, LookupError) as exc:  # only if changed since open() verified it
                raise JournalError(f"{path}: byte {start}: corrupt record: {exc}") from None
            yield record


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is out: a short write is not an error, only a pause."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _record_line(seq: int, record: dict) -> bytes:
    raw = _encode_record(record).encode()
    return b'{"seq":%d,"crc":%d,"r":%s}\n' % (seq, zlib.crc32(raw), raw)


def _write_snapshot_lines(fd: int, seq: int, entries: Iterable[tuple[str, object]]) -> None:
    """Write the header, one line per entry and the end line, in chunks of ``_SNAPSHOT_CHUNK``."""
    chunk = bytearray(_encode_record({"format": _SNAPSHOT_FORMAT, "seq": seq}).encode() + b"\n")
    count = 0
    for kind, value in entries:
        if not isinstance(kind, str):
            raise TypeError(f"a snapshot entry's kind must be a str, not {type(kind).__name__}")
        count += 1
        chunk += _record_line(count, {"k": kind, "v": value})
        if len(chunk) >= _SNAPSHOT_CHUNK:
            _write_all(fd, chunk)
            del chunk[:]
    chunk += _record_line(count + 1, {"end": count})
    _write_all(fd, chunk)


def _snapshot_header(path: str, line: bytes, seq: int) -> dict:
    """The header of a snapshot (either format), checked against the seq in the file's name."""
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if isinstance(header, dict) and header.get("format") == _SNAPSHOT_FORMAT:
        header_ok = isinstance(header.get("seq"), int)
    else:  # the format before streaming: the bytes and checksum of one state line
        header_ok = isinstance(header, dict) and all(isinstance(header.get(key), int) for key in ("bytes", "crc", "seq"))
    if not header_ok:
        raise JournalError(
            f'{path}: byte 0: snapshot header is not {{"format":{_SNAPSHOT_FORMAT},"seq":int}} '
            'nor {"bytes":int,"crc":int,"seq":int}'
        )
    if header["seq"] != seq:
        raise JournalError(f"{path}: byte 0: snapshot header says seq {header['seq']}, its name says {seq}")
    return header


def _legacy_entries(path: str, offset: int, header: dict, body: bytes) -> Iterator[tuple[str, object]]:
    """Verify a snapshot of the one-line format and return its entries: (key, item) per list item."""
    if len(body) != header["bytes"] + 1 or body[-1:] != b"\n":
        raise JournalError(
            f"{path}: byte {offset}: snapshot state is {len(body)} bytes, the header "
            f"promises {header['bytes']} plus a newline (truncated or overwritten)"
        )
    with memoryview(body) as view:
        crc = zlib.crc32(view[:-1])
    if crc != header["crc"]:
        raise JournalError(f"{path}: byte {offset}: snapshot checksum mismatch (stored {header['crc']}, computed {crc})")
    try:
        state = json.loads(body)  # the newline is JSON white space
    except ValueError as exc:
        where = offset + getattr(exc, "pos", 0)
        raise JournalError(f"{path}: byte {where}: snapshot is not JSON: {exc}") from None
    if not (isinstance(state, dict) and all(isinstance(items, list) for items in state.values())):
        raise JournalError(f"{path}: byte {offset}: snapshot state is not an object of lists")
    return _drain_lists(state)


def _drain_lists(state: dict) -> Iterator[tuple[str, object]]:
    """Yield (key, item) for every item, dropping each as it goes so memory shrinks while read."""
    for kind in list(state):
        items = state.pop(kind)
        items.reverse()
        while items:
            yield kind, items.pop()


class Journal:
    """A directory of JSON-lines segments and snapshots with group commit.

    Thread-safe. The intended call pattern, where ``state_lock`` is the caller's own lock::

        with state_lock:
            ticket = journal.append(records)          # cheap: serialise and buffer
            if journal.should_snapshot():
                snap, copy = journal.begin_snapshot(), deep_copy(state)
        journal.wait_durable(ticket)                  # group commit: one fsync per batch
        if copy: journal.write_snapshot(snap, entries_of(copy))   # streams, entry by entry

    Attributes:
        path: the journal directory.
        fsync_policy: "always" or "never" (see the module docstring).
        snapshot_every: records after which ``should_snapshot`` says yes.
        fsync_count: fsyncs of segment files so far (a statistic; tests and benchmarks read it).
        on_flush: None, or called after each group commit with the seconds its writes took,
            the seconds its fsyncs took (0 with fsync="never") and the records it made durable.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fsync: str = "always",
        snapshot_every: int = 100_000,
        logger: logging.Logger | None = None,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be a positive record count, not {snapshot_every}")
        self.path = os.fspath(path)
        self.fsync_policy = fsync
        self.snapshot_every = snapshot_every
        self.fsync_count = 0
        self.on_flush: Callable[[float, float, int], None] | None = None
        self._fsync_seconds = 0.0  # of the flush being written
        self._log = logger or logging.getLogger(__name__)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._snapshot_lock = threading.Lock()
        self._status = "new"  # new -> open -> closing -> closed
        self._failure: JournalError | None = None
        self._lock_fd: int | None = None
        # Appender side, guarded by _lock: (segment base, encoded lines) not yet written.
        self._chunks: list[tuple[int, bytes]] = []
        self._appended_seq = 0
        self._durable_seq = 0
        self._append_base = 0
        self._snapshot_base = 0
        self._snapshot_written = -1
        # Writer side: touched only by the one thread that holds _flushing.
        self._flushing = False
        self._fd: int | None = None
        self._fd_base: int | None = None
        self._fd_path = ""
        self._fd_size = 0
        self._fd_dirty = False

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> Recovery:
        """Lock the directory (creating it if missing), recover, and return what was found."""
        with self._lock:
            if self._status != "new":
                raise JournalError(f"{self.path}: open() called twice")
            self._status = "opening"
        try:
            self._make_directory()
        except FileExistsError:
            raise JournalError(f"{self.path}: exists and is not a directory") from None
        except OSError as exc:
            raise JournalError(
                f"{self.path}: cannot create the journal directory: {exc.strerror}"
            ) from exc
        self._acquire_lock()
        try:
            if not os.access(self.path, os.W_OK | os.X_OK):
                # An existing LOCK can be opened in a read-only directory: fail now, not at the
                # first snapshot, whose new segment could not be created.
                raise JournalError(
                    f"{self.path}: the journal directory is read-only: new segments and snapshots "
                    "cannot be created in it"
                )
            try:
                recovery = self._recover()
            except OSError as exc:
                where = exc.filename or self.path
                raise JournalError(f"{where}: recovery failed: {exc.strerror or exc}") from exc
        except BaseException:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._release_lock()
            with self._lock:
                self._status = "new"
            raise
        for warning in recovery.warnings:
            self._log.warning("journal recovery: %s", warning)
        with self._lock:
            self._status = "open"
        return recovery

    def close(self) -> None:
        """Write and fsync every appended record, then release the directory lock.

        On a failed journal it only releases the lock. Idempotent.
        """
        with self._lock:
            if self._status != "open":
                return
            self._status = "closing"
            failed_before = self._failure
        failure = None
        try:
            self.wait_durable(self._appended_seq)
            if self._fd is not None:
                os.fsync(self._fd)  # for fsync="never": a clean shutdown is durable anyway
                self.fsync_count += 1
                self._fsync_dir()
        except JournalError as exc:
            failure = exc
        except OSError as exc:
            failure = JournalError(f"{self.path}: final fsync failed: {exc.strerror}")
        with self._snapshot_lock, self._cond:  # a snapshot being written finishes first
            while self._flushing:
                self._cond.wait()
            self._status = "closed"
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        self._release_lock()
        if failure is not None and failed_before is None:
            raise failure

    # ------------------------------------------------------------------ appending

    @property
    def last_seq(self) -> int:
        """The seq of the last appended record: a ticket covering every change so far."""
        return self._appended_seq

    @staticmethod
    def encode(record: dict) -> bytes:
        """A record's canonical JSON, as :meth:`append_encoded` takes it.

        Raises TypeError/ValueError (or RecursionError) for a value strict JSON cannot hold:
        the caller finds out before it changes anything, and the journal stays usable.
        """
        if not isinstance(record, dict):
            raise TypeError(f"a journal record must be a dict, not {type(record).__name__}")
        return _encode_record(record).encode()

    def append(self, records: Iterable[dict]) -> int:
        """Encode ``records`` and append them as one batch (see :meth:`append_encoded`).

        A record that is not a JSON-able dict raises TypeError/ValueError and nothing of the
        batch is appended.
        """
        return self.append_encoded([self.encode(record) for record in records])

    def append_encoded(self, raws: Iterable[bytes]) -> int:
        """Buffer encoded records (from :meth:`encode`) as one batch and return its ticket.

        The ticket is the seq of the batch's last record. Meant to run under the caller's
        state lock, so it does no I/O.
        """
        encoded = [(zlib.crc32(raw), raw) for raw in raws]
        with self._lock:
            self._check_usable()
            if not encoded:
                return self._appended_seq
            seq = self._appended_seq
            last = len(encoded) - 1
            lines = []
            for index, (crc, raw) in enumerate(encoded):
                seq += 1
                more = _MORE if index < last else b""
                lines.append(b'{"seq":%d,"crc":%d%s,"r":%s}\n' % (seq, crc, more, raw))
            self._chunks.append((self._append_base, b"".join(lines)))
            self._appended_seq = seq
            return seq

    def is_durable(self, ticket: int) -> bool:
        """Whether every record up to ``ticket`` is durable already; takes no lock (a fast path, not a wait)."""
        return self._durable_seq >= ticket

    def wait_durable(self, ticket: int, timeout: float | None = None) -> None:
        """Return once every record up to ``ticket`` is durable (per the fsync policy).

        Group commit by leader/follower: the first waiter to find no write in progress takes
        every buffered record, writes and fsyncs them outside the lock, while later waiters
        queue up and are all covered by the next leader's single fsync. Raises JournalError
        if that write failed (and from then on, always), TimeoutError after ``timeout`` seconds
        (the timeout bounds waiting for another thread's fsync, not a fsync this thread runs).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if ticket > self._appended_seq:
                raise ValueError(f"ticket {ticket} was never issued (last seq is {self._appended_seq})")
            while self._durable_seq < ticket:
                if self._failure is not None:
                    # A new exception each time: re-raising the stored one would grow its
                    # traceback by every raise, for as long as the server keeps running.
                    raise JournalError(str(self._failure))
                if not self._flushing:
                    self._lead_flush()
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"{self.path}: record {ticket} not durable after {timeout} s")
                self._cond.wait(remaining)

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise JournalError(
                f"{self.path}: refusing records after an earlier failure: {self._failure}"
            )
        if self._status != "open":
            raise JournalError(f"{self.path}: journal is {self._status}, not open")

    def _lead_flush(self) -> None:
        """Write and fsync all buffered chunks; called holding ``_lock``, released during I/O."""
        chunks, self._chunks = self._chunks, []
        target = self._appended_seq
        first = self._durable_seq + 1
        self._flushing = True
        self._lock.release()
        failure = None
        try:
            started = time.perf_counter()
            self._fsync_seconds = 0.0
            self._write_chunks(chunks)
            took = time.perf_counter() - started
        except OSError as exc:
            failure = JournalError(
                f"{self._fd_path}: byte {self._fd_size}: cannot make records {first}..{target} durable: "
                f"{exc.strerror or exc} [{errno.errorcode.get(exc.errno, exc.errno)}]; the journal "
                "accepts no more records until restarted (acknowledged records are safe)"
            )
        except BaseException as exc:
            failure = JournalError(f"{self.path}: writing records {first}..{target} failed: {exc!r}")
            raise
        finally:
            self._lock.acquire()
            self._flushing = False
            if failure is None:
                self._durable_seq = target
            else:
                self._failure = failure  # not logged: every waiter raises it, and its caller logs it once
            self._cond.notify_all()
        if failure is None and self.on_flush is not None:
            self.on_flush(took - self._fsync_seconds, self._fsync_seconds, target - first + 1)

    def _write_chunks(self, chunks: list[tuple[int, bytes]]) -> None:
        """Write chunks to their segments in order, rotating files as the base changes."""
        created = False
        start = 0
        while start < len(chunks):
            base = chunks[start][0]
            stop = start + 1
            while stop < len(chunks) and chunks[stop][0] == base:
                stop += 1
            if base != self._fd_base:
                self._rotate_file(base)
                created = True
            data = b"".join(chunk for _, chunk in chunks[start:stop])
            _write_all(self._fd, data)
            self._fd_size += len(data)
            self._fd_dirty = True
            start = stop
        self._sync_fd()
        if created and self.fsync_policy == "always":
            self._fsync_dir()  # a new segment's records are durable only with its name

    def _rotate_file(self, base: int) -> None:
        """Make segment ``base`` the open file; the old one is fsynced first.

        Order matters: records of the new segment must never be durable while older ones
        in the old segment are not, or recovery would find a gap.
        """
        if self._fd is not None:
            self._sync_fd()
            os.close(self._fd)
            self._fd = None
        self._fd_path = os.path.join(self.path, _segment_name(base))
        self._fd_size = 0
        self._fd = os.open(self._fd_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._fd_base = base

    def _sync_fd(self) -> None:
        if self._fd_dirty and self.fsync_policy == "always":
            started = time.perf_counter()
            os.fsync(self._fd)
            self._fsync_seconds += time.perf_counter() - started
            self.fsync_count += 1
        self._fd_dirty = False

    def _make_directory(self) -> None:
        """Create the journal directory and missing parents, each durable in its parent."""
        missing = []
        path = os.path.abspath(self.path)
        while not os.path.lexists(path):
            missing.append(path)
            path = os.path.dirname(path)
        os.makedirs(self.path, exist_ok=True)
        # Without this, power loss could take the new directory, and every record in it, away.
        for created in missing:
            self._fsync_dir(os.path.dirname(created))

    def _fsync_dir(self, path: str | None = None) -> None:
        fd = os.open(path or self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ snapshots

    def should_snapshot(self) -> bool:
        """True when ``snapshot_every`` records were appended since the last snapshot began."""
        return self._appended_seq - self._snapshot_base >= self.snapshot_every

    def begin_snapshot(self) -> SnapshotTicket:
        """Start a new segment for later records and return a ticket for the current seq.

        Call it under the caller's state lock, where the state matches the records appended
        so far; take the copy of the state to snapshot there too. Costs no I/O: the new
        segment file is created when its first record is written.
        """
        with self._lock:
            self._check_usable()
            self._append_base = self._snapshot_base = self._appended_seq
            return SnapshotTicket(self._appended_seq)

    def write_snapshot(self, ticket: SnapshotTicket, entries: Iterable[tuple[str, object]]) -> None:
        """Durably write ``entries`` as the snapshot of ``ticket``, then delete what it obsoletes.

        ``entries`` yields (kind, JSON-able value) pairs; it is consumed one entry at a time, so
        a generator keeps memory flat however large the state. Call it outside the state lock.
        It first waits until records up to ``ticket.seq`` are durable, then writes a temp file,
        fsyncs, renames, fsyncs the directory, and only then removes older snapshots and
        segments. A failure here raises JournalError (an entry that is not JSON-able raises
        TypeError/ValueError) but leaves the journal usable: the segments still hold every
        record. ``close()`` waits for a snapshot being written; after it, this raises.
        """
        self.wait_durable(ticket.seq)
        with self._snapshot_lock:
            if self._status not in ("open", "closing"):
                raise JournalError(f"{self.path}: journal is {self._status}: snapshot {ticket.seq} not written")
            if ticket.seq <= self._snapshot_written:
                return  # a newer (or this very) snapshot is already on disk
            final = os.path.join(self.path, _snapshot_name(ticket.seq))
            temp = final + ".tmp"
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    _write_snapshot_lines(fd, ticket.seq, entries)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(temp, final)
                self._fsync_dir()
            except BaseException as exc:
                try:
                    os.remove(temp)
                except OSError:
                    pass
                if isinstance(exc, OSError):
                    raise JournalError(
                        f"{temp}: cannot write snapshot {ticket.seq}: {exc.strerror or exc}"
                    ) from exc
                raise
            self._snapshot_written = ticket.seq
            self._remove_obsolete(ticket.seq)

    def _remove_obsolete(self, snapshot_seq: int) -> None:
        """Delete snapshots and segments a durable snapshot at ``snapshot_seq`` made redundant."""
        removed = False
        for name in sorted(os.listdir(self.path)):
            match = _SNAPSHOT_NAME.match(name) or _SEGMENT_NAME.match(name)
            if match and int(match.group(1)) < snapshot_seq:
                try:
                    os.remove(os.path.join(self.path, name))
                    removed = True
                except OSError as exc:  # harmless: the next open or snapshot retries
                    self._log.warning("journal: cannot remove obsolete %s: %s", name, exc.strerror)
        if removed:
            try:
                self._fsync_dir()
            except OSError as exc:
                self._log.warning("journal: cannot fsync %s: %s", self.path, exc.strerror)

    # ------------------------------------------------------------------ locking

    def _acquire_lock(self) -> None:
        lock_path = os.path.join(self.path, _LOCK_NAME)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(f"{lock_path}: cannot create the lock file: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise JournalError(
                    f"{self.path} is already in use by another resonate process (pid {holder})"
                ) from None
            raise JournalError(f"{lock_path}: cannot lock: {exc.strerror}") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        except OSError as exc:
            os.close(fd)
            raise JournalError(f"{lock_path}: cannot write this process's pid: {exc.strerror}") from exc
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the last descriptor drops the flock
            self._lock_fd = None

    # ------------------------------------------------------------------ recovery

    def _recover(self) -> Recovery:
        """Verify every live file, drop a torn tail, clean up, and prepare the replay."""
        warnings: list[str] = []
        snapshots, segments = self._list_files(warnings)
        snapshot_seq = max(snapshots, default=0)
        entries = self._read_snapshot(snapshots[snapshot_seq], snapshot_seq) if snapshots else iter(())
        live_bases = sorted(base for base in segments if base >= snapshot_seq)
        live: list[_Segment] = []
        seq = snapshot_seq
        for index, base in enumerate(live_bases):
            path = segments[base]
            if base != seq:
                raise JournalError(
                    f"{path}: byte 0: sequence gap: this segment starts after seq {base} but "
                    f"the records before it end at seq {seq}"
                    + (f" (snapshot {snapshot_seq})" if snapshots else " (no snapshot)")
                )
            end, seq = self._scan_segment(path, seq, index == len(live_bases) - 1, warnings)
            live.append(_Segment(base, path, end))
        self._open_tail(live, snapshot_seq)
        if self.fsync_policy == "always":
            self._sync_recovered(live)
        if any(base < snapshot_seq for base in segments) or len(snapshots) > 1:
            self._remove_obsolete(snapshot_seq)  # a crash came between rename and cleanup
        self._appended_seq = self._durable_seq = seq
        self._snapshot_base = snapshot_seq
        self._snapshot_written = snapshot_seq if snapshots else -1
        return Recovery(
            snapshot=entries,
            records=self._replay(live),
            last_seq=seq,
            warnings=warnings,
            snapshot_seq=snapshot_seq,
        )

    def _list_files(self, warnings: list[str]) -> tuple[dict[int, str], dict[int, str]]:
        """Map seq -> path for snapshots and segments; delete interrupted snapshot temp files."""
        snapshots: dict[int, str] = {}
        segments: dict[int, str] = {}
        for name in os.listdir(self.path):
            path = os.path.join(self.path, name)
            if _SNAPSHOT_TMP_NAME.match(name):
                os.remove(path)
                warnings.append(f"{path}: removed a snapshot a crash interrupted before it was complete")
                continue
            snapshot = _SNAPSHOT_NAME.match(name)
            segment = _SEGMENT_NAME.match(name)
            if snapshot:
                snapshots[int(snapshot.group(1))] = path
            elif segment:
                segments[int(segment.group(1))] = path
        return snapshots, segments

    def _open_tail(self, live: list[_Segment], snapshot_seq: int) -> None:
        """Open the last segment for appending, truncating a dropped tail first."""
        if not live:
            self._append_base = snapshot_seq  # its file is created by the first write
            return
        tail = live[-1]
        try:
            fd = os.open(tail.path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise JournalError(f"{tail.path}: cannot open for appending: {exc.strerror}") from exc
        self._fd, self._fd_base, self._fd_path, self._fd_size = fd, tail.base, tail.path, tail.end
        self._append_base = tail.base
        try:
            if os.fstat(fd).st_size > tail.end:
                os.ftruncate(fd, tail.end)
                os.fsync(fd)
        except OSError as exc:
            raise JournalError(f"{tail.path}: cannot drop the torn tail: {exc.strerror}") from exc

    def _sync_recovered(self, live: list[_Segment]) -> None:
        """fsync the segments recovery read, and the directory.

        The process that wrote them may have died between write and fsync, or run with
        fsync="never": its records can still sit in the page cache only. From now on replies
        may show them, so they must be as durable as records this process wrote.
        """
        for segment in live[:-1]:
            fd = os.open(segment.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if self._fd is not None:
            os.fsync(self._fd)
        self._fsync_dir()

    def _scan_segment(self, path: str, seq: int, is_last: bool, warnings: list[str]) -> tuple[int, int]:
        """Verify a segment's records continue from ``seq``; return (end of whole batches, last seq).

        Streams the file line by line and parses no record JSON but a torn tail's: the
        checksum proves it.
        """
        try:
            size = os.path.getsize(path)
            file = open(path, "rb")
        except OSError as exc:
            raise JournalError(f"{path}: cannot read: {exc.strerror}") from exc
        offset = whole_end = 0
        whole_seq = seq
        torn = None
        with file:
            for line in file:
                start, offset = offset, offset + len(line)
                try:
                    if is_last and line[-1:] != b"\n":  # the file's last line: maybe a torn write
                        torn = (start, _torn_write(line, seq + 1))
                        break
                    more, _ = _verify_line(path, start, line, seq + 1, "record seq")
                except _BadLine as exc:
                    raise JournalError(
                        f"{path}: byte {start}: corrupt record: {exc}" + _damage_advice(path, start, seq + 1)
                    ) from None
                except JournalError as exc:
                    raise JournalError(f"{exc}{_damage_advice(path, start, seq + 1)}") from None
                seq += 1
                if not more:
                    whole_end, whole_seq = offset, seq
        if whole_end < size:
            if not is_last:
                raise JournalError(
                    f"{path}: byte {whole_end}: the batch after seq {whole_seq} is incomplete "
                    "but later segments follow"
                )
            what = f"{seq - whole_seq} record(s) of an incomplete batch" if seq > whole_seq else ""
            if torn is not None:
                what += (" and " if what else "") + f"a torn line at byte {torn[0]} ({torn[1]})"
            warnings.append(
                f"{path}: dropped {size - whole_end} bytes after byte {whole_end}: {what}; a crash "
                "interrupted the write, so they were never acknowledged"
            )
        return whole_end, whole_seq

    def _read_snapshot(self, path: str, seq: int) -> Iterator[tuple[str, object]]:
        """Verify a snapshot and return an iterator over its entries; damage is a JournalError."""
        try:
            with open(path, "rb") as file:
                header_line = file.readline()
                header = _snapshot_header(path, header_line, seq)
                if header.get("format") == _SNAPSHOT_FORMAT:
                    snapshot = self._scan_snapshot(path, file, len(header_line))
                    return self._snapshot_entries(snapshot)
                return _legacy_entries(path, len(header_line), header, file.read())
        except OSError as exc:
            raise JournalError(f"{path}: cannot read snapshot: {exc.strerror}") from exc

    def _scan_snapshot(self, path: str, file, offset: int) -> _Snapshot:
        """Verify the entry lines after the header, up to and including the end line.

        Like ``_scan_segment``, checks checksums and numbering without decoding an entry.
        """
        first = offset
        count = 0
        for line in file:
            start, offset = offset, offset + len(line)
            try:
                _, raw = _verify_line(path, start, line, count + 1, "snapshot entry")
            except _BadLine as exc:
                # Complete before its rename, a snapshot cut short is damage, not a torn tail.
                raise JournalError(f"{path}: byte {start}: corrupt snapshot entry (truncated or overwritten): {exc}") from None
            if raw.startswith(b'{"end":'):
                if raw != b'{"end":%d}' % count:
                    raise JournalError(f"{path}: byte {start}: snapshot end line {raw.decode()} after {count} entries")
                if file.readline():
                    raise JournalError(f"{path}: byte {offset}: data after the snapshot's end line")
                return _Snapshot(path, first, start)
            count += 1
        raise JournalError(
            f"{path}: byte {offset}: snapshot ends after entry {count} without its end line (truncated)"
        )

    def _snapshot_entries(self, snapshot: _Snapshot) -> Iterator[tuple[str, object]]:
        """Yield the (kind, value) entries of a verified snapshot, one line at a time."""
        for entry in _read_records(snapshot.path, snapshot.start, snapshot.end):
            yield entry["k"], entry["v"]

    def _replay(self, segments: list[_Segment]) -> Iterator[dict]:
        """Yield the records of verified segments, reading each only up to its verified end.

        Streams line by line, so memory stays flat however long the history is.
        """
        for segment in segments:
            yield from _read_records(segment.path, 0, segment.end)
