"""Issue 8.1: no bytes in a recording stop a replay; every bad row is a dead letter with its line number."""

from __future__ import annotations

import gzip
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgeflow.operators as eo
from edgeflow import Flow, FlowValidationError
from edgeflow.testing import Capture, run_capture

GOOD = "2026-01-01T00:00:{:02d}.{:03d}Z,s{},{}\n"


def _good_rows(n: int, start: int = 0) -> list[str]:
    return [GOOD.format((start + i) // 1000 % 60, (start + i) % 1000, i % 3, i * 0.5) for i in range(n)]


def _run(path: Path) -> Capture:
    flow = Flow("robust")
    eo.output("out", eo.replay("samples", flow, path), eo.jsonl("out/robust.jsonl"))
    return run_capture(flow)


def test_a_byte_that_is_not_utf8_after_the_first_8kb_is_one_dead_letter(tmp_path: Path) -> None:
    rows = _good_rows(600)
    path = tmp_path / "bad.csv"
    path.write_bytes(
        b"ts,sensor,value\n"
        + "".join(rows[:400]).encode()
        + b"2026-01-01T00:01:00Z,s\xff1,1.0\n"
        + "".join(rows[400:]).encode()
    )
    assert path.stat().st_size > 8192 * 2
    result = _run(path)
    assert result.report.stats.samples_in == 600
    (letter,) = result.dead_letters
    assert letter["reason"] == "line 402: not UTF-8 text: byte 0xff at column 23"


def test_a_10mb_line_is_one_dead_letter_read_in_pieces(tmp_path: Path) -> None:
    rows = _good_rows(100)
    path = tmp_path / "long.csv"
    path.write_text(
        "ts,sensor,value\n"
        + "".join(rows[:50])
        + "2026-01-01T00:00:59Z,s1,"
        + "9" * 10_000_000
        + "\n"
        + "".join(rows[50:])
    )
    result = _run(path)
    assert result.report.stats.samples_in == 100
    (letter,) = result.dead_letters
    assert letter["reason"].startswith("line 52: 10,000,025 bytes long")
    assert len(letter["payload"]) < 1_100


def test_a_field_over_the_csv_limit_is_a_dead_letter(tmp_path: Path) -> None:
    path = tmp_path / "field.csv"
    path.write_text("ts,sensor,value\n" + "".join(_good_rows(10)) + '2026-01-01T00:00:59Z,s1,"' + "x" * 60_000 + '"\n')
    result = _run(path)
    assert result.report.stats.samples_in == 10 and len(result.dead_letters) == 1


def test_a_truncated_gzip_ends_the_input_cleanly_with_one_dead_letter(tmp_path: Path) -> None:
    whole = ("ts,sensor,value\n" + "".join(_good_rows(20_000))).encode()
    packed = gzip.compress(whole)
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(packed[: len(packed) // 2])
    result = _run(path)
    (letter,) = result.dead_letters
    assert "the file ends early or is damaged" in letter["reason"] and letter["reason"].startswith("line ")
    line = int(letter["reason"].split(":")[0][5:])
    assert result.report.stats.samples_in == line - 2 > 5_000  # every complete row before the cut was replayed


ROW = st.one_of(
    st.builds(
        lambda t, s, v: GOOD.format(t // 1000 % 60, t % 1000, s, v),
        st.integers(0, 59_999),
        st.integers(0, 3),
        st.floats(allow_nan=True, allow_infinity=True),
    ),
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"") + b"\n").map(lambda b: b.decode("latin-1")),
    st.text(max_size=60).map(lambda t: t.replace("\n", "").replace("\r", "") + "\n"),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=60))
def test_fuzzed_rows_are_all_accounted_for(tmp_path: Path, rows: list[str]) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_bytes(b"ts,sensor,value\n" + "".join(rows).encode("latin-1", errors="replace"))
    lines = path.read_bytes().count(b"\n") - 1
    try:
        result = _run(path)
    except FlowValidationError as exc:  # every row bad: refused before the run, all of them counted
        assert f"all of the first {lines} rows are dead letters" in str(exc)
        return
    assert result.report.stats.samples_in + len(result.dead_letters) == lines
