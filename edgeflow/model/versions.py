"""Model version numbers: ``MAJOR.MINOR.PATCH[-PRE][+BUILD]`` (semantic versioning) and which is newer.

Build metadata after ``+`` (e.g. the file hash ``models/build.py`` appends) does not order versions;
a pre-release (``2.0.0-rc1``) comes before its release. A gateway refuses a version older than the one
it runs (a downgrade) unless told to allow it, and a version number it already runs with other content.

>>> compare_versions("1.2.0+abc", "1.10.0")
-1
>>> compare_versions("2.0.0-rc1", "2.0.0"), compare_versions("1.0.0+aa", "1.0.0+bb")
(-1, 0)
"""

from __future__ import annotations

import re

__all__ = ["compare_versions", "parse_version"]

_VERSION = re.compile(r"^(\d+(?:\.\d+)*)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$")


def parse_version(version: str) -> tuple[tuple[int, ...], tuple[tuple[int, int | str], ...] | None]:
    """Release numbers and pre-release parts of *version*; raise ``ValueError`` if it is not one.

    >>> parse_version("1.0.0-rc.2+5c8ff791")
    ((1, 0, 0), ((1, 'rc'), (0, 2)))
    """
    match = _VERSION.match(version.strip())
    if match is None:
        msg = f"version {version!r} is not MAJOR.MINOR.PATCH[-PRE][+BUILD], e.g. 1.2.0 or 1.2.0+5c8ff791"
        raise ValueError(msg)
    release = tuple(int(x) for x in match.group(1).split("."))
    release = release + (0,) * (3 - len(release)) if len(release) < 3 else release
    pre = match.group(2)
    parts = None if pre is None else tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return release, parts


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as version *a* is older than, as new as, or newer than *b* (build metadata ignored)."""
    ra, pa = parse_version(a)
    rb, pb = parse_version(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if pa == pb:
        return 0
    if pa is None or pb is None:  # a release is newer than its pre-releases
        return 1 if pa is None else -1
    return -1 if pa < pb else 1
