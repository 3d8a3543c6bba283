"""The models and their two converters: STORE round-trips every record, WIRE speaks PROTOCOL.md's JSON."""

import json

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resonate_sync.core import Resonate
from resonate_sync.core.resonate import OPERATIONS
from resonate_sync.errors import BadRequest
from resonate_sync.models import (
    _FAST_REQUESTS,
    EMPTY_VALUE,
    RECORD_TYPES,
    STORE,
    WIRE,
    Callback,
    ClaimTaskRequest,
    CompletePromiseRequest,
    CreateCallbackRequest,
    CreatePromiseAndTaskRequest,
    CreatePromiseRequest,
    CreateScheduleRequest,
    DeleteCallbacks,
    DeleteLock,
    DeleteSchedule,
    Lock,
    Mesg,
    Promise,
    PutCallback,
    PutLock,
    PutPromise,
    PutSchedule,
    PutTask,
    Schedule,
    SearchPromisesRequest,
    Task,
    TaskState,
    Value,
    record_from_json,
    record_to_json,
    structure_request,
    unstructure,
    wire_names,
)

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

FULL_VALUE = Value(headers={"content-type": "application/json", "ü": "✓"}, data="eyJhIjoxfQ==")
FULL_PROMISE = Promise(
    id="a/b:c.d ü",
    state="RESOLVED",
    param=FULL_VALUE,
    value=Value(data="b2s="),
    timeout=INT64_MAX,
    idempotency_key_for_create="ik-create",
    idempotency_key_for_complete="ik-complete",
    tags={"resonate:invoke": '{"type":"nats","data":{"subject":"s"}}', "x": ""},
    created_on=1,
    completed_on=2,
    sort_id=17,
)
FULL_MESG = Mesg(type="resume", root="root", leaf="leaf", head={"traceparent": "tp", "tracestate": "ts"})
FULL_TASK = Task(
    id="__resume:root:leaf",
    counter=3,
    timeout=INT64_MAX,
    root_promise_id="root",
    process_id="worker-1",
    created_on=5,
    completed_on=None,
    state=TaskState.CLAIMED,
    recv={"type": "nats", "data": {"subject": "work", "nested": [1, {"x": None}]}},
    mesg=FULL_MESG,
    attempt=2,
    ttl=30_000,
    expires_at=INT64_MIN,
    sort_id=9,
)
FULL_CALLBACK = Callback(
    id="__notify:p:s", promise_id="p", root_promise_id="p", timeout=0, created_on=4, recv="nats://x",
    mesg=Mesg(type="notify", root="p"),
)
FULL_SCHEDULE = Schedule(
    id="nightly",
    cron="*/5 * * * * *",
    promise_id="{{.id}}-{{.timestamp}}",
    next_run_time=1_700_000_005_000,
    created_on=1_700_000_000_000,
    description="every five seconds",
    tags={"team": "a"},
    promise_timeout=60_000,
    promise_param=FULL_VALUE,
    promise_tags={"resonate:invoke": "default"},
    last_run_time=1_700_000_000_000,
    idempotency_key="ik",
    sort_id=3,
)
FULL_LOCK = Lock(resource_id="r", execution_id="e", process_id="p", ttl=0, expires_at=INT64_MAX)

SAMPLE_RECORDS = [
    PutPromise(FULL_PROMISE),
    PutPromise(Promise(id="p", state="PENDING")),
    PutTask(FULL_TASK),
    PutTask(Task(id="__invoke:p", counter=1, timeout=0, root_promise_id="p")),
    PutTask(attrs.evolve(FULL_TASK, state=TaskState.TIMEDOUT, process_id=None, completed_on=7, recv="poll://any@g")),
    PutCallback(FULL_CALLBACK),
    PutCallback(Callback(id="__resume:r:p", promise_id="p", root_promise_id="r", timeout=1, created_on=1)),
    DeleteCallbacks("p"),
    PutSchedule(FULL_SCHEDULE),
    PutSchedule(Schedule(id="s", cron="* * * * *", promise_id="x", next_run_time=60_000, created_on=0)),
    DeleteSchedule("s"),
    PutLock(FULL_LOCK),
    DeleteLock("r"),
]


