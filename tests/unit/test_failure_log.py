"""How the envelope logs 5xx replies: the first of a kind at once, repeats as a count per interval."""

from __future__ import annotations

import logging

from resonate_sync.api.envelope import _FailureLog
from resonate_sync.errors import InternalError, Status, Unavailable

STORE_ERROR = InternalError(Status.STORE_ERROR.text, status=Status.STORE_ERROR)


class TestFailureLog:
    def logged(self, caplog, failures):
        """Run ``failures``, (seconds, error) pairs, through one log; return the messages it wrote."""
        clock = [0.0]
        log = _FailureLog(logging.getLogger("test.failures"), interval=60, clock=lambda: clock[0])
        with caplog.at_level(logging.ERROR, logger="test.failures"):
            for at, error in failures:
                clock[0] = at
                log.failed("promises.create", error)
        return [record.getMessage() for record in caplog.records]

    def test_repeats_within_the_interval_are_counted_into_one_line(self, caplog):
        """Failures of one kind after the first are logged as one count once the interval has passed, not one line each."""
        said = self.logged(caplog, [(n / 10, STORE_ERROR) for n in range(700)])
        assert len(said) == 2 and said[0].startswith("promises.create failed: 500 There was an error in the store")
        assert said[1] == "600 requests failed with 500 There was an error in the store subsystem in the last 60 s"

    def test_a_failure_after_a_quiet_interval_is_logged_in_full(self, caplog):
        """A kind that did not fail for a whole interval is logged in full again, not as a count of one."""
        said = self.logged(caplog, [(0, STORE_ERROR), (3600, STORE_ERROR)])
        assert len(said) == 2 and all(line.startswith("promises.create failed: 500") for line in said)

    def test_each_kind_is_counted_on_its_own(self, caplog):
        """A failure of another code or message gets its own first line instead of disappearing into the count."""
        busy = Unavailable(Status.API_SUBMISSION_QUEUE_FULL.text, status=Status.API_SUBMISSION_QUEUE_FULL)
        said = self.logged(caplog, [(0, STORE_ERROR), (1, STORE_ERROR), (2, busy), (3, busy)])
        assert len(said) == 2 and "500 There was an error in the store" in said[0] and "503 The api submission" in said[1]
