"""Pump vibration with an int8 model: replay -> windows -> features (+ crest factor) -> int8 autoencoder -> summaries.

The model (``models/pump_ae``) was trained by ``models/build.py`` on the very
same windows and features (:func:`add_features`), so training and serving
cannot drift apart. Run from the project root::

    edgeflow run flows/pump_int8.py                                  # as fast as possible
    edgeflow run "flows/pump_int8.py:make_flow(speed=5)"             # paced, 5x real time
    edgeflow run "flows/pump_int8.py:make_flow(variant='float32')"   # the float32 baseline model
"""

from __future__ import annotations

import edgeflow.operators as eo
from edgeflow import Flow, Stream
from flows.pump_vibration import FEATURES
from operators.crest_factor import crest_factor

MODEL = "models/pump_ae/manifest.json"


def add_features(samples: Stream) -> Stream:
    """Windows and feature vectors exactly as in ``flows/pump_vibration.py`` (the model's input)."""
    windows = eo.window("win", samples, rate_hz=500, size=256, hop=64, max_gap_s=0.05)
    return crest_factor("crest", eo.features("feat", windows, FEATURES))


def make_flow(
    recording: str = "examples/data/pump_vibration.csv",
    speed: float | None = None,
    model: str = MODEL,
    variant: str | None = None,
    out: str = "out/pump_int8.summary.jsonl",
) -> Flow:
    """Build the int8 reference flow over *recording* (*variant* picks e.g. ``float32`` from the manifest)."""
    flow = Flow("pump_int8", dead_letter_path="out/pump_int8.dead_letters.jsonl")
    samples = eo.replay("samples", flow, recording, speed=speed)
    scores = eo.infer("model", add_features(samples), model=model, variant=variant)
    eo.summarize("summary", scores, every_s=10, sink=eo.jsonl(out))
    return flow


flow = make_flow()
