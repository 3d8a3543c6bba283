"""The operations as the wire API names them: the envelope's ``operation``, the kernel name
each reply's ``Metadata.name`` carries, and the older payload field names still accepted.

The core knows the operations (``resonate_sync.core.OPERATIONS``: request type, validation,
handler); this table adds what only the envelope needs.
"""

from typing import Mapping, Tuple

import attrs

from ..core import OPERATIONS, Operation

__all__ = ["ROUTES", "Route"]


@attrs.frozen
class Route:
    """How one operation is called over the wire.

    Attributes:
        operation: the core's operation (its ``name`` is the envelope's ``operation``).
        kernel_name: ``Metadata.name`` in replies (``CreatePromise``).
        aliases: (payload field, older name) pairs: the older name is read when the field is absent.
    """

    operation: Operation
    kernel_name: str
    aliases: Tuple[Tuple[str, str], ...] = ()


def _route(name: str, kernel_name: str, aliases: Tuple[Tuple[str, str], ...] = ()) -> Route:
    return Route(OPERATIONS[name], kernel_name, aliases)


ROUTES: Mapping[str, Route] = {
    route.operation.name: route
    for route in (
        _route("promises.read", "ReadPromise"),
        _route("promises.search", "SearchPromises"),
        _route("promises.create", "CreatePromise"),
        _route("promises.createtask", "CreatePromiseAndTask"),
        _route("promises.complete", "CompletePromise"),
        _route("promises.callback", "CreateCallback"),
        _route("promises.subscribe", "CreateCallback"),
        _route("schedules.read", "ReadSchedule"),
        _route("schedules.search", "SearchSchedules"),
        _route("schedules.create", "CreateSchedule", aliases=(("description", "desc"),)),
        _route("schedules.delete", "DeleteSchedule"),
        _route("locks.acquire", "AcquireLock", aliases=(("ttl", "expiryInMilliseconds"),)),
        _route("locks.release", "ReleaseLock"),
        _route("locks.heartbeat", "HeartbeatLocks"),
        _route("tasks.claim", "ClaimTask", aliases=(("ttl", "frequency"),)),
        _route("tasks.complete", "CompleteTask"),
        _route("tasks.drop", "DropTask"),
        _route("tasks.heartbeat", "HeartbeatTasks"),
    )
}
"""Every operation the envelope's ``operation`` may name, by that name."""
