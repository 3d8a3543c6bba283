"""One writer per subject: which other instances serve our subject, and whether we may join them.

Two instances on one subject, each with its own store, split the requests between two states
that never meet: a promise created on one is a 404 on the other. So before a server takes its
subject, it asks every running instance for its Services API INFO (``$SRV.INFO.resonate``,
which names each instance's subject and queue group) and refuses to start when another one
serves the same subject. The one exception is a blue/green handover: both instances in the same
``--api-nats-queue`` group. That is allowed with a warning, because each request then goes to
exactly one of them, and the old one is about to stop.

What the check catches: any instance that answered INFO in time (``peer_window_ms``), on the
same NATS account (discovery does not cross accounts), including a stopped-but-not-yet-exited
one and older versions (they publish the same INFO). What it cannot catch: an instance that does
not answer in time (paused, overloaded, or across a slow cluster route), and two instances that
ask at the same moment, before either answers discovery. The server answers discovery as soon
as its own check passed, before it opens its store, so that race is as short as the window;
closing it takes a fenced leader over a shared log (the JetStream store), not a question asked
over NATS.
"""

from __future__ import annotations

import os
import socket
from typing import Iterable, List, Mapping, Optional, Sequence

import attrs

__all__ = ["Peer", "handover_warning", "instance_metadata", "refusal", "replicas", "serving"]


def instance_metadata(store_path: Optional[str], stream: str = "", events_subject: str = "") -> dict:
    """What an instance tells discovery about itself beyond the ADR-32 fields: where it runs,
    what it keeps its state in, and where it publishes promise events, if it does (ADR-32
    metadata is a map of strings). ``stream``: the JetStream stream of a replicated instance
    (its ``store_path`` is then ignored)."""
    metadata = {"host": socket.gethostname(), "pid": str(os.getpid())}
    if stream:
        metadata.update(store="jetstream", stream=stream)
    elif store_path:
        metadata.update(store="file", store_path=os.path.abspath(store_path))
    else:
        metadata["store"] = "memory"
    if events_subject:
        metadata["events_subject"] = events_subject
    return metadata


@attrs.frozen
class Peer:
    """Another instance serving a subject, as its INFO document describes it.

    Attributes:
        id: its Services API instance id.
        version: its software version.
        queue_group: the queue group it serves the subject in ("" for none).
        metadata: its instance metadata (host, pid, store; empty for older versions).
    """

    id: str
    version: str
    queue_group: str
    metadata: Mapping[str, str]

    def describe(self) -> str:
        """``instance <id> (version …, pid … on host …, store …)``, with what it told us."""
        details = [f"version {self.version}"] if self.version else []
        host, pid = self.metadata.get("host"), self.metadata.get("pid")
        if pid and host:
            details.append(f"pid {pid} on host {host}")
        elif pid or host:
            details.append(f"pid {pid}" if pid else f"host {host}")
        store = self.metadata.get("store")
        if store:
            where = self.metadata.get("stream" if store == "jetstream" else "store_path", "")
            details.append(f"store: {store} {where}".rstrip())
        if self.metadata.get("role"):
            details.append(f"role: {self.metadata['role']}")
        return f"instance {self.id} ({', '.join(details)})" if details else f"instance {self.id}"


def serving(subject: str, documents: Iterable[object]) -> List[Peer]:
    """The instances whose INFO document lists an endpoint on ``subject``; anything that is not
    such a document is ignored."""
    peers = []
    for doc in documents:
        if not isinstance(doc, Mapping) or not isinstance(doc.get("endpoints"), list):
            continue
        metadata = doc.get("metadata")
        metadata = {k: v for k, v in metadata.items() if isinstance(v, str)} if isinstance(metadata, Mapping) else {}
        for endpoint in doc["endpoints"]:
            if isinstance(endpoint, Mapping) and endpoint.get("subject") == subject:
                queue = endpoint.get("queue_group")
                queue = queue if isinstance(queue, str) else ""
                peers.append(Peer(str(doc.get("id", "?")), str(doc.get("version", "")), queue, metadata))
                break
    return peers


def _in_handover(queue: str, peer: Peer) -> bool:
    return bool(queue) and peer.queue_group == queue


def replicas(stream: str, peers: Sequence[Peer]) -> List[Peer]:
    """The ``peers`` that keep their state in JetStream stream ``stream`` ("": none do): one
    replicated server with this one, where a fenced lease lets exactly one of them write."""
    return [peer for peer in peers if stream and peer.metadata.get("store") == "jetstream" and peer.metadata.get("stream") == stream]


def refusal(subject: str, queue: str, url: str, peers: Sequence[Peer], stream: str = "") -> Optional[str]:
    """Why this server must not serve ``subject`` in ``queue`` next to ``peers`` (None: it may).

    ``stream``: this server's JetStream stream, if it has one; peers on the same stream are its
    replicas, never a reason to refuse."""
    shared = replicas(stream, peers)
    taken = [peer for peer in peers if not _in_handover(queue, peer) and peer not in shared]
    if not taken:
        return None
    return (
        f"subject {subject!r} is already served on {url} by {'; '.join(p.describe() for p in taken)}: two servers"
        " on one subject answer from two separate stores, and a promise written through one is missing from the"
        " other. Give this server another subject (--api-nats-subject), or stop that instance first;"
        " for a blue/green handover start both with the same --api-nats-queue"
    )


def handover_warning(subject: str, queue: str, peers: Sequence[Peer], stream: str = "") -> Optional[str]:
    """The warning for joining ``peers`` on ``subject`` in queue group ``queue`` (None: no peers
    other than replicas on this server's ``stream``)."""
    shared = replicas(stream, peers)
    peers = [peer for peer in peers if peer not in shared]
    if not peers:
        return None
    return (
        f"subject {subject!r} is also served by {'; '.join(p.describe() for p in peers)} in queue group {queue!r}:"
        " a blue/green handover. Until it stops, each request goes to one of the two and each keeps only its own"
        " writes; stop it before this server is trusted with writes"
    )
