"""What every detector does around its score: pick the features, refuse non-finite ones, explain and persist flags.

* **Features that drive the score**: a detector's ``features=[...]`` names a
  subset of the input's features, checked against the schema before data flows
  (:func:`feature_index`).
* **Non-finite features never reach a baseline**: a window with NaN or an
  infinity among them becomes a dead letter naming the feature and the window's
  time (:func:`non_finite_letter`), so one absurd sample cannot blind a sensor.
* **Explained flags**: a flagged window carries the features whose z-values
  crossed the threshold, with those z-values (:func:`raised_by`).
* **Persistence against flicker**: with ``persistence=(k, n)`` a window that
  crosses the threshold is flagged only when at least *k* of the sensor's last
  *n* windows crossed (:class:`KOfN`): a lone crossing is not, and an alarm
  ends with the fault. While *k* of the last *n* crossed, no window is learned.
  ``(1, 1)`` flags every crossing.

>>> flags = KOfN(2, 3)
>>> [flags.push(x) and x for x in (True, False, True, True, False, False)]
[False, False, True, True, False, False]
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgeflow.errors import FlowValidationError
from edgeflow.graph import Schema
from edgeflow.metrics import FlowStats
from edgeflow.records import DeadLetter, Scored, Window, to_iso

__all__ = ["KOfN", "check_persistence", "feature_index", "non_finite_letter", "raised_by", "score_windows"]


def feature_index(step_id: str, schema: Schema, names: Sequence[str] | None) -> tuple[int, ...]:
    """Positions of the features *names* in *schema* (all of them when ``None``), or an error naming the step.

    >>> feats = Schema("windows", features=("mean", "std", "p95"))
    >>> feature_index("detect", feats, ["std", "mean"]), feature_index("detect", feats, None)
    ((1, 0), (0, 1, 2))
    >>> feature_index("detect", feats, ["sdt"])
    Traceback (most recent call last):
    ...
    edgeflow.errors.FlowValidationError: step 'detect': field 'features' got ['sdt']: ... Hint: did you mean 'std'?
    """
    if schema.kind != "windows" or not schema.features:
        raise FlowValidationError(
            step_id, "up", schema.kind, "the detector needs feature vectors", hint="put eo.features before it"
        )
    if names is None:
        return tuple(range(schema.n_features))
    unknown = [name for name in names if name not in schema.features]
    if unknown:
        close = difflib.get_close_matches(unknown[0], schema.features, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"the input has {list(schema.features)}"
        raise FlowValidationError(
            step_id, "features", list(names), f"{unknown} are not features of the input", hint=hint
        )
    return tuple(schema.features.index(name) for name in names)


def check_persistence(value: tuple[int, int]) -> tuple[int, int]:
    """Validate ``(k, n)``: 1 <= k <= n <= 64 (for a settings model's field validator).

    >>> check_persistence((2, 3))
    (2, 3)
    >>> check_persistence((3, 2))
    Traceback (most recent call last):
    ...
    ValueError: persistence (k, n) needs 1 <= k <= n <= 64, got (3, 2)
    """
    k, n = value
    if not 1 <= k <= n <= 64:
        msg = f"persistence (k, n) needs 1 <= k <= n <= 64, got {value}"
        raise ValueError(msg)
    return value


class KOfN:
    """The last *n* threshold crossings of one sensor as bits; flagged when at least *k* are set."""

    def __init__(self, k: int, n: int) -> None:
        self.k, self.n = k, n
        self.bits = 0

    def push(self, crossed: bool) -> bool:
        """Record one window's crossing; return whether *k* of the last *n* crossed (the alarm is active)."""
        self.bits = ((self.bits << 1) | int(crossed)) & ((1 << self.n) - 1)
        return self.bits.bit_count() >= self.k

    @property
    def active(self) -> bool:
        """Whether *k* of the last *n* windows crossed."""
        return self.bits.bit_count() >= self.k

    def clear(self) -> None:
        """Forget the crossings (after the baseline has been moved to a new level)."""
        self.bits = 0


def non_finite_letter(step_id: str, window: Window, names: Sequence[str], x: np.ndarray) -> DeadLetter | None:
    """Return a dead letter for *window* if a feature value in *x* is NaN or infinite, else ``None``.

    >>> w = Window("s", 0.0, 60.0, np.zeros((1, 2), np.float32), 1.0, 2, 20, 0)
    >>> non_finite_letter("detect", w, ["mean", "std"], np.array([1.0, np.inf])).reason
    "non-finite feature 'std' = inf in the window ending 1970-01-01T00:01:00+00:00: not scored, not learned"
    """
    bad = ~np.isfinite(x)
    if not bad.any():
        return None
    i = int(np.flatnonzero(bad)[0])
    reason = (
        f"non-finite feature {names[i]!r} = {float(x[i])} in the window ending {to_iso(window.end)}: "
        "not scored, not learned"
    )
    return DeadLetter(step_id, reason, f"sensor {window.sensor!r} features {x.tolist()}", window.sensor)


def raised_by(names: Sequence[str], z: np.ndarray, threshold: float) -> dict[str, float]:
    """Return the features whose |z| crossed *threshold*, largest first (the largest one alone if none did).

    >>> raised_by(["mean", "std", "p95"], np.array([1.0, -7.2, 6.1]), 5.0)
    {'std': -7.2, 'p95': 6.1}
    """
    order = np.argsort(-np.abs(z), kind="stable")
    picked = [i for i in order if abs(z[i]) > threshold] or [int(order[0])]
    return {names[i]: round(float(z[i]), 3) for i in picked}


def score_windows(
    step_id: str,
    windows: list[Window],
    names: Sequence[str],
    index: np.ndarray | None,
    model: str,
    stats: FlowStats,
    score: Callable[[np.ndarray, Window], tuple[float, bool, dict[str, float] | None]],
) -> list[Any]:
    """Score one sensor's windows in order with *score* (on the selected features); non-finite ones are dead letters.

    *score* returns the window's score, whether it is flagged, and what raised the flag. Flagged windows are
    added to the run's anomaly count.
    """
    out: list[Any] = []
    anomalies = 0
    for w in windows:
        assert w.features is not None
        features = w.features.astype(np.float64)
        letter = non_finite_letter(step_id, w, names, features)
        if letter is not None:
            out.append(letter)
            continue
        value, flagged, by = score(features if index is None else features[index], w)
        anomalies += flagged
        out.append(Scored(w, value, flagged, model, by))
    if anomalies:
        stats.add(anomalies=anomalies)
    return out
