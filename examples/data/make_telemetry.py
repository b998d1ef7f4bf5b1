"""Generate the shipped plant-telemetry recording: weeks of slow sensors with labelled failures.

Four sensors sampled every 5 minutes (±20 s jitter, 0.5 % of samples lost, a
few dropouts of 30 minutes to 3 hours) and one hourly sensor, for ``weeks``
weeks from Monday 2026-01-05. Every signal has a daily cycle shaped by the
working day, a weekly cycle (quiet weekends), slow drift and autocorrelated
noise. Each sensor fails once, in its own way, at a time drawn from the seed::

    bearing-1   bearing temperature (°C)  gradual_rise: warms up over 1.5-2.5 days until it fails
    motor-2     winding temperature (°C)  stuck: the reading freezes for 10-20 hours
    pressure-3  line pressure (bar)       spike_burst: 15-30 spikes within 2-4 hours
    flow-4      flow rate (m3/h)          noise: noise 3-4x for 1-2 days
    ambient-1h  outdoor temperature (°C)  shield_lost: sun on the bare sensor, 5-8 °C too warm at midday
                                          for 2-3 days (hourly sensor)

motor-2 is also recalibrated during maintenance (a permanent step of -2 to -3
°C, at a time drawn from the seed): that is the new normal, not a failure, and
it is *not* labelled. The 5-minute sensors go to ``telemetry.csv.gz`` (columns
``ts,sensor,value``, UTC); the hourly sensor to ``telemetry_hourly.csv.gz``
(columns ``time,temp_c``, naive local time of Europe/Berlin, no sensor column:
replay it with ``tz="Europe/Berlin", sensor="ambient-1h"``). The labels go to
``telemetry.labels.json`` (the ``edgeflow eval`` format, plus the unlabelled
maintenance step for reference)::

    python examples/data/make_telemetry.py            # the shipped files, seed 11
    python examples/data/make_telemetry.py --seed 12  # another plant, same physics
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

__all__ = ["make_telemetry"]

START = datetime(2026, 1, 5, tzinfo=timezone.utc)  # a Monday
STEP_S = 300.0
HOUR_S, DAY_S = 3600.0, 86_400.0
LOCAL = ZoneInfo("Europe/Berlin")

# sensor: (base level, day swing, weekend drop, white noise, AR(1) noise, drift per week, decimals)
SENSORS = {
    "bearing-1": (55.0, 4.0, 3.0, 0.15, 0.12, 0.3, 2),
    "motor-2": (68.0, 6.0, 5.0, 0.2, 0.15, -0.2, 2),
    "pressure-3": (6.0, 0.35, 0.25, 0.03, 0.02, 0.01, 3),
    "flow-4": (120.0, 15.0, 12.0, 1.0, 0.8, 0.5, 1),
}
FAILURES = {
    "bearing-1": "gradual_rise",
    "motor-2": "stuck",
    "pressure-3": "spike_burst",
    "flow-4": "noise",
    "ambient-1h": "shield_lost",
}


def _working_day(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Load over the day (about 0 at night, 1 during the 06:30-18:00 shift) and the workday weight (0 at weekends)."""
    local = t + HOUR_S  # CET: no daylight saving in January and February
    hour = (local % DAY_S) / HOUR_S
    day = 0.5 - 0.5 * np.cos(2 * np.pi * (hour - 3.0) / 24.0)  # smooth, lowest at 03:00
    shift = 1 / (1 + np.exp(-(hour - 6.5) * 1.5)) - 1 / (1 + np.exp(-(hour - 18.0) * 1.5))
    into_week = ((local - START.timestamp()) % (7 * DAY_S)) / HOUR_S
    weekend = np.clip((into_week - 119.0) / 6.0, 0, 1) * np.clip((168.0 - into_week) / 6.0, 0, 1)  # Sat-Sun
    return 0.4 * day + 0.6 * shift, 1.0 - weekend


