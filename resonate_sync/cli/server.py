"""``resonate serve``, ``resonate dev`` and ``resonate config``: run a server, or show its configuration.

``serve`` and ``dev`` take the same options: the Go server's NATS flags exactly
(``--api-nats-enable``, ``--api-nats-addr``, ``--api-nats-subject``, ``--api-nats-timeout``) plus one
flag per key of `resonate_sync.config.SETTINGS`, from which their help is written. Every option
defaults to None so that only the flags a user typed override the lower layers (defaults <
config file < ``RESONATE_…`` environment). The two commands differ only in their defaults:
``dev`` keeps state in memory and starts an embedded nats-server when nothing listens at the
address; ``serve`` journals to disk and uses the NATS server that is there. ``config show``
takes the same options and prints the configuration they make.

Go-style optional values: ``--api-nats-enable`` and ``--embedded-nats`` may be given alone (true,
always) or with an attached value (``--api-nats-enable=false``, ``--embedded-nats=auto``), as
pflag allows for such flags. A value in the next word (``--api-nats-enable false``) is refused
with a hint instead: pflag would ignore that word, and the server would quietly start with
NATS enabled.

Exit codes: 0 after a graceful stop; 2 for usage and configuration errors (message on stderr,
no traceback) and when NATS is disabled (nothing to serve); otherwise what `Server.run` returns.
"""

import importlib.resources
import inspect
import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from resonate_sync.cli.help import Command, Group
from resonate_sync.cli.render import fail
from resonate_sync.config import (
    DEFAULT_CONFIG_FILE,
    SETTINGS,
    MODES,
    SETTINGS_BY_FIELD,
    ConfigError,
    Setting,
    explain_config,
    find_config_file,
    format_config,
    format_go_duration,
    load_config,
    mode_defaults,
)
from resonate_sync.urls import redact_url

__all__ = ["JsonFormatter", "LOG_FORMAT", "add_config_commands", "add_server_commands", "configure_logging", "normalise_go_flags"]

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_EPILOG = (
    "Precedence, lowest first: defaults < config file < RESONATE_… environment variables < flags."
    " Durations are Go durations (10s, 1m30s, 500ms, 2.5s, 0); a number without a unit is an error."
    " These durations configure the server only: timeouts inside requests are absolute times in"
    " milliseconds since the epoch, chosen by each client."
    " 'resonate config defaults' prints every key with its default (conf/resonate.yaml);"
    " 'resonate config show' the values in effect here."
)

_PANELS = {"api": "NATS API", "nats": "NATS API", "store": "Store", "server": "Server",
           "tasks": "Tasks", "events": "NATS API", "metrics": "Logging and metrics", "log": "Logging and metrics"}


# --------------------------------------------------------------------------------------------
# Go-style flags with an optional attached value


_OPTIONAL_VALUE_FLAGS = {s.flag: s.bare for s in SETTINGS if s.bare is not None}


def normalise_go_flags(args: list[str]) -> list[str]:
    """Rewrite bare optional-value flags to their explicit form before click parses them.

    ``--api-nats-enable`` → ``--api-nats-enable=true``; ``--embedded-nats`` → ``--embedded-nats=always``.
    Raises `ValueError` when such a flag is followed by a separate value word, which pflag
    would not read as its value either.
    """
    out: list[str] = []
    for index, arg in enumerate(args):
        if arg == "--":
            out.extend(args[index:])
            break
        bare = _OPTIONAL_VALUE_FLAGS.get(arg)
        if bare is None:
            out.append(arg)
            continue
        following = args[index + 1] if index + 1 < len(args) else None
        if following is not None and not following.startswith("-"):
            raise ValueError(
                f"{arg} takes its value after '=': write {arg}={following}"
                f" ({arg} alone means {bare})"
            )
        out.append(f"{arg}={bare}")
    return out


