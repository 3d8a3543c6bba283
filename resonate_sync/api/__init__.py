"""The NATS API: envelope decoding, routing to the core, reply encoding."""

from .envelope import BUSY_REPLY, SHUTTING_DOWN_REPLY, error_reply, handle

__all__ = ["handle", "error_reply", "BUSY_REPLY", "SHUTTING_DOWN_REPLY"]
