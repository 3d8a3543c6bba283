"""Model-based test of the core: random operation sequences against a tiny reference model.

``Model`` below is written from PROTOCOL.md alone (sections 2–10), in plain dicts; it shares
no code with ``resonate_sync.core``. ``ResonateMachine`` drives the same random sequence of
operations, clock steps and background ticks through both, compares every reply (status or
error status, and every field of the returned objects), then compares the whole stored state
and checks the invariants: completed promises never change, task counters only grow, final
tasks never change, delivery keeps at most one task per root ENQUEUED or CLAIMED, search pages
neither repeat nor skip, no PENDING promise past its deadline is returned by a read or a search
(create, callback and claim return the stored promise without a lazy timeout: 3.3, 3.6, 3.15),
the indexes agree with the data, and replaying the journaled records rebuilds the same state.

Decisions where PROTOCOL.md leaves room (the model accepts what the core does, within limits):

* Which expired promises a search times out besides the ones it returns (3.2 only requires
  those): any expired PENDING promise matching the id pattern may be; see
  ``_sync_search_timeouts``.
* A notify task completed by its delivery may have ``completedOn`` = now or none (6.2 notes
  that Go leaves it unset).
* Within one tick the jobs run in the order promise timeouts, lock expiry, task expiry,
  delivery (10.1 says "each at most once per tick"); due promises time out by (timeout, id).
* A worker may claim an INIT task directly with its counter while a sibling of the same root
  is ENQUEUED or CLAIMED (3.15 checks no siblings), so per-root serialisation is checked for
  the tasks that delivery made active.

Ids come from small alphabets so that collisions (duplicate creates, competing callbacks,
shared roots) happen often.

Run longer with ``HYPOTHESIS_PROFILE=long`` (about 20x the default ~25 s).
"""

import json
import os
from typing import Any, Dict, List, Optional, Tuple

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from resonate_sync.core import CoreSettings, FakeClock, Resonate
from resonate_sync.errors import ResonateError
from resonate_sync.models import Value

from state_invariants import ListJournal, assert_indexes_consistent, assert_replay_equivalent

T0 = 1_700_000_000_000
INT64_MAX = 2**63 - 1
HORIZON = 10**9  # the clock never jumps to a deadline further away (say an int64-max timeout)
CLAIM_MS = 60_000  # the core's time-to-claim for a delivered task, configured below
RETRY_MS = 15_000  # the core's delay before a failed delivery is retried
HREF = "http://resonate.test:8001"

# ----------------------------------------------------------------------------- statuses (1.4, 1.5)

OK, CREATED, NO_CONTENT = 20000, 20100, 20400
BAD_REQUEST = 400  # validation: only the code is specified
ALREADY = {"RESOLVED": 40300, "REJECTED": 40301, "REJECTED_CANCELED": 40302, "REJECTED_TIMEDOUT": 40303}
LOCK_HELD, TASK_CLAIMED, TASK_DONE, TASK_COUNTER, TASK_STATE = 40304, 40305, 40306, 40307, 40308
PROMISE_404, LOCK_404, TASK_404, PROMISE_409 = 40400, 40402, 40403, 40900

PENDING, RESOLVED, REJECTED = "PENDING", "RESOLVED", "REJECTED"
CANCELED, TIMEDOUT_P = "REJECTED_CANCELED", "REJECTED_TIMEDOUT"
COMPLETED_STATES = (RESOLVED, REJECTED, CANCELED, TIMEDOUT_P)
STATE_FILTER = {
    "PENDING": {PENDING},
    "RESOLVED": {RESOLVED},
    "REJECTED": {REJECTED, CANCELED, TIMEDOUT_P},  # 3.2: REJECTED means all three
    "REJECTED_CANCELED": {CANCELED},
    "REJECTED_TIMEDOUT": {TIMEDOUT_P},
}

INIT, ENQUEUED, CLAIMED, COMPLETED, TIMEDOUT = "INIT", "ENQUEUED", "CLAIMED", "COMPLETED", "TIMEDOUT"
TASK_STATE_NAMES = {1: INIT, 2: ENQUEUED, 4: CLAIMED, 8: COMPLETED, 16: TIMEDOUT}  # 2.4
OPEN = (INIT, ENQUEUED, CLAIMED)
ACTIVE = (ENQUEUED, CLAIMED)
FINAL = (COMPLETED, TIMEDOUT)

# ----------------------------------------------------------------------------- the reference model


def later(now: int, ms: int) -> int:
    """``now + ms`` clamped to the int64 maximum (10.3)."""
    return min(now + ms, INT64_MAX)


def glob_match(pattern: str, text: str) -> bool:
    """Section 8: ``*`` matches any (possibly empty) sequence, every other character itself."""
    if not pattern:
        return not text
    if pattern[0] == "*":
        return any(glob_match(pattern[1:], text[i:]) for i in range(len(text) + 1))
    return bool(text) and text[0] == pattern[0] and glob_match(pattern[1:], text[1:])


def router_recv(tags: Dict[str, str]) -> Any:
    """Section 2.9: the receiver a ``resonate:invoke`` tag names, or None (no task)."""
    if "resonate:invoke" not in tags:
        return None
    value = tags["resonate:invoke"]
    try:
        decoded = json.loads(value, parse_constant=_reject)  # NaN / Infinity are not JSON
    except ValueError:
        return value  # not JSON: a logical receiver
    if isinstance(decoded, dict) and decoded.get("type") and set(decoded) <= {"type", "data"}:
        return decoded
    return None


def _reject(constant: str) -> Any:
    raise ValueError(constant)


def value_view(value: Value) -> Tuple[Dict[str, str], Optional[str]]:
    return (dict(value.headers), value.data or None)


EMPTY = ({}, None)


