"""Replay a recorded CSV or JSONL file (optionally gzipped) as a stream of samples.

Rows need a timezone-aware timestamp, a sensor id and one or more numeric
values (parsing: :mod:`edgeflow.recordings`). Each batch is handed on as one
:class:`~edgeflow.records.SampleBlock` per sensor, so later steps work on
arrays, not on one Python object per sample. Played as fast as possible by
default, or paced at ``speed`` times real time; the output is the same either
way because every later step runs on event time. Bad rows become dead letters
with the line number and reason. A resumed replay starts exactly at the
first row not yet handed on.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator

from edgeflow.errors import FlowValidationError
from edgeflow.graph import Flow, Schema, Step, StepContext, Stream, build_config
from edgeflow.metrics import FlowStats
from edgeflow.recordings import (
    DEFAULT_BATCH_ROWS,
    Chunk,
    RecordingReader,
    is_jsonl,
    read_columns,
    value_columns_of,
)
from edgeflow.records import TimeFormat, TimeUnit

__all__ = ["ReplayConfig", "ReplaySource", "replay"]


class ReplayConfig(BaseModel):
    """Settings of :func:`replay`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    speed: PositiveFloat | None = None
    """``None``: as fast as possible; ``1.0``: real time; ``10``: ten times faster."""
    time_column: str = "ts"
    """The timestamp column: ISO 8601 text, or epoch numbers in ``time_unit``."""
    time_unit: TimeUnit = "s"
    """Unit of numeric epoch timestamps: ``s``, ``ms``, ``us`` or ``ns``."""
    tz: str | None = None
    """IANA zone (e.g. ``"UTC"``, ``"Europe/Berlin"``) of timestamps written without an offset."""
    sensor_column: str = "sensor"
    sensor: str | None = Field(default=None, min_length=1)
    """A constant sensor id for a one-sensor file without a sensor column (``sensor_column`` is then ignored)."""
    value_columns: tuple[str, ...] | None = None
    """Columns holding values; default: every other column."""
    batch_size: PositiveInt | None = Field(default=None, le=262_144)
    """Rows per batch; ``None``: 8,192, growing with the number of sensors that recur (64 rows each, at most 262,144).

    Larger batches amortize each step's per-call cost (8,192 rows run ~1.6x faster than 1,024 on the pump
    recording); a paced replay still hands rows on only when they are due, so latency does not grow."""

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, tz: str | None) -> str | None:
        if tz is not None and tz.upper() != "UTC":
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                msg = f"unknown time zone {tz!r}; use an IANA name such as 'UTC' or 'Europe/Berlin'"
                raise ValueError(msg) from None
        return tz

    @property
    def splits_by_sensor(self) -> bool:
        """Whether several workers can share this recording by sensor (a CSV file with a sensor column)."""
        return self.sensor is None and not is_jsonl(self.path)

    @property
    def time_format(self) -> TimeFormat:
        """How this recording's timestamps are parsed."""
        return TimeFormat(tz=self.tz, unit=self.time_unit)

    def reader(
        self,
        step_id: str,
        values: tuple[str, ...],
        *,
        batch_size: int,
        start_line: int = 0,
        share: tuple[int, int] = (0, 1),
    ) -> RecordingReader:
        """Open a reader of this recording with these column settings (of the rows of *share*, see below)."""
        return RecordingReader(
            self.path,
            values,
            step_id=step_id,
            time_column=self.time_column,
            sensor_column=self.sensor_column,
            sensor=self.sensor,
            time_format=self.time_format,
            batch_size=batch_size,
            start_line=start_line,
            grow=self.batch_size is None,
            share=share,
        )


