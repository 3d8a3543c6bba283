"""The Services API (ADR-32) documents and the lock-free endpoint counters, without NATS."""

import json
import threading
from datetime import datetime

import pytest

from resonate_sync import __version__
from resonate_sync.api import BUSY_REPLY, SHUTTING_DOWN_REPLY, error_reply, reply_error
from resonate_sync.transport.micro import EndpointStats, Service


def make_service(**kwargs) -> Service:
    return Service("resonate", __version__, "resonate.server", **kwargs)


class TestEndpointStats:
    def test_empty(self):
        """Before any request every counter is zero, the last error is "" and the average is 0."""
        assert EndpointStats().snapshot() == {
            "num_requests": 0, "num_errors": 0, "last_error": "", "processing_time": 0, "average_processing_time": 0,
        }

    def test_average_is_truncated(self):
        """average_processing_time is the total divided by the requests, truncated to whole ns."""
        stats = EndpointStats()
        for elapsed in (10, 10, 11):
            stats.record(elapsed)
        snapshot = stats.snapshot()
        assert (snapshot["processing_time"], snapshot["average_processing_time"]) == (31, 10)

    def test_counts_from_many_threads(self):
        """Counts recorded by 16 threads at once add up exactly, with no lock on the recording path."""
        stats = EndpointStats()
        barrier = threading.Barrier(16)

        def work(n: int) -> None:
            barrier.wait()
            for i in range(2000):
                stats.record(3, error=f"400:thread {n}" if i % 10 == 0 else None)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        snapshot = stats.snapshot()
        assert snapshot["num_requests"] == 32_000
        assert snapshot["num_errors"] == 3_200
        assert snapshot["processing_time"] == 96_000
        assert snapshot["last_error"].startswith("400:thread ")

    def test_last_error_is_the_latest_across_threads(self):
        """last_error is the error recorded last, whichever thread recorded it."""
        stats = EndpointStats()
        stats.record(1, error="400:first")
        other = threading.Thread(target=stats.record, args=(1, "404:second"))
        other.start()
        other.join()
        assert stats.snapshot()["last_error"] == "404:second"
        stats.record(1)  # a success does not clear it
        assert stats.snapshot()["last_error"] == "404:second"


class TestService:
    def test_subjects(self):
        """An instance answers each verb on $SRV.<VERB>, $SRV.<VERB>.<name> and $SRV.<VERB>.<name>.<id>."""
        service = make_service(service_id="abc")
        assert sorted(service.subjects()) == sorted(
            (subject, verb)
            for verb in ("PING", "INFO", "STATS")
            for subject in (f"$SRV.{verb}", f"$SRV.{verb}.resonate", f"$SRV.{verb}.resonate.abc")
        )

    def test_ids_are_unique(self):
        """Every instance gets its own id."""
        assert len({make_service().id for _ in range(100)}) == 100

    @pytest.mark.parametrize("name", ["", "has space", "dot.ted", "star*"])
    def test_rejects_bad_names(self, name):
        """Service names are [A-Za-z0-9_-]+ (ADR-32)."""
        with pytest.raises(ValueError, match="service name"):
            Service(name, "1.0.0", "s")

    @pytest.mark.parametrize("version", ["1", "1.0", "v1.0.0", "01.0.0", "1.0.0-"])
    def test_rejects_non_semver(self, version):
        """Versions must be SemVer (ADR-32)."""
        with pytest.raises(ValueError, match="SemVer"):
            Service("resonate", version, "s")

    def test_documents(self):
        """PING, INFO and STATS carry the standard fields, the endpoint, and the stats in ns."""
        service = make_service(queue_group="blue")
        ping = json.loads(service.respond("PING"))
        assert ping == {"type": "io.nats.micro.v1.ping_response", "name": "resonate", "id": service.id,
                        "version": __version__, "metadata": {}}
        info = json.loads(service.respond("INFO"))
        assert info["type"] == "io.nats.micro.v1.info_response"
        assert info["endpoints"] == [
            {"name": "default", "subject": "resonate.server", "queue_group": "blue", "metadata": {}}]
        stats = json.loads(service.respond("STATS"))
        assert stats["type"] == "io.nats.micro.v1.stats_response"
        assert datetime.fromisoformat(stats["started"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0
        assert stats["endpoints"][0]["queue_group"] == "blue"

    def test_record_counts_the_reported_outcome(self):
        """An answer reported as an error counts as one, shown as "code:message"; a success answer
        or no answer at all does not."""
        service = make_service()
        service.record(5, None)
        service.record(7, "404:promise not found")
        service.record(1)
        snapshot = service.stats.snapshot()
        assert (snapshot["num_requests"], snapshot["num_errors"], snapshot["last_error"], snapshot["processing_time"]) == (
            3, 1, "404:promise not found", 13)

    @pytest.mark.parametrize("reply", [BUSY_REPLY, SHUTTING_DOWN_REPLY, error_reply(400, "x:y")])
    def test_reply_error_reads_every_error_reply(self, reply):
        """reply_error recognises every error reply the API encodes (they all start the same way)."""
        error = json.loads(reply)["error"]
        assert reply_error(reply) == f"{error['code']}:{error['message']}"
