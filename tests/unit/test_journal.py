"""Behaviour of resonate_sync.journal: durability, group commit, snapshots, recovery."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest

import resonate_sync
from resonate_sync.journal import Journal, JournalError

REPO_ROOT = str(Path(resonate_sync.__file__).resolve().parent.parent)


def opened(path, **options) -> tuple[Journal, object]:
    """Open a journal at ``path`` and return it with its recovery."""
    journal = Journal(str(path), **options)
    return journal, journal.open()


def history(path) -> tuple[list, object]:
    """Everything a reopen of ``path`` yields: (snapshot values + replayed records, recovery)."""
    journal, recovery = opened(path)
    try:
        return [value for _, value in recovery.snapshot] + list(recovery.records), recovery
    finally:
        journal.close()


def write_records(path, batches) -> None:
    """Append and durably wait for each batch, then close."""
    journal, _ = opened(path)
    for batch in batches:
        journal.wait_durable(journal.append(batch))
    journal.close()


def segment(path, base=0) -> Path:
    return Path(path) / f"journal-{base:020d}.jsonl"


def snapshot_file(path, seq) -> Path:
    return Path(path) / f"snapshot-{seq:020d}.json"


def line_offset(file: Path, index: int) -> int:
    """Byte offset of line ``index`` (0-based) of ``file``."""
    return sum(len(line) for line in file.read_bytes().splitlines(keepends=True)[:index])


def fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@contextlib.contextmanager
def read_only(path: Path):
    """Make directory ``path`` unwritable for the block.

    As root, permission bits do not stop writes, so the directory is made immutable
    (chattr +i), which stops root too; otherwise plain chmod does it.
    """
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o500)
    try:
        yield path
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o700)


class TestRoundTrip:
    def test_reopen_replays_records_in_order(self, tmp_path):
        """Records appended before close come back from open in the same order, batches included."""
        path = tmp_path / "j"
        batches = [[{"n": 1}], [{"n": 2}, {"n": 3, "text": "é\n\"x\""}], [{"n": 4, "nested": {"b": [1, 2.5, None]}}]]
        write_records(path, batches)
        records, recovery = history(path)
        assert records == [record for batch in batches for record in batch]
        assert recovery.last_seq == 4
        assert (list(recovery.snapshot), recovery.snapshot_seq, recovery.warnings) == ([], 0, [])

    def test_sequence_numbers_continue_after_reopen(self, tmp_path):
        """The first ticket after a reopen follows the last recovered seq."""
        path = tmp_path / "j"
        write_records(path, [[{"n": 1}, {"n": 2}]])
        journal, recovery = opened(path)
        assert recovery.last_seq == 2
        assert journal.append([{"n": 3}]) == 3
        journal.close()
        assert [json.loads(line)["seq"] for line in segment(path).read_text().splitlines()] == [1, 2, 3]

    def test_lines_are_json_with_seq_and_checksum(self, tmp_path):
        """Each line is a JSON object carrying seq, crc and the record; batches mark all but their last."""
        path = tmp_path / "j"
        write_records(path, [[{"a": 1}, {"b": 2}]])
        first, second = [json.loads(line) for line in segment(path).read_text().splitlines()]
        assert first == {"seq": 1, "crc": first["crc"], "more": 1, "r": {"a": 1}}
        assert second == {"seq": 2, "crc": second["crc"], "r": {"b": 2}}

    def test_hand_reformatted_line_still_verifies(self, tmp_path):
        """A line re-spaced by hand parses through the slow path and its checksum still matches."""
        path = tmp_path / "j"
        write_records(path, [[{"a": 1, "b": [1, 2]}], [{"c": 3}]])
        lines = segment(path).read_text().splitlines()
        lines[0] = json.dumps(json.loads(lines[0]), indent=None, separators=(", ", ": "))
        segment(path).write_text("\n".join(lines) + "\n")
        assert history(path)[0] == [{"a": 1, "b": [1, 2]}, {"c": 3}]

    def test_non_dict_record_is_refused_without_consuming_a_seq(self, tmp_path):
        """A batch with a record that is not a JSON-able dict raises and appends nothing."""
        journal, _ = opened(tmp_path / "j")
        with pytest.raises(TypeError):
            journal.append([{"ok": 1}, ["not", "a", "dict"]])
        with pytest.raises(TypeError):
            journal.append([{"ok": 1}, {"bad": object()}])
        assert journal.append([{"ok": 2}]) == 1
        journal.close()


class TestGroupCommit:
    def test_is_durable_only_once_a_flush_covered_the_ticket(self, tmp_path, monkeypatch):
        """is_durable says no for an appended record until a wait_durable flushed and fsynced it, then yes for it and older ones."""
        journal, _ = opened(tmp_path / "j")
        fsyncs = []
        real_fsync = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
        first = journal.append([{"n": 1}])
        second = journal.append([{"n": 2}])
        assert not journal.is_durable(first) and not journal.is_durable(second)
        journal.wait_durable(second)
        assert fsyncs, "no fsync ran"
        assert journal.is_durable(first) and journal.is_durable(second)
        third = journal.append([{"n": 3}])
        assert not journal.is_durable(third)
        journal.close()

    def test_concurrent_waiters_share_fsyncs_and_each_is_covered(self, tmp_path, monkeypatch):
        """With 16 threads appending and waiting, fsyncs are far fewer than records, and each waiter returns only after a completed fsync covered its ticket."""
        path = tmp_path / "j"
        journal, _ = opened(path)
        covered = [0]  # highest seq a completed fsync had on disk when it started
        real_fsync = os.fsync

        def observing_fsync(fd):
            target = fd_path(fd)
            on_disk = Path(target).read_bytes().count(b"\n") if target.endswith(".jsonl") else None
            time.sleep(0.002)  # a slow disk: appends pile up while this runs
            real_fsync(fd)
            if on_disk is not None:
                covered[0] = max(covered[0], on_disk)

        monkeypatch.setattr(os, "fsync", observing_fsync)
        threads_n, per_thread = 16, 40
        late = []

        def worker():
            for _ in range(per_thread):
                ticket = journal.append([{"t": threading.get_ident()}])
                journal.wait_durable(ticket)
                if covered[0] < ticket:
                    late.append((ticket, covered[0]))

        threads = [threading.Thread(target=worker) for _ in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        records = threads_n * per_thread
        assert late == []
        assert journal.fsync_count * 4 <= records, f"{journal.fsync_count} fsyncs for {records} records"
        journal.close()
        assert history(path)[1].last_seq == records

    def test_single_waiter_gets_its_own_fsync(self, tmp_path):
        """A lone append followed by wait_durable costs exactly one fsync."""
        journal, _ = opened(tmp_path / "j")
        journal.wait_durable(journal.append([{"n": 1}]))
        assert journal.fsync_count == 1
        journal.wait_durable(1)
        assert journal.fsync_count == 1
        journal.close()

    def test_fsync_never_writes_without_fsync(self, tmp_path):
        """With fsync="never" wait_durable leaves the bytes in the OS without fsyncing."""
        path = tmp_path / "j"
        journal, _ = opened(path, fsync="never")
        journal.wait_durable(journal.append([{"n": 1}]))
        assert journal.fsync_count == 0
        assert b'"r":{"n":1}' in segment(path).read_bytes()
        journal.close()

    def test_unissued_ticket_is_an_error(self, tmp_path):
        """Waiting for a seq that was never appended raises instead of hanging."""
        journal, _ = opened(tmp_path / "j")
        with pytest.raises(ValueError, match="never issued"):
            journal.wait_durable(5)
        journal.close()

    def test_wait_times_out_behind_a_stuck_fsync(self, tmp_path, monkeypatch):
        """A follower stops waiting after its timeout while another thread's fsync hangs."""
        journal, _ = opened(tmp_path / "j")
        release = threading.Event()
        real_fsync = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: (release.wait(5), real_fsync(fd)))
        leader = threading.Thread(target=journal.wait_durable, args=(journal.append([{"n": 1}]),))
        leader.start()
        while not journal._flushing:
            time.sleep(0.001)
        ticket = journal.append([{"n": 2}])
        with pytest.raises(TimeoutError):
            journal.wait_durable(ticket, timeout=0.05)
        release.set()
        leader.join()
        journal.wait_durable(ticket)
        journal.close()


