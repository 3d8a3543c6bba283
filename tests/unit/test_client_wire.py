"""What the client sends and reads is exactly the server's wire form (no NATS here)."""

import json

import pytest

from resonate_sync import Client, NotFound
from resonate_sync.api.envelope import BUSY, Reply, decode_reply, encode_reply, encode_request, error_reply, handle
from resonate_sync.client import LocalTransport
from resonate_sync.core import FakeClock, Resonate
from resonate_sync.errors import AlreadyExists, InternalError, ResonateError, Status, Unavailable
from resonate_sync.journal import Journal
from resonate_sync.models import (
    WIRE,
    AcquireLockRequest,
    ClaimTaskRequest,
    ClaimTaskResponse,
    CompletePromiseRequest,
    CreateCallbackRequest,
    CreatePromiseAndTaskRequest,
    CreatePromiseRequest,
    CreateScheduleRequest,
    Promise,
    PromiseResponse,
    ReadPromiseRequest,
    SearchPromisesRequest,
    Task,
    Value,
    structure_request,
    unstructure,
)

FAR = 4_102_444_800_000  # 2100-01-01

REQUESTS = [
    CreatePromiseRequest(
        id="p", timeout=5, param=Value.of(b"\x00\xff", {"h": "v"}), tags={"a": "b"}, idempotency_key="k", strict=True
    ),
    CreatePromiseAndTaskRequest(id="p", timeout=5, task_process_id="w", task_ttl=7, task_timeout=9),
    CompletePromiseRequest(id="p", state="RESOLVED", value=Value.of("text"), idempotency_key="k"),
    CreateCallbackRequest(promise_id="p", root_promise_id="r", recv={"type": "nats", "data": {"subject": "s"}}),
    SearchPromisesRequest(id="p*", states=["PENDING"], tags={"a": "b"}, limit=10),
    CreateScheduleRequest(id="s", description="d", cron="* * * * *", promise_id="x", promise_tags={"t": "u"}),
    AcquireLockRequest(resource_id="r", execution_id="e", process_id="p", ttl=1000),
    ClaimTaskRequest(id="t", counter=2, process_id="w", ttl=5),
]


class TestWire:
    @pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
    def test_requests_round_trip_through_the_server_decoder(self, request_):
        """A request the client encodes decodes, on the server, to the same request."""
        assert structure_request(unstructure(request_), type(request_)) == request_

    def test_requests_use_camel_case_wire_names(self):
        """Field names go out as the protocol spells them; empty fields are left out."""
        wire = unstructure(CreatePromiseAndTaskRequest(id="p", timeout=5, task_process_id="w", idempotency_key="k"))
        assert wire == {"id": "p", "timeout": 5, "idempotencyKey": "k", "taskProcessId": "w"}
        assert unstructure(CreateScheduleRequest(id="s", description="d"))["description"] == "d"

    def test_claim_reply_structures_into_the_response_model(self):
        """A claim reply's camelCase payload becomes ClaimTaskResponse with its promises."""
        payload = {
            "task": {"id": "t", "counter": 1, "timeout": 9, "rootPromiseId": "p", "processId": "w"},
            "rootPromise": {"id": "p", "state": "PENDING", "param": {"data": "aGk="}, "value": {}, "timeout": 9},
            "rootPromiseHref": "http://h/promises/p",
            "unknownKey": "ignored",
        }
        claim = WIRE.structure(payload, ClaimTaskResponse)
        assert claim.task == Task(id="t", counter=1, timeout=9, root_promise_id="p", process_id="w")
        assert isinstance(claim.root_promise, Promise) and claim.root_promise.param.raw == b"hi"
        assert claim.leaf_promise is None and claim.root_promise_href == "http://h/promises/p"


class TestValueBytes:
    @pytest.mark.parametrize("data", [b"", b"hi", bytes(range(256)), "héllo"])
    def test_of_and_raw_round_trip(self, data):
        """Value.of encodes bytes (text as UTF-8) as base64; raw gives the bytes back."""
        expected = data.encode() if isinstance(data, str) else data
        assert Value.of(data).raw == expected
        assert Value.of(data) == structure_request({"param": unstructure(Value.of(data))}, CreatePromiseRequest).param

    def test_other_types_are_refused(self):
        """Only bytes and text are data."""
        with pytest.raises(TypeError):
            Value.of(123)


class TestErrorFromCode:
    def test_known_codes_map_to_their_class(self):
        """An error reply's code picks the ResonateError subclass and keeps the message."""
        error = ResonateError.from_code(409, "The specified promise already exists")
        assert type(error) is AlreadyExists and error.code == 409 and error.message.startswith("The specified")
        assert type(ResonateError.from_code(503, "busy")) is Unavailable

    def test_unknown_code_keeps_the_code(self):
        """A code without a subclass is a plain ResonateError carrying that code."""
        error = ResonateError.from_code(412, "The task precondition failed")
        assert type(error) is ResonateError and error.code == 412