class _ReplayPartition:
    """Hands out parsed chunks, paced or not.

    The snapshot is exact: the first line of the chunk being handed out and how many of its rows were
    handed on. A resumed replay re-reads that chunk, skips those rows and does not repeat its dead letters.
    """

    def __init__(
        self,
        step_id: str,
        cfg: ReplayConfig,
        values: tuple[str, ...],
        stats: FlowStats,
        resume: tuple[int, int, int] | None,
        share: tuple[int, int] = (0, 1),
    ) -> None:
        self._cfg = cfg
        self._stats = stats
        start_line, handed, batch = resume if resume is not None else (0, 0, cfg.batch_size or DEFAULT_BATCH_ROWS)
        self._reader = cfg.reader(step_id, values, batch_size=batch, start_line=start_line, share=share)
        self._chunk: Chunk | None = None
        self._chunk_start = self._reader.line  # lines read before the chunk now being handed out
        self._chunk_batch = batch  # the batch size that chunk was read with
        self._handed = 0  # rows of that chunk handed on so far
        self._t0_event: float | None = None
        self._t0_wall = 0.0
        self._due: np.ndarray | None = None
        """When each row of the chunk being handed out is due (monotonic seconds), for a paced replay."""
        self._next_awake: datetime | None = None
        if cfg.path.suffix != ".gz" and resume is None and share[0] == 0:  # progress: rows' bytes against the file's
            stats.count("replay.bytes_total", cfg.path.stat().st_size)
        if resume is not None and handed:
            chunk, _dead = self._reader.read()  # its dead letters went out before the snapshot
            if chunk is not None:
                self._chunk = chunk.split(handed)[1]
                self._handed = handed

    def next_batch(self) -> list[Any]:
        out: list[Any] = []
        if self._chunk is None or not len(self._chunk):
            self._chunk_start, self._chunk_batch = self._reader.line, self._reader.batch_size
            chunk, dead = self._reader.read()
            out.extend(dead)
            if chunk is None:
                self._chunk = None
                if out:
                    return out
                raise StopIteration
            self._chunk, self._handed, self._due = chunk, 0, None
        chunk = self._chunk
        take = len(chunk)
        if self._cfg.speed is not None and take:
            now = time.monotonic()
            if self._t0_event is None:
                self._t0_event, self._t0_wall = float(chunk.ts[0]), now
            if self._due is None:  # once per chunk, not per poll: a paced poll hands on a row or two
                self._due = self._t0_wall + (chunk.ts - self._t0_event) / self._cfg.speed
            take = int(np.searchsorted(self._due, now, side="right"))
            if take < len(chunk):
                self._next_awake = datetime.now(timezone.utc) + timedelta(seconds=float(self._due[take]) - now)
            self._due = self._due[take:]
        head, self._chunk = chunk.split(take)
        self._handed += take
        if len(head):
            out.extend(head.blocks(time.perf_counter_ns()))
            read = int(np.add.reduce(head.nbytes))
            self._stats.add(samples_in=len(head), bytes_in=read)
            self._stats.count("replay.bytes_read", read)
        return out

    def next_awake(self) -> datetime | None:
        awake, self._next_awake = self._next_awake, None
        return awake

    def snapshot(self) -> tuple[int, int, int]:
        if self._chunk is not None and len(self._chunk):
            return (self._chunk_start, self._handed, self._chunk_batch)
        return (self._reader.line, 0, self._reader.batch_size)

    def close(self) -> None:
        self._reader.close()


class ReplaySource:
    """Reads one recording (a :class:`~edgeflow.connectors.Source`), split by sensor among *workers*.

    With several workers every worker reads the file but parses only the rows of its share of the sensors
    (:mod:`edgeflow.sensor_split`), so ingest runs everywhere; a sensor's rows stay in file order. One-sensor
    and JSON Lines files are one partition. Partition names carry the split (``path#1/2``): a run resumed
    from a snapshot must use the same number of workers.
    """

    def __init__(
        self,
        step_id: str,
        cfg: ReplayConfig,
        values: tuple[str, ...],
        stats: FlowStats,
        workers: int = 1,
        own: range | None = None,
    ) -> None:
        self.step_id = step_id
        self.cfg = cfg
        self.values = values
        self.stats = stats
        self.parts = workers if cfg.splits_by_sensor else 1
        self.own = own if self.parts > 1 else None
        """The partitions this process reads when processes share nothing (``None``: all, placed by the engine)."""

    def partitions(self) -> list[str]:
        if self.parts == 1:
            return [str(self.cfg.path)]
        return [f"{self.cfg.path}#{i}/{self.parts}" for i in (self.own or range(self.parts))]

    def open(self, partition: str, resume: tuple[int, int, int] | None) -> _ReplayPartition:
        index = int(partition.rpartition("#")[2].partition("/")[0]) if self.parts > 1 else 0
        return _ReplayPartition(self.step_id, self.cfg, self.values, self.stats, resume, (index, self.parts))