class TestSnapshot:
    def test_reopen_yields_snapshot_and_only_later_records(self, tmp_path):
        """After a snapshot, open returns that state plus only the records appended after it."""
        path = tmp_path / "j"
        journal, _ = opened(path, snapshot_every=3)
        journal.wait_durable(journal.append([{"n": 1}, {"n": 2}]))
        assert not journal.should_snapshot()
        journal.wait_durable(journal.append([{"n": 3}]))
        assert journal.should_snapshot()
        ticket = journal.begin_snapshot()
        assert not journal.should_snapshot()
        journal.wait_durable(journal.append([{"n": 4}]))
        journal.write_snapshot(ticket, [("upto", 3)])
        journal.wait_durable(journal.append([{"n": 5}]))
        journal.close()
        journal, recovery = opened(path)
        assert (list(recovery.snapshot), recovery.snapshot_seq) == ([("upto", 3)], 3)
        assert list(recovery.records) == [{"n": 4}, {"n": 5}]
        assert recovery.last_seq == 5
        assert journal.append([{"n": 6}]) == 6
        journal.close()
        assert sorted(p.name for p in path.iterdir()) == ["LOCK", segment(path, 3).name, snapshot_file(path, 3).name]

    def test_obsolete_files_removed_only_after_snapshot_is_durable(self, tmp_path, monkeypatch):
        """Old segments and snapshots are deleted after the temp file's fsync, the rename and the directory fsync."""
        path = tmp_path / "j"
        journal, _ = opened(path)
        journal.wait_durable(journal.append([{"n": 1}]))
        journal.write_snapshot(journal.begin_snapshot(), [("r", {"n": 1})])
        journal.wait_durable(journal.append([{"n": 2}]))
        ticket = journal.begin_snapshot()
        events = []
        real = {name: getattr(os, name) for name in ("fsync", "replace", "remove")}
        monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", fd_path(fd))), real["fsync"](fd))[1])
        monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real["replace"](a, b))[1])
        monkeypatch.setattr(os, "remove", lambda p: (events.append(("remove", str(p))), real["remove"](p))[1])
        journal.write_snapshot(ticket, [("r", {"n": 1}), ("r", {"n": 2})])
        journal.close()
        kinds = [(kind, Path(target).name) for kind, target in events]
        final = snapshot_file(path, 2).name
        rename = kinds.index(("replace", final))
        assert ("fsync", final + ".tmp") in kinds[:rename]
        dir_sync = kinds.index(("fsync", path.name), rename)
        removes = [i for i, (kind, _) in enumerate(kinds) if kind == "remove"]
        assert {kinds[i][1] for i in removes} == {segment(path, 1).name, snapshot_file(path, 1).name}
        assert min(removes) > dir_sync

    def test_rotation_fsyncs_the_old_segment_before_writing_the_new(self, tmp_path, monkeypatch):
        """When one flush spans a rotation, the old segment is fsynced before the new one gets a byte, and the new name is fsynced in its directory."""
        path = tmp_path / "j"
        journal, _ = opened(path)
        events = []
        real_fsync, real_write = os.fsync, os.write
        monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", Path(fd_path(fd)).name)), real_fsync(fd))[1])
        monkeypatch.setattr(os, "write", lambda fd, data: (events.append(("write", Path(fd_path(fd)).name)), real_write(fd, data))[1])
        journal.append([{"n": 1}])
        journal.begin_snapshot()
        journal.wait_durable(journal.append([{"n": 2}]))
        monkeypatch.undo()
        old, new = segment(path, 0).name, segment(path, 1).name
        assert events == [("write", old), ("fsync", old), ("write", new), ("fsync", new), ("fsync", path.name)]
        journal.close()

    def test_crash_at_any_step_of_a_snapshot_loses_nothing(self, tmp_path, monkeypatch):
        """Freezing the directory at every fsync, rename and delete of a snapshot, each copy reopens with every record."""
        path = tmp_path / "j"
        journal, _ = opened(path)
        records = [{"n": n} for n in range(1, 6)]
        for record in records[:3]:
            journal.wait_durable(journal.append([record]))
        ticket = journal.begin_snapshot()
        for record in records[3:]:
            journal.wait_durable(journal.append([record]))
        copies = []

        def freeze():
            copy = tmp_path / f"crash-{len(copies)}"
            shutil.copytree(path, copy)
            copies.append(copy)

        real = {name: getattr(os, name) for name in ("fsync", "replace", "remove")}
        for name in real:
            monkeypatch.setattr(os, name, lambda *args, _name=name: (freeze(), real[_name](*args))[1])
        journal.write_snapshot(ticket, [("r", record) for record in records[:3]])
        monkeypatch.undo()
        freeze()
        journal.close()
        assert len(copies) >= 5
        for copy in copies:
            assert history(copy)[0] == records, copy.name

    def test_leftover_temp_snapshot_is_ignored_and_removed(self, tmp_path):
        """A half-written snapshot temp file (crash before rename) is removed with a warning; the segments still replay."""
        path = tmp_path / "j"
        write_records(path, [[{"n": 1}], [{"n": 2}]])
        Path(str(snapshot_file(path, 2)) + ".tmp").write_bytes(b'{"bytes":900,"crc":1,"seq":2}\n{"half')
        records, recovery = history(path)
        assert records == [{"n": 1}, {"n": 2}]
        assert "interrupted" in recovery.warnings[0]
        assert not Path(str(snapshot_file(path, 2)) + ".tmp").exists()

    def test_failed_snapshot_write_keeps_journal_usable(self, tmp_path, monkeypatch):
        """ENOSPC while writing a snapshot raises JournalError, keeps every segment, and appends still work."""
        path = tmp_path / "j"
        journal, _ = opened(path)
        journal.wait_durable(journal.append([{"n": 1}]))
        ticket = journal.begin_snapshot()

        def full(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(JournalError, match="snapshot-.*tmp.*No space left"):
            journal.write_snapshot(ticket, [("r", {"n": 1})])
        monkeypatch.undo()
        journal.wait_durable(journal.append([{"n": 2}]))
        journal.close()
        assert history(path)[0] == [{"n": 1}, {"n": 2}]
        assert not list(path.glob("snapshot-*"))

    def test_snapshot_without_entries_is_still_a_snapshot(self, tmp_path):
        """A snapshot of no entries is written, and reported with its seq, not mistaken for none."""
        path = tmp_path / "j"
        journal, _ = opened(path)
        journal.wait_durable(journal.append([{"n": 1}]))
        journal.write_snapshot(journal.begin_snapshot(), [])
        journal.close()
        records, recovery = history(path)
        assert (records, recovery.snapshot_seq) == ([], 1) and snapshot_file(path, 1).exists()


class TestRecovery:
    def test_truncated_tail_is_dropped_with_warning(self, tmp_path):
        """A last line cut short by a crash is dropped, reported, and truncated away before new appends."""
        path = tmp_path / "j"
        write_records(path, [[{"n": n}] for n in range(1, 6)])
        data = segment(path).read_bytes()
        segment(path).write_bytes(data[:-10])
        journal, recovery = opened(path)
        assert list(recovery.records) == [{"n": n} for n in range(1, 5)]
        assert recovery.last_seq == 4
        assert "torn line" in recovery.warnings[0] and str(line_offset(segment(path), 4)) in recovery.warnings[0]
        journal.wait_durable(journal.append([{"n": 5}]))
        journal.close()
        assert history(path)[0] == [{"n": n} for n in range(1, 6)]

    def test_last_record_cut_at_any_byte_is_dropped(self, tmp_path):
        """The last record cut short at any byte, down to only its newline missing, was never acknowledged: it is dropped and the rest replays."""
        path = tmp_path / "j"
        write_records(path, [[{"n": n}] for n in range(1, 6)])
        data = segment(path).read_bytes()
        last = data.splitlines(keepends=True)[-1]
        for cut in range(len(last)):
            segment(path).write_bytes(data[: len(data) - len(last) + cut])
            records, recovery = history(path)
            assert records == [{"n": n} for n in range(1, 5)], cut
            assert len(recovery.warnings) == (1 if cut else 0), cut
        assert "whole but for its newline" in recovery.warnings[0]

    def test_last_batch_cut_anywhere_in_its_last_record_is_dropped_whole(self, tmp_path):
        """A batch whose last record is cut short at any byte is dropped with its "more" records, never half-applied."""
        path = tmp_path / "j"
        write_records(path, [[{"n": 1}], [{"n": 2}, {"n": 3}, {"n": 4}]])
        data = segment(path).read_bytes()
        last = data.splitlines(keepends=True)[-1]
        for cut in range(len(last)):
            segment(path).write_bytes(data[: len(data) - len(last) + cut])
            records, recovery = history(path)
            assert (records, recovery.last_seq) == ([{"n": 1}], 1), cut
            assert "incomplete batch" in recovery.warnings[0], cut

    @pytest.mark.parametrize(
        "zeroed, kept",
        [
            (lambda last: b"\0" * len(last), 2),
            (lambda last: last + b"\0" * 4096, 3),
            (lambda last: last[:12] + b"\0" * 4096, 2),
            (lambda last: last[:-3] + b"\0" * 4096, 2),
        ],
        ids=["instead-of-the-line", "after-the-line", "after-its-head", "after-most-of-it"],
    )
    def test_nul_filled_tail_is_dropped(self, tmp_path, zeroed, kept):
        """NUL bytes after the last newline, or after part of a line, are what a power cut leaves of unsynced blocks: dropped as torn."""
        path = tmp_path / "j"
        write_records(path, [[{"n": n}] for n in range(1, 4)])
        lines = segment(path).read_bytes().splitlines(keepends=True)
        segment(path).write_bytes(b"".join(lines[:-1]) + zeroed(lines[-1]))
        records, recovery = history(path)
        assert records == [{"n": n} for n in range(1, kept + 1)]
        assert "NUL bytes" in recovery.warnings[0]
        assert segment(path).read_bytes() == b"".join(lines[:kept])

    @pytest.mark.parametrize(
        "damage",
        [
            lambda line: b"[" + line[1:],
            lambda line: line.replace(b'"r":', b'"r";'),
            lambda line: line.replace(b'"crc":', b'"crc":x', 1),
            lambda line: line[:-1] + b"x",
            lambda line: line[:-1] + b"\0",
            lambda line: line.replace(b'"n":5', b'"n":6')[:-1],
        ],
        ids=["first-byte", "middle-byte", "crc-digits", "newline", "newline-to-nul", "unterminated-bad-checksum"],
    )
    def test_damaged_last_record_stops_startup(self, tmp_path, damage):
        """A changed byte anywhere in the last record, its newline included, is damage to a record that may have been acknowledged: startup stops, naming file, byte and record, and says what to do."""
        path = tmp_path / "j"
        write_records(path, [[{"n": n}] for n in range(1, 6)])
        lines = segment(path).read_bytes().splitlines(keepends=True)
        damaged = b"".join(lines[:-1]) + damage(lines[-1])
        segment(path).write_bytes(damaged)
        with pytest.raises(JournalError) as info:
            opened(path)
        message = str(info.value)
        assert f"{segment(path)}: byte {line_offset(segment(path), 4)}: " in message
        assert "record seq 5" in message and "restore the journal directory from a backup" in message
        assert segment(path).read_bytes() == damaged

    def test_any_bit_flipped_in_the_last_record_stops_startup(self, tmp_path):
        """Flipping any one bit of any byte of the last record, newline included, never passes for a torn write."""
        path = tmp_path / "j"
        write_records(path, [[{"n": n}] for n in range(1, 6)])
        data = segment(path).read_bytes()
        last_at = len(data) - len(data.splitlines(keepends=True)[-1])
        for at in range(last_at, len(data)):
            for bit in range(8):
                damaged = bytearray(data)
                damaged[at] ^= 1 << bit
                segment(path).write_bytes(damaged)
                with pytest.raises(JournalError, match="restore the journal directory"):
                    opened(path)

    def test_damaged_last_record_of_a_batch_stops_startup(self, tmp_path):
        """Damage to the last record of a batch with "more" records stops startup instead of dropping the batch as incomplete."""
        path = tmp_path / "j"
        write_records(path, [[{"n": 1}], [{"n": 2}, {"n": 3}, {"n": 4}]])
        lines = segment(path).read_bytes().splitlines(keepends=True)
        segment(path).write_bytes(b"".join(lines[:-1]) + b"[" + lines[-1][1:])
        with pytest.raises(JournalError, match=f"byte {line_offset(segment(path), 3)}: corrupt record: .*record seq 4"):
            opened(path)

    @pytest.mark.parametrize(
        "tail",
        [b"xyz", b'{"seq":9,"crc":', b'{"seq":4,"crc":1', b'{"seq":5,"crc":12,"s":', b"\0\0\0\0\n"],
        ids=["garbage", "next-but-one-seq", "earlier-seq", "wrong-key", "nul-line"],
    )
    def test_bytes_no_write_leaves_after_the_last_record_stop_startup(self, tmp_path, tail):
        """Bytes after the last newline that are not the start of the next record's line, or a line that ends in a newline but is no record, are damage, not a torn write."""
        path = tmp_path / "j"
        write_records(path, [[{"n": n}] for n in range(1, 5)])
        offset = segment(path).stat().st_size
        with segment(path).open("ab") as file:
            file.write(tail)
        with pytest.raises(JournalError, match=f"byte {offset}: corrupt record: .*record seq 5"):
            opened(path)

    def test_incomplete_last_batch_is_dropped_whole(self, tmp_path):
        """A batch whose last record never reached disk is dropped entirely, never half-applied."""
        path = tmp_path / "j"
        write_records(path, [[{"n": 1}], [{"n": 2}, {"n": 3}, {"n": 4}]])
        lines = segment(path).read_bytes().splitlines(keepends=True)
        segment(path).write_bytes(b"".join(lines[:3]))
        records, recovery = history(path)
        assert records == [{"n": 1}]
        assert recovery.last_seq == 1 and "incomplete batch" in recovery.warnings[0]

    def test_recovered_records_are_fsynced_before_anything_can_show_them(self, tmp_path, monkeypatch):
        """Records a crashed process wrote but may never have fsynced are made durable by open(), segments and directory."""
        path = tmp_path / "j"
        journal, _ = opened(path, fsync="never", snapshot_every=2)
        for n in range(5):  # with a snapshot begun after every 2 records: several live segments
            journal.wait_durable(journal.append([{"n": n}]))
            if journal.should_snapshot():
                journal.begin_snapshot()
        journal._release_lock()  # a crash: no close(), no final fsync
        synced = []
        real_fsync = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd_path(fd)), real_fsync(fd))[1])
        reopened, recovery = opened(path)
        assert [record["n"] for record in recovery.records] == list(range(5))
        assert {str(p) for p in path.glob("journal-*.jsonl")} | {str(path)} <= set(synced)
        assert len(list(path.glob("journal-*.jsonl"))) > 1
        reopened.close()

    def test_corrupt_middle_record_names_file_and_offset(self, tmp_path):
        """An unparsable line followed by more records stops startup, naming the file and byte offset."""
        path = tmp_path / "j"
        write_records(path, [[{"n": n}] for n in range(1, 6)])
        lines = segment(path).read_bytes().splitlines(keepends=True)
        lines[2] = b'{"seq":3,"crc":1,"r":{"n":\n'
        segment(path).write_bytes(b"".join(lines))
        with pytest.raises(JournalError) as info:
            opened(path)
        assert str(segment(path)) in str(info.value)
        assert f"byte {line_offset(segment(path), 2)}: corrupt record" in str(info.value)

    @pytest.mark.parametrize("line_index", [1, 4], ids=["middle", "last"])
    def test_checksum_mismatch_stops_startup(self, tmp_path, line_index):
        """A record whose content no longer matches its checksum is an error, even on the last line."""
        path = tmp_path / "j"
        write_records(path, [[{"n": n}] for n in range(1, 6)])
        data = segment(path).read_bytes()
        lines = data.splitlines(keepends=True)
        lines[line_index] = lines[line_index].replace(b'"n":%d' % (line_index + 1), b'"n":9')
        segment(path).write_bytes(b"".join(lines))
        with pytest.raises(JournalError, match=f"byte {line_offset(segment(path), line_index)}: checksum mismatch"):
            opened(path)

    def test_missing_record_is_a_sequence_gap(self, tmp_path):
        """A record deleted from the middle stops startup as a sequence gap at its offset."""
        path = tmp_path / "j"
        write_records(path, [[{"n": n}] for n in range(1, 4)])
        lines = segment(path).read_bytes().splitlines(keepends=True)
        segment(path).write_bytes(lines[0] + lines[2])
        with pytest.raises(JournalError, match=f"byte {len(lines[0])}: sequence gap: expected record seq 2, found 3"):
            opened(path)

    def test_missing_segment_is_a_sequence_gap(self, tmp_path):
        """A segment whose predecessor is gone (and no snapshot covers it) stops startup."""
        path = tmp_path / "j"
        journal, _ = opened(path)
        journal.wait_durable(journal.append([{"n": 1}]))
        journal.begin_snapshot()
        journal.wait_durable(journal.append([{"n": 2}]))
        journal.close()
        segment(path, 0).unlink()
        with pytest.raises(JournalError, match="starts after seq 1 but the records before it end at seq 0"):
            opened(path)

    @pytest.mark.parametrize(
        "damage, message",
        [
            (lambda data: data.replace(b'"upto"', b'"uptX"'), "byte 21: checksum mismatch in snapshot entry 1"),
            (lambda data: data[:-5], "truncated"),
            (lambda data: b"not json\n" + data.split(b"\n", 1)[1], "byte 0: snapshot header"),
        ],
        ids=["flipped", "truncated", "header"],
    )
    def test_corrupt_snapshot_stops_startup(self, tmp_path, damage, message):
        """A snapshot that does not parse or verify stops startup with its file and offset."""
        path = tmp_path / "j"
        journal, _ = opened(path)
        journal.wait_durable(journal.append([{"n": 1}]))
        journal.write_snapshot(journal.begin_snapshot(), [("upto", 1)])
        journal.close()
        file = snapshot_file(path, 1)
        file.write_bytes(damage(file.read_bytes()))
        with pytest.raises(JournalError, match=message) as info:
            opened(path)
        assert str(file) in str(info.value)

    def test_failed_open_releases_the_lock(self, tmp_path):
        """After startup fails on corruption, fixing the file lets the same process open it."""
        path = tmp_path / "j"
        write_records(path, [[{"n": 1}], [{"n": 2}]])
        good = segment(path).read_bytes()
        segment(path).write_bytes(good.replace(b'"n":1', b'"n":7'))
        with pytest.raises(JournalError):
            opened(path)
        segment(path).write_bytes(good)
        assert history(path)[0] == [{"n": 1}, {"n": 2}]


