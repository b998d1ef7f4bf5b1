"""Build the reference model ``models/pump_ae``: train, prune, quantize to int8, check, write the manifest.

Run from the project root (needs the training extra, ``pip install 'edgeflow[train]'``)::

    python models/build.py          # or: edgeflow model build

The pipeline, deterministic (fixed seeds, one thread):

1. **Data.** Five synthetic recordings are generated with the shipped
   generator (``examples/data/make_recording.py``, seeds 101, 102, 104 and 105 for
   training, 103 for validation) and windowed into features by the reference
   flow's own steps (:func:`flows.pump_int8.add_features`). The shipped
   recording (seed 7) is the held-out test set. A window is labelled faulty
   when it lies wholly inside an injected fault of its sensor, healthy when
   wholly outside; windows straddling a fault's edge are left out of the scores.
2. **Model.** An autoencoder 14 -> 128 -> 16 -> 128 -> 14 is trained on healthy
   windows only (features standardized, then ``sign(z) * log1p(|z|)`` so the
   huge values of faults do not eat the int8 range). The anomaly score is the
   mean squared reconstruction error.
3. **Structured pruning.** Hidden units with the smallest ``RMS activation x
   outgoing weight norm`` are removed (whole rows and columns, so the model
   really shrinks), in two rounds with fine-tuning, down to 40 -> 10 -> 40.
4. **int8.** Full-integer post-training quantization (weights, activations,
   input and output all int8) with a representative dataset of training
   windows, healthy and faulty.
5. **Check.** Every variant runs through edgeflow's own LiteRT handler; its
   threshold is chosen on the validation recording (the middle of the
   F1-optimal range, geometric), and F1 is measured on the held-out recording.
   The build fails unless the int8 file is at most 25 % of the float32
   baseline and its F1 within 1 point of the float32 baseline's.
6. **Sign.** The manifest (every file's SHA-256 and every setting) is signed
   with Ed25519 (``--key``, else ``$EDGEFLOW_SIGNING_KEY``, else the repository's
   TEST key ``models/keys/TEST-ONLY-ed25519.key``), so gateways can verify it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["BuildReport", "Dataset", "build", "main", "recording_features"]

NAME = "pump_ae"
RELEASE = "1.0.0"
SEED = 7
TRAIN_SEEDS = (101, 102, 104, 105)
VALIDATION_SEED = 103
WIDTHS = (128, 16)
PRUNE_SCHEDULE = ((64, 12), (40, 10))
EPOCHS, FINE_TUNE_EPOCHS = 60, 20
MAX_SIZE_RATIO, MAX_F1_DROP = 0.25, 0.01
PSI_BINS = 10
"""Quantile bins per feature of the training distribution stored for the population stability index."""


@dataclass(frozen=True)
class Dataset:
    """Feature vectors of one recording with labels (1 fault, 0 healthy, -1 straddles a fault edge)."""

    x: np.ndarray
    y: np.ndarray
    sensors: tuple[str, ...]


@dataclass(frozen=True)
class BuildReport:
    """What :func:`build` wrote and measured."""

    manifest: Path
    table: str
    seconds: float


# ----------------------------------------------------------------------------- data


def _make_recording(out_dir: Path, seed: int) -> Path:
    spec = importlib.util.spec_from_file_location("_make_recording", ROOT / "examples/data/make_recording.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_recording(out_dir, seed=seed)  # type: ignore[no-any-return]


def recording_features(csv: Path) -> Dataset:
    """Run the reference flow's windowing and features over *csv*; label windows from the faults file beside it."""
    import edgeflow.operators as eo
    from edgeflow import Flow
    from edgeflow.records import parse_timestamp
    from edgeflow.runtime import run
    from edgeflow.sinks import CaptureSink
    from flows.pump_int8 import add_features

    flow = Flow("model-build-features")
    feats = add_features(eo.replay("samples", flow, csv))
    eo.output("out", feats, eo.stdout())
    captured = CaptureSink()
    run(flow, sinks={"out": captured})
    windows = sorted(captured.items, key=lambda w: (w.end, w.sensor))  # time order, however the engine interleaved
    meta = json.loads(csv.with_name("pump_vibration.faults.json").read_text(encoding="utf-8"))
    faults = [(f["sensor"], parse_timestamp(f["start"]), parse_timestamp(f["end"])) for f in meta["faults"]]
    labels = []
    for w in windows:
        label = 0
        for sensor, start, end in faults:
            if sensor != w.sensor or w.end < start or w.start >= end:
                continue
            label = 1 if (w.start >= start and w.end < end) else -1
        labels.append(label)
    return Dataset(np.stack([w.features for w in windows]), np.asarray(labels), tuple(w.sensor for w in windows))


