"""Updates inside running flows (bytewax, the real runtime): shadow and switch, rollback, and restarts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.compiler import compile_flow
from edgeflow.model.signing import TrustedKeys
from edgeflow.ota.gates import Gates
from edgeflow.ota.store import ModelStore
from edgeflow.records import Window
from edgeflow.testing import Capture, run_capture
from flows.pump_int8 import add_features

from .ota_support import KEYS, MODEL_DIR, RECORDING, release

OLD = "pump_ae@1.0.0+5c8ff791/int8"
FAULTS = {("pump-2", "08:00:20"), ("pump-3", "08:00:40"), ("pump-4", "08:00:50")}


def _flow(store: Path, gates: Gates, at: int = 0, action: Callable[[], None] | None = None) -> Flow:
    """The reference flow on *store*; *action* runs once when window *at* passes (an update arriving mid-run)."""
    seen = [0]

    def tap(w: Window) -> Window:
        seen[0] += 1
        if seen[0] == at and action is not None:
            action()
        return w

    flow = Flow("ota-flow")
    # small batches: windows reach the shadow in time order across sensors, so the healthy stretch it judges
    # ends before pump-2's fault whatever the default batch size
    feats = eo.map("arrive", add_features(eo.replay("samples", flow, RECORDING, batch_size=1024)), tap)
    scores = eo.infer("model", feats, model=MODEL_DIR / "manifest.json", store=store, reload_check_s=0, shadow=gates)
    eo.output("scored", scores, eo.stdout())
    eo.summarize("summary", scores, every_s=10, sink=eo.stdout())
    return flow


def _deploy(store: ModelStore, manifest: Path) -> Callable[[], None]:
    return lambda: store.offer(store.install(manifest.parent, TrustedKeys.load(KEYS)))


def _wait(store: ModelStore, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The store's state once *check* holds (the flow writes it from a background thread)."""
    for _ in range(100):
        state = store.state()
        if state and check(state):
            return state
        time.sleep(0.02)
    msg = f"store never reached the state: {store.state()}"
    raise AssertionError(msg)


def _windows(capture: Capture) -> list[tuple[str, str]]:
    return [(s["sensor"], s["end"]) for s in capture.outputs["scored"]]


def _flagged(capture: Capture) -> set[tuple[str, str]]:
    return {(s["sensor"], s["interval"][0][11:19]) for s in capture.outputs["summary_out"] if s["anomaly"]}


def test_an_update_takes_over_mid_run_without_losing_or_repeating_a_window(tmp_path: Path) -> None:
    baseline = run_capture(_flow(tmp_path / "base", Gates()))
    store = ModelStore(tmp_path / "store")
    capture = run_capture(_flow(store.root, Gates(windows=300, health_windows=300), 100,
                                _deploy(store, release(tmp_path / "v", "1.1.0"))))  # fmt: skip
    assert _windows(capture) == _windows(baseline)  # same windows, each once, in the same order
    models = [s["model"] for s in capture.outputs["scored"]]
    switch = models.index("pump_ae@1.1.0/int8")
    assert set(models[:switch]) == {OLD} and set(models[switch:]) == {"pump_ae@1.1.0/int8"}
    assert [s["anomaly"] for s in capture.outputs["scored"]] == [s["anomaly"] for s in baseline.outputs["scored"]]
    assert _flagged(capture) == FAULTS and capture.dead_letters == []
    stats = capture.report.stats.counts
    assert stats["infer.swaps"] == 1 and stats["infer.windows"] == capture.report.stats.windows
    _wait(store, lambda s: s["active"]["version"] == "1.1.0" and s["phase"] == "serving")
    events = [e["event"] for e in store.events()[0]]
    assert events == ["shadowing", "promoted", "healthy"]


def test_a_restart_comes_back_on_the_promoted_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    run_capture(_flow(store.root, Gates(windows=100, health_windows=100), 50,
                      _deploy(store, release(tmp_path / "v", "1.1.0"))))  # fmt: skip
    _wait(store, lambda s: s["active"]["version"] == "1.1.0" and s["phase"] == "serving")
    again = run_capture(_flow(store.root, Gates(windows=100, health_windows=100)))
    assert {s["model"] for s in again.outputs["scored"]} == {"pump_ae@1.1.0/int8"}
    assert "infer.swaps" not in again.report.stats.counts  # the inbox request was handled before the restart


def test_a_rolled_back_version_never_comes_back_after_a_restart(tmp_path: Path) -> None:
    """Shadowed on healthy windows the blind model passes; the health watch rolls it back at pump-2's fault."""
    store = ModelStore(tmp_path / "store")
    blind = release(tmp_path / "v", "1.1.0", threshold=1e9)
    _deploy(store, blind)()  # waiting when the flow starts: the shadow sees healthy windows only, deterministically
    capture = run_capture(_flow(store.root, Gates(windows=200, health_windows=1500)))
    assert capture.report.stats.counts["infer.rollbacks"] == 1
    (note,) = capture.dead_letters
    assert note["reason"].startswith(f"model rolled back from pump_ae@1.1.0/int8 to {OLD}: health gates failed")
    assert _flagged(capture) == FAULTS  # pump-2's fault caught by the restored model, 3 and 4 untouched
    state = _wait(store, lambda s: s["active"]["model"] == OLD)
    assert state["phase"] == "serving"
    again = run_capture(_flow(store.root, Gates(windows=200, health_windows=1500)))
    assert {s["model"] for s in again.outputs["scored"]} == {OLD} and again.dead_letters == []


def test_a_restart_during_the_health_watch_resumes_it(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    run_capture(_flow(store.root, Gates(windows=100, health_windows=5000), 20,
                      _deploy(store, release(tmp_path / "v", "1.1.0"))))  # fmt: skip
    state = _wait(store, lambda s: s["phase"] == "watch")
    assert state["active"]["version"] == "1.1.0" and state["last_good"]["model"] == OLD
    compiled = compile_flow(_flow(store.root, Gates(windows=100, health_windows=500)))
    prepared = compiled.prepared["model"]
    assert prepared.initial.phase == "watch" and prepared.initial.other.model_id == OLD
    capture = run_capture(compiled)
    assert {s["model"] for s in capture.outputs["scored"]} == {"pump_ae@1.1.0/int8"}
    _wait(store, lambda s: s["phase"] == "serving" and s["active"]["version"] == "1.1.0")


def test_a_version_changed_on_disk_after_acceptance_is_not_run_after_a_restart(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    run_capture(_flow(store.root, Gates(windows=100, health_windows=100), 20,
                      _deploy(store, release(tmp_path / "v", "1.1.0"))))  # fmt: skip
    state = _wait(store, lambda s: s["active"]["version"] == "1.1.0" and s["phase"] == "serving")
    installed = Path(state["active"]["path"])
    raw = json.loads(installed.read_text())
    raw["threshold"] = 1e9
    installed.write_text(json.dumps(raw))
    capture = run_capture(_flow(store.root, Gates()))
    assert {s["model"] for s in capture.outputs["scored"]} == {OLD}  # the last good version