class TestDirectory:
    def test_missing_directory_is_created(self, tmp_path):
        """A journal path whose parents do not exist yet is created on open."""
        path = tmp_path / "a" / "b" / "resonate.journal"
        journal, recovery = opened(path)
        assert path.is_dir() and (path / "LOCK").exists() and recovery.last_seq == 0
        journal.close()

    def test_created_directories_are_fsynced_into_their_parents(self, tmp_path, monkeypatch):
        """Each directory open() creates is made durable in its parent before any record goes in."""
        path = tmp_path / "a" / "b" / "resonate.journal"
        synced = []
        real_fsync = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd_path(fd)), real_fsync(fd))[1])
        journal, _ = opened(path)
        assert {str(tmp_path), str(tmp_path / "a"), str(tmp_path / "a" / "b")} <= set(synced)
        journal.close()

    def test_uncreatable_directory_is_a_clear_error(self, tmp_path):
        """A path below a regular file cannot be created and says so."""
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with pytest.raises(JournalError, match="cannot create the journal directory"):
            opened(blocker / "resonate.journal")

    def test_path_that_is_a_file_is_a_clear_error(self, tmp_path):
        """An existing regular file at the journal path is refused, not overwritten."""
        blocker = tmp_path / "resonate.journal"
        blocker.write_text("x")
        with pytest.raises(JournalError, match="exists and is not a directory"):
            opened(blocker)

    def test_read_only_directory_is_a_clear_error(self, tmp_path):
        """An existing directory nobody may write into fails at the lock file with a clear message."""
        path = tmp_path / "j"
        path.mkdir()
        with read_only(path), pytest.raises(JournalError, match="cannot create the lock file"):
            opened(path)

    def test_read_only_directory_with_a_journal_is_refused_at_open(self, tmp_path):
        """A used journal whose directory became read-only fails at open, not at its first snapshot."""
        path = tmp_path / "j"
        write_records(path, [[{"n": 1}]])
        with read_only(path), pytest.raises(JournalError, match="journal directory is read-only"):
            opened(path)
        assert history(path)[0] == [{"n": 1}]

    def test_lock_file_write_error_is_clear_and_releases_the_lock(self, tmp_path, monkeypatch):
        """A full disk while writing the pid into LOCK is a JournalError, and leaves the directory unlocked."""

        def full(*_args):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "pwrite", full)
        with pytest.raises(JournalError, match="LOCK: cannot write this process's pid: No space left on device"):
            opened(tmp_path / "j")
        monkeypatch.undo()
        opened(tmp_path / "j")[0].close()

    def test_second_open_of_same_path_is_refused(self, tmp_path):
        """A second journal on a locked directory fails, naming the holder's pid; after close it opens."""
        path = tmp_path / "j"
        first, _ = opened(path)
        with pytest.raises(JournalError, match=rf"already in use by another resonate process \(pid {os.getpid()}\)"):
            opened(path)
        first.close()
        opened(path)[0].close()

    def test_other_process_holding_the_lock_is_named(self, tmp_path):
        """A journal held by another process is refused with that process's pid."""
        path = tmp_path / "j"
        child = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": REPO_ROOT},
        )
        try:
            assert child.stdout.readline() == b"ready\n"
            with pytest.raises(JournalError, match=rf"\(pid {child.pid}\)"):
                opened(path)
        finally:
            child.kill()
            child.wait()
        opened(path)[0].close()


