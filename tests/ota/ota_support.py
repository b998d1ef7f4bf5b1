"""Helpers for the OTA tests: signed releases of the shipped model, tampered copies, a slot fed with real features."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgeflow.metrics import FlowStats
from edgeflow.model import LiteRTModelHandler
from edgeflow.model.signing import TrustedKeys, load_private_key
from edgeflow.model.verify import sign_model
from edgeflow.ota.gates import Gates
from edgeflow.ota.slot import ModelSlot, Runner, SlotState, Version
from edgeflow.ota.store import ModelStore

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "pump_ae"
KEYS = ROOT / "models" / "keys"
TEST_KEY = KEYS / "TEST-ONLY-ed25519.key"
RECORDING = ROOT / "examples" / "data" / "pump_vibration.csv"

__all__ = [
    "KEYS",
    "MODEL_DIR",
    "RECORDING",
    "ROOT",
    "TEST_KEY",
    "feed",
    "make_slot",
    "release",
    "trusted",
]


def trusted() -> TrustedKeys:
    return TrustedKeys.load(KEYS)


def release(
    folder: Path,
    version: str,
    *,
    threshold: float | None = None,
    key: Any = TEST_KEY,
    expires: datetime | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
    files: Callable[[Path], None] | None = None,
) -> Path:
    """A copy of the shipped model as *version* (optionally another threshold), signed with *key*; its manifest."""
    shutil.copytree(MODEL_DIR, folder)
    manifest = folder / "manifest.json"
    raw = json.loads(manifest.read_text())
    raw["version"] = version
    if threshold is not None:
        raw["threshold"] = threshold
        for variant in raw["variants"].values():
            variant["threshold"] = threshold
    if edit is not None:
        edit(raw)
    manifest.write_text(json.dumps(raw, indent=2))
    if files is not None:
        files(folder)
    private = load_private_key(key) if isinstance(key, (str, Path)) else key
    sign_model(manifest, private, key_name=Path(key).stem if isinstance(key, (str, Path)) else "other",
               expires=expires, update_hashes=True)  # fmt: skip
    return manifest


def load_version(path: Path, check_expiry: bool = True) -> Version:
    handler = LiteRTModelHandler(path, trusted_keys=trusted(), check_expiry=check_expiry)
    info = handler.load_model()
    assert info.threshold is not None
    return Version(handler, info, info.threshold, path)


def make_slot(
    store: ModelStore | None = None, gates: Gates | None = None, active: Path | None = None, **kwargs: Any
) -> tuple[ModelSlot, FlowStats]:
    """A slot on the shipped model (or *active*), loading updates like eo.infer does, with its own stats."""
    stats = FlowStats()
    initial = load_version(active or MODEL_DIR / "manifest.json")
    slot = ModelSlot("model", SlotState(initial), load=load_version, gates=gates, stats=stats, store=store,
                     **kwargs)  # fmt: skip
    return slot, stats


def feed(
    slot: ModelSlot, x: np.ndarray, batch: int = 8, runner: Runner | None = None, first: int = 0
) -> list[tuple[int, str, bool]]:
    """Score *x* batch by batch; return (row number from *first*, model id, flag) for every row, in order."""
    runner = runner or Runner()
    out: list[tuple[int, str, bool]] = []
    for start in range(0, len(x), batch):
        outcome = slot.score(runner, x[start : start + batch])
        out += [(first + start + i, outcome.version.model_id, bool(f)) for i, f in enumerate(outcome.flags)]
    return out
