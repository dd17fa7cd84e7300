"""What every animate-* command shares: one-line errors on stderr, the exit codes, the model choices.

Exit codes (EXIT_CODES_HELP, shown in `animate --help`): 0 done; 1 an error: bad input, a value out of
range (--batch-size 0), a failed run, always one `error: ...` line; 2 bad usage: the command line does
not parse (an unknown option, a missing argument, a value of the wrong type or not among the choices);
128 + the signal when interrupted: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP.
"""
from __future__ import annotations

import os
import signal
from enum import Enum

import typer
from rich.console import Console
from rich.markup import escape

from .config import GENERATORS, PRESETS
from .errors import AnimateError, interrupt_on_signals, interrupted_exit_code

try:  # typer >= 0.20 vendors click; older releases use click itself
    from typer.exceptions import TyperException as UsageProblem
except ImportError:  # pragma: no cover
    from click import ClickException as UsageProblem

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # Ctrl-C; SIGTERM and SIGHUP give 128 + their number (errors.interrupted_exit_code)

EXIT_CODES_HELP = """\b
Exit codes:
  0    done
  1    an error, in one line: bad input, a value out of range, a failed run
  2    bad usage: an unknown option, a missing argument, a value of the wrong
       type or not among the choices
  130  interrupted by Ctrl-C; 143 SIGTERM, 129 SIGHUP (128 + the signal);
       an unfinished video is never left behind
"""

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


def run_app(app: typer.Typer, argv: list[str] | None, prog: str, interrupted: str = "interrupted") -> int:
    """Run a command; every failure becomes one line on stderr and the exit code above. SIGTERM and SIGHUP
    unwind the command like Ctrl-C (errors.interrupt_on_signals), so its temporaries are removed."""
    received = None
    try:
        with interrupt_on_signals() as received:
            code = app(args=argv, standalone_mode=False, prog_name=prog)
        if code == EXIT_INTERRUPTED:  # typer turns a KeyboardInterrupt (Interrupted too) into Exit(130)
            return _interrupted(received.signum, interrupted)
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
        return _interrupted(received.signum if received is not None else None, interrupted)
    except Exception as e:  # a bug, not bad input: still one line, the traceback on request
        if os.environ.get("ANIMATE_DEBUG"):
            raise
        say_error(f"unexpected {type(e).__name__}: {e} (set ANIMATE_DEBUG=1 for details)")
        return EXIT_ERROR


def _interrupted(signum: int | None, message: str) -> int:
    name = signal.Signals(signum).name if signum is not None else "Ctrl-C"
    err.print(f"{message} ({name})", highlight=False, soft_wrap=True)
    return interrupted_exit_code(signum)
