"""Hostile input against ``resonate serve`` over a real nats-server (the hardening issue).

The server runs as a child process (``resonate serve`` with a journal in a tmp dir, see
:class:`test_crash.Serve`): a request that freezes or kills it fails these tests instead of
hanging the test run. Requests go out as raw bytes from nats-py, so they can carry what a
JSON library would refuse to write (``NaN``, ``1e400``, lone surrogates, 100,000 levels).

The contract asserted (PROTOCOL.md 1.3, 13.7 and Appendix A, as the hardening issue states it):

* every request gets exactly one reply, a 2xx success or a 400/403/404/409 error: never a
  5xx for client data, never silence (a request timeout is a failure);
* one limit on nesting depth and number magnitude for the whole envelope, checked at decode
  time: 400 whose message names the field path. Depth counts nested containers (``{}`` is one
  level, the envelope object is level 1), the limit is ``resonate_sync.limits.MAX_JSON_DEPTH``;
  a document exactly at the limit is accepted where the field takes an object (``recv``).
  NaN, ±Infinity and floats that overflow a double are out; so are integers outside
  [-(2**63), 2**64-1] in free-form JSON and outside int64 in integer fields;
* a NATS receiver must name a valid publish subject, else 400 naming the field;
* star-heavy search patterns answer (correctly) and the server keeps answering;
* impossible cron expressions are a 400 naming ``cron``;
* a promise too big for any reply is refused at create time, search pages are cut by size;
* after all of it the server still works, and a restart recovers every acknowledged promise;
* the same requests as MessagePack (``Content-Type: application/msgpack``) get the same verdicts,
  answered in MessagePack: every case MessagePack can carry is sent both ways, and what only
  MessagePack can carry (bin, ext, timestamps, keys that are not strings, NaN, the decoder's own
  nesting limit) is a 400 naming the field.

Field tables are generated from ``OPERATIONS`` and ``wire_names``: every field of every
operation gets every hostile value, batched into one test per operation and value family.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import attrs
import msgpack
import pytest

from resonate_sync.core import OPERATIONS
from resonate_sync.models import StrMap, Value, wire_names
from resonate_sync.transport.embedded import EmbeddedNatsServer

from helpers import FAR, uid
from natsclient import NatsPyClient
from test_crash import Serve


def max_depth() -> int:
    """The server's nesting limit (imported where needed, so a missing module fails only the tests that use it)."""
    from resonate_sync.limits import MAX_JSON_DEPTH

    return MAX_JSON_DEPTH


# ------------------------------------------------------------------------------------------
# talking to a server


ERROR_CODES = (400, 403, 404, 409)
IN_FLIGHT = 64  # well below the server's max_pending: a 503 "queue full" would be our doing
Reply = Union[bytes, BaseException]


@attrs.frozen
class Case:
    """One hostile request and what its reply must be.

    Attributes:
        name: readable, for failure messages (``promises.create payload.timeout = 2**63``).
        raw: the request bytes.
        verdict: one of the verdict constants below.
        path: what a 400's message must contain (``payload.recv``), when the verdict names one.
    """

    name: str
    raw: bytes
    verdict: str
    path: str = ""


ANSWERED = "a 2xx or 4xx reply"
NAMED = "a 400 naming the field"
ACCEPTED = "a 2xx reply"
DECODED = "a 2xx or 4xx reply that is not a 400 naming the field"
NAMED_OR_ACCEPTED = "a 2xx reply or a 400 naming the field"
REFUSED = "a 400 reply"


def problem(case: Case, reply: Reply) -> Optional[str]:
    """Why ``reply`` breaks ``case.verdict``, or None."""
    if isinstance(reply, BaseException):
        return f"no reply ({type(reply).__name__}: {reply})"
    try:
        document = decode(reply)
    except ValueError:
        return f"the reply is not JSON or MessagePack: {reply[:200]!r}"
    if type(document) is not dict or type(document.get("success")) is not bool:
        return f"not a reply envelope: {reply[:200]!r}"
    if document["success"]:
        if document.get("response", {}).get("Status") not in (20000, 20100, 20400):
            return f"a success without a 2xx Status: {reply[:200]!r}"
        if case.verdict in (NAMED, REFUSED):
            wanted = f"a 400 naming {case.path!r}" if case.verdict == NAMED else case.verdict
            return f"expected {wanted}, got Status {document['response']['Status']}"
        return None
    error = document.get("error")
    if type(error) is not dict or type(error.get("message")) is not str or not error["message"]:
        return f"an error envelope without code and message: {reply[:200]!r}"
    code, message = error.get("code"), error["message"]
    if code not in ERROR_CODES:
        return f"code {code!r}: {message[:300]}"
    named = code == 400 and case.path in message
    if case.verdict == ACCEPTED:
        return f"expected a 2xx reply, got {code}: {message[:300]}"
    if case.verdict == REFUSED and code != 400:
        return f"expected 400, got {code}: {message[:300]}"
    if case.verdict in (NAMED, NAMED_OR_ACCEPTED) and not named:
        return f"expected a 400 naming {case.path!r}, got {code}: {message[:300]}"
    if case.verdict == DECODED and named:
        return f"a valid value was refused: {message[:300]}"
    return None


def assert_replies(cases: Sequence[Case], replies: Sequence[Reply]) -> None:
    """Every reply keeps its case's verdict; the failure lists the broken cases, one a line."""
    broken = [f"{case.name}: {why}" for case, reply in zip(cases, replies) if (why := problem(case, reply))]
    shown = "\n  ".join(broken[:40])
    more = f"\n  … and {len(broken) - 40} more" if len(broken) > 40 else ""
    assert not broken, f"{len(broken)} of {len(cases)} requests broke the contract:\n  {shown}{more}"


MSGPACK = {"Content-Type": "application/msgpack"}
_MSGPACK_MAPS = frozenset((*range(0x80, 0x90), 0xDE, 0xDF))


def decode(reply: bytes) -> Any:
    """A reply, JSON or MessagePack (which starts with a map's first byte, never ``{``)."""
    if reply[:1] and reply[0] in _MSGPACK_MAPS:
        try:
            return msgpack.unpackb(reply, strict_map_key=False, unicode_errors="surrogatepass")
        except Exception as exc:
            raise ValueError(str(exc)) from None
    return json.loads(reply)


def as_msgpack(raw: bytes) -> Optional[bytes]:
    """The JSON request ``raw`` as MessagePack, or None when MessagePack cannot carry it (integers
    past 64 bits, bytes that are not UTF-8 JSON or nested too deep for Python's decoder). NaN and overflowing
    floats become MessagePack floats, lone surrogates UTF-8-style bytes."""
    try:
        text = raw.decode("utf-8")  # as the server reads JSON: json.loads(bytes) would take UTF-16 too
        return msgpack.packb(json.loads(text, parse_constant=float), unicode_errors="surrogatepass")
    except (ValueError, RecursionError, OverflowError):
        return None


