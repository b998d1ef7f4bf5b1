"""Generate the shipped pump-vibration recording with known, injected faults.

The recording imitates four accelerometers on centrifugal pumps sampled at a
nominal 500 Hz for 60 s. Sampling is irregular (±10 % jitter, 0.5 % of samples
lost) and two sensors drop out for a while, so the windower's resampling and
gap handling are exercised. Three faults are injected at known times and
written to ``pump_vibration.faults.json`` beside the CSV::

    python examples/data/make_recording.py   # deterministic: seed 7

Signal model (acceleration in g): running speed 24.6 Hz (1x, 0.30 g), 2x
harmonic (0.10 g), vane pass at 6x (0.05 g), white noise (0.05 g).
Faults: pump-2 bearing defect (impulses at 87 Hz ringing at 210 Hz),
pump-3 imbalance (1x amplitude x5), pump-4 cavitation (broadband noise x12).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

__all__ = ["FAULTS", "GAPS", "make_recording"]

START = datetime(2026, 3, 2, 8, 0, 0, tzinfo=timezone.utc)
DURATION_S = 60.0
RATE_HZ = 500.0
SENSORS = ("pump-1", "pump-2", "pump-3", "pump-4")
RUN_HZ = 24.6
FAULTS = (
    {"sensor": "pump-2", "kind": "bearing_defect", "start_s": 20.0, "end_s": 28.0},
    {"sensor": "pump-3", "kind": "imbalance", "start_s": 40.0, "end_s": 48.0},
    {"sensor": "pump-4", "kind": "cavitation", "start_s": 50.0, "end_s": 56.0},
)
GAPS = (
    {"sensor": "pump-1", "start_s": 30.0, "end_s": 32.0},
    {"sensor": "pump-4", "start_s": 12.0, "end_s": 12.6},
)


def _sample_times(rng: np.random.Generator) -> np.ndarray:
    period = 1.0 / RATE_HZ
    steps = period * rng.uniform(0.9, 1.1, size=int(DURATION_S * RATE_HZ * 1.05))
    t = np.cumsum(steps)
    t = t[t < DURATION_S]
    keep = rng.random(t.size) > 0.005
    return t[keep]


def _signal(sensor: str, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    phase = rng.uniform(0, 2 * np.pi, size=3)
    amp_1x = np.full(t.size, 0.30)
    noise_sigma = np.full(t.size, 0.05)
    x = np.zeros(t.size)
    for fault in FAULTS:
        if fault["sensor"] != sensor:
            continue
        on = (t >= fault["start_s"]) & (t < fault["end_s"])
        if fault["kind"] == "imbalance":
            amp_1x[on] *= 5.0
        elif fault["kind"] == "cavitation":
            noise_sigma[on] *= 12.0
        elif fault["kind"] == "bearing_defect":
            since_impulse = np.mod(t - fault["start_s"], 1.0 / 87.0)
            ring = 2.0 * np.exp(-since_impulse * 400.0) * np.sin(2 * np.pi * 210.0 * since_impulse)
            x[on] += ring[on]
    x += amp_1x * np.sin(2 * np.pi * RUN_HZ * t + phase[0])
    x += 0.10 * np.sin(2 * np.pi * 2 * RUN_HZ * t + phase[1])
    x += 0.05 * np.sin(2 * np.pi * 6 * RUN_HZ * t + phase[2])
    x += rng.normal(0.0, 1.0, t.size) * noise_sigma
    return x


def make_recording(out_dir: Path, seed: int = 7) -> Path:
    """Write ``pump_vibration.csv`` and its fault list into *out_dir*.

    >>> import tempfile
    >>> path = make_recording(Path(tempfile.mkdtemp()))
    >>> path.name
    'pump_vibration.csv'
    """
    rng = np.random.default_rng(seed)
    rows: list[tuple[float, str, float]] = []
    for sensor in SENSORS:
        t = _sample_times(rng)
        for gap in GAPS:
            if gap["sensor"] == sensor:
                t = t[(t < gap["start_s"]) | (t >= gap["end_s"])]
        x = _signal(sensor, t, rng)
        rows.extend(zip(t.tolist(), [sensor] * t.size, x.tolist(), strict=True))
    rows.sort()
    csv_path = out_dir / "pump_vibration.csv"
    with csv_path.open("w", encoding="utf-8") as f:
        f.write("ts,sensor,accel\n")
        for t_s, sensor, value in rows:
            ts = (START + timedelta(seconds=t_s)).isoformat(timespec="microseconds")
            f.write(f"{ts.replace('+00:00', 'Z')},{sensor},{value:.5f}\n")
    faults = [
        {
            "sensor": fault["sensor"],
            "kind": fault["kind"],
            "start": (START + timedelta(seconds=fault["start_s"])).isoformat(),
            "end": (START + timedelta(seconds=fault["end_s"])).isoformat(),
        }
        for fault in FAULTS
    ]
    gaps = [
        {
            "sensor": gap["sensor"],
            "start": (START + timedelta(seconds=gap["start_s"])).isoformat(),
            "end": (START + timedelta(seconds=gap["end_s"])).isoformat(),
        }
        for gap in GAPS
    ]
    meta = {"rate_hz": RATE_HZ, "sensors": list(SENSORS), "faults": faults, "gaps": gaps, "seed": seed}
    (out_dir / "pump_vibration.faults.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return csv_path


if __name__ == "__main__":
    print(make_recording(Path(__file__).parent))