def _preprocess(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    z = (x - mean) / std
    return (np.sign(z) * np.log1p(np.abs(z))).astype(np.float32)


# ----------------------------------------------------------------------------- training


def _setup_tf(seed: int) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _quiet():
            import keras
            import tensorflow as tf
    except ImportError as exc:
        msg = f"building models needs TensorFlow ({exc}); install it with: pip install 'edgeflow[train]'"
        raise ImportError(msg) from None
    with contextlib.suppress(RuntimeError):  # already initialised in this process
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    return keras


def _autoencoder(keras: Any, n: int, hidden: int, code: int) -> Any:
    inp = keras.Input((n,), name="x")
    h = keras.layers.Dense(hidden, activation="relu", name="enc")(inp)
    z = keras.layers.Dense(code, name="code")(h)
    h = keras.layers.Dense(hidden, activation="relu", name="dec")(z)
    out = keras.layers.Dense(n, name="out")(h)
    model = keras.Model(inp, out, name=NAME)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    return model


def _fit(model: Any, x: np.ndarray, epochs: int) -> float:
    history = model.fit(x, x, epochs=epochs, batch_size=128, shuffle=True, verbose=0)
    return float(history.history["loss"][-1])


def _prune(keras: Any, model: Any, x: np.ndarray, hidden: int, code: int) -> Any:
    """Structured pruning: keep the hidden units with the largest RMS activation x outgoing weight norm."""
    layers = [model.get_layer(name) for name in ("enc", "code", "dec", "out")]
    weights = [layer.get_weights() for layer in layers]
    activations = keras.Model(model.input, [layer.output for layer in layers[:3]]).predict(x, verbose=0)
    keep = []
    for i, (act, size) in enumerate(zip(activations, (hidden, code, hidden), strict=True)):
        importance = np.sqrt(np.mean(act**2, axis=0)) * np.linalg.norm(weights[i + 1][0], axis=1)
        keep.append(np.sort(np.argsort(importance)[::-1][:size]))
    (k_enc, b_enc), (k_code, b_code), (k_dec, b_dec), (k_out, b_out) = weights
    pruned = _autoencoder(keras, x.shape[1], hidden, code)
    pruned.get_layer("enc").set_weights([k_enc[:, keep[0]], b_enc[keep[0]]])
    pruned.get_layer("code").set_weights([k_code[keep[0]][:, keep[1]], b_code[keep[1]]])
    pruned.get_layer("dec").set_weights([k_dec[keep[1]][:, keep[2]], b_dec[keep[2]]])
    pruned.get_layer("out").set_weights([k_out[keep[2]], b_out])
    return pruned


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the converter's prints and native logs (file descriptors 1 and 2)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _convert(model: Any, representative: np.ndarray | None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([row[None, :]] for row in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with _quiet(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs", category=UserWarning)
        return bytes(converter.convert())


# ----------------------------------------------------------------------------- evaluation


def _f1(scores: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    known = y >= 0
    pred, truth = scores[known] > threshold, y[known] == 1
    tp, fp, fn = int(np.sum(pred & truth)), int(np.sum(pred & ~truth)), int(np.sum(~pred & truth))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "f1": round(f1, 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "accuracy": round(float(np.mean(pred == truth)), 4),
        "false_positives": fp,
        "false_negatives": fn,
    }


def _choose_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """Return the geometric middle of the range of thresholds with the best validation F1."""
    known = y >= 0
    s = np.unique(scores[known])
    cuts = np.sqrt(s[:-1] * s[1:]) if s.size > 1 else s
    f1s = np.array([_f1(scores, y, c)["f1"] for c in cuts])
    best = np.flatnonzero(f1s == f1s.max())
    lo, hi = s[best[0]], s[best[-1] + 1]
    return float(np.sqrt(max(lo, 1e-12) * hi))


def _evaluate(manifest: Path, variant: str, val: Dataset, test: Dataset) -> tuple[float, dict[str, float]]:
    from edgeflow.model import LiteRTModelHandler

    handler = LiteRTModelHandler(manifest, variant=variant)
    threshold = _choose_threshold(handler.score(val.x), val.y)
    scores = handler.score(test.x)
    metrics = _f1(scores, test.y, threshold)
    metrics["validation_f1"] = _f1(handler.score(val.x), val.y, threshold)["f1"]
    healthy, faulty = float(scores[test.y == 0].max()), float(scores[test.y == 1].min())
    metrics["max_healthy_score"], metrics["min_fault_score"] = round(healthy, 6), round(faulty, 6)
    metrics["separation"] = round(faulty / healthy, 2)
    return threshold, metrics


# ----------------------------------------------------------------------------- pipeline


TEST_KEY = ROOT / "models" / "keys" / "TEST-ONLY-ed25519.key"


def build(
    out_dir: str | Path = ROOT / "models", *, log: Any = print, signing_key: str | Path | None = None
) -> BuildReport:
    """Run the whole pipeline and write ``<out_dir>/pump_ae/``, signed with *signing_key*; return manifest and table."""
    from edgeflow.model import Manifest, sha256_of
    from edgeflow.model.verify import sign_model

    started = time.perf_counter()
    target = Path(out_dir) / NAME
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sets = []
        for seed in (*TRAIN_SEEDS, VALIDATION_SEED):
            folder = Path(tmp) / f"seed{seed}"
            folder.mkdir()
            sets.append(recording_features(_make_recording(folder, seed)))
    test = recording_features(ROOT / "examples/data/pump_vibration.csv")
    *train_sets, val = sets
    x_all = np.concatenate([d.x for d in train_sets])
    y_all = np.concatenate([d.y for d in train_sets])
    healthy = x_all[y_all == 0]
    mean, std = healthy.mean(axis=0, dtype=np.float64), healthy.std(axis=0, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    x_train = _preprocess(healthy, mean, std)
    log(f"data: {len(x_train)} healthy training windows, {len(val.x)} validation, {len(test.x)} held-out test")

    keras = _setup_tf(SEED)
    n = x_train.shape[1]
    baseline = _autoencoder(keras, n, *WIDTHS)
    loss = _fit(baseline, x_train, EPOCHS)
    log(f"trained {WIDTHS}: loss {loss:.4f} ({baseline.count_params()} parameters)")
    pruned = baseline
    for hidden, code in PRUNE_SCHEDULE:
        pruned = _prune(keras, pruned, x_train, hidden, code)
        loss = _fit(pruned, x_train, FINE_TUNE_EPOCHS)
        log(f"pruned to ({hidden}, {code}) and fine-tuned: loss {loss:.4f} ({pruned.count_params()} parameters)")

    rng = np.random.default_rng(SEED)
    calibration = _preprocess(x_all[rng.permutation(len(x_all))[:512]], mean, std)
    files = {
        "int8": ("model_int8.tflite", _convert(pruned, calibration), "int8"),
        "float32": ("model_float32.tflite", _convert(baseline, None), "float32"),
        "float32_pruned": ("model_float32_pruned.tflite", _convert(pruned, None), "float32"),
    }
    for file, content, _dtype in files.values():
        (target / file).write_bytes(content)
    variants: dict[str, dict[str, Any]] = {
        key: {"file": file, "sha256": sha256_of(target / file), "bytes": len(content), "dtype": dtype}
        for key, (file, content, dtype) in files.items()
    }
    manifest: dict[str, Any] = {
        "name": NAME,
        "version": f"{RELEASE}+{variants['int8']['sha256'][:8]}",
        "default": "int8",
        "description": "Autoencoder of healthy pump vibration windows; the score is the reconstruction error.",
        "variants": variants,
        "features": [],  # filled below from the flow's schema
        "preprocess": "standardize+symlog",
        "normalization": {},
        "output": {
            "kind": "reconstruction",
            "meaning": "mean squared error between the preprocessed features and their reconstruction; "
            "high means the window does not look like a healthy pump",
        },
        "threshold": None,
        "training": {
            "recordings": {"train_seeds": list(TRAIN_SEEDS), "validation_seed": VALIDATION_SEED,
                           "test": "examples/data/pump_vibration.csv (seed 7, held out)"},
            "windows": {"train_healthy": len(x_train), "validation": len(val.x), "test": len(test.x)},
            "architecture": {"float32": [n, WIDTHS[0], WIDTHS[1], WIDTHS[0], n],
                             "pruned": [n, PRUNE_SCHEDULE[-1][0], PRUNE_SCHEDULE[-1][1], PRUNE_SCHEDULE[-1][0], n]},
            "parameters": {"float32": int(baseline.count_params()), "pruned": int(pruned.count_params())},
            "epochs": EPOCHS, "fine_tune_epochs": FINE_TUNE_EPOCHS, "seed": SEED,
            "calibration_windows": len(calibration),
        },
    }  # fmt: skip
    manifest["features"] = list(_feature_names())
    manifest["normalization"] = {"names": manifest["features"], "mean": mean.tolist(), "std": std.tolist()}
    from edgeflow.model.psi import quantile_bins

    edges, proportions = quantile_bins(healthy, bins=PSI_BINS)
    manifest["distribution"] = {"names": manifest["features"], "edges": edges, "proportions": proportions}
    path = target / "manifest.json"
    _write(path, manifest)
    for key in variants:
        threshold, metrics = _evaluate(path, key, val, test)
        variants[key].update(threshold=threshold, metrics=metrics)
    manifest["threshold"] = variants["int8"]["threshold"]
    ratio = variants["int8"]["bytes"] / variants["float32"]["bytes"]
    drop = variants["float32"]["metrics"]["f1"] - variants["int8"]["metrics"]["f1"]
    manifest["checks"] = {
        "int8_over_float32_bytes": round(ratio, 4),
        "int8_over_float32_pruned_bytes": round(variants["int8"]["bytes"] / variants["float32_pruned"]["bytes"], 4),
        "f1_drop_vs_float32": round(drop, 4),
        "passed": bool(ratio <= MAX_SIZE_RATIO and drop <= MAX_F1_DROP),
    }
    Manifest.model_validate(manifest)
    _write(path, manifest)
    table = _table(manifest)
    log(table)
    if not manifest["checks"]["passed"]:
        msg = f"the model misses its targets: {manifest['checks']}"
        raise RuntimeError(msg)
    signed = sign_model(path, Path(signing_key or os.environ.get("EDGEFLOW_SIGNING_KEY") or TEST_KEY))
    assert signed.signer is not None
    test = " (a TEST key: sign releases with your own, --key)" if signed.signer.test_key else ""
    log(f"signed {signed.model_id} with {signed.signer.key_name} ({signed.signer.key_id}){test}")
    return BuildReport(path, table, time.perf_counter() - started)


def _feature_names() -> tuple[str, ...]:
    import edgeflow.operators as eo
    from edgeflow import Flow
    from edgeflow.compiler import compile_flow
    from flows.pump_int8 import add_features

    flow = Flow("model-build-schema")
    feats = add_features(eo.replay("samples", flow, ROOT / "examples/data/pump_vibration.csv"))
    eo.output("out", feats, eo.stdout())
    return compile_flow(flow).schemas[feats.step_id].features


def _write(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _table(manifest: dict[str, Any]) -> str:
    rows = ["| variant | file | bytes | vs float32 | threshold | F1 (held-out) | precision | recall | accuracy "
            "| fault/healthy score |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    base = manifest["variants"]["float32"]["bytes"]
    for key, v in manifest["variants"].items():
        m = v["metrics"]
        rows.append(
            f"| {key} | {v['file']} | {v['bytes']:,} | {100 * v['bytes'] / base:.1f} % | {v['threshold']:.4g} "
            f"| {m['f1']:.4f} | {m['precision']:.4f} | {m['recall']:.4f} | {m['accuracy']:.4f} "
            f"| {m['separation']:.1f}x |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python models/build.py [OUT_DIR] [--key KEY]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    key = None
    if "--key" in args:
        at = args.index("--key")
        key = args[at + 1]
        del args[at : at + 2]
    report = build(args[0] if args else ROOT / "models", signing_key=key)
    print(f"wrote {report.manifest} in {report.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
