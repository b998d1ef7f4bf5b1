"""The byte-level ISO timestamp parser agrees with the strict parser, and refuses what it cannot be sure of."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeflow.isotime import parse_fixed_iso
from edgeflow.records import TimeFormat


def _rows(texts: list[str]) -> np.ndarray:
    return np.frombuffer("".join(texts).encode(), np.uint8).reshape(len(texts), -1)


@given(
    st.lists(
        st.datetimes(
            min_value=datetime(1, 1, 2),  # noqa: DTZ001 (hypothesis takes naive bounds)
            max_value=datetime(9999, 12, 30),  # noqa: DTZ001
        ),
        min_size=1,
        max_size=50,
    ),
    st.sampled_from(["seconds", "milliseconds", "microseconds"]),
    st.sampled_from(["Z", "+00:00"]),
)
def test_agrees_with_the_strict_parser(stamps: list[datetime], spec: str, suffix: str) -> None:
    texts = [s.isoformat(timespec=spec) + suffix for s in stamps]
    got = parse_fixed_iso(_rows(texts), naive_utc=False)
    assert got.tolist() == TimeFormat().parse_many(texts).tolist()  # what replay produced before: bit for bit
    np.testing.assert_allclose(got, [TimeFormat().parse(t) for t in texts], rtol=1e-15, atol=1e-6)  # 1 ulp


def test_naive_text_is_utc_only_when_asked() -> None:
    texts = ["2026-03-02T08:00:00.250000", "2026-03-02T08:00:01.000000"]
    assert parse_fixed_iso(_rows(texts), naive_utc=True).tolist() == [1772438400.25, 1772438401.0]
    assert parse_fixed_iso(_rows(texts), naive_utc=False) is None


def test_nanosecond_digits_are_truncated_to_microseconds_as_the_strict_parser_does() -> None:
    assert parse_fixed_iso(_rows(["2024-02-29T00:00:00.123456789Z"]), naive_utc=False).tolist() == [
        datetime(2024, 2, 29, 0, 0, 0, 123456, tzinfo=UTC).timestamp()
    ]


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-29T00:00:00Z",  # not a leap year
        "2026-13-01T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T23:60:00Z",
        "2026-01-01T23:59:60Z",
        "0000-01-01T00:00:00Z",
        "2026-01-01 00:00:00Z",
        "2026-01-0aT00:00:00Z",
        "2026-01-01T00:00:00+01:00",
        "2026-01-01T00:00:00.Z",
        "1772438400.000000000000",
    ],
)
def test_anything_unsure_goes_the_strict_way(text: str) -> None:
    assert (
        parse_fixed_iso(_rows(["2026-01-01T00:00:00Z"[: len(text)].ljust(len(text), "0"), text]), naive_utc=False)
        is None
    )


def test_one_bad_row_among_good_ones_refuses_the_whole_column() -> None:
    good = (datetime(2026, 3, 2, tzinfo=UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    assert parse_fixed_iso(_rows([good, good.replace("03-02", "02-30")]), naive_utc=False) is None
