"""A model's ``manifest.json``: which files, which features, how to normalise them, what the output means.

A model is named by a manifest beside its ``.tflite`` files. The manifest pins
each file's SHA-256, so a damaged file is refused before the runtime sees it, and
is itself signed (:mod:`edgeflow.model.signing`). Every file it names must lie
inside its folder: absolute paths, ``..`` and symbolic links that lead out are refused.

>>> manifest = load_manifest("models/pump_ae/manifest.json")
>>> manifest.name, manifest.default, len(manifest.features)
('pump_ae', 'int8', 14)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeflow.model.errors import ModelLoadError
from edgeflow.model.versions import parse_version

__all__ = [
    "Manifest",
    "Normalization",
    "OutputSpec",
    "Variant",
    "contained_path",
    "file_name_problem",
    "load_manifest",
    "read_manifest",
    "sha256_of",
]


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


def file_name_problem(name: str) -> str | None:
    """Why *name* may not be a file of a model folder (``None`` if it may): it must be relative, without ``..``.

    >>> file_name_problem("model_int8.tflite") is None, file_name_problem("../../etc/passwd")
    (True, "'../../etc/passwd' leads out of the model folder (..)")
    >>> file_name_problem("/etc/passwd")
    "'/etc/passwd' is an absolute path"
    """
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if not name or name in (".", ""):
        return f"{name!r} is not a file name"
    if posix.is_absolute() or windows.is_absolute() or windows.drive or name.startswith(("/", "\\")):
        return f"{name!r} is an absolute path"
    if ".." in posix.parts or ".." in windows.parts:
        return f"{name!r} leads out of the model folder (..)"
    return None


def contained_path(folder: Path, name: str) -> Path:
    """``folder / name``, refused unless it stays inside *folder* (after following symbolic links).

    >>> contained_path(Path("models/pump_ae"), "model_int8.tflite").name
    'model_int8.tflite'
    >>> contained_path(Path("models/pump_ae"), "../../etc/passwd")
    Traceback (most recent call last):
    ...
    edgeflow.model.errors.ModelLoadError: manifest in 'models/pump_ae' names '../../etc/passwd' ...
    """
    problem = file_name_problem(name)
    if problem is None:
        root = folder.resolve()
        resolved = (folder / name).resolve()
        if resolved != root and root not in resolved.parents:
            problem = f"{name!r} is a symbolic link to {str(resolved)!r}, outside the model folder"
    if problem is not None:
        msg = f"manifest in {str(folder)!r} names {problem}; every model file must lie inside the manifest's folder"
        raise ModelLoadError(msg)
    return folder / name


class Normalization(BaseModel):
    """Per-feature statistics; inputs become ``(x - mean) / std`` (same layout as ``eo.features(normalize=...)``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


class Distribution(BaseModel):
    """Per-feature quantile bins of the training inputs: inner ``edges`` and each bin's share (``proportions``).

    What the population stability index compares recent inputs with (:mod:`edgeflow.model.psi`).

    >>> Distribution(names=("a",), edges=((0.0, 1.0),), proportions=((0.5, 0.5),))
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for Distribution
    ...feature 'a' has 2 edges and 2 proportions: expected one more proportion than edges...
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    names: tuple[str, ...]
    edges: tuple[tuple[float, ...], ...]
    proportions: tuple[tuple[float, ...], ...]

    @model_validator(mode="after")
    def _shapes(self) -> Distribution:
        if not len(self.names) == len(self.edges) == len(self.proportions):
            msg = (
                f"distribution has {len(self.names)} names, {len(self.edges)} edge lists and {len(self.proportions)} "
                "proportion lists: expected one of each per feature (rebuild the model with `edgeflow model build`)"
            )
            raise ValueError(msg)
        for name, edges, props in zip(self.names, self.edges, self.proportions, strict=True):
            if len(props) != len(edges) + 1:
                msg = (
                    f"feature {name!r} has {len(edges)} edges and {len(props)} proportions: expected one more "
                    "proportion than edges (rebuild the model with `edgeflow model build`)"
                )
                raise ValueError(msg)
        return self


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

    @field_validator("file")
    @classmethod
    def _inside_folder(cls, name: str) -> str:
        problem = file_name_problem(name)
        if problem is not None:
            msg = f"{problem}; every model file must lie inside the manifest's folder"
            raise ValueError(msg)
        return name


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
    distribution: Distribution | None = None
    """Quantile bins of the training inputs, for the population stability index; ``None`` in older manifests."""
    output: OutputSpec = OutputSpec()
    threshold: float | None = None
    """Anomaly threshold on the score for variants without their own."""
    signature: dict[str, Any] | None = None
    """Ed25519 signature over everything else (see :mod:`edgeflow.model.signing`); ``None``: unsigned."""

    @field_validator("version")
    @classmethod
    def _semantic_version(cls, version: str) -> str:
        parse_version(version)  # newer/older must be decidable: a gateway refuses downgrades
        return version


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a ``manifest.json``.

    >>> load_manifest("models/pump_ae/manifest.json").name
    'pump_ae'
    """
    return read_manifest(path)[1]


def read_manifest(path: str | Path) -> tuple[dict[str, Any], Manifest]:
    """Read a ``manifest.json`` once; return the parsed JSON (what a signature covers) and the validated manifest.

    >>> raw, manifest = read_manifest("models/pump_ae/manifest.json")
    >>> raw["version"] == manifest.version, "signature" in raw
    (True, True)
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            msg = f"expected a JSON object, got {type(raw).__name__}"
            raise ValueError(msg)
        return raw, Manifest.model_validate(raw)
    except OSError as exc:
        msg = f"cannot read manifest {str(path)!r}: {exc.strerror or exc}"
        raise ModelLoadError(msg) from None
    except (ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0:3]
        msg = f"manifest {str(path)!r} is not valid: {' '.join(first)}"
        raise ModelLoadError(msg) from None
