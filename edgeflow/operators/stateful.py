"""Keyed state from a plain object: ``update(item)`` learns and returns what to emit, as River's estimators do.

Each sensor gets its own state object, made by *new_state*; items of one sensor
reach it in event order. The state is snapshotted by pickling a copy of it, so
a restarted flow resumes with what it had learnt.

>>> import edgeflow.operators as eo
>>> from edgeflow import Flow
>>> class Peak:
...     '''Emit each window with the largest RMS this sensor has seen so far.'''
...     def __init__(self) -> None:
...         self.peak = 0.0
...     def update(self, window):
...         self.peak = max(self.peak, float(window.features[0]))
...         return window if self.peak == float(window.features[0]) else None
>>> s = eo.replay("samples", Flow("doc"), "examples/data/pump_vibration.csv")
>>> peaks = eo.stateful("peak", eo.features("feat", eo.window("win", s, rate_hz=500, size=256), ["rms"]), Peak)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from edgeflow.errors import FlowValidationError
from edgeflow.graph import Schema, Step, StepContext, Stream

__all__ = ["KeyedState", "StatefulLogic", "stateful"]


@runtime_checkable
class KeyedState(Protocol):
    """One sensor's state: learn from an item and return what to emit (``None``: nothing; a list: several)."""

    def update(self, item: Any) -> Any: ...


class StatefulLogic:
    """Adapts a :class:`KeyedState` to the engine's keyed batches.

    ``flush()``, when the state has it, is called at the end of input and may return items too.

    >>> class Count:
    ...     def __init__(self): self.n = 0
    ...     def update(self, item): self.n += 1; return self.n
    >>> logic = StatefulLogic("count", Count, None)
    >>> logic.on_batch(["a", "b"]), StatefulLogic("count", Count, logic.snapshot()).on_batch(["c"])
    ([1, 2], [3])
    """

    def __init__(self, step_id: str, new_state: Callable[[], KeyedState], resume: KeyedState | None) -> None:
        self._step_id = step_id
        self.state = resume if resume is not None else new_state()

    def on_batch(self, items: list[Any]) -> list[Any]:
        out: list[Any] = []
        update = self.state.update
        for item in items:
            _emit(out, update(item))
        return out

    def on_eof(self) -> list[Any]:
        out: list[Any] = []
        flush = getattr(self.state, "flush", None)
        if flush is not None:
            _emit(out, flush())
        return out

    def snapshot(self) -> KeyedState:
        return copy.deepcopy(self.state)


def _emit(out: list[Any], result: Any) -> None:
    if result is None:
        return
    if isinstance(result, list | tuple) and not hasattr(result, "_fields"):  # a plain sequence, not a NamedTuple
        out.extend(x for x in result if x is not None)
    else:
        out.append(result)


def stateful(
    step_id: str,
    up: Stream,
    new_state: Callable[[], KeyedState],
    *,
    schema: Callable[[Schema], Schema] | None = None,
    can_fail: bool = False,
) -> Stream:
    """Run one *new_state()* object per sensor over *up*; emit what its ``update(item)`` returns.

    *schema* maps the input schema to the output schema (default: unchanged). With *can_fail*,
    the state may return :class:`~edgeflow.records.DeadLetter` items, which go to the dead-letter sink.
    """
    if not callable(new_state):
        raise FlowValidationError(
            step_id, "new_state", new_state, "is not callable", hint="pass a class or a function making a new state"
        )
    probe = new_state if isinstance(new_state, type) else None
    if probe is not None and not callable(getattr(probe, "update", None)):
        raise FlowValidationError(
            step_id, "new_state", probe.__name__, "has no update(item) method", hint="define update(self, item)"
        )

    def output_schema(inputs: tuple[Schema, ...]) -> Schema:
        (one,) = inputs
        return schema(one) if schema is not None else one

    def build(_ctx: StepContext) -> Callable[[KeyedState | None], StatefulLogic]:
        return lambda resume: StatefulLogic(step_id, new_state, resume)

    name = getattr(new_state, "__name__", "stateful")
    return up.flow.add_step(
        Step(step_id, name, "keyed", (up.step_id,), schema=output_schema, build=build, can_fail=can_fail)
    )
