"""Plant telemetry: slow sensors (5-minute and hourly) -> windows -> features -> seasonal baselines -> summaries.

The 5-minute sensors are cut into 2-hour windows every 30 minutes, the hourly sensor into 6-hour
windows every hour (``max_gap_s`` follows ``rate_hz``). Each detector learns a time-of-week (or
time-of-day) profile online in its first period, follows drift with the median of its recent
normal windows, never learns what it flags, and needs 2 of 3 windows to raise a flag. A new
level of the mean that lasts a day (a sensor recalibrated in maintenance) is adopted as the new
normal; a change in noise or spread never is. The outdoor sensor's level moves with the weather,
so only its spread within 6 hours drives its score. Run from the project root::

    edgeflow run flows/telemetry.py
    edgeflow eval flows/telemetry.py --labels examples/data/telemetry.labels.json
"""

from __future__ import annotations

import edgeflow.operators as eo
from edgeflow import Flow


def make_flow(
    recording: str = "examples/data/telemetry.csv.gz",
    hourly: str = "examples/data/telemetry_hourly.csv.gz",
    out: str = "out/telemetry.summary.jsonl",
) -> Flow:
    """Build the telemetry flow over the 5-minute *recording* and the *hourly* one."""
    flow = Flow("telemetry", dead_letter_path="out/telemetry.dead_letters.jsonl")

    five = eo.replay("five_min", flow, recording)
    windows = eo.window("win", five, rate_hz=1 / 300, size=24, hop=6)
    feats = eo.features("feat", windows, ["mean", "std", "ptp"])
    scores = eo.seasonal_detector(
        "detect", feats, period="week", threshold=6.0, history=96, persistence=(2, 3),
        relevel_after=48, relevel_features=["mean"],
    )  # fmt: skip
    eo.summarize("summary", scores, every_s=6 * 3600, sink=eo.jsonl(out))

    outdoor = eo.replay("hourly", flow, hourly, time_column="time", tz="Europe/Berlin", sensor="ambient-1h")
    windows_h = eo.window("win_h", outdoor, rate_hz=1 / 3600, size=6, hop=1)
    feats_h = eo.features("feat_h", windows_h, ["mean", "std", "ptp"])
    scores_h = eo.seasonal_detector(
        "detect_h", feats_h, features=["std", "ptp"], period="day", threshold=5.0, history=168, persistence=(2, 3)
    )
    eo.summarize("summary_h", scores_h, every_s=6 * 3600, sink=eo.jsonl(out.replace(".jsonl", ".hourly.jsonl")))
    return flow


flow = make_flow()
