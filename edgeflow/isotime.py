"""Vectorized parsing of fixed-width ISO 8601 UTC timestamps, straight from the bytes of a file.

Machine-written recordings give every row a timestamp of the same shape (``2026-03-02T08:00:00.001925Z``).
Such a column is parsed here as one ``(rows, width)`` byte matrix with integer arithmetic: no string per row.
Anything else (other offsets, mixed widths, a bad digit or date) returns ``None`` and is parsed the strict
way, row by row, by :class:`edgeflow.records.TimeFormat`, which also names the bad row.

>>> rows = [b"2026-03-02T08:00:00.5Z", b"2024-02-29T23:59:59.0Z"]
>>> parse_fixed_iso(np.frombuffer(b"".join(rows), np.uint8).reshape(2, -1), naive_utc=False).tolist()
[1772438400.5, 1709251199.0]
"""

from __future__ import annotations

import numpy as np

__all__ = ["parse_fixed_iso"]

_DATE_TIME = b"0000-00-00T00:00:00"
_SEPARATORS = [i for i, c in enumerate(_DATE_TIME) if c != ord("0")]
_DIGITS = [i for i, c in enumerate(_DATE_TIME) if c == ord("0")]
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_MAX_FRACTION = 9


def _number(digits: np.ndarray) -> np.ndarray:
    """Return the integers written by the digit columns of *digits* (rows x digits, values 0-9)."""
    weights = 10 ** np.arange(digits.shape[1] - 1, -1, -1, dtype=np.int64)
    return digits @ weights


def _suffix_length(first: bytes, naive_utc: bool) -> int | None:
    if first.endswith(b"Z"):
        return 1
    if first.endswith(b"+00:00"):
        return 6
    return 0 if naive_utc else None


def parse_fixed_iso(rows: np.ndarray, *, naive_utc: bool) -> np.ndarray | None:
    """Epoch seconds (microsecond resolution, finer digits truncated) of UTC timestamps of one width.

    *rows* holds one timestamp per row as ``uint8``. Accepted: ``YYYY-MM-DDTHH:MM:SS``, an optional fraction
    of 1-9 digits, then ``Z`` or ``+00:00`` (or nothing when *naive_utc*: naive text is UTC). ``None`` when
    any row is not exactly that shape or not a real date and time (month 13, 30 February, hour 24...).
    """
    n, width = rows.shape
    if n == 0 or width < len(_DATE_TIME):
        return None
    suffix = _suffix_length(rows[0].tobytes(), naive_utc)
    if suffix is None:
        return None
    fraction = width - suffix - len(_DATE_TIME)  # the '.' and its digits
    if fraction == 1 or fraction > 1 + _MAX_FRACTION or fraction < 0:
        return None
    expected = np.frombuffer(_DATE_TIME, np.uint8)[_SEPARATORS]
    if not (rows[:, _SEPARATORS] == expected).all():
        return None
    if suffix and not (rows[:, width - suffix :] == rows[0, width - suffix :]).all():
        return None
    digit_columns = _DIGITS + list(range(len(_DATE_TIME) + 1, len(_DATE_TIME) + fraction))
    if fraction and not (rows[:, len(_DATE_TIME)] == ord(".")).all():
        return None
    digits = rows[:, digit_columns].astype(np.int64) - ord("0")
    if not ((digits >= 0) & (digits <= 9)).all():
        return None
    year, month, day = _number(digits[:, 0:4]), _number(digits[:, 4:6]), _number(digits[:, 6:8])
    hour, minute, second = _number(digits[:, 8:10]), _number(digits[:, 10:12]), _number(digits[:, 12:14])
    if not _valid(year, month, day, hour, minute, second):
        return None
    micros = np.zeros(n, dtype=np.int64)
    if fraction:
        kept = digits[:, 14 : 14 + min(fraction - 1, 6)]
        micros = _number(kept) * 10 ** (6 - kept.shape[1])
    seconds = _days_since_epoch(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second
    return (seconds * 1_000_000 + micros) / 1e6


def _valid(
    year: np.ndarray, month: np.ndarray, day: np.ndarray, hour: np.ndarray, minute: np.ndarray, second: np.ndarray
) -> bool:
    if not ((year >= 1).all() and ((month >= 1) & (month <= 12)).all()):
        return False
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    last_day = _MONTH_DAYS[month] + (leap & (month == 2))
    return bool(
        ((day >= 1) & (day <= last_day)).all() and (hour <= 23).all() and (minute <= 59).all() and (second <= 59).all()
    )


def _days_since_epoch(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days from 1970-01-01 in the proleptic Gregorian calendar (years counted from March, so leap days end one)."""
    y = year - (month <= 2)
    era = y // 400
    year_of_era = y - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468
