"""A small model handler written the way a user would: numpy, a weights file, no LiteRT."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeflow.model import ModelInfo, ModelLoadError, TensorSpec, sha256_of

__all__ = ["ZScoreModel", "save_zscore_model"]


def save_zscore_model(path: Path, healthy: np.ndarray, *, threshold: float, version: str = "1") -> Path:
    """Write the statistics of *healthy* feature vectors as a model file for :class:`ZScoreModel`."""
    np.savez(path, mean=healthy.mean(axis=0), std=healthy.std(axis=0), threshold=threshold, version=version)
    return path


class ZScoreModel:
    """Scores a feature vector by its mean squared z-score against healthy statistics kept in an ``.npz`` file.

    Follows the ``ModelHandler`` protocol; counts its loads. It has no ``worker_copy``: the flow's worker
    threads take turns with it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loads = 0
        self._model: tuple[ModelInfo, np.ndarray, np.ndarray] | None = None

    def _read(self, path: Path) -> tuple[ModelInfo, np.ndarray, np.ndarray]:
        self.loads += 1
        try:
            with np.load(path) as data:
                mean, std = data["mean"].astype(np.float32), data["std"].astype(np.float32)
                threshold, version = float(data["threshold"]), str(data["version"])
        except (OSError, ValueError, KeyError) as exc:
            msg = f"cannot read z-score model {str(path)!r}: {exc}"
            raise ModelLoadError(msg) from None
        width = mean.shape[0]
        tensors = (TensorSpec("x", (-1, width), "float32"),), (TensorSpec("z", (-1, width), "float32"),)
        info = ModelInfo("zscore", version, "numpy", path, sha256_of(path), *tensors, threshold)
        return info, mean, np.where(std > 0, std, np.float32(1.0))

    @property
    def info(self) -> ModelInfo:
        if self._model is None:
            self.load_model()
        assert self._model is not None
        return self._model[0]

    def load_model(self) -> ModelInfo:
        self._model = self._read(self.path)
        return self._model[0]

    def run_inference(self, batch: np.ndarray) -> np.ndarray:
        assert self._model is not None
        _info, mean, std = self._model
        return (np.asarray(batch, dtype=np.float32) - mean) / std

    def score(self, batch: np.ndarray) -> np.ndarray:
        z = self.run_inference(batch)
        return (z * z).mean(axis=1)

    def swap(self, source: str | Path | None = None) -> ModelInfo:
        path = self.path if source is None else Path(source)
        model = self._read(path)  # raises before anything changes: the old model keeps serving
        self.path, self._model = path, model
        return model[0]
