"""NATS subject syntax: what may be published to, what a pattern is, and when one matches.

Pure functions of strings, shared by the configuration (``--api-nats-subject``,
``--delivery-allow``) and the core (receivers are checked when a request names them).
"""

import re
from typing import Iterable, Optional

__all__ = ["MAX_SUBJECT_BYTES", "delivery_subject_problem", "token_problem", "pattern_problem", "subject_matches", "parse_patterns"]

MAX_SUBJECT_BYTES = 255
"""Longest subject a receiver may name. nats-server closes a connection whose control line
passes its ``max_control_line`` (4 KiB by default): one long subject would cut the server's own
connection on every delivery attempt."""

# Printable ASCII without space: nats-server splits on white space, and a control byte or
# non-ASCII character in a PUB line breaks the protocol or the subject's meaning.
_PRINTABLE = re.compile(r"[\x21-\x7e]+\Z")


def _syntax_problem(subject: str, what: str) -> Optional[str]:
    if not subject:
        return f"the {what} is empty"
    if not _PRINTABLE.match(subject):
        return f"the {what} {subject[:60]!r} holds a character outside printable ASCII (white space, control or non-ASCII)"
    if len(subject) > MAX_SUBJECT_BYTES:
        return f"the {what} is {len(subject)} bytes long; at most {MAX_SUBJECT_BYTES} are allowed"
    if "" in subject.split("."):
        return f"the {what} {subject!r} has an empty token (a leading, trailing or double dot)"
    return None


def delivery_subject_problem(subject: str) -> Optional[str]:
    """Why the server must not publish a message to ``subject`` for a client, or None if it may.

    Beyond plain syntax: no wildcards (``*``, ``>``), and nothing NATS reserves for itself
    (``$SYS``, ``$JS``, ``$KV``, ``$SRV`` … all start with ``$``) or for replies (``_INBOX``):
    the server publishes with its own identity, so a client must not borrow it to reach them.
    """
    problem = _syntax_problem(subject, "subject")
    if problem:
        return problem
    if "*" in subject or ">" in subject:
        return f"the subject {subject!r} holds a wildcard ('*' or '>'); a receiver names one literal subject"
    if subject.startswith("$"):
        return f"the subject {subject!r} starts with '$', which NATS reserves for its own APIs ($SYS, $JS, $KV, $SRV)"
    if subject.startswith("_INBOX"):
        return f"the subject {subject!r} is a reply inbox (_INBOX…), which belongs to another client's request"
    return None


def token_problem(token: str, what: str) -> Optional[str]:
    """Why ``token`` cannot be one literal token of a subject (``what`` names it), or None."""
    if not token:
        return f"the {what} is empty"
    if not _PRINTABLE.match(token):
        return f"the {what} {token[:60]!r} holds a character outside printable ASCII (white space, control or non-ASCII)"
    for char, name in ((".", "a '.'; it would split into tokens"), ("*", "a wildcard '*'"), (">", "a wildcard '>'")):
        if char in token:
            return f"the {what} {token[:60]!r} holds {name}"
    return None


def pattern_problem(pattern: str) -> Optional[str]:
    """Why ``pattern`` is not a NATS subject pattern, or None: ``*`` is a whole token, ``>`` the last one."""
    problem = _syntax_problem(pattern, "pattern")
    if problem:
        return problem
    tokens = pattern.split(".")
    for index, token in enumerate(tokens):
        if ("*" in token or ">" in token) and token not in ("*", ">"):
            return f"the pattern {pattern!r} has a wildcard inside a token ({token!r}); '*' and '>' stand alone"
        if token == ">" and index != len(tokens) - 1:
            return f"the pattern {pattern!r} has '>' before its last token"
    return None


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether the literal ``subject`` matches ``pattern`` as NATS matches subscriptions."""
    wanted = pattern.split(".")
    tokens = subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or (token != "*" and token != tokens[index]):
            return False
    return len(tokens) == len(wanted)


def parse_patterns(text: str) -> tuple:
    """``"a.>, b.*"`` → ``("a.>", "b.*")``; raises ValueError naming a bad pattern."""
    patterns = tuple(part.strip() for part in text.split(",") if part.strip())
    for pattern in patterns:
        problem = pattern_problem(pattern)
        if problem:
            raise ValueError(problem)
    return patterns


def any_match(patterns: Iterable[str], subject: str) -> bool:
    return any(subject_matches(pattern, subject) for pattern in patterns)
