"""Which partition of a split recording reads a row: by a stable hash of its sensor id.

A recording read by several workers at once is split by sensor, so that every sensor's rows are parsed
by one partition, in file order. The hash (64-bit FNV-1a of the id's UTF-8 bytes) is the same in every
process and on every run, unlike Python's ``hash()``. :func:`owners_of_fields` computes it for a whole
chunk from the file's bytes, one numpy pass per byte position, without making a string per row.

>>> share_of("pump-1", 2), share_of("pump-2", 2)
(1, 0)
>>> import numpy as np
>>> buf = np.frombuffer(b"pump-1pump-2", np.uint8)
>>> owners_of_fields(buf, np.array([0, 6]), np.array([6, 12]), 2).tolist()
[1, 0]
"""

from __future__ import annotations

import numpy as np

__all__ = ["owners_of_fields", "sensor_hash", "share_of"]

_OFFSET, _PRIME, _MASK = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


def sensor_hash(sensor: str) -> int:
    """Return the 64-bit FNV-1a hash of *sensor*'s UTF-8 bytes.

    >>> hex(sensor_hash("a"))
    '0xaf63dc4c8601ec8c'
    """
    h = _OFFSET
    for byte in sensor.encode("utf-8"):
        h = ((h ^ byte) * _PRIME) & _MASK
    return h


def share_of(sensor: str, parts: int) -> int:
    """Return the partition (``0 .. parts-1``) that reads *sensor*'s rows."""
    return sensor_hash(sensor) % parts


def owners_of_fields(buf: np.ndarray, first: np.ndarray, last: np.ndarray, parts: int) -> np.ndarray:
    """Return the partition of every row whose sensor id is ``buf[first[i]:last[i]]`` (the same as :func:`share_of`)."""
    width = last - first
    h = np.full(first.shape, _OFFSET, dtype=np.uint64)
    prime = np.uint64(_PRIME)
    for j in range(int(width.max()) if width.size else 0):
        live = width > j
        byte = buf[np.minimum(first + j, buf.size - 1)].astype(np.uint64)
        h = np.where(live, (h ^ byte) * prime, h)  # uint64 arithmetic wraps, as the 64-bit hash does
    return (h % np.uint64(parts)).astype(np.int64)
