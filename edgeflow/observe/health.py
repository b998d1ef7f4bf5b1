"""When a running flow is ready, and when it is unhealthy (what ``/readyz`` and ``/healthz`` answer).

Ready: the run has started (models load when the flow compiles, before that), every
source partition is open (alone; one process of a cluster cannot know which
partitions are its own), every component that declared itself
(:meth:`~edgeflow.metrics.FlowStats.set_ready`) is ready, and every MQTT source opened
in this process has subscribed (until it says so itself, read from the
``mqtt.subscriptions`` counter).

Unhealthy: a connection (:meth:`~edgeflow.metrics.FlowStats.link`, e.g. the MQTT
uplink) has been down longer than ``uplink_down_s``; a source that has not ended
handed on nothing for longer than ``stall_s``; or a step recorded a problem that
makes the run's result untrustworthy (a broker refused the login...).

>>> from edgeflow.metrics import FlowStats
>>> stats = FlowStats()
>>> not_ready(stats)
['the run has not started']
>>> stats.set_ready("run", True); not_ready(stats)
[]
>>> stats.link("uplink:out", False)
>>> unhealthy(stats, HealthConfig(uplink_down_s=0.0))  # doctest: +ELLIPSIS
['uplink:out is down for 0.0 s (limit 0 s)']
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from edgeflow.metrics import FlowStats

__all__ = ["RUN", "HealthConfig", "not_ready", "unhealthy"]

RUN = "run"
"""The readiness component the runtime sets once the flow is running."""


@dataclass(frozen=True)
class HealthConfig:
    """Limits of a healthy flow.

    >>> HealthConfig(stall_s=-1)
    Traceback (most recent call last):
    ...
    ValueError: HealthConfig: stall_s got -1: must be positive (or None to never call a source stalled)
    """

    uplink_down_s: float = 60.0
    """A connection down for longer than this makes the flow unhealthy."""
    stall_s: float | None = 60.0
    """A source that has not ended and handed on nothing for longer than this is stalled (``None``: never)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.uplink_down_s) and self.uplink_down_s >= 0):
            msg = f"HealthConfig: uplink_down_s got {self.uplink_down_s}: must be a finite number >= 0"
            raise ValueError(msg)
        if self.stall_s is not None and not (math.isfinite(self.stall_s) and self.stall_s > 0):
            msg = f"HealthConfig: stall_s got {self.stall_s}: must be positive (or None to never call a source stalled)"
            raise ValueError(msg)


def not_ready(stats: FlowStats) -> list[str]:
    """Why the flow is not ready yet; empty when it is."""
    reasons = []
    readiness = dict(stats.readiness)
    if not readiness.get(RUN, False):
        reasons.append("the run has not started")
    for name, ready in sorted(readiness.items()):
        if not ready and name != RUN:
            opening = name.startswith("open:")
            reasons.append(f"source {name[5:]!r} is not open yet" if opening else f"{name} is not ready")
    mqtt = [
        step
        for step, source in sorted(dict(stats.sources).items())
        if source.operator == "mqtt_source" and f"source:{step}" not in readiness and source.ended < source.partitions
    ]
    if mqtt:
        opened = sum(stats.sources[step].partitions for step in mqtt)
        if stats.counts.get("mqtt.subscriptions", 0) < opened:
            reasons.append(f"MQTT source {', '.join(map(repr, mqtt))} has not subscribed yet")
    return reasons


def unhealthy(stats: FlowStats, cfg: HealthConfig) -> list[str]:
    """Why the flow is unhealthy; empty when it is healthy."""
    now = time.monotonic()
    reasons = []
    for name, link in sorted(dict(stats.links).items()):
        down = now - link.since
        if not link.up and down >= cfg.uplink_down_s:
            reasons.append(f"{name} is down for {down:.1f} s (limit {cfg.uplink_down_s:g} s)")
    if cfg.stall_s is not None:
        for step, source in sorted(dict(stats.sources).items()):
            idle = now - source.last_item
            if source.ended < source.partitions and idle > cfg.stall_s:
                reasons.append(f"source {step!r} handed on nothing for {idle:.1f} s (limit {cfg.stall_s:g} s)")
    reasons += [f"problem: {text}" for text in stats.problems]
    return reasons
