"""Snapshots as a stream: one checked line per entry, written and read one entry at a time.

The file format is in the module docstring of resonate_sync.journal. ``data/snapshot-v1/``
holds a snapshot written by the version before streaming (commit e63219f, whose
``Server.snapshot`` wrote ``State.snapshot_to_json`` as one document) of the state
``populate`` builds.
"""

from __future__ import annotations

import json
import shutil
import threading
import weakref
from pathlib import Path

import pytest

import resonate_sync.journal as journal_module
from resonate_sync import Config, Server
from resonate_sync.core import CoreSettings, FakeClock, Resonate
from resonate_sync.journal import Journal, JournalError
from resonate_sync.models import STORE, Value

from state_invariants import assert_indexes_consistent, canonical_snapshot

NOW = 1_700_000_000_000
FAR = 1_893_456_000_000
V1_SNAPSHOT = Path(__file__).parent / "data" / "snapshot-v1" / "snapshot-00000000000000000011.json"
ENTRIES = [("a", {"n": n, "text": "é\n\"x\""}) for n in range(1, 4)] + [("b", [1, 2.5, None]), ("c", "last")]


def populate(core: Resonate) -> None:
    """Every kind a snapshot holds: promises pending and resolved, a callback, an INIT and a CLAIMED task, a schedule, a lock."""
    core.promises_create(id="root", timeout=FAR, tags={"resonate:invoke": "nats://workers"})
    core.promises_create(id="done", timeout=FAR, param=Value({"h": "1"}, "aGk="))
    core.promises_complete(id="done", state="RESOLVED", value=Value({}, "b2s="))
    core.promises_create(id="leaf", timeout=FAR)
    core.promises_callback(promise_id="leaf", root_promise_id="root", recv="nats://workers", timeout=FAR)
    core.promises_create(id="claimed", timeout=FAR, tags={"resonate:invoke": "nats://workers"})
    core.tasks_claim(id="__invoke:claimed", counter=1, process_id="worker-1", ttl=60_000)
    core.schedules_create(id="nightly", cron="0 0 * * *", promise_id="nightly.{{.timestamp}}", promise_timeout=60_000)
    core.locks_acquire(resource_id="r", execution_id="e", process_id="worker-1", ttl=60_000)


def offline_server(path, **config) -> Server:
    """A Server with its journal and core but no NATS: what ``start`` builds before it connects."""
    server = Server(Config(store_path=str(path), **config), clock=FakeClock(NOW))
    server.core = server._open_core(CoreSettings())
    return server


def write_snapshot(path, entries, records=({"n": 1},)) -> Path:
    """Append ``records``, snapshot ``entries`` after them, close; return the snapshot file."""
    journal = Journal(str(path))
    journal.open()
    journal.wait_durable(journal.append(list(records)))
    journal.write_snapshot(journal.begin_snapshot(), entries)
    journal.close()
    return Path(path) / f"snapshot-{len(records):020d}.json"


def reopened(path) -> tuple[list, object]:
    """The snapshot entries a reopen of ``path`` yields, and its recovery."""
    journal = Journal(str(path))
    recovery = journal.open()
    try:
        return list(recovery.snapshot), recovery
    finally:
        journal.close()


def recovered_core(path) -> Resonate:
    journal = Journal(str(path))
    recovery = journal.open()
    core = Resonate.recover(recovery.snapshot, recovery.records, clock=FakeClock(NOW))
    journal.close()
    return core


def populated_state():
    core = Resonate(FakeClock(NOW))
    populate(core)
    return core.state


def line_offset(data: bytes, index: int) -> int:
    return sum(len(line) for line in data.splitlines(keepends=True)[:index])


class TestSnapshotRoundTrip:
    def test_entries_come_back_in_order(self, tmp_path):
        """Entries written to a snapshot are read back as the same (kind, value) pairs, in order."""
        write_snapshot(tmp_path / "j", iter(ENTRIES))
        entries, recovery = reopened(tmp_path / "j")
        assert [(kind, value) for kind, value in entries] == ENTRIES
        assert (recovery.snapshot_seq, list(recovery.records)) == (1, [])

    def test_file_is_a_header_then_one_checked_line_per_entry_then_an_end_line(self, tmp_path):
        """The header names the format and seq; entries are numbered record lines; the last line counts them."""
        file = write_snapshot(tmp_path / "j", ENTRIES)
        lines = [json.loads(line) for line in file.read_bytes().splitlines()]
        assert lines[0] == {"format": 2, "seq": 1}
        assert [line["seq"] for line in lines[1:]] == list(range(1, len(ENTRIES) + 2))
        assert [(line["r"]["k"], line["r"]["v"]) for line in lines[1:-1]] == ENTRIES
        assert lines[-1]["r"] == {"end": len(ENTRIES)}

    def test_server_state_round_trips(self, tmp_path):
        """A state with every kind, snapshotted by the server and reopened, equals the original, indexes included."""
        server = offline_server(tmp_path / "j")
        populate(server.core)
        server.snapshot()
        server.journal.close()
        assert [p.name for p in (tmp_path / "j").glob("snapshot-*")] == ["snapshot-00000000000000000011.json"]
        core = recovered_core(tmp_path / "j")
        assert canonical_snapshot(core.state) == canonical_snapshot(populated_state())
        assert_indexes_consistent(core.state)


