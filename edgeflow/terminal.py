"""What every ``edgeflow`` command shares: the stderr console and the exit codes.

Exit codes: 0 success; 1 the command failed while running; 2 bad command line;
3 the flow is invalid (nothing ran); 4 the flow file could not be loaded; 5 the flow
ran to its end but its result cannot be trusted (every input was a dead letter, no
window closed, or a broker refused the login or the certificate); 130 a second Ctrl-C.

The console (rich) is made when something is first printed: a quiet run never loads rich.

>>> EXIT_INVALID
3
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    err: Console
    """Messages for people, on stderr; soft wrap keeps an error on one line for scripts and tests that grep it."""

__all__ = ["EXIT_FAILED", "EXIT_INVALID", "EXIT_LOAD_FAILED", "EXIT_NO_RESULT", "EXIT_USAGE", "err"]

EXIT_FAILED, EXIT_USAGE, EXIT_INVALID, EXIT_LOAD_FAILED, EXIT_NO_RESULT = 1, 2, 3, 4, 5


def __getattr__(name: str) -> Any:
    if name == "err":
        from rich.console import Console

        return globals().setdefault("err", Console(stderr=True, highlight=False, soft_wrap=True))
    msg = f"module 'edgeflow.terminal' has no attribute {name!r}"
    raise AttributeError(msg)