class Rejected(Exception):
    """The model's answer is an error with this 5-digit status (or 400 for validation)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Model:
    """Promises, callbacks, tasks and locks as plain dicts, changed by the rules of PROTOCOL.md.

    Every operation takes ``now`` and either returns ``(status, payload)`` or raises
    :class:`Rejected`; changes made before a rejection (a lazy timeout) stay, as in 4.2.
    """

    def __init__(self) -> None:
        self.promises: Dict[str, dict] = {}
        self.callbacks: Dict[str, Dict[str, dict]] = {}  # promise id -> callback id -> callback
        self.tasks: Dict[str, dict] = {}
        self.locks: Dict[str, dict] = {}
        self.promise_seq = 0
        self.task_seq = 0

    # ------------------------------------------------------------------ promises

    def _new_task(self, now: int, **fields: Any) -> dict:
        self.task_seq += 1
        task = dict(
            counter=1, process_id=None, created_on=now, completed_on=None, state=INIT,
            ttl=0, expires_at=0, attempt=0, seq=self.task_seq, direct=False, head={},
        )
        task.update(fields)
        self.tasks[task["id"]] = task
        return task

    def _settle(self, p: dict, state: str, value, key: Optional[str], completed_on: int, now: int) -> None:
        """Section 5: the promise, its root tasks, its callbacks, in one step."""
        p.update(state=state, value=value, ikp=key, completed_on=completed_on)
        for task in sorted(self.tasks.values(), key=lambda t: t["seq"]):
            if task["root"] == p["id"] and task["state"] in OPEN:
                task.update(state=COMPLETED, completed_on=now, process_id=None)
        for cb_id, cb in sorted(self.callbacks.pop(p["id"], {}).items()):
            self._new_task(
                now, id=cb_id, timeout=cb["timeout"], root=cb["root"], recv=cb["recv"],
                type=cb["type"], leaf=cb["leaf"], head=cb["head"],
            )

    def timeout_state(self, p: dict) -> str:
        return RESOLVED if p["tags"].get("resonate:timeout") == "true" else TIMEDOUT_P

    def expire(self, p: dict, now: int) -> None:
        """4.3: a PENDING promise at or past its deadline times out (completedOn = timeout)."""
        if p["state"] == PENDING and now >= p["timeout"]:
            self._settle(p, self.timeout_state(p), EMPTY, None, p["timeout"], now)

    def read(self, now: int, id: str):
        p = self.promises.get(id)
        if p is None:
            raise Rejected(PROMISE_404)
        self.expire(p, now)
        return OK, p

    def create(self, now: int, id: str, timeout: int, param, tags: dict, key: str, strict: bool,
               head: dict, claim: Optional[dict] = None):
        if not id:
            raise Rejected(BAD_REQUEST)
        if claim is not None and (not claim["process_id"] or claim["ttl"] < 0):
            raise Rejected(BAD_REQUEST)
        p = self.promises.get(id)
        if p is None:
            self.promise_seq += 1
            p = dict(
                id=id, state=PENDING, param=param, value=EMPTY, timeout=timeout, ikc=key or None, ikp=None,
                tags=dict(tags), created_on=now, completed_on=None, seq=self.promise_seq,
            )
            self.promises[id] = p
            recv = router_recv(tags)
            task = None
            if recv is not None:
                fields = dict(id=f"__invoke:{id}", timeout=timeout, root=id, recv=recv, type="invoke", leaf=id, head=head)
                if claim is None:
                    try:
                        delay = int(tags.get("resonate:delay", "0"))
                    except ValueError:
                        delay = 0
                    task = self._new_task(now, expires_at=delay, **fields)
                else:
                    fields["timeout"] = claim["timeout"] or timeout
                    task = self._new_task(
                        now, state=CLAIMED, process_id=claim["process_id"], ttl=claim["ttl"],
                        expires_at=later(now, claim["ttl"]), **fields,
                    )
            return CREATED, (p, task)
        self.expire(p, now)
        if key and p["ikc"] == key and (not strict or p["state"] == PENDING):
            return OK, (p, None)
        raise Rejected(PROMISE_409)

    def complete(self, now: int, id: str, state: str, value, key: str, strict: bool):
        if state not in COMPLETED_STATES:
            raise Rejected(BAD_REQUEST)
        p = self.promises.get(id)
        if p is None:
            raise Rejected(PROMISE_404)
        self.expire(p, now)
        if p["state"] == PENDING:
            self._settle(p, state, value, key or None, now, now)
            return CREATED, p
        match = bool(key) and p["ikp"] == key
        if match and (not strict or state == p["state"]):
            return OK, p
        if not strict and p["state"] == TIMEDOUT_P:
            return OK, p
        raise Rejected(ALREADY[p["state"]])

    def register(self, now: int, promise_id: str, cb_id: str, root: str, leaf: str, kind: str, recv, timeout: int,
                 head: dict):
        """3.6 / 3.7: no lazy timeout; a completed promise stores nothing."""
        p = self.promises.get(promise_id)
        if p is None:
            raise Rejected(PROMISE_404)
        if p["state"] != PENDING:
            return OK, (p, None)
        per_promise = self.callbacks.setdefault(promise_id, {})
        if cb_id in per_promise:
            return OK, (p, None)
        cb = dict(id=cb_id, promise_id=promise_id, root=root, leaf=leaf, type=kind, recv=recv, timeout=timeout,
                  created_on=now, head=head)
        per_promise[cb_id] = cb
        return CREATED, (p, cb)

    def callback(self, now: int, promise_id: str, root: str, recv, timeout: int, head: dict):
        if not promise_id or not root or promise_id == root or recv is None:
            raise Rejected(BAD_REQUEST)
        return self.register(now, promise_id, f"__resume:{root}:{promise_id}", root, promise_id, "resume", recv,
                             timeout, head)

    def subscribe(self, now: int, id: str, promise_id: str, recv, timeout: int, head: dict):
        if not id or not promise_id or recv is None:
            raise Rejected(BAD_REQUEST)
        return self.register(now, promise_id, f"__notify:{promise_id}:{id}", promise_id, "", "notify", recv,
                             timeout, head)

    def search_list(self, pattern: str, states: List[str], tags: Dict[str, str]) -> List[dict]:
        """Every match, newest first (8); states empty = all."""
        wanted = set().union(*(STATE_FILTER[s.upper()] for s in states)) if states else None
        found = [
            p for p in self.promises.values()
            if glob_match(pattern, p["id"])
            and (wanted is None or p["state"] in wanted)
            and all(p["tags"].get(k) == v for k, v in tags.items())
        ]
        return sorted(found, key=lambda p: p["seq"], reverse=True)

    # ------------------------------------------------------------------ tasks

    def _task(self, id: str, counter: int) -> dict:
        """Appendix A (id and a non-zero counter required), then 404 for an unknown task."""
        if not id or counter == 0:
            raise Rejected(BAD_REQUEST)
        if id not in self.tasks:
            raise Rejected(TASK_404)
        return self.tasks[id]

    def claim(self, now: int, id: str, counter: int, process_id: str, ttl: int):
        if ttl < 0:
            raise Rejected(BAD_REQUEST)
        t = self._task(id, counter)
        if t["state"] == CLAIMED:
            raise Rejected(TASK_CLAIMED)
        if t["state"] in FINAL:
            raise Rejected(TASK_DONE)
        if counter != t["counter"]:
            raise Rejected(TASK_COUNTER)
        t.update(direct=t["state"] == INIT, state=CLAIMED, process_id=process_id or f"{id}/{counter}", ttl=ttl,
                 expires_at=later(now, ttl))
        return CREATED, t

    def complete_task(self, now: int, id: str, counter: int):
        t = self._task(id, counter)
        if t["state"] in FINAL:
            return OK, t
        if t["state"] in (INIT, ENQUEUED):
            raise Rejected(TASK_STATE)
        if counter != t["counter"]:
            raise Rejected(TASK_COUNTER)
        t.update(state=COMPLETED, process_id=None, attempt=0, ttl=0, expires_at=0, completed_on=now)
        return CREATED, t

    def _release(self, t: dict) -> None:
        t.update(state=INIT, counter=t["counter"] + 1, process_id=None, attempt=0, ttl=0, expires_at=0)

    def drop_task(self, now: int, id: str, counter: int):
        t = self._task(id, counter)
        if t["state"] != CLAIMED:
            return OK, t
        if counter != t["counter"]:
            raise Rejected(TASK_COUNTER)
        self._release(t)
        return CREATED, t

    def heartbeat_tasks(self, now: int, process_id: str):
        if not process_id:
            raise Rejected(BAD_REQUEST)
        mine = [t for t in self.tasks.values() if t["state"] == CLAIMED and t["process_id"] == process_id]
        for t in mine:
            t["expires_at"] = later(now, t["ttl"])
        return OK, len(mine)

    # ------------------------------------------------------------------ locks (3.12-3.14, 9)

    def acquire(self, now: int, resource: str, execution: str, process: str, ttl: int):
        held = self.locks.get(resource)
        if held is not None and held["execution_id"] != execution:
            raise Rejected(LOCK_HELD)
        lock = dict(resource_id=resource, execution_id=execution, process_id=process, ttl=ttl,
                    expires_at=later(now, ttl))
        self.locks[resource] = lock
        return CREATED, lock

    def release(self, now: int, resource: str, execution: str):
        held = self.locks.get(resource)
        if held is None or held["execution_id"] != execution:
            raise Rejected(LOCK_404)
        del self.locks[resource]
        return NO_CONTENT, None

    def heartbeat_locks(self, now: int, process: str):
        mine = [lock for lock in self.locks.values() if lock["process_id"] == process]
        for lock in mine:
            lock["expires_at"] = later(now, lock["ttl"])
        return OK, len(mine)

    # ------------------------------------------------------------------ background (10.1, 6.2, 6.3)

    def next_deadline(self, now: int) -> Optional[int]:
        """The earliest future time at which something is due (to step onto boundaries exactly)."""
        times = [p["timeout"] for p in self.promises.values() if p["state"] == PENDING]
        times += [lock["expires_at"] for lock in self.locks.values()]
        for t in self.tasks.values():
            if t["state"] in OPEN:
                times += [t["timeout"], t["expires_at"]]
        future = [t for t in times if now < t < now + HORIZON]
        return min(future) if future else None

    def tick(self, now: int) -> Dict[str, dict]:
        """Run the jobs once; returns the tasks chosen for delivery (still INIT), by id."""
        due = [p for p in self.promises.values() if p["state"] == PENDING and p["timeout"] <= now]
        for p in sorted(due, key=lambda p: (p["timeout"], p["id"])):
            self.expire(p, now)
        for resource in [r for r, lock in self.locks.items() if lock["expires_at"] <= now]:
            del self.locks[resource]
        for t in self.tasks.values():
            if t["state"] in ACTIVE:
                if t["timeout"] <= now:
                    t.update(state=TIMEDOUT, process_id=None, completed_on=t["timeout"])
                elif t["expires_at"] != 0 and t["expires_at"] <= now:
                    self._release(t)
        busy = {t["root"] for t in self.tasks.values() if t["state"] in ACTIVE}
        chosen: Dict[str, dict] = {}
        candidates = [t for t in self.tasks.values() if t["state"] == INIT and t["expires_at"] <= now]
        for t in sorted(candidates, key=lambda t: t["seq"]):  # oldest first within each root
            if t["root"] in busy or t["root"] in {c["root"] for c in chosen.values()}:
                continue
            if now >= t["timeout"]:
                t.update(state=TIMEDOUT, completed_on=t["timeout"])
                continue
            root = self.promises.get(t["root"])
            if t["type"] != "notify" and (root is None or root["state"] != PENDING):
                t.update(state=COMPLETED, completed_on=now, process_id=None)
                continue
            chosen[t["id"]] = t
        return chosen

    def record(self, now: int, t: dict, sent: bool, completed_on: Optional[int]) -> None:
        """A send's result (6.2). ``completed_on``: notify tasks may leave it unset (Go quirk, 6.2)."""
        if t["type"] == "notify":
            t.update(state=COMPLETED, attempt=0, ttl=0, expires_at=0, process_id=None, completed_on=completed_on)
        elif sent:
            t.update(state=ENQUEUED, expires_at=later(now, CLAIM_MS), direct=False)
        else:
            t.update(attempt=t["attempt"] + 1, expires_at=later(now, RETRY_MS))


