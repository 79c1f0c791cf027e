"""Children that must take signals as a process started from a terminal does."""

from __future__ import annotations

import signal


def as_from_a_terminal() -> None:
    """``preexec_fn`` for a child that must take SIGINT and SIGHUP with their default actions:
    a test run started in the background by a non-interactive shell, or under ``nohup``, ignores
    both, and a child inherits that (an ignored signal stays ignored across ``exec``), so it
    would not show what a user's Ctrl-C or lost terminal does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
