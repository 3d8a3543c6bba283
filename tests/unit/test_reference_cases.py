"""The NATS envelope end to end through ``api.handle`` with real JSON bytes: the reference cases of
PROTOCOL.md 11, the examples of 12, the envelope rules of 1.2–1.6, Appendix A's 400s and Appendix B's shapes."""

import base64
import json
import re
from typing import Any, Dict

import pytest

from core_situations import FAR, NOW, Core, invoke_tags, new_core
from resonate_sync.api.operations import ROUTES
from resonate_sync.core import OPERATIONS
from resonate_sync.models import PromiseState as PS
from resonate_sync.models import TaskState as TS

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

PROMISE_KEYS = {"id", "state", "param", "value", "timeout", "idempotencyKeyForCreate", "idempotencyKeyForComplete",
                "tags", "createdOn", "completedOn"}
PROMISE_ALWAYS = {"id", "state", "param", "value", "timeout"}
TASK_KEYS = {"id", "counter", "timeout", "rootPromiseId", "processId", "createdOn", "completedOn"}
TASK_ALWAYS = {"id", "counter", "timeout", "rootPromiseId"}
SCHEDULE_KEYS = {"id", "desc", "cron", "tags", "promiseId", "promiseTimeout", "promiseParam", "promiseTags",
                 "lastRunTime", "nextRunTime", "idempotencyKey", "createdOn"}
SCHEDULE_ALWAYS = {"id", "cron", "tags", "promiseId", "promiseTimeout", "promiseParam", "nextRunTime", "createdOn"}
LOCK_KEYS = {"resourceId", "executionId", "processId", "ttl", "expiresAt"}
CALLBACK_KEYS = {"id", "promiseId", "rootPromiseId", "timeout", "createdOn"}
VALUE_KEYS = {"headers", "data"}


# --------------------------------------------------------------------------- reply helpers


def ok(reply: Dict[str, Any], status: int) -> Dict[str, Any]:
    """Assert a success envelope with ``status``; return its Payload."""
    assert reply["success"] is True and "error" not in reply, reply
    response = reply["response"]
    assert set(response) == {"Status", "Metadata", "Payload"}
    assert response["Status"] == status, reply
    assert response["Metadata"]["protocol"] == "nats"
    return response["Payload"]


def failed(reply: Dict[str, Any], code: int) -> str:
    """Assert an error envelope with ``code`` and a non-empty message; return the message."""
    assert reply["success"] is False and "response" not in reply, reply
    assert set(reply["error"]) == {"code", "message"}
    assert reply["error"]["code"] == code, reply
    message = reply["error"]["message"]
    assert isinstance(message, str) and message
    return message


def empty(value: Any) -> bool:
    return value in (None, "", [], {})


def shaped(obj: Dict[str, Any], allowed: set, always: set) -> Dict[str, Any]:
    """Assert ``obj`` has every always-present key and no key outside ``allowed``; return it."""
    assert always <= set(obj) <= allowed, sorted(obj)
    return obj


def promise_shape(p: Dict[str, Any]) -> Dict[str, Any]:
    shaped(p, PROMISE_KEYS, PROMISE_ALWAYS)
    shaped(p["param"], VALUE_KEYS, set())
    shaped(p["value"], VALUE_KEYS, set())
    assert ("completedOn" in p) == (p["state"] != PS.PENDING)
    return p


def task_shape(t: Dict[str, Any]) -> Dict[str, Any]:
    return shaped(t, TASK_KEYS, TASK_ALWAYS)


def strip_empty(obj: Any) -> Any:
    """Drop keys whose value is empty, recursively: absent and empty optional keys are equivalent (1.4)."""
    if isinstance(obj, dict):
        return {k: strip_empty(v) for k, v in obj.items() if not empty(v)}
    return obj


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --------------------------------------------------------------------------- 11 reference cases


