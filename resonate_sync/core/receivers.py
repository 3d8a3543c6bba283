"""Receivers (PROTOCOL.md 2.8, 2.9, 13.7): which ones name a NATS subject, and which may be used.

A receiver is stored with its task and resolved when the task is delivered. Receivers that
name a NATS subject (``nats://<subject>``, ``{"type": "nats", "data": {"subject": …}}``, and
their persistent forms ``nats+js://<subject>`` and ``"jetstream": true``, see :func:`is_jetstream`) are
published to with the server's own NATS identity, so they are checked when a request names
them, not at delivery: a subject that is not a literal publish subject, reaches into NATS'
own APIs (``$…``) or another client's reply inbox (``_INBOX…``), is longer than 255 bytes,
is the server's own request subject, or lies outside the operator's ``--delivery-allow``
patterns is a 400 naming the field.

The Resonate SDK's default receivers are delivered over NATS too (PROTOCOL.md 13.7), under a
prefix (``--delivery-poll-prefix``, default ``resonate.recv``): ``poll://any@G`` and
``poll://any@G/ID`` go to ``<prefix>.G``, where the workers of group G queue-subscribe (the ID
of an anycast address only names its sender), and ``poll://uni@G/ID`` goes to
``<prefix>.G.ID``. A group or id that cannot be one subject token is a 400, and the subject
they make obeys every rule above. Other receivers (``http://…``, a target name) are stored as
given, as the protocol asks; their deliveries fail and are retried.
"""

import functools
import json
from typing import Any, Mapping, Optional, Tuple

from .. import limits
from ..errors import BadRequest
from ..subjects import any_match, delivery_subject_problem, token_problem
from .common import CoreSettings

__all__ = [
    "nats_subject_of", "poll_subject_of", "is_jetstream", "receiver_problem", "check_receiver", "check_invoke_tag",
    "invoke_recv", "INVOKE_TAG",
]  # fmt: skip

INVOKE_TAG = "resonate:invoke"
_NATS_SCHEME = "nats://"
_NATS_JS_SCHEME = "nats+js://"
_POLL_SCHEME = "poll://"


def nats_subject_of(recv: Any) -> Optional[str]:
    """The NATS subject a receiver names, or None when it is not a NATS receiver.

    ``nats://`` with nothing after it, or a ``nats`` object without a string subject, names
    the empty subject (which :func:`check_receiver` refuses).
    """
    if type(recv) is str:
        if recv.startswith(_NATS_SCHEME):
            return recv[len(_NATS_SCHEME) :]
        return recv[len(_NATS_JS_SCHEME) :] if recv.startswith(_NATS_JS_SCHEME) else None
    if type(recv) is dict and recv.get("type") == "nats":
        data = recv.get("data")
        subject = data.get("subject") if type(data) is dict else None
        return subject if type(subject) is str else ""
    return None


def poll_subject_of(recv: Any, prefix: str) -> Optional[Tuple[str, Optional[str]]]:
    """``(subject, problem)`` for a ``poll://`` receiver under ``prefix``, or None for any other receiver.

    ``problem`` says why the address makes no subject (then ``subject`` is ``""``); the subject
    itself is checked by :func:`receiver_problem`. No cast means anycast, as in Go.
    """
    if type(recv) is not str or not recv.startswith(_POLL_SCHEME):
        return None
    address = recv[len(_POLL_SCHEME) :]
    cast, at, place = address.partition("@")
    if not at:
        cast, place = "any", address
    group, slash, id = place.partition("/")
    if cast not in ("any", "uni"):
        return "", f"the cast {cast[:60]!r} of a poll:// receiver is neither 'any' nor 'uni' (poll://any@<group>)"
    problem = token_problem(group, "group of the poll:// receiver")
    if problem is None and cast == "uni":
        if not slash:
            problem = "a unicast poll:// receiver needs an id: poll://uni@<group>/<id>"
        else:
            problem = token_problem(id, "id of the poll:// receiver")
    if problem is not None:
        return "", problem
    return (f"{prefix}.{group}.{id}" if cast == "uni" else f"{prefix}.{group}"), None


