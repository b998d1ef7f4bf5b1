"""A model tensor's shape, dtype and affine quantization: float values in, integers to the runtime and back.

>>> spec = TensorSpec("x", (-1, 2), "int8", scale=0.5, zero_point=-1)
>>> spec.quantize(np.array([[0.0, 1.0]], dtype=np.float32)).tolist()
[[-1, 1]]
>>> spec.dequantize(np.array([[-1, 1]], dtype=np.int8)).tolist()
[[0.0, 1.0]]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["TensorSpec"]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Shape, dtype and affine quantization of one model input or output.

    ``shape`` has ``-1`` for a dimension that can be resized (the batch);
    ``scale == 0`` means the tensor is not quantized.

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
