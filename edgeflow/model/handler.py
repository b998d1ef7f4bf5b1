"""What ``eo.infer`` needs from a model runtime: the :class:`ModelHandler` protocol and :class:`ModelInfo`.

Like Apache Beam's ``ModelHandler``, a handler loads its model in
:meth:`~ModelHandler.load_model` (called once, when the flow is compiled, never
at import), runs batches of feature vectors and can swap in a new model while a
flow runs. :class:`~edgeflow.model.LiteRTModelHandler` is the built-in one; any
object with the same members works with ``eo.infer(model=handler)``.

Three members are optional, and ``eo.infer`` uses them when they are there:

* ``refresh(min_interval_s) -> ModelInfo | None``: swap in a changed model file
  (needed for ``eo.infer(reload_check_s=...)``);
* ``worker_copy() -> handler``: an independent handler serving the same loaded
  model, for another worker thread (without it, worker threads take turns);
* ``invocations_per_batch``: the most rows one runtime call takes (counters only).

>>> class Doubler:
...     info = ModelInfo("double", "1", "numpy", Path("double.npz"), "0" * 64,
...                      (TensorSpec("x", (-1, 1), "float32"),), (TensorSpec("y", (-1, 1), "float32"),), 1.0)
...     def load_model(self) -> ModelInfo:
...         return self.info
...     def run_inference(self, batch: np.ndarray) -> np.ndarray:
...         return 2 * batch
...     def score(self, batch: np.ndarray) -> np.ndarray:
...         return self.run_inference(batch)[:, 0]
...     def swap(self, source: str | Path | None = None) -> ModelInfo:
...         return self.info
>>> missing_members(Doubler()), missing_members(object())
((), ('info', 'load_model', 'run_inference', 'score', 'swap'))
>>> Doubler().score(np.ones((2, 1))).tolist()
[2.0, 2.0]
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edgeflow.model.manifest import Manifest
from edgeflow.model.signing import Signer
from edgeflow.model.tensors import TensorSpec

__all__ = ["ModelHandler", "ModelInfo", "missing_members"]


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
    signer: Signer | None = None
    """Who signed the manifest, when it was verified against trusted keys (``None``: not verified)."""
    digest: str = ""
    """SHA-256 of the manifest's content without its signature (of the file for a bare model): what it *is*."""

    @property
    def model_id(self) -> str:
        """``name@version/variant`` (``name@version`` without a manifest): carried by every score the model produces.

        A gateway refuses a version number it already runs with other content, so the id names exactly one model.
        """
        base = f"{self.name}@{self.version}"
        return f"{base}/{self.variant}" if self.manifest is not None else base

    def lines(self) -> list[str]:
        """Readable description."""
        shown = self.model_id if self.manifest is not None else f"{self.model_id} ({self.variant})"
        out = [f"{shown} {self.path} sha256 {self.sha256[:16]}..."]
        if self.signer is not None:
            test = "  [TEST KEY: anyone with the repository can sign with it]" if self.signer.test_key else ""
            until = f", expires {self.signer.expires}" if self.signer.expires else ""
            signer = self.signer
            out.append(f"  signed by {signer.key_name} ({signer.key_id}) at {signer.signed_at}{until}{test}")
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
        """Load (or reload) the model; raise :class:`~edgeflow.model.ModelLoadError` if it cannot run."""
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


_MEMBERS = ("info", "load_model", "run_inference", "score", "swap")


def missing_members(handler: object) -> tuple[str, ...]:
    """Names of the :class:`ModelHandler` members *handler* lacks (methods must be callable).

    Looks the members up without calling them, so a handler's ``info`` property does not load its model.
    """
    missing = []
    for name in _MEMBERS:
        try:
            member = inspect.getattr_static(handler, name)
        except AttributeError:
            missing.append(name)
            continue
        if name != "info" and not (callable(member) or isinstance(member, (staticmethod, classmethod))):
            missing.append(name)
    return tuple(missing)