class TestReferenceCases:
    """The reference cases of PROTOCOL.md 11, restated for NATS."""

    def test_read_promise(self):
        """ReadPromise: reading foo answers 200 (20000) with the promise."""
        core = new_core()
        core.call("promises.create", {"id": "foo", "timeout": FAR})
        payload = ok(core.call("promises.read", {"id": "foo"}), 20000)
        assert set(payload) == {"promise"} and promise_shape(payload["promise"])["id"] == "foo"

    def test_read_promise_with_slash(self):
        """ReadPromiseWithSlash: the id foo/bar is read as is."""
        core = new_core()
        core.call("promises.create", {"id": "foo/bar", "timeout": FAR})
        assert ok(core.call("promises.read", {"id": "foo/bar"}), 20000)["promise"]["id"] == "foo/bar"

    def test_read_promise_not_found(self):
        """ReadPromiseNotFound: an unknown id is 404."""
        failed(new_core().call("promises.read", {"id": "bar"}), 404)

    def all_states(self) -> Core:
        core = new_core()
        for state in (PS.PENDING, PS.RESOLVED, PS.REJECTED, PS.REJECTED_CANCELED, PS.REJECTED_TIMEDOUT):
            core.call("promises.create", {"id": state.lower(), "timeout": FAR, "tags": {"foo": "bar"} if state == PS.PENDING else {}})
            if state != PS.PENDING:
                core.call("promises.complete", {"id": state.lower(), "state": state})
        return core

    def found_states(self, payload: Dict[str, Any]) -> set:
        return {promise_shape(p)["state"] for p in payload.get("promises") or []}

    def test_search_promises(self):
        """SearchPromises: id * with limit 10 searches all five states."""
        payload = ok(self.all_states().call("promises.search", {"id": "*", "limit": 10}), 20000)
        assert self.found_states(payload) == {PS.PENDING, PS.RESOLVED, PS.REJECTED, PS.REJECTED_CANCELED, PS.REJECTED_TIMEDOUT}
        assert empty(payload.get("cursor"))

    def test_search_promises_cursor(self):
        """SearchPromisesCursor: a cursor alone continues id *, states [PENDING], the given limit."""
        core = self.all_states()
        for i in range(3):
            core.call("promises.create", {"id": f"more{i}", "timeout": FAR})
        first = ok(core.call("promises.search", {"id": "*", "states": ["PENDING"], "limit": 2}), 20000)
        second = ok(core.call("promises.search", {"cursor": first["cursor"]}), 20000)
        assert [p["id"] for p in first["promises"]] == ["more2", "more1"]
        assert [p["id"] for p in second["promises"]] == ["more0", "pending"]

    @pytest.mark.parametrize(
        "states, expected",
        [
            (["PENDING"], {PS.PENDING}),
            (["RESOLVED"], {PS.RESOLVED}),
            (["REJECTED"], {PS.REJECTED, PS.REJECTED_TIMEDOUT, PS.REJECTED_CANCELED}),
        ],
    )
    def test_search_promises_by_state(self, states, expected):
        """SearchPromisesPending / Resolved / Rejected: rejected means the three rejected states."""
        payload = ok(self.all_states().call("promises.search", {"id": "*", "states": states}), 20000)
        assert self.found_states(payload) == expected

    def test_search_promises_tags(self):
        """SearchPromisesTags: tags {foo: bar} filters."""
        payload = ok(self.all_states().call("promises.search", {"id": "*", "tags": {"foo": "bar"}, "limit": 10}), 20000)
        assert [p["id"] for p in payload["promises"]] == ["pending"]

    @pytest.mark.parametrize(
        "payload, field",
        [
            ({"id": ""}, "id"),
            ({"id": "*", "states": ["x"]}, "states"),
            ({"id": "*", "limit": -1}, "limit"),
            ({"id": "*", "limit": 101}, "limit"),
        ],
        ids=["InvalidQuery", "InvalidState", "InvalidLimitLower", "InvalidLimitUpper"],
    )
    def test_search_promises_invalid(self, payload, field):
        """SearchPromisesInvalidQuery / InvalidState / InvalidLimitLower / Upper: 400 naming the field."""
        assert field in failed(new_core().call("promises.search", payload), 400)

    def test_search_promises_default_limit(self):
        """SearchPromisesDefaultLimit: without a limit at most 100 promises come back."""
        core = new_core()
        for i in range(101):
            core.call("promises.create", {"id": f"p{i}", "timeout": FAR})
        payload = ok(core.call("promises.search", {"id": "*"}), 20000)
        assert len(payload["promises"]) == 100 and payload["cursor"]

    def test_create_promise(self):
        """CreatePromise: key, strict, param headers and data and timeout 1 are stored as given (and PENDING)."""
        core = new_core()
        param = {"headers": {"a": "a", "b": "b", "c": "c"}, "data": "cGVuZGluZw=="}
        request = {"id": "foo", "idempotencyKey": "bar", "strict": True, "param": param, "timeout": 1}
        promise = promise_shape(ok(core.call("promises.create", request), 20100)["promise"])
        assert (promise["id"], promise["state"], promise["param"], promise["timeout"]) == ("foo", "PENDING", param, 1)
        assert (promise["idempotencyKeyForCreate"], promise["createdOn"]) == ("bar", NOW)
        assert base64.b64decode(promise["param"]["data"]) == b"pending"

    def test_create_promise_minimal(self):
        """CreatePromiseMinimal: no key, not strict, empty param."""
        promise = promise_shape(ok(new_core().call("promises.create", {"id": "foo", "timeout": 1}), 20100)["promise"])
        assert promise["param"] == {} and empty(promise.get("idempotencyKeyForCreate")) and empty(promise.get("tags"))

    def test_create_promise_with_trace_context(self):
        """CreatePromiseWithTraceContext: metadata traceparent/tracestate are echoed and reach the invoke task's head."""
        core = new_core()
        metadata = {"traceparent": "foo", "tracestate": "bar"}
        reply = core.call("promises.create", {"id": "foo", "timeout": FAR, "tags": invoke_tags()}, metadata=metadata)
        ok(reply, 20100)
        assert {k: reply["response"]["Metadata"][k] for k in metadata} == metadata
        assert core.task("__invoke:foo").mesg.head == metadata

    def test_create_promise_and_task(self):
        """CreatePromiseAndTask: the task is CLAIMED by taskProcessId with the promise timeout (1) as its timeout."""
        core = new_core()
        request = {"id": "foo", "timeout": 1, "tags": {"resonate:invoke": "baz"}, "taskProcessId": "bar", "taskTtl": 2}
        payload = ok(core.call("promises.createtask", request), 20100)
        promise, task = promise_shape(payload["promise"]), task_shape(payload["task"])
        assert (promise["id"], promise["tags"]) == ("foo", {"resonate:invoke": "baz"})
        assert (task["id"], task["counter"], task["timeout"], task["processId"]) == ("__invoke:foo", 1, 1, "bar")
        assert (task["rootPromiseId"], task["createdOn"]) == ("foo", NOW)
        assert core.task("__invoke:foo").state == TS.CLAIMED and core.task("__invoke:foo").ttl == 2

    @pytest.mark.parametrize("ttl, code", [(0, None), (-1, 400)], ids=["TtlZero", "NegativeTtl"])
    def test_create_promise_and_task_ttl(self, ttl, code):
        """CreatePromiseAndTaskWithTtlZero / NegativeTtl: 0 is accepted, -1 is 400 naming taskTtl."""
        request = {"id": "foo", "timeout": 1, "tags": {"resonate:invoke": "baz"}, "taskProcessId": "bar", "taskTtl": ttl}
        reply = new_core().call("promises.createtask", request)
        if code is None:
            ok(reply, 20100)
        else:
            assert "taskTtl" in failed(reply, code)

    def test_create_promise_timeout_too_large(self):
        """CreatePromiseTimeoutTooLarge: timeout 2^63 is 400 naming timeout."""
        assert "timeout" in failed(new_core().raw(b'{"operation":"promises.create","payload":{"id":"foo","timeout":9223372036854775808}}'), 400)

    @pytest.mark.parametrize("state", [PS.RESOLVED, PS.REJECTED, PS.REJECTED_CANCELED])
    @pytest.mark.parametrize("minimal", [False, True], ids=["full", "Minimal"])
    def test_complete_promise(self, state, minimal):
        """Resolve / Reject / CancelPromise (+Minimal): 201 with the requested state (and key and value when given)."""
        core = new_core()
        core.call("promises.create", {"id": "foo", "timeout": FAR})
        request = {"id": "foo", "state": state}
        if not minimal:
            request.update(idempotencyKey="bar", strict=True, value={"headers": {"a": "a"}, "data": b64(state.lower())})
        promise = promise_shape(ok(core.call("promises.complete", request), 20100)["promise"])
        assert (promise["state"], promise["completedOn"]) == (state, NOW)
        if minimal:
            assert promise["value"] == {} and empty(promise.get("idempotencyKeyForComplete"))
        else:
            assert (promise["value"], promise["idempotencyKeyForComplete"]) == (request["value"], "bar")

    @pytest.mark.parametrize("state", [PS.RESOLVED, PS.REJECTED, PS.REJECTED_CANCELED, PS.REJECTED_TIMEDOUT])
    def test_promise_already_completed(self, state):
        """*PromiseAlreadyCompleted: completing a completed promise without key match (strict) is 403."""
        core = new_core()
        core.call("promises.create", {"id": "foo", "timeout": FAR})
        ok(core.call("promises.complete", {"id": "foo", "state": state}), 20100)
        other = PS.REJECTED if state == PS.RESOLVED else PS.RESOLVED
        failed(core.call("promises.complete", {"id": "foo", "state": other, "strict": True}), 403)

    @pytest.mark.parametrize(
        "recv", ["foo", {"type": "http", "data": {"url": "http://localhost:3000"}}], ids=["logical", "physical"]
    )
    def test_create_callback(self, recv):
        """CreateCallback (logical / physical recv): id __resume:bar:foo, mesg {resume, head {}, root bar, leaf foo}."""
        core = new_core()
        core.call("promises.create", {"id": "foo", "timeout": FAR})
        request = {"promiseId": "foo", "rootPromiseId": "bar", "timeout": 1, "recv": recv}
        payload = ok(core.call("promises.callback", request), 20100)
        callback = shaped(payload["callback"], CALLBACK_KEYS, CALLBACK_KEYS - {"rootPromiseId"})
        assert (callback["id"], callback["promiseId"], callback["timeout"], callback["createdOn"]) == ("__resume:bar:foo", "foo", 1, NOW)
        assert promise_shape(payload["promise"])["id"] == "foo"
        stored = core.r.state.callbacks["foo"]["__resume:bar:foo"]
        assert (stored.recv, stored.mesg.type, stored.mesg.head, stored.mesg.root, stored.mesg.leaf) == (recv, "resume", {}, "bar", "foo")

    def test_create_callback_not_found(self):
        """CreateCallbackNotFound: a callback on an unknown promise is 404."""
        failed(new_core().call("promises.callback", {"promiseId": "foo", "rootPromiseId": "bar", "timeout": 1, "recv": "foo"}), 404)

    @pytest.mark.parametrize(
        "recv, metadata, head",
        [
            ("foo", None, {}),
            ({"type": "http", "data": {"url": "http://localhost:3000"}}, None, {}),
            ("foo", {"traceparent": "tp", "tracestate": "ts"}, {"traceparent": "tp", "tracestate": "ts"}),
        ],
        ids=["logical", "physical", "trace"],
    )
    def test_create_subscription(self, recv, metadata, head):
        """CreateSubscription (logical / physical / trace): id __notify:foo:foo.1, mesg {notify, root foo, head}."""
        core = new_core()
        core.call("promises.create", {"id": "foo", "timeout": FAR})
        envelope = {"metadata": metadata} if metadata else {}
        request = {"id": "foo.1", "promiseId": "foo", "timeout": 1, "recv": recv}
        payload = ok(core.call("promises.subscribe", request, **envelope), 20100)
        assert payload["callback"]["id"] == "__notify:foo:foo.1"
        stored = core.r.state.callbacks["foo"]["__notify:foo:foo.1"]
        assert (stored.recv, stored.mesg.type, stored.mesg.root, stored.mesg.head) == (recv, "notify", "foo", head)

    def test_read_schedule(self):
        """ReadSchedule: the schedule with cron * * * * * *, promiseId foo.{{.timestamp}}, promiseTimeout 1000000."""
        core = new_core()
        request = {"id": "foo", "cron": "* * * * * *", "promiseId": "foo.{{.timestamp}}", "promiseTimeout": 1000000}
        ok(core.call("schedules.create", request), 20100)
        schedule = shaped(ok(core.call("schedules.read", {"id": "foo"}), 20000)["schedule"], SCHEDULE_KEYS, SCHEDULE_ALWAYS)
        assert {k: schedule[k] for k in request} == request
        assert (schedule["tags"], schedule["promiseParam"], schedule["nextRunTime"]) == ({}, {}, NOW + 1_000)
        assert "lastRunTime" not in schedule

    def schedules(self) -> Core:
        core = new_core()
        for i in range(3):
            core.call("schedules.create", {"id": f"s{i}", "cron": "* * * * *", "promiseId": "x", "tags": {"foo": "bar"} if i else {}})
        return core

    def test_search_schedules(self):
        """SearchSchedules (+Cursor, Tags, DefaultLimit): 200, newest first, cursor continues, tags filter."""
        core = self.schedules()
        everything = ok(core.call("schedules.search", {"id": "*"}), 20000)
        assert [s["id"] for s in everything["schedules"]] == ["s2", "s1", "s0"] and empty(everything.get("cursor"))
        first = ok(core.call("schedules.search", {"id": "*", "limit": 2}), 20000)
        rest = ok(core.call("schedules.search", {"cursor": first["cursor"]}), 20000)
        assert [s["id"] for s in first["schedules"] + rest["schedules"]] == ["s2", "s1", "s0"]
        tagged = ok(core.call("schedules.search", {"id": "*", "tags": {"foo": "bar"}}), 20000)
        assert [s["id"] for s in tagged["schedules"]] == ["s2", "s1"]
        for schedule in everything["schedules"]:
            assert {"id", "cron", "tags", "nextRunTime", "createdOn"} <= set(schedule)

    @pytest.mark.parametrize(
        "payload, field",
        [({"id": ""}, "id"), ({"id": "*", "limit": -1}, "limit"), ({"id": "*", "limit": 101}, "limit")],
        ids=["InvalidQuery", "InvalidLimitLower", "InvalidLimitUpper"],
    )
    def test_search_schedules_invalid(self, payload, field):
        """SearchSchedulesInvalidQuery / InvalidLimit: 400 naming the field."""
        assert field in failed(new_core().call("schedules.search", payload), 400)

    def test_create_schedule(self):
        """CreateSchedule: cron * * * * *, promiseId foo.{{.timestamp}}, promiseTimeout 1, key bar → 201."""
        request = {"id": "foo", "cron": "* * * * *", "promiseId": "foo.{{.timestamp}}", "promiseTimeout": 1, "idempotencyKey": "bar"}
        schedule = ok(new_core().call("schedules.create", request), 20100)["schedule"]
        assert {k: schedule[k] for k in request} == request and schedule["createdOn"] == NOW

    def test_delete_schedule(self):
        """DeleteSchedule: 204 (20400) with an empty payload."""
        core = self.schedules()
        assert ok(core.call("schedules.delete", {"id": "s1"}), 20400) == {}

    def test_acquire_lock(self):
        """AcquireLock: resource foo, process bar, execution baz, ttl 1 → 201 with the lock."""
        request = {"resourceId": "foo", "processId": "bar", "executionId": "baz", "ttl": 1}
        lock = ok(new_core().call("locks.acquire", request), 20100)["lock"]
        assert lock == {**request, "expiresAt": NOW + 1}

    def test_release_lock(self):
        """ReleaseLock: resource foo, execution bar → 204."""
        core = new_core()
        core.call("locks.acquire", {"resourceId": "foo", "processId": "p", "executionId": "bar", "ttl": 1})
        assert ok(core.call("locks.release", {"resourceId": "foo", "executionId": "bar"}), 20400) == {}

    def test_heartbeat_locks(self):
        """HeartbeatLocks: process foo → 200 with locksAffected 1."""
        core = new_core()
        core.call("locks.acquire", {"resourceId": "r", "processId": "foo", "executionId": "e", "ttl": 1})
        assert ok(core.call("locks.heartbeat", {"processId": "foo"}), 20000) == {"locksAffected": 1}

    def invoke_task(self) -> Core:
        core = new_core()
        core.call("promises.create", {"id": "foo", "timeout": FAR, "tags": invoke_tags()})
        return core

    def test_claim_task(self):
        """ClaimTask: id, counter 1, process bar, ttl 1 → 201 with the CLAIMED task."""
        core = self.invoke_task()
        payload = ok(core.call("tasks.claim", {"id": "__invoke:foo", "counter": 1, "processId": "bar", "ttl": 1}), 20100)
        assert task_shape(payload["task"])["processId"] == "bar"
        assert core.task("__invoke:foo").expires_at == NOW + 1

    def test_claim_task_default_process_id(self):
        """ClaimTaskGet: without processId the owner is <id>/<counter>."""
        core = self.invoke_task()
        payload = ok(core.call("tasks.claim", {"id": "__invoke:foo", "counter": 1}), 20100)
        assert payload["task"]["processId"] == "__invoke:foo/1"

    def test_claim_task_invoke(self):
        """ClaimTaskInvoke: the reply holds the root promise and its href, no leaf."""
        core = self.invoke_task()
        payload = ok(core.call("tasks.claim", {"id": "__invoke:foo", "counter": 1, "processId": "w"}), 20100)
        assert set(payload) - {"leafPromise", "leafPromiseHref"} == {"task", "rootPromise", "rootPromiseHref"}
        assert empty(payload.get("leafPromise")) and empty(payload.get("leafPromiseHref"))
        root = promise_shape(payload["rootPromise"])
        assert root["id"] == "foo" and payload["rootPromiseHref"].endswith("/promises/foo")

    def test_claim_task_resume(self):
        """ClaimTaskResume: the reply holds root and leaf promises with hrefs."""
        core = new_core()
        core.call("promises.create", {"id": "bar", "timeout": FAR})
        core.call("promises.create", {"id": "foo", "timeout": FAR})
        core.call("promises.callback", {"promiseId": "foo", "rootPromiseId": "bar", "timeout": FAR, "recv": "w"})
        core.call("promises.complete", {"id": "foo", "state": "RESOLVED"})
        payload = ok(core.call("tasks.claim", {"id": "__resume:bar:foo", "counter": 1, "processId": "w"}), 20100)
        assert set(payload) == {"task", "rootPromise", "rootPromiseHref", "leafPromise", "leafPromiseHref"}
        assert (payload["rootPromise"]["id"], payload["leafPromise"]["id"]) == ("bar", "foo")
        assert payload["rootPromiseHref"].endswith("/promises/bar") and payload["leafPromiseHref"].endswith("/promises/foo")
        assert payload["leafPromise"]["state"] == "RESOLVED"

    def test_claim_task_ttl_too_large(self):
        """ClaimTaskTtlTooLarge: ttl 2^63 is 400 naming ttl."""
        core = self.invoke_task()
        raw = b'{"operation":"tasks.claim","payload":{"id":"__invoke:foo","counter":1,"ttl":9223372036854775808}}'
        assert "ttl" in failed(core.raw(raw), 400)

    @pytest.mark.parametrize("operation, state", [("tasks.complete", TS.COMPLETED), ("tasks.drop", TS.INIT)])
    def test_complete_and_drop_task(self, operation, state):
        """CompleteTask / DropTask: id, counter 1 of a claimed task → 201 with the task."""
        core = self.invoke_task()
        core.call("tasks.claim", {"id": "__invoke:foo", "counter": 1, "processId": "w", "ttl": 1000})
        task = task_shape(ok(core.call(operation, {"id": "__invoke:foo", "counter": 1}), 20100)["task"])
        assert task["id"] == "__invoke:foo" and core.task("__invoke:foo").state == state
        assert empty(task.get("processId"))

    def test_heartbeat_tasks(self):
        """HeartbeatTasks: process foo → 200 with tasksAffected."""
        core = self.invoke_task()
        core.call("tasks.claim", {"id": "__invoke:foo", "counter": 1, "processId": "foo", "ttl": 1000})
        assert ok(core.call("tasks.heartbeat", {"processId": "foo"}), 20000) == {"tasksAffected": 1}

    def test_promise_inside_a_claim_shows_empty_param_and_value(self):
        """The promise in a claim reply always has param and value, as {} when empty."""
        core = new_core()
        core.call("promises.create", {"id": "foo", "timeout": 0, "tags": invoke_tags()})
        payload = ok(core.call("tasks.claim", {"id": "__invoke:foo", "counter": 1}), 20100)
        root = payload["rootPromise"]
        assert {k: root[k] for k in ("id", "state", "param", "value", "timeout")} == {
            "id": "foo", "state": "PENDING", "param": {}, "value": {}, "timeout": 0}


