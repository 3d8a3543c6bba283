"""Snapshots in a JetStream Object Store bucket, in the object store's own wire format.

Bucket ``<bucket>`` is stream ``OBJ_<bucket>``: an object's chunks are messages on
``$O.<bucket>.C.<nuid>``, its description one message on ``$O.<bucket>.M.<base64url(name)>``
(JSON: name, nuid, size, chunks, ``digest`` = ``SHA-256=<base64url>``), written last with a
rollup, so an object is visible only once every chunk is stored. Any object store client
(``nats object get``) can read these objects.

An object is ``snapshot-<seq, 20 digits>``: the state after stream seq ``seq``. Its bytes are
lines of canonical JSON: a header ``{"format":"resonate-jetstream-snapshot/1","seq":S}``, one
``{"k":kind,"v":value}`` per entry, then ``{"end":N}`` (N entries). The SHA-256 digest covers
every byte; reading checks it before a single entry is handed out, and again while streaming.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from typing import Any, Iterable, Iterator, List, Tuple

import attrs

from ...jsonenc import compact_encoder
from .api import JetStreamError, JsApi

__all__ = ["SnapshotInfo", "SnapshotStore"]

FORMAT = "resonate-jetstream-snapshot/1"
_NAME = re.compile(r"snapshot-(\d{20})\Z")
_encode = compact_encoder(sort_keys=True, allow_nan=False)


@attrs.frozen
class SnapshotInfo:
    """An object's description: the stream ``seq`` it covers, its ``name``, ``nuid``, ``size``, ``chunks``, ``digest``."""

    seq: int
    name: str
    nuid: str
    size: int
    chunks: int
    digest: str


def _meta_subject(bucket: str, name: str) -> str:
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


def _digest(sha: Any) -> str:
    return "SHA-256=" + base64.urlsafe_b64encode(sha.digest()).decode()