class _GoFlagsCommand(Command):
    """A command whose optional-value flags follow pflag's rules (see `normalise_go_flags`)."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        try:
            args = normalise_go_flags(args)
        except ValueError as error:
            raise typer.BadParameter(str(error), ctx=ctx) from None
        return super().parse_args(ctx, args)


# --------------------------------------------------------------------------------------------
# Options, written from the settings table


def _value_text(setting: Setting, value: Any) -> str:
    if setting.field.endswith("_ms"):
        return format_go_duration(value)
    if value is None:
        return "in memory"
    if isinstance(value, bool):
        return "true" if value else "false"
    return '""' if value == "" else str(value)


def _default_text(setting: Setting, mode: Optional[str]) -> str:
    """The default of ``mode``, or with None of each mode: ``X`` when they agree, else ``X (dev), Y (serve)``."""
    texts = {m: _value_text(setting, mode_defaults(m)[setting.field]) for m in ((mode,) if mode else MODES)}
    if len(set(texts.values())) == 1:
        return next(iter(texts.values()))
    return ", ".join(f"{text} ({m})" for m, text in texts.items())


def _option(field: str, mode: Optional[str]) -> Any:
    """The typer option of one setting: its flag, metavar, help and panel."""
    setting = SETTINGS_BY_FIELD[field]
    metavar = setting.kind.metavar
    if setting.bare is not None:
        metavar = f"[={metavar}]"
    help_text = (
        f"{setting.help} Default: {_default_text(setting, mode)}."
        f" Env {setting.env}; config key {setting.key}."
    )
    return typer.Option(
        setting.flag,
        metavar=metavar,
        help=help_text,
        show_default=False,
        rich_help_panel=_PANELS[setting.path[0]],
    )


def _param_name(setting: Setting) -> str:
    return setting.flag.lstrip("-").replace("-", "_")


def _server_command(mode: Optional[str]) -> Any:
    """The ``serve`` or ``dev`` command function; with mode None, ``config show``'s: identical options."""

    def command(
        ctx: typer.Context,
        config: Annotated[Optional[str], typer.Option(
            "--config", metavar="FILE", show_default=False, rich_help_panel="Configuration",
            help=f"YAML config file. Default: {DEFAULT_CONFIG_FILE} in the working directory if"
                 " it exists, else none. 'resonate config defaults' prints one with every key.",
        )] = None,
        show_mode: Annotated[str, typer.Option(
            "--mode", metavar="serve|dev", rich_help_panel="Configuration",
            help="Show the configuration of this command.",
        )] = "serve",
        api_nats_enable: Annotated[Optional[str], _option("nats_enabled", mode)] = None,
        api_nats_addr: Annotated[Optional[str], _option("nats_addr", mode)] = None,
        api_nats_subject: Annotated[Optional[str], _option("nats_subject", mode)] = None,
        api_nats_timeout: Annotated[Optional[str], _option("nats_timeout_ms", mode)] = None,
        api_nats_queue: Annotated[Optional[str], _option("nats_queue", mode)] = None,
        api_nats_peer_window: Annotated[Optional[str], _option("peer_window_ms", mode)] = None,
        api_nats_tls_ca: Annotated[Optional[str], _option("nats_tls_ca", mode)] = None,
        api_nats_tls_cert: Annotated[Optional[str], _option("nats_tls_cert", mode)] = None,
        api_nats_tls_key: Annotated[Optional[str], _option("nats_tls_key", mode)] = None,
        api_nats_tls_verify: Annotated[Optional[str], _option("nats_tls_verify", mode)] = None,
        api_nats_creds: Annotated[Optional[str], _option("nats_creds", mode)] = None,
        api_nats_nkey: Annotated[Optional[str], _option("nats_nkey", mode)] = None,
        embedded_nats: Annotated[Optional[str], _option("embedded_nats", mode)] = None,
        store_path: Annotated[Optional[str], _option("store_path", mode)] = None,
        fsync: Annotated[Optional[str], _option("fsync", mode)] = None,
        snapshot_every: Annotated[Optional[str], _option("snapshot_every", mode)] = None,
        store_kind: Annotated[Optional[str], _option("store_kind", mode)] = None,
        store_jetstream_stream: Annotated[Optional[str], _option("store_jetstream_stream", mode)] = None,
        store_jetstream_replicas: Annotated[Optional[str], _option("store_jetstream_replicas", mode)] = None,
        store_jetstream_lease: Annotated[Optional[str], _option("store_jetstream_lease_ms", mode)] = None,
        workers: Annotated[Optional[str], _option("workers", mode)] = None,
        max_pending: Annotated[Optional[str], _option("max_pending", mode)] = None,
        tick: Annotated[Optional[str], _option("tick_ms", mode)] = None,
        batch_size: Annotated[Optional[str], _option("batch_size", mode)] = None,
        href_base: Annotated[Optional[str], _option("href_base", mode)] = None,
        task_claim_timeout: Annotated[Optional[str], _option("task_claim_timeout_ms", mode)] = None,
        task_retry_timeout: Annotated[Optional[str], _option("task_retry_timeout_ms", mode)] = None,
        delivery_allow: Annotated[Optional[str], _option("delivery_allow", mode)] = None,
        delivery_poll_prefix: Annotated[Optional[str], _option("delivery_poll_prefix", mode)] = None,
        events_subject: Annotated[Optional[str], _option("events_subject", mode)] = None,
        metrics_addr: Annotated[Optional[str], _option("metrics_addr", mode)] = None,
        log_level: Annotated[Optional[str], _option("log_level", mode)] = None,
        log_format: Annotated[Optional[str], _option("log_format", mode)] = None,
    ) -> None:
        # Values are taken as text and parsed by the config layer, so a bad flag, env var or
        # file key gets the same rule in its message, naming where it came from.
        flags = {s.field: ctx.params[_param_name(s)] for s in SETTINGS}
        if mode is None:
            raise typer.Exit(_show(show_mode, config, flags))
        raise typer.Exit(_run(mode, config, flags))

    if mode is not None:  # --mode is config show's alone
        signature = inspect.signature(command)
        parameters = [p for p in signature.parameters.values() if p.name != "show_mode"]
        command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return command