def _ar1(rng: np.random.Generator, n: int, sigma: float, phi: float = 0.97) -> np.ndarray:
    """AR(1) noise with stationary standard deviation *sigma*."""
    shocks = rng.normal(0.0, sigma * np.sqrt(1 - phi * phi), n)
    out = np.empty(n)
    level = 0.0
    for i in range(n):
        level = phi * level + shocks[i]
        out[i] = level
    return out


def _times(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    t = START.timestamp() + STEP_S * np.arange(n) + rng.uniform(-20.0, 20.0, n)
    keep = rng.random(n) > 0.005
    for _ in range(rng.integers(2, 4)):  # dropouts of 30 minutes to 3 hours
        at = rng.uniform(t[0] + DAY_S, t[-1] - DAY_S)
        keep &= ~((t >= at) & (t < at + rng.uniform(0.5, 3.0) * HOUR_S))
    return t, keep


def _days(rng: np.random.Generator, days: int) -> dict[str, float]:
    """Draw the day each failure (and the maintenance step) starts on.

    After the first 8 days (a week and a day of learning), at least 3 days before the end; motor-2's
    failure and its maintenance at least 4 days apart.
    """
    picks = {name: float(rng.uniform(8.5, days - 3.0)) for name in SENSORS}
    while abs((step := float(rng.uniform(8.5, days - 1.0))) - picks["motor-2"]) < 4.0:
        pass
    return {**picks, "maintenance": step}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(round(ts), timezone.utc).isoformat()


def _five_minute(rng: np.random.Generator, days: int) -> tuple[list[tuple[np.ndarray, str, np.ndarray]], list, dict]:
    n = int(days * DAY_S / STEP_S)
    slot = _days(rng, days)
    labels, series = [], []
    maintenance: dict[str, str] = {}
    for name, (base, swing, weekend, white, ar, drift, _digits) in SENSORS.items():
        t, keep = _times(rng, n)
        load, weekday = _working_day(t)
        weeks = (t - t[0]) / (7 * DAY_S)
        x = base + swing * load * (0.35 + 0.65 * weekday) - weekend * (1 - weekday)
        x += drift * weeks + rng.normal(0.0, white, n) + _ar1(rng, n, ar)
        at = START.timestamp() + round(slot[name] * DAY_S + rng.uniform(0, DAY_S), -1)
        kind = FAILURES[name]
        if kind == "gradual_rise":
            span = rng.uniform(1.5, 2.5) * DAY_S
            on = (t >= at) & (t < at + span)
            x[on] += rng.uniform(8.0, 12.0) * ((t[on] - at) / span) ** 2  # accelerating until it fails
            keep &= ~((t >= at + span) & (t < at + span + 6 * HOUR_S))  # off for six hours of repair
        elif kind == "stuck":
            span = rng.uniform(10.0, 20.0) * HOUR_S
            on = (t >= at) & (t < at + span)
            x[on] = x[np.flatnonzero(on)[0] - 1]
        elif kind == "spike_burst":
            span = rng.uniform(2.0, 4.0) * HOUR_S
            inside = np.flatnonzero((t >= at) & (t < at + span))
            hit = rng.choice(inside, size=min(inside.size, int(rng.integers(15, 31))), replace=False)
            x[hit] += rng.choice([-1.0, 1.0], hit.size) * rng.uniform(0.6, 1.2, hit.size)
        elif kind == "noise":
            span = rng.uniform(1.0, 2.0) * DAY_S
            on = (t >= at) & (t < at + span)
            k = rng.uniform(3.0, 4.0)
            x[on] += rng.normal(0.0, np.sqrt(k * k - 1) * white, on.sum())  # white noise k times stronger
        labels.append({"sensor": name, "kind": kind, "start": _iso(at), "end": _iso(at + span)})
        if name == "motor-2":
            step_at = START.timestamp() + slot["maintenance"] * DAY_S + rng.uniform(0, DAY_S)
            x[t >= step_at] -= rng.uniform(2.0, 3.0)
            maintenance = {"sensor": name, "kind": "recalibrated (new normal level)", "at": _iso(step_at)}
        series.append((t[keep], name, x[keep]))
    return series, labels, maintenance


def _hourly(rng: np.random.Generator, days: int) -> tuple[np.ndarray, np.ndarray, dict]:
    n = int(days * 24)
    t = START.timestamp() + HOUR_S * np.arange(n)
    local_hour = ((t + 3600.0) % DAY_S) / HOUR_S
    swing = 0.5 - 0.5 * np.cos(2 * np.pi * (local_hour - 4.0) / 24.0)  # coldest at 04:00, warmest at 16:00
    weather = _ar1(rng, n, 3.0, phi=0.985)  # fronts over days
    amplitude = 4.0 + 0.5 * _ar1(rng, n, 1.0, phi=0.99)
    x = 2.0 + weather + amplitude * swing + rng.normal(0.0, 0.3, n)
    at = START.timestamp() + rng.uniform(9.0, days - 4.0) * DAY_S
    span = rng.uniform(2.0, 3.0) * DAY_S
    on = (t >= at) & (t < at + span)
    sun = np.exp(-(((local_hour - 13.0) / 2.5) ** 2))
    x[on] += rng.uniform(5.0, 8.0) * sun[on]  # sun on the bare sensor: up to 5-8 degrees too warm at midday
    label = {"sensor": "ambient-1h", "kind": FAILURES["ambient-1h"], "start": _iso(at), "end": _iso(at + span)}
    return t, x, label


def _write_gz(path: Path, text: str) -> None:
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(text.encode())


def make_telemetry(out_dir: Path, seed: int = 11, weeks: int = 6) -> tuple[Path, Path, Path]:
    """Write the two recordings and the labels into *out_dir*; return their paths (deterministic per seed).

    >>> import tempfile
    >>> five, hourly, labels = make_telemetry(Path(tempfile.mkdtemp()), weeks=3)
    >>> [label["kind"] for label in json.loads(labels.read_text())["labels"]]
    ['gradual_rise', 'stuck', 'spike_burst', 'noise', 'shield_lost']
    """
    if weeks < 3:
        msg = f"weeks={weeks}: a recording needs at least 3 weeks (one to learn, two with failures)"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    days = 7 * weeks
    series, labels, maintenance = _five_minute(rng, days)
    t_h, x_h, label_h = _hourly(rng, days)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [(ts, name, v) for t, name, x in series for ts, v in zip(t, x, strict=True)]
    rows.sort(key=lambda row: row[0])
    digits = {name: spec[-1] for name, spec in SENSORS.items()}
    text = io.StringIO()
    text.write("ts,sensor,value\n")
    stamps = np.array([row[0] for row in rows], dtype="datetime64[s]")
    for stamp, (_ts, name, v) in zip(stamps.astype(str), rows, strict=True):
        text.write(f"{stamp}Z,{name},{v:.{digits[name]}f}\n")
    five = out_dir / "telemetry.csv.gz"
    _write_gz(five, text.getvalue())
    local = [(datetime.fromtimestamp(ts, timezone.utc).astimezone(LOCAL)).strftime("%Y-%m-%dT%H:%M:%S") for ts in t_h]
    hourly = out_dir / "telemetry_hourly.csv.gz"
    _write_gz(hourly, "time,temp_c\n" + "".join(f"{s},{v:.1f}\n" for s, v in zip(local, x_h, strict=True)))
    labels_path = out_dir / "telemetry.labels.json"
    meta = {
        "labels": [*labels, label_h],
        "unlabelled": [maintenance],
        "seed": seed,
        "start": START.isoformat(),
        "end": (START + timedelta(days=days)).isoformat(),
        "files": {"five_minute": five.name, "hourly": hourly.name},
    }
    labels_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return five, hourly, labels_path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--weeks", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    for path in make_telemetry(args.out, seed=args.seed, weeks=args.weeks):
        print(f"{path} ({path.stat().st_size:,} bytes)")
