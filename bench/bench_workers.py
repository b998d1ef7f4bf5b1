"""Wall time of one flow run with 1 process, 2 threads and 2 processes, on the same recording.

    python bench/bench_workers.py            # 400 sensors, 2,000,000 rows; 3 interleaved rounds

Every run is ``edgeflow run`` in a fresh process tree (start-up included) of the same flow: replay (split
by sensor among the workers) -> window (16 points, hop 8, 10 Hz) -> features (mean/std/min/max) -> z-score
-> 60 s summaries. The summaries of every configuration are checked equal (sorted by sensor and interval)
before a figure is printed. Medians of interleaved rounds, min-max in brackets.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sensors import recording

ROOT = Path(__file__).resolve().parent.parent
ROWS, SENSORS, ROUNDS = 2_000_000, 400, 3
CONFIGS = {"1 process": ["-p", "1"], "2 threads (-w 2)": ["-w", "2"], "2 processes (-p 2)": ["-p", "2"]}

FLOW = """
import os
import edgeflow.operators as eo
from edgeflow import Flow

flow = Flow("workers")
s = eo.replay("samples", flow, os.environ["BENCH_RECORDING"])
w = eo.window("win", s, rate_hz=10, size=16, hop=8, max_gap_s=1.0)
f = eo.features("feat", w, ["mean", "std", "min", "max"])
eo.summarize("summary", eo.zscore_detector("detect", f, warmup=5), every_s=60, sink=eo.jsonl(os.environ["BENCH_OUT"]))
"""


def _summaries(out: Path) -> list[dict[str, object]]:
    files = sorted(out.parent.glob(out.stem + "*.jsonl"))
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    return sorted(rows, key=lambda r: (str(r["sensor"]), str(r["interval"])))


def _run(flow: Path, rec: Path, out: Path, args: list[str]) -> float:
    for old in out.parent.glob(out.stem + "*.jsonl"):
        old.unlink()
    env = {**os.environ, "BENCH_RECORDING": str(rec), "BENCH_OUT": str(out)}
    started = time.perf_counter()
    cli = [sys.executable, "-c", "from edgeflow.cli import main; main()"]
    subprocess.run([*cli, "run", str(flow), *args, "-q"], env=env, check=True, cwd=ROOT)
    return time.perf_counter() - started


def main() -> None:
    folder = ROOT / "out" / "bench_workers"
    folder.mkdir(parents=True, exist_ok=True)
    rec = recording(folder / f"{SENSORS}x{ROWS}.csv", SENSORS, rows=ROWS)
    flow = folder / "flow.py"
    flow.write_text(FLOW)
    seconds: dict[str, list[float]] = {name: [] for name in CONFIGS}
    reference: list[dict[str, object]] | None = None
    for _ in range(ROUNDS):
        for name, args in CONFIGS.items():
            out = folder / f"summary_{name.split()[0]}{args[0]}.jsonl"
            seconds[name].append(_run(flow, rec, out, args))
            got = _summaries(out)
            reference = reference if reference is not None else got
            assert got == reference, f"{name}: summaries differ from the first configuration's"
    base = statistics.median(seconds["1 process"])
    print(f"{ROWS:,} rows, {SENSORS} sensors; {len(reference or [])} summaries, equal in every configuration")
    print(f"medians of {ROUNDS} interleaved rounds (min-max), wall time of `edgeflow run` including start-up")
    print("| configuration | wall time (s) | samples/s | speed-up |")
    print("|---|---:|---:|---:|")
    for name, values in seconds.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.2f} ({min(values):.2f}-{max(values):.2f}) | {ROWS / med:,.0f} | {base / med:.2f}x |")


if __name__ == "__main__":
    main()