# --------------------------------------------------------------------------- 12 end-to-end


class TestEndToEndExamples:
    """The NATS conversations of PROTOCOL.md 12."""

    CREATE = (b'{"operation":"promises.create","requestId":"r1",'
              b'"payload":{"id":"p1","timeout":1893456000000,"param":{"headers":{"h":"v"},"data":"aGVsbG8="},'
              b'"tags":{"env":"test"},"idempotencyKey":"ik1"}}')
    PROMISE = {"id": "p1", "state": "PENDING", "param": {"headers": {"h": "v"}, "data": "aGVsbG8="}, "value": {},
               "timeout": 1893456000000, "idempotencyKeyForCreate": "ik1", "tags": {"env": "test"}, "createdOn": 1700000000000}

    def test_create_replay_conflict(self):
        """Create answers 20100 as shown; the same request again 20000 with the same promise; the id without key 409."""
        core = new_core()
        reply = core.raw(self.CREATE)
        assert strip_empty(reply) == strip_empty({"success": True, "response": {
            "Status": 20100, "Metadata": {"id": "r1", "name": "CreatePromise", "protocol": "nats"},
            "Payload": {"promise": self.PROMISE}}})
        assert reply["response"]["Payload"]["promise"]["value"] == {}
        again = core.raw(self.CREATE)
        assert ok(again, 20000) == reply["response"]["Payload"]
        failed(core.call("promises.create", {"id": "p1", "timeout": 1893456000000}), 409)

    def test_resolve_then_reject(self):
        """Resolve answers 20100 with value, complete key and completedOn and a generated request id; a later reject without key is 403."""
        core = new_core()
        core.raw(self.CREATE)
        core.advance(1_000)
        reply = core.raw(b'{"operation":"promises.complete","payload":{"id":"p1","state":"RESOLVED",'
                         b'"value":{"data":"b2s="},"idempotencyKey":"ck"}}')
        metadata = reply["response"]["Metadata"]
        assert UUID4.match(metadata["id"]) and metadata == {"id": metadata["id"], "name": "CompletePromise", "protocol": "nats"}
        expected = {**self.PROMISE, "state": "RESOLVED", "value": {"data": "b2s="}, "idempotencyKeyForComplete": "ck",
                    "completedOn": 1700000001000}
        assert strip_empty(ok(reply, 20100)) == strip_empty({"promise": expected})
        failed(core.call("promises.complete", {"id": "p1", "state": "REJECTED"}), 403)

    def test_unknown_operation(self):
        """promises.get is 400 (unknown operation)."""
        failed(new_core().call("promises.get", {"id": "p1"}), 400)


