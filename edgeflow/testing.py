"""Helpers for users' tests: run a flow over a recording and look at what it sent.

>>> import edgeflow.operators as eo
>>> from edgeflow import Flow
>>> flow = Flow("doc-test")
>>> s = eo.replay("samples", flow, "examples/data/pump_vibration.csv")
>>> f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=64), ["rms"])
>>> _ = eo.summarize("summary", eo.zscore_detector("detect", f, threshold=6), every_s=10, sink=eo.stdout())
>>> result = run_capture(flow)
>>> len(result.outputs["summary_out"])
24
>>> sorted({s["sensor"] for s in result.outputs["summary_out"] if s["anomaly"]})
['pump-2', 'pump-3', 'pump-4']
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeflow.compiler import CompiledFlow, compile_flow
from edgeflow.connectors import DEAD_LETTERS, Sink
from edgeflow.graph import Flow
from edgeflow.jsontext import dumps
from edgeflow.loader import load_flow
from edgeflow.runtime import RunReport, run
from edgeflow.sinks import CaptureSink, to_json

__all__ = ["Capture", "run_capture", "write_csv_recording"]


@dataclass(frozen=True)
class Capture:
    """What a flow sent: JSON records per sink step, its dead letters, and the run report."""

    outputs: dict[str, list[dict[str, Any]]]
    dead_letters: list[dict[str, Any]]
    report: RunReport

    def only(self) -> list[dict[str, Any]]:
        """Return the records of the flow's single sink (fails if it has several)."""
        (records,) = self.outputs.values()
        return records


def run_capture(flow: CompiledFlow | Flow | str, *, workers: int = 1) -> Capture:
    """Run *flow* (compiled, a flow, or a flow file target) to the end, capturing every sink instead of writing it."""
    if isinstance(flow, str):
        flow = load_flow(flow)
    compiled = flow if isinstance(flow, CompiledFlow) else compile_flow(flow)
    captured = {step.step_id: CaptureSink() for step in compiled.order if step.kind == "sink"}
    dead = CaptureSink()
    sinks: dict[str, Sink] = {**captured, DEAD_LETTERS: dead}
    report = run(compiled, workers=workers, sinks=sinks)
    outputs = {step_id: [to_json(item) for item in sink.items] for step_id, sink in captured.items()}
    # captured outputs never reach a real sink: count the bytes they would have sent, as JSON lines
    sent = sum(len(dumps(record)) + 1 for records in outputs.values() for record in records)
    report.stats.add(items_out=sum(map(len, outputs.values())), bytes_out=sent)
    return Capture(outputs, [letter.to_json() for letter in dead.items], report)


def write_csv_recording(path: str | Path, rows: Iterable[tuple[str, str, float]], value: str = "value") -> Path:
    """Write ``(timestamp, sensor, value)`` rows as a replayable CSV recording.

    >>> import tempfile
    >>> p = write_csv_recording(Path(tempfile.mkdtemp()) / "r.csv", [("2026-01-01T00:00:00Z", "s1", 1.0)])
    >>> p.read_text().splitlines()
    ['ts,sensor,value', '2026-01-01T00:00:00Z,s1,1.0']
    """
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["ts", "sensor", value])
        writer.writerows(rows)
    return path
