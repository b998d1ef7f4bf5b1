"""Inference benchmark: int8 vs float32 model vs the z-score detector, one run, one table.

    python bench/bench_infer.py               # ~2 min on 2 cores
    python bench/bench_infer.py --speed 10 --invokes 20000 --rounds 3

1. **Invoke latency** of each model file: ``interpreter.invoke()`` alone on one
   window (batch 1, one thread, XNNPACK as LiteRT picks by default), and the
   whole per-window path of edgeflow's handler (normalise, quantize, set, invoke,
   get, dequantize, score); p50/p99 over ``--invokes`` calls after a warm-up.
2. **Per-event latency of the whole reference flow** (``flows/pump_int8.py`` on
   each model variant, ``flows/pump_vibration.py`` for the z-score detector, and the int8
   flow's work written in plain bytewax as a competent user would: same recording, window,
   13 features + crest factor, standardization, int8 model and threshold, 10 s summaries),
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
import statistics
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
FLOWS = ("int8", "float32", "zscore", "bytewax_int8")
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


# ------------------------------------------------------------------------------------ the int8 flow in plain bytewax


def _bytewax_int8(speed: float | None, latencies: list[float]) -> tuple[float, int]:
    """The int8 flow's work written as a competent bytewax user would: ``(seconds, anomalous windows)``.

    bench_flow.py's block source, resampling window and 10 s summaries; one ``flat_map_batch`` step computes
    the 13 features and the crest factor of all ready windows with numpy, standardizes them (+ symlog) with
    the manifest's statistics, quantizes, invokes the int8 model window by window, dequantizes and flags a
    reconstruction error above the manifest's threshold. Per-event latency as for the edgeflow flows.
    """
    import bench_flow as bf
    import bytewax.operators as op
    from ai_edge_litert.interpreter import Interpreter
    from bytewax.dataflow import Dataflow
    from bytewax.testing import run_main

    manifest = json.loads(MANIFEST.read_text())
    norm = manifest["normalization"]
    mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    std = np.where(std > 0, std, 1.0).astype(np.float32)
    threshold = manifest["variants"]["int8"]["threshold"]
    interpreter = Interpreter(model_path=str(MANIFEST.parent / manifest["variants"]["int8"]["file"]), num_threads=1)
    interpreter.allocate_tensors()
    d_in, d_out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    (s_in, z_in), (s_out, z_out) = d_in["quantization"], d_out["quantization"]
    size, rate = bf.SIZE, 500.0
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(size) / size)
    freqs = np.fft.rfftfreq(size, 1 / rate)
    scale = np.full(freqs.size, 2 / (rate * np.sum(hann**2)) * rate / size)
    scale[0] /= 2
    scale[-1] /= 2
    bands = [
        (freqs >= lo) & ((freqs < hi) | ((freqs == hi) & (hi >= rate / 2)))
        for lo, hi in ((0, 50), (50, 150), (150, 250))
    ]

    def features(x: np.ndarray) -> np.ndarray:
        mu = x.mean(axis=1)
        d = x - mu[:, None]
        var = (d * d).mean(axis=1)
        lo, hi, rms = x.min(axis=1), x.max(axis=1), np.sqrt((x * x).mean(axis=1))
        p5, p95 = np.percentile(x, [5, 95], axis=1)
        power = np.abs(np.fft.rfft(d * hann, axis=1)) ** 2 * scale
        band = [np.sqrt(power[:, m].sum(axis=1)) for m in bands]
        skew, kurt = (d**3).mean(axis=1) / var**1.5, (d**4).mean(axis=1) / var**2 - 3
        crest = np.maximum(np.abs(lo), np.abs(hi)) / rms
        return np.column_stack([mu, np.sqrt(var), lo, hi, rms, hi - lo, skew, kurt, p5, p95, *band, crest])

    def score(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        if not items:
            return []
        feats = features(np.stack([w[1] for _k, w in items]).astype(np.float64)).astype(np.float32)
        x = (feats - mean) / std
        x = np.copysign(np.log1p(np.abs(x)), x)
        q = np.clip(np.round(x / s_in + z_in), -128, 127).astype(np.int8)
        out = []
        for i, (key, (end, _data, t_in)) in enumerate(items):
            interpreter.set_tensor(d_in["index"], q[i : i + 1])
            interpreter.invoke()
            y = (interpreter.get_tensor(d_out["index"]).astype(np.float32) - z_out) * s_out
            err = float(np.mean((y[0] - x[i]) ** 2))
            out.append((key, (end, feats[i], err, err > threshold, t_in)))
        return out

    counts = {"summaries": 0, "anomalous": 0, "windows": 0}
    flow = Dataflow("competent_bytewax_int8")
    s = op.input("in", flow, bf._BlockSource(bf.RECORDING, speed, None))
    scored = op.flat_map_batch("score", op.stateful_batch("window", s, lambda _resume: bf._Windows()), score)
    summaries = op.stateful_batch("summary", scored, bf._summary_logic)
    op.output("out", summaries, bf._JsonlSink(Path("out/bench_infer.bytewax_int8.jsonl"), [], counts))
    # the latency tap last, as the edgeflow rows add theirs to a flow that ends in its summaries (bytewax runs
    # the steps of one round in the order they were made: the summary step before the tap, on both sides)
    op.output("flags", scored, bf._FlagSink(latencies))
    started = time.perf_counter()
    run_main(flow)
    return time.perf_counter() - started, counts["anomalous"]


def bytewax_child(speed: float) -> dict[str, Any]:
    """Run the plain bytewax int8 pipeline paced (latency) then unpaced (throughput), as :func:`child` does."""
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT / "bench"))
    latencies: list[float] = []
    paced_s, anomalous = _bytewax_int8(speed, latencies)
    fast_s, _ = _bytewax_int8(None, [])
    lat = np.asarray(latencies) * 1e3  # ns, as the edgeflow rows
    p50, p99 = _pcts(lat)
    n = sum(1 for _ in (ROOT / "examples/data/pump_vibration.csv").open()) - 1
    return {
        "kind": "bytewax_int8",
        "events": int(lat.size),
        "event_p50": p50,
        "event_p99": p99,
        "event_max": float(lat.max()) / 1e3,
        "anomalous_windows": anomalous,
        "paced_seconds": paced_s,
        "throughput": n / fast_s,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


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
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the flows")
    parser.add_argument("--child", choices=FLOWS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(bytewax_child(args.speed) if args.child == "bytewax_int8" else child(args.child, args.speed)))
        return

    os.chdir(ROOT)
    windows = _recorded_windows()
    invoke = {v: bench_invoke(v, args.invokes, windows) for v in VARIANTS}
    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in FLOWS}
    for _ in range(args.rounds):  # interleaved: every flow once per round, so noise hits all alike
        for kind in FLOWS:
            rounds[kind].append(_run_child(kind, args.speed))

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}; "
          f"{args.invokes:,} invokes per model; flows paced at {args.speed:g}x real time, "
          f"medians of {args.rounds} interleaved rounds (min-max)\n")  # fmt: skip
    print("| model | file bytes | invoke p50 (us) | invoke p99 (us) | handler 1 window p50 (us) | p99 (us) "
          "| batched x16, per window (us) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for v, r in invoke.items():
        print(f"| {v} | {r['bytes']:,} | {r['invoke_p50']:.2f} | {r['invoke_p99']:.2f} | {r['path_p50']:.1f} "
              f"| {r['path_p99']:.1f} | {r['batched16_per_window']:.2f} |")  # fmt: skip
    print()
    print("| reference flow | scored windows | per-event p50 (us) | per-event p99 (us) "
          "| anomalous windows | throughput (samples/s) | peak RSS (MB) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    names = {"int8": "pump_int8, int8 model", "float32": "pump_int8, float32 model",
             "zscore": "pump_vibration, z-score",
             "bytewax_int8": "plain bytewax, written competently: the int8 flow's work"}  # fmt: skip
    for kind, runs in rounds.items():
        first = runs[0]
        print(f"| {names[kind]} | {first['events']:,} | {_spread(runs, 'event_p50', ',.0f')} "
              f"| {_spread(runs, 'event_p99', ',.0f')} | {first['anomalous_windows']} "
              f"| {_spread(runs, 'throughput', ',.0f')} | {max(r['rss_mb'] for r in runs):.0f} |")  # fmt: skip
    int8 = rounds["int8"]
    p99 = statistics.median(r["event_p99"] for r in int8)
    checks = {
        f"int8 invoke p99 <= {TARGETS['invoke_p99_us']:g} us": invoke["int8"]["invoke_p99"] <= TARGETS["invoke_p99_us"],
        f"int8 flow per-event p99 <= {TARGETS['event_p99_us']:g} us (median of rounds)": p99 <= TARGETS["event_p99_us"],
        f"int8 flow peak RSS <= {TARGETS['rss_mb']:g} MB": max(r["rss_mb"] for r in int8) <= TARGETS["rss_mb"],
    }
    print("\n" + "\n".join(f"{'ok  ' if ok else 'MISS'} {name}" for name, ok in checks.items()))
    b = int8[0]
    print(f"int8 flow: {b['infer_windows']:,} windows in {b['infer_batches']:,} invokes while paced")


def _spread(runs: list[dict[str, Any]], key: str, fmt: str) -> str:
    values = [r[key] for r in runs]
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


if __name__ == "__main__":
    main()