# --------------------------------------------------------------------------- 1.2–1.6 envelope


def prepare_promise(core: Core) -> None:
    core.call("promises.create", {"id": "p", "timeout": FAR})


def prepare_schedule(core: Core) -> None:
    core.call("schedules.create", {"id": "s", "cron": "* * * * *", "promiseId": "x"})


def prepare_claimed(core: Core) -> None:
    core.call("promises.createtask", {"id": "p", "timeout": FAR, "tags": invoke_tags(), "taskProcessId": "w", "taskTtl": 1000})


def prepare_nothing(core: Core) -> None:
    pass


SUCCESSES = {
    # operation: (setup, payload, Metadata.name, Status, always-present payload keys, optional payload keys)
    "promises.read": (prepare_promise, {"id": "p"}, "ReadPromise", 20000, {"promise"}, set()),
    "promises.search": (prepare_promise, {"id": "*"}, "SearchPromises", 20000, set(), {"promises", "cursor"}),
    "promises.create": (prepare_nothing, {"id": "p", "timeout": FAR}, "CreatePromise", 20100, {"promise"}, set()),
    "promises.createtask": (prepare_nothing, {"id": "p", "timeout": FAR, "taskProcessId": "w"}, "CreatePromiseAndTask",
                            20100, {"promise"}, {"task"}),
    "promises.complete": (prepare_promise, {"id": "p", "state": "RESOLVED"}, "CompletePromise", 20100, {"promise"}, set()),
    "promises.callback": (prepare_promise, {"promiseId": "p", "rootPromiseId": "r", "recv": "w", "timeout": FAR},
                          "CreateCallback", 20100, {"promise", "callback"}, set()),
    "promises.subscribe": (prepare_promise, {"id": "s", "promiseId": "p", "recv": "w"}, "CreateCallback", 20100,
                           {"promise", "callback"}, set()),
    "schedules.read": (prepare_schedule, {"id": "s"}, "ReadSchedule", 20000, {"schedule"}, set()),
    "schedules.search": (prepare_schedule, {"id": "*"}, "SearchSchedules", 20000, set(), {"schedules", "cursor"}),
    "schedules.create": (prepare_nothing, {"id": "s", "cron": "* * * * *", "promiseId": "x"}, "CreateSchedule", 20100,
                         {"schedule"}, set()),
    "schedules.delete": (prepare_schedule, {"id": "s"}, "DeleteSchedule", 20400, set(), set()),
    "locks.acquire": (prepare_nothing, {"resourceId": "r", "executionId": "e", "processId": "w", "ttl": 1},
                      "AcquireLock", 20100, {"lock"}, set()),
    "locks.release": (lambda core: core.call("locks.acquire", {"resourceId": "r", "executionId": "e", "processId": "w"}),
                      {"resourceId": "r", "executionId": "e"}, "ReleaseLock", 20400, set(), set()),
    "locks.heartbeat": (prepare_nothing, {"processId": "w"}, "HeartbeatLocks", 20000, {"locksAffected"}, set()),
    "tasks.claim": (lambda core: core.call("promises.create", {"id": "p", "timeout": FAR, "tags": invoke_tags()}),
                    {"id": "__invoke:p", "counter": 1}, "ClaimTask", 20100, {"task", "rootPromise", "rootPromiseHref"},
                    {"leafPromise", "leafPromiseHref"}),
    "tasks.complete": (prepare_claimed, {"id": "__invoke:p", "counter": 1}, "CompleteTask", 20100, {"task"}, set()),
    "tasks.drop": (prepare_claimed, {"id": "__invoke:p", "counter": 1}, "DropTask", 20100, {"task"}, set()),
    "tasks.heartbeat": (prepare_claimed, {"processId": "w"}, "HeartbeatTasks", 20000, {"tasksAffected"}, set()),
}


