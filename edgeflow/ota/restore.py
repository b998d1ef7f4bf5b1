"""Where a restarted gateway comes back: the store's active version, else its last good one, else the shipped one.

Versions recorded in the store are loaded again and must verify (signature, files)
and have the content digest recorded when they were accepted; a version the store
lists as refused is never loaded. When the flow stopped during a health watch, the
watch starts again with the last good version beside the active one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeflow.model.errors import ModelLoadError
from edgeflow.ota.gates import Gates, GateWatch
from edgeflow.ota.slot import Loader, SlotState, Version
from edgeflow.ota.store import ModelStore

__all__ = ["Restored", "restore"]


@dataclass(frozen=True)
class Restored:
    """What a slot starts from (see :class:`~edgeflow.ota.slot.ModelSlot`'s arguments)."""

    initial: SlotState
    last_good: Version | None
    seq: int = 0
    rejected: dict[str, str] = field(default_factory=dict)


def restore(
    store: ModelStore | None,
    load: Loader,
    shipped: Callable[[], Version],
    gates: Gates | None,
    *,
    say: Callable[[str], None] | None = None,
) -> Restored:
    """Pick the versions a slot starts on; *shipped* loads the flow's own model when the store offers none."""
    say = say or (lambda _line: None)
    state: dict[str, Any] = {}
    if store is not None:
        try:
            state = store.state()
        except ModelLoadError as exc:
            say(f"{exc}; starting on the flow's own model")
    rejected = dict(state.get("rejected", {}))
    kept: dict[str, Version] = {}
    for key in ("active", "last_good"):
        entry = state.get(key)
        if not isinstance(entry, dict) or entry.get("digest") in rejected:
            continue
        try:
            version = load(Path(str(entry["path"])), False)  # accepted before: its signature may have expired since
        except (ModelLoadError, KeyError) as exc:
            say(f"the store's {key} version cannot be used: {exc}")
            continue
        if version.info.digest != entry.get("digest"):
            say(f"the store's {key} version {str(entry.get('path'))!r} changed on disk since it was accepted")
            continue
        kept[key] = version
    if "active" in kept:
        active = kept["active"]
    elif "last_good" in kept:
        active = kept["last_good"]
        say(f"coming back on the last good version {active.model_id}")
    else:
        active = shipped()
    last_good = kept.get("last_good")
    if last_good is not None and last_good.info.digest == active.info.digest:
        last_good = None
    initial = SlotState(active)
    if state.get("phase") == "watch" and last_good is not None and gates is not None and gates.health_windows:
        initial = SlotState(active, last_good, "watch", GateWatch(gates, gates.health_windows))
        say(f"resuming the health watch of {active.model_id} (last good {last_good.model_id})")
    return Restored(initial, last_good, int(state.get("seq", 0) or 0), rejected)
