"""Per-window features from a plain numpy function: ``@eo.window_feature(needs=[...], adds=[...])``.

The decorated function receives the features it *needs* as columns (one array
per name, one entry per window: every window of a batch, from every sensor, at
once) and returns the features it *adds* (one array, or one per name). It
becomes an operator ``fn(step_id, up, **settings) -> Stream``: checked before
data flows (missing features fail with the step's name), stateless, and fused
with its neighbours. Keyword-only arguments of the function are its settings.

>>> import numpy as np
>>> import edgeflow.operators as eo
>>> from edgeflow import Flow
>>> @eo.window_feature(needs=["min", "max", "rms"], adds=["crest"])
... def crest(lo, hi, rms):
...     peak = np.maximum(np.abs(lo), np.abs(hi))
...     return np.divide(peak, rms, out=np.zeros_like(peak), where=rms > 0)
>>> s = eo.replay("samples", Flow("doc"), "examples/data/pump_vibration.csv")
>>> w = eo.window("win", s, rate_hz=500, size=256)
>>> eo.output("ok", crest("crest", eo.features("feat", w, ["min", "max", "rms"])), eo.stdout())
>>> eo.output("out", crest("crest2", eo.features("feat2", w, ["rms"])), eo.stdout())
>>> from edgeflow.compiler import compile_flow
>>> compile_flow(s.flow)
Traceback (most recent call last):
...
edgeflow.errors.FlowValidationError: step 'crest2': field 'up' got ['rms']: needs features ['min', 'max']...
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgeflow.errors import FlowValidationError
from edgeflow.graph import MapLogic, Schema, Step, StepContext, Stream
from edgeflow.records import DeadLetter, Window

__all__ = ["window_feature"]

FeatureOperator = Callable[..., Stream]


def window_feature(
    *, needs: Sequence[str] = (), adds: Sequence[str], data: bool = False
) -> Callable[[Callable[..., Any]], FeatureOperator]:
    """Turn ``fn(*needed_columns, **settings) -> added`` into a feature operator.

    With *data*, the function also gets the windows' samples first, shaped ``(windows, channels, size)``.
    """
    needs, adds = tuple(needs), tuple(adds)
    if not adds:
        msg = "window_feature: adds must name at least one feature"
        raise ValueError(msg)

    def decorate(fn: Callable[..., Any]) -> FeatureOperator:
        settings = {
            name: p for name, p in inspect.signature(fn).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
        }

        @functools.wraps(fn)
        def operator(step_id: str, up: Stream, **kwargs: Any) -> Stream:
            for name in kwargs:
                if name not in settings:
                    close = difflib.get_close_matches(name, settings, n=1)
                    hint = f"did you mean {close[0]!r}?" if close else f"settings: {sorted(settings) or 'none'}"
                    raise FlowValidationError(
                        step_id, name, kwargs[name], f"{fn.__name__} has no such setting", hint=hint
                    )
            compute = functools.partial(fn, **kwargs)

            def schema(inputs: tuple[Schema, ...]) -> Schema:
                (feats,) = inputs
                if feats.kind != "windows":
                    raise FlowValidationError(
                        step_id,
                        "up",
                        feats.kind,
                        f"{fn.__name__} takes windows",
                        hint="put it after eo.window / eo.features",
                    )
                missing = [n for n in needs if n not in feats.features]
                if missing:
                    raise FlowValidationError(
                        step_id,
                        "up",
                        list(feats.features),
                        f"needs features {missing}",
                        hint=f"add {missing} to eo.features before it",
                    )
                clash = [n for n in adds if n in feats.features]
                if clash:
                    raise FlowValidationError(
                        step_id,
                        "adds",
                        list(clash),
                        "these features already exist upstream",
                        hint="give the new features other names",
                    )
                return feats.but(features=(*feats.features, *adds))

            def build(ctx: StepContext) -> MapLogic:
                index = [ctx.input.features.index(n) for n in needs]
                return MapLogic(batch=functools.partial(_apply, step_id, compute, index, len(adds), data))

            return up.flow.add_step(
                Step(step_id, fn.__name__, "map", (up.step_id,), schema=schema, build=build, can_fail=True)
            )

        operator.__doc__ = fn.__doc__
        return operator

    return decorate


def _feature_matrix(windows: list[Window]) -> np.ndarray:
    """Return the windows' feature vectors as one ``(windows, features)`` array (no copy for a lone window)."""
    if len(windows) == 1:
        return windows[0].features[None, :]  # type: ignore[index]
    return np.stack([w.features for w in windows])  # type: ignore[misc]


def _apply(
    step_id: str, compute: Callable[..., Any], index: list[int], n_adds: int, data: bool, windows: list[Window]
) -> list[Window | DeadLetter]:
    feats = _feature_matrix(windows)
    columns = [feats[:, i].astype(np.float64) for i in index]
    if data:
        columns.insert(0, np.stack([w.data for w in windows]))
    try:
        added = compute(*columns)
        block = np.column_stack(added) if isinstance(added, tuple | list) else np.asarray(added, dtype=np.float64)
        block = block.reshape(len(windows), -1) if block.size == len(windows) * n_adds else block
        if block.shape != (len(windows), n_adds):
            msg = f"returned shape {block.shape}, expected ({len(windows)}, {n_adds}): one value per window and feature"
            raise ValueError(msg)
    except Exception as exc:  # a user's function failing must not stop the flow
        reason = f"{getattr(compute, 'func', compute).__name__} failed: {type(exc).__name__}: {exc}"
        return [DeadLetter(step_id, reason, repr(w.features), w.sensor) for w in windows]  # type: ignore[misc]
    out = np.concatenate((feats, block.astype(np.float32)), axis=1)
    return [w.with_features(row) for w, row in zip(windows, out, strict=True)]
