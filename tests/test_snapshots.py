"""Keyed state is copied for a snapshot only when the run has a recovery store to write it to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.runtime import run
from edgeflow.testing import write_csv_recording

COPIES: list[int] = []


class CountedState:
    """A sensor's running count whose copies (one per snapshot) are counted."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, item: Any) -> None:
        self.n += 1

    def __deepcopy__(self, memo: dict[int, Any]) -> CountedState:
        COPIES.append(self.n)
        twin = CountedState()
        twin.n = self.n
        return twin


def _copies(tmp_path: Path, recovery: Path | None) -> int:
    rows = [(f"2026-01-01T00:00:{i // 100:02d}.{i % 100:02d}0Z", f"s{i % 3}", float(i)) for i in range(1_200)]
    rec = write_csv_recording(tmp_path / "r.csv", rows)
    flow = Flow("snaps", snapshot_every_s=0.5)
    s = eo.replay("samples", flow, rec)
    counted = eo.stateful("count", eo.window("win", s, rate_hz=100, size=20), CountedState)
    eo.output("out", counted, eo.jsonl(tmp_path / "out.jsonl"))
    COPIES.clear()
    run(flow, handle_signals=False, recovery_dir=recovery)
    return len(COPIES)


def test_a_run_without_recovery_copies_no_state(tmp_path: Path) -> None:
    assert _copies(tmp_path, None) == 0


def test_a_run_with_recovery_snapshots_every_sensor(tmp_path: Path) -> None:
    assert _copies(tmp_path, tmp_path / "rec") >= 3
