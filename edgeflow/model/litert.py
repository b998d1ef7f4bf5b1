"""Running ``.tflite`` models (int8 or float32) on LiteRT, the successor of ``tflite-runtime``.

LiteRT (``ai-edge-litert``) is imported only when a model is loaded; install it
with ``pip install 'edgeflow[infer]'``. A model file is read once per load:
the bytes that are checked against the manifest's SHA-256 are the bytes the
interpreter runs, and :meth:`LiteRTModelHandler.worker_copy` gives another
worker thread its own interpreter over those bytes without reading or checking
them again (LiteRT interpreters are not thread-safe).

With *trusted_keys* the manifest must carry a valid signature by one of them
(:mod:`edgeflow.model.signing`), checked on the very bytes that are then used;
a bare ``.tflite`` file cannot be verified and is refused. Every file a manifest
names must lie inside its folder.

>>> handler = LiteRTModelHandler("models/pump_ae/manifest.json")
>>> info = handler.load_model()
>>> info.model_id.startswith("pump_ae@"), info.inputs[0].dtype, info.inputs[0].shape
(True, 'int8', (-1, 14))
>>> handler.score(np.zeros((2, 14), dtype=np.float32)).shape
(2,)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgeflow.model.errors import ModelLoadError
from edgeflow.model.handler import ModelInfo
from edgeflow.model.manifest import Manifest, contained_path, read_manifest
from edgeflow.model.reload import ReloadWatch, Stamp, file_stamp, watched_stamp
from edgeflow.model.signing import SignatureError, Signer, TrustedKeys, content_digest, verify_document
from edgeflow.model.tensors import TensorSpec
from edgeflow.model.versions import compare_versions

__all__ = ["LiteRTModelHandler", "version_problem"]

_INSTALL_HINT = "install the inference runtime with: pip install 'edgeflow[infer]'"


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


def version_problem(new: ModelInfo, running: ModelInfo, *, allow_downgrade: bool = False) -> str | None:
    """Why *new* may not replace *running* by version number (``None`` if it may).

    Older than the running version: a downgrade (refused unless *allow_downgrade*). The same number with other
    content: refused, since then one id would name two models. Versions of other models are not compared.
    """
    if new.manifest is None or running.manifest is None or new.name != running.name:
        return None
    try:
        order = compare_versions(new.version, running.version)
    except ValueError as exc:
        return str(exc)
    if order < 0 and not allow_downgrade:
        return (
            f"version {new.version} is older than the running {running.version} (a downgrade); "
            "publish a newer version, or allow downgrades explicitly"
        )
    if order == 0 and new.version == running.version and new.digest != running.digest:
        return (
            f"version {new.version} is already running with other content (content digest {running.digest[:12]}... "
            f"vs {new.digest[:12]}...); give every change a new version number"
        )
    return None


@dataclass(frozen=True, slots=True)
class _Loaded:
    """One interpreter and everything needed to feed it, replaced as a whole on swap."""

    info: ModelInfo
    content: bytes
    """The model file's bytes, as checked: worker copies build their interpreters from them."""
    interpreter: Any
    in_index: int
    out_index: int
    mean: np.ndarray | None
    std: np.ndarray | None
    symlog: bool
    reconstruction: bool
    resizable: bool
    stamp: Stamp


