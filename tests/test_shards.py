"""Keyed state in shards: one engine key per shard, each sensor's state still on its own."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.engine.execute import SHARDS_FILE, shards_of_store
from edgeflow.engine.shards import SHARDS, SensorBank, Shards
from edgeflow.errors import EdgeflowError
from edgeflow.records import Sample
from edgeflow.testing import run_capture, write_csv_recording


class Counter:
    """One sensor's count of items; its snapshots are counted."""

    snapshots = 0

    def __init__(self, resume: int | None) -> None:
        self.n = resume or 0

    def on_batch(self, items: list[Any]) -> list[Any]:
        out = []
        for item in items:
            self.n += 1
            out.append((item.sensor, self.n))
        return out

    def on_eof(self) -> list[Any]:
        return [("eof", self.n)]

    def snapshot(self) -> int:
        Counter.snapshots += 1
        return self.n


class Tally:
    """A River-style state (``update``) that keeps the object it resumed from and changes it."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, item: Any) -> int:
        self.n += 1
        return self.n


def _sample(sensor: str) -> Sample:
    return Sample(1.0, sensor, (1.0,), 8, 0)


def test_route_is_the_same_in_every_process_whatever_the_hash_seed() -> None:
    names = [f"pump-{i}" for i in range(50)]
    route = Shards(SHARDS).route
    code = "import sys; from edgeflow.engine.shards import Shards, SHARDS; r = Shards(SHARDS).route; "
    code += "print([r(n) for n in sys.argv[1:]])"
    seen = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", code, *names], env=env, capture_output=True, text=True, check=True)
        seen.add(done.stdout)
    assert seen == {f"{[route(n) for n in names]}\n"}
    assert len({route(n) for n in names}) > SHARDS // 4  # spread, not all in one shard


def test_one_worker_keeps_every_sensor_in_one_shard_and_several_workers_spread_them() -> None:
    one, many = Shards.for_workers(1), Shards.for_workers(2)
    names = [f"pump-{i}" for i in range(200)]
    assert (one.count, many.count) == (1, SHARDS)
    assert len({one.route(n) for n in names}) == 1
    assert len({many.route(n) for n in names}) == SHARDS
    with pytest.raises(ValueError, match="shards: 3"):
        Shards(3)


def test_a_recovery_store_keeps_the_shard_count_it_was_begun_with(tmp_path: Path) -> None:
    first = tmp_path / "one"
    assert shards_of_store(first, 1).count == 1
    assert (first / SHARDS_FILE).read_text() == "1\n"
    assert shards_of_store(first, 2).count == 1  # resumed by two workers: still the store's one shard
    assert shards_of_store(tmp_path / "two", 2).count == SHARDS
    old = tmp_path / "old"  # written before stores kept their count: every store had SHARDS shards
    old.mkdir()
    (old / "part-0.sqlite3").write_bytes(b"")
    assert shards_of_store(old, 1).count == SHARDS
    assert not (old / SHARDS_FILE).exists()
    (first / SHARDS_FILE).write_text("banana")
    with pytest.raises(EdgeflowError, match=f"{SHARDS_FILE} says 'banana', not a shard count"):
        shards_of_store(first, 1)


def test_a_bank_hands_each_sensor_only_its_own_items_in_order() -> None:
    bank = SensorBank(Counter, None, keep=False)
    out, _ = bank.on_batch([_sample("a"), _sample("b"), _sample("a"), _sample("a")])
    assert sorted(out) == [("a", 1), ("a", 2), ("a", 3), ("b", 1)]
    assert [r for r in out if r[0] == "a"] == [("a", 1), ("a", 2), ("a", 3)]
    assert sorted(bank.on_eof()[0]) == [("eof", 1), ("eof", 3)]


def test_a_bank_resumes_every_sensor_and_snapshots_only_those_touched_since() -> None:
    bank = SensorBank(Counter, None)
    bank.on_batch([_sample("a"), _sample("b"), _sample("b")])
    Counter.snapshots = 0
    first = bank.snapshot()
    assert first == (SHARDS, {"a": 1, "b": 2}) and Counter.snapshots == 2
    bank.on_batch([_sample("b")])
    assert bank.snapshot() == (SHARDS, {"a": 1, "b": 3}) and Counter.snapshots == 3  # "a" not asked again
    resumed = SensorBank(Counter, bank.snapshot())
    assert {s: state.n for s, state in resumed.states.items()} == {"a": 1, "b": 3}  # type: ignore[attr-defined]
    assert sorted(resumed.on_eof()[0]) == [("eof", 1), ("eof", 3)]  # a resumed sensor with no new item ends too


def test_a_bank_without_a_recovery_store_copies_nothing() -> None:
    bank = SensorBank(Counter, None, keep=False)
    bank.on_batch([_sample("a")])
    Counter.snapshots = 0
    assert bank.snapshot() is None and Counter.snapshots == 0


def test_a_store_written_with_another_shard_count_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match=f"written with 8 shards and this run routes {SHARDS}"):
        SensorBank(Counter, (8, {"a": 1}))


def test_a_flow_over_many_sensors_gives_each_sensor_what_it_would_get_alone(tmp_path: Path) -> None:
    # 300 sensors share 64 shards: each sensor's windows must be exactly those of a flow that reads it alone
    rows = [
        (f"2026-01-01T00:00:{i // 300 // 10:02d}.{i // 300 % 10}00Z", f"s{i % 300}", float(i % 7)) for i in range(9_000)
    ]
    everyone = write_csv_recording(tmp_path / "all.csv", rows)

    def windows(path: Path) -> dict[str, list[tuple[str, list[float]]]]:
        flow = Flow("shards")
        w = eo.window("win", eo.replay("samples", flow, path), rate_hz=10, size=8, hop=4, max_sensors=1_000)
        eo.output("out", eo.features("feat", w, ["mean", "std", "min", "max", "p50"]), eo.jsonl(tmp_path / "o"))
        out: dict[str, list[tuple[str, list[float]]]] = {}
        for record in run_capture(flow).only():
            out.setdefault(record["sensor"], []).append((record["end"], record["features"]))
        return out

    together = windows(everyone)
    assert len(together) == 300 and len({Shards(SHARDS).route(s) for s in together}) == SHARDS
    for sensor in ("s0", "s17", "s299"):
        alone = write_csv_recording(tmp_path / f"{sensor}.csv", [r for r in rows if r[1] == sensor])
        assert windows(alone)[sensor] == together[sensor]


def test_a_resumed_sensor_not_yet_touched_keeps_its_snapshot_when_it_changes_later() -> None:
    # bytewax may pickle an epoch's snapshot after the next epoch's batch ran: what it returned must not change
    from edgeflow.operators.stateful import StatefulLogic

    new = lambda resume: StatefulLogic("count", Tally, resume)  # noqa: E731
    first = SensorBank(new, None)
    first.on_batch([_sample("x"), _sample("x"), _sample("y")])
    bank = SensorBank(new, pickle.loads(pickle.dumps(first.snapshot())))  # restarted: x resumed, untouched
    bank.on_batch([_sample("y")])
    epoch = bank.snapshot()
    bank.on_batch([_sample("x")] * 3)  # the next epoch, before the engine pickles the last one
    stored = pickle.loads(pickle.dumps(epoch))
    assert (stored[1]["x"].n, stored[1]["y"].n) == (2, 2)


def test_a_store_from_before_shards_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="not written by this edgeflow's shards"):
        SensorBank(Counter, {"n": 3})


def test_a_timed_bank_wakes_only_the_sensors_that_are_due() -> None:
    from datetime import datetime, timedelta, timezone

    from edgeflow.engine.shards import TimedSensorBank

    now = datetime.now(timezone.utc)

    class Waiting(Counter):
        def __init__(self, resume: int | None) -> None:
            super().__init__(resume)
            self.due: datetime | None = None
            self.woken = 0

        def notify_at(self) -> datetime | None:
            return self.due

        def on_notify(self) -> list[Any]:
            self.woken += 1
            self.due = None
            return [("woke", self.n)]

    bank = TimedSensorBank(Waiting, None, keep=False)
    bank.on_batch([_sample("a"), _sample("b"), _sample("c")])
    a, b, c = (bank.states[s] for s in "abc")
    a.due, b.due = now - timedelta(seconds=1), now + timedelta(hours=1)  # type: ignore[attr-defined]
    assert bank.notify_at() == a.due  # type: ignore[attr-defined]
    assert bank.on_notify()[0] == [("woke", 1)]
    assert (a.woken, b.woken, c.woken) == (1, 0, 0)  # type: ignore[attr-defined]
    assert bank.notify_at() == b.due  # type: ignore[attr-defined]


@pytest.mark.parametrize("workers", [2, 4])
def test_bytewax_spreads_the_shards_evenly_over_workers(workers: int) -> None:
    # the engine's own routing of our shard keys: each worker gets the same number of shards
    import threading
    from collections import Counter as Counts

    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSource, cluster_main

    from edgeflow.engine.shards import _KEYS

    seen: Counts[int] = Counts()
    lock = threading.Lock()

    class Note(op.StatefulBatchLogic[str, str, None]):
        def on_batch(self, values: list[str]) -> tuple[list[str], bool]:
            with lock:
                seen[threading.get_ident()] += len(values)
            return [], op.StatefulBatchLogic.RETAIN

        def snapshot(self) -> None:
            return None

    df = Dataflow("shards")
    keyed = op.stateful_batch("note", op.input("in", df, TestingSource([(k, k) for k in _KEYS])), lambda _r: Note())
    op.inspect("done", keyed)
    cluster_main(df, [], 0, worker_count_per_proc=workers)
    assert sorted(seen.values()) == [SHARDS // workers] * workers