class TestStoreRoundTrip:
    """Journal records survive record_to_json → JSON text → record_from_json exactly (STORE form)."""

    def test_every_record_type_has_a_sample(self):
        """The samples cover each record type the journal knows."""
        assert {type(r) for r in SAMPLE_RECORDS} == set(RECORD_TYPES.values())

    @pytest.mark.parametrize("record", SAMPLE_RECORDS, ids=lambda r: f"{type(r).__name__}")
    def test_round_trip(self, record):
        """A record read back from its JSON text equals the original, internal fields included."""
        text = json.dumps(record_to_json(record))
        assert record_from_json(json.loads(text)) == record

    @pytest.mark.parametrize("record", SAMPLE_RECORDS, ids=lambda r: f"{type(r).__name__}")
    def test_envelope_names_the_type(self, record):
        """The JSON form is {"type": <registered name>, "data": {...}}."""
        obj = record_to_json(record)
        assert set(obj) == {"type", "data"} and RECORD_TYPES[obj["type"]] is type(record)

    def test_store_keeps_internal_fields_in_camel_case(self):
        """The STORE form writes every field, internal ones too, in camelCase."""
        data = record_to_json(PutTask(FULL_TASK))["data"]["task"]
        assert {"state", "recv", "mesg", "attempt", "ttl", "expiresAt", "sortId", "rootPromiseId", "processId"} <= set(data)
        assert data["expiresAt"] == INT64_MIN and data["mesg"]["head"] == {"traceparent": "tp", "tracestate": "ts"}
        promise = record_to_json(PutPromise(FULL_PROMISE))["data"]["promise"]
        assert promise["sortId"] == 17 and promise["idempotencyKeyForComplete"] == "ik-complete"

    @pytest.mark.parametrize("model", [FULL_VALUE, FULL_PROMISE, FULL_MESG, FULL_TASK, FULL_CALLBACK, FULL_SCHEDULE, FULL_LOCK])
    def test_models_round_trip(self, model):
        """Each stored model type round-trips through STORE on its own."""
        assert STORE.structure(json.loads(json.dumps(STORE.unstructure(model))), type(model)) == model


class TestBase64:
    """data is a standard padded base64 string, stored canonically (1.7)."""

    def value(self, data):
        return structure_request({"id": "p", "param": {"data": data}}, CreatePromiseRequest).param

    @pytest.mark.parametrize(
        "given, stored",
        [("aGk=", "aGk="), ("aGl=", "aGk="), ("aGVsbG8=", "aGVsbG8="), ("////", "////"), ("+/+/", "+/+/"), ("AA==", "AA==")],
    )
    def test_canonical_form(self, given, stored):
        """Valid base64 is kept as the canonical encoding of its bytes (unused trailing bits dropped)."""
        assert self.value(given).data == stored

    @pytest.mark.parametrize("data", ["aGk", "aGk==", "aGkh=", "aGk=====", "a", "%%%%", "aG-_", "aGk=aGk", " aGk=", "aGk=\t", "aGk=="[:-1] + "@"])
    def test_invalid_is_400_naming_the_field(self, data):
        """Unpadded, '=' beyond the padding, url-safe, stray characters or wrong length: 400 naming payload.param.data."""
        with pytest.raises(BadRequest) as info:
            self.value(data)
        assert info.value.code == 400 and "param.data" in info.value.message

    def test_non_string_data_is_400(self):
        """data must be a string."""
        with pytest.raises(BadRequest) as info:
            self.value([104, 105])
        assert "param.data" in info.value.message