class TestEnvelope:
    """Request and reply envelopes, routing and metadata (1.2–1.6) and the payload shapes of Appendix B."""

    def test_every_operation_is_covered(self):
        """The success table here names exactly the 18 operations of section 3."""
        assert set(SUCCESSES) == set(OPERATIONS) and len(OPERATIONS) == 18

    def test_every_operation_has_a_route(self):
        """The envelope routes every operation of the core, by the same name, and nothing else."""
        assert set(ROUTES) == set(OPERATIONS)
        assert all(route.operation is OPERATIONS[name] for name, route in ROUTES.items())

    @pytest.mark.parametrize("operation", SUCCESSES)
    def test_success_reply(self, operation):
        """Each operation answers with its Status, echoes Metadata with its kernel name, and returns the Appendix B payload keys."""
        setup, payload, name, status, always, optional = SUCCESSES[operation]
        core = new_core()
        setup(core)
        reply = core.call(operation, payload, requestId=f"req-{operation}", metadata={"k": "v"})
        body = ok(reply, status)
        assert reply["response"]["Metadata"] == {"k": "v", "id": f"req-{operation}", "name": name, "protocol": "nats"}
        present = {k for k, v in body.items() if not empty(v)}
        assert always <= present <= always | optional, body

    @pytest.mark.parametrize("request_id", [None, ""])
    def test_request_id_is_generated_when_absent(self, request_id):
        """Without requestId (or with "") the echoed Metadata.id is a fresh UUID v4."""
        core = new_core()
        envelope = {} if request_id is None else {"requestId": request_id}
        first = core.call("promises.search", {"id": "*"}, **envelope)["response"]["Metadata"]["id"]
        second = core.call("promises.search", {"id": "*"}, **envelope)["response"]["Metadata"]["id"]
        assert UUID4.match(first) and UUID4.match(second) and first != second

    def test_metadata_keys_are_overwritten(self):
        """Client metadata is echoed, but id, name and protocol are the server's."""
        reply = new_core().call("promises.search", {"id": "*"}, requestId="mine",
                                metadata={"id": "x", "name": "y", "protocol": "z", "traceparent": "t"})
        assert reply["response"]["Metadata"] == {"id": "mine", "name": "SearchPromises", "protocol": "nats", "traceparent": "t"}

    def test_unknown_fields_are_ignored(self):
        """Unknown top-level and payload fields do not matter."""
        reply = new_core().call("promises.create", {"id": "p", "timeout": FAR, "surprise": [1]}, extra={"x": 1})
        ok(reply, 20100)

    @pytest.mark.parametrize(
        "raw",
        [b"", b"not json", b"{", b"\xff\xfe", b"[]", b"null", b"1", b'"promises.read"', b"true",
         b'{"operation":"promises.read","payload":{"id":NaN}}'],
    )
    def test_not_a_json_object_is_400(self, raw):
        """An envelope that is not one JSON object is 400, and the reply is still one error document."""
        failed(new_core().raw(raw), 400)

    @pytest.mark.parametrize("envelope", [{}, {"operation": ""}, {"operation": "promises.get"}, {"operation": "Promises.Read"},
                                          {"operation": "promises.read "}, {"operation": 7}, {"operation": None}])
    def test_missing_empty_or_unknown_operation_is_400(self, envelope):
        """No operation, an empty, non-string or unknown one (exact, case-sensitive) is 400."""
        failed(new_core().raw(json.dumps({**envelope, "payload": {"id": "p"}}).encode()), 400)

    def test_payload_absent_is_400(self):
        """A known operation without payload is 400."""
        assert "payload" in failed(new_core().raw(b'{"operation":"promises.read"}'), 400)

    @pytest.mark.parametrize("payload", ["[]", '"x"', "1", "true", '[{"id":"p"}]'])
    def test_payload_not_an_object_is_400(self, payload):
        """A payload that is not a JSON object is 400 naming the payload."""
        raw = f'{{"operation":"promises.read","payload":{payload}}}'.encode()
        assert "payload" in failed(new_core().raw(raw), 400)

    @pytest.mark.parametrize(
        "operation, code", [("promises.read", 404), ("schedules.read", 404), ("promises.create", 400), ("tasks.heartbeat", 400)]
    )
    def test_null_payload_is_an_empty_object(self, operation, code):
        """payload null decodes as {}: reads of the empty id are 404, required fields fail validation with 400."""
        failed(new_core().raw(f'{{"operation":"{operation}","payload":null}}'.encode()), code)

    @pytest.mark.parametrize(
        "envelope, field",
        [
            ({"metadata": {"a": 1}}, "metadata"),
            ({"metadata": {"a": None}}, "metadata"),
            ({"metadata": {"a": {"b": "c"}}}, "metadata"),
            ({"metadata": ["a"]}, "metadata"),
            ({"metadata": "a=b"}, "metadata"),
            ({"requestId": 5}, "requestId"),
        ],
    )
    def test_wrong_envelope_types_are_400(self, envelope, field):
        """metadata must be an object of strings and requestId a string; otherwise the envelope is 400."""
        core = new_core()
        reply = core.raw(json.dumps({"operation": "promises.create", "payload": {"id": "p"}, **envelope}).encode())
        assert field in failed(reply, 400)
        assert core.promise("p") is None

    def test_failed_decoding_has_no_side_effects(self):
        """A payload that fails decoding is not executed: the promise is not completed."""
        core = new_core()
        prepare_promise(core)
        failed(core.call("promises.complete", {"id": "p", "state": "RESOLVED", "value": {"data": "%%%"}}), 400)
        assert core.promise("p").state == PS.PENDING

    def test_kernel_errors_carry_code_only(self):
        """A kernel outcome error is {code, message} with code = status / 100 and no 5-digit status."""
        core = new_core()
        prepare_promise(core)
        reply = core.call("promises.create", {"id": "p"})
        failed(reply, 409)
        assert "40900" not in json.dumps(reply)

    @pytest.mark.parametrize(
        "operation, payload, alias_payload",
        [
            ("locks.acquire", {"resourceId": "r", "executionId": "e", "processId": "p"}, {"expiryInMilliseconds": 500}),
            ("tasks.claim", {"id": "__invoke:p", "counter": 1}, {"frequency": 500}),
        ],
    )
    def test_readme_aliases(self, operation, payload, alias_payload):
        """expiryInMilliseconds (locks.acquire) and frequency (tasks.claim) stand for ttl when ttl is absent."""
        core = new_core()
        core.call("promises.create", {"id": "p", "timeout": FAR, "tags": invoke_tags()})
        ok(core.call(operation, {**payload, **alias_payload}), 20100)
        stored = core.r.state.locks.get("r") or core.task("__invoke:p")
        assert (stored.ttl, stored.expires_at) == (500, NOW + 500)

    def test_description_and_desc(self):
        """schedules.create takes description (and desc as alias); the output key is desc."""
        core = new_core()
        first = ok(core.call("schedules.create", {"id": "a", "cron": "* * * * *", "promiseId": "x", "description": "d1"}), 20100)
        second = ok(core.call("schedules.create", {"id": "b", "cron": "* * * * *", "promiseId": "x", "desc": "d2"}), 20100)
        assert (first["schedule"]["desc"], second["schedule"]["desc"]) == ("d1", "d2")
        assert "description" not in first["schedule"]


