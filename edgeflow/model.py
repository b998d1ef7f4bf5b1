"""Model handling for inference in flows: the only module that touches an interpreter.

A :class:`ModelHandler` loads a model, describes its input and output tensors,
runs a batch of feature vectors through it and can swap in a new model while
a flow runs (the seam for over-the-air updates), as Apache Beam's
``ModelHandler`` does. :class:`LiteRTModelHandler` runs ``.tflite`` files on
LiteRT (``ai-edge-litert``, the successor of ``tflite-runtime``), imported only
when a model is loaded; install it with ``pip install 'edgeflow[infer]'``.

A model is named by a ``manifest.json`` (see :class:`Manifest`) beside its
``.tflite`` files, or by a bare ``.tflite`` file. The manifest says which
features the model takes, how to normalise them, what the outputs mean and the
anomaly threshold; it also pins each file's SHA-256, so a damaged file is
refused before the runtime sees it.

>>> handler = LiteRTModelHandler("models/pump_ae/manifest.json")
>>> info = handler.load_model()
>>> info.model_id.startswith("pump_ae@"), info.inputs[0].dtype, info.inputs[0].shape
(True, 'int8', (-1, 14))
>>> handler.score(np.zeros((2, 14), dtype=np.float32)).shape
(2,)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeflow.errors import EdgeflowError

__all__ = [
    "LiteRTModelHandler",
    "Manifest",
    "ModelHandler",
    "ModelInfo",
    "ModelLoadError",
    "Normalization",
    "OutputSpec",
    "TensorSpec",
    "Variant",
    "load_manifest",
    "sha256_of",
]

_INSTALL_HINT = "install the inference runtime with: pip install 'edgeflow[infer]'"


class ModelLoadError(EdgeflowError):
    """A model file is missing, damaged, does not match its manifest, or cannot run."""


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file.

    >>> len(sha256_of("models/pump_ae/manifest.json"))
    64
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- manifest


class Normalization(BaseModel):
    """Per-feature statistics; inputs become ``(x - mean) / std`` (same layout as ``eo.features(normalize=...)``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


class OutputSpec(BaseModel):
    """What the model's output means and how it becomes an anomaly score.

    * ``reconstruction``: an autoencoder; the score is the mean squared error
      between the (preprocessed) input and the output;
    * ``score``: the first output value is the score.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["reconstruction", "score"] = "score"
    meaning: str = ""


class Variant(BaseModel):
    """One file of a model (e.g. ``int8`` or ``float32``) with its checksum, size, threshold and metrics."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    dtype: str
    threshold: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


class Manifest(BaseModel):
    """``manifest.json``: everything a flow needs to run a model, and the pipeline's report.

    ``default`` names the variant a flow runs unless it asks for another.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: str
    default: str = "int8"
    variants: dict[str, Variant] = Field(min_length=1)
    features: tuple[str, ...]
    preprocess: Literal["none", "standardize", "standardize+symlog"] = "standardize"
    """``standardize``: ``z = (x - mean) / std``; ``+symlog`` then applies ``sign(z) * log1p(|z|)``."""
    normalization: Normalization | None = None
    output: OutputSpec = OutputSpec()
    threshold: float | None = None
    """Anomaly threshold on the score for variants without their own."""


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a ``manifest.json``.

    >>> load_manifest("models/pump_ae/manifest.json").name
    'pump_ae'
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Manifest.model_validate(raw)
    except OSError as exc:
        msg = f"cannot read manifest {str(path)!r}: {exc.strerror or exc}"
        raise ModelLoadError(msg) from None
    except (ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0:3]
        msg = f"manifest {str(path)!r} is not valid: {' '.join(first)}"
        raise ModelLoadError(msg) from None


# --------------------------------------------------------------------------- tensors and info


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Shape, dtype and affine quantization of one model input or output.

    ``shape`` has ``-1`` for a dimension that can be resized (the batch);
    ``scale == 0`` means the tensor is not quantized.

    >>> spec = TensorSpec("x", (-1, 2), "int8", scale=0.5, zero_point=-1)
    >>> spec.quantize(np.array([[0.0, 1.0]], dtype=np.float32)).tolist()
    [[-1, 1]]
    >>> spec.dequantize(np.array([[-1, 1]], dtype=np.int8)).tolist()
    [[0.0, 1.0]]
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0
    _np_dtype: np.dtype = field(init=False, repr=False, compare=False)
    _bounds: tuple[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        dtype = np.dtype(self.dtype)
        object.__setattr__(self, "_np_dtype", dtype)
        info = np.iinfo(dtype) if dtype.kind in "iu" else None
        object.__setattr__(self, "_bounds", (info.min, info.max) if info is not None else (0, 0))

    @property
    def quantized(self) -> bool:
        """Whether values are stored as integers with a scale and zero point."""
        return self.scale > 0.0

    @property
    def width(self) -> int:
        """Values per batch row (the product of the non-batch dimensions)."""
        return int(np.prod(self.shape[1:])) if len(self.shape) > 1 else 1

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Turn float values into this tensor's dtype (round to nearest, saturate)."""
        if not self.quantized:
            return x.astype(self._np_dtype, copy=False)
        q = x / self.scale
        q += self.zero_point
        np.rint(q, out=q)
        return np.clip(q, *self._bounds, out=q).astype(self._np_dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """Turn this tensor's values back into float32."""
        if not self.quantized:
            return q.astype(np.float32, copy=False)
        return (q.astype(np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)

    def describe(self) -> str:
        """Readable one-liner, e.g. ``int8 (-1, 14) scale=0.05 zp=-3``."""
        text = f"{self.dtype} {self.shape}"
        if self.quantized:
            text += f" scale={self.scale:.6g} zp={self.zero_point}"
        return text


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What is loaded: identity, file, tensors and the manifest it came from (if any)."""

    name: str
    version: str
    variant: str
    path: Path
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    threshold: float | None
    manifest: Manifest | None = None

    @property
    def model_id(self) -> str:
        """``name@version``, carried by every score the model produces."""
        return f"{self.name}@{self.version}"

    def lines(self) -> list[str]:
        """Readable description."""
        out = [f"{self.model_id} ({self.variant}) {self.path} sha256 {self.sha256[:16]}..."]
        out += [f"  input  {t.name}: {t.describe()}" for t in self.inputs]
        out += [f"  output {t.name}: {t.describe()}" for t in self.outputs]
        if self.threshold is not None:
            out.append(f"  threshold {self.threshold:.6g}")
        return out


class ModelHandler(Protocol):
    """What the ``infer`` operator needs from a runtime; implement it to add ONNX Runtime or a vendor delegate."""

    @property
    def info(self) -> ModelInfo:
        """The loaded model."""
        ...

    def load_model(self) -> ModelInfo:
        """Load (or reload) the model; raise :class:`ModelLoadError` if it cannot run."""
        ...

    def run_inference(self, batch: np.ndarray) -> np.ndarray:
        """Raw feature vectors ``(n, features)`` float32 to dequantized outputs ``(n, outputs)`` float32."""
        ...

    def score(self, batch: np.ndarray) -> np.ndarray:
        """Raw feature vectors to one anomaly score per row."""
        ...

    def swap(self, source: str | Path | None = None) -> ModelInfo:
        """Load *source* (default: the same path again) and switch to it; keep the old model on failure."""
        ...


# --------------------------------------------------------------------------- LiteRT


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        msg = f"the LiteRT runtime is not installed ({exc}); {_INSTALL_HINT}"
        raise ImportError(msg) from None
    return Interpreter


def _spec(detail: dict[str, Any]) -> TensorSpec:
    shape = tuple(int(d) for d in detail.get("shape_signature", detail["shape"]))
    scale, zero_point = detail["quantization"]
    return TensorSpec(detail["name"], shape, np.dtype(detail["dtype"]).name, float(scale), int(zero_point))


@dataclass(frozen=True, slots=True)
class _Loaded:
    """One interpreter and everything needed to feed it, replaced as a whole on swap."""

    info: ModelInfo
    interpreter: Any
    in_index: int
    out_index: int
    mean: np.ndarray | None
    std: np.ndarray | None
    symlog: bool
    reconstruction: bool
    resizable: bool
    stamp: _Stamp


_Stamp = tuple[tuple[int, int] | None, ...]


def _stamp(*paths: Path) -> _Stamp:
    """Modification time and size of each file (``None`` when missing): changes when a file is replaced."""
    out: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size))
    return tuple(out)


class LiteRTModelHandler:
    """Runs a ``.tflite`` model (int8 or float32) on LiteRT; see the module docstring.

    *source* is a ``manifest.json`` or a ``.tflite`` file; *variant* picks a
    file from the manifest (default: its ``default``). Batches of up to
    *max_batch* rows run as one invoke (the batch dimension is resized, which
    costs a few microseconds, only when the batch size changes).
    """

    def __init__(
        self,
        source: str | Path,
        *,
        variant: str | None = None,
        num_threads: int = 1,
        max_batch: int = 64,
    ) -> None:
        self.source = Path(source)
        self.variant = variant
        self.num_threads = num_threads
        self.max_batch = max_batch
        self._loaded: _Loaded | None = None
        self._batch = 0
        self._rejected: _Stamp | None = None
        self._checked_at = 0.0

    # -- loading

    @property
    def info(self) -> ModelInfo:
        """The loaded model (loads it on first use)."""
        return self._current().info

    def _current(self) -> _Loaded:
        if self._loaded is None:
            self.load_model()
        assert self._loaded is not None
        return self._loaded

    def load_model(self) -> ModelInfo:
        """Load the model from :attr:`source`; raise :class:`ModelLoadError` if it cannot run."""
        self._loaded = self._load(self.source)
        self._batch = 1
        return self._loaded.info

    def _load(self, source: Path) -> _Loaded:
        if not source.is_file():
            msg = f"model file {str(source)!r} does not exist (looked from {Path.cwd()})"
            raise ModelLoadError(msg)
        manifest: Manifest | None = None
        if source.suffix == ".json":
            manifest = load_manifest(source)
            variant = self.variant or manifest.default
            if variant not in manifest.variants:
                msg = f"manifest {str(source)!r} has no variant {variant!r}; it has {sorted(manifest.variants)}"
                raise ModelLoadError(msg)
            entry = manifest.variants[variant]
            path = source.parent / entry.file
            if not path.is_file():
                msg = f"model file {str(path)!r} named by {str(source)!r} does not exist"
                raise ModelLoadError(msg)
            digest = sha256_of(path)
            if digest != entry.sha256:
                msg = (
                    f"model file {str(path)!r} is damaged or was replaced: sha256 {digest[:12]}... "
                    f"but the manifest pins {entry.sha256[:12]}..."
                )
                raise ModelLoadError(msg)
            name, version = manifest.name, manifest.version
            threshold = entry.threshold if entry.threshold is not None else manifest.threshold
        else:
            path, variant, digest = source, self.variant or "file", sha256_of(source)
            name, version, threshold = source.stem, digest[:12], None
        stamp = _stamp(source, path)
        interpreter = self._interpreter(path)
        inputs = tuple(_spec(d) for d in interpreter.get_input_details())
        outputs = tuple(_spec(d) for d in interpreter.get_output_details())
        if len(inputs) != 1 or len(outputs) != 1:
            msg = f"model {str(path)!r} has {len(inputs)} inputs and {len(outputs)} outputs; edgeflow runs 1 -> 1"
            raise ModelLoadError(msg)
        for spec in (*inputs, *outputs):
            if spec.dtype not in ("int8", "uint8", "float32"):
                msg = f"model {str(path)!r} tensor {spec.name!r} is {spec.dtype}; supported: int8, uint8, float32"
                raise ModelLoadError(msg)
        info = ModelInfo(name, version, variant, path, digest, inputs, outputs, threshold, manifest)
        mean = std = None
        symlog = reconstruction = False
        if manifest is not None:
            self._check_manifest(manifest, info)
            if manifest.preprocess != "none":
                assert manifest.normalization is not None
                mean = np.asarray(manifest.normalization.mean, dtype=np.float32)
                std = np.asarray(manifest.normalization.std, dtype=np.float32)
                std = np.where(std > 0, std, np.float32(1.0))
            symlog = manifest.preprocess == "standardize+symlog"
            reconstruction = manifest.output.kind == "reconstruction"
        loaded = _Loaded(
            info,
            interpreter,
            int(interpreter.get_input_details()[0]["index"]),
            int(interpreter.get_output_details()[0]["index"]),
            mean,
            std,
            symlog,
            reconstruction,
            inputs[0].shape[0] == -1 and len(inputs[0].shape) == 2,
            stamp,
        )
        self._smoke_test(loaded)
        return loaded

    def _interpreter(self, path: Path) -> Any:
        interpreter_class = _interpreter_class()
        try:
            interpreter = interpreter_class(model_path=str(path), num_threads=self.num_threads)
            interpreter.allocate_tensors()
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for damaged files
            reason = " ".join(str(exc).split())[:200]
            msg = f"model file {str(path)!r} is not a valid TFLite model: {reason}"
            raise ModelLoadError(msg) from None
        return interpreter

    @staticmethod
    def _check_manifest(manifest: Manifest, info: ModelInfo) -> None:
        width = info.inputs[0].width
        if len(manifest.features) != width:
            msg = f"manifest lists {len(manifest.features)} features but model input is {info.inputs[0].shape}"
            raise ModelLoadError(msg)
        norm = manifest.normalization
        if manifest.preprocess != "none" and (
            norm is None or tuple(norm.names) != manifest.features or not len(norm.mean) == len(norm.std) == width
        ):
            msg = f"manifest {manifest.name!r}: preprocess {manifest.preprocess!r} needs normalization for its features"
            raise ModelLoadError(msg)
        if manifest.output.kind == "reconstruction" and info.outputs[0].width != width:
            msg = f"a reconstruction model's output {info.outputs[0].shape} must match its input {info.inputs[0].shape}"
            raise ModelLoadError(msg)

    def _smoke_test(self, loaded: _Loaded) -> None:
        try:
            out = self._invoke(loaded, np.zeros((1, loaded.info.inputs[0].width), dtype=np.float32))
        except Exception as exc:
            msg = f"model {str(loaded.info.path)!r} loads but does not run: {exc}"
            raise ModelLoadError(msg) from None
        if not np.all(np.isfinite(out)):
            msg = f"model {str(loaded.info.path)!r} gives non-finite outputs on a zero input"
            raise ModelLoadError(msg)

    # -- running

    def _preprocess(self, loaded: _Loaded, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, dtype=np.float32)
        if loaded.mean is not None and loaded.std is not None:
            x = (x - loaded.mean) / loaded.std
        if loaded.symlog:
            x = np.copysign(np.log1p(np.abs(x)), x)
        return x

    def _invoke(self, loaded: _Loaded, x: np.ndarray) -> np.ndarray:
        interpreter, spec_in, spec_out = loaded.interpreter, loaded.info.inputs[0], loaded.info.outputs[0]
        n, width = x.shape
        if not loaded.resizable:
            rows = [self._invoke_fixed(loaded, x[i : i + 1]) for i in range(n)]
            return np.concatenate(rows) if rows else np.empty((0, spec_out.width), dtype=np.float32)
        if n != self._batch or loaded is not self._loaded:
            interpreter.resize_tensor_input(loaded.in_index, [n, width])
            interpreter.allocate_tensors()
            if loaded is self._loaded:
                self._batch = n
        interpreter.set_tensor(loaded.in_index, spec_in.quantize(x))
        interpreter.invoke()
        return spec_out.dequantize(interpreter.get_tensor(loaded.out_index)).reshape(n, -1)

    def _invoke_fixed(self, loaded: _Loaded, row: np.ndarray) -> np.ndarray:
        spec_in, spec_out = loaded.info.inputs[0], loaded.info.outputs[0]
        loaded.interpreter.set_tensor(loaded.in_index, spec_in.quantize(row).reshape(spec_in.shape))
        loaded.interpreter.invoke()
        return spec_out.dequantize(loaded.interpreter.get_tensor(loaded.out_index)).reshape(1, -1)

    def _run(self, loaded: _Loaded, x: np.ndarray) -> np.ndarray:
        if x.shape[0] <= self.max_batch:
            return self._invoke(loaded, x)
        parts = [self._invoke(loaded, x[i : i + self.max_batch]) for i in range(0, x.shape[0], self.max_batch)]
        return np.concatenate(parts)

    def run_inference(self, batch: np.ndarray) -> np.ndarray:
        """Preprocess raw feature vectors as the manifest says, quantize, invoke, dequantize.

        >>> h = LiteRTModelHandler("models/pump_ae/manifest.json")
        >>> h.run_inference(np.zeros((3, 14), dtype=np.float32)).shape
        (3, 14)
        """
        loaded = self._current()
        return self._run(loaded, self._preprocess(loaded, batch))

    def score(self, batch: np.ndarray) -> np.ndarray:
        """One anomaly score per row: reconstruction error or the model's first output (float32)."""
        loaded = self._current()
        x = self._preprocess(loaded, batch)
        y = self._run(loaded, x)
        if loaded.reconstruction:
            d = y - x
            return (d * d).sum(axis=1) / np.float32(d.shape[1])
        return y[:, 0].copy()

    @property
    def invocations_per_batch(self) -> int:
        """How many rows one invoke takes at most (1 for a model with a fixed batch of 1)."""
        return self.max_batch if self._current().resizable else 1

    # -- updates

    def swap(self, source: str | Path | None = None) -> ModelInfo:
        """Load *source* (default: :attr:`source` again) and switch to it atomically.

        The new model must take the same input as the old one. On any failure
        the old model stays in service and :class:`ModelLoadError` is raised.
        """
        new_source = self.source if source is None else Path(source)
        old = self._current()
        try:
            loaded = self._load(new_source)
        except ModelLoadError:
            self._rejected = self._watched(new_source, old)
            raise
        old_in, new_in = old.info.inputs[0], loaded.info.inputs[0]
        same_features = old.info.manifest is None or loaded.info.manifest is None or (
            old.info.manifest.features == loaded.info.manifest.features
        )
        if new_in.width != old_in.width or not same_features:
            self._rejected = loaded.stamp
            msg = (
                f"model {str(new_source)!r} takes input {new_in.shape} but the running model "
                f"{old.info.model_id} takes {old_in.shape} with the same features; a swap must keep the input"
            )
            raise ModelLoadError(msg)
        self.source = new_source
        self._loaded, self._batch, self._rejected = loaded, 1, None
        return loaded.info

    def refresh(self, min_interval_s: float = 1.0) -> ModelInfo | None:
        """Swap in :attr:`source` if the file changed since it was loaded; check at most every *min_interval_s*.

        Returns the new model's info after a swap, ``None`` when nothing changed;
        raises :class:`ModelLoadError` once per rejected file version (the
        old model stays in service).
        """
        now = time.monotonic()
        if now - self._checked_at < min_interval_s:
            return None
        self._checked_at = now
        current = self._current()
        stamp = self._watched(self.source, current)
        if stamp == current.stamp or stamp == self._rejected:
            return None
        return self.swap()

    def _watched(self, source: Path, current: _Loaded) -> _Stamp:
        """Stamp of *source* and of the model file it names now (so a file landing after its manifest counts)."""
        if source == current.info.path or source.suffix != ".json":
            return _stamp(source, source)
        named = current.info.path
        with contextlib.suppress(Exception):  # an unreadable manifest: watch the old file; loading will explain
            manifest = load_manifest(source)
            named = source.parent / manifest.variants[self.variant or manifest.default].file
        return _stamp(source, named)
