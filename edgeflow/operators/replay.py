"""Replay a recorded CSV or JSONL file (optionally gzipped) as a stream of samples.

Rows need a timezone-aware timestamp, a sensor id and one or more numeric
values. Each batch is handed on as one :class:`~edgeflow.records.SampleBlock`
per sensor, so later steps work on arrays, not on one Python object per sample. Played as fast as possible by default, or paced at ``speed`` times
real time; the output is the same either way because every later step runs on
event time. Bad rows become dead letters with the line number and reason.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from edgeflow.errors import FlowValidationError
from edgeflow.graph import Flow, Schema, Step, Stream, build_config
from edgeflow.metrics import flow_stats
from edgeflow.records import DeadLetter, Sample, SampleBlock, parse_timestamp

__all__ = ["ReplayConfig", "ReplaySource", "read_columns", "replay"]


class ReplayConfig(BaseModel):
    """Settings of :func:`replay`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    speed: PositiveFloat | None = None
    """``None``: as fast as possible; ``1.0``: real time; ``10``: ten times faster."""
    time_column: str = "ts"
    sensor_column: str = "sensor"
    value_columns: tuple[str, ...] | None = None
    """Columns holding values; default: every other column."""
    batch_size: PositiveInt = Field(default=1024, le=65_536)


def _open(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _is_jsonl(path: Path) -> bool:
    return ".jsonl" in path.suffixes or ".ndjson" in path.suffixes


def read_columns(path: Path) -> list[str]:
    """Column names of a recording: the CSV header, or the keys of the first JSONL record."""
    with _open(path) as f:
        first = f.readline()
    if not first:
        return []
    if _is_jsonl(path):
        record = json.loads(first)
        return list(record) if isinstance(record, dict) else []
    return next(csv.reader([first]))


class _ReplayPartition(StatefulSourcePartition[tuple[str, Any], int]):
    def __init__(self, step_id: str, cfg: ReplayConfig, values: tuple[str, ...], flow_name: str, resume: int | None):
        self._step_id = step_id
        self._cfg = cfg
        self._values = values
        self._stats = flow_stats(flow_name)
        self._file = _open(cfg.path)
        self._line = 0
        self._rows = self._parse_rows()
        self._pending: tuple[str, Any] | None = None
        self._t0_event: float | None = None
        self._t0_wall = 0.0
        self._next_awake: datetime | None = None
        for _ in range(resume or 0):
            next(self._rows, None)

    def _parse_rows(self) -> Iterator[tuple[str, Any]]:
        cfg = self._cfg
        if _is_jsonl(cfg.path):
            for raw in self._file:
                self._line += 1
                yield self._from_json(raw)
        else:
            header = self._file.readline()
            self._line = 1
            names = next(csv.reader([header]))
            i_ts, i_sensor = names.index(cfg.time_column), names.index(cfg.sensor_column)
            i_vals = [names.index(v) for v in self._values]
            for row in csv.reader(self._file):
                self._line += 1
                yield self._from_fields(row, i_ts, i_sensor, i_vals)

    def _dead(self, reason: str, raw: str) -> tuple[str, DeadLetter]:
        return ("_dead_letter", DeadLetter(self._step_id, f"line {self._line}: {reason}", raw))

    def _from_fields(self, row: list[str], i_ts: int, i_sensor: int, i_vals: list[int]) -> tuple[str, Any]:
        nbytes = sum(map(len, row)) + len(row)
        try:
            ts = parse_timestamp(row[i_ts])
            sensor = row[i_sensor]
            values = tuple(float(row[i]) for i in i_vals)
        except (ValueError, IndexError) as exc:
            return self._dead(str(exc), ",".join(row))
        return self._check(ts, sensor, values, nbytes, ",".join(row))

    def _from_json(self, raw: str) -> tuple[str, Any]:
        cfg = self._cfg
        try:
            record = json.loads(raw)
            ts = record[cfg.time_column]
            ts = float(ts) if isinstance(ts, (int, float)) else parse_timestamp(ts)
            sensor = str(record[cfg.sensor_column])
            values = tuple(float(record[v]) for v in self._values)
        except (ValueError, KeyError, TypeError) as exc:
            return self._dead(f"{type(exc).__name__}: {exc}", raw.rstrip("\n"))
        return self._check(ts, sensor, values, len(raw), raw.rstrip("\n"))

    def _check(self, ts: float, sensor: str, values: tuple[float, ...], nbytes: int, raw: str) -> tuple[str, Any]:
        if not sensor:
            return self._dead("empty sensor id", raw)
        if not all(map(math.isfinite, values)):
            return self._dead(f"non-finite value in {values}", raw)
        return (sensor, Sample(ts, sensor, values, nbytes, 0))

    def next_batch(self) -> list[tuple[str, Any]]:
        speed = self._cfg.speed
        batch: list[tuple[str, Any]] = []
        if self._pending is not None:
            batch.append(self._pending)
            self._pending = None
        deadline = None
        if speed is not None:
            deadline = time.monotonic()
        for pair in self._rows:
            value = pair[1]
            if deadline is not None and type(value) is Sample:
                if self._t0_event is None:
                    self._t0_event, self._t0_wall = value.ts, deadline
                due = self._t0_wall + (value.ts - self._t0_event) / speed  # type: ignore[operator]
                if due > deadline:
                    self._pending = pair
                    self._next_awake = datetime.now(timezone.utc) + timedelta(seconds=due - deadline)
                    break
            batch.append(pair)
            if len(batch) >= self._cfg.batch_size:
                break
        else:
            if not batch:
                raise StopIteration
        return self._blocks(batch)

    def _blocks(self, batch: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """Group a batch's samples into one :class:`SampleBlock` per sensor; dead letters pass as they are."""
        t_in = time.perf_counter_ns()
        groups: dict[str, list[Sample]] = {}
        out: list[tuple[str, Any]] = []
        for key, value in batch:
            if type(value) is Sample:
                groups.setdefault(key, []).append(value)
            else:
                out.append((key, value))
        n = nbytes = 0
        for sensor, samples in groups.items():
            sizes = np.fromiter((s.nbytes for s in samples), dtype=np.int64, count=len(samples))
            block = SampleBlock(
                sensor,
                np.fromiter((s.ts for s in samples), dtype=np.float64, count=len(samples)),
                np.array([s.values for s in samples], dtype=np.float64),
                sizes,
                t_in,
            )
            out.append((sensor, block))
            n += len(samples)
            nbytes += int(sizes.sum())
        self._stats.add(samples_in=n, bytes_in=nbytes)
        return out

    def next_awake(self) -> datetime | None:
        awake, self._next_awake = self._next_awake, None
        return awake

    def snapshot(self) -> int:
        return self._line

    def close(self) -> None:
        self._file.close()


class ReplaySource(FixedPartitionedSource[tuple[str, Any], int]):
    """bytewax source reading one recording as one partition."""

    def __init__(self, step_id: str, cfg: ReplayConfig, values: tuple[str, ...], flow_name: str) -> None:
        self.step_id = step_id
        self.cfg = cfg
        self.values = values
        self.flow_name = flow_name

    def list_parts(self) -> list[str]:
        return [str(self.cfg.path)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _ReplayPartition:
        return _ReplayPartition(self.step_id, self.cfg, self.values, self.flow_name, resume_state)


def replay(
    step_id: str,
    flow: Flow,
    path: str | Path,
    *,
    speed: float | None = None,
    time_column: str = "ts",
    sensor_column: str = "sensor",
    value_columns: tuple[str, ...] | list[str] | None = None,
    batch_size: int = 1024,
) -> Stream:
    """Replay the recording at *path* into *flow*.

    >>> from edgeflow import Flow
    >>> samples = replay("samples", Flow("doc"), "examples/data/pump_vibration.csv", speed=10)
    >>> samples.step_id
    'samples'
    """
    cfg: ReplayConfig = build_config(
        step_id,
        ReplayConfig,
        path=path,
        speed=speed,
        time_column=time_column,
        sensor_column=sensor_column,
        value_columns=value_columns,
        batch_size=batch_size,
    )

    def value_names() -> tuple[str, ...]:
        if not cfg.path.is_file():
            raise FlowValidationError(
                step_id, "path", str(cfg.path), "no such file", hint=f"paths are relative to {Path.cwd()}"
            )
        try:
            columns = read_columns(cfg.path)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise FlowValidationError(step_id, "path", str(cfg.path), f"cannot read the recording: {exc}") from None
        for name, column in (("time_column", cfg.time_column), ("sensor_column", cfg.sensor_column)):
            if column not in columns:
                raise FlowValidationError(step_id, name, column, f"not a column of the recording {columns}")
        wanted = cfg.value_columns or tuple(c for c in columns if c not in (cfg.time_column, cfg.sensor_column))
        missing = [c for c in wanted if c not in columns]
        if missing or not wanted:
            raise FlowValidationError(
                step_id, "value_columns", list(wanted), f"the recording has columns {columns}", hint="name value columns"
            )
        return tuple(wanted)

    def schema(_inputs: tuple[Schema, ...]) -> Schema:
        return Schema("samples", channels=value_names())

    return flow.add_step(
        Step(
            step_id,
            "replay",
            "source",
            (),
            cfg,
            schema=schema,
            source=lambda: ReplaySource(step_id, cfg, value_names(), flow.name),
            can_fail=True,
        )
    )
