"""The slow-sensor flow on the shipped telemetry recording and on a differently seeded one, same settings.

Scored with edgeflow.evaluate (what `edgeflow eval` prints): every labelled failure is found, with at
most one false-alarm stretch per sensor-week, and the unlabelled maintenance step is not a lasting alarm.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

from edgeflow.evaluate import Evaluation, evaluate
from edgeflow.operators.window import SamplingWarning

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples/data"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_telemetry", DATA / "make_telemetry.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _evaluate(folder: Path) -> Evaluation:
    target = (
        f"{ROOT / 'flows/telemetry.py'}:make_flow(recording='{folder / 'telemetry.csv.gz'}', "
        f"hourly='{folder / 'telemetry_hourly.csv.gz'}')"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplingWarning)  # the window settings fit both kinds of sensor
        return evaluate(target, folder / "telemetry.labels.json")


@pytest.fixture(scope="module")
def shipped() -> tuple[Evaluation, dict]:
    return _evaluate(DATA), json.loads((DATA / "telemetry.labels.json").read_text())


@pytest.fixture(scope="module")
def another(tmp_path_factory: pytest.TempPathFactory) -> tuple[Evaluation, dict]:
    folder = tmp_path_factory.mktemp("telemetry-seed-12")
    _generator().make_telemetry(folder, seed=12)
    return _evaluate(folder), json.loads((folder / "telemetry.labels.json").read_text())


def test_the_shipped_recording_is_what_the_generator_makes(tmp_path: Path) -> None:
    _generator().make_telemetry(tmp_path, seed=11)
    for name in ("telemetry.csv.gz", "telemetry_hourly.csv.gz", "telemetry.labels.json"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
    assert (DATA / "telemetry.csv.gz").stat().st_size < 400_000


@pytest.mark.parametrize("recording", ["shipped", "another"])
def test_every_failure_is_found_with_at_most_one_false_alarm_per_sensor_week(
    recording: str, request: pytest.FixtureRequest
) -> None:
    result, meta = request.getfixturevalue(recording)
    assert meta["seed"] == {"shipped": 11, "another": 12}[recording]
    assert result.total.n_labels == 5 and result.total.detected == 5, result.table()
    for sensor, score in result.sensors.items():
        weeks = score.days / 7
        assert weeks > 5.5 and score.windows > 900, sensor
        assert score.false_alarms <= weeks, (sensor, result.table())
    assert result.total.precision > 0.6 and result.total.recall > 0.4
    assert result.report is not None
    stats = result.report.stats
    assert stats.dead_letters == 0 and stats.problems == [] and stats.gaps > 0  # dropouts reset windows


@pytest.mark.parametrize("recording", ["shipped", "another"])
def test_the_maintenance_step_is_noticed_then_adopted_not_a_lasting_alarm(
    recording: str, request: pytest.FixtureRequest
) -> None:
    result, meta = request.getfixturevalue(recording)
    (step,) = meta["unlabelled"]
    sensor, at = step["sensor"], datetime.fromisoformat(step["at"]).timestamp()
    assert result.report is not None and result.report.stats.counts["baseline.relevels"] >= 1
    labels = [(datetime.fromisoformat(x["start"]), datetime.fromisoformat(x["end"])) for x in meta["labels"]
              if x["sensor"] == sensor]  # fmt: skip
    flags = [w for w in result.flags if w.sensor == sensor and w.anomaly]
    assert any(at - 3600 < w.end < at + 6 * 3600 for w in flags)  # the step itself is noticed
    settled = at + timedelta(days=2).total_seconds()
    lasting = [w for w in flags if w.start > settled and not any(a.timestamp() < w.end and w.start < b.timestamp()
                                                                  for a, b in labels)]  # fmt: skip
    assert lasting == []


def test_different_seeds_put_failures_at_different_times(
    shipped: tuple[Evaluation, dict], another: tuple[Evaluation, dict]
) -> None:
    assert [x["start"] for x in shipped[1]["labels"]] != [x["start"] for x in another[1]["labels"]]
    assert shipped[1]["unlabelled"] != another[1]["unlabelled"]
