"""Schedule operations (PROTOCOL.md 3.8–3.11, 7) and the firing job.

Decisions where the spec leaves a choice:

* ``promiseId`` templates know exactly ``{{.id}}`` and ``{{.timestamp}}`` (spaces inside the
  braces allowed) and are substituted verbatim; any other ``{{…}}`` is rejected at create time
  with 400 instead of failing at fire time.
* When the generated promise id already exists, the schedule still advances (logged as a
  warning) instead of retrying the same occurrence forever as Go does.
* A schedule that fell behind (server down) fires its missed occurrences one after another,
  up to the job's batch per pass, until ``nextRunTime`` is in the future.
* A cron expression that never fires is a 400 at create time (PROTOCOL.md 13.7), and so is
  one with no occurrence after now. A stored schedule whose next occurrence cannot be
  computed when it comes due (one a journal kept from before that rule, or a clock past the
  year 9999) does not fire that occurrence: it is logged once and parked with ``nextRunTime``
  at the int64 maximum, journaled, so neither the ticker nor a restart meets it again. It
  stays readable and deletable.
"""

import logging
import re

import attrs

from ..errors import BadRequest, ResonateError, Status
from ..models import (
    INT64_MAX,
    INT64_MIN,
    CreateScheduleRequest,
    DeleteSchedule,
    DeleteScheduleRequest,
    EmptyResponse,
    Promise,
    PromiseState,
    PutSchedule,
    ReadScheduleRequest,
    Schedule,
    ScheduleResponse,
    SearchSchedulesRequest,
    SearchSchedulesResponse,
)
from . import promises, sizes
from .common import CoreSettings, Result, clamp_add, require, tags_match, take_page
from .cron import CronError, parse_cron
from .cursor import decode_cursor
from .state import Tx
from .tables import ABSENT, PromiseAction, promise_transition

log = logging.getLogger(__name__)

_VARIABLE = re.compile(r"\{\{\s*\.(id|timestamp)\s*\}\}")


def expand_template(template: str, schedule_id: str, timestamp: int) -> str:
    """``report-{{.timestamp}}`` fired at 1700000060000 → ``report-1700000060000``."""
    values = {"id": schedule_id, "timestamp": str(timestamp)}
    return _VARIABLE.sub(lambda m: values[m.group(1)], template)


def _check_template(template: str) -> None:
    rest = _VARIABLE.sub("", template)
    if "{{" in rest or "}}" in rest:
        raise BadRequest(
            "validation error: payload.promiseId may only use the template variables {{.id}} and {{.timestamp}}"
        )


def _occurrence(schedule: Schedule, at: int) -> "tuple[str, int, dict]":
    """The id, timeout and tags of the promise ``schedule`` creates when it fires at ``at`` (7.3)."""
    promise_id = expand_template(schedule.promise_id, schedule.id, at)
    tags = {**schedule.promise_tags, "resonate:schedule": schedule.id, "resonate:invocation": "true"}
    return promise_id, clamp_add(at, schedule.promise_timeout), tags


def _check_size(schedule: Schedule, req: CreateScheduleRequest, limit: int) -> None:
    """400 if the schedule, or a promise it creates, would take more than ``limit`` bytes in replies.

    The promise is measured with the widest fire time and timeout an occurrence can have.
    """
    fields = {
        "id": req.id,
        "description": req.description,
        "cron": req.cron,
        "tags": req.tags,
        "promiseId": req.promise_id,
        "promiseParam": req.promise_param,
        "promiseTags": req.promise_tags,
        "idempotencyKey": req.idempotency_key,
    }
    sizes.check_schedule(schedule, limit, fields)
    promise_id, _, tags = _occurrence(schedule, INT64_MAX)
    widest = Promise(
        id=promise_id,
        state=PromiseState.PENDING,
        param=schedule.promise_param,
        timeout=INT64_MIN,
        tags=tags,
        created_on=INT64_MIN,
    )
    sizes.check_promise(
        widest,
        limit,
        lambda: {"promiseId": promise_id, "promiseParam": req.promise_param, "promiseTags": req.promise_tags},
        id_field="promiseId",
    )


def _not_found() -> ResonateError:
    return ResonateError.from_status(Status.SCHEDULE_NOT_FOUND)


def read(tx: Tx, req: ReadScheduleRequest) -> Result:
    schedule = tx.state.schedules.get(req.id)
    if schedule is None:
        raise _not_found()
    return Result(Status.OK, ScheduleResponse(schedule))


