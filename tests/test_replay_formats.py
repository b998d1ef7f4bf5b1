"""Replay takes input as it comes: naive timestamps with a zone, epoch units, one-sensor files, bad times."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgeflow.operators as eo
from edgeflow import Flow, FlowValidationError
from edgeflow.testing import run_capture


def _run(path: Path, **settings: object) -> tuple[list[dict], list[dict], int]:
    flow = Flow("formats")
    eo.output("out", eo.replay("samples", flow, path, **settings), eo.jsonl("out/formats.jsonl"))
    result = run_capture(flow)
    return result.only(), result.dead_letters, result.report.stats.samples_in


def test_naive_timestamps_take_the_given_zone(tmp_path: Path) -> None:
    from edgeflow.recordings import read_recording
    from edgeflow.records import TimeFormat

    path = tmp_path / "naive.csv"
    path.write_text("time,temp\n2026-01-01T00:00:00,20.5\n2026-01-01T01:00:00,21.0\n")
    _, rows = read_recording(path, time_column="time", sensor="boiler", time_format=TimeFormat(tz="Europe/Berlin"))
    assert list(rows) == [("boiler", 1767222000.0, (20.5,)), ("boiler", 1767225600.0, (21.0,))]  # 23:00Z, 00:00Z
    _, dead, n = _run(path, time_column="time", sensor="boiler", tz="UTC")
    assert (dead, n) == ([], 2)


def test_a_file_whose_first_rows_are_all_dead_letters_fails_before_the_run(tmp_path: Path) -> None:
    from edgeflow.compiler import compile_flow

    path = tmp_path / "naive.csv"
    path.write_text("ts,sensor,v\n2026-01-01T00:00:00,a,1\n2026-01-01T00:00:01,a,2\n")
    flow = Flow("naive")
    eo.output("out", eo.replay("samples", flow, path), eo.stdout())
    with pytest.raises(
        FlowValidationError,
        match=r"step 'samples': field 'path' got .*naive.csv': all of the first 2 rows are dead letters; the first: "
        r"line 2: timestamp '2026-01-01T00:00:00' has no timezone.*Hint: set tz=",
    ):
        compile_flow(flow)


def test_naive_rows_among_good_ones_are_dead_letters_that_say_how_to_fix_them(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text("ts,sensor,v\n2026-01-01T00:00:00Z,a,1\n2026-01-01T00:00:01,a,2\n")
    _, dead, n = _run(path)
    assert n == 1 and len(dead) == 1
    assert (
        dead[0]["reason"].startswith("line 3: timestamp '2026-01-01T00:00:01' has no timezone")
        and "tz=" in (dead[0]["reason"])
    )


@pytest.mark.parametrize(
    ("unit", "stamp"), [("s", "1767225600.5"), ("ms", "1767225600500"), ("ns", "1767225600500000000")]
)
def test_epoch_columns_in_any_unit(tmp_path: Path, unit: str, stamp: str) -> None:
    from edgeflow.recordings import read_recording
    from edgeflow.records import TimeFormat

    path = tmp_path / "epoch.csv"
    path.write_text(f"ts,sensor,v\n{stamp},a,1.5\n")
    _, rows = read_recording(path, time_format=TimeFormat(unit=unit))  # type: ignore[arg-type]
    assert list(rows) == [("a", 1767225600.5, (1.5,))]


def test_timestamps_outside_years_1_to_9999_are_dead_letters_and_the_rest_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "far.csv"
    path.write_text(
        "ts,sensor,v\n2026-01-01T00:00:00Z,a,1\n10000-01-01T00:00:00Z,a,2\n1e12,a,3\n2026-01-01T00:00:01Z,a,4\n"
    )
    _, dead, n = _run(path)
    assert n == 2
    assert [d["reason"].split(":")[0] for d in dead] == ["line 3", "line 4"]
    assert "outside the years 1-9999" in dead[1]["reason"]


def test_bad_zone_and_missing_sensor_column_fail_before_data_flows(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("ts,v\n2026-01-01T00:00:00Z,1\n")
    with pytest.raises(FlowValidationError, match=r"step 'samples': field 'tz' got 'Mars/Olympus'.*unknown time zone"):
        eo.replay("samples", Flow("f"), path, tz="Mars/Olympus")
    flow = Flow("f")
    eo.output("out", eo.replay("samples", flow, path), eo.stdout())
    from edgeflow.compiler import compile_flow

    with pytest.raises(FlowValidationError, match=r"field 'sensor_column' got 'sensor'.*give sensor= for a one-sensor"):
        compile_flow(flow)
