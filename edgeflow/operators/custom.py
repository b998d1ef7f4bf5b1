"""Stateless steps from plain functions: ``map`` and ``filter``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeflow.graph import MapLogic, Step, Stream

__all__ = ["filter", "map"]


def map(step_id: str, up: Stream, fn: Callable[[Any], Any]) -> Stream:
    """Apply *fn* to every item (stateless: fused with neighbouring stateless steps).

    >>> from edgeflow import Flow
    >>> import edgeflow.operators as eo
    >>> s = eo.replay("samples", Flow("doc"), "examples/data/pump_vibration.csv")
    >>> from dataclasses import replace
    >>> doubled = map("double", s, lambda block: replace(block, values=2 * block.values))
    """
    logic = MapLogic(fn=fn)
    return up.flow.add_step(Step(step_id, "map", "map", (up.step_id,), build=lambda _ctx: logic))


def filter(step_id: str, up: Stream, predicate: Callable[[Any], bool]) -> Stream:
    """Keep the items for which *predicate* is true (stateless)."""
    logic = MapLogic(fn=lambda item: item if predicate(item) else None)
    return up.flow.add_step(Step(step_id, "filter", "map", (up.step_id,), build=lambda _ctx: logic))
