"""Population stability index (PSI) of model inputs against the training data's quantile bins.

``model build`` stores, per input feature, the inner edges of its training quantile bins and the share of
training windows in each bin (:class:`~edgeflow.model.manifest.Distribution`). A flow puts its recent
inputs into the same bins; ``PSI = sum((p - q) * ln(p / q))`` over the bins (``p`` recent, ``q`` training,
both floored at ``1e-4``). A common reading: under 0.1 stable, 0.1-0.25 a moderate shift, over 0.25 a
significant one.

>>> rng = np.random.default_rng(0)
>>> train = rng.normal(0.0, 1.0, (5000, 2))
>>> edges, props = quantile_bins(train, bins=10)
>>> len(edges[0]), round(sum(props[0]), 6)
(9, 1.0)
>>> same = psi(rng.normal(0.0, 1.0, (500, 2)), edges, props)
>>> shifted = psi(rng.normal([0.0, 1.0], 1.0, (500, 2)), edges, props)
>>> bool(same.max() < 0.1), bool(shifted[0] < 0.1), bool(shifted[1] > 0.25)
(True, True, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["FLOOR", "PsiBins", "psi", "quantile_bins"]

FLOOR = 1e-4
"""Smallest bin share used in the PSI sum (an empty bin would make it infinite)."""


def quantile_bins(x: np.ndarray, bins: int = 10) -> tuple[list[list[float]], list[list[float]]]:
    """Return per column of *x* ``(n, d)`` the inner edges of *bins* quantile bins and each bin's share of *x*.

    Repeated edges (a feature with few distinct values) are merged, so a column may get fewer bins.
    """
    if x.ndim != 2 or len(x) < bins:
        msg = f"quantile_bins: got an array of shape {x.shape}; expected (n, features) with n >= bins ({bins})"
        raise ValueError(msg)
    qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    edges_out, props_out = [], []
    for column in x.T.astype(np.float64):
        edges = np.unique(np.quantile(column, qs))
        counts = np.bincount(np.searchsorted(edges, column, side="right"), minlength=len(edges) + 1)
        edges_out.append(edges.tolist())
        props_out.append((counts / len(column)).tolist())
    return edges_out, props_out


class PsiBins:
    """Training bins of every feature, made once, that score recent inputs for all features in a few numpy calls.

    >>> bins = PsiBins([[0.0], [1.0, 2.0]], [[0.5, 0.5], [0.2, 0.3, 0.5]])
    >>> bins.psi(np.array([[-1.0, 0.0], [1.0, 3.0]])).round(3).tolist()
    [0.0, 2.676]
    """

    def __init__(self, edges: Sequence[Sequence[float]], proportions: Sequence[Sequence[float]]) -> None:
        if len(edges) != len(proportions):
            msg = f"PsiBins: {len(edges)} features have edges but {len(proportions)} have proportions"
            raise ValueError(msg)
        width = max((len(q) for q in proportions), default=1)
        self._edges = np.full((len(edges), max(width - 1, 1)), np.inf)
        # unused bins of a feature with fewer bins count nothing and expect FLOOR: they add exactly 0
        self._expected = np.full((len(edges), width), FLOOR)
        for i, (e, q) in enumerate(zip(edges, proportions, strict=True)):
            if len(q) != len(e) + 1:
                msg = f"PsiBins: feature {i} has {len(e)} inner edges but {len(q)} bin shares (expected {len(e) + 1})"
                raise ValueError(msg)
            self._edges[i, : len(e)] = e
            self._expected[i, : len(q)] = np.maximum(q, FLOOR)
        self._width = width

    def psi(self, recent: np.ndarray) -> np.ndarray:
        """PSI of each column of finite *recent* ``(n, d)``; one value per feature."""
        n, d = recent.shape
        if n == 0:
            return np.zeros(d)
        # bin of each value: how many of its feature's inner edges lie at or below it (searchsorted "right")
        index = (recent[:, :, None] >= self._edges[None, :, :]).sum(axis=2)
        flat = (index + self._width * np.arange(d)).ravel()
        counts = np.bincount(flat, minlength=d * self._width).reshape(d, self._width)
        p = np.maximum(counts / n, FLOOR)
        q = self._expected
        return ((p - q) * np.log(p / q)).sum(axis=1)


def psi(recent: np.ndarray, edges: Sequence[Sequence[float]], proportions: Sequence[Sequence[float]]) -> np.ndarray:
    """PSI of each column of *recent* ``(n, d)`` against the training bins; one value per feature."""
    return PsiBins(edges, proportions).psi(recent)
