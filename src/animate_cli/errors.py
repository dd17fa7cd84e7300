"""User-facing errors: the CLI prints these as one line, without a traceback.

Also the termination signals a job scheduler or a closing terminal sends (SIGTERM, SIGHUP): turned into
an exception, they unwind `with` blocks exactly as Ctrl-C does, so partial files are deleted.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator


class AnimateError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP received. A KeyboardInterrupt, so everything that already cleans up after Ctrl-C
    (and is not swallowed by `except Exception`) handles it the same way; `signum` tells them apart."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


TERMINATION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))

@dataclass(eq=False)  # compared by identity: every open block has its own
class Received:
    """What an interrupt_on_signals block saw: the signal turned into Interrupted, or None. Kept after the
    block closes, so a command can tell SIGTERM from Ctrl-C once everything has unwound (exit code)."""

    signum: int | None = None


_open: list[Received] = []  # the records of the open blocks, outermost first


def _raise_interrupted(signum, frame) -> None:
    if any(r.signum is not None for r in _open):  # a repeated signal must not cut short the cleanup
        return
    for record in _open:
        record.signum = signum
    raise Interrupted(signum)


@contextmanager
def interrupt_on_signals() -> Iterator[Received]:
    """Inside the block SIGTERM and SIGHUP raise Interrupted instead of killing the process outright;
    the previous handlers come back on exit. Blocks nest. A signal the parent chose to ignore (nohup)
    stays ignored; outside the main thread (where Python cannot set handlers) this does nothing.
    Yields a Received record of the signal, if one came."""
    record = Received()
    if threading.current_thread() is not threading.main_thread():
        yield record
        return
    previous = {}
    for signum in TERMINATION_SIGNALS:
        old = signal.getsignal(signum)
        if old is signal.SIG_IGN or old is None:  # None: a handler set outside Python, leave it be
            continue
        previous[signum] = old
        signal.signal(signum, _raise_interrupted)
    _open.append(record)
    try:
        yield record
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        _open.remove(record)


def interrupted_exit_code(signum: int | None) -> int:
    """The shell's convention, 128 + the signal: 130 for Ctrl-C (SIGINT), 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + int(signum if signum is not None else signal.SIGINT)
