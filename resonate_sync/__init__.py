"""resonate_sync: the Resonate durable-promise server over NATS request-reply."""

__version__ = "0.1.0"