def in_msgpack(cases: Sequence[Case]) -> List[Case]:
    """Every case MessagePack can carry, as MessagePack, with the same verdict."""
    converted = ((case, as_msgpack(case.raw)) for case in cases)
    return [attrs.evolve(case, raw=raw, name=f"{case.name} (msgpack)") for case, raw in converted if raw is not None]


def request_bytes(operation: Any, payload: Any, **envelope: Any) -> bytes:
    return json.dumps({"operation": operation, "payload": payload, **envelope}).encode()


def payload_text(fields: Dict[str, Any], field: str, fragment: str) -> str:
    """A payload object as JSON text: ``fields`` without ``field``, then ``field`` set to the raw ``fragment``."""
    parts = [f"{json.dumps(k)}:{json.dumps(v)}" for k, v in fields.items() if k != field]
    parts.append(f"{json.dumps(field)}:{fragment}")
    return "{" + ",".join(parts) + "}"


def envelope_bytes(operation: str, payload: str) -> bytes:
    return ('{"operation":' + json.dumps(operation) + ',"payload":' + payload + "}").encode()


def promises_in(document: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """Every promise object a success reply shows."""
    payload = document["response"].get("Payload") or {}
    for key in ("promise", "rootPromise", "leafPromise"):
        if isinstance(payload.get(key), dict):
            yield payload[key]
    yield from payload.get("promises") or ()


IMMUTABLE = ("id", "param", "timeout", "tags", "createdOn", "idempotencyKeyForCreate")


class Target:
    """A ``resonate serve`` process and a nats-py client, remembering every promise the server acknowledged."""

    def __init__(self, serve: Serve, client: NatsPyClient) -> None:
        self.serve = serve
        self.client = client
        self.acknowledged: Dict[str, Dict[str, Any]] = {}  # id -> the promise as first shown

    @property
    def subject(self) -> str:
        return self.serve.subject

    def exchange(self, raws: Sequence[bytes], timeout: float = 10.0, headers: Optional[Dict[str, str]] = None) -> List[Reply]:
        """Send every request (at most IN_FLIGHT at a time), with ``headers``; each reply's bytes, or the
        exception its request raised. A reply to a MessagePack request must say it is MessagePack."""
        nc, subject = self.client.nc, self.subject
        wanted = (headers or {}).get("Content-Type")

        async def gather() -> List[Reply]:
            gate = asyncio.Semaphore(IN_FLIGHT)

            async def one(raw: bytes) -> Reply:
                async with gate:
                    try:
                        reply = await nc.request(subject, raw, timeout=timeout, headers=headers)
                    except Exception as exc:
                        return exc
                    got = (reply.headers or {}).get("Content-Type")
                    if got != wanted:
                        return AssertionError(f"a reply with Content-Type {got!r}, not {wanted!r}: {reply.data[:100]!r}")
                    return reply.data

            return await asyncio.gather(*(one(raw) for raw in raws))

        replies = self.client.run(gather(), timeout=timeout * (len(raws) // IN_FLIGHT + 2) + 30)
        for reply in replies:
            self._remember(reply)
        return replies

    def _remember(self, reply: Reply) -> None:
        if isinstance(reply, BaseException):
            return
        try:
            document = decode(reply)
            if document.get("success") is not True:
                return
        except (ValueError, AttributeError):
            return
        for promise in promises_in(document):
            self.acknowledged.setdefault(promise["id"], promise)

    def check(self, cases: Sequence[Case], timeout: float = 10.0, headers: Optional[Dict[str, str]] = None) -> None:
        assert_replies(cases, self.exchange([case.raw for case in cases], timeout, headers))

    def call(self, operation: str, payload: Any, **envelope: Any) -> Dict[str, Any]:
        """One request; the decoded reply (a missing reply fails the test)."""
        (reply,) = self.exchange([request_bytes(operation, payload, **envelope)])
        assert not isinstance(reply, BaseException), f"no reply to {operation}: {reply!r}"
        return json.loads(reply)

    def ok(self, operation: str, payload: Any, **envelope: Any) -> Dict[str, Any]:
        """One request that must succeed; its Payload."""
        reply = self.call(operation, payload, **envelope)
        assert reply.get("success") is True, f"{operation} {str(payload)[:200]}: {reply}"
        return reply["response"]["Payload"]

    def read_all(self, ids: Sequence[str]) -> Dict[str, Any]:
        """promises.read of every id: id -> the promise, or the reply that was not a success."""
        replies = self.exchange([request_bytes("promises.read", {"id": pid}) for pid in ids])
        found: Dict[str, Any] = {}
        for pid, reply in zip(ids, replies):
            document = None if isinstance(reply, BaseException) else json.loads(reply)
            found[pid] = document["response"]["Payload"]["promise"] if document and document["success"] else reply
        return found

    def restart(self, graceful: bool) -> None:
        """Stop (SIGTERM, or kill -9) and start again on the same store; the server must come up."""
        if graceful:
            try:
                self.serve.stop()
            except subprocess.TimeoutExpired:
                self.serve.kill()
        else:
            self.serve.kill()
        self.serve.start().ready(self.client)

    def assert_recovers_acknowledged(self) -> None:
        """Restart killed (the journal is replayed), then stopped (the final snapshot is read): every
        promise acknowledged so far reads back as just before, and as it was first shown."""
        ids = sorted(self.acknowledged)
        before = self.read_all(ids)
        unread = [f"{pid[:40]!r}: {str(view)[:200]}" for pid, view in before.items() if not isinstance(view, dict)]
        assert not unread, f"{len(unread)} acknowledged promises did not read back before the restart, e.g. {unread[:5]}"
        for graceful in (False, True):
            self.restart(graceful)
            after = self.read_all(ids)
            changed = [pid[:40] for pid in ids if after[pid] != before[pid]]
            how = "stop" if graceful else "kill -9"
            assert not changed, f"{len(changed)} promises read back differently after a {how}: {changed[:10]}"
        for pid in ids:
            first = self.acknowledged[pid]
            assert {k: before[pid].get(k) for k in IMMUTABLE} == {k: first.get(k) for k in IMMUTABLE}, pid[:40]


def start_target(tmp_path: Path, url: str, *extra: str) -> Target:
    client = NatsPyClient(url)
    return Target(Serve(tmp_path, url, None, *extra).start().ready(client), client)


def stop_target(target: Target) -> None:
    target.serve.close()
    target.client.close()


@pytest.fixture(scope="module", params=["file", "jetstream"])
def target(request, tmp_path_factory, shared_nats_server) -> Iterator[Target]:
    """One server for the module's hostile run, once on each store kind; the survival checks at the
    end of the module restart it (on JetStream: a new replica recovering from the stream, after the
    killed one's 1 s lease lapsed)."""
    if request.param == "file":
        started = start_target(tmp_path_factory.mktemp("hostile"), shared_nats_server.url)
        yield started
        stop_target(started)
        return
    js = tmp_path_factory.mktemp("hostile-js")
    with EmbeddedNatsServer(extra_args=["-js", "-sd", str(js / "nats")]) as nats_server:
        started = start_target(js, nats_server.url, "--store-kind", "jetstream", "--store-jetstream-lease", "1s")
        yield started
        stop_target(started)


@pytest.fixture
def fresh(tmp_path, shared_nats_server) -> Iterator[Target]:
    """A server of this test's own (for attacks that could wreck a shared one)."""
    started = start_target(tmp_path, shared_nats_server.url)
    yield started
    stop_target(started)


# ------------------------------------------------------------------------------------------
# hostile values


def nest(levels: int, kind: str = "{}") -> str:
    """JSON text of ``levels`` nested containers (``{}`` alone is one level)."""
    if kind == "[]":
        return "[" * levels + "]" * levels
    return '{"d":' * (levels - 1) + "{}" + "}" * (levels - 1)


def open_containers(text: str) -> int:
    """Containers still open at the end of ``text`` (our templates put no brackets inside strings)."""
    return sum(text.count(c) for c in "{[") - sum(text.count(c) for c in "}]")


LONG = "x" * 100_000  # a multiple of 4 'x's is valid base64 too
OUT_OF_LIMITS = frozenset(
    (
        "NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "-1e400",
        "5000-digit integer",
        "-(2**63)-1",
        "2**64",
        "one past the depth limit {}",
        "one past the depth limit []",
        "100,000 levels",
    )
)
STRINGS = frozenset(("string", "lone high surrogate", "lone low surrogate", "NUL", "control characters", "100 KB string"))


FIXED_FRAGMENTS = {  # family -> name -> JSON text
    "types": {"string": '"s"', "int": "7", "bool": "true", "null": "null", "array": '["a"]', "object": '{"a":"b"}', "float": "1.5"},
    "numbers": {
        "NaN": "NaN",
        "Infinity": "Infinity",
        "-Infinity": "-Infinity",
        "1e400": "1e400",
        "-1e400": "-1e400",
        "1e308": "1e308",
        "5000-digit integer": "9" * 5000,
        "int64 max": str(2**63 - 1),
        "int64 min": str(-(2**63)),
        "2**63": str(2**63),
        "-(2**63)-1": str(-(2**63) - 1),
        "2**64-1": str(2**64 - 1),
        "2**64": str(2**64),
    },
    "strings": {
        "lone high surrogate": '"\\ud800"',
        "lone low surrogate": '"a\\udfffb"',
        "NUL": '"a\\u0000b"',
        "control characters": '"\\u0001\\u001f\\u007f\\u2028"',
        "100 KB string": json.dumps(LONG),
    },
}


def fragments(family: str, slot_depth: int, top_level: bool) -> List[Tuple[str, str]]:
    """(name, JSON text) of one family of hostile values for a slot ``slot_depth`` containers deep."""
    if family != "depth":
        return list(FIXED_FRAGMENTS[family].items())
    limit = max_depth()
    values = [
        ("at the depth limit", nest(limit - slot_depth)),
        ("one past the depth limit {}", nest(limit - slot_depth + 1)),
        ("one past the depth limit []", nest(limit - slot_depth + 1, "[]")),
    ]
    if top_level:  # 200 KB each: only where the field itself takes it
        values.append(("100,000 levels", nest(100_000, "[]")))
    return values


FAMILIES = ("types", "numbers", "depth", "strings")
RANGE_CHECKED = frozenset(("limit",))  # integer fields whose own rule refuses 2**63-1


def expected(kind: str, fragment: str, wire: str) -> str:
    """The verdict for a hostile value in a slot of ``kind`` (see :func:`slots`)."""
    if fragment in OUT_OF_LIMITS:
        return NAMED
    if kind == "free":  # free-form JSON inside a receiver: anything within the limits is stored
        return ACCEPTED
    if kind == "recv":
        if fragment in STRINGS:
            return ANSWERED  # a logical receiver
        return ACCEPTED if fragment in ("object", "at the depth limit") else NAMED
    if fragment == "null":
        return ANSWERED  # Go decodes null into the zero value
    if kind == "str":
        return ANSWERED if fragment in STRINGS else NAMED
    if kind == "b64":
        return ANSWERED if fragment == "100 KB string" else NAMED
    if kind == "int":
        if fragment == "int64 max":
            return ANSWERED if wire in RANGE_CHECKED else DECODED
        return ANSWERED if fragment in ("int", "int64 min") else NAMED
    if kind == "bool":
        return ANSWERED if fragment == "bool" else NAMED
    if kind == "strmap":
        return ANSWERED if fragment == "object" else NAMED
    if kind == "strlist":
        return ANSWERED if fragment == "array" else NAMED
    assert kind == "value", kind
    return ANSWERED if fragment in ("object", "at the depth limit") else NAMED


def field_kind(annotation: Any) -> str:
    kinds = {str: "str", int: "int", bool: "bool", Value: "value", Any: "recv"}
    if annotation in kinds:
        return kinds[annotation]
    if annotation == StrMap:
        return "strmap"
    if annotation == List[str]:
        return "strlist"
    raise AssertionError(f"no hostile table for a field of type {annotation!r}")


def slots(kind: str) -> List[Tuple[str, str, str]]:
    """Where a hostile value goes in a field of ``kind``: (path suffix, template with @ for the value, slot kind)."""
    nested = {
        "strmap": [("", '{"k":@}', "str")],
        "strlist": [("", "[@]", "str")],
        "value": [(".data", '{"data":@}', "b64"), (".headers", '{"headers":@}', "strmap"), (".headers", '{"headers":{"h":@}}', "str")],
        "recv": [("", '{"type":"x","data":{"v":@}}', "free")],
    }
    return [("", "@", kind)] + nested.get(kind, [])


def request_fields(operation: str) -> List[Tuple[str, str]]:
    """(wire name, kind) of every payload field of ``operation``."""
    cls = OPERATIONS[operation].request_type
    names = wire_names(cls)
    return [(names[a.name], field_kind(a.type)) for a in attrs.fields(cls)]


# Base payloads: every field valid, so a reply speaks about the hostile field alone. Values come
# from the field's kind; these fields have rules of their own.
LEAF, ROOT = "hostile-leaf", "hostile-root"
INVOKE = {"resonate:invoke": "poll://any@default"}
SEMANTIC = {
    "state": "RESOLVED",
    "cron": "0 0 1 1 *",
    "recv": "poll://any@default",
    "counter": 1,
    "limit": 10,
    "cursor": "",
    "timeout": FAR,
    "taskTimeout": FAR,
}
BY_KIND = {"int": 60_000, "bool": False, "strmap": {"hostile": "yes"}, "strlist": [], "value": {"headers": {"h": "v"}, "data": "aGk="}}
_counter = itertools.count()


def base_payload(operation: str) -> Tuple[Dict[str, Any], List[bytes]]:
    """A valid payload for ``operation`` with fresh ids, and the requests that make its target exist."""
    n = next(_counter)
    fresh_id = f"h{n}-{uuid.uuid4().hex[:8]}"
    payload: Dict[str, Any] = {}
    for wire, kind in request_fields(operation):
        if wire in SEMANTIC:
            payload[wire] = SEMANTIC[wire]
        elif kind == "str":
            payload[wire] = f"{fresh_id}-{wire}"
        else:
            payload[wire] = BY_KIND[kind]
    setup: List[bytes] = []
    promise = {"id": fresh_id, "timeout": FAR}
    if operation == "promises.callback":  # a root of its own: each request registers a new callback
        payload["promiseId"] = LEAF
    elif operation == "promises.subscribe":
        payload["promiseId"] = LEAF
    elif operation == "promises.createtask":
        payload["tags"] = INVOKE
    elif operation in ("promises.read", "promises.complete"):
        payload["id"] = fresh_id
        setup.append(request_bytes("promises.create", promise))
    elif operation == "tasks.claim":
        payload["id"] = f"__invoke:{fresh_id}"
        setup.append(request_bytes("promises.create", {**promise, "tags": INVOKE}))
    elif operation in ("tasks.complete", "tasks.drop"):
        payload["id"] = f"__invoke:{fresh_id}"
        task = {**promise, "tags": INVOKE, "taskProcessId": "hostile-worker", "taskTtl": 600_000}
        setup.append(request_bytes("promises.createtask", task))
    elif operation in ("schedules.read", "schedules.delete"):
        setup.append(request_bytes("schedules.create", {"id": payload["id"], "cron": "0 0 1 1 *", "promiseId": fresh_id}))
    elif operation == "locks.release":
        lock = {"resourceId": payload["resourceId"], "executionId": payload["executionId"], "processId": "p", "ttl": 600_000}
        setup.append(request_bytes("locks.acquire", lock))
    return payload, setup


def field_cases(operation: str, family: str) -> Tuple[List[Case], List[bytes]]:
    """Every hostile value of ``family`` in every slot of every field of ``operation``, and their setup requests."""
    cases: List[Case] = []
    setup: List[bytes] = []
    for wire, kind in request_fields(operation):
        for suffix, template, slot_kind in slots(kind):
            before = template.split("@")[0]
            depth = 2 + open_containers(before)  # the envelope and the payload enclose every field
            for name, fragment in fragments(family, depth, top_level=template == "@"):
                payload, needs = base_payload(operation)
                setup += needs
                raw = envelope_bytes(operation, payload_text(payload, wire, template.replace("@", fragment)))
                where = f"payload.{wire}{suffix}"
                shown = where if template == "@" else f"{where} in {template}"
                cases.append(Case(f"{operation} {shown} = {name}", raw, expected(slot_kind, name, wire), where))
    return cases, setup


# ------------------------------------------------------------------------------------------
# the hostile run (one server): every field, every family


@pytest.fixture(scope="module")
def pending_pair(target) -> Tuple[str, str]:
    """The pending leaf and root promises that callback and subscribe payloads point at."""
    for pid in (LEAF, ROOT):
        target.ok("promises.create", {"id": pid, "timeout": FAR})
    return LEAF, ROOT


class TestEveryField:
    @pytest.mark.parametrize("encoding", ["json", "msgpack"])
    @pytest.mark.parametrize("family", FAMILIES)
    @pytest.mark.parametrize("operation", sorted(OPERATIONS))
    def test_hostile_values(self, target, pending_pair, operation, family, encoding):
        """Every hostile value in every field gets one 2xx or 4xx reply; values out of type or limits are a
        400 naming the field; the same in MessagePack for every value it can carry."""
        cases, setup = field_cases(operation, family)
        prepared = target.exchange(setup)
        assert all(not isinstance(r, BaseException) and json.loads(r)["success"] for r in prepared), "setup failed"
        if encoding == "json":
            target.check(cases)
            return
        carried = in_msgpack(cases)
        assert len(carried) >= len(cases) // 2, "most hostile values fit in MessagePack"
        target.check(carried, headers=MSGPACK)


def raw_cases(family: Dict[str, Tuple[bytes, str]], path: str = "") -> List[Case]:
    return [Case(name, raw, verdict, path) for name, (raw, verdict) in family.items()]


READ = '{"operation":"promises.read","payload":{"id":"hostile-missing"}'
SEARCH = '"operation":"promises.search","payload":{"id":"hostile-*","limit":1}'


def envelope_attacks() -> Dict[str, Tuple[bytes, str]]:
    """Whole-envelope attacks: name -> (raw request, verdict)."""
    limit = max_depth()
    read = READ.encode()
    attacks = {
        "empty message": (b"", REFUSED),
        "not JSON": (b"not json", REFUSED),
        "truncated JSON": (read, REFUSED),
        "not UTF-8": (b'{"operation":"promises.read","payload":{"id":"\xff\xfe"}}', REFUSED),
        "UTF-8 encoded surrogate": (b'{"operation":"promises.read","payload":{"id":"\xed\xa0\x80"}}', REFUSED),
        "overlong UTF-8": (b'{"operation":"promises.read","payload":{"id":"\xc0\xaf"}}', REFUSED),
        "UTF-16": (f"{READ}}}".encode("utf-16"), REFUSED),
        "UTF-8 byte order mark": (b"\xef\xbb\xbf" + read + b"}", ANSWERED),
        "raw control character in a string": (b'{"operation":"promises.read","payload":{"id":"a\x01b"}}', REFUSED),
        "top-level array": (b"[" + read + b"}]", REFUSED),
        "top-level string": (b'"promises.read"', REFUSED),
        "top-level number": (b"1", REFUSED),
        "top-level null": (b"null", REFUSED),
        "top-level NaN": (b"NaN", REFUSED),
        "100,000 levels at the top": (nest(100_000, "[]").encode(), REFUSED),
        "payload missing": (b'{"operation":"promises.read"}', REFUSED),
        "payload an array": (b'{"operation":"promises.read","payload":["id"]}', REFUSED),
        "payload a string": (b'{"operation":"promises.read","payload":"id"}', REFUSED),
        "payload a number": (b'{"operation":"promises.read","payload":1}', REFUSED),
        "payload true": (b'{"operation":"promises.read","payload":true}', REFUSED),
        "payload null": (b'{"operation":"promises.read","payload":null}', ANSWERED),
        "payload nested 100,000 levels": (b'{"operation":"promises.read","payload":' + nest(100_000, "[]").encode() + b"}", REFUSED),
        "operation missing": (b'{"payload":{}}', REFUSED),
        "duplicate keys": (b'{"operation":"promises.read","operation":"promises.nope","payload":{"id":"x"}}', ANSWERED),
        "an unknown field past the depth limit": (read + b',"x":' + nest(limit).encode() + b"}", REFUSED),
        "an unknown field holding 1e400": (read + b',"x":1e400}', REFUSED),
        "an unknown field holding NaN": (read + b',"x":NaN}', REFUSED),
        "50,000 payload keys": (
            ('{"operation":"promises.read","payload":{' + ",".join(f'"k{i}":{i}' for i in range(50_000)) + ',"id":"x"}}').encode(),
            ANSWERED,
        ),
    }
    operations = {
        "unknown": "promises.nope",
        "empty": "",
        "upper case": "PROMISES.READ",
        "with a space": " promises.read",
        "with NUL": "promises.read\x00",
        "lone surrogate": "\ud800",
        "100 KB": LONG,
        "a number": 5,
        "null": None,
        "an array": ["promises.read"],
        "an object": {"name": "promises.read"},
        "true": True,
    }
    for name, operation in operations.items():
        attacks[f"operation {name}"] = (request_bytes(operation, {"id": "x"}), REFUSED)
    attacks["operation NaN"] = (b'{"operation":NaN,"payload":{"id":"x"}}', REFUSED)
    for name, request_id in {"a number": 5, "an array": ["r"], "an object": {"r": "r"}, "true": True}.items():
        attacks[f"requestId {name}"] = (request_bytes("promises.read", {"id": "x"}, requestId=request_id), REFUSED)
    attacks["requestId 1e400"] = (read + b',"requestId":1e400}', REFUSED)
    for name, request_id in {"100 KB": LONG, "lone surrogate": "\ud800", "NUL": "a\x00b"}.items():
        raw = b'{"requestId":' + json.dumps(request_id).encode() + b"," + SEARCH.encode() + b"}"
        attacks[f"requestId {name} (echoed)"] = (raw, ANSWERED)
    metadata = {
        "a string": "m",
        "an array": ["m"],
        "a number": 5,
        "true": True,
        "a number value": {"a": 1},
        "a null value": {"a": None},
        "an object value": {"a": {"b": "c"}},
        "an array value": {"a": ["b"]},
    }
    for name, value in metadata.items():
        attacks[f"metadata {name}"] = (request_bytes("promises.read", {"id": "x"}, metadata=value), REFUSED)
    attacks["metadata NaN value"] = (read + b',"metadata":{"a":NaN}}', REFUSED)
    attacks["metadata nested 100,000 levels"] = (read + b',"metadata":' + nest(100_000, "[]").encode() + b"}", REFUSED)
    for name, value in {"100 KB value": LONG, "lone surrogate traceparent": "\ud800", "NUL value": "a\x00b"}.items():
        key = "traceparent" if "traceparent" in name else "m"
        raw = b'{"metadata":' + json.dumps({key: value}).encode() + b"," + SEARCH.encode() + b"}"
        attacks[f"metadata {name} (echoed)"] = (raw, ANSWERED)
    return attacks


def msgpack_attacks() -> List[Case]:
    """What only MessagePack can carry, or break: each a 400 (naming the field where there is one)."""
    limit = max_depth()
    pack = msgpack.packb

    def read(**payload: Any) -> Dict[str, Any]:
        return {"operation": "promises.read", "payload": {"id": "x", **payload}}

    def raw_read(field: bytes) -> bytes:  # {"operation": "promises.read", "payload": {"id": "x", "f": <field>}}
        return b"\x82\xa9operation\xadpromises.read\xa7payload\x82\xa2id\xa1x\xa1f" + field

    named = {
        "bin in payload.param.data": (pack({"operation": "promises.create", "payload": {"id": "x", "timeout": FAR, "param": {"data": b"hi"}}}), "payload.param.data"),
        "bin in payload.id": (pack(read(id=b"x")), "payload.id"),
        "ext in payload.f": (pack(read(f=msgpack.ExtType(5, b"x"))), "payload.f"),
        "timestamp in payload.f": (pack(read(f=msgpack.Timestamp(1, 0))), "payload.f"),
        "NaN in payload.f": (pack(read(f=float("nan"))), "payload.f"),
        "-Infinity in payload.f[1]": (pack(read(f=[1, float("-inf")])), "payload.f[1]"),
        "32-bit NaN in payload.f": (raw_read(b"\xca\x7f\xc0\x00\x00"), "payload.f"),
        "an int key in payload.f": (pack(read(f={1: "a"})), "payload.f"),
        "a bin key in payload.f": (pack(read(f={b"k": "a"})), "payload.f"),
        "an array key in payload.f": (raw_read(b"\x81\x91\x01\xa1v"), "payload.f"),
        "a map key in payload.f": (raw_read(b"\x81\x80\xa1v"), "payload.f"),
        "one past the depth limit in payload.f": (raw_read(b"\x91" * (limit - 1) + b"\xc0"), "payload.f"),
        "100,000 levels in payload.f": (raw_read(b"\x91" * 100_000 + b"\xc0"), "payload.f"),
        "100,000 map levels in payload.f": (raw_read(b"\x81\xa1d" * 100_000 + b"\xc0"), "payload.f"),
        "NaN in metadata": (pack({**read(), "metadata": {"a": float("nan")}}), "metadata.a"),
        "bin requestId": (pack({**read(), "requestId": b"r"}), "requestId"),
        "100,000 levels at the top": (b"\x91" * 100_000 + b"\xc0", ""),
    }
    refused = {
        "reserved byte 0xc1": b"\xc1",
        "truncated": pack(read())[:-1],
        "trailing bytes": pack(read()) + b"\xc0",
        "a string header longer than the message": b"\xdb\xff\xff\xff\xff",
        "a map header of 2**32-1 entries": b"\xdf\xff\xff\xff\xff",
        "not UTF-8": raw_read(b"\xa2\xff\xfe"),
        "JSON text": b'{"operation":"promises.read","payload":{"id":"x"}}',
        "requestId of 600 bytes": pack({**read(), "requestId": "r" * 600}),
        "metadata of 3,000 bytes": pack({**read(), "metadata": {"m": "x" * 3000}}),
    }
    answered = {
        "at the depth limit in payload.f": (raw_read(b"\x91" * (limit - 2) + b"\xc0"), ANSWERED),
        "a lone surrogate id (UTF-8-style bytes)": (pack(read(id="a\ud800"), unicode_errors="surrogatepass"), ANSWERED),
        "2**64-1 in payload.f": (pack(read(f=2**64 - 1)), ANSWERED),
        "int64 min in payload.f": (pack(read(f=-(2**63))), ANSWERED),
    }
    cases = [Case(f"msgpack {name}", raw, NAMED, path) for name, (raw, path) in named.items()]
    cases += [Case(f"msgpack {name}", raw, REFUSED) for name, raw in refused.items()]
    cases += [Case(f"msgpack {name}", raw, verdict) for name, (raw, verdict) in answered.items()]
    return cases


class TestEnvelope:
    def test_envelope_attacks(self, target):
        """Malformed or hostile envelopes get one 400 (or, where harmless, any 2xx/4xx) reply each."""
        target.check(raw_cases(envelope_attacks()))

    def test_envelope_attacks_in_msgpack(self, target):
        """The same envelopes as MessagePack, where it can carry them, get the same verdicts, in MessagePack."""
        cases = raw_cases(envelope_attacks())
        carried = in_msgpack(cases)
        assert len(carried) >= len(cases) // 2, "most envelope attacks fit in MessagePack"
        target.check(carried, headers=MSGPACK)

    def test_what_only_msgpack_carries(self, target):
        """Bin, ext, timestamps, keys that are not strings, NaN and nesting past the limit (even past the
        decoder's own) are a 400 naming the field; broken MessagePack is a 400; all answered in MessagePack."""
        target.check(msgpack_attacks(), headers=MSGPACK)


# ------------------------------------------------------------------------------------------
# receivers


def subjects(own: str) -> Dict[str, str]:
    """Subjects a NATS receiver must not name: readable name -> subject."""
    return {
        "$SYS.x": "$SYS.x",
        "$JS.API.STREAM.LIST": "$JS.API.STREAM.LIST",
        "$KV.b.k": "$KV.b.k",
        "_INBOX.abc": "_INBOX.abc",
        "a.*": "a.*",
        "a.>": "a.>",
        "*": "*",
        ">": ">",
        "a NUL": "a\x00b",
        "a space": "a b",
        "a tab": "a\tb",
        "a newline": "a\nb",
        "ü.x": "ü.x",
        "a..b": "a..b",
        "leading dot": ".a",
        "trailing dot": "a.",
        "empty": "",
        "256 bytes": "a" * 256,
        "5,000 bytes": "a" * 5000,
        "the server's own subject": own,
    }


def receivers(subject: str) -> Dict[str, Any]:
    """The two spellings of a NATS receiver: form name -> recv value."""
    return {"nats://": f"nats://{subject}", "{type: nats}": {"type": "nats", "data": {"subject": subject}}}


def receiver_cases(target: Target, subject: str, verdict: str) -> List[Case]:
    """``subject`` as a receiver in every place one goes: callback and subscribe ``recv``, the invoke tag of create and createtask."""
    cases = []
    for form, recv in receivers(subject).items():
        tag = recv if isinstance(recv, str) else json.dumps(recv)
        requests = {
            "promises.callback": {"promiseId": LEAF, "rootPromiseId": uid("root"), "recv": recv, "timeout": FAR},
            "promises.subscribe": {"id": uid("sub"), "promiseId": LEAF, "recv": recv, "timeout": FAR},
            "promises.create": invoke_payload("promises.create", uid("inv"), tag),
            "promises.createtask": invoke_payload("promises.createtask", uid("inv"), tag),
        }
        for operation, payload in requests.items():
            path = "payload.recv" if "recv" in payload else "payload.tags.resonate:invoke"
            cases.append(Case(f"{operation} {form}", request_bytes(operation, payload), verdict, path))
    return cases


def invoke_tag_data() -> Dict[str, Tuple[str, str]]:
    """JSON a receiver in a resonate:invoke tag may hold as its ``data``: name -> (JSON text, verdict).

    The tag's JSON is held to the request limit as if it stood where a ``recv`` does (level 3),
    so its ``data`` starts at level 4. Text that is not JSON (``NaN``) is a logical receiver (2.9).
    """
    limit = max_depth()
    return {
        "at the depth limit": (nest(limit - 3), ACCEPTED),
        "one past the depth limit": (nest(limit - 2), NAMED),
        "100,000 levels": (nest(100_000, "[]"), NAMED),
        "1e400": ("1e400", NAMED),
        "-1e400": ("-1e400", NAMED),
        "2**64": (str(2**64), NAMED),
        "-(2**63)-1": (str(-(2**63) - 1), NAMED),
        "5000-digit integer": ("9" * 5000, NAMED),
        "2**64-1": (str(2**64 - 1), ACCEPTED),
        "int64 min": (str(-(2**63)), ACCEPTED),
        "1e308": ("1e308", ACCEPTED),
        "NaN": ("NaN", NAMED_OR_ACCEPTED),
        "Infinity": ("Infinity", NAMED_OR_ACCEPTED),
    }


class TestReceivers:
    def test_invoke_tag_json_is_held_to_the_request_limit(self, target):
        """JSON in a resonate:invoke tag is held to the request's depth and number limit: past it is a 400 naming the tag."""
        cases = []
        for name, (data, verdict) in invoke_tag_data().items():
            for operation in ("promises.create", "promises.createtask"):
                payload = invoke_payload(operation, uid("tag"), '{"type":"x","data":%s}' % data)
                cases.append(Case(f"{operation} tag data {name}", request_bytes(operation, payload), verdict, "payload.tags.resonate:invoke"))
        target.check(cases)


    @pytest.mark.parametrize("name", sorted(subjects("own")))
    def test_invalid_nats_subject_is_refused(self, target, pending_pair, name):
        """A NATS receiver naming a reserved, wildcard, malformed, too long or the server's own subject is a 400 naming the field."""
        target.check(receiver_cases(target, subjects(target.subject)[name], NAMED))

    @pytest.mark.parametrize("subject", ["ok.subject", "a" * 255, "A-b_c.1.$x"], ids=["plain", "255 bytes", "punctuation"])
    def test_valid_nats_subject_is_accepted(self, target, pending_pair, subject):
        """A NATS receiver naming a valid publish subject of at most 255 bytes is accepted everywhere a receiver goes."""
        target.check(receiver_cases(target, subject, ACCEPTED))

    def test_logical_receivers_are_accepted(self, target, pending_pair):
        """Non-NATS logical receivers like poll://any@default are still accepted and stored."""
        cases = []
        for recv in ("poll://any@default", "poll://uni@default/w1", "default", "http://localhost:3000"):
            payload = {"id": uid("sub"), "promiseId": LEAF, "recv": recv, "timeout": FAR}
            cases.append(Case(f"subscribe {recv}", request_bytes("promises.subscribe", payload), ACCEPTED))
            tags = {"resonate:invoke": recv}
            cases.append(Case(f"create {recv}", request_bytes("promises.create", {"id": uid("inv"), "timeout": FAR, "tags": tags}), ACCEPTED))
        target.check(cases)


# ------------------------------------------------------------------------------------------
# cron, sizes


IMPOSSIBLE_CRONS = [
    "0 0 31 2 *",
    "* * 31 4 *",
    "0 0 30 2 *",
    "0 0 0 31 11 *",
    "0 0 30 2 ?",
    "* * 30-31 2 *",
    "0 0 31 2,4,6,9,11 *",
    "CRON_TZ=UTC 0 0 31 2 *",
]
ODD_CRONS = [
    "*/0 * * * *",
    "0 0 0 0 0",
    "60 * * * *",
    "* * * * 8",
    "1-0 * * * *",
    "0 0 1-31/40 * *",
    "0 0 L 2 *",
    "0 0 31 2 MON",
    "@every -1s",
    "@every 0s",
    "@every 1000000h",
    "@every 9999999999h",
    "@reboot",
    "TZ=Nowhere/Bad * * * * *",
    "* * * * * * *",
    "0 0 0 29 2 ? 2100",
    "\ud800",
    "\x00",
]


class TestCron:
    @pytest.mark.parametrize("cron", IMPOSSIBLE_CRONS)
    def test_impossible_cron_is_refused(self, target, cron):
        """A cron expression that never fires is a 400 naming cron."""
        payload = {"id": uid("never"), "cron": cron, "promiseId": uid("p")}
        target.check([Case(cron, request_bytes("schedules.create", payload), NAMED, "cron")])

    def test_odd_crons_are_answered(self, target):
        """Malformed, out-of-range and extreme cron expressions get a 2xx or 4xx reply each."""
        cases = []
        for cron in ODD_CRONS:
            payload = {"id": uid("odd"), "cron": cron, "promiseId": uid("p")}
            cases.append(Case(repr(cron), request_bytes("schedules.create", payload), ANSWERED))
        target.check(cases)

    def test_rare_cron_is_accepted(self, target):
        """A cron expression that fires only on leap days is possible, so it is accepted."""
        payload = {"id": uid("leap"), "cron": "0 0 29 2 *", "promiseId": uid("p")}
        target.check([Case("0 0 29 2 *", request_bytes("schedules.create", payload), ACCEPTED)])


def b64_of_size(size: int) -> str:
    """A base64 string of exactly ``size`` characters (``size`` a multiple of 4)."""
    return base64.b64encode(b"\xa5" * (size // 4 * 3)).decode()


class TestSizes:
    def max_payload(self, target) -> int:
        return target.client.nc.max_payload

    def test_promise_too_big_for_any_reply_is_refused(self, target):
        """A promise whose id and param fill a request up to the NATS max_payload is a 400 at create, and is not stored."""
        pid = uid("huge") + "-" + "i" * 1000
        shell = request_bytes("promises.create", {"id": pid, "timeout": FAR, "param": {"data": ""}})
        room = (self.max_payload(target) - 64 - len(shell)) // 4 * 4
        raw = request_bytes("promises.create", {"id": pid, "timeout": FAR, "param": {"data": b64_of_size(room)}})
        assert self.max_payload(target) - 68 < len(raw) <= self.max_payload(target) - 64
        target.check([Case("create near max_payload", raw, REFUSED)])
        assert target.call("promises.read", {"id": pid})["error"]["code"] == 404

    def test_large_promise_that_fits_round_trips(self, target):
        """A promise of a third of the max_payload is stored and reads back whole."""
        pid = uid("third")
        param = {"data": b64_of_size(self.max_payload(target) // 3 // 4 * 4)}
        created = target.ok("promises.create", {"id": pid, "timeout": FAR, "param": param})["promise"]
        assert created["param"] == param
        assert target.ok("promises.read", {"id": pid})["promise"] == created

    @pytest.mark.parametrize("kind", ["promises", "schedules"])
    def test_search_pages_are_cut_by_size(self, target, kind):
        """A search whose matches together exceed max_payload answers in pages that fit, and the cursors reach every match once."""
        prefix = uid(f"page-{kind}")
        each = self.max_payload(target) // 10 // 4 * 4
        ids = [f"{prefix}.{i:02d}" for i in range(12)]
        for pid in ids:
            if kind == "promises":
                target.ok("promises.create", {"id": pid, "timeout": FAR, "param": {"data": b64_of_size(each)}})
            else:
                payload = {"id": pid, "cron": "0 0 1 1 *", "promiseId": pid, "promiseParam": {"data": b64_of_size(each)}}
                target.ok("schedules.create", payload)
        found: List[str] = []
        page = target.ok(f"{kind}.search", {"id": f"{prefix}.*", "limit": 100})
        for _ in range(len(ids) + 1):
            found += [item["id"] for item in page.get(kind) or ()]
            if not page.get("cursor"):
                break
            page = target.ok(f"{kind}.search", {"cursor": page["cursor"]})
        assert found == list(reversed(ids))

    def test_echo_too_big_for_a_reply_is_answered(self, target):
        """A request within a few bytes of max_payload whose reply would echo its requestId or metadata gets a 2xx or 4xx reply."""
        size = self.max_payload(target) - 16
        search = {"id": "hostile-nothing-*", "limit": 1}

        def filled(build) -> bytes:
            raw = build("r" * (size - len(build(""))))
            assert len(raw) == size
            return raw

        target.check(
            [
                Case("echoed requestId", filled(lambda r: request_bytes("promises.search", search, requestId=r)), ANSWERED),
                Case("echoed metadata", filled(lambda r: request_bytes("promises.search", search, metadata={"m": r})), ANSWERED),
            ]
        )

    def test_replies_that_cannot_fit_are_still_answered(self, target):
        """A completion or a claim whose reply would be too big gets a 2xx or 4xx reply, and the promise still reads back."""
        limit = self.max_payload(target)
        two_fifths = b64_of_size(limit * 4 // 10 // 4 * 4)
        pid = uid("grows")
        target.ok("promises.create", {"id": pid, "timeout": FAR, "param": {"data": two_fifths}})
        complete = {"id": pid, "state": "RESOLVED", "value": {"data": two_fifths}}
        target.check([Case("complete doubling the promise", request_bytes("promises.complete", complete), ANSWERED)])
        assert target.call("promises.read", {"id": pid})["success"] is True, "the promise no longer reads back"
        # Two promises of 0.6 max_payload each: the server may refuse them, else it must answer their claim.
        three_fifths = b64_of_size(limit * 6 // 10 // 4 * 4)
        leaf, root = uid("leaf"), uid("root")
        creates = [Case(f"create {p}", request_bytes("promises.create", {"id": p, "timeout": FAR, "param": {"data": three_fifths}}), ANSWERED) for p in (leaf, root)]
        replies = target.exchange([case.raw for case in creates])
        assert_replies(creates, replies)
        if all(json.loads(reply)["success"] for reply in replies):
            target.ok("promises.callback", {"promiseId": leaf, "rootPromiseId": root, "recv": "poll://any@default", "timeout": FAR})
            target.ok("promises.complete", {"id": leaf, "state": "RESOLVED"})
            claim = {"id": f"__resume:{root}:{leaf}", "counter": 1, "processId": "w", "ttl": 60_000}
            target.check([Case("claim of a task whose root and leaf do not fit together", request_bytes("tasks.claim", claim), ANSWERED)])


# ------------------------------------------------------------------------------------------
# the reported attacks, each on a server of its own


def deep_recv(levels: int) -> str:
    return '{"type":"x","data":%s}' % nest(levels, "[]")


OVERFLOW = '{"type":"x","data":{"n":1e400}}'
REPORTED_ATTACKS = {  # name -> (operation, the receiver as JSON text)
    "callback recv data 1e400": ("promises.callback", OVERFLOW),
    "subscribe recv data 1e400": ("promises.subscribe", OVERFLOW),
    "create invoke tag JSON 1e400": ("promises.create", OVERFLOW),
    "createtask invoke tag JSON 1e400": ("promises.createtask", OVERFLOW),
    "callback recv nested 1,000 levels": ("promises.callback", deep_recv(1000)),
    "callback recv nested 975 levels": ("promises.callback", deep_recv(975)),
    "subscribe recv nested 1,000 levels": ("promises.subscribe", deep_recv(1000)),
    "subscribe recv nested 975 levels": ("promises.subscribe", deep_recv(975)),
    "create invoke tag JSON nested 975 levels": ("promises.create", deep_recv(975)),
}


def invoke_payload(operation: str, pid: str, tag: str) -> Dict[str, Any]:
    """A promises.create or createtask payload whose resonate:invoke tag is ``tag``."""
    payload = {"id": pid, "timeout": FAR, "tags": {"resonate:invoke": tag}}
    if operation == "promises.createtask":
        payload.update(taskProcessId="w", taskTtl=60_000)
    return payload


def reported_attack(operation: str, recv: str, n: int) -> Tuple[bytes, str, str]:
    """The attack as its ``n``-th request (ids of its own): (raw request, field path, verdict)."""
    if operation == "promises.callback":
        payload = '{"promiseId":"leaf","rootPromiseId":"root%d","timeout":%d,"recv":%s}' % (n, FAR, recv)
    elif operation == "promises.subscribe":
        payload = '{"id":"s%d","promiseId":"leaf","timeout":%d,"recv":%s}' % (n, FAR, recv)
    else:
        payload = json.dumps(invoke_payload(operation, f"invoked{n}", recv))
        return envelope_bytes(operation, payload), "payload.tags.resonate:invoke", NAMED
    return envelope_bytes(operation, payload), "payload.recv", NAMED


class TestReportedAttacks:
    @pytest.mark.parametrize("name", REPORTED_ATTACKS)
    def test_attack_leaves_the_server_working(self, fresh, name):
        """A reported attack is refused (or harmlessly stored); afterwards create and read succeed and a restart recovers every acknowledged promise."""
        for pid in ("leaf", "root"):
            fresh.ok("promises.create", {"id": pid, "timeout": FAR})
        for n in (1, 2):  # twice: a retry must not find the first attempt half done
            raw, path, verdict = reported_attack(*REPORTED_ATTACKS[name], n)
            fresh.check([Case(f"{name} (#{n})", raw, verdict, path)])
        after = uid("after")
        created = fresh.ok("promises.create", {"id": after, "timeout": FAR})["promise"]
        assert fresh.ok("promises.read", {"id": after})["promise"] == created
        fresh.assert_recovers_acknowledged()
        assert fresh.ok("promises.read", {"id": after})["promise"] == created


# ------------------------------------------------------------------------------------------
# search patterns


STAR_IDS = {
    "long-a": "a" * 3000,
    "long-a-x": "a" * 3000 + "x",
    "long-a-b": "a" * 3000 + "b",
    "x": "x",
    "xa": "xa",
}
STAR_PATTERNS = {
    "25 stars then x": ("*" * 25 + "x", {"long-a-x", "x"}),
    "100 stars then x": ("*" * 100 + "x", {"long-a-x", "x"}),
    "30 times *a then *b": ("*a" * 30 + "*b", {"long-a-b"}),
    "x between 50 stars": ("*" * 50 + "x" + "*" * 50, {"long-a-x", "x", "xa"}),
}


class TestSearchPatterns:
    def test_star_heavy_patterns_answer_correctly_and_the_server_keeps_serving(self, fresh):
        """Search patterns with many stars over long ids answer with exactly the matches, and the server answers other requests after them."""
        for pid in STAR_IDS.values():
            fresh.ok("promises.create", {"id": pid, "timeout": FAR})
            fresh.ok("schedules.create", {"id": pid, "cron": "0 0 1 1 *", "promiseId": "p"})
        kinds = ("promises", "schedules")
        searches = [(kind, name) for kind in kinds for name in STAR_PATTERNS]
        raws = [request_bytes(f"{kind}.search", {"id": STAR_PATTERNS[name][0], "limit": 100}) for kind, name in searches]
        replies = fresh.exchange(raws, timeout=10.0)
        assert_replies([Case(f"{kind} {name}", raw, ACCEPTED) for (kind, name), raw in zip(searches, raws)], replies)
        for (kind, name), reply in zip(searches, replies):
            found = {item["id"] for item in json.loads(reply)["response"]["Payload"].get(kind) or ()}
            assert found == {STAR_IDS[key] for key in STAR_PATTERNS[name][1]}, f"{kind} {name}"
        (read,) = fresh.exchange([request_bytes("promises.read", {"id": "x"})], timeout=10.0)
        assert_replies([Case("read after the searches", request_bytes("promises.read", {"id": "x"}), ACCEPTED)], [read])


# ------------------------------------------------------------------------------------------
# survival: last in the module, after the whole hostile run


class TestSurvival:
    def test_normal_requests_still_work(self, target):
        """After the hostile run a normal create, read and complete succeed."""
        pid = uid("survivor")
        created = target.ok("promises.create", {"id": pid, "timeout": FAR, "param": {"data": "aGk="}})["promise"]
        assert target.ok("promises.read", {"id": pid})["promise"] == created
        assert target.ok("promises.complete", {"id": pid, "state": "RESOLVED"})["promise"]["state"] == "RESOLVED"

    def test_restart_recovers_every_acknowledged_promise(self, target):
        """A restart on the same store recovers, and every promise acknowledged during the run reads back identically."""
        assert target.acknowledged, "the run acknowledged nothing"
        target.assert_recovers_acknowledged()
