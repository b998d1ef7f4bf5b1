"""A model's ``manifest.json``: which files, which features, how to normalise them, what the output means.

A model is named by a manifest beside its ``.tflite`` files. The manifest pins
each file's SHA-256, so a damaged file is refused before the runtime sees it.

>>> manifest = load_manifest("models/pump_ae/manifest.json")
>>> manifest.name, manifest.default, len(manifest.features)
('pump_ae', 'int8', 14)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeflow.model.errors import ModelLoadError

__all__ = ["Manifest", "Normalization", "OutputSpec", "Variant", "load_manifest", "sha256_of"]


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