class TestValue:
    """Value rules (2.1): empty means {}, and the key is always present on its parent."""

    @pytest.mark.parametrize(
        "given", [None, {}, {"headers": {}}, {"data": None}, {"data": ""}, {"headers": {}, "data": None}, {"headers": None}]
    )
    def test_empty_inputs_are_the_empty_value(self, given):
        """null, {}, empty headers and null/"" data all store the empty Value, output as {}."""
        value = structure_request({"id": "p", "param": given}, CreatePromiseRequest).param
        assert value == EMPTY_VALUE and unstructure(value) == {}

    def test_full_value_keeps_both_keys(self):
        """A value with headers and data outputs both."""
        assert unstructure(FULL_VALUE) == {"headers": FULL_VALUE.headers, "data": FULL_VALUE.data}

    @pytest.mark.parametrize("value, wire", [(Value(headers={"a": "b"}), {"headers": {"a": "b"}}), (Value(data="aGk="), {"data": "aGk="})])
    def test_one_part_omits_the_other(self, value, wire):
        """An empty part of a value is omitted."""
        assert unstructure(value) == wire

    @pytest.mark.parametrize("given", ["x", [], 3, True])
    def test_non_object_is_400(self, given):
        """A Value that is not a JSON object is 400 naming the field."""
        with pytest.raises(BadRequest) as info:
            structure_request({"id": "p", "state": "RESOLVED", "value": given}, CompletePromiseRequest)
        assert "payload.value" in info.value.message

    def test_header_values_must_be_strings(self):
        """headers map strings to strings; anything else is 400 naming the headers."""
        with pytest.raises(BadRequest) as info:
            structure_request({"id": "p", "param": {"headers": {"a": 1}}}, CreatePromiseRequest)
        assert "param.headers" in info.value.message


class TestWireForm:
    """The WIRE converter's output (2.2–2.6): camelCase, omitted-when-empty, internals hidden."""

    def test_full_promise(self):
        """Every promise field appears under its wire name; sortId never does."""
        assert unstructure(FULL_PROMISE) == {
            "id": FULL_PROMISE.id,
            "state": "RESOLVED",
            "param": {"headers": FULL_VALUE.headers, "data": FULL_VALUE.data},
            "value": {"data": "b2s="},
            "timeout": INT64_MAX,
            "idempotencyKeyForCreate": "ik-create",
            "idempotencyKeyForComplete": "ik-complete",
            "tags": FULL_PROMISE.tags,
            "createdOn": 1,
            "completedOn": 2,
        }

    def test_minimal_promise(self):
        """A bare promise keeps id, state, param, value and timeout (even 0) and omits the rest."""
        assert unstructure(Promise(id="p", state="PENDING")) == {"id": "p", "state": "PENDING", "param": {}, "value": {}, "timeout": 0}

    def test_task_hides_internal_fields(self):
        """A task shows id, counter, timeout, rootPromiseId, processId, createdOn, completedOn only."""
        assert unstructure(FULL_TASK) == {
            "id": FULL_TASK.id, "counter": 3, "timeout": INT64_MAX, "rootPromiseId": "root", "processId": "worker-1", "createdOn": 5}
        bare = unstructure(Task(id="t", counter=1, timeout=0, root_promise_id="r"))
        assert bare == {"id": "t", "counter": 1, "timeout": 0, "rootPromiseId": "r"}

    def test_schedule(self):
        """A schedule shows desc (not description) and always tags; empty optional keys are omitted."""
        wire = unstructure(FULL_SCHEDULE)
        assert wire["desc"] == "every five seconds" and "description" not in wire and "sortId" not in wire
        assert (wire["lastRunTime"], wire["promiseTags"], wire["idempotencyKey"]) == (1_700_000_000_000, {"resonate:invoke": "default"}, "ik")
        bare = unstructure(Schedule(id="s", cron="* * * * *", promise_id="x", next_run_time=0, created_on=0))
        assert bare == {"id": "s", "cron": "* * * * *", "tags": {}, "promiseId": "x", "promiseTimeout": 0,
                        "promiseParam": {}, "nextRunTime": 0, "createdOn": 0}

    def test_callback_and_lock(self):
        """A callback hides recv and mesg; a lock shows all five fields, zeros included."""
        assert unstructure(FULL_CALLBACK) == {"id": "__notify:p:s", "promiseId": "p", "rootPromiseId": "p", "timeout": 0, "createdOn": 4}
        assert unstructure(FULL_LOCK) == {"resourceId": "r", "executionId": "e", "processId": "p", "ttl": 0, "expiresAt": INT64_MAX}