class TestPayloadShapes:
    """Omitted-when-empty rules of section 2 on the wire."""

    def test_pending_promise(self):
        """A bare pending promise has id, state, param {}, value {}, timeout, createdOn and nothing non-empty else."""
        promise = ok(new_core().call("promises.create", {"id": "p", "timeout": 5}), 20100)["promise"]
        assert strip_empty(promise) == {"id": "p", "state": "PENDING", "timeout": 5, "createdOn": NOW}
        assert (promise["param"], promise["value"]) == ({}, {})

    def test_empty_value_input_is_output_as_empty_object(self):
        """param {"headers":{},"data":null} is stored empty and returned as {}."""
        promise = ok(new_core().call("promises.create", {"id": "p", "param": {"headers": {}, "data": None}}), 20100)["promise"]
        assert promise["param"] == {}

    def test_timed_out_promise(self):
        """A timed-out promise shows value {} and completedOn = timeout."""
        core = new_core()
        core.call("promises.create", {"id": "p", "timeout": 5})
        promise = ok(core.call("promises.read", {"id": "p"}), 20000)["promise"]
        assert (promise["state"], promise["value"], promise["completedOn"]) == ("REJECTED_TIMEDOUT", {}, 5)

    def test_schedule_tags_are_always_present(self):
        """A schedule always has tags ({} when empty) and promiseParam; desc, promiseTags, lastRunTime, idempotencyKey are optional."""
        schedule = ok(new_core().call("schedules.create", {"id": "s", "cron": "* * * * *", "promiseId": "x"}), 20100)["schedule"]
        shaped(schedule, SCHEDULE_KEYS, SCHEDULE_ALWAYS)
        assert (schedule["tags"], schedule["promiseParam"]) == ({}, {})
        assert not {"desc", "promiseTags", "lastRunTime", "idempotencyKey"} & {k for k, v in schedule.items() if not empty(v)}

    def test_task_never_shows_internal_fields(self):
        """A task on the wire has no state, recv, mesg, attempt, ttl or expiresAt."""
        core = new_core()
        prepare_claimed(core)
        task = ok(core.call("tasks.drop", {"id": "__invoke:p", "counter": 1}), 20100)["task"]
        assert task_shape(task) and empty(task.get("processId")) and task["counter"] == 2

    def test_empty_search(self):
        """A search with no match has neither promises nor cursor (or only empty ones)."""
        payload = ok(new_core().call("promises.search", {"id": "nothing*"}), 20000)
        assert strip_empty(payload) == {}

    def test_deduplicated_callback_has_no_callback(self):
        """A repeated callback answers 20000 with the promise and no callback."""
        core = new_core()
        prepare_promise(core)
        request = {"promiseId": "p", "rootPromiseId": "r", "recv": "w", "timeout": FAR}
        ok(core.call("promises.callback", request), 20100)
        payload = ok(core.call("promises.callback", request), 20000)
        assert set(strip_empty(payload)) == {"promise"}


