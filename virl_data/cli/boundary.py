"""The user-error boundary of both command lines (``virl-data``, ``virl-train``): every user error is ONE line on
stderr, ``error: ...``, and exit code 2; bugs keep their traceback.

Two kinds of user error reach it:

- ``VirlError`` (and ``OSError``) raised by a command: ``user_errors`` wraps each command and prints them;
- usage errors found by the option parser before any command runs (an option out of its ``min``/``max`` range, a
  value of the wrong type, an unknown or missing option): typer/click would print a usage text and a framed box.
  ``OneLineErrors`` is the top-level group class of both apps (``typer.Typer(cls=OneLineErrors)``): it runs the
  parser in click's non-standalone mode and prints those errors as one line too, naming ``--help``. This covers
  every option of every command at once, including ones added later.

``VIRL_DEBUG=1`` re-raises instead (a traceback for debugging).

Example:
    >>> from typer.testing import CliRunner
    >>> from virl_data.cli import app
    >>> r = CliRunner().invoke(app, ["demo", "--n", "-5"], prog_name="virl-data")
    >>> r.exit_code, r.output.strip()
    (2, "error: Invalid value for '--n': Input should be greater than or equal to 1 (see virl-data demo --help)")
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from virl_data.core.errors import VirlError

try:  # typer >= 0.20 vendors click as typer._click; older ones use click itself
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import ClickException, UsageError

err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, on one line (inner whitespace and newlines collapsed; brackets in the message,
    such as ``virl[fiftyone]``, are printed as written, not read as rich markup)."""
    line = " ".join(str(message).split())
    err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)


def user_errors(fn: F) -> F:
    """Turn user errors (``VirlError``, ``OSError``) raised by a command into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (VirlError, OSError) as exc:
            if os.environ.get("VIRL_DEBUG"):
                raise
            print_error(str(exc) or type(exc).__name__)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def usage_message(exc: ClickException) -> str:
    """A click/typer usage error as one line: its message, then where the help is.

    >>> usage_message(UsageError("Missing option '--out'."))
    "Missing option '--out'."
    """
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        message += f" (see {ctx.command_path} {ctx.help_option_names[0]})"
    return message


class OneLineErrors(TyperGroup):
    """A ``TyperGroup`` whose usage errors are one ``error:`` line and exit code 2 (see the module docstring).

    Help (``--help``, or a group called without a command) and exit codes of ``typer.Exit`` are unchanged.
    """

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help, already printed by the rich formatter
                help_text = exc.format_message()
                if help_text.strip():
                    typer.echo(help_text)
                sys.exit(2)
            if os.environ.get("VIRL_DEBUG"):
                raise
            print_error(usage_message(exc))
            sys.exit(2)
        except ClickException as exc:  # e.g. a file option that cannot be opened: a user error too
            if os.environ.get("VIRL_DEBUG"):
                raise
            print_error(usage_message(exc))
            sys.exit(2)
        except typer.Abort:
            print_error("aborted")
            sys.exit(1)
        # non-standalone mode returns the code of a typer.Exit, else the command's return value
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


__all__ = ["OneLineErrors", "print_error", "usage_message", "user_errors"]
