"""The core on a real journal: what a failed append or fsync means for later requests."""

from __future__ import annotations

import errno
import os

import pytest

from resonate_sync.core import OPERATIONS, Resonate
from resonate_sync.errors import BadRequest, InternalError
from resonate_sync.journal import Journal
from resonate_sync.models import CreateCallbackRequest

FAR = 4_102_444_800_000


def open_core(path) -> Resonate:
    journal = Journal(str(path))
    recovery = journal.open()
    return Resonate.recover(recovery.snapshot, recovery.records, journal=journal)


def reopen(core: Resonate, path) -> Resonate:
    core._journal.close()
    return open_core(path)


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
        # execute() skips the field hooks that normally refuse such values, as a bug would.
        bad = CreateCallbackRequest(promise_id="p", root_promise_id="root", recv=recv, timeout=FAR)
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
        real_fsync = os.fsync

        def full(fd):
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".jsonl"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(InternalError):
            core.promises_create(id="lost", timeout=FAR)
        for call in (lambda: core.promises_read(id="lost"), lambda: core.promises_read(id="before"), core.tick):
            with pytest.raises(InternalError):
                call()
        monkeypatch.undo()
        said = [r for r in caplog.records if "every request fails (500) until the server is restarted" in r.message]
        assert len(said) == 1 and "No space left on device" in said[0].message
        assert "before" in reopen(core, tmp_path / "j").state.promises
