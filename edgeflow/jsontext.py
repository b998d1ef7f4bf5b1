"""Strict JSON text (RFC 8259) for everything edgeflow writes: no ``NaN`` or ``Infinity``, ever.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which no strict parser
reads. Here a non-finite number becomes ``null``, and numpy scalars and arrays
become plain numbers and lists.

>>> dumps({"score": float("nan"), "ci95": [1.0, float("inf")], "n": 3})
'{"score":null,"ci95":[1.0,null],"n":3}'
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

__all__ = ["dumps"]


def dumps(obj: Any) -> str:
    """Compact, strict JSON text of *obj*."""
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError):
        return json.dumps(_clean(obj), separators=(",", ":"), allow_nan=False)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    return repr(obj)
