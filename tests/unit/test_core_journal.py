"""The core on a real journal: what a failed append or fsync means for later requests and background passes, and what it logs."""

from __future__ import annotations

import errno
import json
import logging
import os

import pytest

from resonate_sync.api import envelope, handle
from resonate_sync.core import OPERATIONS, FakeClock, Resonate
from resonate_sync.errors import BadRequest, InternalError
from resonate_sync.journal import Journal
from resonate_sync.models import CreateCallbackRequest
from resonate_sync.ticker import Ticker

FAR = 4_102_444_800_000


def open_core(path, **options) -> Resonate:
    journal = Journal(str(path))
    recovery = journal.open()
    return Resonate.recover(recovery.snapshot, recovery.records, journal=journal, **options)


def reopen(core: Resonate, path) -> Resonate:
    core._journal.close()
    return open_core(path)


def fill_disk(monkeypatch) -> None:
    """Make every fsync of a journal segment fail with ENOSPC until ``monkeypatch.undo()``."""
    real_fsync = os.fsync

    def full(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".jsonl"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)


class TestJournalFailure:
    @pytest.mark.parametrize(
        "recv",
        [{"x": float("nan")}, {"x": float("inf")}, {"x": object()}],
        ids=["nan", "inf", "not-json"],
    )
    def test_unjournalable_record_is_refused_for_that_request_alone(self, tmp_path, recv):
        """A record the journal cannot write fails its own request (400) before the state changes; later requests are served and a restart has exactly what was acknowledged."""
        core = open_core(tmp_path / "j")
        core.promises_create(id="p", timeout=FAR)
        core.promises_create(id="root", timeout=FAR)
        # The field rules refuse such a recv when the request is built; set it past them, as a bug would.
        bad = CreateCallbackRequest(promise_id="p", root_promise_id="root", recv="nats://x", timeout=FAR)
        object.__setattr__(bad, "recv", recv)
        for _ in range(2):  # a retry is refused the same way, not answered "already there"
            with pytest.raises(BadRequest, match="cannot write"):
                core.execute(OPERATIONS["promises.callback"], bad)
        assert core.state.callbacks == {}
        assert core.promises_read(id="p").payload.promise.id == "p"
        core.promises_callback(promise_id="p", root_promise_id="root", recv="nats://ok", timeout=FAR)
        core.promises_create(id="after", timeout=FAR)
        core.tick()
        core.snapshot()
        recovered = reopen(core, tmp_path / "j")
        assert set(recovered.state.promises) == {"p", "root", "after"}
        assert [c.recv for c in recovered.state.callbacks["p"].values()] == ["nats://ok"]

    def test_failed_fsync_fails_every_later_request(self, tmp_path, monkeypatch, caplog):
        """After an fsync error every request is 500, reads included, and the log says why once."""
        core = open_core(tmp_path / "j")
        core.promises_create(id="before", timeout=FAR)
        fill_disk(monkeypatch)
        with pytest.raises(InternalError):
            core.promises_create(id="lost", timeout=FAR)
        for call in (lambda: core.promises_read(id="lost"), lambda: core.promises_read(id="before"), core.tick):
            with pytest.raises(InternalError):
                call()
        monkeypatch.undo()
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(said) == 1 and "every request fails (500) until the server is restarted" in said[0]
        assert "No space left on device" in said[0] and "To recover: free disk space" in said[0]
        assert "before" in reopen(core, tmp_path / "j").state.promises

    def test_requests_after_a_failure_log_a_count_not_a_line_each(self, tmp_path, monkeypatch, caplog):
        """With the disk full, 1,000 failing requests log the cause once, the first 500 once, then one count per interval; a 404 logs nothing."""
        now = [0.0]
        monkeypatch.setattr(envelope, "_failures", envelope._FailureLog(envelope.log, interval=60, clock=lambda: now[0]))
        core = open_core(tmp_path / "j")

        def send(operation, **payload):
            return json.loads(handle(core, json.dumps({"operation": operation, "payload": payload}).encode()))

        assert send("promises.read", id="missing")["error"]["code"] == 404
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
        fill_disk(monkeypatch)
        for n in range(1000):
            if n == 600:
                now[0] = 61.0
            assert send("promises.create", id=f"p{n}", timeout=FAR)["error"]["code"] == 500
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 3, errors
        assert "To recover: free disk space" in errors[0]
        assert errors[1].startswith("promises.create failed: 500 There was an error in the store subsystem")
        assert errors[2] == "599 requests failed with 500 There was an error in the store subsystem in the last 61 s"


class TestTickerAfterJournalFailure:
    def test_failed_passes_wait_a_tick_and_log_once(self, tmp_path, monkeypatch, caplog):
        """After a journal failure, with a timeout already due, the ticker waits a whole tick between failed passes and logs the first only."""
        clock = FakeClock()
        core = open_core(tmp_path / "j", clock=clock)
        core.promises_create(id="due", timeout=clock.now() + 1000)
        fill_disk(monkeypatch)
        with pytest.raises(InternalError):
            core.promises_create(id="lost", timeout=FAR)
        clock.advance(2000)
        ticker = Ticker(core, lambda subject, payload: None, tick_ms=1000)
        passes, waits = [], []
        real_tick = core.tick

        def counted_tick():
            passes.append(1)
            if len(passes) == 5:
                ticker._stop.set()
            return real_tick()

        monkeypatch.setattr(core, "tick", counted_tick)
        monkeypatch.setattr(core.wakeup, "wait", waits.append)
        ticker._loop()
        assert waits == [1.0] * 4
        said = [r.getMessage() for r in caplog.records if r.name == "resonate_sync.ticker"]
        assert len(said) == 1 and said[0].startswith("background pass failed: There was an error in the store subsystem")
