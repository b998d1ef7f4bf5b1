"""Shadow, then switch; health watch and rollback: the gateway's slot on the real runtime and real features.

Rows are the shipped recording's 1,833 windows in time order; the first fault (pump-2) starts at row ~600.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeflow.ota.gates import Gates
from edgeflow.ota.slot import ModelSlot, Runner
from edgeflow.ota.store import ModelStore

from .ota_support import MODEL_DIR, feed, make_slot, release

OLD = "pump_ae@1.0.0+5c8ff791/int8"


def _deploy(store: ModelStore, manifest: Path) -> None:
    from edgeflow.model.signing import TrustedKeys

    installed = store.install(manifest.parent, TrustedKeys.load(MODEL_DIR.parent / "keys"))
    store.offer(installed)


def _run(slot: ModelSlot, x: np.ndarray, *, deploy_at: int, deploy: Any, batch: int = 8) -> list[tuple[int, str, bool]]:
    """Score all rows; hand over the update after row *deploy_at* and let the background load it before going on."""
    runner = Runner()
    rows = feed(slot, x[:deploy_at], batch, runner)
    deploy()
    slot.poll_now()
    assert slot.flush()
    rows += feed(slot, x[deploy_at:], batch, runner, first=deploy_at)
    assert slot.flush()
    return rows


def _alone(x: np.ndarray) -> np.ndarray:
    """Flags of the shipped model scoring alone (what a gateway without updates emits)."""
    slot, _ = make_slot()
    return np.array([f for _, _, f in feed(slot, x)])


def test_a_good_candidate_shadows_then_takes_over_between_two_batches(tmp_path: Path, recorded: Any) -> None:
    store = ModelStore(tmp_path / "store")
    slot, stats = make_slot(store=store, gates=Gates(windows=400, health_windows=400))
    rows = _run(slot, recorded.x, deploy_at=100, deploy=lambda: _deploy(store, release(tmp_path / "v", "1.1.0")))
    assert [r[0] for r in rows] == list(range(len(recorded.x)))  # every window scored, once, in order
    models = [r[1] for r in rows]
    switch = models.index("pump_ae@1.1.0/int8")
    assert set(models[:switch]) == {OLD} and set(models[switch:]) == {"pump_ae@1.1.0/int8"}
    assert (switch - 100) % 8 == 0 and switch >= 100 + 400  # at a batch boundary, after the 400 shadow windows
    assert np.array_equal([r[2] for r in rows], _alone(recorded.x))  # same model content: same flags throughout
    assert [e["event"] for e in slot.history] == ["shadowing", "promoted", "healthy"]
    promoted = slot.history[1]
    assert promoted["figures"]["agreement"] == 1.0 and promoted["figures"]["errors"] == 0
    assert stats.counts["infer.swaps"] == 1 and "infer.swap_rejected" not in stats.counts
    state = store.state()
    assert state["active"]["model"] == "pump_ae@1.1.0/int8" and state["last_good"]["model"] == OLD  # to fall back on
    assert state["phase"] == "serving" and state["seq"] == 1


def test_the_1e9_threshold_model_properly_signed_fails_the_shadow_gates(tmp_path: Path, recorded: Any) -> None:
    """Issue 9's attack, now with a valid signature: it shadows over pump-2's fault and never emits a flag."""
    store = ModelStore(tmp_path / "store")
    slot, stats = make_slot(store=store, gates=Gates(windows=800))
    blind = release(tmp_path / "v", "1.1.0", threshold=1e9)
    rows = _run(slot, recorded.x, deploy_at=100, deploy=lambda: _deploy(store, blind))
    assert {r[1] for r in rows} == {OLD}
    assert np.array_equal([r[2] for r in rows], _alone(recorded.x))  # outputs untouched by the shadow
    (rejected,) = [e for e in slot.history if e["event"] == "rejected"]
    assert "shadow gates failed: flags agree on" in rejected["reason"]
    assert rejected["figures"]["anomaly_rate"] == 0.0 and rejected["figures"]["reference_rate"] > 0
    assert stats.counts["infer.swap_rejected"] == 1
    assert any(why.startswith("shadow gates failed") for why in store.state()["rejected"].values())


def test_a_false_alarm_model_fails_on_its_anomaly_rate(tmp_path: Path, recorded: Any) -> None:
    store = ModelStore(tmp_path / "store")
    slot, _ = make_slot(store=store, gates=Gates(windows=300, min_agreement=0.5, max_rate_diff=0.02))
    noisy = release(tmp_path / "v", "1.1.0", threshold=0.004)
    _run(slot, recorded.x[:500], deploy_at=50, deploy=lambda: _deploy(store, noisy))
    (rejected,) = [e for e in slot.history if e["event"] == "rejected"]
    assert "anomaly rate" in rejected["reason"] and "allowed difference 2.0 points" in rejected["reason"]


def test_a_signed_model_that_crashes_on_load_is_rejected(tmp_path: Path, recorded: Any) -> None:
    def garbage(folder: Path) -> None:
        (folder / "model_int8.tflite").write_bytes(b"TFL3" + b"\x07" * 4000)

    store = ModelStore(tmp_path / "store")
    slot, _ = make_slot(store=store, gates=Gates(windows=100))
    broken = release(tmp_path / "v", "1.1.0", files=garbage)
    rows = _run(slot, recorded.x[:200], deploy_at=50, deploy=lambda: _deploy(store, broken))
    assert {r[1] for r in rows} == {OLD} and len(rows) == 200
    (rejected,) = [e for e in slot.history if e["event"] == "rejected"]
    assert "not a valid TFLite model" in rejected["reason"]


def test_a_breach_after_promotion_rolls_back_to_the_last_good_version(tmp_path: Path, recorded: Any) -> None:
    """Shadowed on healthy windows only, the blind model passes; the health watch catches it at pump-2's fault."""
    store = ModelStore(tmp_path / "store")
    slot, stats = make_slot(store=store, gates=Gates(windows=200, health_windows=1000))
    blind = release(tmp_path / "v", "1.1.0", threshold=1e9)
    rows = _run(slot, recorded.x, deploy_at=50, deploy=lambda: _deploy(store, blind))
    assert [r[0] for r in rows] == list(range(len(recorded.x)))
    assert [e["event"] for e in slot.history] == ["shadowing", "promoted", "rolled_back"]
    rollback = slot.history[-1]
    assert "health gates failed: flags agree on" in rollback["reason"] and rollback["active"] == OLD
    models = [r[1] for r in rows]
    back = len(models) - models[::-1].index("pump_ae@1.1.0/int8")
    assert 600 < back < 700  # within pump-2's fault: ~20 disagreements allowed in 1,000 windows
    assert set(models[back:]) == {OLD}
    flags = np.array([r[2] for r in rows])
    faulty = recorded.y == 1
    assert flags[back:][faulty[back:]].all()  # every later fault window flagged again (pump-2's rest, 3, 4)
    assert stats.counts["infer.rollbacks"] == 1 and stats.counts["infer.swaps"] == 1
    state = store.state()
    assert state["active"]["model"] == OLD and state["phase"] == "serving"
    assert any(why.startswith("rolled back: health gates failed") for why in state["rejected"].values())
    assert slot.notes[-1][0].startswith(f"model rolled back from pump_ae@1.1.0/int8 to {OLD}: health gates failed")


