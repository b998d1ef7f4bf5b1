"""Per-event latency and throughput of the reference flow vs. a plain-Python seed and a hand-written bytewax flow.

    python bench/bench_flow.py            # full recording for throughput, 20 s slice paced at 10x for latency

Equal work on every row: the same recording (4 sensors, ~500 Hz, 118,050 samples), 256-point windows,
features mean/std/min/max, a z-score detector (warmup 50 windows, threshold 6) and 10 s summaries per sensor.
Rows differ only where named: the seed recomputes on every sample (hop 1, as it did); "seed, hop 64" does
exactly the edgeflow work in plain Python. Latency is sample in -> flag out: for the seed the synchronous
per-sample time; for the dataflows, the time from a sample's ingest to the flag of the window it completed,
with input paced at 10x real time (20,000 samples/s) so that it measures processing, not queueing.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.compiler import compile_flow
from edgeflow.operators.output import SinkSpec
from edgeflow.runtime import run

RECORDING = Path(__file__).resolve().parent.parent / "examples/data/pump_vibration.csv"
SIZE, HOP, WARMUP, THRESHOLD, EVERY_S = 256, 64, 50, 6.0, 10.0
FEATURES = ["mean", "std", "min", "max"]


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else math.nan


# ---------------------------------------------------------------- (a) the seed: plain Python lists
class _SeedZ:
    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, [0.0] * 4, [0.0] * 4

    def score(self, x: list[float]) -> bool:
        if self.n < WARMUP:
            self.n += 1
            for i, v in enumerate(x):
                d = v - self.mean[i]
                self.mean[i] += d / self.n
                self.m2[i] += d * (v - self.mean[i])
            return False
        z = max(
            abs(v - m) / max(math.sqrt(s / (self.n - 1)), 1e-3 * abs(m) + 1e-9)
            for v, m, s in zip(x, self.mean, self.m2, strict=True)
        )
        return z > THRESHOLD


def seed_pipeline(path: Path, hop: int) -> tuple[float, list[float], int]:
    """Returns (seconds, per-sample latencies in us, flags)."""
    windows: dict[str, list[float]] = {}
    detectors: dict[str, _SeedZ] = {}
    since: dict[str, int] = {}
    summary: dict[tuple[str, int], int] = {}
    latencies: list[float] = []
    flags = 0
    started = time.perf_counter()
    with path.open() as f:
        rows = csv.reader(f)
        next(rows)
        for ts_text, sensor, value_text in rows:
            t0 = time.perf_counter_ns()
            ts = datetime.fromisoformat(ts_text).timestamp()
            buf = windows.setdefault(sensor, [])
            buf.append(float(value_text))
            if len(buf) > SIZE:
                buf.pop(0)
            since[sensor] = since.get(sensor, 0) + 1
            if len(buf) == SIZE and since[sensor] >= hop:
                since[sensor] = 0
                mean = sum(buf) / SIZE
                std = math.sqrt(sum((v - mean) ** 2 for v in buf) / SIZE)
                flagged = detectors.setdefault(sensor, _SeedZ()).score([mean, std, min(buf), max(buf)])
                flags += flagged
                key = (sensor, int(ts // EVERY_S))
                summary[key] = summary.get(key, 0) + flagged
            latencies.append((time.perf_counter_ns() - t0) / 1000)
    return time.perf_counter() - started, latencies, flags


# ---------------------------------------------------------------- (b) bytewax, written as a competent user would
# numpy block parsing of the CSV, each chunk grouped into per-sensor blocks with one argsort, the same
# np.interp resampling onto a 500 Hz grid with gap resets, a ring buffer per sensor, all ready windows'
# features in one flat_map_batch numpy call, the same z-score and 10 s JSONL summaries.
CHUNK = 1024
PERIOD = 1.0 / 500
MAX_GAP_S = 0.05


class _BlockPartition(StatefulSourcePartition[tuple[str, Any], None]):
    def __init__(self, path: Path, speed: float | None, limit_s: float | None) -> None:
        self._file = path.open()
        self._file.readline()
        self._speed, self._limit = speed, limit_s
        self._t0: float | None = None
        self._wall0 = 0.0
        self._pending: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._awake: datetime | None = None

    def _parse(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        lines = list(itertools.islice(self._file, CHUNK))
        if not lines:
            return None
        ts_text, sensors, values = zip(*(line.rstrip("\n").split(",") for line in lines), strict=True)
        ts = np.array([t[:-1] for t in ts_text], dtype="datetime64[us]").astype(np.int64) / 1e6
        return ts, np.array(sensors), np.array(values, dtype=np.float64)

    def next_batch(self) -> list[Any]:
        chunk = self._pending if self._pending is not None else self._parse()
        self._pending = None
        if chunk is None:
            raise StopIteration
        ts, sensors, values = chunk
        if self._t0 is None:
            self._t0, self._wall0 = float(ts[0]), time.monotonic()
        if self._limit is not None:
            keep = ts - self._t0 <= self._limit
            if not keep.any():
                raise StopIteration
            ts, sensors, values = ts[keep], sensors[keep], values[keep]
        if self._speed is not None:
            now = time.monotonic()
            due = self._wall0 + (ts - self._t0) / self._speed
            take = int(np.searchsorted(due, now, side="right"))
            if take < len(ts):
                self._pending = (ts[take:], sensors[take:], values[take:])
                self._awake = datetime.now(timezone.utc) + timedelta(seconds=float(due[take]) - now)
                ts, sensors, values = ts[:take], sensors[:take], values[:take]
        if not len(ts):
            return []
        t_in = time.perf_counter_ns()
        order = np.argsort(sensors, kind="stable")
        names, starts = np.unique(sensors[order], return_index=True)
        bounds = [*starts.tolist(), len(order)]
        return [
            (str(name), (ts[order[a:b]], values[order[a:b]], t_in))
            for name, a, b in zip(names, bounds[:-1], bounds[1:], strict=True)
        ]

    def next_awake(self) -> datetime | None:
        awake, self._awake = self._awake, None
        return awake

    def snapshot(self) -> None:
        return None


class _BlockSource(FixedPartitionedSource[Any, None]):
    def __init__(self, path: Path, speed: float | None = None, limit_s: float | None = None) -> None:
        self.path, self.speed, self.limit_s = path, speed, limit_s

    def list_parts(self) -> list[str]:
        return ["csv"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _BlockPartition:
        return _BlockPartition(self.path, self.speed, self.limit_s)


class _Windows(StatefulBatchLogic[Any, Any, None]):
    """Resample one sensor onto the grid (np.interp, reset after a gap) and cut windows from a ring buffer."""

    def __init__(self) -> None:
        self.buf = np.zeros(SIZE, np.float32)
        self.pos = self.filled = self.since = 0
        self.last_t, self.last_v = -math.inf, 0.0
        self.origin, self.next_index = 0.0, 0

    def on_batch(self, blocks: list[Any]) -> tuple[list[Any], bool]:
        ts = np.concatenate([b[0] for b in blocks])
        vs = np.concatenate([b[1] for b in blocks])
        t_in = blocks[-1][2]
        out: list[Any] = []
        breaks = np.flatnonzero(np.diff(np.concatenate(([self.last_t], ts))) > MAX_GAP_S).tolist()
        start = 0
        for end in [*breaks, len(ts)]:
            if end > start:
                self._resample(ts[start:end], vs[start:end], t_in, out)
            if end < len(ts):
                self.pos = self.filled = self.since = 0
                self.origin, self.next_index = float(ts[end]), 0
                self.last_t, self.last_v = float(ts[end]) - PERIOD, float(vs[end])
            start = end
        return out, StatefulBatchLogic.RETAIN

    def _resample(self, t: np.ndarray, v: np.ndarray, t_in: int, out: list[Any]) -> None:
        last = math.floor((t[-1] - self.origin) * 500 + 1e-9)
        if last >= self.next_index:
            grid = self.origin + np.arange(self.next_index, last + 1) / 500
            points = np.interp(grid, np.concatenate(([self.last_t], t)), np.concatenate(([self.last_v], v)))
            for i, x in enumerate(points.astype(np.float32)):
                self.buf[self.pos] = x
                self.pos = (self.pos + 1) % SIZE
                self.filled += 1
                self.since += 1
                if self.filled >= SIZE and (self.filled == SIZE or self.since >= HOP):
                    self.since = 0
                    out.append((float(grid[i]), np.concatenate((self.buf[self.pos :], self.buf[: self.pos])), t_in))
            self.next_index = last + 1
        self.last_t, self.last_v = float(t[-1]), float(v[-1])

    def snapshot(self) -> None:
        return None


def _features_of_all(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    if not items:
        return []
    data = np.stack([w[1] for _k, w in items]).astype(np.float64)
    feats = np.column_stack((data.mean(axis=1), data.std(axis=1), data.min(axis=1), data.max(axis=1)))
    return [(k, (w[0], f, w[2])) for (k, w), f in zip(items, feats, strict=True)]


class _ZScore(StatefulBatchLogic[Any, Any, None]):
    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, np.zeros(4), np.zeros(4)

    def on_batch(self, items: list[Any]) -> tuple[list[Any], bool]:
        out = []
        for end, x, t_in in items:
            if self.n < WARMUP:
                self.n += 1
                d = x - self.mean
                self.mean = self.mean + d / self.n
                self.m2 = self.m2 + d * (x - self.mean)
                out.append((end, x, 0.0, False, t_in))
                continue
            std = np.maximum(np.sqrt(self.m2 / (self.n - 1)), 1e-3 * np.abs(self.mean) + 1e-9)
            z = float(np.max(np.abs(x - self.mean) / std))
            out.append((end, x, z, z > THRESHOLD, t_in))
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> None:
        return None


class _Summary(StatefulBatchLogic[Any, Any, None]):
    """10 s summaries per sensor: windows, anomalous windows, mean/max score, feature min/mean/max."""

    def __init__(self) -> None:
        self.interval: int | None = None
        self.rows: list[Any] = []

    def _emit(self) -> dict[str, Any]:
        feats = np.array([r[1] for r in self.rows])
        scores = np.array([r[2] for r in self.rows])
        record = {
            "interval": self.interval,
            "windows": len(self.rows),
            "anomalous_windows": int(sum(r[3] for r in self.rows)),
            "score": {"mean": float(scores.mean()), "max": float(scores.max())},
            "features": [feats.min(axis=0).tolist(), feats.mean(axis=0).tolist(), feats.max(axis=0).tolist()],
        }
        self.rows = []
        return record

    def on_batch(self, items: list[Any]) -> tuple[list[Any], bool]:
        out = []
        for item in items:
            interval = math.floor(item[0] / EVERY_S)
            if self.interval is not None and interval != self.interval and self.rows:
                out.append((self._emit(), item[4]))
            self.interval = interval
            self.rows.append(item)
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Any], bool]:
        return ([(self._emit(), 0)] if self.rows else []), StatefulBatchLogic.RETAIN

    def snapshot(self) -> None:
        return None


class _JsonlPartition(StatelessSinkPartition[Any]):
    def __init__(self, path: Path, latencies: list[float], counts: dict[str, int]) -> None:
        self.file, self.latencies, self.counts = path.open("w"), latencies, counts

    def write_batch(self, items: list[Any]) -> None:
        self.file.write("".join(json.dumps({"sensor": k, **record}) + "\n" for k, (record, _t) in items))
        self.counts["summaries"] += len(items)
        self.counts["anomalous"] += sum(record["anomalous_windows"] for _k, (record, _t) in items)
        self.counts["windows"] += sum(record["windows"] for _k, (record, _t) in items)

    def close(self) -> None:
        self.file.close()


class _JsonlSink(DynamicSink[Any]):
    def __init__(self, path: Path, latencies: list[float], counts: dict[str, int]) -> None:
        self.path, self.latencies, self.counts = path, latencies, counts

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _JsonlPartition:
        return _JsonlPartition(self.path, self.latencies, self.counts)


class _FlagLatency(StatelessSinkPartition[Any]):
    def __init__(self, latencies: list[float]) -> None:
        self.latencies = latencies

    def write_batch(self, items: list[Any]) -> None:
        now = time.perf_counter_ns()
        self.latencies.extend((now - item[4]) / 1000 for _k, item in items)


class _FlagSink(DynamicSink[Any]):
    def __init__(self, latencies: list[float]) -> None:
        self.latencies = latencies

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _FlagLatency:
        return _FlagLatency(self.latencies)


BYTEWAX_COUNTS: dict[str, int] = {}


def bytewax_pipeline(speed: float | None, limit_s: float | None) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    counts = {"summaries": 0, "anomalous": 0, "windows": 0}
    flow = Dataflow("competent_bytewax")
    s = op.input("in", flow, _BlockSource(RECORDING, speed, limit_s))
    w = op.stateful_batch("window", s, lambda _resume: _Windows())
    f = op.flat_map_batch("features", w, _features_of_all)
    scored = op.stateful_batch("detect", f, lambda _resume: _ZScore())
    op.output("flags", scored, _FlagSink(latencies))
    summaries = op.stateful_batch("summary", scored, _summary_logic)
    Path("out").mkdir(exist_ok=True)
    op.output("out", summaries, _JsonlSink(Path("out/bench_bytewax_summary.jsonl"), latencies, counts))
    started = time.perf_counter()
    run_main(flow)
    if limit_s is None:  # the counts of the whole recording
        BYTEWAX_COUNTS.update(counts)
    return time.perf_counter() - started, latencies, counts["anomalous"]


def _summary_logic(_resume: None) -> _Summary:
    return _Summary()


# ---------------------------------------------------------------- (c) edgeflow
class _FlagLatencies:
    """An edgeflow sink recording ingest -> flag latency of every scored window."""

    def __init__(self, latencies: list[float]) -> None:
        self.latencies = latencies

    def open(self, worker_index: int, worker_count: int) -> _FlagLatencies:
        return self

    def write_batch(self, items: Any) -> None:
        now = time.perf_counter_ns()
        self.latencies.extend((now - item.window.t_in) / 1000 for item in items)

    def close(self) -> None:
        pass


def _slice(limit_s: float) -> Path:
    lines = RECORDING.read_text().splitlines()
    t0 = datetime.fromisoformat(lines[1].split(",")[0]).timestamp()
    keep = [ln for ln in lines[1:] if datetime.fromisoformat(ln.split(",")[0]).timestamp() - t0 <= limit_s]
    path = Path("out/bench_slice.csv")
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join([lines[0], *keep]) + "\n")
    return path


EDGEFLOW_COUNTS: dict[str, int] = {}


def edgeflow_pipeline(
    speed: float | None, limit_s: float | None, features: list[str]
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    recording = RECORDING if limit_s is None else _slice(limit_s)
    flow = Flow("bench_edgeflow")
    s = eo.replay("samples", flow, recording, speed=speed)
    w = eo.window("win", s, rate_hz=500, size=SIZE, hop=HOP, max_gap_s=MAX_GAP_S)
    scored = eo.zscore_detector("detect", eo.features("feat", w, features), threshold=THRESHOLD, warmup=WARMUP)
    eo.output("flags", scored, SinkSpec("latency", lambda _ctx: _FlagLatencies(latencies)))
    out = Path("out/bench_summary.jsonl")
    out.unlink(missing_ok=True)
    eo.summarize("summary", scored, every_s=EVERY_S, sink=eo.jsonl(out))
    report = run(compile_flow(flow), handle_signals=False)
    if limit_s is None and features == FEATURES:
        EDGEFLOW_COUNTS.update(
            windows=report.stats.windows, anomalous=report.stats.anomalies, summaries=sum(1 for _ in out.open())
        )
    return report.seconds, latencies, report.stats.anomalies


ROUNDS = 5
FULL = ["mean", "std", "min", "max", "rms", "ptp", "skew", "kurtosis", "p5", "p95", "fft_bands(0-50,50-150,150-250)"]


def _spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main() -> None:
    n = sum(1 for _ in RECORDING.open()) - 1
    pipelines: list[tuple[str, str, Any, Any]] = [
        ("(a) seed, plain Python lists", "hop 1 (recomputes on every sample, as the seed did)",
         lambda: seed_pipeline(RECORDING, hop=1), None),
        ("(a') seed, plain Python lists", "hop 64 (same work)", lambda: seed_pipeline(RECORDING, hop=HOP), None),
        ("(b) bytewax, written competently", "same work", lambda: bytewax_pipeline(None, None),
         lambda: bytewax_pipeline(10.0, 20.0)),
        ("(c) edgeflow", "same work", lambda: edgeflow_pipeline(None, None, FEATURES),
         lambda: edgeflow_pipeline(10.0, 20.0, FEATURES)),
        ("(c') edgeflow, 13 features + FFT", "more work", lambda: edgeflow_pipeline(None, None, FULL),
         lambda: edgeflow_pipeline(10.0, 20.0, FULL)),
    ]  # fmt: skip
    throughput: dict[str, list[float]] = {name: [] for name, *_ in pipelines}
    p50: dict[str, list[float]] = {name: [] for name, *_ in pipelines}
    p99: dict[str, list[float]] = {name: [] for name, *_ in pipelines}
    for _round in range(ROUNDS):  # interleaved: every pipeline once per round, so noise hits all alike
        for name, _work, fast, paced in pipelines:
            seconds, latencies, _flags = fast()
            throughput[name].append(n / seconds)
            # the seed is synchronous: its per-sample time is its latency
            paced_latencies = latencies if paced is None else paced()[1]
            p50[name].append(_pct(paced_latencies, 50))
            p99[name].append(_pct(paced_latencies, 99))

    print(
        f"recording: {n:,} samples, 4 sensors; window {SIZE}, hop {HOP}, z-score warmup {WARMUP}, threshold {THRESHOLD}"
    )
    print(f"medians of {ROUNDS} interleaved rounds (min-max); latency: paced at 10x real time, 20 s of data")
    print(f"outputs: bytewax {BYTEWAX_COUNTS}, edgeflow {EDGEFLOW_COUNTS}")
    print("| pipeline | work | throughput (samples/s) | x (b) | latency p50 (us) | latency p99 (us) |")
    print("|---|---|---:|---:|---:|---:|")
    base = statistics.median(throughput["(b) bytewax, written competently"])
    for name, work, *_ in pipelines:
        ratio = statistics.median(throughput[name]) / base
        print(
            f"| {name} | {work} | {_spread(throughput[name], ',.0f')} | {ratio:.2f} | {_spread(p50[name], ',.0f')} "
            f"| {_spread(p99[name], ',.0f')} |"
        )
    print(f"python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
