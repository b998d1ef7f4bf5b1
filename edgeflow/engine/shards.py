"""Keyed state in shards: the engine routes a few shard keys, each holding many sensors' states.

bytewax pays a fixed cost for every key it hands a batch to (about 7 µs on this machine's kind of CPU),
so a flow keyed by sensor slows down as sensors multiply: at 4,000 sensors it was most of a run.
Items are routed by :meth:`Shards.route` instead, to one of a few keys, the same in every process, and
one :class:`SensorBank` per shard keeps its sensors' :class:`~edgeflow.graph.KeyedLogic` states in a
dict. Each state still sees only its own sensor's items, in arrival order, and is snapshotted and
resumed on its own (within its shard's snapshot), so operators do not know shards exist.

An engine of one worker routes every sensor to one shard: each keyed step is one call per batch, with all
of the batch's sensors (the window step vectorizes across them). Several workers need several shards to
share: :data:`SHARDS` of them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bytewax.operators import StatefulBatchLogic

from edgeflow.graph import KeyedLogic

__all__ = ["SHARDS", "SensorBank", "Shards", "TimedSensorBank"]

_KEYS = (
    "shard-14", "shard-20", "shard-31", "shard-38", "shard-56", "shard-74", "shard-84", "shard-107",
    "shard-118", "shard-122", "shard-129", "shard-146", "shard-182", "shard-190", "shard-230", "shard-231",
)  # fmt: skip
"""The shard keys: chosen among ``shard-0`` ... ``shard-299`` so that bytewax 0.21 routes them to 2, 3 and 4
workers evenly (8/8, 6/5/5, 4/4/4/4; ``tests/test_shards.py`` checks 2 and 4 on a real cluster). Few shards
keep many sensors in each call of a keyed step (the window step vectorizes across them); the names keep
the workers' shares even."""
SHARDS = len(_KEYS)
"""Shard keys of an engine with several workers."""
_ROUTES_KEPT = 1 << 16
"""Routes remembered; beyond that the memo starts over (a flood of new ids costs time, not memory)."""


class Shards:
    """Which engine key holds each sensor's state: one of *count* shards (1 or :data:`SHARDS`).

    The route depends only on the sensor id and *count*, so it is the same in every process and run.
    A recovery store keeps the count it was written with (see :mod:`edgeflow.engine.execute`).

    >>> Shards(1).route("pump-1"), Shards(1).route("pump-2")
    ('shard-14', 'shard-14')
    >>> Shards(SHARDS).route("pump-1") == Shards(SHARDS).route("pump-1")
    True
    """

    __slots__ = ("_keys", "_routes", "count")

    def __init__(self, count: int) -> None:
        if count not in (1, SHARDS):
            msg = f"shards: {count} (1 or {SHARDS})"
            raise ValueError(msg)
        self.count = count
        self._keys = _KEYS[:count]
        self._routes: dict[str, str] = {}

    @classmethod
    def for_workers(cls, workers: int) -> Shards:
        """Return the shards for an engine of *workers* workers: one for one worker, else :data:`SHARDS`."""
        return cls(1 if workers == 1 else SHARDS)

    def route(self, sensor: str) -> str:
        """Return the engine key of *sensor*'s state."""
        key = self._routes.get(sensor)
        if key is None:
            if len(self._routes) >= _ROUTES_KEPT:
                self._routes.clear()
            keys = self._keys
            key = keys[0] if len(keys) == 1 else keys[zlib.crc32(sensor.encode("utf-8", "surrogatepass")) % len(keys)]
            self._routes[sensor] = key
        return key