HOLDER = """
import sys, time
from resonate_sync.journal import Journal
Journal(sys.argv[1]).open()
print("ready", flush=True)
time.sleep(60)
"""


class TestFailures:
    @staticmethod
    def failing(real, fail_on):
        """Wrap an os function so calls on segment files raise ENOSPC once ``fail_on`` is set."""

        def wrapper(fd, *args):
            if fail_on.is_set() and fd_path(fd).endswith(".jsonl"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd, *args)

        return wrapper

    @pytest.mark.parametrize("call", ["fsync", "write"])
    def test_disk_full_fails_every_waiter_and_later_appends(self, tmp_path, monkeypatch, call):
        """ENOSPC in write or fsync raises JournalError in every waiter of the batch and in every later append."""
        path = tmp_path / "j"
        journal, _ = opened(path)
        journal.wait_durable(journal.append([{"n": 0}]))
        fail_on = threading.Event()
        monkeypatch.setattr(os, call, self.failing(getattr(os, call), fail_on))
        tickets = [journal.append([{"n": n}]) for n in range(1, 4)]
        fail_on.set()
        errors = []

        def waiter(ticket):
            try:
                journal.wait_durable(ticket)
            except JournalError as exc:
                errors.append(str(exc))

        threads = [threading.Thread(target=waiter, args=(ticket,)) for ticket in tickets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(errors) == 3 and all("No space left on device" in error for error in errors)
        assert str(segment(path)) in errors[0] and "byte " in errors[0]
        with pytest.raises(JournalError, match="refusing records after an earlier failure"):
            journal.append([{"n": 9}])
        with pytest.raises(JournalError):
            journal.begin_snapshot()
        journal.wait_durable(1)  # what was durable before the failure stays acknowledged
        journal.close()
        monkeypatch.undo()
        assert history(path)[0][0] == {"n": 0}

    def test_repeated_failures_do_not_pile_up_tracebacks(self, tmp_path, monkeypatch):
        """Every wait after a failure raises afresh: the error it raises carries only its own traceback."""
        journal, _ = opened(tmp_path / "j")
        fail_on = threading.Event()
        fail_on.set()
        monkeypatch.setattr(os, "fsync", self.failing(os.fsync, fail_on))
        ticket = journal.append([{"n": 1}])
        depths = []
        for _ in range(3):
            with pytest.raises(JournalError, match="No space left on device") as info:
                journal.wait_durable(ticket)
            depths.append(len(traceback.extract_tb(info.value.__traceback__)))
        assert depths[1] == depths[2]
        journal.close()

    def test_short_write_then_error_leaves_a_recoverable_tail(self, tmp_path, monkeypatch):
        """A write that stops halfway with ENOSPC fails the waiter; the next open drops the half line."""
        path = tmp_path / "j"
        journal, _ = opened(path)
        journal.wait_durable(journal.append([{"n": 1}]))
        real_write = os.write
        calls = []

        def half_then_full(fd, data):
            if not fd_path(fd).endswith(".jsonl"):
                return real_write(fd, data)
            calls.append(len(data))
            if len(calls) == 1:
                return real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "write", half_then_full)
        with pytest.raises(JournalError, match="No space left"):
            journal.wait_durable(journal.append([{"n": 2, "pad": "x" * 100}]))
        journal.close()
        monkeypatch.undo()
        records, recovery = history(path)
        assert records == [{"n": 1}] and "torn line" in recovery.warnings[0]


