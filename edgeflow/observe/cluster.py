r"""The local processes of ``edgeflow run -p N``: their status files, their stderr, their one report.

Each child process writes its stats to ``p<i>.status.json`` in a folder the parent
made (every :data:`STATUS_EVERY_S`, replaced whole), and its final report there too
(:func:`edgeflow.observe.report.save_part`). The parent shows the status files in its
live view, forwards the children's stderr without the engine's connection retries
(the processes start at slightly different times, so the first connections are
refused and retried), and merges the reports into one.

>>> keep_line("worker 1:\terror connecting to worker 0: Connection refused (os error 111); retrying")
False
>>> keep_line("flow 'pump' failed: ...")
True
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from edgeflow.metrics import FlowStats

__all__ = ["STATUS_EVERY_S", "StderrForwarder", "keep_line", "read_statuses", "status_path", "write_status"]

STATUS_EVERY_S = 0.5
"""How often a child process writes its status file."""

_RETRY = re.compile(r"^worker \d+:\s+error connecting to worker \d+: .*retrying\s*$")


def keep_line(line: str) -> bool:
    """Whether a child's stderr line is for people (the engine's connection retries are not)."""
    return not _RETRY.match(line)


def status_path(folder: str | Path, process: int) -> Path:
    """Where child *process* writes its status."""
    return Path(folder) / f"p{process}.status.json"


def write_status(folder: str | Path, process: int, stats: FlowStats, flow: str = "") -> None:
    """Write child *process*'s stats snapshot of *flow*, replacing the last one whole (never half a file read)."""
    path = status_path(folder, process)
    tmp = path.with_name(f".{path.name}.tmp")
    from edgeflow.jsontext import dumps  # numpy: not loaded by the parent of `edgeflow run -p N` while children start

    tmp.write_text(dumps({"flow": flow, **stats.to_json()}), encoding="utf-8")
    os.replace(tmp, path)


def read_statuses(folder: str | Path, processes: int) -> list[tuple[str, dict]]:
    """Return the newest status of each child that wrote one, labelled ``p<i>``."""
    out = []
    for process in range(processes):
        path = status_path(folder, process)
        try:
            out.append((f"p{process}", json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue
    return out


class StderrForwarder:
    """Copies a child's stderr to ours line by line, dropping the engine's connection retries (counted)."""

    def __init__(self, stream: IO[str], write: Callable[[str], None] | None = None) -> None:
        self.retries = 0
        self.lines: list[str] = []
        """The last lines forwarded (at most 50), to tell what a failed child said."""
        self._stream = stream
        self._write = write or _to_stderr
        self._thread = threading.Thread(target=self._run, name="edgeflow-child-stderr", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for line in self._stream:
            if keep_line(line.rstrip("\n")):
                self._write(line)
                self.lines = [*self.lines[-49:], line]
            else:
                self.retries += 1
        self._stream.close()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the child closed its stderr."""
        self._thread.join(timeout)


def _to_stderr(line: str) -> None:
    sys.stderr.write(line)
    sys.stderr.flush()
