"""URLs as logs and error messages may show them.

Shared by the configuration (an invalid ``--api-nats-addr`` is echoed back), the server's log
lines and the transport's errors, so a secret is hidden the same way everywhere.
"""

from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url"]


def redact_url(url: str) -> str:
    """``url`` with its password, or its token, replaced by ``***``.

    ``nats://user:secret@host:4222`` becomes ``nats://user:***@host:4222`` (the user name helps
    to tell credentials apart and is no secret); ``nats://token@host`` becomes
    ``nats://***@host``. Works on any text, even one that is not a valid URL.
    """
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    secret_hidden = f"{user}:***" if colon else "***"
    return urlunsplit(parts._replace(netloc=f"{secret_hidden}@{host}"))