class TestOldFormat:
    def test_snapshot_written_by_the_previous_version_opens(self, tmp_path):
        """A one-document snapshot of the version before streaming rebuilds the same state, indexes included."""
        store = tmp_path / "j"
        store.mkdir()
        shutil.copy(V1_SNAPSHOT, store)
        core = recovered_core(store)
        assert canonical_snapshot(core.state) == canonical_snapshot(populated_state())
        assert_indexes_consistent(core.state)

    def test_old_snapshot_is_replaced_by_a_streamed_one(self, tmp_path):
        """After starting from an old snapshot, the next snapshot is in the new format and the old file is gone."""
        store = tmp_path / "j"
        store.mkdir()
        shutil.copy(V1_SNAPSHOT, store)
        server = offline_server(store)
        server.core.promises_create(id="after", timeout=FAR)
        server.snapshot()
        server.journal.close()
        [file] = store.glob("snapshot-*")
        assert file.name == "snapshot-00000000000000000012.json"
        assert file.read_bytes().startswith(b'{"format":2,"seq":12}\n')
        assert set(recovered_core(store).state.promises) == {"root", "done", "leaf", "claimed", "after"}

    def test_damaged_old_snapshot_still_stops_startup(self, tmp_path):
        """An old-format snapshot whose state no longer matches its checksum stops startup with file and offset."""
        store = tmp_path / "j"
        store.mkdir()
        data = V1_SNAPSHOT.read_bytes()
        (store / V1_SNAPSHOT.name).write_bytes(data.replace(b'"id":"leaf"', b'"id":"loaf"'))
        with pytest.raises(JournalError, match=f"byte {line_offset(data, 1)}: snapshot checksum mismatch") as info:
            reopened(store)
        assert str(store / V1_SNAPSHOT.name) in str(info.value)


def damaged(lines: list, index: int, replacement: list) -> list:
    return lines[:index] + replacement + lines[index + 1 :]


class TestSnapshotDamage:
    @pytest.mark.parametrize(
        "damage, message",
        [
            (lambda lines: damaged(lines, 3, [lines[3].replace(b'"n":3', b'"n":7')]), "checksum mismatch in snapshot entry 3"),
            (lambda lines: damaged(lines, 3, [b'{"seq":3,"crc":1,"r":{"k":\n']), "corrupt snapshot entry"),
            (lambda lines: damaged(lines, 3, []), "sequence gap: expected snapshot entry 3, found 4"),
            (lambda lines: damaged(lines, 3, [lines[2]]), "sequence gap: expected snapshot entry 3, found 2"),
        ],
        ids=["flipped", "not-json", "removed", "repeated"],
    )
    def test_damaged_middle_line_names_file_and_offset(self, tmp_path, damage, message):
        """A changed, unparsable, missing or repeated entry line stops startup, naming the file and the line's byte offset."""
        file = write_snapshot(tmp_path / "j", ENTRIES)
        lines = file.read_bytes().splitlines(keepends=True)
        file.write_bytes(b"".join(damage(lines)))
        with pytest.raises(JournalError) as info:
            reopened(tmp_path / "j")
        assert str(info.value).startswith(f"{file}: byte {sum(len(line) for line in lines[:3])}: {message}")

    @pytest.mark.parametrize(
        "cut, message",
        [
            (lambda data, lines: len(data) - len(lines[-1]), "byte {cut}: snapshot ends after entry 5 without its end line"),
            (lambda data, lines: len(data) - len(lines[-1]) - 7, "byte {line}: corrupt snapshot entry (truncated"),
            (lambda data, lines: len(data) - 3, "byte {line}: corrupt snapshot entry (truncated"),
            (lambda data, lines: len(lines[0]), "byte {cut}: snapshot ends after entry 0 without its end line"),
        ],
        ids=["before-end-line", "mid-entry", "mid-end-line", "header-only"],
    )
    def test_truncated_snapshot_stops_startup(self, tmp_path, cut, message):
        """A snapshot cut short anywhere is damage (it was renamed into place complete), not a torn tail to drop."""
        file = write_snapshot(tmp_path / "j", ENTRIES)
        data = file.read_bytes()
        at = cut(data, data.splitlines(keepends=True))
        file.write_bytes(data[:at])
        line = data.rfind(b"\n", 0, at) + 1
        with pytest.raises(JournalError) as info:
            reopened(tmp_path / "j")
        assert str(info.value).startswith(f"{file}: " + message.format(cut=at, line=line))

    def test_bytes_after_the_end_line_stop_startup(self, tmp_path):
        """Anything after the end line means the file is not what was written."""
        file = write_snapshot(tmp_path / "j", ENTRIES)
        size = file.stat().st_size
        file.write_bytes(file.read_bytes() + b"{}\n")
        with pytest.raises(JournalError, match=f"byte {size}: data after the snapshot's end line"):
            reopened(tmp_path / "j")