CHILD = """
import os, sys, threading
from resonate_sync.journal import Journal
path, round_no, snapshot_every = sys.argv[1], sys.argv[2], int(sys.argv[3])
journal = Journal(path, snapshot_every=snapshot_every)
recovery = journal.open()
state = [value for _, value in recovery.snapshot] + list(recovery.records)
state_lock = threading.Lock()

def worker(name):
    n = 0
    while True:
        size = 1 + n % 3
        batch = [{"t": name, "n": n, "k": k, "of": size} for k in range(size)]
        snap = None
        with state_lock:
            ticket = journal.append(batch)
            state.extend(batch)
            if journal.should_snapshot():
                snap = (journal.begin_snapshot(), [("r", value) for value in state])
        if snap:
            journal.write_snapshot(*snap)
        journal.wait_durable(ticket)
        os.write(1, ("%d %s %d %d\\n" % (ticket, name, n, size)).encode())
        n += 1

os.write(1, b"ready\\n")
for i in range(4):
    threading.Thread(target=worker, args=("%s-%d" % (round_no, i),), daemon=True).start()
threading.Event().wait()
"""


class TestCrash:
    def test_kill_9_never_loses_an_acknowledged_record(self, tmp_path):
        """A child appending from 4 threads is SIGKILLed at random moments; every acknowledged batch survives whole and the log reopens cleanly."""
        path = tmp_path / "j"
        rng = random.Random()
        acknowledged = []
        for round_no in range(6):
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(path), str(round_no), "150"],
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": REPO_ROOT},
            )
            lines = []
            reader = threading.Thread(target=lambda: lines.extend(child.stdout))
            try:
                assert child.stdout.readline() == b"ready\n"
                reader.start()
                time.sleep(rng.uniform(0.05, 0.4))
            finally:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
            reader.join()
            acknowledged += [line.split() for line in lines if line.endswith(b"\n")]
            records, recovery = history(path)
            for ticket, name, n, size in acknowledged:
                ticket, n, size = int(ticket), int(n), int(size)
                expected = [{"t": name.decode(), "n": n, "k": k, "of": size} for k in range(size)]
                assert records[ticket - size : ticket] == expected, f"round {round_no}: ticket {ticket} lost"
            position = 0
            while position < len(records):  # every batch on disk is whole: nothing half-applied
                size = records[position]["of"]
                assert [record["k"] for record in records[position : position + size]] == list(range(size))
                position += size
        assert len(acknowledged) > 50
