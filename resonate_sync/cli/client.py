"""The operator commands of ``resonate``: ``promises``, ``schedules``, ``tasks`` and ``locks``.

Together they reach every operation of the protocol (PROTOCOL.md section 3).

Each command makes one :class:`~resonate_sync.client.Client` call (a search with ``--all`` makes
one per page) and prints the result: a human-readable table by default, one JSON document with
``--json``. The JSON mirrors what the Python client returns, in the protocol's wire form:

* a read prints the object (``promises get`` → the promise, ``locks acquire`` → the lock);
* a param or value (``param``, ``value``, ``promiseParam``) keeps the wire's ``data``, base64, and
  gains ``text``, the same bytes decoded, when they are UTF-8 (absent otherwise):
  ``{"headers": {…}, "data": "aGk=", "text": "hi"}``;
* a write whose outcome can be "nothing changed" prints ``{"promise"|"schedule"|"task": …,
  "created": true|false}`` (``created``: the server answered 20100; false is an idempotent replay);
* a search prints ``{"promises"|"schedules": […], "cursor": …}`` (``cursor`` absent on the last page);
* ``promises create-task`` adds ``"task"`` (absent when no task was created);
* ``promises callback``/``subscribe`` print ``{"promise": …, "callback": …, "created": …}``
  (``callback`` absent when nothing was registered: already registered, or the promise is completed);
* ``tasks claim`` prints the claim payload (``task``, ``rootPromise``, ``leafPromise``, hrefs);
* ``tasks heartbeat`` and ``locks heartbeat`` print ``{"tasksAffected"|"locksAffected": n}``;
* ``schedules delete`` and ``locks release`` print ``{}``.

Options every command takes, after the command or before it (``resonate --addr URL promises get
x``); given in both places, the one after the command wins:

* ``--addr``: the NATS URL; default from ``RESONATE_API_NATS_ADDR``, else ``resonate.yaml`` in the
  working directory (``api.subsystems.nats.addr``), else ``nats://localhost:4222``: the same
  layers ``resonate serve`` reads, so a client run next to a server finds it.
* ``--subject``: likewise (``RESONATE_API_NATS_SUBJECT``; default ``resonate.server``).
* TLS for ``tls://`` addresses comes from the same layers, without flags of its own:
  ``RESONATE_API_NATS_TLS_CA``/``_CERT``/``_KEY``/``_VERIFY`` or ``api.subsystems.nats.tls.*``;
  so does a NATS identity: ``RESONATE_API_NATS_CREDS`` (a ``.creds`` file) or
  ``RESONATE_API_NATS_NKEY`` (an NKey seed file), or ``api.subsystems.nats.creds``/``nkey``.
* ``--request-timeout``: how long each attempt waits for the reply, a Go duration; default from
  ``RESONATE_REQUEST_TIMEOUT``, else 5s. It is not ``--timeout``: in the protocol ``timeout``
  is a promise's deadline, and ``promises create --timeout`` keeps that meaning (as the Go
  CLI's does).
* ``--json``: machine-readable output.

``promises read`` and ``schedules read`` are the same commands as ``get``, under the
operations' names.

Durations (``--ttl``, ``--promise-timeout``, ``--request-timeout``) are Go durations (``30s``,
``1h30m``); a number without a unit is refused, with the spelling to use. Deadlines (the
``--timeout`` of ``promises create``, ``create-task``, ``callback`` and ``subscribe``, and
``--task-timeout``) are a Go duration from now, an RFC 3339 time (``2026-12-31T00:00:00Z``,
``2026-12-31T09:00:00+09:00``), or a number of milliseconds since the epoch from 2000 on, as on
the wire; a smaller number is surely a duration and is refused, naming the 1970 time it would
have been (`resonate_sync.times` has the rules). A receiver (``--recv``) is a string, such as
``nats://<subject>``, or a JSON object ``{"type": …, "data": {…}}`` (PROTOCOL.md 2.8).

Exit codes: 0 on success; 1 when the server answers an error (on stderr: ``Error 404: The
specified promise was not found``) or cannot be reached (``Error: NATS is not reachable at URL
…``, without a code: no server answered, and with what to do); 2 for usage and configuration
errors.
"""

import functools
import inspect
import json
import os
import time
import urllib.parse
from typing import Annotated, Any, Callable, Dict, List, Optional, Tuple

import typer

from resonate_sync.cli.help import Command, Group
from resonate_sync.cli.render import (
    callback_table,
    columns,
    fail,
    lock_table,
    next_page_hint,
    page_document,
    pairs_text,
    promise_table,
    schedule_table,
    sections,
    show,
    status_table,
    task_table,
    when,
)
from resonate_sync.config import SETTINGS_BY_FIELD, ConfigError, find_config_file, identity_settings, load_config
from resonate_sync.errors import ResonateError
from resonate_sync.models import Value, unstructure
from resonate_sync.times import deadline_ms, duration_ms
from resonate_sync.urls import redact_url

