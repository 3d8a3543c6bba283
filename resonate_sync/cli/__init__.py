"""The ``resonate`` command line: ``serve``, ``dev``, ``config``, ``version`` and the client commands.

Where each part lives:

* `resonate_sync.cli.server`: ``serve``, ``dev`` and ``config defaults|show``, their options
  (written from the settings table) and logging;
* `resonate_sync.cli.client`: the client commands (``promises``, ``schedules``, ``tasks``,
  ``locks``), one `resonate_sync.client.Client` call each;
* `resonate_sync.cli.render`: what those commands print, tables or JSON, and error lines;
* `resonate_sync.cli.help`: the command and group classes every command uses.

The client commands' connection and output options (``--addr``, ``--subject``,
``--request-timeout``, ``--json``) may also come before the command (``resonate --addr URL
promises get x``); before any other command they are refused rather than ignored.

``resonate --version`` prints the version; ``--install-completion`` and ``--show-completion``
(typer's) set up shell completion.
"""

import inspect
from typing import Annotated, Any

import typer

from resonate_sync import __version__
from resonate_sync.cli.client import CLIENT_COMMANDS, CLIENT_FLAGS, add_client_commands, client_options
from resonate_sync.cli.help import Command, Group
from resonate_sync.cli.render import fail
from resonate_sync.cli.server import (
    LOG_FORMAT,
    add_config_commands,
    add_server_commands,
    configure_logging,
    normalise_go_flags,
)
from resonate_sync.config import MODES

__all__ = ["LOG_FORMAT", "app", "configure_logging", "main", "normalise_go_flags"]

app = typer.Typer(
    name="resonate",
    cls=Group,
    help="Resonate durable-promise server, served over NATS request-reply.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


def _root(ctx: typer.Context, **client: Any) -> None:
    # The client options are accepted here so that they may come before a client command;
    # anywhere else they would be silently ignored, so they are refused.
    given = [CLIENT_FLAGS[name] for name, value in client.items() if value and name in CLIENT_FLAGS]
    if given and ctx.invoked_subcommand not in CLIENT_COMMANDS:
        hint = " (the server's are --api-nats-addr and --api-nats-subject)" if ctx.invoked_subcommand in MODES else ""
        raise fail(
            f"{', '.join(given)} before '{ctx.invoked_subcommand}': only the client commands"
            f" ({', '.join(CLIENT_COMMANDS)}) take {'it' if len(given) == 1 else 'them'}{hint}"
        )


_VERSION = inspect.Parameter(
    "version",
    inspect.Parameter.KEYWORD_ONLY,
    default=False,
    annotation=Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit.",
    )],
)
_root.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
     _VERSION, *client_options()]
)
app.callback()(_root)


add_server_commands(app)


@app.command("version", cls=Command)
def version() -> None:
    """Print the version of resonate_sync."""
    typer.echo(__version__)


add_config_commands(app)
add_client_commands(app)


def main() -> None:
    """Entry point of the ``resonate`` console script and ``python -m resonate_sync``."""
    app(prog_name="resonate")