def is_jetstream(recv: Any) -> bool:
    """Whether a NATS receiver asks for persistent delivery: ``nats+js://<subject>`` or
    ``{"type": "nats", "data": {"subject": …, "jetstream": true}}``. Its messages are published to
    JetStream and count as sent only once a stream acknowledged them (a PubAck)."""
    if type(recv) is str:
        return recv.startswith(_NATS_JS_SCHEME)
    data = recv.get("data") if type(recv) is dict and recv.get("type") == "nats" else None
    return type(data) is dict and data.get("jetstream") is True


def receiver_problem(recv: Any, settings: CoreSettings) -> Optional[str]:
    """Why the server must not publish to ``recv``, or None (also for receivers it never publishes to)."""
    subject = nats_subject_of(recv)
    if subject is None:
        poll = poll_subject_of(recv, settings.poll_prefix)
        if poll is None:
            return None
        subject, problem = poll
        if problem is not None:
            return problem
    if not subject:
        return 'a NATS receiver needs a subject: nats://<subject> or {"type":"nats","data":{"subject":"<subject>"}}'
    if type(recv) is dict and type(recv["data"].get("jetstream", False)) is not bool:
        return f'data.jetstream must be true or false, not {json.dumps(recv["data"]["jetstream"])[:40]}'
    problem = delivery_subject_problem(subject)
    if problem is None and subject in settings.reserved_subjects:
        problem = f"the subject {subject!r} is where this server takes requests; a delivery there would be read as one"
    if problem is None and settings.delivery_allow and not any_match(settings.delivery_allow, subject):
        problem = (
            f"the subject {subject!r} is outside the subjects this server delivers to "
            f"(--delivery-allow {','.join(settings.delivery_allow)})"
        )
    return problem


def check_receiver(recv: Any, field: str, settings: CoreSettings) -> None:
    """400 naming ``field`` unless the server may deliver to ``recv`` (see the module docstring)."""
    problem = receiver_problem(recv, settings)
    if problem is not None:
        raise BadRequest(f"validation error: {field}: {problem}")


def invoke_recv(tags: Mapping[str, str]) -> Any:
    """The receiver named by a ``resonate:invoke`` tag, or None when the tag does not match (2.9).

    A value that is valid JSON counts only as a physical receiver: an object with a non-empty
    ``type`` and no keys but ``type``/``data``. Any other valid JSON (``"\\"foo\\""``, ``123``)
    is no match. A string that is not JSON (``poll://any@default``) is a logical receiver.
    JSON that breaks the request limit (``limits``) is a 400: it would be stored as a receiver.
    """
    value = tags.get(INVOKE_TAG)
    return None if value is None else _tag_receiver(value)


# A create with an invoke tag reads it twice: once when validated (outside the lock) and once
# when its task is made (inside). Cached, the second costs a lookup. The receivers returned are
# shared and never changed (stored receivers are read-only, like every stored object).
@functools.lru_cache(maxsize=1024)
def _tag_receiver(value: str) -> Any:
    try:
        decoded = limits.loads(value, root=f"payload.tags.{INVOKE_TAG}", depth=limits.PAYLOAD_DEPTH)
    except limits.JsonLimitError as exc:
        if exc.kind == "constant":  # NaN/Infinity are not JSON (RFC 8259, Go): a logical receiver
            return value
        raise BadRequest(f"invalid payload: {exc}") from None
    except ValueError:
        return value
    if (
        isinstance(decoded, dict)
        and isinstance(decoded.get("type"), str)
        and decoded["type"]
        and set(decoded) <= {"type", "data"}
    ):
        return decoded
    return None


def check_invoke_tag(tags: Mapping[str, str], settings: CoreSettings) -> None:
    """400 unless the ``resonate:invoke`` tag, if any, names a receiver the server may use."""
    if INVOKE_TAG in tags:
        check_receiver(invoke_recv(tags), f"payload.tags.{INVOKE_TAG}", settings)

