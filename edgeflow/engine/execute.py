"""Run a compiled flow on bytewax, in this process or as one process of a cluster."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main

from edgeflow.connectors import Sink
from edgeflow.context import RunContext
from edgeflow.engine.dataflow import build_dataflow
from edgeflow.engine.shards import SHARDS, Shards
from edgeflow.errors import EdgeflowError

try:
    import fcntl
except ImportError:  # Windows has no fcntl: the processes of a cluster there do not take turns
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from edgeflow.compiler import CompiledFlow

__all__ = ["execute", "shards_of_store"]

_UNKNOWN_PARTITION = "is not in this worker's routing map"
"""What bytewax 0.21 says when a recovery store holds a partition the source no longer lists."""
SHARDS_FILE = "edgeflow-shards"
"""The file in a recovery store that says how many shards its keyed state was written in."""


def execute(
    compiled: CompiledFlow,
    run: RunContext,
    *,
    workers: int = 1,
    process_id: int | None = None,
    addresses: Sequence[str] | None = None,
    sinks: Mapping[str, Sink] | None = None,
) -> None:
    """Run *compiled* until its sources end (blocking); several *workers* share this process."""
    engine_workers = workers * (len(addresses) if addresses else 1)
    if run.recovery_dir is None:
        shards = Shards.for_workers(engine_workers)
        recovery = None
    else:
        shards, recovery = _open_store(run.recovery_dir, engine_workers)
    dataflow = build_dataflow(compiled, run, sinks, shards=shards)
    try:
        cli_main(
            dataflow,
            workers_per_process=workers,
            process_id=process_id,
            addresses=list(addresses) if addresses else None,
            epoch_interval=timedelta(seconds=run.snapshot_every_s) if recovery is not None else None,
            recovery_config=recovery,
        )
    except RuntimeError as exc:
        if run.recovery_dir is None or _UNKNOWN_PARTITION not in str(exc):
            raise
        key = re.search(r"Key StateKey\(\"?(.*?)\"?\) is not", str(exc))
        partition = key.group(1) if key else "named in the engine's error"
        msg = (
            f"the recovery store {run.recovery_dir} holds the read position of a source partition this run does not "
            f"have ({partition}): a source's partitions are named by its path "
            "and, for one split among workers (e.g. a replay split by sensor), by the number of workers "
            f"({run.workers} in this run); resume with the same source and worker count, or start from an empty "
            "recovery_dir"
        )
        raise EdgeflowError(msg) from exc


def shards_of_store(folder: Path, workers: int) -> Shards:
    """Return the shards of the recovery store in *folder*: those it was written with, or new ones for *workers*.

    A store keeps its shard count for good, as its snapshots are kept per shard: a store begun by one worker
    holds every sensor in one shard, and a later run with more workers resumes it so (one worker then holds
    the keyed state). A store without the file was written before it existed, with :data:`SHARDS` shards.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> shards_of_store(folder, 1).count, shards_of_store(folder, 4).count  # the first run decides
    (1, 1)
    """
    mark = folder / SHARDS_FILE
    try:
        text = mark.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        if any(folder.glob("part-*.sqlite3")):
            return Shards(SHARDS)
        shards = Shards.for_workers(workers)
        folder.mkdir(parents=True, exist_ok=True)
        draft = mark.with_suffix(f".{os.getpid()}.tmp")
        draft.write_text(f"{shards.count}\n", encoding="utf-8")
        draft.replace(mark)  # whole or not at all, and before the store has any snapshot
        return shards
    if text not in ("1", str(SHARDS)):
        msg = f"the recovery store's {mark} says {text!r}, not a shard count (1 or {SHARDS}): restore it or start anew"
        raise EdgeflowError(msg)
    return Shards(int(text))


def _open_store(folder: Path, workers: int) -> tuple[Shards, RecoveryConfig]:
    """Return the shards and the snapshot store in *folder*, created on first use (one SQLite partition).

    The processes of a cluster share the folder: they take turns (a lock file), so one creates the store and the
    others find it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".edgeflow-lock", "a", encoding="utf-8") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        shards = shards_of_store(folder, workers)
        if not any(folder.glob("part-*.sqlite3")):
            init_db_dir(folder, 1)
    return shards, RecoveryConfig(folder)
