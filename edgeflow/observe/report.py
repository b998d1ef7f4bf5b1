"""The final report of a run: readable lines, strict JSON, and one report for several processes.

``edgeflow run`` prints :func:`report_lines`; ``--report-json FILE`` writes
:func:`report_document` (strict JSON, :func:`edgeflow.jsontext.dumps`). With ``-p N``
each process saves its report (:func:`save_part`) and the parent merges them
(:func:`merge_reports`): totals summed, percentiles over every process's kept
latencies, each process's own figures listed under its id.

>>> from edgeflow.metrics import FlowStats
>>> from edgeflow.runtime import RunReport
>>> stats = FlowStats(samples_in=1_000, windows=12, anomalies=2)
>>> stats.flagged("pump-2", 1772438420.0, 1772438420.5)
>>> stats.flagged("pump-2", 1772438420.1, 1772438420.6)
>>> for line in report_lines(RunReport("demo", 0.5, stats)):
...     print(line)
flow 'demo': 1,000 samples in 0.50 s (2,000/s)
  windows 12  anomalous 2  gaps 0  late 0  dead letters 0
  latency ingest->output p50 - us  p99 - us  (0 outputs; unpaced runs include queueing)
  bytes in 0  out 0  reduction 0.00 %
  flagged pump-2: 2 windows, 2026-03-02 08:00:20.00-08:00:20.60 UTC
>>> report_document(RunReport("demo", 0.5, stats))["flagged"][0]["first"]
'2026-03-02T08:00:20+00:00'
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeflow.jsontext import dumps
from edgeflow.metrics import FlowStats, SensorFlags, is_loss
from edgeflow.records import to_datetime, to_iso

if TYPE_CHECKING:
    from edgeflow.runtime import RunReport

__all__ = ["load_parts", "merge_reports", "report_document", "report_lines", "save_part", "write_report"]

_SHOWN_EPISODES = 3


def _us(value: float) -> str:
    """Microseconds as text, ``-`` when there is no figure yet (never ``nan``)."""
    return "-" if math.isnan(value) else f"{value:.0f}"


def _clock(ts: float) -> str:
    return to_datetime(ts).strftime("%H:%M:%S.%f")[:11]


def _when(flags: SensorFlags) -> str:
    """When a sensor was flagged, in event time: one span, or its episodes."""
    day = to_datetime(flags.first).strftime("%Y-%m-%d")
    spans = ", ".join(f"{_clock(a)}-{_clock(b)}" for a, b in flags.episodes[:_SHOWN_EPISODES])
    if flags.n_episodes <= 1:
        return f"{day} {spans} UTC"
    hidden = flags.n_episodes - min(len(flags.episodes), _SHOWN_EPISODES)
    extra = f" and {hidden} more" if hidden > 0 else ""
    return f"{flags.n_episodes} episodes {day} {spans}{extra} UTC"


def _figures(report: RunReport) -> list[str]:
    s = report.stats
    lat = s.latency
    return [
        f"  windows {s.windows:,}  anomalous {s.anomalies:,}  gaps {s.gaps}  late {s.late}  dead letters "
        f"{s.dead_letters}",
        f"  latency ingest->output p50 {_us(lat.percentile_us(50))} us  p99 {_us(lat.percentile_us(99))} us  "
        f"({lat.count:,} outputs; unpaced runs include queueing)",
        f"  bytes in {s.bytes_in:,}  out {s.bytes_out:,}  reduction {100 * s.reduction:.2f} %",
    ]


_DEGRADATION = ("ladder.", "model.drift_alarms", "infer.fallback")
"""Counters of a run that degraded: latency-budget ladder steps, drift alarms, model-failure fallbacks."""
_MODEL_UPDATES = (("swapped", "infer.swaps"), ("rejected", "infer.swap_rejected"), ("rolled back", "infer.rollbacks"))


def report_lines(report: RunReport) -> list[str]:
    """Readable lines of a finished run: totals, losses, dead letters by reason, flagged sensors, processes."""
    s = report.stats
    many = f", {len(report.processes)} processes" if report.processes else ""
    if report.process is not None and not report.processes:
        many = f" (process {report.process})"
    lines = [
        f"flow {report.flow!r}: {s.samples_in:,} samples in {report.seconds:.2f} s ({report.events_per_s:,.0f}/s)"
        + many,
        *_figures(report),
    ]
    losses = {name: n for name, n in sorted(s.counts.items()) if n and is_loss(name)}
    if losses:
        lines.append("  losses " + "  ".join(f"{name} {n:,}" for name, n in losses.items()))
    updates = {label: s.counts.get(name, 0) for label, name in _MODEL_UPDATES}
    if any(updates.values()):
        lines.append("  model updates " + "  ".join(f"{label} {n:,}" for label, n in updates.items()))
    degraded = {name: n for name, n in sorted(s.counts.items()) if n and name.startswith(_DEGRADATION)}
    if degraded:
        lines.append("  degradation " + "  ".join(f"{name} {n:,}" for name, n in degraded.items()))
    if s.dead_letters_by:
        by = sorted(s.dead_letters_by.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append("  dead letters by step: " + "; ".join(f"{step}: {reason} {n:,}" for (step, reason), n in by))
    for sensor, flags in sorted(s.flags.items()):
        lines.append(f"  flagged {sensor}: {flags.windows:,} windows, {_when(flags)}")
    if report.stopped_by:
        lines.append(f"  stopped by {report.stopped_by}: input ended early, what the flow held was flushed")
    for part in report.processes:
        p = part.stats
        lat = p.latency
        lines.append(
            f"  process {part.process}: {p.samples_in:,} samples  windows {p.windows:,}  anomalous {p.anomalies:,}  "
            f"dead letters {p.dead_letters}  p50 {_us(lat.percentile_us(50))} us  p99 {_us(lat.percentile_us(99))} us  "
            f"bytes out {p.bytes_out:,}  {part.seconds:.2f} s"
        )
    return lines


def _figures_json(report: RunReport) -> dict[str, Any]:
    s = report.stats
    return {
        "seconds": report.seconds,
        "samples_in": s.samples_in,
        "samples_per_s": report.events_per_s,
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "reduction": s.reduction,
        "windows": s.windows,
        "gaps": s.gaps,
        "late": s.late,
        "dead_letters": s.dead_letters,
        "anomalies": s.anomalies,
        "items_out": s.items_out,
        "latency_us": {
            "p50": s.latency.percentile_us(50),
            "p99": s.latency.percentile_us(99),
            "outputs": s.latency.count,
        },
        "losses": {name: n for name, n in sorted(s.counts.items()) if n and is_loss(name)},
        "counts": dict(sorted(s.counts.items())),
        "dead_letters_by": [
            {"step": step, "reason": reason, "count": n} for (step, reason), n in sorted(s.dead_letters_by.items())
        ],
        "flagged": [
            {
                "sensor": sensor,
                "windows": f.windows,
                "first": to_iso(f.first),
                "last": to_iso(f.last),
                "episodes": [[to_iso(a), to_iso(b)] for a, b in f.episodes],
                "n_episodes": f.n_episodes,
            }
            for sensor, f in sorted(s.flags.items())
        ],
        "models": dict(sorted(s.models.items())),
        "problems": list(s.problems),
    }


def report_document(report: RunReport) -> dict[str, Any]:
    """Return the report as JSON-ready data; non-finite numbers (no latency yet) become ``null`` when written.

    With several processes, ``processes`` lists each one's own figures under ``process``.
    """
    doc: dict[str, Any] = {"flow": report.flow, "problem": report.problem, "stopped_by": report.stopped_by}
    doc.update(_figures_json(report))
    doc["processes"] = [{"process": part.process, **_figures_json(part)} for part in report.processes]
    return doc


def write_report(path: str | Path, report: RunReport) -> Path:
    """Write the report as strict JSON (RFC 8259) to *path*, replacing it whole; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(dumps(report_document(report)) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _part_paths(folder: Path, process: int) -> tuple[Path, Path]:
    return folder / f"p{process}.report.json", folder / f"p{process}.latency.npy"


def save_part(folder: str | Path, process: int, report: RunReport) -> None:
    """Save one process's report where the parent of a ``-p N`` run merges it (stats in full, kept latencies)."""
    folder = Path(folder)
    doc, lat = _part_paths(folder, process)
    np.save(lat, report.stats.latency.kept())
    data = {
        "flow": report.flow,
        "seconds": report.seconds,
        "stopped_by": report.stopped_by,
        "expects_windows": report.expects_windows,
        "stats": report.stats.to_json(),
    }
    tmp = doc.with_name(f".{doc.name}.tmp")
    tmp.write_text(dumps(data), encoding="utf-8")
    os.replace(tmp, doc)


def load_parts(folder: str | Path, processes: int) -> list[RunReport | None]:
    """Each process's saved report, ``None`` for a process that saved none."""
    import json

    from edgeflow.runtime import RunReport

    out: list[RunReport | None] = []
    for process in range(processes):
        doc, lat = _part_paths(Path(folder), process)
        if not doc.is_file():
            out.append(None)
            continue
        data = json.loads(doc.read_text(encoding="utf-8"))
        kept = np.load(lat) if lat.is_file() else None
        stats = FlowStats.from_json(data["stats"], kept)
        out.append(
            RunReport(
                data["flow"],
                float(data["seconds"]),
                stats,
                data["stopped_by"],
                bool(data["expects_windows"]),
                process=process,
            )
        )
    return out


def merge_reports(parts: Sequence[RunReport]) -> RunReport:
    """One report for the processes of one run: figures summed, the longest process's time, each process kept.

    >>> from edgeflow.runtime import RunReport
    >>> a = RunReport("f", 1.0, FlowStats(samples_in=0, windows=5), process=0)
    >>> b = RunReport("f", 2.0, FlowStats(samples_in=10, windows=7), process=1)
    >>> m = merge_reports([a, b])
    >>> m.stats.samples_in, m.stats.windows, m.seconds, [p.process for p in m.processes]
    (10, 12, 2.0, [0, 1])
    """
    from edgeflow.runtime import RunReport

    stopped = next((p.stopped_by for p in parts if p.stopped_by), None)
    return RunReport(
        parts[0].flow,
        max(p.seconds for p in parts),
        FlowStats.merged(p.stats for p in parts),
        stopped,
        any(p.expects_windows for p in parts),
        processes=tuple(parts),
    )
