"""What the client sends and reads is exactly the server's wire form (no NATS here)."""

import pytest

from resonate_sync.errors import AlreadyExists, ResonateError, Unavailable
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
    SearchPromisesRequest,
    Task,
    Value,
    structure_request,
    unstructure,
)

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