# --------------------------------------------------------------------------- Appendix A


VALID: Dict[str, Dict[str, Any]] = {
    "promises.read": {"id": "p"},
    "promises.search": {"id": "*", "states": ["PENDING"], "tags": {"a": "b"}, "limit": 10},
    "promises.create": {"id": "p", "timeout": FAR, "param": {"headers": {"h": "v"}, "data": "aGk="}, "tags": {"a": "b"},
                        "idempotencyKey": "k", "strict": False},
    "promises.createtask": {"id": "p", "timeout": FAR, "param": {"data": "aGk="}, "tags": invoke_tags(), "idempotencyKey": "k",
                            "strict": False, "taskProcessId": "w", "taskTtl": 1000, "taskTimeout": FAR},
    "promises.complete": {"id": "p", "state": "RESOLVED", "value": {"headers": {"h": "v"}, "data": "aGk="},
                          "idempotencyKey": "k", "strict": True},
    "promises.callback": {"promiseId": "p", "rootPromiseId": "r", "recv": "w", "timeout": FAR},
    "promises.subscribe": {"id": "s", "promiseId": "p", "recv": "w", "timeout": FAR},
    "schedules.read": {"id": "s"},
    "schedules.search": {"id": "*", "tags": {"a": "b"}, "limit": 10},
    "schedules.create": {"id": "s", "description": "d", "cron": "* * * * *", "tags": {"a": "b"}, "promiseId": "x",
                         "promiseTimeout": 1000, "promiseParam": {"headers": {"h": "v"}, "data": "aGk="},
                         "promiseTags": {"a": "b"}, "idempotencyKey": "k"},
    "schedules.delete": {"id": "s"},
    "locks.acquire": {"resourceId": "r", "executionId": "e", "processId": "w", "ttl": 1000},
    "locks.release": {"resourceId": "r", "executionId": "e"},
    "locks.heartbeat": {"processId": "w"},
    "tasks.claim": {"id": "__invoke:p", "counter": 1, "processId": "w", "ttl": 1000},
    "tasks.complete": {"id": "__invoke:p", "counter": 1},
    "tasks.drop": {"id": "__invoke:p", "counter": 1},
    "tasks.heartbeat": {"processId": "w"},
}
"""An otherwise valid payload of every operation, with every field it has."""

ABSENT = object()

