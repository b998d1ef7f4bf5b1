"""What every ``edgeflow`` command shares: the stderr console and the exit codes.

Exit codes: 0 success; 1 the command failed while running; 2 bad command line;
3 the flow is invalid (nothing ran); 4 the flow file could not be loaded; 5 the flow
ran to its end but its result cannot be trusted (every input was a dead letter, no
window closed, or a broker refused the login or the certificate); 130 a second Ctrl-C.

>>> EXIT_INVALID
3
"""

from __future__ import annotations

from rich.console import Console

__all__ = ["EXIT_FAILED", "EXIT_INVALID", "EXIT_LOAD_FAILED", "EXIT_NO_RESULT", "EXIT_USAGE", "err"]

EXIT_FAILED, EXIT_USAGE, EXIT_INVALID, EXIT_LOAD_FAILED, EXIT_NO_RESULT = 1, 2, 3, 4, 5

err = Console(stderr=True, highlight=False, soft_wrap=True)
"""Messages for people, on stderr; soft wrap keeps an error on one line for scripts and tests that grep it."""