__all__ = ["CLIENT_COMMANDS", "CLIENT_FLAGS", "add_client_commands", "client_options"]

_PANEL = "Connection and output"

CLIENT_FLAGS: Dict[str, str] = {}
"""The parameter name of each option every client command takes, and its flag."""


def _common(name: str, default: Any, kind: Any, flag: str, help: str, **option: Any) -> inspect.Parameter:
    """One option every client command takes (keyword-only, so it may follow any command's own)."""
    CLIENT_FLAGS[name] = flag
    annotation = Annotated[kind, typer.Option(flag, help=help, rich_help_panel=_PANEL, **option)]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


_COMMON = [
    _common(
        "addr", None, Optional[str], "--addr", metavar="URL", show_default=False,
        help="NATS server URL (nats://, tls://, optionally user:pass@). Default: env"
             " RESONATE_API_NATS_ADDR, else resonate.yaml, else nats://localhost:4222. TLS files"
             " come from RESONATE_API_NATS_TLS_CA/_CERT/_KEY/_VERIFY or resonate.yaml.",
    ),
    _common(
        "subject", None, Optional[str], "--subject", metavar="SUBJECT", show_default=False,
        help="The server's request subject. Default: env RESONATE_API_NATS_SUBJECT, else"
             " resonate.yaml, else resonate.server.",
    ),
    _common(
        "request_timeout", None, Optional[str], "--request-timeout", metavar="DURATION", show_default=False,
        help="How long to wait for the server's reply (Go duration: 500ms, 5s, 1m). Default: env"
             " RESONATE_REQUEST_TIMEOUT, else 5s.",
    ),
    _common(
        "json_output", False, bool, "--json", show_default=False,
        help="Print one JSON document (wire field names; a param or value also as \"text\" when it is"
             " UTF-8), not a table.",
    ),
]  # fmt: skip

_REQUEST_TIMEOUT_ENV = "RESONATE_REQUEST_TIMEOUT"


def client_options() -> List[inspect.Parameter]:
    """The options every client command takes, as parameters a command function can take too.

    ``resonate`` itself takes them, so that they may come before the command; `_command`
    reads them from the root context when the command's own were not given.
    """
    return list(_COMMON)


# --------------------------------------------------------------------------------------------
# The session every command shares


def _no_server_hint() -> str:
    """What to do when NATS answers that no resonate server listens on the subject."""
    return (
        "Is the resonate server running (`resonate dev` or `resonate serve`) on this NATS, and on this"
        " subject? It serves the one in its --api-nats-subject; give the same here with --subject (or"
        " RESONATE_API_NATS_SUBJECT). `resonate status` lists the servers it can find."
    )


def _cannot_connect(url: str, message: str) -> str:
    """Why the client could not connect to NATS at ``url``, and, when nothing answers there, what to do."""
    from resonate_sync.transport import is_reachable, redact_url

    if is_reachable(url):  # NATS is there and refused us: credentials, TLS
        return message
    where = redact_url(url)
    reason = message.split(f"{where}: ", 1)[-1]
    if urllib.parse.urlsplit(url).hostname in ("localhost", "127.0.0.1", "::1"):
        remedy = (
            "Is `resonate dev` running? Start it (it brings its own NATS), or give --addr (or"
            " RESONATE_API_NATS_ADDR) the NATS address your resonate server uses."
        )
    else:
        remedy = "Check the address (--addr or RESONATE_API_NATS_ADDR) and that the NATS server there is up."
    return f"NATS is not reachable at {where} ({reason}), so no resonate server answers there. {remedy}"