def _show(mode: str, config_file: Optional[str], flags: dict[str, Optional[str]]) -> int:
    """Print the Config that ``resonate <mode>`` would run with here, and where each value comes from."""
    if mode not in MODES:
        raise fail(f"--mode: {mode!r} is not one of: {', '.join(MODES)}")
    try:
        path = find_config_file(config_file, Path.cwd())
        config, sources = explain_config(mode=mode, config_file=path, env=os.environ, overrides=flags)
    except ConfigError as error:
        raise fail(str(error)) from None
    typer.echo(
        f"# The configuration 'resonate {mode}' would run with in {Path.cwd()}.\n"
        "# Layers, lowest first: default < config file < env RESONATE_… < flag; the comment after each\n"
        "# value names the layer it comes from. Passwords and tokens in URLs are shown as ***.\n"
        + format_config(config, sources, redact=redact_url),
        nl=False,
    )
    return 0


def _run(mode: str, config_file: Optional[str], flags: dict[str, Optional[str]]) -> int:
    """Build the Config from all layers, configure logging and run the server until it stops."""
    try:
        path = find_config_file(config_file, Path.cwd())
        config = load_config(mode=mode, config_file=path, env=os.environ, overrides=flags)
    except ConfigError as error:
        raise fail(str(error)) from None
    if not config.nats_enabled:
        raise fail(
            "NATS is disabled (by --api-nats-enable, RESONATE_API_NATS_ENABLE or"
            " api.subsystems.nats.enabled) and it is this server's only API: nothing to serve"
        )
    configure_logging(config.log_level, config.log_format)
    if path is not None:
        log.info("configuration file %s", path)
    # Imported here: the CLI must work (help, version, config errors) without loading the
    # server's transport, and tests replace Server to see the Config it would get.
    from resonate_sync.server import Server

    return Server(config, mode=mode).run()


# --------------------------------------------------------------------------------------------
# Logging


class _StderrHandler(logging.StreamHandler):
    """Writes each record to the ``sys.stderr`` of that moment (test runners swap the stream)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(level: str, log_format: str = "text") -> None:
    """Give the root logger one stderr handler at `level`: ``text`` lines (time, level, logger,
    message) or ``json`` objects, one a line (see :class:`JsonFormatter`).

    Calling it again replaces the handler it installed before and leaves other handlers
    (pytest's, an embedding application's) alone.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StderrHandler):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())


_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (RFC 3339, UTC, ms), ``level``, ``logger``, ``message``,
    the fields a record was given with ``extra=`` (a request's ``operation``, ``request_id``,
    ``status``, ``latency_ms``), and ``exception``/``stack`` when there are any."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, timezone.utc)
        document = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES:
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, default=str)


# --------------------------------------------------------------------------------------------
# The commands


def add_server_commands(app: typer.Typer) -> None:
    """Add ``serve`` and ``dev`` to the ``resonate`` app."""
    app.command(
        "serve",
        cls=_GoFlagsCommand,
        epilog=_EPILOG,
        help="Run the server durably: every change is journaled (fsynced) to --store-path before it"
        " is acknowledged, default resonate-data/resonate.journal. Connects to the NATS server at"
        " --api-nats-addr; starts an embedded one only with --embedded-nats. Stops gracefully on"
        " SIGINT/SIGTERM.",
    )(_server_command("serve"))

    app.command(
        "dev",
        cls=_GoFlagsCommand,
        epilog=_EPILOG,
        help="Run the server for development: state in memory (unless --store-path is given), and"
        " an embedded nats-server when nothing listens at --api-nats-addr on this machine, so it"
        " works with nothing else installed. Stops gracefully on SIGINT/SIGTERM.",
    )(_server_command("dev"))


def config_defaults() -> None:
    """Print the documented configuration file (conf/resonate.yaml): every key, its default, env variable and flag.

    Start a config file with it: resonate config defaults > resonate.yaml
    """
    text = (importlib.resources.files("resonate_sync") / "conf" / "resonate.yaml").read_text(encoding="utf-8")
    typer.echo(text, nl=False)


def add_config_commands(app: typer.Typer) -> None:
    """Add ``config defaults`` and ``config show`` to the ``resonate`` app."""
    config_app = typer.Typer(
        name="config",
        cls=Group,
        help="Print the configuration: every key with its default, or the values a server would use.",
        no_args_is_help=True,
    )
    app.add_typer(config_app)
    config_app.command("defaults", cls=Command)(config_defaults)
    config_app.command(
        "show",
        cls=_GoFlagsCommand,
        epilog=_EPILOG,
        help="Print the configuration 'resonate serve' (or with --mode dev, 'resonate dev') would run with"
        " here, from every layer: defaults, the config file, RESONATE_… variables and the flags given"
        " here, which are those of serve and dev. Each value is followed by the layer it comes from;"
        " passwords and tokens in URLs are shown as ***. The output is a valid config file.",
    )(_server_command(None))