def _value_names(step_id: str, cfg: ReplayConfig) -> tuple[str, ...]:
    if not cfg.path.is_file():
        raise FlowValidationError(
            step_id, "path", str(cfg.path), "no such file", hint=f"paths are relative to {Path.cwd()}"
        )
    try:
        columns = read_columns(cfg.path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FlowValidationError(step_id, "path", str(cfg.path), f"cannot read the recording: {exc}") from None
    needed = [("time_column", cfg.time_column)] + ([("sensor_column", cfg.sensor_column)] if cfg.sensor is None else [])
    for name, column in needed:
        if column not in columns:
            hint = "name the column" + (", or give sensor= for a one-sensor file" if name == "sensor_column" else "")
            raise FlowValidationError(step_id, name, column, f"not a column of the recording {columns}", hint=hint)
    sensor_column = cfg.sensor_column if cfg.sensor is None else None
    wanted = cfg.value_columns or value_columns_of(columns, cfg.time_column, sensor_column)
    missing = [c for c in wanted if c not in columns]
    if missing or not wanted:
        raise FlowValidationError(
            step_id, "value_columns", list(wanted), f"the recording has columns {columns}", hint="name value columns"
        )
    return tuple(wanted)


def replay(
    step_id: str,
    flow: Flow,
    path: str | Path,
    *,
    speed: float | None = None,
    time_column: str = "ts",
    time_unit: str = "s",
    tz: str | None = None,
    sensor_column: str = "sensor",
    sensor: str | None = None,
    value_columns: tuple[str, ...] | list[str] | None = None,
    batch_size: int | None = None,
) -> Stream:
    """Replay the recording at *path* into *flow*.

    Column settings: *time_column* holds ISO 8601 text or epoch numbers in *time_unit* (``"s"``,
    ``"ms"``, ``"us"``, ``"ns"``); *tz* is the zone of text timestamps without an offset (default: they
    are dead letters); *sensor_column* holds the sensor id, or *sensor* gives one id for the whole
    file; *value_columns* picks the value columns (default: all others).

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
        time_unit=time_unit,
        tz=tz,
        sensor_column=sensor_column,
        sensor=sensor,
        value_columns=value_columns,
        batch_size=batch_size,
    )

    def schema(_inputs: tuple[Schema, ...]) -> Schema:
        return Schema("samples", channels=_value_names(step_id, cfg))

    def build(ctx: StepContext) -> ReplaySource:
        return ReplaySource(step_id, cfg, ctx.schema.channels, ctx.run.stats, ctx.run.workers, ctx.run.own_workers)

    return flow.add_step(
        Step(
            step_id,
            "replay",
            "source",
            (),
            cfg,
            schema=schema,
            build=build,
            can_fail=True,
            check=lambda: _preview(step_id, cfg),
        )
    )


def _preview(step_id: str, cfg: ReplayConfig) -> None:
    """Parse the first rows: a file whose first batch would all be dead letters fails before the run."""
    values = _value_names(step_id, cfg)
    reader = cfg.reader(step_id, values, batch_size=min(cfg.batch_size or 256, 256))
    try:
        chunk, dead = reader.read()
    finally:
        reader.close()
    if dead and (chunk is None or not len(chunk)):
        hint = (
            "set tz= for timestamps without an offset"
            if "has no timezone" in dead[0].reason
            else ("check the column settings (time_column, time_unit, sensor_column, value_columns) against the file")
        )
        raise FlowValidationError(
            step_id,
            "path",
            str(cfg.path),
            f"all of the first {len(dead)} rows are dead letters; the first: {dead[0].reason}",
            hint=hint,
        )
