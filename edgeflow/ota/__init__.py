"""Over-the-air model updates a fleet can trust: the gateway's model store, the slot, gates, and the MQTT channel.

One concept per module:

* :mod:`~edgeflow.ota.gates`: :class:`Gates`, what a new version must show before and after promotion;
* :mod:`~edgeflow.ota.store`: :class:`ModelStore`, installed versions, requests, state and events on a gateway;
* :mod:`~edgeflow.ota.slot`: :class:`ModelSlot`, shadow, atomic switch, health watch and rollback inside a flow.

Signing and verifying models is :mod:`edgeflow.model.signing` and :mod:`edgeflow.model.verify`.
"""

from __future__ import annotations

from edgeflow.ota.gates import Gates, GateWatch, Verdict
from edgeflow.ota.slot import ModelSlot, Outcome, Runner, SlotState, Version
from edgeflow.ota.store import ModelStore

__all__ = ["GateWatch", "Gates", "ModelSlot", "ModelStore", "Outcome", "Runner", "SlotState", "Verdict", "Version"]
