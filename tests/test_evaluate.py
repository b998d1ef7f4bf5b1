"""Scoring flags against labels (edgeflow.evaluate) and the `edgeflow eval` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeflow.cli import app
from edgeflow.evaluate import Label, WindowFlag, evaluate, load_labels, score_flags

ROOT = Path(__file__).resolve().parent.parent
HOUR = 3600.0


def _flags(sensor: str, flagged: set[int], n: int = 48) -> list[WindowFlag]:
    """Hourly windows 0..n-1, each two hours long (they overlap by one hour)."""
    return [WindowFlag(sensor, i * HOUR, (i + 2) * HOUR, i in flagged) for i in range(n)]


def test_window_counts_intervals_and_delays_per_sensor() -> None:
    labels = [
        Label("a", 10 * HOUR, 14 * HOUR, "rise"),
        Label("a", 30 * HOUR, 31 * HOUR, "spike"),
        Label("b", 5 * HOUR, 6 * HOUR),
    ]
    flags = _flags("a", {12, 13, 20, 21, 40}) + _flags("b", set())
    result = score_flags(flags, labels)
    a, b = result.sensors["a"], result.sensors["b"]
    assert (a.detected, a.n_labels, b.detected, b.n_labels) == (1, 2, 0, 1)
    assert a.positive == 5 + 2 and a.true_flags == 2 and a.flagged == 5  # windows 9..13 and 29..30 overlap labels
    assert a.precision == pytest.approx(2 / 5) and a.recall == pytest.approx(2 / 7)
    assert [r.first_flag_after_s for r in a.intervals] == [4 * HOUR, None]  # window 12 ends at 14 h
    assert a.false_alarms == 2 and a.days == pytest.approx(49 / 24)  # {20, 21} and {40}
    assert math.isnan(b.precision) and b.recall == 0.0
    total = result.total
    assert (total.detected, total.n_labels, total.false_alarms, total.windows) == (1, 3, 2, 96)


def test_grace_and_merge_settings() -> None:
    labels = [Label("a", 10 * HOUR, 12 * HOUR)]
    flags = _flags("a", {11, 12, 13, 20, 23})
    assert score_flags(flags, labels).sensors["a"].false_alarms == 3  # {12, 13} start after the label ends
    graced = score_flags(flags, labels, grace_s=2 * HOUR).sensors["a"]
    assert graced.false_alarms == 2 and graced.flagged == 3  # 12 and 13 are in the grace: neither way
    merged = score_flags(flags, labels, grace_s=2 * HOUR, merge_s=3 * HOUR).sensors["a"]
    assert merged.false_alarms == 1  # 20 and 23 are less than three hours apart (20 ends at 22 h)


def test_label_files_in_both_shapes_and_errors_that_say_where(tmp_path: Path) -> None:
    pump = load_labels(ROOT / "examples/data/pump_vibration.faults.json")
    assert [x.kind for x in pump] == ["bearing_defect", "imbalance", "cavitation"]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps([{"sensor": "s", "start": "2026-01-01T00:00:00Z", "end": 1767229200}]))
    assert load_labels(plain) == [Label("s", 1767225600.0, 1767229200.0)]
    for text, message in [
        ('{"intervals": []}', 'expected a list of intervals, or an object with a "labels"'),
        ('[{"sensor": "s", "start": "2026-01-01T00:00:00Z"}]', r"label 0: missing \['end'\]"),
        ('[{"sensor": "s", "start": "2026-01-01T00:00:00", "end": "2026-01-02T00:00:00Z"}]', "has no timezone"),
        ('[{"sensor": "s", "start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}]', "is not after start"),
        ("{", "not JSON"),
    ]:
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_labels(bad)


def test_evaluate_taps_the_detector_of_a_real_flow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "summary.jsonl"
    target = f"flows/pump_vibration.py:make_flow(out='{out}')"
    result = evaluate(target, ROOT / "examples/data/pump_vibration.faults.json")
    assert result.steps == ("detect",) and not out.exists()  # sinks captured: nothing written
    assert result.total.detected == 3 and result.total.false_alarms == 0
    assert result.total.precision == 1.0 and result.total.recall == 1.0
    assert result.report is not None and result.report.stats.windows == result.total.windows == 1833


def test_eval_command_prints_a_table_and_writes_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    runner = CliRunner()
    scores = tmp_path / "scores.json"
    args = ["eval", "flows/pump_vibration.py", "--labels", "examples/data/pump_vibration.faults.json"]
    done = runner.invoke(app, [*args, "--json", str(scores)])
    assert done.exit_code == 0, done.output
    assert "| pump-2 | 465 | 1/1 | 100.0 % | 100.0 % |" in done.stdout
    assert "| all | 1,833 | 3/3 |" in done.stdout
    written = json.loads(scores.read_text())
    assert written["total"]["detected"] == 3 and written["sensors"]["pump-1"]["precision"] is None
    bad = runner.invoke(app, ["eval", "flows/pump_vibration.py", "--labels", str(tmp_path / "none.json")])
    assert bad.exit_code == 2 and "cannot read labels" in bad.output
    wrong = runner.invoke(app, [*args, "--step", "summary"])
    assert wrong.exit_code == 1 and "step 'summary' does not emit scored windows" in wrong.output


def test_a_detector_feeding_a_sink_directly_is_tapped(tmp_path: Path) -> None:
    import edgeflow.operators as eo
    from edgeflow import Flow

    flow = Flow("direct")
    s = eo.replay("samples", flow, ROOT / "examples/data/pump_vibration.csv")
    f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=64), ["rms", "kurtosis"])
    eo.output("out", eo.zscore_detector("detect", f, threshold=6.0), eo.jsonl(tmp_path / "scored.jsonl"))
    result = evaluate(flow, ROOT / "examples/data/pump_vibration.faults.json")
    assert result.steps == ("detect",) and result.total.detected == 3