def validate_search(req: SearchSchedulesRequest, settings: CoreSettings) -> None:
    if req.cursor:
        return
    require(req.id, "id")
    promises.validate_limit(req.limit)


def search(tx: Tx, req: SearchSchedulesRequest) -> Result:
    """Matching schedules, newest first; pages are cut by work and by size as in ``promises.search``."""
    secret = tx.config.cursor_secret
    if req.cursor:
        query = decode_cursor(secret, "schedules", req.cursor)
        pattern, tags, limit, before = query["id"], query["tags"], query["limit"], query["before"]
    else:
        pattern, tags, limit, before = req.id, req.tags, req.limit or 100, None
    candidates = tx.state.search_schedules(pattern, before, tx.config.search_scan_limit)
    found, below = take_page(candidates, lambda s: s if tags_match(s.tags, tags) else None, limit)
    query = {"id": pattern, "tags": tags, "limit": limit}
    found, cursor = sizes.search_page(tx.config, found, below, sizes.json_bytes, sizes.json_bytes, "schedules", query)
    return Result(Status.OK, SearchSchedulesResponse(found, cursor))


def validate_create(req: CreateScheduleRequest, settings: CoreSettings) -> None:
    require(req.id, "id")
    if not req.cron:
        raise BadRequest("validation error: payload.cron is required")
    try:
        parse_cron(req.cron)
    except CronError as exc:
        raise _invalid_cron(exc) from None
    require(req.promise_id, "promiseId")
    _check_template(req.promise_id)


def _invalid_cron(exc: CronError) -> BadRequest:
    return BadRequest(f"validation error: the field cron must be a valid cron expression ({exc})")


def create(tx: Tx, req: CreateScheduleRequest) -> Result:
    stored = tx.state.schedules.get(req.id)
    if stored is not None:
        if stored.idempotency_key is not None and stored.idempotency_key == req.idempotency_key:
            return Result(Status.OK, ScheduleResponse(stored))
        raise ResonateError.from_status(Status.SCHEDULE_ALREADY_EXISTS)
    try:
        next_run_time = parse_cron(req.cron).next_after(tx.now)
    except CronError as exc:
        raise _invalid_cron(exc) from None
    schedule = Schedule(
        id=req.id,
        description=req.description,
        cron=req.cron,
        tags=req.tags,
        promise_id=req.promise_id,
        promise_timeout=req.promise_timeout,
        promise_param=req.promise_param,
        promise_tags=req.promise_tags,
        next_run_time=next_run_time,
        idempotency_key=req.idempotency_key or None,
        created_on=tx.now,
        sort_id=tx.state.schedule_seq + 1,
    )
    if tx.config.max_promise_bytes:
        _check_size(schedule, req, tx.config.max_promise_bytes)
    tx.put(PutSchedule(schedule))
    return Result(Status.CREATED, ScheduleResponse(schedule))


def delete(tx: Tx, req: DeleteScheduleRequest) -> Result:
    if req.id not in tx.state.schedules:
        raise _not_found()
    tx.put(DeleteSchedule(req.id))
    return Result(Status.NO_CONTENT, EmptyResponse())


def fire_schedules(tx: Tx, batch: int) -> int:
    """Fire up to ``batch`` due occurrences, earliest first (7.3); returns how many fired."""
    fired = 0
    for schedule_id in tx.state.schedule_fires.drain_due(tx.now, batch):
        schedule = tx.state.schedules[schedule_id]
        at = schedule.next_run_time
        try:
            following = parse_cron(schedule.cron).next_after(at)
        except CronError as exc:
            log.error(
                "schedule %r (cron %r): %s; it stays stored but will not fire again", schedule.id, schedule.cron, exc
            )
            tx.put(PutSchedule(attrs.evolve(schedule, next_run_time=INT64_MAX)))
            continue
        promise_id, timeout, tags = _occurrence(schedule, at)
        if promise_id in tx.state.promises:
            log.warning("schedule %r: promise %r already exists; skipping the occurrence at %d", schedule.id, promise_id, at)
        else:
            created = promise_transition(ABSENT, PromiseAction.CREATE)
            promises.insert(
                tx, state=created.to, id=promise_id, timeout=timeout, param=schedule.promise_param, tags=tags, key=None
            )
        advanced = attrs.evolve(schedule, last_run_time=at, next_run_time=following)
        tx.put(PutSchedule(advanced))
        fired += 1
    return fired
