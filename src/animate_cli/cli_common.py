"""What every animate-* command shares: one-line errors on stderr, the exit codes, the model choices.

Exit codes: 0 done, 1 an error (bad input, a failed run: `error: ...`), 2 bad usage (an unknown option,
a value of the wrong type or outside the choices, as `animate` answers), 130 interrupted.
"""
from __future__ import annotations

import os
from enum import Enum

import typer
from rich.console import Console
from rich.markup import escape

from .config import GENERATORS, PRESETS
from .errors import AnimateError

try:  # typer >= 0.20 vendors click; older releases use click itself
    from typer.exceptions import TyperException as UsageProblem
except ImportError:  # pragma: no cover
    from click import ClickException as UsageProblem

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# 'tiny' exists for the tests (built from Python); a command offers only the presets worth training
PRESET_CHOICES = tuple(name for name in PRESETS if name != "tiny")
Preset = Enum("Preset", {name: name for name in PRESET_CHOICES}, type=str)
Generator = Enum("Generator", {name: name for name in GENERATORS}, type=str)

err = Console(stderr=True)


def typer_app() -> typer.Typer:
    """A Typer app set up as `animate`'s: no completion commands, plain help, no rich tracebacks."""
    return typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                       context_settings={"help_option_names": ["-h", "--help"]})


def say_error(message: str) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def run_app(app: typer.Typer, argv: list[str] | None, prog: str) -> int:
    """Run a command; every failure becomes one line on stderr and the exit code above."""
    try:
        code = app(args=argv, standalone_mode=False, prog_name=prog)
        return code if isinstance(code, int) else 0
    except AnimateError as e:
        say_error(str(e))
        return EXIT_ERROR
    except typer.Exit as e:
        return e.exit_code
    except UsageProblem as e:
        say_error(f"{e.format_message()} (see {prog} --help)")
        return EXIT_USAGE
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted")
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug, not bad input: still one line, the traceback on request
        if os.environ.get("ANIMATE_DEBUG"):
            raise
        say_error(f"unexpected {type(e).__name__}: {e} (set ANIMATE_DEBUG=1 for details)")
        return EXIT_ERROR
