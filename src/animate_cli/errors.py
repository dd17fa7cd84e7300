"""User-facing errors: the CLI prints these as one line, without a traceback.

Also the termination signals a job scheduler or a closing terminal sends (SIGTERM, SIGHUP): turned into
an exception, they unwind `with` blocks exactly as Ctrl-C does, so partial files are deleted.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
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

_depth = 0          # how many interrupt_on_signals blocks are open
_raised = False     # a signal was already turned into Interrupted in the open blocks


def _raise_interrupted(signum, frame) -> None:
    global _raised
    if _raised:  # a repeated signal must not cut short the cleanup the first one started
        return
    _raised = True
    raise Interrupted(signum)


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Inside the block SIGTERM and SIGHUP raise Interrupted instead of killing the process outright;
    the previous handlers come back on exit. Blocks nest. A signal the parent chose to ignore (nohup)
    stays ignored; outside the main thread (where Python cannot set handlers) this does nothing."""
    global _depth, _raised
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in TERMINATION_SIGNALS:
        old = signal.getsignal(signum)
        if old is signal.SIG_IGN or old is None:  # None: a handler set outside Python, leave it be
            continue
        previous[signum] = old
        signal.signal(signum, _raise_interrupted)
    _depth += 1
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        _depth -= 1
        if _depth == 0:
            _raised = False