class TestSnapshotWriter:
    def test_server_snapshot_unstructures_one_object_at_a_time(self, tmp_path, monkeypatch):
        """While the server writes a snapshot of 200 promises, at most one earlier JSON object is still alive."""
        server = offline_server(tmp_path / "j")
        for n in range(200):
            server.core.promises_create(id=f"p{n}", timeout=FAR)

        class Tracked(dict):
            pass

        live = set()  # ids of the objects made and not yet freed
        seen = []
        real = STORE.unstructure

        def spy(obj, *args):
            seen.append(len(live))
            made = Tracked(real(obj, *args))
            live.add(id(made))
            weakref.finalize(made, live.discard, id(made))
            return made

        monkeypatch.setattr(STORE, "unstructure", spy)
        server.snapshot()
        monkeypatch.undo()
        server.journal.close()
        assert len(seen) == 200 and max(seen) <= 1
        assert len(recovered_core(tmp_path / "j").state.promises) == 200

    def test_lines_reach_the_file_while_entries_are_still_coming(self, tmp_path, monkeypatch):
        """The writer flushes every chunk: before the last entry is made, all but a chunk and a line are in the file."""
        monkeypatch.setattr(journal_module, "_SNAPSHOT_CHUNK", 256)
        temp = tmp_path / "j" / "snapshot-00000000000000000001.json.tmp"
        written = []

        def entries():
            for n in range(100):
                if n == 99:
                    written.append(temp.stat().st_size)
                yield "a", {"n": n, "pad": "x" * 60}

        file = write_snapshot(tmp_path / "j", entries())
        longest = max(len(line) for line in file.read_bytes().splitlines(keepends=True))
        assert file.stat().st_size - written[0] <= 256 + 3 * longest

    def test_entry_that_is_not_json_leaves_no_file(self, tmp_path):
        """A value the encoder refuses stops the snapshot, removes the temp file, and the journal goes on."""
        journal = Journal(str(tmp_path / "j"))
        journal.open()
        journal.wait_durable(journal.append([{"n": 1}]))
        with pytest.raises(ValueError):
            journal.write_snapshot(journal.begin_snapshot(), [("a", 1), ("a", float("nan"))])
        assert [p.name for p in (tmp_path / "j").glob("snapshot-*")] == []
        journal.wait_durable(journal.append([{"n": 2}]))
        journal.close()
        entries, recovery = reopened(tmp_path / "j")
        assert (entries, list(recovery.records)) == ([], [{"n": 1}, {"n": 2}])

    def test_close_waits_for_a_snapshot_being_written(self, tmp_path):
        """close() blocks while a snapshot is written and releases the directory only after it is in place."""
        journal = Journal(str(tmp_path / "j"))
        journal.open()
        journal.wait_durable(journal.append([{"n": 1}]))
        ticket = journal.begin_snapshot()
        writing, release, close_waits = threading.Event(), threading.Event(), threading.Event()
        events = []

        def held_entries():
            yield "a", 1
            writing.set()
            release.wait(10)
            yield "a", 2
            events.append("last entry made")

        writer = threading.Thread(target=journal.write_snapshot, args=(ticket, held_entries()))
        writer.start()
        try:
            assert writing.wait(10)
            journal._snapshot_lock = _ObservedLock(journal._snapshot_lock, close_waits.set)
            real_release = journal._release_lock
            journal._release_lock = lambda: (events.append("directory released"), real_release())
            closer = threading.Thread(target=journal.close)
            closer.start()
            assert close_waits.wait(10)
            assert events == []
        finally:
            release.set()
        writer.join(10)
        closer.join(10)
        assert events == ["last entry made", "directory released"]
        assert reopened(tmp_path / "j")[0] == [("a", 1), ("a", 2)]

    def test_snapshot_after_close_is_refused(self, tmp_path):
        """A snapshot that comes after close() raises and writes nothing: the directory is no longer ours."""
        journal = Journal(str(tmp_path / "j"))
        journal.open()
        journal.wait_durable(journal.append([{"n": 1}]))
        ticket = journal.begin_snapshot()
        journal.close()
        with pytest.raises(JournalError, match="journal is closed: snapshot 1 not written"):
            journal.write_snapshot(ticket, [("a", 1)])
        assert list((tmp_path / "j").glob("snapshot-*")) == []


class _ObservedLock:
    """A lock that calls ``on_wait`` before each ``with`` acquires it (to see a thread reach it)."""

    def __init__(self, lock, on_wait) -> None:
        self._lock, self._on_wait = lock, on_wait

    def __enter__(self):
        self._on_wait()
        return self._lock.__enter__()

    def __exit__(self, *exc_info):
        return self._lock.__exit__(*exc_info)
