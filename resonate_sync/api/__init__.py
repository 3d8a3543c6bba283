"""The NATS API: envelope decoding, routing to the core, reply encoding."""

from .envelope import BUSY_REPLY, ERROR_REPLY_PREFIX, SHUTTING_DOWN_REPLY, error_reply, handle, reply_error

__all__ = ["handle", "error_reply", "reply_error", "ERROR_REPLY_PREFIX", "BUSY_REPLY", "SHUTTING_DOWN_REPLY"]
