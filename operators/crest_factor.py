"""A custom stateless operator: append the crest factor (peak / RMS) to each feature vector.

Impulsive faults such as bearing defects raise the crest factor before they
raise the RMS. This file shows the whole recipe for a user operator: a frozen
pydantic settings model, a schema rule that fails at compile time with the
step's name, and a plain function applied to every item.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeflow import FlowValidationError, Schema, Step, Stream, build_config
from edgeflow.records import Window

__all__ = ["CrestFactorConfig", "crest_factor"]


class CrestFactorConfig(BaseModel):
    """Which features hold the extremes and the RMS, and the new feature's name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    peak_of: tuple[str, str] = ("min", "max")
    rms: str = "rms"
    name: str = "crest"


def crest_factor(step_id: str, up: Stream, *, peak_of: tuple[str, str] = ("min", "max"), rms: str = "rms") -> Stream:
    """Append ``max(|min|, |max|) / rms`` as feature ``crest``.

    >>> import edgeflow.operators as eo
    >>> from edgeflow import Flow
    >>> s = eo.replay("samples", Flow("doc"), "examples/data/pump_vibration.csv")
    >>> f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256), ["min", "max", "rms"])
    >>> c = crest_factor("crest", f)
    """
    cfg: CrestFactorConfig = build_config(step_id, CrestFactorConfig, peak_of=peak_of, rms=rms)
    index: list[int] = []

    def schema(inputs: tuple[Schema, ...]) -> Schema:
        (feats,) = inputs
        needed = (*cfg.peak_of, cfg.rms)
        missing = [n for n in needed if n not in feats.features]
        if missing:
            raise FlowValidationError(
                step_id, "up", list(feats.features), f"needs features {missing}", hint=f"add {missing} to eo.features"
            )
        index[:] = [feats.features.index(n) for n in needed]
        return feats.but(features=(*feats.features, cfg.name))

    def append_crest(w: Window) -> Window:
        assert w.features is not None
        lo, hi, rms_value = w.features[index].astype(np.float64)
        crest = max(abs(lo), abs(hi)) / rms_value if rms_value > 0 else 0.0
        return replace(w, features=np.append(w.features, np.float32(crest)))

    return up.flow.add_step(Step(step_id, "crest_factor", "map", (up.step_id,), cfg, schema=schema, fn=append_crest))
