"""Pump vibration monitoring: replay -> windows -> features (+ crest factor) -> z-score -> 10 s summaries.

Run from the project root::

    edgeflow run flows/pump_vibration.py                       # as fast as possible
    edgeflow run "flows/pump_vibration.py:make_flow(speed=5)"  # paced, 5x real time
"""

from __future__ import annotations

import edgeflow.operators as eo
from edgeflow import Flow
from operators.crest_factor import crest_factor

FEATURES = [
    "mean", "std", "min", "max", "rms", "ptp", "skew", "kurtosis", "p5", "p95",
    "fft_bands(0-50,50-150,150-250)",
]  # fmt: skip


def make_flow(
    recording: str = "examples/data/pump_vibration.csv",
    speed: float | None = None,
    out: str = "out/pump_vibration.summary.jsonl",
) -> Flow:
    """Build the reference flow over *recording*."""
    flow = Flow("pump_vibration", dead_letter_path="out/pump_vibration.dead_letters.jsonl")
    samples = eo.replay("samples", flow, recording, speed=speed)
    windows = eo.window("win", samples, rate_hz=500, size=256, hop=64, max_gap_s=0.05)
    feats = crest_factor("crest", eo.features("feat", windows, FEATURES))
    scores = eo.zscore_detector("detect", feats, threshold=6.0, warmup=50)
    eo.summarize("summary", scores, every_s=10, sink=eo.jsonl(out))
    return flow


flow = make_flow()
