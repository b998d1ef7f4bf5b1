"""``edgeflow init DIR``: a new project with a flow, a custom operator, a recording and a passing test."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

__all__ = ["scaffold"]

_FLOW = '''"""Example flow: replay -> windows -> features + impulse factor -> z-score -> 5 s summaries."""

import edgeflow.operators as eo
from edgeflow import Flow
from operators.impulse import impulse_factor

flow = Flow("example", dead_letter_path="out/dead_letters.jsonl")
samples = eo.replay("samples", flow, "data/recording.csv")
windows = eo.window("win", samples, rate_hz=200, size=128, hop=32)
feats = eo.features("feat", windows, ["mean", "std", "rms", "p95", "fft_bands(0-20,20-100)"])
feats = impulse_factor("impulse", feats)
scores = eo.zscore_detector("detect", feats, threshold=6.0, warmup=40)
eo.summarize("summary", scores, every_s=5, sink=eo.jsonl("out/summary.jsonl"))
'''

_OPERATOR = '''"""A custom feature: the impulse factor (peak / mean absolute value) of each window.

It gets every window of a batch at once as an array shaped (windows, channels, size)
and returns one value per window; edgeflow checks and fuses it like a built-in step.
"""

import numpy as np

import edgeflow.operators as eo


@eo.window_feature(adds=["impulse"], data=True)
def impulse_factor(data: np.ndarray) -> np.ndarray:
    """Peak over mean absolute value of the first channel (0 for a silent window)."""
    x = np.abs(data[:, 0, :])
    mean = x.mean(axis=1)
    return np.divide(x.max(axis=1), mean, out=np.zeros_like(mean), where=mean > 0)
'''

_TEST = '''"""Replay the recording through the flow and check what it reports."""

from edgeflow.testing import run_capture


def test_fault_on_sensor_b_is_flagged_and_nothing_else():
    result = run_capture("flows/example.py")
    summaries = result.only()
    flagged = {(s["sensor"], s["interval"][0][11:19]) for s in summaries if s["anomaly"]}
    # the fault lasts 25-30 s; windows ending just after 30 s still hold some of it
    assert flagged == {("b", "00:00:25"), ("b", "00:00:30")}
    assert result.dead_letters == []
'''

_README = """# {name}

An edgeflow project.

    edgeflow run flows/example.py     # summaries in out/summary.jsonl
    python -m pytest                  # replay test

`flows/` holds flows, `operators/` your own operators, `models/` int8 models
with their manifest, `data/` recordings, `tests/` replay tests.
"""


def _recording(path: Path) -> None:
    rng = random.Random(3)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    lines = ["ts,sensor,accel"]
    for i in range(40 * 200):
        t = i / 200
        for sensor in ("a", "b"):
            amp = 6.0 if sensor == "b" and 25 <= t < 30 else 1.0
            value = amp * 0.3 * math.sin(2 * math.pi * 12 * t) + rng.gauss(0, 0.03)
            stamp = (start + timedelta(seconds=t)).isoformat().replace("+00:00", "Z")
            lines.append(f"{stamp},{sensor},{value:.5f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def scaffold(directory: Path) -> list[Path]:
    """Create a project in *directory* (which must not exist or be empty); return the files written.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()) / "plant"
    >>> sorted(str(p.relative_to(root)) for p in scaffold(root))[:3]
    ['README.md', 'data/recording.csv', 'flows/example.py']
    """
    if directory.exists() and any(directory.iterdir()):
        msg = f"{directory} exists and is not empty"
        raise FileExistsError(msg)
    files = {
        "README.md": _README.format(name=directory.name),
        "flows/example.py": _FLOW,
        "operators/__init__.py": "",
        "operators/impulse.py": _OPERATOR,
        "models/README.md": "int8 models and their manifest go here (see `edgeflow model build`).\n",
        "tests/test_example_flow.py": _TEST,
        "pytest.ini": "[pytest]\ntestpaths = tests\npythonpath = .\n",
    }
    written = []
    for rel, text in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    (directory / "data").mkdir(exist_ok=True)
    _recording(directory / "data" / "recording.csv")
    written.append(directory / "data" / "recording.csv")
    return written
