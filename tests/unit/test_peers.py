"""One writer per subject, decided from the INFO documents other instances sent (no sockets)."""

import pytest

from resonate_sync.peers import Peer, handover_warning, instance_metadata, refusal, serving


def info(id_, subject, queue="", metadata=None):
    return {"id": id_, "version": "1.2.3", "metadata": metadata or {},
            "endpoints": [{"name": "api", "subject": subject, "queue_group": queue}]}  # fmt: skip


class TestServing:
    def test_only_instances_on_the_subject_count(self):
        """Instances on other subjects are no peers of ours."""
        peers = serving("orders", [info("a", "orders", "q"), info("b", "billing")])
        assert peers == [Peer("a", "1.2.3", "q", {})]

    @pytest.mark.parametrize("document", [None, "x", [], {}, {"endpoints": None}, {"endpoints": ["x", {"subject": 1}]}])
    def test_documents_that_are_not_info_are_ignored(self, document):
        """Whatever else answers on $SRV.INFO.resonate cannot crash or block a start."""
        assert serving("orders", [document]) == []

    def test_an_older_instance_without_metadata_is_still_a_peer(self):
        """Subject and queue group are ADR-32 fields every version publishes; metadata is optional."""
        [peer] = serving("orders", [{"id": "old", "version": "0.1.0", "endpoints": [{"subject": "orders"}]}])
        assert peer.describe() == "instance old (version 0.1.0)"


class TestDecision:
    PEER = Peer("a1", "1.2.3", "", {"host": "web-1", "pid": "42", "store": "file", "store_path": "/srv/j"})

    def test_refusal_names_the_instance_and_the_remedies(self):
        """The message says who serves the subject, where, with what store, and what to do."""
        message = refusal("orders", "", "nats://n:4222", [self.PEER])
        for part in ("'orders'", "nats://n:4222", "instance a1", "pid 42 on host web-1", "store: file /srv/j",
                     "--api-nats-subject", "--api-nats-queue"):  # fmt: skip
            assert part in message, message

    @pytest.mark.parametrize("mine, theirs", [("", ""), ("q", ""), ("", "q"), ("q", "r")])
    def test_only_one_shared_queue_group_is_a_handover(self, mine, theirs):
        """Without the same non-empty queue group on both, the subject is taken."""
        assert refusal("orders", mine, "nats://n", [Peer("a", "1", theirs, {})])

    def test_the_same_queue_group_is_a_warning_not_a_refusal(self):
        """Both in one queue group: a blue/green handover, allowed with a warning naming the other."""
        peer = Peer("a", "1", "q", {})
        assert refusal("orders", "q", "nats://n", [peer]) is None
        assert "instance a" in handover_warning("orders", "q", [peer])

    def test_no_peers_no_words(self):
        """Alone on the subject: neither refused nor warned."""
        assert refusal("orders", "", "nats://n", []) is None and handover_warning("orders", "", []) is None


def test_metadata_names_the_store():
    """A memory store has no path; a file store's path is absolute."""
    assert instance_metadata(None)["store"] == "memory" and "store_path" not in instance_metadata(None)
    assert instance_metadata("j")["store_path"].endswith("/j") and instance_metadata("j")["store_path"].startswith("/")


class TestReplicas:
    """Instances on one JetStream stream are one replicated server: the lease, not discovery, keeps one writer."""

    def replica(self, id_, stream, role="standby"):
        return Peer(id_, "1.2.3", "", {"store": "jetstream", "stream": stream, "role": role})

    def test_instances_on_our_stream_are_neither_refused_nor_warned_about(self):
        peers = [self.replica("a", "RESONATE_orders"), self.replica("b", "RESONATE_orders", "leader")]
        assert refusal("orders", "", "nats://n", peers, "RESONATE_orders") is None
        assert handover_warning("orders", "", peers, "RESONATE_orders") is None

    def test_an_instance_on_another_stream_is_a_rival(self):
        """Two streams are two stores: a promise written through one is missing from the other."""
        message = refusal("orders", "", "nats://n", [self.replica("a", "OTHER")], "RESONATE_orders")
        assert message and "instance a" in message and "store: jetstream OTHER" in message and "role: standby" in message

    @pytest.mark.parametrize("stream", ["", "RESONATE_orders"])
    def test_file_and_jetstream_instances_never_share_a_subject(self, stream):
        """A file-store server next to a JetStream one (either way round) is refused."""
        theirs = [TestDecision.PEER] if stream else [self.replica("a", "RESONATE_orders")]
        assert refusal("orders", "", "nats://n", theirs, stream) is not None


def test_metadata_of_a_replica_names_its_stream_not_a_path():
    metadata = instance_metadata("ignored", "RESONATE_orders")
    assert metadata["store"] == "jetstream" and metadata["stream"] == "RESONATE_orders" and "store_path" not in metadata
