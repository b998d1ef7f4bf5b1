"""Watching a model's files for a new version: file stamps and when to look again.

A stamp is each file's modification time and size (``None`` when missing); it
changes when a file is replaced. :class:`ReloadWatch` rate-limits the checks and
remembers the stamp of a version that was refused, so a broken update is
reported once, not on every check.

>>> watch = ReloadWatch()
>>> watch.due(0.0), watch.is_new((None,), loaded=(None,))
(True, False)
>>> watch.rejected = ((1, 2),)
>>> watch.is_new(((1, 2),), loaded=((0, 2),))
False
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from edgeflow.model.manifest import load_manifest

__all__ = ["ReloadWatch", "Stamp", "file_stamp", "watched_stamp"]

Stamp = tuple[tuple[int, int] | None, ...]


def file_stamp(*paths: Path) -> Stamp:
    """Modification time and size of each file (``None`` when missing): changes when a file is replaced.

    >>> file_stamp(Path("no/such/file"))
    (None,)
    """
    out: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size))
    return tuple(out)


def watched_stamp(source: Path, loaded_path: Path, variant: str | None) -> Stamp:
    """Stamp of *source* and of the model file it names now (so a file landing after its manifest counts).

    *loaded_path* is the model file running now; *variant* the manifest variant asked for (``None``: its default).
    """
    if source == loaded_path or source.suffix != ".json":
        return file_stamp(source, source)
    named = loaded_path
    with contextlib.suppress(Exception):  # an unreadable manifest: watch the old file; loading will explain
        manifest = load_manifest(source)
        named = source.parent / manifest.variants[variant or manifest.default].file
    return file_stamp(source, named)


class ReloadWatch:
    """When to look for a new model version again, and which version was refused."""

    def __init__(self) -> None:
        self.rejected: Stamp | None = None
        """Stamp of the last version refused (not retried until its files change again)."""
        self._checked_at = 0.0

    def due(self, min_interval_s: float) -> bool:
        """Whether *min_interval_s* has passed since the last check (and start a new interval if so)."""
        now = time.monotonic()
        if now - self._checked_at < min_interval_s:
            return False
        self._checked_at = now
        return True

    def is_new(self, stamp: Stamp, *, loaded: Stamp) -> bool:
        """Whether files stamped *stamp* differ from the *loaded* ones and were not already refused."""
        return stamp != loaded and stamp != self.rejected
