"""The one error a model raises when it cannot be used.

>>> issubclass(ModelLoadError, EdgeflowError)
True
"""

from __future__ import annotations

from edgeflow.errors import EdgeflowError

__all__ = ["ModelLoadError"]


class ModelLoadError(EdgeflowError):
    """A model file is missing, damaged, does not match its manifest, or cannot run."""
