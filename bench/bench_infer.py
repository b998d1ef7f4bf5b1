"""Inference benchmark: int8 vs float32 model vs the z-score detector, one run, one table.

    python bench/bench_infer.py               # ~50 s on 2 cores
    python bench/bench_infer.py --speed 10 --invokes 20000

1. **Invoke latency** of each model file: ``interpreter.invoke()`` alone on one
   window (batch 1, one thread, XNNPACK as LiteRT picks by default), and the
   whole per-window path of edgeflow's handler (normalise, quantize, set, invoke,
   get, dequantize, score); p50/p99 over ``--invokes`` calls after a warm-up.
2. **Per-event latency of the whole reference flow** (``flows/pump_int8.py`` on
   each model variant, ``flows/pump_vibration.py`` for the z-score detector),
   replayed paced at ``--speed`` x real time so batches stay small and the number
   measures processing, not queueing: for every scored window, output time minus
   ``Window.t_in`` (the ingest time of the sample that completed the window). The
   flows run unchanged plus one tap on the scored stream (the runtime itself calls
   ``gc.freeze()`` before running, which keeps full collections short).
3. **Peak RSS** of each flow: every flow runs in its own fresh process (the
   paced run, then an unpaced run for throughput), which reports ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MANIFEST = ROOT / "models/pump_ae/manifest.json"
VARIANTS = ("int8", "float32_pruned", "float32")
FLOWS = ("int8", "float32", "zscore")
TARGETS = {"invoke_p99_us": 50.0, "event_p99_us": 1000.0, "rss_mb": 150.0}


def _pcts(ns: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(ns, 50)) / 1e3, float(np.percentile(ns, 99)) / 1e3


def bench_invoke(variant: str, n: int, windows: np.ndarray) -> dict[str, float]:
    """Time ``invoke()`` alone and the handler's full one-window path."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeflow.model import LiteRTModelHandler, load_manifest

    entry = load_manifest(MANIFEST).variants[variant]
    interpreter = Interpreter(model_path=str(MANIFEST.parent / entry.file), num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
    invoke_ns = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for _ in range(1000):
        interpreter.invoke()
    for i in range(n):
        t0 = clock()
        interpreter.invoke()
        invoke_ns[i] = clock() - t0

    handler = LiteRTModelHandler(MANIFEST, variant=variant)
    rows = [windows[i % len(windows)][None, :] for i in range(n)]
    for row in rows[:1000]:
        handler.score(row)
    path_ns = np.empty(n, dtype=np.int64)
    for i, row in enumerate(rows):
        t0 = clock()
        handler.score(row)
        path_ns[i] = clock() - t0
    batch = windows[:16]
    t0 = clock()
    for _ in range(n // 16):
        handler.score(batch)
    per_window_batched = (clock() - t0) / (n // 16 * 16) / 1e3
    (inv50, inv99), (path50, path99) = _pcts(invoke_ns), _pcts(path_ns)
    return {"bytes": entry.bytes, "invoke_p50": inv50, "invoke_p99": inv99, "path_p50": path50,
            "path_p99": path99, "batched16_per_window": per_window_batched}  # fmt: skip


# ------------------------------------------------------------------------------------ one flow, in a child process


def _tap(latencies: list[int]) -> Any:
    """A sink recording output time minus ``Window.t_in`` for every scored window (ns)."""
    from edgeflow.operators.output import SinkSpec

    class _Tap:
        def open(self, worker_index: int, worker_count: int) -> _Tap:
            return self

        def write_batch(self, items: list[Any]) -> None:
            now = time.perf_counter_ns()
            latencies.extend(now - item.window.t_in for item in items)

        def close(self) -> None:
            pass

    return SinkSpec("latency_tap", lambda _ctx: _Tap())


def _make(kind: str, speed: float | None, latencies: list[int]) -> Any:
    import edgeflow.operators as eo
    from edgeflow import Stream

    if kind == "zscore":
        from flows.pump_vibration import make_flow as make_zscore

        flow, scored = make_zscore(speed=speed, out="out/bench_infer.zscore.jsonl"), "detect"
    else:
        from flows.pump_int8 import make_flow

        flow, scored = make_flow(speed=speed, variant=kind, out=f"out/bench_infer.{kind}.jsonl"), "model"
    eo.output("latency_tap", Stream(flow, scored), _tap(latencies))
    return flow


def child(kind: str, speed: float) -> dict[str, Any]:
    """Run one reference flow paced (latency) then unpaced (throughput); report numbers and peak RSS."""
    from edgeflow.runtime import run

    os.chdir(ROOT)
    latencies: list[int] = []
    flow = _make(kind, speed, latencies)
    paced = run(flow)
    lat = np.asarray(latencies, dtype=np.int64)
    fast = run(_make(kind, None, []))
    p50, p99 = _pcts(lat)
    return {
        "kind": kind,
        "events": int(lat.size),
        "event_p50": p50,
        "event_p99": p99,
        "event_max": float(lat.max()) / 1e3,
        "anomalous_windows": paced.stats.anomalies,
        "paced_seconds": paced.seconds,
        "throughput": fast.events_per_s,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "infer_batches": paced.stats.counts.get("infer.batches", 0),
        "infer_windows": paced.stats.counts.get("infer.windows", 0),
    }


def _run_child(kind: str, speed: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, "--speed", str(speed)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------ main


def _recorded_windows() -> np.ndarray:
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_build", ROOT / "models/build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.recording_features(ROOT / "examples/data/pump_vibration.csv").x  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=10.0, help="paced replay speed for flow latency")
    parser.add_argument("--invokes", type=int, default=20_000, help="invokes per model for invoke latency")
    parser.add_argument("--child", choices=FLOWS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.speed)))
        return

    os.chdir(ROOT)
    windows = _recorded_windows()
    invoke = {v: bench_invoke(v, args.invokes, windows) for v in VARIANTS}
    flows = {kind: _run_child(kind, args.speed) for kind in FLOWS}

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}; "
          f"{args.invokes:,} invokes per model; flows paced at {args.speed:g}x real time\n")  # fmt: skip
    print("| model | file bytes | invoke p50 (us) | invoke p99 (us) | handler 1 window p50 (us) | p99 (us) "
          "| batched x16, per window (us) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for v, r in invoke.items():
        print(f"| {v} | {r['bytes']:,} | {r['invoke_p50']:.2f} | {r['invoke_p99']:.2f} | {r['path_p50']:.1f} "
              f"| {r['path_p99']:.1f} | {r['batched16_per_window']:.2f} |")  # fmt: skip
    print()
    print("| reference flow | scored windows | per-event p50 (us) | per-event p99 (us) | max (us) "
          "| anomalous windows | throughput (samples/s) | peak RSS (MB) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    names = {"int8": "pump_int8, int8 model", "float32": "pump_int8, float32 model",
             "zscore": "pump_vibration, z-score"}  # fmt: skip
    rows = [(names[k], r) for k, r in flows.items()]
    for name, r in rows:
        print(f"| {name} | {r['events']:,} | {r['event_p50']:.0f} | {r['event_p99']:.0f} | {r['event_max']:.0f} "
              f"| {r['anomalous_windows']} | {r['throughput']:,.0f} | {r['rss_mb']:.0f} |")  # fmt: skip
    checks = {
        f"int8 invoke p99 <= {TARGETS['invoke_p99_us']:g} us": invoke["int8"]["invoke_p99"] <= TARGETS["invoke_p99_us"],
        f"int8 flow per-event p99 <= {TARGETS['event_p99_us']:g} us": flows["int8"]["event_p99"]
        <= TARGETS["event_p99_us"],
        f"int8 flow peak RSS <= {TARGETS['rss_mb']:g} MB": flows["int8"]["rss_mb"] <= TARGETS["rss_mb"],
    }
    print("\n" + "\n".join(f"{'ok  ' if ok else 'MISS'} {name}" for name, ok in checks.items()))
    b = flows["int8"]
    print(f"int8 flow: {b['infer_windows']:,} windows in {b['infer_batches']:,} invokes while paced")


if __name__ == "__main__":
    main()
