"""The NATS API: envelope decoding, routing to the core, reply encoding, and when replies leave."""

from . import envelope
from .envelope import *  # noqa: F401,F403  (the names in envelope.__all__)
from .replies import DurableReplies, Observer, RequestHandler, log_request

__all__ = [*envelope.__all__, "DurableReplies", "Observer", "RequestHandler", "log_request"]
