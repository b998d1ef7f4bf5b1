"""Models for inference in flows: manifests, tensors, the handler protocol and the LiteRT runtime.

One concept per module:

* :mod:`~edgeflow.model.manifest`: ``manifest.json`` (files, checksums, features, normalisation, training
  distribution, threshold);
* :mod:`~edgeflow.model.psi`: the population stability index of inputs against the training distribution;
* :mod:`~edgeflow.model.tensors`: :class:`TensorSpec`, a tensor's shape and int8 quantization;
* :mod:`~edgeflow.model.handler`: the :class:`ModelHandler` protocol ``eo.infer`` runs, and :class:`ModelInfo`;
* :mod:`~edgeflow.model.litert`: :class:`LiteRTModelHandler`, the built-in handler for ``.tflite`` files;
* :mod:`~edgeflow.model.reload`: watching model files for a new version while a flow runs.

>>> import numpy as np
>>> handler = LiteRTModelHandler("models/pump_ae/manifest.json")
>>> info = handler.load_model()
>>> info.model_id.startswith("pump_ae@"), info.inputs[0].dtype, info.inputs[0].shape
(True, 'int8', (-1, 14))
>>> handler.score(np.zeros((2, 14), dtype=np.float32)).shape
(2,)
"""

from __future__ import annotations

from edgeflow.model.errors import ModelLoadError
from edgeflow.model.handler import ModelHandler, ModelInfo, missing_members
from edgeflow.model.litert import LiteRTModelHandler
from edgeflow.model.manifest import (
    Distribution,
    Manifest,
    Normalization,
    OutputSpec,
    Variant,
    load_manifest,
    sha256_of,
)
from edgeflow.model.tensors import TensorSpec

__all__ = [
    "Distribution",
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
    "missing_members",
    "sha256_of",
]