class _Session:
    """Where to connect, how long to wait and how to print, for one command."""

    def __init__(
        self, addr: Optional[str], subject: Optional[str], request_timeout: Optional[str], json_output: bool
    ) -> None:
        self.as_json = json_output
        where = "--request-timeout"
        if request_timeout is None and os.environ.get(_REQUEST_TIMEOUT_ENV):  # empty counts as unset, as for the server
            request_timeout, where = os.environ[_REQUEST_TIMEOUT_ENV], _REQUEST_TIMEOUT_ENV
        self.timeout_s = _duration_ms(request_timeout or "5s", where) / 1000
        if self.timeout_s <= 0:
            raise typer.BadParameter("must be more than 0", param_hint=where)
        for value, field, flag in ((addr, "nats_addr", "--addr"), (subject, "nats_subject", "--subject")):
            try:
                if value is not None:
                    SETTINGS_BY_FIELD[field].kind.check(value)
            except ValueError as error:
                raise typer.BadParameter(str(error), param_hint=flag) from None
        try:
            config = load_config(
                mode="dev",
                config_file=find_config_file(None),
                env=os.environ,
                overrides={"nats_addr": addr, "nats_subject": subject},
            )
        except ConfigError as error:
            raise fail(str(error)) from None
        self.config = config
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from resonate_sync.client import Client  # the transport is imported only by commands that talk

            self._client = Client(transport=self.connect(), timeout=self.timeout_s)
        return self._client

    def connect(self):
        """A NATS connection to the configured address (the caller closes it); exits saying why if none."""
        from resonate_sync.client import ConnectionFailed
        from resonate_sync.transport.client import NatsClientTransport
        from resonate_sync.transport.credentials import CredentialsError

        config = self.config
        try:
            return NatsClientTransport(
                config.nats_addr,
                config.nats_subject,
                name="resonate-cli",
                tls_cacert=config.nats_tls_ca or None,
                tls_client_cert=config.nats_tls_cert or None,
                tls_client_key=config.nats_tls_key or None,
                tls_verify=config.nats_tls_verify,
                user_credentials=config.nats_creds or None,
                nkeys_seed=config.nats_nkey or None,
            )
        except CredentialsError as error:
            where = identity_settings(config, flags=False)
            raise fail(f"cannot use the NATS credentials of {where}: {error}") from None
        except ValueError as error:  # an unreadable TLS file: a configuration error
            raise fail(str(error)) from None
        except ConnectionFailed as error:
            typer.echo(f"Error: {_cannot_connect(config.nats_addr, error.message)}", err=True)
            raise typer.Exit(1) from None

    def run(self, command: Callable[..., None], arguments: Dict[str, Any]) -> None:
        from resonate_sync.errors import ConnectionFailed, NoServer, RequestTimeout

        try:
            command(self, **arguments)
        except ConnectionFailed as error:  # no server answered: a code would look like its answer
            typer.echo(f"Error: {error.message}", err=True)
            raise typer.Exit(1) from None
        except NoServer as error:
            typer.echo(f"Error: {error.message}. {_no_server_hint()}", err=True)
            raise typer.Exit(1) from None
        except RequestTimeout as error:  # the request may have been served: say so, not a 503
            typer.echo(
                f"Error: {error.message}; the server may or may not have carried it out (retry with an"
                " idempotency key, or read the state back). Raise --request-timeout for slow calls.",
                err=True,
            )
            raise typer.Exit(1) from None
        except ResonateError as error:
            typer.echo(f"Error {error.code}: {error.message}", err=True)
            raise typer.Exit(1) from None
        finally:
            if self._client is not None:
                self._client.close()

    def show(self, document: Any, heading: str = "", table: str = "") -> None:
        """Print ``document`` as JSON, or the heading and table for people."""
        show(document, heading, table, as_json=self.as_json)


_CONTEXT = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)


