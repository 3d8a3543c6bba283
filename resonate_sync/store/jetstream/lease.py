"""Leadership: a lease in a JetStream KV bucket, expired by the server with a per-message TTL.

The lease is the one key ``leader`` of the KV bucket (stream ``KV_<bucket>``, one message per
subject kept). Its value names the holder: ``{"instance": "<id>"}``.

- Acquire: publish with ``Nats-Expected-Last-Subject-Sequence`` = 0 when the key has no live
  message, or = the seq of a release marker (``KV-Operation: DEL``), or of a lease naming this
  very instance (held before a step-down it could not release). Two instances racing get one
  success: the server compares the sequence atomically.
- Renew: publish again expecting the revision we hold. A refusal means someone else holds it.
- Expiry: every message carries ``Nats-TTL`` = the lease, so a holder that stops renewing
  (kill -9) loses the key after the lease, by the server's clock.
- Release (close): a ``DEL`` marker expecting our revision: only if still ours.

The local validity deadline is (clock when the renewal was *sent*) + lease − margin: the server
starts its TTL when it stores the message, later than we sent it, so the server can only expire
the key after our deadline passed — we stop serving first.
"""

from __future__ import annotations

import json
from typing import Callable, Optional

from .api import JsApi

__all__ = ["LEASE_KEY", "Lease", "check_lease_ms"]

LEASE_KEY = "leader"


class Lease:
    """The lease of ``instance`` on KV bucket ``bucket``; ``lease_ms`` long; ``clock`` is monotonic seconds."""

    def __init__(self, api: JsApi, bucket: str, *, instance: str, lease_ms: int, clock: Callable[[], float]) -> None:
        self.api = api
        self.bucket = bucket
        self.stream = f"KV_{bucket}"
        self.subject = f"$KV.{bucket}.{LEASE_KEY}"
        self.instance = instance
        self.lease_ms = lease_ms
        self.clock = clock
        self.margin = max(lease_ms / 10, 100) / 1000  # seconds kept in hand against clock drift
        self.revision = 0  # the seq of our lease message; 0 when not held
        self.deadline = 0.0  # our lease is valid until this clock value
        self.holder: Optional[str] = None  # the instance holding it, as last seen

    def stream_config(self, replicas: int) -> dict:
        return {
            "name": self.stream,
            "subjects": [f"$KV.{self.bucket}.>"],
            "storage": "file",
            "num_replicas": replicas,
            "max_msgs_per_subject": 1,
            "discard": "new",
            "deny_delete": True,
            "allow_rollup_hdrs": True,
            "allow_direct": True,
            "allow_msg_ttl": True,
        }

    @property
    def held(self) -> bool:
        return self.revision > 0

    def valid(self) -> bool:
        """Held and not past the local deadline."""
        return self.revision > 0 and self.clock() < self.deadline

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; True if we now do."""
        current = self.api.direct_get(self.stream, {"last_by_subj": self.subject})
        if current is not None and current.headers.get("KV-Operation") not in ("DEL", "PURGE"):
            self.holder = _holder(current.payload)
            if self.holder != self.instance:
                return False
            if self.revision == current.seq:
                return True
            # Ours from before a step-down this instance could not release (NATS was away): nobody
            # else holds it, and the expected sequence makes sure nobody took it since we looked.
            return self._write(current.seq, "take back")
        expected = current.seq if current is not None else 0
        return self._write(expected, "acquire")

    def renew(self) -> bool:
        """Extend our lease; False when someone else holds it now (we lost it)."""
        if not self.revision:
            return False
        return self._write(self.revision, "renew")

    def release(self) -> None:
        """Give the lease up at once, if still ours (a standby takes over without waiting for expiry)."""
        if not self.revision:
            return
        revision, self.revision, self.deadline = self.revision, 0, 0.0
        headers = {"KV-Operation": "DEL", "Nats-Expected-Last-Subject-Sequence": str(revision)}
        self.api.publish_acked(self.subject, b"", headers, what=f"releasing the lease in KV bucket {self.bucket}")

    def forget(self) -> None:
        """Stop believing we hold it (after a step-down)."""
        self.revision, self.deadline = 0, 0.0

    def _write(self, expected: int, what: str) -> bool:
        sent = self.clock()
        headers = {
            "Nats-Expected-Last-Subject-Sequence": str(expected),
            "Nats-TTL": f"{self.lease_ms}ms",
        }
        payload = json.dumps({"instance": self.instance}).encode()
        seq, error = self.api.publish_acked(self.subject, payload, headers, what=f"{what} the lease in KV bucket {self.bucket}")
        if error is None:
            self.revision, self.deadline, self.holder = seq, sent + self.lease_ms / 1000 - self.margin, self.instance
            return True
        if error.err_code == 10071:
            self.revision, self.deadline = 0, 0.0
            self.holder = self._current_holder()
            return False
        raise error

    def _current_holder(self) -> Optional[str]:
        """Who holds the lease now, for the step-down message (None when nobody or unknown)."""
        try:
            current = self.api.direct_get(self.stream, {"last_by_subj": self.subject})
        except Exception:
            return None
        if current is None or current.headers.get("KV-Operation") in ("DEL", "PURGE"):
            return None
        holder = _holder(current.payload)
        return holder if holder != self.instance else None


def _holder(payload: bytes) -> Optional[str]:
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    holder = value.get("instance") if isinstance(value, dict) else None
    return holder if isinstance(holder, str) else None


def check_lease_ms(lease_ms: int) -> None:
    if not isinstance(lease_ms, int) or isinstance(lease_ms, bool) or lease_ms < 1000:
        raise ValueError(f"lease_ms must be an integer of at least 1000 (ms; JetStream's TTLs are >= 1 s), not {lease_ms!r}")