# ----------------------------------------------------------------------------- views of core objects


def promise_view(p) -> dict:
    return dict(
        id=p.id, state=p.state, param=value_view(p.param), value=value_view(p.value), timeout=p.timeout,
        ikc=p.idempotency_key_for_create, ikp=p.idempotency_key_for_complete, tags=dict(p.tags),
        created_on=p.created_on, completed_on=p.completed_on,
    )


def model_promise_view(p: dict) -> dict:
    return {k: v for k, v in p.items() if k != "seq"}


def omit_empty(always: Dict[str, Any], **optional: Any) -> Dict[str, Any]:
    """Keys of ``always`` as they are, the others only when not empty (Go ``omitempty``, section 2)."""
    return {**always, **{k: v for k, v in optional.items() if v not in (None, "", {}, [])}}


def wire_value(value) -> dict:
    headers, data = value
    return omit_empty({}, headers=headers, data=data)


def wire_promise(p: dict) -> dict:
    """Section 2.2, written out: the JSON a receiver gets for a promise."""
    always = dict(id=p["id"], state=p["state"], param=wire_value(p["param"]), value=wire_value(p["value"]),
                  timeout=p["timeout"])
    return omit_empty(always, idempotencyKeyForCreate=p["ikc"], idempotencyKeyForComplete=p["ikp"], tags=p["tags"],
                      createdOn=p["created_on"], completedOn=p["completed_on"])


