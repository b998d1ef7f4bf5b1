"""Replay a recorded CSV or JSONL file (optionally gzipped) as a stream of samples.

Rows need a timezone-aware timestamp, a sensor id and one or more numeric
values. Each batch is handed on as one :class:`~edgeflow.records.SampleBlock`
per sensor, so later steps work on arrays, not on one Python object per sample.
Played as fast as possible by default, or paced at ``speed`` times real time;
the output is the same either way because every later step runs on event time.
Bad rows become dead letters with the line number and reason.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from edgeflow.errors import FlowValidationError
from edgeflow.graph import Flow, Schema, Step, Stream, build_config
from edgeflow.metrics import flow_stats
from edgeflow.records import DeadLetter, Sample, SampleBlock, parse_timestamp, parse_timestamps

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


@dataclass
class _Chunk:
    """Parsed rows in file order, as arrays."""

    ts: np.ndarray
    sensors: np.ndarray
    values: np.ndarray
    nbytes: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def split(self, n: int) -> tuple[_Chunk, _Chunk]:
        head = _Chunk(self.ts[:n], self.sensors[:n], self.values[:n], self.nbytes[:n])
        return head, _Chunk(self.ts[n:], self.sensors[n:], self.values[n:], self.nbytes[n:])

    @classmethod
    def of(cls, samples: list[Sample], channels: int) -> _Chunk:
        return cls(
            np.fromiter((s.ts for s in samples), dtype=np.float64, count=len(samples)),
            np.array([s.sensor for s in samples], dtype=str),
            np.array([s.values for s in samples], dtype=np.float64).reshape(len(samples), channels),
            np.fromiter((s.nbytes for s in samples), dtype=np.int64, count=len(samples)),
        )


class _ReplayPartition(StatefulSourcePartition[tuple[str, Any], int]):
    """Reads *batch_size* lines at a time, parses them vectorized (row by row only when some are bad)."""

    def __init__(self, step_id: str, cfg: ReplayConfig, values: tuple[str, ...], flow_name: str, resume: int | None):
        self._step_id = step_id
        self._cfg = cfg
        self._values = values
        self._stats = flow_stats(flow_name)
        self._file = _open(cfg.path)
        self._jsonl = _is_jsonl(cfg.path)
        self._line = 0
        if not self._jsonl:
            names = next(csv.reader([self._file.readline()]))
            self._line = 1
            self._ncols = len(names)
            self._i_ts, self._i_sensor = names.index(cfg.time_column), names.index(cfg.sensor_column)
            self._i_vals = [names.index(v) for v in values]
        for _ in range(max(0, (resume or 0) - self._line)):
            self._file.readline()
            self._line += 1
        self._chunk: _Chunk | None = None
        self._chunk_start = self._line  # lines read before the chunk now being handed out
        self._eof = False
        self._t0_event: float | None = None
        self._t0_wall = 0.0
        self._next_awake: datetime | None = None

    # -- parsing ----------------------------------------------------------------------------
    def _read(self) -> list[tuple[str, Any]]:
        """Parse the next lines into ``self._chunk``; return dead letters found on the way."""
        lines = list(islice(self._file, self._cfg.batch_size))
        if not lines:
            self._eof = True
            return []
        first_line = self._line + 1
        self._chunk_start = self._line
        self._line += len(lines)
        if not self._jsonl:
            chunk = self._parse_csv_fast(lines)
            if chunk is not None:
                self._chunk = chunk
                return []
        dead: list[tuple[str, Any]] = []
        samples: list[Sample] = []
        for n, raw in enumerate(lines, start=first_line):
            item = self._from_json(raw, n) if self._jsonl else self._from_csv(raw, n)
            if type(item) is Sample:
                samples.append(item)
            else:
                dead.append(("_dead_letter", item))
        self._chunk = _Chunk.of(samples, len(self._values))
        return dead

    def _parse_csv_fast(self, lines: list[str]) -> _Chunk | None:
        rows = list(csv.reader(lines))
        if any(len(row) != self._ncols for row in rows):
            return None
        columns = list(zip(*rows, strict=True))
        try:
            ts = parse_timestamps(columns[self._i_ts])
            values = np.array([columns[i] for i in self._i_vals], dtype=np.float64).T
        except ValueError:
            return None
        sensors = np.array(columns[self._i_sensor], dtype=str)
        if not (np.isfinite(values).all() and np.isfinite(ts).all()) or (sensors == "").any():
            return None
        nbytes = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))
        return _Chunk(ts, sensors, values, nbytes)

    def _dead(self, line: int, reason: str, raw: str) -> DeadLetter:
        return DeadLetter(self._step_id, f"line {line}: {reason}", raw.rstrip("\r\n"))

    def _from_csv(self, raw: str, line: int) -> Sample | DeadLetter:
        row = next(csv.reader([raw]), [])
        try:
            if len(row) != self._ncols:
                msg = f"expected {self._ncols} columns, got {len(row)}"
                raise ValueError(msg)
            ts = parse_timestamp(row[self._i_ts])
            values = tuple(float(row[i]) for i in self._i_vals)
        except ValueError as exc:
            return self._dead(line, str(exc), raw)
        return self._check(ts, row[self._i_sensor], values, len(raw), raw, line)

    def _from_json(self, raw: str, line: int) -> Sample | DeadLetter:
        cfg = self._cfg
        try:
            record = json.loads(raw)
            ts = record[cfg.time_column]
            ts = float(ts) if isinstance(ts, (int, float)) else parse_timestamp(ts)
            sensor = str(record[cfg.sensor_column])
            values = tuple(float(record[v]) for v in self._values)
        except (ValueError, KeyError, TypeError) as exc:
            return self._dead(line, f"{type(exc).__name__}: {exc}", raw)
        return self._check(ts, sensor, values, len(raw), raw, line)

    def _check(
        self, ts: float, sensor: str, values: tuple[float, ...], nbytes: int, raw: str, line: int
    ) -> Sample | DeadLetter:
        if not sensor:
            return self._dead(line, "empty sensor id", raw)
        if not math.isfinite(ts):
            return self._dead(line, f"timestamp {ts!r} is not a finite number", raw)
        if not all(map(math.isfinite, values)):
            return self._dead(line, f"non-finite value in {values}", raw)
        return Sample(ts, sensor, values, nbytes, 0)

    # -- bytewax ----------------------------------------------------------------------------
    def next_batch(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        if self._chunk is None or not len(self._chunk):
            out.extend(self._read())
            if self._eof:
                if out:
                    return out
                raise StopIteration
        chunk = self._chunk
        assert chunk is not None
        take = len(chunk)
        if self._cfg.speed is not None and take:
            now = time.monotonic()
            if self._t0_event is None:
                self._t0_event, self._t0_wall = float(chunk.ts[0]), now
            due = self._t0_wall + (chunk.ts - self._t0_event) / self._cfg.speed
            take = int(np.searchsorted(due, now, side="right"))
            if take < len(chunk):
                self._next_awake = datetime.now(timezone.utc) + timedelta(seconds=float(due[take]) - now)
        head, self._chunk = chunk.split(take)
        out.extend(self._blocks(head))
        return out

    def _blocks(self, chunk: _Chunk) -> list[tuple[str, Any]]:
        """One :class:`SampleBlock` per sensor, in the chunk's order."""
        if not len(chunk):
            return []
        t_in = time.perf_counter_ns()
        out: list[tuple[str, Any]] = []
        for sensor in dict.fromkeys(chunk.sensors.tolist()):
            mask = chunk.sensors == sensor
            out.append((sensor, SampleBlock(sensor, chunk.ts[mask], chunk.values[mask], chunk.nbytes[mask], t_in)))
        self._stats.add(samples_in=len(chunk), bytes_in=int(chunk.nbytes.sum()))
        return out

    def next_awake(self) -> datetime | None:
        awake, self._next_awake = self._next_awake, None
        return awake

    def snapshot(self) -> int:
        # resume at the start of a chunk still being handed out (paced): at least once, never a gap
        return self._chunk_start if self._chunk is not None and len(self._chunk) else self._line

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
                step_id,
                "value_columns",
                list(wanted),
                f"the recording has columns {columns}",
                hint="name value columns",
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
