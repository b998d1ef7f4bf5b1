"""A custom feature: the crest factor (peak / RMS) of each window.

Impulsive faults such as bearing defects raise the crest factor before they
raise the RMS. The whole operator is one numpy function: it declares the
features it needs and the one it adds, and edgeflow checks the flow before
any data flows, runs it on every window of a batch at once, and fuses it with
the features step before it.

>>> import edgeflow.operators as eo
>>> from edgeflow import Flow
>>> s = eo.replay("samples", Flow("doc"), "examples/data/pump_vibration.csv")
>>> f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256), ["min", "max", "rms"])
>>> c = crest_factor("crest", f)
"""

import numpy as np

import edgeflow.operators as eo

__all__ = ["crest_factor"]


@eo.window_feature(needs=["min", "max", "rms"], adds=["crest"])
def crest_factor(lo: np.ndarray, hi: np.ndarray, rms: np.ndarray) -> np.ndarray:
    """``max(|min|, |max|) / rms`` per window (0 for a silent window)."""
    peak = np.maximum(np.abs(lo), np.abs(hi))
    return np.divide(peak, rms, out=np.zeros_like(peak), where=rms > 0)
