"""resonate_sync: the Resonate durable-promise server over NATS request-reply.

What users may import (everything else may change):

* :class:`Resonate`: the in-process state machine (no NATS).
* :class:`Server`: the NATS server, usable as a context manager in a thread of an application.
* :class:`Client`: the synchronous, thread-safe client of a server over NATS, or, with
  ``Client(transport=LocalTransport(core))``, of a :class:`Resonate` in this process: the way
  to embed the core.
* :class:`Config` / :class:`ConfigError`: its configuration.
* The error types every layer raises: :class:`ResonateError` and its subclasses.
* For watchers of promise events (``--events-subject``): ``resonate_sync.events``'s
  ``parse_event_subject``, ``decode_token`` and ``event_token``.
"""

__version__ = "0.1.0"

from .config import Config, ConfigError  # noqa: E402
from .core import Resonate  # noqa: E402
from .errors import (  # noqa: E402
    AlreadyExists,
    BadRequest,
    Forbidden,
    InternalError,
    NotFound,
    ResonateError,
    Unavailable,
)
from .client import Client, LocalTransport  # noqa: E402
from .server import Server  # noqa: E402

__all__ = [
    "Resonate",
    "Server",
    "Client",
    "LocalTransport",
    "Config",
    "ConfigError",
    "ResonateError",
    "BadRequest",
    "Forbidden",
    "NotFound",
    "AlreadyExists",
    "InternalError",
    "Unavailable",
]