class TestStructureRequest:
    """Decoding payloads into request models (1.3 step 3)."""

    def test_null_payload_is_empty(self):
        """A null payload decodes to the request's defaults."""
        assert structure_request(None, SearchPromisesRequest) == SearchPromisesRequest()

    @pytest.mark.parametrize("payload", [[], "x", 1, True])
    def test_non_object_payload_is_400(self, payload):
        """A payload that is not an object is 400 naming the payload."""
        with pytest.raises(BadRequest) as info:
            structure_request(payload, SearchPromisesRequest)
        assert "payload" in info.value.message

    def test_wire_names_and_unknown_keys(self):
        """camelCase wire names fill the fields; unknown keys are ignored."""
        request = structure_request(
            {"id": "p", "idempotencyKey": "k", "idempotency_key": "snake", "strict": True, "other": 1}, CreatePromiseRequest
        )
        assert (request.idempotency_key, request.strict) == ("k", True)
        assert structure_request({"id": "s", "cron": "c", "promiseId": "x", "description": "d"}, CreateScheduleRequest).description == "d"

    def test_nulls_decode_as_zero_values(self):
        """null for a scalar or map field decodes as its zero value (Go behaviour)."""
        request = structure_request({"id": None, "counter": None, "processId": None, "ttl": None}, ClaimTaskRequest)
        assert request == ClaimTaskRequest()

    def test_every_offending_field_is_named(self):
        """With several wrong fields, the message names each by its wire path."""
        with pytest.raises(BadRequest) as info:
            structure_request({"id": 1, "taskTtl": "x", "timeout": 1.5}, CreatePromiseRequest)
        assert "payload.id" in info.value.message and "payload.timeout" in info.value.message

    @pytest.mark.parametrize("value", [2**63, INT64_MIN - 1, 1.0, 1.5, "1", True])
    def test_integers_are_strict_int64(self, value):
        """Integers outside int64, fractional numbers, strings and booleans are 400 for an int field."""
        with pytest.raises(BadRequest) as info:
            structure_request({"id": "t", "counter": value}, ClaimTaskRequest)
        assert "payload.counter" in info.value.message

    @pytest.mark.parametrize("value", [INT64_MAX, INT64_MIN, 0, -1])
    def test_int64_range_is_accepted(self, value):
        """Every int64 value decodes."""
        assert structure_request({"id": "t", "counter": value}, ClaimTaskRequest).counter == value


class TestFastStructure:
    """structure_request's first pass (stops at the first bad field) agrees with the detailed one."""

    _json_scalars = st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False),
        st.sampled_from(["", "x", "aGk=", "aGk==", "aGl=", "RESOLVED", "REJECTED", "pending", "a/*"]),
    )  # fmt: skip
    _json = st.recursive(
        _json_scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["headers", "data", "a", "k"]), inner, max_size=3)),
        max_leaves=6,
    )

    @staticmethod
    def _payloads(cls):
        names = sorted(wire_names(cls).values()) + ["unknown"]
        return st.dictionaries(st.sampled_from(names), TestFastStructure._json, max_size=len(names))

    @pytest.mark.parametrize("cls", [op.request_type for op in OPERATIONS.values()], ids=lambda c: c.__name__)
    def test_fast_and_detailed_accept_the_same_payloads_and_build_the_same_request(self, cls):
        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(self._payloads(cls))
        def check(payload):
            try:
                detailed = WIRE.structure(payload, cls)
            except Exception:
                detailed = None
            try:
                fast = _FAST_REQUESTS[cls](payload, cls)
            except Exception:
                fast = None
            assert fast == detailed, (payload, fast, detailed)
            if detailed is not None:
                assert structure_request(payload, cls) == detailed
            else:
                with pytest.raises(BadRequest, match="invalid payload"):
                    structure_request(payload, cls)

        check()


REQUEST_TYPES = [op.request_type for op in OPERATIONS.values()]