class LiteRTModelHandler:
    """Runs a ``.tflite`` model (int8 or float32) on LiteRT; see the module docstring.

    *source* is a ``manifest.json`` or a ``.tflite`` file; *variant* picks a
    file from the manifest (default: its ``default``). Batches of up to
    *max_batch* rows run as one invoke (the batch dimension is resized, which
    costs a few microseconds, only when the batch size changes).

    *trusted_keys*: verify the manifest's signature (``None``: accept unsigned
    models). *check_expiry*: refuse an expired signature (a version a gateway
    already accepted is reloaded with ``False``). :meth:`swap` refuses an older
    version than the running one unless *allow_downgrade*.
    """

    def __init__(
        self,
        source: str | Path,
        *,
        variant: str | None = None,
        num_threads: int = 1,
        max_batch: int = 64,
        trusted_keys: TrustedKeys | None = None,
        check_expiry: bool = True,
        allow_downgrade: bool = False,
        now: datetime | None = None,
    ) -> None:
        self.source = Path(source)
        self.variant = variant
        self.num_threads = num_threads
        self.max_batch = max_batch
        self.trusted_keys = trusted_keys
        self.check_expiry = check_expiry
        self.allow_downgrade = allow_downgrade
        self.now = now
        """The time signatures are checked against (``None``: the clock); for tests and replays."""
        self._loaded: _Loaded | None = None
        self._batch = 0
        self._watch = ReloadWatch()

    def __repr__(self) -> str:
        return f"LiteRTModelHandler({str(self.source)!r}, variant={self.variant!r})"

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

    def worker_copy(self) -> LiteRTModelHandler:
        """Return an independent handler serving the same loaded model from a new interpreter (no re-read or re-check).

        >>> h = LiteRTModelHandler("models/pump_ae/manifest.json")
        >>> twin = h.worker_copy()
        >>> twin.info is h.info, twin.score(np.zeros((1, 14), np.float32)) == h.score(np.zeros((1, 14), np.float32))
        (True, array([ True]))
        """
        loaded = self._current()
        twin = self.configured_like(self.source)
        twin._loaded = replace(loaded, interpreter=self._interpreter(loaded.info.path, loaded.content))
        twin._batch = 0  # a fresh interpreter has the file's own input shape: resize on the first batch
        twin._watch.rejected = self._watch.rejected
        return twin

    def configured_like(self, source: str | Path) -> LiteRTModelHandler:
        """Return a new, unloaded handler for *source* with this one's settings (variant, threads, keys...)."""
        return LiteRTModelHandler(
            source,
            variant=self.variant,
            num_threads=self.num_threads,
            max_batch=self.max_batch,
            trusted_keys=self.trusted_keys,
            check_expiry=self.check_expiry,
            allow_downgrade=self.allow_downgrade,
            now=self.now,
        )

    def _read(self, source: Path) -> tuple[Path, str, Manifest | None, bytes, str, Signer | None, str]:
        """Find, verify and read the model file *source* names.

        Returns the file, its variant, the manifest, its bytes, their sha256, the signer and the content digest.
        """
        if not source.is_file():
            msg = f"model file {str(source)!r} does not exist (looked from {Path.cwd()})"
            raise ModelLoadError(msg)
        if source.suffix != ".json":
            if self.trusted_keys is not None:
                msg = f"model {str(source)!r} is a bare model file, which cannot be verified: {self._unsigned_hint()}"
                raise SignatureError(msg)
            content = source.read_bytes()
            digest = hashlib.sha256(content).hexdigest()
            return source, self.variant or "file", None, content, digest, None, digest
        raw, manifest = read_manifest(source)
        signer = None
        if self.trusted_keys is not None:
            try:
                signer = verify_document(raw, self.trusted_keys, now=self.now, check_expiry=self.check_expiry)
            except SignatureError as exc:
                msg = f"model {str(source)!r} is refused: {exc}"
                raise SignatureError(msg) from None
        variant = self.variant or manifest.default
        if variant not in manifest.variants:
            msg = f"manifest {str(source)!r} has no variant {variant!r}; it has {sorted(manifest.variants)}"
            raise ModelLoadError(msg)
        for other in manifest.variants.values():
            contained_path(source.parent, other.file)
        entry = manifest.variants[variant]
        path = contained_path(source.parent, entry.file)
        if not path.is_file():
            msg = f"model file {str(path)!r} named by {str(source)!r} does not exist"
            raise ModelLoadError(msg)
        content = path.read_bytes()
        digest = hashlib.sha256(content).hexdigest()
        if digest != entry.sha256:
            msg = (
                f"model file {str(path)!r} is damaged or was replaced: sha256 {digest[:12]}... "
                f"but the manifest pins {entry.sha256[:12]}..."
            )
            raise ModelLoadError(msg)
        return path, variant, manifest, content, digest, signer, content_digest(raw)

    def _unsigned_hint(self) -> str:
        keys = self.trusted_keys.source if self.trusted_keys is not None else "-"
        return (
            f"put it in a folder with a manifest.json and sign it (`edgeflow model sign`) with a key trusted here "
            f"({keys}), or pass trusted_keys=None to run unverified models (development only)"
        )

    def _load(self, source: Path) -> _Loaded:
        """Read, check, load and smoke-test the model *source* names: the one place a model is loaded."""
        path, variant, manifest, content, digest, signer, manifest_digest = self._read(source)
        stamp = file_stamp(source, path)
        if manifest is not None:
            name, version = manifest.name, manifest.version
            entry = manifest.variants[variant]
            threshold = entry.threshold if entry.threshold is not None else manifest.threshold
        else:
            name, version, threshold = source.stem, digest[:12], None
        interpreter = self._interpreter(path, content)
        inputs = tuple(_spec(d) for d in interpreter.get_input_details())
        outputs = tuple(_spec(d) for d in interpreter.get_output_details())
        if len(inputs) != 1 or len(outputs) != 1:
            msg = f"model {str(path)!r} has {len(inputs)} inputs and {len(outputs)} outputs; edgeflow runs 1 -> 1"
            raise ModelLoadError(msg)
        for spec in (*inputs, *outputs):
            if spec.dtype not in ("int8", "uint8", "float32"):
                msg = f"model {str(path)!r} tensor {spec.name!r} is {spec.dtype}; supported: int8, uint8, float32"
                raise ModelLoadError(msg)
        info = ModelInfo(
            name, version, variant, path, digest, inputs, outputs, threshold, manifest, signer, manifest_digest
        )
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
            content,
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

    def _interpreter(self, path: Path, content: bytes) -> Any:
        interpreter_class = _interpreter_class()
        try:
            interpreter = interpreter_class(model_content=content, num_threads=self.num_threads)
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
            self._watch.rejected = watched_stamp(new_source, old.info.path, self.variant)
            raise
        old_in, new_in = old.info.inputs[0], loaded.info.inputs[0]
        same_features = (
            old.info.manifest is None
            or loaded.info.manifest is None
            or (old.info.manifest.features == loaded.info.manifest.features)
        )
        if new_in.width != old_in.width or not same_features:
            self._watch.rejected = loaded.stamp
            msg = (
                f"model {str(new_source)!r} takes input {new_in.shape} but the running model "
                f"{old.info.model_id} takes {old_in.shape} with the same features; a swap must keep the input"
            )
            raise ModelLoadError(msg)
        problem = version_problem(loaded.info, old.info, allow_downgrade=self.allow_downgrade)
        if problem is not None:
            self._watch.rejected = loaded.stamp
            msg = f"model {str(new_source)!r} is refused: {problem}"
            raise ModelLoadError(msg)
        self.source = new_source
        self._loaded, self._batch, self._watch.rejected = loaded, 1, None
        return loaded.info

    def refresh(self, min_interval_s: float = 1.0) -> ModelInfo | None:
        """Swap in :attr:`source` if the file changed since it was loaded; check at most every *min_interval_s*.

        Returns the new model's info after a swap, ``None`` when nothing changed;
        raises :class:`ModelLoadError` once per rejected file version (the
        old model stays in service).
        """
        if not self._watch.due(min_interval_s):
            return None
        current = self._current()
        stamp = watched_stamp(self.source, current.info.path, self.variant)
        if not self._watch.is_new(stamp, loaded=current.stamp):
            return None
        return self.swap()