class TestCodec:
    """The one envelope codec (api/envelope.py): the client's half is the inverse of the server's."""

    def test_request_envelope_carries_operation_id_metadata_and_payload(self):
        """encode_request writes the operation, the request id, the caller's metadata and the camelCase payload."""
        request = CreatePromiseRequest(id="p", timeout=FAR, param=Value.of(b"x"), idempotency_key="k")
        envelope = json.loads(encode_request("promises.create", request, "r-1", {"traceparent": "00-ab-cd-01"}))
        assert envelope == {
            "operation": "promises.create",
            "requestId": "r-1",
            "payload": {"id": "p", "timeout": FAR, "param": {"data": "eA=="}, "idempotencyKey": "k"},
            "metadata": {"traceparent": "00-ab-cd-01"},
        }
        assert "metadata" not in json.loads(encode_request("promises.read", ReadPromiseRequest(id="p"), "r-2"))

    def test_the_server_answers_what_the_client_encodes(self):
        """A request from encode_request, handled by the server's path, decodes with decode_reply to its result."""
        core = Resonate(FakeClock())
        request = CreatePromiseRequest(id="p", timeout=FAR, param=Value.of(b"x"))
        reply = decode_reply(handle(core, encode_request("promises.create", request, "r-1")), PromiseResponse)
        assert reply.status is Status.CREATED and reply.metadata["id"] == "r-1"
        assert reply.metadata["name"] == "CreatePromise" and reply.payload.promise.param.raw == b"x"
        assert unstructure(reply.payload) == unstructure(core.promises_read(id="p").payload)

    def test_success_reply_round_trips(self):
        """decode_reply(encode_reply(status, metadata, payload)) gives them back, the status as a Status."""
        payload = PromiseResponse(Promise(id="p", state="PENDING", param=Value.of(b"\x00"), timeout=FAR))
        raw = encode_reply(Status.OK, {"id": "r"}, payload)
        assert decode_reply(raw, PromiseResponse) == Reply(Status.OK, {"id": "r"}, payload)
        assert raw.startswith(b'{"success":true,')

    def test_an_unknown_status_stays_a_number(self):
        """A status this version does not know comes back as the int it is."""
        raw = encode_reply(20200, {}, PromiseResponse(Promise(id="p", state="PENDING", timeout=FAR)))
        assert decode_reply(raw, PromiseResponse).status == 20200

    @pytest.mark.parametrize("reply, kind", [
        (error_reply(404, "The specified promise was not found"), NotFound),
        (error_reply(409, "The specified promise already exists"), AlreadyExists),
        (BUSY.data, Unavailable),
    ])  # fmt: skip
    def test_error_replies_raise_the_class_of_their_code(self, reply, kind):
        """An error reply raises the ResonateError subclass of its code, with its message."""
        with pytest.raises(kind) as info:
            decode_reply(reply, PromiseResponse)
        assert info.value.message == json.loads(reply)["error"]["message"]

    @pytest.mark.parametrize("raw", [
        b"not json",
        b"[]",
        b'{"success": false}',
        b'{"success": false, "error": "broken"}',
        b'{"success": true, "response": 3}',
        b'{"success": true, "response": {"Status": 20000, "Payload": {"promise": 5}}}',
    ])  # fmt: skip
    def test_anything_else_is_an_internal_error(self, raw):
        """Bytes that are no reply envelope, or whose payload is not the response model, raise InternalError."""
        with pytest.raises(InternalError):
            decode_reply(raw, PromiseResponse)


class TestLocalTransport:
    """``Client(transport=LocalTransport(core))``: the client's API on a core in this process."""

    def test_client_and_core_share_the_state(self):
        """What a client creates the core reads, and the other way round."""
        core = Resonate(FakeClock())
        with Client(transport=LocalTransport(core)) as client:
            assert client.promises_create("p", FAR, b"x").created
            assert core.promises_read(id="p").payload.promise.param.raw == b"x"
            core.promises_complete(id="p", state="RESOLVED")
            assert client.promises_read("p").state == "RESOLVED"

    def test_closing_a_client_leaves_the_core_to_others(self):
        """A closed client refuses calls; another client of the same core goes on."""
        core = Resonate(FakeClock())
        first = Client(transport=LocalTransport(core))
        first.promises_create("p", FAR)
        first.close()
        assert not first.connected
        with Client(transport=LocalTransport(core)) as second:
            assert second.connected and second.promises_read("p").id == "p"

    def test_a_reply_is_durable_when_the_call_returns(self, tmp_path):
        """On a journaled core, what a call returned survives a restart from the journal."""
        journal = Journal(str(tmp_path / "journal"))
        recovery = journal.open()
        core = Resonate.recover(recovery.snapshot, recovery.records, journal=journal)
        with Client(transport=LocalTransport(core)) as client:
            client.promises_create("p", FAR, b"kept")
        journal.close()
        reopened = Journal(str(tmp_path / "journal"))
        recovery = reopened.open()
        try:
            recovered = Resonate.recover(recovery.snapshot, recovery.records)
            assert recovered.promises_read(id="p").payload.promise.param.raw == b"kept"
        finally:
            reopened.close()

    def test_nats_options_do_not_go_with_a_transport(self):
        """A URL, subject or other NATS option beside transport= is refused, naming them."""
        with pytest.raises(TypeError, match="^url, subject: options of the NATS transport"):
            Client("nats://localhost:4222", "s", transport=LocalTransport(Resonate()))