class SnapshotStore:
    """The snapshots of one store in Object Store bucket ``bucket``; ``chunk_size`` bytes per message."""

    def __init__(self, api: JsApi, bucket: str, *, chunk_size: int) -> None:
        self.api = api
        self.bucket = bucket
        self.stream = f"OBJ_{bucket}"
        self.chunk_size = chunk_size

    def stream_config(self, replicas: int) -> dict:
        return {
            "name": self.stream,
            "subjects": [f"$O.{self.bucket}.C.>", f"$O.{self.bucket}.M.>"],
            "storage": "file",
            "num_replicas": replicas,
            "discard": "new",
            "allow_rollup_hdrs": True,
            "allow_direct": True,
        }

    # ------------------------------------------------------------------ listing

    def list(self) -> List[SnapshotInfo]:
        """Every complete snapshot object, oldest first."""
        state = self.api.call(
            f"STREAM.INFO.{self.stream}", {"subjects_filter": f"$O.{self.bucket}.M.>"}, what=f"listing object store {self.bucket}"
        ).get("state", {})
        found = []
        for subject in (state.get("subjects") or {}):
            meta = self.api.direct_get(self.stream, {"last_by_subj": subject})
            if meta is None:
                continue
            try:
                info = json.loads(meta.payload)
            except ValueError:
                raise JetStreamError(
                    f"object store {self.bucket}: the description on {subject} is not JSON; delete that object"
                ) from None
            if not isinstance(info, dict) or info.get("deleted"):
                continue
            match = _NAME.match(str(info.get("name", "")))
            if not match:
                continue  # not ours: objects others put in the bucket are left alone
            try:
                found.append(SnapshotInfo(
                    int(match.group(1)), info["name"], str(info["nuid"]), int(info["size"]), int(info["chunks"]),
                    str(info["digest"]),
                ))  # fmt: skip
            except (KeyError, TypeError, ValueError):
                raise JetStreamError(
                    f"object store {self.bucket}: object {info.get('name')} has an incomplete description {info!r}"
                ) from None
        return sorted(found, key=lambda snap: snap.seq)

    # ------------------------------------------------------------------ writing

    def write(self, seq: int, entries: Iterable[Tuple[str, object]]) -> SnapshotInfo:
        """Stream ``entries`` into object ``snapshot-<seq>`` and return its description."""
        name = f"snapshot-{seq:020d}"
        nuid = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        chunk_subject = f"$O.{self.bucket}.C.{nuid}"
        sha = hashlib.sha256()
        size = chunks = count = 0
        buffer = bytearray(_encode({"format": FORMAT, "seq": seq}).encode() + b"\n")

        def put(data: bytes) -> None:
            nonlocal size, chunks
            _, error = self.api.publish_acked(chunk_subject, data, what=f"writing {name} to object store {self.bucket}")
            if error is not None:
                raise error
            sha.update(data)
            size += len(data)
            chunks += 1

        try:
            for kind, value in entries:
                if not isinstance(kind, str):
                    raise TypeError(f"a snapshot entry's kind must be a str, not {type(kind).__name__}")
                count += 1
                buffer += _encode({"k": kind, "v": value}).encode() + b"\n"
                while len(buffer) >= self.chunk_size:
                    put(bytes(buffer[: self.chunk_size]))
                    del buffer[: self.chunk_size]
            buffer += _encode({"end": count}).encode() + b"\n"
            while buffer:
                put(bytes(buffer[: self.chunk_size]))
                del buffer[: self.chunk_size]
            info = SnapshotInfo(seq, name, nuid, size, chunks, _digest(sha))
            meta = {
                "name": name, "bucket": self.bucket, "nuid": nuid, "size": size, "chunks": chunks,
                "digest": info.digest, "mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "description": f"resonate state after stream seq {seq}",
                "options": {"max_chunk_size": self.chunk_size},
            }  # fmt: skip
            _, error = self.api.publish_acked(
                _meta_subject(self.bucket, name), json.dumps(meta).encode(), {"Nats-Rollup": "sub"},
                what=f"describing {name} in object store {self.bucket}",
            )
            if error is not None:
                raise error
        except BaseException:
            self._purge(chunk_subject)
            raise
        return info

    def delete(self, snap: SnapshotInfo) -> None:
        self._purge(f"$O.{self.bucket}.C.{snap.nuid}")
        self._purge(_meta_subject(self.bucket, snap.name))

    def _purge(self, subject: str) -> None:
        try:
            self.api.call(f"STREAM.PURGE.{self.stream}", {"filter": subject}, what=f"purging {subject}")
        except JetStreamError:
            pass  # harmless: an unreferenced chunk subject; the next snapshot's cleanup tries again

    # ------------------------------------------------------------------ reading

    def verify(self, snap: SnapshotInfo) -> None:
        """Read the whole object and check its size and digest; damage is a JetStreamError."""
        for _ in self._chunks(snap):
            pass

    def entries(self, snap: SnapshotInfo) -> Iterator[Tuple[str, object]]:
        """The (kind, value) entries of a snapshot (verified again while read)."""
        where = f"object store {self.bucket}, object {snap.name}"
        pending = b""
        header = None
        count = 0
        for data in self._chunks(snap):
            lines = (pending + data).split(b"\n")
            pending = lines.pop()
            for line in lines:
                try:
                    value = json.loads(line)
                except ValueError:
                    raise JetStreamError(f"{where}: a line is not JSON: {line[:80]!r}") from None
                if header is None:
                    if not (isinstance(value, dict) and value.get("format") == FORMAT and value.get("seq") == snap.seq):
                        raise JetStreamError(f"{where}: the header {line[:80]!r} is not a snapshot of seq {snap.seq}")
                    header = value
                elif isinstance(value, dict) and "end" in value:
                    if value["end"] != count:
                        raise JetStreamError(f"{where}: the end line says {value['end']} entries, {count} were read")
                    return
                else:
                    count += 1
                    yield value["k"], value["v"]
        raise JetStreamError(f"{where}: no end line (truncated)")

    def _chunks(self, snap: SnapshotInfo) -> Iterator[bytes]:
        where = f"object store {self.bucket}, object {snap.name} (stream {self.stream})"
        subject = f"$O.{self.bucket}.C.{snap.nuid}"
        sha = hashlib.sha256()
        seq, read, size = 1, 0, 0
        while read < snap.chunks:
            found = self.api.fetch(self.stream, subject, seq, batch=min(64, snap.chunks - read))
            if not found:
                break
            for msg in found:
                read += 1
                size += len(msg.payload)
                sha.update(msg.payload)
                yield msg.payload
            seq = found[-1].seq + 1
        digest = _digest(sha)
        if read != snap.chunks or size != snap.size or digest != snap.digest:
            raise JetStreamError(
                f"{where}: snapshot of stream seq {snap.seq} is damaged: {read}/{snap.chunks} chunks, "
                f"{size}/{snap.size} bytes, digest {digest} (expected {snap.digest}). Delete that object "
                "(`nats object del`) to recover from the previous snapshot if the stream still holds the "
                "records after it, or restore the stream and bucket from a backup"
            )

