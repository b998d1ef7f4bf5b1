"""Exit 0 when this checkout is installed (editable) with everything the given extras need, else 1.

``scripts/test`` runs ``python scripts/check_test_env.py test train`` and calls pip only when this
fails, so a second run starts at once. The requirements are read from ``pyproject.toml``,
not from the installed metadata, so an extra added since the last install is noticed::

    python scripts/check_test_env.py test train && echo ready
"""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def missing(extras: list[str]) -> list[str]:
    """List the requirements of edgeflow and *extras* that are not installed at a fitting version."""
    try:
        import tomllib
        from packaging.requirements import Requirement
    except ImportError as exc:  # Python 3.10, or packaging not installed yet
        return [f"({exc.name} to read the requirements)"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in extras:
        texts += project.get("optional-dependencies", {}).get(extra, [])
    absent = []
    for text in texts:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            absent.append(text)
            continue
        if not req.specifier.contains(version, prereleases=True):
            absent.append(f"{text} (have {version})")
    spec = importlib.util.find_spec("edgeflow")
    if spec is None or spec.origin is None or Path(spec.origin).resolve() != ROOT / "edgeflow" / "__init__.py":
        absent.append(f"edgeflow installed from {ROOT} (pip install -e .)")
    return absent


def main(argv: list[str]) -> int:
    """Print what is missing on stderr; return 0 if nothing is."""
    absent = missing(argv)
    for text in absent:
        print(f"missing: {text}", file=sys.stderr)
    return 1 if absent else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
