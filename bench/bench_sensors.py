"""Throughput and memory against the number of sensors, same number of rows and the same operators.

    python bench/bench_sensors.py            # 4 / 40 / 400 / 4,000 / 10,000 sensors, 200,000 rows each

Every case replays 200,000 rows (sensors interleaved round-robin at 10 Hz each, with jitter) through
window (16 points, hop 8) -> features (mean/std/min/max) -> z-score (warmup 5) -> 60 s summaries, in a
fresh process, and reports samples/s (median of interleaved rounds, min-max) and that process's peak RSS.
"Per idle sensor" is the RSS growth per sensor of a run that holds state for N sensors but where each
sent only one window's worth of samples, read in fixed 1,024-row batches so that batch buffers are the
same (peak RSS at 10,000 sensors minus at 4, over 9,996).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ROWS = 200_000
COUNTS = (4, 40, 400, 4_000, 10_000)
ROUNDS = 3

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.compiler import compile_flow
from edgeflow.runtime import run

flow = Flow("sensors")
s = eo.replay("samples", flow, sys.argv[1], batch_size=int(sys.argv[3]) if len(sys.argv) > 3 else None)
w = eo.window("win", s, rate_hz=10, size=16, hop=8, max_gap_s=1.0, max_sensors=20_000)
f = eo.features("feat", w, ["mean", "std", "min", "max"])
eo.summarize("summary", eo.zscore_detector("detect", f, warmup=5), every_s=60, sink=eo.jsonl(sys.argv[2]))
report = run(compile_flow(flow), handle_signals=False)
print(json.dumps({{"samples": report.stats.samples_in, "seconds": report.seconds, "windows": report.stats.windows,
                  "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def recording(path: Path, sensors: int, rows: int = ROWS) -> Path:
    """Write *rows* rows of *sensors* sensors at 10 Hz each, interleaved, with +-10 % jitter."""
    if path.exists():
        return path
    rng = np.random.default_rng(sensors)
    per = rows // sensors
    t = (np.arange(per)[:, None] * 0.1 + rng.uniform(-0.01, 0.01, (per, sensors))).ravel()
    ids = np.tile(np.arange(sensors), per)
    order = np.argsort(t, kind="stable")
    stamps = (np.datetime64("2026-01-01T00:00:00", "us") + (t[order] * 1e6).astype("timedelta64[us]")).astype(str)
    values = rng.normal(0, 1, order.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.write("ts,sensor,value\n")
        f.writelines(f"{ts}Z,s{i},{v:.4f}\n" for ts, i, v in zip(stamps, ids[order], values, strict=True))
    return path


def _run(path: Path, *batch: str) -> dict[str, float]:
    out = path.with_suffix(".summary.jsonl")
    out.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(root=str(ROOT)), str(path), str(out), *batch],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    folder = ROOT / "out" / "bench_sensors"
    files = {n: recording(folder / f"{n}.csv", n) for n in COUNTS}
    idle = {n: recording(folder / f"idle_{n}.csv", n, rows=n * 16) for n in (4, 10_000)}
    results: dict[int, list[dict[str, float]]] = {n: [] for n in COUNTS}
    for _ in range(ROUNDS):  # interleaved rounds
        for n in COUNTS:
            results[n].append(_run(files[n]))
    idle_rss = {n: _run(path, "1024")["rss_kb"] for n, path in idle.items()}  # fixed batches: state, not buffers
    base = statistics.median(r["samples"] / r["seconds"] for r in results[4])
    print(
        f"{ROWS:,} rows per case; window 16/8 at 10 Hz, 4 features, z-score, 60 s summaries; "
        f"median of {ROUNDS} interleaved rounds (min-max)"
    )
    print("| sensors | windows | samples/s | of 4-sensor figure | peak RSS (MB) |")
    print("|---:|---:|---:|---:|---:|")
    for n in COUNTS:
        rates = [r["samples"] / r["seconds"] for r in results[n]]
        rss = statistics.median(r["rss_kb"] for r in results[n]) / 1024
        print(
            f"| {n:,} | {int(results[n][0]['windows']):,} | {statistics.median(rates):,.0f} "
            f"({min(rates):,.0f}-{max(rates):,.0f}) | {statistics.median(rates) / base:.0%} | {rss:,.0f} |"
        )
    per_sensor = (idle_rss[10_000] - idle_rss[4]) * 1024 / (10_000 - 4)
    print(f"memory per idle sensor (state for 10,000 sensors, one window each): {per_sensor:,.0f} bytes")


if __name__ == "__main__":
    main()
