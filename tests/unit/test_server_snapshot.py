"""The server's snapshots: written on a thread of their own, so the ticker goes on; stop waits for them.

No NATS here: the server gets its journal and core as ``start`` builds them, a ticker whose
messages go to a queue, and a journal whose snapshot writer can be held mid-way.
"""

from __future__ import annotations

import json
import queue
import threading

from resonate_sync import Config, Server
from resonate_sync.core import CoreSettings
from resonate_sync.journal import Journal
from resonate_sync.ticker import Ticker

FAR = 4_102_444_800_000


def offline_server(path, **config) -> Server:
    """A Server with its journal and core but no NATS: what ``start`` builds before it connects."""
    server = Server(Config(store_path=str(path), **config))
    server.core = server._open_core(CoreSettings())
    return server


class HeldWriter:
    """Wraps ``journal.write_snapshot`` so that the first snapshot stops after its first entry until released."""

    def __init__(self, journal: Journal, events: list) -> None:
        self.writing = threading.Event()
        self.release = threading.Event()
        self._real = journal.write_snapshot
        self._events = events
        journal.write_snapshot = self

    def __call__(self, ticket, entries) -> None:
        self._events.append(("write", ticket.seq))
        self._real(ticket, entries if self.writing.is_set() else self._held(entries))
        self._events.append(("written", ticket.seq))

    def _held(self, entries):
        for index, entry in enumerate(entries):
            if index == 1:
                self.writing.set()
                self.release.wait(10)
            yield entry


class TestBackgroundSnapshot:
    def test_ticker_delivers_while_a_snapshot_is_written(self, tmp_path):
        """With the snapshot writer held mid-file, a task created meanwhile is still sent by the ticker."""
        server = offline_server(tmp_path / "j", snapshot_every=3)
        for n in range(3):
            server.core.promises_create(id=f"p{n}", timeout=FAR)
        held = HeldWriter(server.journal, [])
        sent = queue.Queue()
        server.ticker = Ticker(server.core, lambda subject, payload: sent.put((subject, payload)), tick_ms=50, after_pass=server._maybe_snapshot)
        server.ticker.start()
        try:
            assert held.writing.wait(10), "the ticker did not start a snapshot"
            assert [p.name for p in (tmp_path / "j").glob("snapshot-*")] == ["snapshot-00000000000000000003.json.tmp"]
            server.core.promises_create(id="job", timeout=FAR, tags={"resonate:invoke": "nats://workers"})
            subject, payload = sent.get(timeout=10)
            assert subject == "workers" and json.loads(payload)["task"]["id"] == "__invoke:job"
            assert held.release.is_set() is False
        finally:
            held.release.set()
        server.stop()
        assert [p.name for p in (tmp_path / "j").glob("snapshot-*")] == [f"snapshot-{server.journal.last_seq:020d}.json"]

    def test_one_background_snapshot_at_a_time(self, tmp_path):
        """While a snapshot is written, a pass that finds another one due starts none."""
        server = offline_server(tmp_path / "j", snapshot_every=2)
        for n in range(2):
            server.core.promises_create(id=f"p{n}", timeout=FAR)
        held = HeldWriter(server.journal, events := [])
        server._maybe_snapshot()
        try:
            assert held.writing.wait(10)
            running = server._background
            for n in range(2, 4):
                server.core.promises_create(id=f"p{n}", timeout=FAR)
            assert server.journal.should_snapshot()
            server._maybe_snapshot()
            assert server._background is running and events == [("write", 2)]
        finally:
            held.release.set()
        running.join(10)
        server._maybe_snapshot()  # now the due one starts
        server._background.join(10)
        server.journal.close()
        assert events == [("write", 2), ("written", 2), ("write", 4), ("written", 4)]

    def test_stop_waits_for_the_background_snapshot_then_writes_the_final_one_then_closes(self, tmp_path):
        """Stop neither overlaps a snapshot being written with the final one nor closes the journal under it."""
        server = offline_server(tmp_path / "j", snapshot_every=3)
        for n in range(3):
            server.core.promises_create(id=f"p{n}", timeout=FAR)
        events = []
        held = HeldWriter(server.journal, events)
        real_close = server.journal.close
        server.journal.close = lambda: (events.append("close"), real_close())
        server._maybe_snapshot()
        stop_waits = threading.Event()
        try:
            assert held.writing.wait(10)
            server.core.promises_create(id="last", timeout=FAR)
            real_join = server._background.join
            server._background.join = lambda *args: (stop_waits.set(), real_join(*args))
            stopper = threading.Thread(target=server.stop)
            stopper.start()
            assert stop_waits.wait(10)
            assert events == [("write", 3)]
        finally:
            held.release.set()
        stopper.join(10)
        assert events == [("write", 3), ("written", 3), ("write", 4), ("written", 4), "close"]
        journal = Journal(str(tmp_path / "j"))
        recovery = journal.open()
        assert (recovery.snapshot_seq, sum(1 for _ in recovery.snapshot)) == (4, 4)
        journal.close()
