"""The JetStream store: records on a replicated stream, one fenced leader, hot standbys.

See :mod:`resonate_sync.store.jetstream.store` for the layout and the roles.
"""

from .api import FencedError, JetStreamError, JsConnection, NotLeaderError
from .store import JetStreamStore

__all__ = ["FencedError", "JetStreamError", "JetStreamStore", "JsConnection", "NotLeaderError"]