def _command(group: typer.Typer, name: str, alias: str = "") -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``fn(session, **own options)`` as ``group name`` (and ``group alias``) with the common options added."""

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(fn).parameters.values())[1:]

        @functools.wraps(fn)
        def command(ctx: typer.Context, **arguments: Any) -> None:
            before = ctx.find_root().params  # the same options given before the command
            given = {p.name: arguments.pop(p.name) for p in _COMMON}
            session = _Session(**{key: value or before.get(key) or value for key, value in given.items()})
            session.run(fn, arguments)

        command.__signature__ = inspect.Signature([_CONTEXT, *own, *_COMMON])  # type: ignore[attr-defined]
        group.command(name, cls=Command)(command)
        if alias:
            group.command(alias, cls=Command, help=f"Same as {name}.")(command)
        return fn

    return decorate


# --------------------------------------------------------------------------------------------
# Reading options


def _pairs(values: Optional[List[str]], flag: str) -> Dict[str, str]:
    """``["a=1", "b=2"]`` → ``{"a": "1", "b": "2"}``; anything without ``=`` is a usage error."""
    pairs: Dict[str, str] = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=flag)
        pairs[key] = value
    return pairs


def _duration_ms(text: str, flag: str) -> int:
    try:
        return duration_ms(text)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=flag) from None


def _deadline_ms(text: str, flag: str) -> int:
    """A deadline: a Go duration from now, an RFC 3339 time, or ms since the epoch from 2000 on."""
    try:
        return deadline_ms(text, time.time_ns() // 1_000_000)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=flag) from None


def _value(data: Optional[str], headers: Optional[List[str]], flag: str) -> Value:
    return Value.of(data, _pairs(headers, flag))


def _recv(text: str, flag: str) -> Any:
    """A receiver: text starting with ``{`` is a JSON object ``{"type", "data"}``, anything else a string."""
    if not text.strip():
        raise typer.BadParameter("must not be empty", param_hint=flag)
    if not text.lstrip().startswith("{"):
        return text
    try:
        recv = json.loads(text)
    except ValueError as error:
        raise typer.BadParameter(f"not a JSON object: {error}", param_hint=flag) from None
    if not isinstance(recv, dict) or not isinstance(recv.get("type"), str) or not recv["type"]:
        needs_type = 'a JSON receiver needs a "type", as in {"type": "nats", "data": {…}}'
        raise typer.BadParameter(needs_type, param_hint=flag)
    return recv


def _search(search: Callable[..., Any], everything: bool, **query: Any) -> Tuple[List[Any], Optional[str]]:
    """One page, or with ``everything`` every page from there on; returns the items and the next cursor."""
    page = search(**query)
    items = list(page.items)
    while everything and page.cursor:
        page = search(cursor=page.cursor)
        items.extend(page.items)
    return items, page.cursor


# --------------------------------------------------------------------------------------------
# Shared option types


IdArg = Annotated[str, typer.Argument(metavar="ID", show_default=False)]
Data = Annotated[Optional[str], typer.Option("--data", metavar="TEXT", help="Data, as UTF-8 text.", show_default=False)]
Headers = Annotated[
    Optional[List[str]],
    typer.Option("--header", metavar="KEY=VALUE", help="A header of the data; repeat for more.", show_default=False),
]
Tags = Annotated[
    Optional[List[str]], typer.Option("--tag", metavar="KEY=VALUE", help="A tag; repeat for more.", show_default=False)
]
IdempotencyKey = Annotated[
    Optional[str],
    typer.Option(
        "--idempotency-key", metavar="KEY", show_default=False,
        help="Repeating the request with the same key returns the stored result instead of a conflict.",
    ),
]
Strict = Annotated[
    bool, typer.Option("--strict", help="With --idempotency-key: a replay only succeeds while the promise is pending.")
]
Limit = Annotated[
    Optional[int],
    typer.Option("--limit", metavar="N", min=1, max=100, help="Results per page (default 100).", show_default=False),
]
Cursor = Annotated[
    Optional[str], typer.Option("--cursor", metavar="CURSOR", help="Continue a previous search.", show_default=False)
]
All = Annotated[bool, typer.Option("--all", help="Follow the cursors: print every page.")]
# PATTERN, not [PATTERN]: recent typers put an optional argument's brackets around its metavar themselves.
Pattern = Annotated[str, typer.Argument(metavar="PATTERN", help="Ids to match; * matches anything.")]
Counter = Annotated[
    int,
    typer.Option("--counter", metavar="N", help="The task's counter (from its message or claim).", show_default=False),
]
Ttl = Annotated[str, typer.Option("--ttl", metavar="DURATION", help="Lease length, a Go duration (30s, 1m, 1h).")]
_DEADLINE_FORMS = (
    "a duration from now (30s, 1h, 2h45m), an RFC 3339 time (2026-12-31T00:00:00Z, 2026-12-31T09:00:00+09:00)"
    " or milliseconds since the epoch from 2000 on (1798675200000); a smaller number is refused, since it is"
    " surely a duration"
)
PromiseTimeout = Annotated[str, typer.Option(
    "--timeout", metavar="DEADLINE", show_default=False, help=f"When the promise times out: {_DEADLINE_FORMS}.",
)]
TaskDeadline = Annotated[str, typer.Option(
    "--timeout", metavar="DEADLINE", show_default=False,
    help="The deadline of the task sent when the promise completes, usually the promise's own timeout:"
         f" {_DEADLINE_FORMS}. If it has passed by then, the task times out and no message is ever sent.",
)]
Recv = Annotated[str, typer.Option(
    "--recv", metavar="RECV", show_default=False,
    help="Where the message goes (PROTOCOL.md 2.8): a string, such as a receiver URL (nats://<subject>,"
         " poll://any@<group>, http://host/path) or a target name (default); or a JSON object"
         ' {"type": …, "data": {…}}, e.g. \'{"type": "nats", "data": {"subject": "workers"}}\'.'
         " It is resolved when the message is sent, not now.",
)]
ProcessId = Annotated[str, typer.Option(
    "--process-id", metavar="ID", show_default=False,
    help="The process whose leases to extend (as given when claiming or acquiring).",
)]


# --------------------------------------------------------------------------------------------
# promises


promises = typer.Typer(
    cls=Group,
    name="promises",
    help="Read, create, complete and search durable promises; wait for them with callbacks and subscriptions.",
    no_args_is_help=True,
)


@_command(promises, "get", alias="read")
def promises_get(session: _Session, id: IdArg) -> None:
    """Show one promise (timed out first if its deadline has passed)."""
    promise = session.client.promises_read(id)
    session.show(unstructure(promise), table=promise_table(promise))


@_command(promises, "create")
def promises_create(
    session: _Session,
    id: IdArg,
    timeout: PromiseTimeout,
    data: Data = None,
    header: Headers = None,
    tag: Tags = None,
    idempotency_key: IdempotencyKey = None,
    strict: Strict = False,
) -> None:
    """Create a pending promise.

    Example: resonate promises create order-42 --timeout 1h --data '{"qty": 3}' --tag team=shop
    """
    deadline, param, tags = _deadline_ms(timeout, "--timeout"), _value(data, header, "--header"), _pairs(tag, "--tag")
    promise, created = session.client.promises_create(id, deadline, param, tags, idempotency_key, strict)
    heading = f"Created promise {id}." if created else f"Promise {id} already exists with this key; unchanged."
    session.show({"promise": unstructure(promise), "created": created}, heading, promise_table(promise))


@_command(promises, "create-task")
def promises_create_task(
    session: _Session,
    id: IdArg,
    timeout: PromiseTimeout,
    process_id: Annotated[str, typer.Option(
        "--process-id", metavar="ID", show_default=False,
        help="The process the task is claimed for: resonate tasks heartbeat --process-id ID extends the lease.",
    )],
    ttl: Ttl = "1m",
    task_timeout: Annotated[Optional[str], typer.Option(
        "--task-timeout", metavar="DEADLINE", show_default=False,
        help=f"When the task times out: {_DEADLINE_FORMS}. Default: the promise's --timeout.",
    )] = None,
    data: Data = None,
    header: Headers = None,
    tag: Tags = None,
    idempotency_key: IdempotencyKey = None,
    strict: Strict = False,
) -> None:
    """Create a pending promise and its invoke task, already claimed for --process-id (counter 1).

    A task is created only for a new promise with a resonate:invoke tag; without one, only the promise.

    The tag's value is where the task goes if the claim lapses: --tag resonate:invoke=nats://workers.

    Example: resonate promises create-task order-42 --timeout 1h --process-id worker-1 --tag resonate:invoke=default
    """
    deadline, param, tags = _deadline_ms(timeout, "--timeout"), _value(data, header, "--header"), _pairs(tag, "--tag")
    lease = _duration_ms(ttl, "--ttl")
    task_deadline = _deadline_ms(task_timeout, "--task-timeout") if task_timeout is not None else 0
    promise, task, created = session.client.promises_createtask(
        id, deadline, process_id, lease, task_deadline, param, tags, idempotency_key, strict
    )
    if not created:
        heading = f"Promise {id} already exists with this key; unchanged, no task created."
    elif task is None:
        heading = f"Created promise {id}; no task: it has no resonate:invoke tag."
    else:
        heading = f"Created promise {id} and task {task.id} (counter {task.counter}), claimed by {process_id}."
    document = {"promise": unstructure(promise), **({"task": unstructure(task)} if task else {}), "created": created}
    session.show(document, heading, sections(promise_table(promise), ("task", task_table, task)))


def _complete_command(name: str, state: str, verb: str, done: str) -> None:
    def complete(
        session: _Session,
        id: IdArg,
        data: Data = None,
        header: Headers = None,
        idempotency_key: IdempotencyKey = None,
        strict: Strict = False,
    ) -> None:
        value = _value(data, header, "--header")
        promise, created = session.client.promises_complete(id, state, value, idempotency_key, strict)
        heading = f"{done} promise {id}." if created else f"Promise {id} was already {promise.state}; unchanged."
        session.show({"promise": unstructure(promise), "created": created}, heading, promise_table(promise))

    complete.__doc__ = f"""{verb} a pending promise: its state becomes {state}.

    Forbidden (403) if it was already completed differently; with the same --idempotency-key a
    repeat succeeds without changing anything.
    """
    _command(promises, name)(complete)


_complete_command("resolve", "RESOLVED", "Resolve", "Resolved")
_complete_command("reject", "REJECTED", "Reject", "Rejected")
_complete_command("cancel", "REJECTED_CANCELED", "Cancel", "Canceled")


@_command(promises, "search")
def promises_search(
    session: _Session,
    pattern: Pattern = "*",
    state: Annotated[Optional[List[str]], typer.Option(
        "--state", metavar="STATE", show_default=False,
        help="pending, resolved, rejected (all three rejected states), rejected_canceled or"
             " rejected_timedout; repeat for more.",
    )] = None,
    tag: Tags = None,
    limit: Limit = None,
    cursor: Cursor = None,
    all_pages: All = False,
) -> None:
    """List promises whose id matches PATTERN, newest first.

    Example: resonate promises search 'order-*' --state pending --tag team=shop
    """
    query = {"id": pattern, "states": [s.upper() for s in state or ()], "tags": _pairs(tag, "--tag"), "limit": limit}
    items, next_cursor = _search(session.client.promises_search, all_pages, cursor=cursor, **query)
    rows = [[p.id, p.state, when(p.timeout), when(p.created_on), pairs_text(p.tags)] for p in items]
    table = columns(["ID", "STATE", "TIMEOUT", "CREATED", "TAGS"], rows) if rows else "No promises found."
    session.show(page_document("promises", items, next_cursor), table, next_page_hint("promises search", next_cursor))


def _show_registration(session: _Session, result: Any, kind: str, registered: str, existed: str) -> None:
    """Print a callback or subscription reply: registered now, registered before, or not at all (completed)."""
    promise, callback, created = result
    if created:
        heading = f"Registered {kind} {callback.id}: {registered}."
    elif promise.state != "PENDING":
        heading = f"Promise {promise.id} is already {promise.state}: no {kind} registered; use its value below."
    else:
        heading = f"{existed}; unchanged."
    if callback is None:
        document, table = {"promise": unstructure(promise)}, promise_table(promise)
    else:
        document = {"promise": unstructure(promise), "callback": unstructure(callback)}
        table = sections(callback_table(callback), ("promise", promise_table, promise))
    session.show({**document, "created": created}, heading, table)


@_command(promises, "callback")
def promises_callback(
    session: _Session,
    id: IdArg,
    root_promise_id: Annotated[str, typer.Option(
        "--root-promise-id", metavar="ID", show_default=False,
        help="The promise whose execution waits for ID and is resumed (it must differ from ID).",
    )],
    recv: Recv,
    timeout: TaskDeadline,
) -> None:
    """Register a resume callback: when promise ID completes, a resume task of the root promise goes to --recv.

    Registering it again changes nothing. If ID is already completed, nothing is registered and no task
    will come: the promise is shown instead; use its value.

    Example: resonate promises callback order-42.pay --root-promise-id order-42 --recv nats://workers --timeout 1h
    """
    receiver, deadline = _recv(recv, "--recv"), _deadline_ms(timeout, "--timeout")
    result = session.client.promises_callback(id, root_promise_id, receiver, deadline)
    _show_registration(
        session, result, "callback",
        registered=f"when promise {id} completes, a resume task of {root_promise_id} goes to {recv}",
        existed=f"A callback of {root_promise_id} on promise {id} was already registered",
    )  # fmt: skip


@_command(promises, "subscribe")
def promises_subscribe(
    session: _Session,
    id: IdArg,
    subscription_id: Annotated[str, typer.Option(
        "--subscription-id", metavar="ID", show_default=False,
        help="Your name for the subscription: subscribing again with it changes nothing.",
    )],
    recv: Recv,
    timeout: TaskDeadline,
) -> None:
    """Subscribe to promise ID: when it completes, one notify message carrying it goes to --recv.

    Subscribing again with the same --subscription-id changes nothing. If ID is already completed,
    nothing is registered and no message will come: the promise is shown instead.

    Example: resonate promises subscribe order-42 --subscription-id audit --recv nats://audit --timeout 1h
    """
    receiver, deadline = _recv(recv, "--recv"), _deadline_ms(timeout, "--timeout")
    result = session.client.promises_subscribe(subscription_id, id, receiver, deadline)
    _show_registration(
        session, result, "subscription",
        registered=f"when promise {id} completes, it is sent to {recv}",
        existed=f"Subscription {subscription_id} to promise {id} was already registered",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# schedules


schedules = typer.Typer(cls=Group, name="schedules", help="Create, read, delete and search cron schedules.", no_args_is_help=True)


@_command(schedules, "get", alias="read")
def schedules_get(session: _Session, id: IdArg) -> None:
    """Show one schedule."""
    schedule = session.client.schedules_read(id)
    session.show(unstructure(schedule), table=schedule_table(schedule))


@_command(schedules, "create")
def schedules_create(
    session: _Session,
    id: IdArg,
    cron: Annotated[str, typer.Option(
        "--cron", metavar="EXPR", show_default=False,
        help="5 fields (minute first), 6 (seconds first), a descriptor (@daily) or @every <duration>.",
    )],
    promise_id: Annotated[str, typer.Option(
        "--promise-id", metavar="TEMPLATE", show_default=False,
        help="Id of each promise created; {{.id}} and {{.timestamp}} are replaced at each firing.",
    )],
    promise_timeout: Annotated[str, typer.Option(
        "--promise-timeout", metavar="DURATION",
        help="Each promise times out this long after its firing, a Go duration (30m, 1h, 24h).",
    )] = "1h",
    promise_data: Annotated[Optional[str], typer.Option(
        "--promise-data", metavar="TEXT", show_default=False, help="Param data of each promise (UTF-8 text).",
    )] = None,
    promise_header: Annotated[Optional[List[str]], typer.Option(
        "--promise-header", metavar="KEY=VALUE", show_default=False, help="Param header of each promise; repeat.",
    )] = None,
    promise_tag: Annotated[Optional[List[str]], typer.Option(
        "--promise-tag", metavar="KEY=VALUE", show_default=False, help="Tag of each promise; repeat.",
    )] = None,
    tag: Tags = None,
    description: Annotated[str, typer.Option("--description", metavar="TEXT", show_default=False)] = "",
    idempotency_key: IdempotencyKey = None,
) -> None:
    """Create a schedule that creates a promise at every cron firing.

    Example: resonate schedules create nightly --cron '0 2 * * *' --promise-id 'report.{{.timestamp}}'
    """
    template = {
        "promise_timeout": _duration_ms(promise_timeout, "--promise-timeout"),
        "promise_param": _value(promise_data, promise_header, "--promise-header"),
        "promise_tags": _pairs(promise_tag, "--promise-tag"),
    }
    tags = _pairs(tag, "--tag")
    schedule, created = session.client.schedules_create(
        id, cron, promise_id, tags=tags, description=description, idempotency_key=idempotency_key, **template
    )
    heading = f"Created schedule {id}." if created else f"Schedule {id} already exists with this key; unchanged."
    session.show({"schedule": unstructure(schedule), "created": created}, heading, schedule_table(schedule))


@_command(schedules, "delete")
def schedules_delete(session: _Session, id: IdArg) -> None:
    """Delete a schedule; the promises it already created stay."""
    session.client.schedules_delete(id)
    session.show({}, f"Deleted schedule {id}.")


@_command(schedules, "search")
def schedules_search(
    session: _Session,
    pattern: Pattern = "*",
    tag: Tags = None,
    limit: Limit = None,
    cursor: Cursor = None,
    all_pages: All = False,
) -> None:
    """List schedules whose id matches PATTERN, newest first."""
    query = {"id": pattern, "tags": _pairs(tag, "--tag"), "limit": limit}
    items, next_cursor = _search(session.client.schedules_search, all_pages, cursor=cursor, **query)
    rows = [[s.id, s.cron, s.promise_id, when(s.next_run_time), when(s.last_run_time), pairs_text(s.tags)] for s in items]
    headers = ["ID", "CRON", "PROMISE ID", "NEXT RUN", "LAST RUN", "TAGS"]
    table = columns(headers, rows) if rows else "No schedules found."
    document = page_document("schedules", items, next_cursor)
    session.show(document, table, next_page_hint("schedules search", next_cursor))


# --------------------------------------------------------------------------------------------
# tasks


tasks = typer.Typer(cls=Group, name="tasks", help="Claim, heartbeat, complete and drop tasks by hand.", no_args_is_help=True)


@_command(tasks, "claim")
def tasks_claim(
    session: _Session,
    id: IdArg,
    counter: Counter,
    process_id: Annotated[Optional[str], typer.Option(
        "--process-id", metavar="ID", show_default=False, help="Who claims it. Default: <task id>/<counter>.",
    )] = None,
    ttl: Ttl = "1m",
) -> None:
    """Claim a task: it is yours until the lease ends (extend it with heartbeats), then delivered again."""
    lease = _duration_ms(ttl, "--ttl")
    claim = session.client.tasks_claim(id, counter, process_id, lease)
    table = sections(
        task_table(claim.task),
        ("root promise", promise_table, claim.root_promise),
        ("leaf promise", promise_table, claim.leaf_promise),
    )
    session.show(unstructure(claim), f"Claimed task {id} (counter {claim.task.counter}).", table)


@_command(tasks, "complete")
def tasks_complete(session: _Session, id: IdArg, counter: Counter) -> None:
    """Complete a claimed task. (This does not complete its promise: resolve that first.)"""
    task, created = session.client.tasks_complete(id, counter)
    heading = f"Completed task {id}." if created else f"Task {id} was already completed or timed out; unchanged."
    session.show({"task": unstructure(task), "created": created}, heading, task_table(task))


@_command(tasks, "drop")
def tasks_drop(session: _Session, id: IdArg, counter: Counter) -> None:
    """Give a claimed task back: its counter grows by one and it is delivered again."""
    task, created = session.client.tasks_drop(id, counter)
    heading = (
        f"Dropped task {id}; it is delivered again with counter {task.counter}."
        if created
        else f"Task {id} was not claimed; unchanged."
    )
    session.show({"task": unstructure(task), "created": created}, heading, task_table(task))


def _heartbeat_command(group: typer.Typer, what: str, key: str, send: Callable[[Any, str], int]) -> None:
    def heartbeat(session: _Session, process_id: ProcessId) -> None:
        count = send(session.client, process_id)
        session.show({key: count}, f"Extended {count} {what}{'' if count == 1 else 's'} of process {process_id}.")

    heartbeat.__doc__ = f"""Extend the lease of every {what} of process --process-id by its own ttl; prints how many.

    Send it more often than the shortest ttl: a {what} whose lease ends is taken from the process.
    0 is not an error: the process holds none (any more).
    """
    _command(group, "heartbeat")(heartbeat)


_heartbeat_command(tasks, "task", "tasksAffected", lambda client, process_id: client.tasks_heartbeat(process_id))


# --------------------------------------------------------------------------------------------
# locks


locks = typer.Typer(cls=Group, name="locks", help="Acquire, heartbeat and release locks by hand.", no_args_is_help=True)

ExecutionId = Annotated[
    str, typer.Option("--execution-id", metavar="ID", help="Who holds the lock.", show_default=False)
]


@_command(locks, "acquire")
def locks_acquire(
    session: _Session,
    resource_id: Annotated[str, typer.Argument(metavar="RESOURCE_ID", show_default=False)],
    execution_id: ExecutionId,
    process_id: Annotated[str, typer.Option(
        "--process-id", metavar="ID", show_default=False, help="The process whose heartbeats extend the lock.",
    )],
    ttl: Ttl = "1m",
) -> None:
    """Acquire a lock, or refresh it for the execution that holds it; Forbidden (403) if another holds it."""
    lease = _duration_ms(ttl, "--ttl")
    lock = session.client.locks_acquire(resource_id, execution_id, process_id, lease)
    session.show(unstructure(lock), f"Acquired lock {resource_id} for {execution_id}.", lock_table(lock))


@_command(locks, "release")
def locks_release(
    session: _Session,
    resource_id: Annotated[str, typer.Argument(metavar="RESOURCE_ID", show_default=False)],
    execution_id: ExecutionId,
) -> None:
    """Release a lock held by the execution; NotFound (404) if it holds none."""
    session.client.locks_release(resource_id, execution_id)
    session.show({}, f"Released lock {resource_id}.")


_heartbeat_command(locks, "lock", "locksAffected", lambda client, process_id: client.locks_heartbeat(process_id))


_GROUPS = (promises, schedules, tasks, locks)
CLIENT_COMMANDS = (*(group.info.name for group in _GROUPS), "status")


def serving(replies: List[bytes], subject: str) -> List[Dict[str, Any]]:
    """The ``$SRV.STATS`` documents among ``replies`` of instances whose endpoint is ``subject``, by id."""
    documents = []
    for reply in replies:
        try:
            document = json.loads(reply)
            if any(endpoint.get("subject") == subject for endpoint in document.get("endpoints") or ()):
                documents.append(document)
        except (ValueError, AttributeError, TypeError):
            continue  # not a Services API document: not a server of ours
    return sorted(documents, key=lambda document: str(document.get("id")))


def status(session: _Session) -> None:
    """Show every server answering on the subject: id, version, uptime, requests, errors, average latency.

    Asks the NATS Services API ($SRV.STATS) and waits up to --request-timeout for answers; exits 1 if no server answers on the subject.
    """
    from resonate_sync.transport.micro import API_PREFIX

    config = session.config
    transport = session.connect()
    try:
        replies = transport.gather(f"{API_PREFIX}.STATS.resonate", b"", session.timeout_s)
    finally:
        transport.close()
    instances = serving(replies, config.nats_subject)
    if not instances:
        typer.echo(
            f"Error: no resonate server answers on subject {config.nats_subject!r} at"
            f" {redact_url(config.nats_addr)} (asked $SRV.STATS; {len(replies)} other instances answered)",
            err=True,
        )
        raise typer.Exit(1)
    heading = f"{len(instances)} server{'' if len(instances) == 1 else 's'} on subject {config.nats_subject!r}"
    show(instances, heading, status_table(instances, time.time()), as_json=session.as_json)


def add_client_commands(app: typer.Typer) -> None:
    """Add ``promises``, ``schedules``, ``tasks``, ``locks`` and ``status`` to the ``resonate`` app."""
    for group in _GROUPS:
        app.add_typer(group, rich_help_panel="Client commands")
    _command(app, "status")(status)
