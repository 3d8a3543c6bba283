"""The command and group classes every ``resonate`` command uses, for help without artefacts.

Recent typer versions print a flag's type in the help (``--json  <bool>``, ``--help  <bool>``),
where a flag takes no value. A flag without a metavar of its own gets an empty one, which every
typer version prints as nothing. Typer creates the help and completion flags itself, so this is
done where the command lists its parameters rather than option by option.
"""

from typing import Any, List

from typer.core import TyperCommand, TyperGroup

__all__ = ["Command", "Group"]


def _without_flag_types(params: List[Any]) -> List[Any]:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A typer command whose help shows no type beside a flag."""

    def get_params(self, ctx: Any) -> List[Any]:
        return _without_flag_types(super().get_params(ctx))


class Group(TyperGroup):
    """A typer group whose help shows no type beside a flag."""

    def get_params(self, ctx: Any) -> List[Any]:
        return _without_flag_types(super().get_params(ctx))