APPENDIX_A = [
    ("promises.search", {"id": ""}, "id"),
    ("promises.search", {"states": ["nope"]}, "states"),
    ("promises.search", {"states": ["PENDING", "pending ", "RESOLVED"]}, "states"),
    ("promises.search", {"limit": -1}, "limit"),
    ("promises.search", {"limit": 101}, "limit"),
    ("promises.search", {"cursor": "forged"}, "cursor"),
    ("promises.create", {"id": ""}, "id"),
    ("promises.create", {"id": ABSENT}, "id"),
    ("promises.createtask", {"id": ""}, "id"),
    ("promises.createtask", {"taskProcessId": ""}, "taskProcessId"),
    ("promises.createtask", {"taskProcessId": ABSENT}, "taskProcessId"),
    ("promises.createtask", {"taskTtl": -1}, "taskTtl"),
    ("promises.complete", {"state": ABSENT}, "state"),
    ("promises.complete", {"state": "PENDING"}, "state"),
    ("promises.complete", {"state": "resolved"}, "state"),
    ("promises.complete", {"state": "CANCELED"}, "state"),
    ("promises.callback", {"promiseId": ""}, "promiseId"),
    ("promises.callback", {"rootPromiseId": ""}, "rootPromiseId"),
    ("promises.callback", {"rootPromiseId": "p"}, "promise"),
    ("promises.callback", {"recv": ABSENT}, "recv"),
    ("promises.callback", {"recv": None}, "recv"),
    ("promises.subscribe", {"id": ""}, "id"),
    ("promises.subscribe", {"promiseId": ""}, "promiseId"),
    ("promises.subscribe", {"recv": ABSENT}, "recv"),
    ("promises.subscribe", {"recv": None}, "recv"),
    ("schedules.search", {"id": ""}, "id"),
    ("schedules.search", {"limit": -1}, "limit"),
    ("schedules.search", {"limit": 101}, "limit"),
    ("schedules.search", {"cursor": "forged"}, "cursor"),
    ("schedules.create", {"id": ""}, "id"),
    ("schedules.create", {"cron": ""}, "cron"),
    ("schedules.create", {"cron": "every day"}, "cron"),
    ("schedules.create", {"promiseId": ""}, "promiseId"),
    ("locks.acquire", {"resourceId": ""}, "resourceId"),
    ("locks.acquire", {"executionId": ""}, "executionId"),
    ("locks.acquire", {"processId": ""}, "processId"),
    ("locks.acquire", {"ttl": -1}, "ttl"),
    ("locks.release", {"resourceId": ""}, "resourceId"),
    ("locks.release", {"executionId": ""}, "executionId"),
    ("locks.heartbeat", {"processId": ""}, "processId"),
    ("tasks.claim", {"id": ""}, "id"),
    ("tasks.claim", {"counter": ABSENT}, "counter"),
    ("tasks.claim", {"counter": 0}, "counter"),
    ("tasks.claim", {"ttl": -1}, "ttl"),
    ("tasks.complete", {"id": ""}, "id"),
    ("tasks.complete", {"counter": ABSENT}, "counter"),
    ("tasks.complete", {"counter": 0}, "counter"),
    ("tasks.drop", {"id": ""}, "id"),
    ("tasks.drop", {"counter": ABSENT}, "counter"),
    ("tasks.drop", {"counter": 0}, "counter"),
    ("tasks.heartbeat", {"processId": ""}, "processId"),
]


def with_changes(operation: str, changes: Dict[str, Any]) -> Dict[str, Any]:
    payload = dict(VALID[operation])
    for key, value in changes.items():
        if value is ABSENT:
            payload.pop(key, None)
        else:
            payload[key] = value
    return payload


def wrong_types():
    """For every field of every VALID payload, values of the wrong JSON type (and out-of-range integers)."""
    for operation, payload in VALID.items():
        for field, value in payload.items():
            if isinstance(value, bool):
                bad = ["true", 1, {}]
            elif isinstance(value, int):
                bad = ["1", 1.5, 2**63, -(2**63) - 1, True, [1]]
            elif isinstance(value, str) and field != "recv":
                bad = [7, True, {"a": "b"}, ["x"]]
            elif field == "recv":
                bad = [7, True, ["w"]]
            elif isinstance(value, list):
                bad = ["PENDING", [1], {}]
            else:
                bad = ["x", [], 3]
                if set(value) <= {"headers", "data"}:
                    bad += [{"data": 1}, {"headers": {"h": 1}}, {"headers": ["h"]}]
                else:
                    bad += [{"a": 1}, {"a": None}]
            for item in bad:
                yield pytest.param(operation, field, item, id=f"{operation}-{field}-{json.dumps(item)}")


BASE64_FIELDS = [
    ("promises.create", "param"),
    ("promises.createtask", "param"),
    ("promises.complete", "value"),
    ("schedules.create", "promiseParam"),
]


class TestAppendixA:
    """Every 400 condition of Appendix A, with the offending field named in the message."""

    @pytest.mark.parametrize("operation", VALID)
    def test_valid_payload_is_accepted(self, operation):
        """The baseline payload of each operation passes decoding and validation (so each 400 below is caused by its one change)."""
        core = new_core()
        reply = core.call(operation, VALID[operation])
        assert reply["success"] or reply["error"]["code"] != 400, reply

    @pytest.mark.parametrize(
        "operation, changes, field", APPENDIX_A, ids=[f"{o}-{f}-{i}" for i, (o, _, f) in enumerate(APPENDIX_A)]
    )
    def test_operation_rule(self, operation, changes, field):
        """Each operation-specific rule of Appendix A answers 400 naming the field."""
        core = new_core()
        assert field in failed(core.call(operation, with_changes(operation, changes)), 400)
        assert core.r.state.promises == {} and core.r.state.schedules == {} and core.r.state.locks == {}

    @pytest.mark.parametrize("operation, field, value", list(wrong_types()))
    def test_field_of_the_wrong_type(self, operation, field, value):
        """A field of the wrong JSON type, a fractional or out-of-int64 number is 400 naming the field."""
        assert field in failed(new_core().call(operation, with_changes(operation, {field: value})), 400)

    @pytest.mark.parametrize("operation, field", BASE64_FIELDS)
    @pytest.mark.parametrize("data", ["%%%%", "aGk", "aGk=a", "a", "aG-_", "aGk= "])
    def test_invalid_base64(self, operation, field, data):
        """data that is not padded standard base64 is 400 naming the data field."""
        payload = with_changes(operation, {field: {"data": data}})
        assert f"{field}.data" in failed(new_core().call(operation, payload), 400)

    @pytest.mark.parametrize("timeout", [2**63 - 1, -(2**63)])
    def test_int64_bounds_are_accepted(self, timeout):
        """The int64 extremes themselves are valid numbers."""
        promise = ok(new_core().call("promises.create", {"id": "p", "timeout": timeout}), 20100)["promise"]
        assert promise["timeout"] == timeout

    @pytest.mark.parametrize("operation", ["promises.read", "schedules.read", "schedules.delete"])
    def test_empty_id_on_reads_is_404_not_400(self, operation):
        """promises.read, schedules.read and schedules.delete have no validation: an empty id is 404."""
        failed(new_core().call(operation, {"id": ""}), 404)

    def test_complete_state_is_checked_before_lookup(self):
        """An invalid state on an unknown promise is 400, not 404."""
        assert "state" in failed(new_core().call("promises.complete", {"id": "missing", "state": "DONE"}), 400)