class SensorBank(StatefulBatchLogic[Any, Any, Any]):
    """The states of one shard's sensors: a batch's items are grouped by ``.sensor`` and handed to each state.

    *new_state(resume)* makes one sensor's state. Without *keep* (a run with no recovery store) nothing
    is copied for snapshots. With it, a snapshot holds every sensor's own snapshot, and only sensors
    touched since the last one are asked again. A state whose ``discard`` is true after a batch is
    dropped (e.g. a refused sensor), and the bank too once it holds none. A state class with a static
    ``on_batches([(state, items), ...])`` gets a batch's sensors in one call (e.g. to vectorize across
    them); it must return what each state's ``on_batch(items)`` would, in any order across sensors.
    """

    def __init__(
        self,
        new_state: Callable[[Any | None], KeyedLogic],
        resume: Any | None,
        *,
        keep: bool = True,
        shards: int = SHARDS,
    ) -> None:
        self._new_state = new_state
        self._keep = keep
        self._shards = shards
        self.states: dict[str, KeyedLogic] = {}
        self._snapshots: dict[str, Any] = {}
        self._touched: set[str] = set()
        if resume is not None:
            if not (isinstance(resume, tuple) and len(resume) == 2 and isinstance(resume[1], dict)):
                msg = (
                    "the recovery store was not written by this edgeflow's shards (an older edgeflow kept one "
                    "engine key per sensor): resume with the version that wrote it, or start from an empty "
                    "recovery_dir"
                )
                raise ValueError(msg)
            shards, per_sensor = resume
            if shards != self._shards:
                msg = (
                    f"the recovery store was written with {shards} shards and this run routes {self._shards} "
                    "(its edgeflow-shards file was lost or changed, or another edgeflow wrote it): restore the file "
                    "or start from an empty recovery_dir"
                )
                raise ValueError(msg)
            for sensor, state in per_sensor.items():
                logic = self.states[sensor] = new_state(state)
                # a copy of its own: a state may keep (and later change) the very object it resumed from
                self._snapshots[sensor] = logic.snapshot() if keep else None

    def _state(self, sensor: str) -> KeyedLogic:
        state = self.states.get(sensor)
        if state is None:
            state = self.states[sensor] = self._new_state(None)
        return state

    def on_batch(self, values: list[Any]) -> tuple[list[Any], bool]:
        if len(values) == 1 or all(v.sensor == values[0].sensor for v in values):
            groups: dict[str, list[Any]] = {values[0].sensor: values}
        else:
            groups = {}
            for value in values:
                sensor = value.sensor
                group = groups.get(sensor)
                if group is None:
                    groups[sensor] = [value]
                else:
                    group.append(value)
        out: list[Any] = []
        states = [self._state(sensor) for sensor in groups]
        together = getattr(type(states[0]), "on_batches", None) if len(states) > 1 else None
        if together is not None:  # the step takes many sensors' batches in one call
            out = together(list(zip(states, groups.values(), strict=True)))
        for sensor, state in zip(groups, states, strict=True):
            if together is None:
                out.extend(state.on_batch(groups[sensor]))
            if getattr(state, "discard", False):
                del self.states[sensor]
                self._snapshots.pop(sensor, None)
                self._touched.discard(sensor)
            elif self._keep:
                self._touched.add(sensor)
        return out, StatefulBatchLogic.RETAIN if self.states else StatefulBatchLogic.DISCARD

    def on_eof(self) -> tuple[list[Any], bool]:
        out: list[Any] = []
        for sensor, state in self.states.items():
            out.extend(state.on_eof())
            if self._keep:
                self._touched.add(sensor)
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> Any:
        if not self._keep:
            return None
        for sensor in self._touched:
            self._snapshots[sensor] = self.states[sensor].snapshot()
        self._touched.clear()
        return (self._shards, dict(self._snapshots))


class TimedSensorBank(SensorBank):
    """:class:`SensorBank` for states that also release on time (``notify_at()`` / ``on_notify()``)."""

    def on_notify(self) -> tuple[list[Any], bool]:
        out: list[Any] = []
        now = None
        for sensor, state in self.states.items():
            due = state.notify_at()  # type: ignore[attr-defined]
            if due is None:
                continue
            if now is None:
                now = datetime.now(due.tzinfo)
            if due <= now:
                out.extend(state.on_notify())  # type: ignore[attr-defined]
                if self._keep:
                    self._touched.add(sensor)
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        times = [t for state in self.states.values() if (t := state.notify_at()) is not None]  # type: ignore[attr-defined]
        return min(times) if times else None