def wire_task(t: dict) -> dict:
    """Section 2.4: the serialised keys of a task."""
    always = dict(id=t["id"], counter=t["counter"], timeout=t["timeout"], rootPromiseId=t["root"])
    return omit_empty(always, processId=t["process_id"], createdOn=t["created_on"], completedOn=t["completed_on"])


def task_view(t, internal: bool) -> dict:
    """A core task as the model stores it; ``internal`` adds the fields that matter while it is open."""
    view = dict(
        id=t.id, counter=t.counter, timeout=t.timeout, root=t.root_promise_id, process_id=t.process_id,
        created_on=t.created_on, completed_on=t.completed_on, state=TASK_STATE_NAMES[t.state],
        recv=t.recv, type=t.mesg.type, head=dict(t.mesg.head),
    )
    if internal:
        view.update(ttl=t.ttl, expires_at=t.expires_at, attempt=t.attempt)
    return view


def model_task_view(t: dict, internal: bool) -> dict:
    keys = ["id", "counter", "timeout", "root", "process_id", "created_on", "completed_on", "state", "recv", "type",
            "head"]
    if internal:
        keys += ["ttl", "expires_at", "attempt"]
    return {k: t[k] for k in keys}


def callback_view(c) -> dict:
    return dict(id=c.id, promise_id=c.promise_id, root=c.root_promise_id, timeout=c.timeout, created_on=c.created_on,
                recv=c.recv, type=c.mesg.type, leaf=c.mesg.leaf, head=dict(c.mesg.head))


def model_callback_view(c: dict) -> dict:
    return dict(c)


def lock_view(lock) -> dict:
    return dict(resource_id=lock.resource_id, execution_id=lock.execution_id, process_id=lock.process_id,
                ttl=lock.ttl, expires_at=lock.expires_at)


# ----------------------------------------------------------------------------- the state machine

PROMISE_IDS = ("a", "b", "c", "ab", "ba", "a/b")
PATTERNS = ("*", "a*", "*b", "a*b", "b*", "*a*", "a", "ab", "a/*", "z*", "**")
STATE_LISTS = ([], ["PENDING"], ["RESOLVED"], ["REJECTED"], ["rejected_timedout"], ["REJECTED_CANCELED", "RESOLVED"],
               ["PENDING", "REJECTED"])
KEYS = ("", "k1", "k2")
VALUES = (Value(), Value(data="aGk="), Value(headers={"h": "1"}, data="b2s="))
INVOKE_TAGS = (
    None, "poll://any@default", "default", '{"type":"poll","data":{"group":"g"}}',
    '"foo"', "123", '{"data":{}}',  # valid JSON that is not a physical receiver: no task (2.9)
    "NaN",  # not JSON (Python's json would read it): a logical receiver
)
RECVS = ("poll://any@default", {"type": "nats", "data": {"subject": "s"}})
PROCESSES = ("w1", "w2")
STEPS = (1, 999, 1_000, 5_000, 15_000, 60_000, 3_600_000)
OFFSETS = (-1_000, 0, 1, 1_000, 5_000, 15_000, 60_000, 3_600_000, 3_600_000, 3_600_000)  # relative to now
TTLS = (0, 1_000, 1_000, 60_000, 60_000, INT64_MAX)

offsets = st.sampled_from(OFFSETS)
times = st.sampled_from(OFFSETS + (None, "never"))  # now + offset; None: 0, long expired; "never": int64 max
callback_times = st.sampled_from((None, 1_000, 60_000, 3_600_000, 3_600_000, 3_600_000))  # mostly deliverable


@st.composite
def promise_tags(draw) -> Dict[str, str]:
    tags: Dict[str, str] = {}
    env = draw(st.sampled_from((None, "x", "y")))
    if env:
        tags["env"] = env
    invoke = draw(st.sampled_from(INVOKE_TAGS))
    if invoke is not None:
        tags["resonate:invoke"] = invoke
    if draw(st.booleans()):
        tags["resonate:timeout"] = draw(st.sampled_from(("true", "false")))
    delay = draw(st.sampled_from((None, None, "junk", 0, 5_000, 60_000)))
    if delay is not None:
        tags["resonate:delay"] = delay  # an int is turned into now + int by the rule
    return tags


class ResonateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(T0)
        self.journal = ListJournal()
        core_settings = CoreSettings(
            href_base=HREF, task_claim_timeout_ms=CLAIM_MS, task_retry_timeout_ms=RETRY_MS, cursor_secret=b"s" * 32
        )
        self.r = Resonate(self.clock, settings=core_settings, journal=self.journal)
        self.m = Model()
        self.completed: Dict[str, dict] = {}  # promise id -> view when first seen completed
        self.final_tasks: Dict[str, dict] = {}
        self.counters: Dict[str, int] = {}
        self.saved_cursors: List[Tuple[str, tuple, int]] = []  # (cursor, query, model seq of its page's last item)

    @property
    def now(self) -> int:
        return self.clock.now()

    # ------------------------------------------------------------------ helpers

    def run(self, call, expect):
        """Run the core call and the model's expectation; returns (result, model payload) after
        checking that both succeeded with the same status or failed with the same error."""
        try:
            status, payload = expect()
        except Rejected as rejected:
            status, payload = rejected.status, None
        try:
            result = call()
        except ResonateError as error:
            assert status >= 30000 or status == BAD_REQUEST, f"core raised {error!r}, model expected {status}"
            if status == BAD_REQUEST:
                assert error.code == 400, f"expected 400, got {error!r}"
            else:
                assert error.status == status and error.code == status // 100, f"expected {status}, got {error!r}"
            return None, None
        assert status < 30000, f"core answered {int(result.status)}, model expected error {status}"
        assert int(result.status) == status, f"core answered {int(result.status)}, model expected {status}"
        return result, payload

    def check_promise(self, core_promise, model_promise: dict) -> None:
        assert promise_view(core_promise) == model_promise_view(model_promise)

    def check_task(self, core_task, model_task: dict) -> None:
        assert task_view(core_task, internal=False) == model_task_view(model_task, internal=False)

    def pick_task(self, data) -> str:
        """Usually an open task (so claims, completes and drops do something), else any id."""
        open_ids = sorted(i for i, t in self.m.tasks.items() if t["state"] in OPEN)
        if open_ids and data.draw(st.booleans(), label="open task"):
            return data.draw(st.sampled_from(open_ids), label="task")
        return data.draw(st.sampled_from(sorted(self.m.tasks) + ["__invoke:zz"]), label="task")

    def pick_promise(self, data, label: str, pending: bool = False, prefer=()) -> str:
        """Usually a stored promise (PENDING ones when ``pending``; those in ``prefer`` first),
        else any id of the alphabet or an unknown one."""
        ids = sorted(i for i, p in self.m.promises.items() if not pending or p["state"] == PENDING)
        preferred = sorted(set(ids) & set(prefer))
        if preferred and data.draw(st.booleans(), label=f"preferred {label}"):
            return data.draw(st.sampled_from(preferred), label=label)
        if ids and data.draw(st.booleans(), label=f"stored {label}"):
            return data.draw(st.sampled_from(ids), label=label)
        return data.draw(st.sampled_from(PROMISE_IDS + ("zz",)), label=label)

    def busy_roots(self) -> set:
        """Roots with an open task: callbacks on their behalf create competing tasks (6.2)."""
        return {t["root"] for t in self.m.tasks.values() if t["state"] in OPEN}

    def pick_counter(self, data, task_id: str) -> int:
        task = self.m.tasks.get(task_id)
        current = task["counter"] if task else 1
        choice = data.draw(st.sampled_from(("right",) * 5 + ("stale", "ahead", "zero")), label="counter")
        return {"right": current, "stale": max(current - 1, 1) if current > 1 else current + 1, "ahead": current + 1,
                "zero": 0}[choice]

    # ------------------------------------------------------------------ promise rules

    def _tags_for_now(self, tags: Dict[str, str]) -> Dict[str, str]:
        tags = dict(tags)
        if isinstance(tags.get("resonate:delay"), int):
            tags["resonate:delay"] = str(self.now + tags["resonate:delay"])
        return tags

    def _time(self, offset) -> int:
        return {None: 0, "never": INT64_MAX}.get(offset, self.now + offset if isinstance(offset, int) else 0)

    create_args = dict(
        id=st.sampled_from(PROMISE_IDS + PROMISE_IDS + ("",)), timeout=times, param=st.sampled_from(VALUES),
        tags=promise_tags(), key=st.sampled_from(KEYS), strict=st.booleans(), traced=st.booleans(),
    )

    @rule(**create_args)
    def create(self, id, timeout, param, tags, key, strict, traced):
        self._create(id, timeout, param, tags, key, strict, traced)

    @rule(**create_args)
    def create_invoked(self, id, timeout, param, tags, key, strict, traced):
        """As create, with a ``resonate:invoke`` tag that always names a receiver (so a task appears)."""
        self._create(id, timeout, param, {**tags, "resonate:invoke": "poll://any@default"}, key, strict, traced)

    def _create(self, id, timeout, param, tags, key, strict, traced):
        now, tags = self.now, self._tags_for_now(tags)
        timeout = self._time(timeout)
        head = {"traceparent": "tp-1"} if traced else {}
        result, expected = self.run(
            lambda: self.r.promises_create(id=id, timeout=timeout, param=param, tags=tags, idempotency_key=key,
                                           strict=strict, metadata=head or None),
            lambda: self.m.create(now, id, timeout, value_view(param), tags, key, strict, head),
        )
        if result is not None:
            self.check_promise(result.payload.promise, expected[0])
            if result.status == CREATED:
                assert result.payload.promise.state == PENDING  # 3.3: even when timeout <= now

    @rule(
        id=st.sampled_from(PROMISE_IDS), timeout=offsets, tags=promise_tags(), key=st.sampled_from(KEYS),
        strict=st.booleans(), process=st.sampled_from(PROCESSES + ("",)), ttl=st.sampled_from(TTLS + (60_000, -1)),
        task_timeout=st.sampled_from((None, None, 1_000, 5_000, 15_000, 3_600_000)),
    )
    def createtask(self, id, timeout, tags, key, strict, process, ttl, task_timeout):
        now, tags = self.now, self._tags_for_now(tags)
        timeout = now + timeout
        task_timeout = 0 if task_timeout is None else now + task_timeout
        claim = dict(process_id=process, ttl=ttl, timeout=task_timeout)
        result, expected = self.run(
            lambda: self.r.promises_createtask(id=id, timeout=timeout, tags=tags, idempotency_key=key, strict=strict,
                                               task_process_id=process, task_ttl=ttl, task_timeout=task_timeout),
            lambda: self.m.create(now, id, timeout, EMPTY, tags, key, strict, {}, claim=claim),
        )
        if result is not None:
            promise, task = expected
            self.check_promise(result.payload.promise, promise)
            if task is None:
                assert result.payload.task is None
            else:
                self.check_task(result.payload.task, task)

    complete_args = dict(
        data=st.data(), state=st.sampled_from(COMPLETED_STATES * 3 + ("PENDING", "resolved", "")),
        value=st.sampled_from(VALUES), key=st.sampled_from(KEYS), strict=st.booleans(),
    )

    @rule(**complete_args)
    def complete(self, data, state, value, key, strict):
        awaited = [i for i, per in self.m.callbacks.items() if per]
        self._complete(self.pick_promise(data, "id", pending=True, prefer=awaited), state, value, key, strict)

    @rule(**complete_args)
    def complete_again(self, data, state, value, key, strict):
        self._complete(self.pick_promise(data, "id"), state, value, key, strict)

    def _complete(self, id, state, value, key, strict):
        now = self.now
        result, expected = self.run(
            lambda: self.r.promises_complete(id=id, state=state, value=value, idempotency_key=key, strict=strict),
            lambda: self.m.complete(now, id, state, value_view(value), key, strict),
        )
        if result is not None:
            self.check_promise(result.payload.promise, expected)

    @rule(data=st.data())
    def read(self, data):
        now, id = self.now, self.pick_promise(data, "id")
        result, expected = self.run(lambda: self.r.promises_read(id=id), lambda: self.m.read(now, id))
        if result is not None:
            self.check_promise(result.payload.promise, expected)
            assert expected["state"] != PENDING or now < expected["timeout"]

    @rule(data=st.data(), recv=st.sampled_from(RECVS), timeout=callback_times, traced=st.booleans())
    def callback(self, data, recv, timeout, traced):
        now = self.now
        promise_id = self.pick_promise(data, "promise_id", pending=True)
        root = self.pick_promise(data, "root", pending=True, prefer=self.busy_roots())
        timeout = self._time(timeout)
        head = {"traceparent": "tp-2", "tracestate": "ts"} if traced else {}
        result, expected = self.run(
            lambda: self.r.promises_callback(promise_id=promise_id, root_promise_id=root, recv=recv, timeout=timeout,
                                             metadata=head or None),
            lambda: self.m.callback(now, promise_id, root, recv, timeout, head),
        )
        self._check_registration(result, expected)

    @rule(
        data=st.data(), sub=st.sampled_from(("s1", "s1", "s2", "s2", "")), recv=st.sampled_from(RECVS * 3 + (None,)),
        timeout=callback_times, traced=st.booleans(),
    )
    def subscribe(self, data, sub, recv, timeout, traced):
        now = self.now
        head = {"traceparent": "tp-3"} if traced else {}
        awaited = [i for i, per in self.m.callbacks.items() if per]
        promise_id = self.pick_promise(data, "promise_id", pending=True, prefer=awaited)
        timeout = self._time(timeout)
        result, expected = self.run(
            lambda: self.r.promises_subscribe(id=sub, promise_id=promise_id, recv=recv, timeout=timeout,
                                              metadata=head or None),
            lambda: self.m.subscribe(now, sub, promise_id, recv, timeout, head),
        )
        self._check_registration(result, expected)

    def _check_registration(self, result, expected) -> None:
        if result is None:
            return
        promise, callback = expected
        self.check_promise(result.payload.promise, promise)
        if callback is None:
            assert result.payload.callback is None
        else:
            got = result.payload.callback
            assert (got.id, got.promise_id, got.timeout, got.created_on) == (
                callback["id"], callback["promise_id"], callback["timeout"], callback["created_on"])

    # ------------------------------------------------------------------ search (3.2, 8)

    def _page(self, query: tuple, cursor: str):
        pattern, states, tags, limit = query
        if cursor:
            return self.r.promises_search(cursor=cursor)
        return self.r.promises_search(id=pattern, states=list(states), tags=dict(tags), limit=limit)

    def _sync_search_timeouts(self, pattern: str) -> None:
        """Apply the lazy timeouts the search performed to the model.

        3.2 requires every *returned* promise to be timed out first; which other expired
        promises a search also times out on its way is left open (Go re-runs its query, this
        core times out every candidate it examines). Only expired PENDING promises matching
        the pattern may have been touched; they are timed out in the model in the order a
        search visits them (newest first), and the state comparison then checks the result.
        """
        now = self.now
        for p in sorted(self.m.promises.values(), key=lambda p: p["seq"], reverse=True):
            stored = self.r.state.promises[p["id"]]
            if p["state"] == PENDING and stored.state != PENDING:
                assert glob_match(pattern, p["id"]) and now >= p["timeout"], f"search touched {p['id']!r}"
                self.m.expire(p, now)

    @rule(
        pattern=st.sampled_from(PATTERNS + ("",)), states=st.sampled_from(STATE_LISTS + (["bogus"],)),
        tags=st.sampled_from(({}, {}, {"env": "x"}, {"env": "y"}, {"resonate:timeout": "true"})),
        limit=st.sampled_from((0, 1, 1, 2, 2, 3, 100, 101, -1)), save=st.booleans(),
        forged=st.sampled_from((None,) * 12 + ("garbage", "e30.AAAA", "a.b.c")),
    )
    def search(self, pattern, states, tags, limit, save, forged):
        now = self.now
        if forged is not None:
            try:
                self.r.promises_search(cursor=forged)
            except ResonateError as error:
                assert error.code == 400
            else:
                raise AssertionError("a forged cursor was accepted")
            return
        query = (pattern, tuple(states), tuple(sorted(tags.items())), limit)
        invalid = not pattern or any(s.upper() not in STATE_FILTER for s in states) or not 0 <= limit <= 100
        pages: List[list] = []
        cursor = ""
        for _ in range(len(PROMISE_IDS) + 2):
            try:
                result = self._page(query, cursor)
            except ResonateError as error:
                assert invalid and not pages and error.code == 400, repr(error)
                return
            assert not invalid, "an invalid search was accepted"
            page = result.payload.promises
            effective_limit = limit or 100
            assert int(result.status) == OK
            assert len(page) <= effective_limit
            assert (result.payload.cursor is not None) == (len(page) == effective_limit), "cursor iff a full page"
            for p in page:
                assert not (p.state == PENDING and now >= p.timeout), f"expired PENDING {p.id!r} returned"
            pages.append(page)
            cursor = result.payload.cursor
            if cursor is None:
                break
            if save and len(self.saved_cursors) < 4:
                self.saved_cursors.append((cursor, query, self.m.promises[page[-1].id]["seq"]))
        else:
            raise AssertionError("search cursors did not come to an end")
        self._sync_search_timeouts(pattern)
        returned = [p.id for page in pages for p in page]
        assert len(returned) == len(set(returned)), f"a search page repeated an item: {returned}"
        expected = self.m.search_list(pattern, list(states), tags)
        assert returned == [p["id"] for p in expected], "search pages skipped or misordered items"
        by_id = {p.id: p for page in pages for p in page}
        for p in expected:
            self.check_promise(by_id[p["id"]], p)

    @precondition(lambda self: self.saved_cursors)
    @rule(data=st.data())
    def resume_saved_cursor(self, data):
        """A cursor continues its query strictly after its page, even after other changes (8)."""
        index = data.draw(st.integers(0, len(self.saved_cursors) - 1), label="cursor")
        cursor, query, last_seq = self.saved_cursors.pop(index)
        pattern, states, tags, limit = query
        result = self.r.promises_search(cursor=cursor)
        self._sync_search_timeouts(pattern)
        older = [p for p in self.m.search_list(pattern, list(states), dict(tags)) if p["seq"] < last_seq]
        expected = older[: limit or 100]
        assert [p.id for p in result.payload.promises] == [p["id"] for p in expected]
        for core_p, model_p in zip(result.payload.promises, expected):
            self.check_promise(core_p, model_p)
            assert not (core_p.state == PENDING and self.now >= core_p.timeout)

    # ------------------------------------------------------------------ task rules

    claim_args = dict(data=st.data(), process=st.sampled_from(PROCESSES + ("",)), ttl=st.sampled_from(TTLS + (-1,)))

    @rule(**claim_args)
    def claim(self, data, process, ttl):
        self._claim(data, process, ttl)

    @precondition(lambda self: any(t["state"] in OPEN for t in self.m.tasks.values()))
    @rule(**claim_args)
    def claim_open(self, data, process, ttl):
        self._claim(data, process, ttl)

    def _claim(self, data, process, ttl):
        now = self.now
        task_id = self.pick_task(data)
        counter = self.pick_counter(data, task_id)
        result, expected = self.run(
            lambda: self.r.tasks_claim(id=task_id, counter=counter, process_id=process, ttl=ttl),
            lambda: self.m.claim(now, task_id, counter, process, ttl),
        )
        if result is None:
            return
        payload = result.payload
        self.check_task(payload.task, expected)
        root_id = expected["root"]
        root = self.m.promises.get(root_id)
        if root is None:
            assert payload.root_promise is None
        else:
            self.check_promise(payload.root_promise, root)
        assert payload.root_promise_href.endswith(f"/promises/{root_id}")
        if expected["type"] == "resume":
            self.check_promise(payload.leaf_promise, self.m.promises[expected["leaf"]])
            assert payload.leaf_promise_href.endswith(f"/promises/{expected['leaf']}")
        else:
            assert payload.leaf_promise is None and not payload.leaf_promise_href

    @precondition(lambda self: self.m.tasks)
    @rule(data=st.data())
    def complete_task(self, data):
        self._finish_task(data, self.r.tasks_complete, self.m.complete_task)

    @precondition(lambda self: self.m.tasks)
    @rule(data=st.data())
    def drop_task(self, data):
        self._finish_task(data, self.r.tasks_drop, self.m.drop_task)

    def _finish_task(self, data, core_op, model_op) -> None:
        now = self.now
        task_id = self.pick_task(data)
        counter = self.pick_counter(data, task_id)
        result, expected = self.run(lambda: core_op(id=task_id, counter=counter),
                                    lambda: model_op(now, task_id, counter))
        if result is not None:
            self.check_task(result.payload.task, expected)

    @rule(process=st.sampled_from(PROCESSES + ("",)))
    def heartbeat_tasks(self, process):
        now = self.now
        result, expected = self.run(
            lambda: self.r.tasks_heartbeat(process_id=process), lambda: self.m.heartbeat_tasks(now, process)
        )
        if result is not None:
            assert result.payload.tasks_affected == expected

    # ------------------------------------------------------------------ lock rules

    @rule(op=st.sampled_from(("acquire", "acquire", "release", "heartbeat")), resource=st.sampled_from(("r1", "r2")),
          execution=st.sampled_from(("e1", "e2")), process=st.sampled_from(PROCESSES), ttl=st.sampled_from(TTLS))
    def lock(self, op, resource, execution, process, ttl):
        now = self.now
        if op == "acquire":
            result, expected = self.run(
                lambda: self.r.locks_acquire(resource_id=resource, execution_id=execution, process_id=process,
                                             ttl=ttl),
                lambda: self.m.acquire(now, resource, execution, process, ttl),
            )
            if result is not None:
                assert lock_view(result.payload.lock) == expected
        elif op == "release":
            self.run(
                lambda: self.r.locks_release(resource_id=resource, execution_id=execution),
                lambda: self.m.release(now, resource, execution),
            )
        else:
            result, expected = self.run(
                lambda: self.r.locks_heartbeat(process_id=process), lambda: self.m.heartbeat_locks(now, process)
            )
            if result is not None:
                assert result.payload.locks_affected == expected

    # ------------------------------------------------------------------ time and background

    @rule(data=st.data(), step=st.sampled_from((0, 0, "deadline")))
    def tick(self, data, step):
        self.advance(data, step, True)

    @rule(
        data=st.data(), step=st.sampled_from((0, 0, "deadline", "deadline", "deadline", "deadline", "deadline-1") + STEPS),
        run_jobs=st.sampled_from((True, True, False)),
    )
    def advance(self, data, step, run_jobs):
        """The clock moves (by a step, or exactly to the model's next deadline, or 1 ms before it);
        then (usually) one background pass (10.1), with the send results reported."""
        if isinstance(step, str):
            deadline = self.m.next_deadline(self.now)
            step = 1_000 if deadline is None else deadline - self.now - (step == "deadline-1")
        now = self.clock.advance(step)
        if not run_jobs:
            return
        deliveries = self.r.tick()
        chosen = self.m.tick(now)
        assert {d.task_id: d.counter for d in deliveries} == {i: t["counter"] for i, t in chosen.items()}
        results = []
        for delivery in deliveries:
            task = chosen[delivery.task_id]
            assert delivery.recv == task["recv"]
            assert delivery.head == task["head"]
            body = delivery.body
            assert body["type"] == task["type"]
            if task["type"] == "notify":
                assert body == {"type": "notify", "promise": wire_promise(self.m.promises[task["root"]])}
            else:
                assert body["task"] == wire_task(task)
                suffix = f"{task['id']}/{task['counter']}"
                assert body["href"]["claim"].endswith(f"/tasks/claim/{suffix}")
                assert body["href"]["complete"].endswith(f"/tasks/complete/{suffix}")
                assert body["href"]["heartbeat"].endswith(f"/tasks/heartbeat/{suffix}")
            results.append((delivery, data.draw(st.booleans(), label=f"sent {delivery.task_id}")))
        self.r.record_deliveries(results)
        for delivery, sent in results:
            stored = self.r.state.tasks[delivery.task_id]
            task = chosen[delivery.task_id]
            completed_on = stored.completed_on if task["type"] == "notify" else None
            if task["type"] == "notify":
                assert completed_on in (None, now), "a notified task completes now or without completedOn (6.2)"
            self.m.record(now, task, sent, completed_on)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def state_matches_model(self):
        state, m = self.r.state, self.m
        assert {i: promise_view(p) for i, p in state.promises.items()} == {
            i: model_promise_view(p) for i, p in m.promises.items()}
        assert {i: task_view(t, internal=t.state not in (8, 16)) for i, t in state.tasks.items()} == {
            i: model_task_view(t, internal=t["state"] not in FINAL) for i, t in m.tasks.items()}
        assert {pid: {cid: callback_view(c) for cid, c in per.items()} for pid, per in state.callbacks.items()} == {
            pid: {cid: model_callback_view(c) for cid, c in per.items()} for pid, per in m.callbacks.items() if per}
        assert {r: lock_view(lock) for r, lock in state.locks.items()} == m.locks

    @invariant()
    def completed_promises_never_change(self):
        for pid, p in self.r.state.promises.items():
            view = promise_view(p)
            if p.state != PENDING:
                assert self.completed.setdefault(pid, view) == view, f"completed promise {pid!r} changed"
            if pid in self.completed:
                assert p.state != PENDING

    @invariant()
    def task_counters_only_grow_and_final_tasks_stay(self):
        for tid, t in self.r.state.tasks.items():
            assert t.counter >= self.counters.get(tid, 1), f"counter of {tid!r} went down"
            self.counters[tid] = t.counter
            view = task_view(t, internal=False)
            if t.state in (8, 16):
                assert self.final_tasks.setdefault(tid, view) == view, f"final task {tid!r} changed"
            else:
                assert tid not in self.final_tasks, f"final task {tid!r} reopened"

    @invariant()
    def one_active_task_per_root(self):
        """Delivery never makes a second task of a root ENQUEUED or CLAIMED (6.2).

        A worker may still claim an INIT task directly with its counter (3.15 does not look at
        siblings), so tasks claimed straight from INIT are not counted.
        """
        active: Dict[str, List[str]] = {}
        claimed: Dict[str, List[str]] = {}
        for t in self.m.tasks.values():
            if t["state"] in ACTIVE and not t["direct"]:
                active.setdefault(t["root"], []).append(t["id"])
            if t["state"] == CLAIMED and not t["direct"]:
                claimed.setdefault(t["root"], []).append(t["id"])
        assert all(len(ids) == 1 for ids in active.values()), active
        assert all(len(ids) == 1 for ids in claimed.values()), claimed

    @invariant()
    def indexes_consistent(self):
        assert_indexes_consistent(self.r.state)

    def teardown(self):
        """Replaying every journaled record from nothing rebuilds this exact state."""
        assert_replay_equivalent(self.r.state, self.journal.records)


# HYPOTHESIS_PROFILE (tests/conftest.py) -> (examples, steps per example). Default ~20-40 s;
# "ci" is the same amount, derandomized by its profile; "long" is about 20x.
_RUNS = {"long": (5_000, 100)}
_EXAMPLES, _STEPS = _RUNS.get(os.environ.get("HYPOTHESIS_PROFILE", "default"), (700, 50))

ResonateMachine.TestCase.settings = settings(
    max_examples=_EXAMPLES,
    stateful_step_count=_STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestResonateModel = ResonateMachine.TestCase
TestResonateModel.__doc__ = "Random operation sequences: the core answers and stores exactly what the model does."