def test_a_model_failing_after_promotion_is_replaced_by_the_last_good_one_within_the_batch(
    tmp_path: Path, recorded: Any
) -> None:
    """The last good version keeps scoring during the watch, so a batch the new one fails on is not lost."""
    store = ModelStore(tmp_path / "store")
    slot, stats = make_slot(store=store, gates=Gates(windows=16, health_windows=400))
    _run(slot, recorded.x[:48], deploy_at=8, deploy=lambda: _deploy(store, release(tmp_path / "v", "1.1.0")))
    assert slot.state.phase == "watch"
    new = slot.state.active

    class DeadInterpreter:
        """An interpreter that dies mid-run (LiteRT cannot be made to fail on demand on valid input)."""

        def score(self, batch: np.ndarray) -> np.ndarray:
            msg = "interpreter died"
            raise RuntimeError(msg)

    runner = Runner()
    runner._copies[id(new)] = (new, DeadInterpreter())  # this thread's copy of the new version fails from now on
    rows = feed(slot, recorded.x[48:64], 8, runner, first=48)
    assert [r[1] for r in rows] == [OLD] * 16  # both batches scored by the last good version
    assert slot.history[-1]["event"] == "rolled_back"
    assert (
        "1 windows failed" not in slot.history[-1]["reason"]
        and "RuntimeError: interpreter died" in (slot.history[-1]["reason"])
    )
    assert stats.counts["infer.rollbacks"] == 1


def test_a_rollback_order_leaves_the_version_and_it_never_returns(tmp_path: Path, recorded: Any) -> None:
    store = ModelStore(tmp_path / "store")
    slot, _ = make_slot(store=store, gates=Gates(windows=16, health_windows=0))
    v11 = release(tmp_path / "v", "1.1.0")
    _run(slot, recorded.x[:64], deploy_at=8, deploy=lambda: _deploy(store, v11))
    assert slot.state.active.info.version == "1.1.0" and slot.history[-1]["event"] == "promoted"
    store.request_rollback("1.1.0", "canary gates failed elsewhere", rollout="r1")
    slot.poll_now()
    assert slot.flush()
    assert slot.state.active.model_id == OLD and slot.history[-1]["event"] == "rolled_back"
    assert slot.history[-1]["reason"] == "rollback ordered: canary gates failed elsewhere"
    store.offer(store.install(v11.parent, None))  # offered again: refused, it was withdrawn
    slot.poll_now()
    assert slot.flush()
    assert slot.history[-1]["event"] == "rejected" and "refused before" in slot.history[-1]["reason"]


@pytest.mark.parametrize("phase", ["shadow", "queued"])
def test_a_newer_candidate_supersedes_or_waits(tmp_path: Path, recorded: Any, phase: str) -> None:
    store = ModelStore(tmp_path / "store")
    slot, _ = make_slot(store=store, gates=Gates(windows=64, health_windows=64 if phase == "queued" else 0))
    runner = Runner()
    _deploy(store, release(tmp_path / "a", "1.1.0"))
    slot.poll_now()
    assert slot.flush()
    if phase == "queued":
        feed(slot, recorded.x[:72], 8, runner)  # 1.1.0 promoted, now in its health watch
    _deploy(store, release(tmp_path / "b", "1.2.0"))
    slot.poll_now()
    assert slot.flush()
    feed(slot, recorded.x[72:400], 8, runner)
    assert slot.flush()
    events = [e["event"] for e in slot.history]
    if phase == "shadow":
        assert events[:3] == ["shadowing", "superseded", "shadowing"]
    else:
        assert "queued" in events and events[-1] in ("promoted", "healthy")
    assert slot.state.active.info.version == "1.2.0"
    assert json.loads(store.state_path.read_text())["active"]["version"] == "1.2.0"
