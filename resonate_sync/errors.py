"""Statuses and the one error family every layer raises.

The core speaks in 5-digit kernel statuses (PROTOCOL.md 1.5); the envelope carries
``code = status // 100`` and the status text. 4xx are protocol outcomes, never logged as
errors; 5xx are failures, logged with context by whoever catches them.

A client's transport raises :class:`ConnectionFailed` and :class:`RequestTimeout` (both 503),
and wraps a failure another attempt may mend in :class:`Retryable`.
"""

import enum

__all__ = [
    "Status",
    "ResonateError",
    "BadRequest",
    "Forbidden",
    "NotFound",
    "AlreadyExists",
    "Unavailable",
    "InternalError",
    "RequestTimeout",
    "StoreUnavailable",
    "ConnectionFailed",
    "Retryable",
]


class Status(enum.IntEnum):
    """Kernel statuses with their exact texts (PROTOCOL.md 1.5)."""

    def __new__(cls, value: int, text: str) -> "Status":
        member = int.__new__(cls, value)
        member._value_ = value
        member.text = text
        return member

    OK = 20000, "OK"
    CREATED = 20100, "Created"
    NO_CONTENT = 20400, "No content"

    FIELD_VALIDATION_ERROR = 40000, "The request is invalid"
    PROMISE_ALREADY_RESOLVED = 40300, "The promise has already been resolved"
    PROMISE_ALREADY_REJECTED = 40301, "The promise has already been rejected"
    PROMISE_ALREADY_CANCELED = 40302, "The promise has already been canceled"
    PROMISE_ALREADY_TIMEDOUT = 40303, "The promise has already timedout"
    LOCK_ALREADY_ACQUIRED = 40304, "The lock is already acquired"
    TASK_ALREADY_CLAIMED = 40305, "The task is already claimed"
    TASK_ALREADY_COMPLETED = 40306, "The task is already completed"
    TASK_INVALID_COUNTER = 40307, "The task counter is invalid"
    TASK_INVALID_STATE = 40308, "The task state is invalid"
    PROMISE_NOT_FOUND = 40400, "The specified promise was not found"
    SCHEDULE_NOT_FOUND = 40401, "The specified schedule was not found"
    LOCK_NOT_FOUND = 40402, "The specified lock was not found"
    TASK_NOT_FOUND = 40403, "The specified task was not found"
    PROMISE_ALREADY_EXISTS = 40900, "The specified promise already exists"
    SCHEDULE_ALREADY_EXISTS = 40901, "The specified schedule already exists"
    INTERNAL_SERVER_ERROR = 50000, "There was an internal server error"
    STORE_ERROR = 50004, "There was an error in the store subsystem"
    SYSTEM_SHUTTING_DOWN = 50300, "The system is shutting down"
    API_SUBMISSION_QUEUE_FULL = 50301, "The api submission queue is full"
    NOT_LEADER = 50302, "This instance is not the leader: retry, the leader will answer"

    @property
    def code(self) -> int:
        """The envelope's HTTP-style code: 400, 403, 404, 409, 500 or 503."""
        return self.value // 100

    @property
    def is_success(self) -> bool:
        return self.value < 30000


class ResonateError(Exception):
    """An operation did not succeed; carries the envelope ``code`` and a message.

    Attributes:
        code: 400, 403, 404, 409, 500 or 503.
        message: the status text for kernel outcomes, or a sentence naming the field and
            the rule for validation failures.
        status: the 5-digit kernel status, when the error is a kernel outcome.
    """

    code = 500

    def __init__(self, message: str, *, status: "Status | None" = None, code: "int | None" = None):
        super().__init__(message)
        self.message = message
        self.status = status
        if code is not None:
            self.code = code
        elif status is not None:
            self.code = status.code

    @classmethod
    def from_status(cls, status: Status) -> "ResonateError":
        """The error of a kernel status, as the subclass matching its code."""
        return _BY_CODE.get(status.code, ResonateError)(status.text, status=status)

    @classmethod
    def from_code(cls, code: int, message: str) -> "ResonateError":
        """The error of an envelope's ``{code, message}``, as the subclass matching the code."""
        return _BY_CODE.get(code, ResonateError)(message, code=code)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r})"


class BadRequest(ResonateError):
    """400: the request is malformed or breaks a field rule; the message names the field."""

    code = 400


class Forbidden(ResonateError):
    """403: the resource's state forbids the operation (already completed, lock held, …)."""

    code = 403


class NotFound(ResonateError):
    """404: the promise, schedule, lock or task does not exist."""

    code = 404


class AlreadyExists(ResonateError):
    """409: a promise or schedule with that id exists and the idempotency key does not match."""

    code = 409


class InternalError(ResonateError):
    """500: a failure of the server itself (a bug, or the journal could not write)."""

    code = 500


class Unavailable(ResonateError):
    """503: the server is shutting down or overloaded; retry later."""

    code = 503


class StoreUnavailable(Exception):
    """Raised by a store that may not take or confirm a write here (a replicated store's
    standby, or a leader that was fenced): the request is answered 503 :data:`Status.NOT_LEADER`,
    which a client retries, instead of 500, and the state is rebuilt from the store."""


class RequestTimeout(Unavailable):
    """503: no reply within the request timeout; the operation may or may not have taken effect."""


class ConnectionFailed(Unavailable):
    """503: NATS is unreachable, refused the credentials, or the connection was lost (or closed)."""


class NoServer(Unavailable):
    """503: NATS is reachable, but it answered that no server listens on the subject (no responders)."""


class Retryable(Exception):
    """An attempt at a request failed and another may succeed; raised by a client's transport.

    Attributes:
        error: the error the caller gets when no attempt succeeds.
        delivered: whether a server may have received the request and acted on it; if so, only
            an idempotent operation is tried again.
    """

    def __init__(self, error: ResonateError, delivered: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.delivered = delivered


_BY_CODE = {400: BadRequest, 403: Forbidden, 404: NotFound, 409: AlreadyExists, 500: InternalError, 503: Unavailable}