class TestPythonBuiltRequests:
    """A request built in Python is held to the wire's field rules by its validators (400 naming the field)."""

    @pytest.mark.parametrize(
        "cls, fields, named",
        [
            (CreatePromiseRequest, {"timeout": 1.5}, "payload.timeout: expected an integer"),
            (CreatePromiseRequest, {"timeout": 2**63}, "payload.timeout: integer out of the int64 range"),
            (CreatePromiseRequest, {"id": 7}, "payload.id: expected a string"),
            (CreatePromiseRequest, {"strict": 1}, "payload.strict: expected true or false"),
            (CreatePromiseRequest, {"tags": {"a": 1}}, "payload.tags: expected a string value for key 'a'"),
            (CreatePromiseRequest, {"param": "x"}, "payload.param: expected an object with headers and data"),
            (CreatePromiseRequest, {"param": Value(data="aGk")}, "payload.param.data: invalid base64"),
            (CreatePromiseRequest, {"param": {"data": 1}}, "payload.param.data: expected a base64 string"),
            (CreatePromiseRequest, {"param": Value(headers={"h": 1})}, "payload.param.headers: expected a string value"),
            (CreateScheduleRequest, {"promise_param": Value(data="a")}, "payload.promiseParam.data: invalid base64"),
            (CreatePromiseAndTaskRequest, {"task_ttl": "1s"}, "payload.taskTtl: expected an integer"),
            (SearchPromisesRequest, {"states": ["PENDING", 1]}, "payload.states: expected an array of strings"),
            (CreateCallbackRequest, {"recv": {"x": float("nan")}}, "payload.recv: number nan is out of range"),
            (CreateCallbackRequest, {"recv": {"x": object()}}, "payload.recv: object is not a JSON value (at x)"),
        ],
    )  # fmt: skip
    def test_a_bad_field_is_400_naming_it(self, cls, fields, named):
        """Building the request raises the 400 the wire would answer, naming the field by its wire name."""
        with pytest.raises(BadRequest) as info:
            cls(**fields)
        assert info.value.code == 400 and info.value.message.startswith(f"invalid payload: {named}")

    @pytest.mark.parametrize(
        "fields, built",
        [
            ({"timeout": None, "id": None, "strict": None, "tags": None}, CreatePromiseRequest()),
            ({"param": None}, CreatePromiseRequest()),
            ({"param": Value(headers={}, data="")}, CreatePromiseRequest()),
            ({"param": {"data": "aGk="}}, CreatePromiseRequest(param=Value(data="aGk="))),
            ({"param": Value(data="aGl=")}, CreatePromiseRequest(param=Value(data="aGk="))),
        ],
    )  # fmt: skip
    def test_values_are_made_canonical_as_on_the_wire(self, fields, built):
        """None is the zero value, a Value's JSON object is a Value, and data is re-encoded canonically."""
        request = CreatePromiseRequest(**fields)
        assert request == built
        if request.param == EMPTY_VALUE:
            assert request.param is EMPTY_VALUE

    def test_the_in_process_api_answers_400(self):
        """Resonate's methods take the fields as keywords and raise the same 400."""
        with pytest.raises(BadRequest, match=r"^invalid payload: payload.timeout: expected an integer$"):
            Resonate().promises_create(id="p", timeout=1.5)

    def test_a_request_object_changed_after_it_was_built_is_checked_again(self):
        """A request passed whole is checked again: its maps may have changed since it was built."""
        request = CreatePromiseRequest(id="p", timeout=1)
        request.tags["a"] = 1
        with pytest.raises(BadRequest, match="payload.tags"):
            Resonate().promises_create(request)

    @pytest.mark.parametrize("cls", REQUEST_TYPES, ids=lambda c: c.__name__)
    def test_a_request_the_wire_builds_is_built_again_unchanged(self, cls):
        """Whatever structure_request builds, building it again from its fields gives the same request."""

        @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(TestFastStructure._payloads(cls))
        def check(payload):
            try:
                request = structure_request(payload, cls)
            except BadRequest:
                return
            assert attrs.evolve(request) == request

        check()

    @pytest.mark.parametrize("cls", REQUEST_TYPES, ids=lambda c: c.__name__)
    def test_python_fields_follow_the_wire_rules(self, cls):
        """Fields given in Python are accepted, and built, exactly as the same JSON values on the wire."""
        names = wire_names(cls)

        @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(st.dictionaries(st.sampled_from(sorted(names)), TestFastStructure._json, max_size=len(names)))
        def check(fields):
            try:
                wire = structure_request({names[k]: v for k, v in fields.items()}, cls)
            except BadRequest:
                wire = None
            try:
                python = cls(**fields)
            except BadRequest:
                python = None
            assert wire == python, (fields, wire, python)

        check()
