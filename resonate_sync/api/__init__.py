"""The NATS API: envelope decoding, routing to the core, reply encoding."""

from . import envelope
from .envelope import *  # noqa: F401,F403  (the names in envelope.__all__)

__all__ = list(envelope.__all__)
