"""A model tensor's shape, dtype and affine quantization: float values in, integers to the runtime and back.

>>> spec = TensorSpec("x", (-1, 2), "int8", scale=0.5, zero_point=-1)
>>> spec.quantize(np.array([[0.0, 1.0]], dtype=np.float32)).tolist()
[[-1, 1]]
>>> spec.dequantize(np.array([[-1, 1]], dtype=np.int8)).tolist()
[[0.0, 1.0]]
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ClipCounter", "TensorSpec"]

_min, _max = np.minimum.reduce, np.maximum.reduce


class ClipCounter:
    """Values a quantizer saw and how many it clipped at its integer bounds (thread-safe totals).

    >>> c = ClipCounter()
    >>> c.add(14, 2); c.add(14, 0); c.totals()
    (28, 2)
    """

    __slots__ = ("_clipped", "_lock", "_values")

    def __init__(self) -> None:
        self._values = 0
        self._clipped = 0
        self._lock = threading.Lock()

    def add(self, values: int, clipped: int) -> None:
        """Count *values* quantized, *clipped* of them saturated."""
        with self._lock:
            self._values += values
            self._clipped += clipped

    def totals(self) -> tuple[int, int]:
        """Return ``(values, clipped)`` so far."""
        with self._lock:
            return self._values, self._clipped


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Shape, dtype and affine quantization of one model input or output.

    ``shape`` has ``-1`` for a dimension that can be resized (the batch);
    ``scale == 0`` means the tensor is not quantized. :attr:`clips` counts the values
    :meth:`quantize` saturated at the dtype's bounds (int8: -128/127), shared by every copy
    of a loaded model (the input's saturation rate).

    >>> TensorSpec("x", (-1, 14), "int8", scale=0.05, zero_point=-3).describe()
    'int8 (-1, 14) scale=0.05 zp=-3'
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0
    _np_dtype: np.dtype = field(init=False, repr=False, compare=False)
    _bounds: tuple[int, int] = field(init=False, repr=False, compare=False)
    clips: ClipCounter = field(init=False, repr=False, compare=False)
    """Values quantized and clipped so far (see :class:`ClipCounter`)."""

    def __post_init__(self) -> None:
        dtype = np.dtype(self.dtype)
        object.__setattr__(self, "_np_dtype", dtype)
        info = np.iinfo(dtype) if dtype.kind in "iu" else None
        object.__setattr__(self, "_bounds", (info.min, info.max) if info is not None else (0, 0))
        object.__setattr__(self, "clips", ClipCounter())

    @property
    def quantized(self) -> bool:
        """Whether values are stored as integers with a scale and zero point."""
        return self.scale > 0.0

    @property
    def width(self) -> int:
        """Values per batch row (the product of the non-batch dimensions)."""
        return int(np.prod(self.shape[1:])) if len(self.shape) > 1 else 1

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Turn float values into this tensor's dtype (round to nearest, saturate; saturated values are counted).

        >>> spec = TensorSpec("x", (-1, 2), "int8", scale=1.0)
        >>> spec.quantize(np.array([[5.0, 300.0]], dtype=np.float32)).tolist(), spec.clips.totals()
        ([[5, 127]], (2, 1))
        >>> with np.errstate(invalid="ignore"):  # a NaN among the values does not hide the others' saturation
        ...     q = spec.quantize(np.array([[np.nan, -500.0]], dtype=np.float32))
        >>> q[0, 1], spec.clips.totals()
        (np.int8(-128), (4, 2))
        """
        if not self.quantized:
            return x.astype(self._np_dtype, copy=False)
        q = x / self.scale
        q += self.zero_point
        np.rint(q, out=q)
        lo, hi = self._bounds
        clipped = 0
        if q.size and not (_min(q, axis=None) >= lo and _max(q, axis=None) <= hi):  # rare (or NaN): count and clip
            clipped = int(np.count_nonzero(q < lo) + np.count_nonzero(q > hi))
            np.minimum(np.maximum(q, lo, out=q), hi, out=q)
        self.clips.add(q.size, clipped)
        return q.astype(self._np_dtype)

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
