"""A recording split by sensor among workers: every row read once, by one partition, in file order."""

from __future__ import annotations

import importlib
import types
from pathlib import Path

import numpy as np
import pytest

from edgeflow.metrics import FlowStats
from edgeflow.operators.replay import ReplayConfig, ReplaySource
from edgeflow.recordings import RecordingReader
from edgeflow.sensor_split import owners_of_fields, share_of


def _read(path: Path, share: tuple[int, int], batch_size: int = 64) -> tuple[list[tuple[str, float]], list[str]]:
    reader = RecordingReader(path, ("v",), step_id="replay", batch_size=batch_size, share=share)
    rows: list[tuple[str, float]] = []
    dead: list[str] = []
    while True:
        chunk, letters = reader.read()
        dead += [d.reason for d in letters]
        if chunk is None:
            break
        rows += list(zip(chunk.sensors, chunk.ts.tolist(), strict=True))
    reader.close()
    return rows, dead


def _recording(tmp_path: Path, *, bad: bool) -> Path:
    lines = ["ts,sensor,v"]
    for i in range(600):
        lines.append(f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z,s{i % 7},{i}")
        if bad and i % 97 == 0:
            lines += ["not,a,row,at all", f"2026-13-01T00:00:00Z,s{i % 7},1", 'x"y,"s1"', "\xff,s2,1"]
    path = tmp_path / "r.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode() + (b"\xff\xfe,s3,1\n" if bad else b""))  # not UTF-8
    return path


@pytest.mark.parametrize("bad", [False, True])
@pytest.mark.parametrize("parts", [2, 3])
def test_partitions_read_every_row_once_each_sensor_in_order(tmp_path: Path, parts: int, bad: bool) -> None:
    path = _recording(tmp_path, bad=bad)
    whole, whole_dead = _read(path, (0, 1))
    shares = [_read(path, (i, parts)) for i in range(parts)]
    assert sorted(r for rows, _ in shares for r in rows) == sorted(whole)
    assert sorted(d for _, dead in shares for d in dead) == sorted(whole_dead)  # each dead letter once
    for index, (rows, _) in enumerate(shares):
        assert {share_of(sensor, parts) for sensor, _ in rows} <= {index}
        for sensor in {s for s, _ in rows}:  # a sensor's rows in the order of the file
            assert [t for s, t in rows if s == sensor] == [t for s, t in whole if s == sensor]
    assert bad == bool(whole_dead)


def test_the_vectorized_hash_is_the_scalar_one() -> None:
    names = ["pump-1", "é-sensor", "x", "a-much-longer-sensor-name/with/slashes", "s10000"]
    raw = "".join(names).encode()
    ends = np.cumsum([len(n.encode()) for n in names])
    starts = np.concatenate(([0], ends[:-1]))
    for parts in (2, 3, 16):
        assert owners_of_fields(np.frombuffer(raw, np.uint8), starts, ends, parts).tolist() == [
            share_of(n, parts) for n in names
        ]


def _round_robin(path: Path, sensors: int, rounds: int, *, distinct: bool = False) -> Path:
    with path.open("w") as f:
        f.write("ts,sensor,v\n")
        for i in range(sensors * rounds):
            name = f"s{i}" if distinct else f"s{i % sensors}"
            stamp = f"{i // 3_600_000:02d}:{i // 60_000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}"
            f.write(f"2026-01-01T{stamp}Z,{name},1\n")
    return path


def _batch_sizes(path: Path) -> list[int]:
    reader = RecordingReader(path, ("v",), step_id="replay", batch_size=1024, grow=True)
    sizes = []
    while (chunk := reader.read()[0]) is not None:
        sizes.append(len(chunk))
    reader.close()
    return sizes


def test_batches_grow_when_more_sensors_than_rows_come_back(tmp_path: Path) -> None:
    # 3,000 sensors in turn: no sensor repeats within a 1,024-row batch, but they come back batch after batch
    sizes = _batch_sizes(_round_robin(tmp_path / "rr.csv", 3_000, 10))
    assert sum(sizes) == 30_000
    assert sizes[:2] == [1024, 1024] and max(sizes) > 2 * 3_000  # grown to many rows per sensor


def test_a_flood_of_new_sensor_ids_does_not_grow_batches(tmp_path: Path) -> None:
    sizes = _batch_sizes(_round_robin(tmp_path / "flood.csv", 3_000, 10, distinct=True))
    assert sum(sizes) == 30_000 and max(sizes) == 1024


def test_a_paced_replay_resumed_mid_batch_skips_exactly_the_rows_handed_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10,000 sensors in turn come back batch after batch, so batches grow; a resumed reader remembers no
    # earlier batch, yet must re-read the batch being handed out exactly as it was read
    replay_module = importlib.import_module("edgeflow.operators.replay")  # the module, not eo.replay

    path = _round_robin(tmp_path / "rr.csv", 10_000, 3)  # row i is stamped i ms after the first
    clock = types.SimpleNamespace(now=0.0)
    fake = types.SimpleNamespace(monotonic=lambda: clock.now, perf_counter_ns=lambda: 0)
    monkeypatch.setattr(replay_module, "time", fake)
    cfg = ReplayConfig(path=path, speed=1.0)  # no batch_size: batches grow

    def rows(blocks: list) -> list[tuple[str, float]]:
        return [(b.sensor, t) for b in blocks for t in b.ts.tolist()]

    source = ReplaySource("samples", cfg, ("v",), FlowStats())
    part = source.open(str(path), None)
    sent = rows(part.next_batch())  # row 0 is due
    clock.now = 18.1915  # rows 0 to 18,191 are due
    while len(sent) < 18_192:
        sent += rows(part.next_batch())
    assert len(sent) == 18_192
    snapshot = part.snapshot()
    part.close()

    resumed = source.open(str(path), snapshot)
    rest: list[tuple[str, float]] = []
    while True:
        clock.now += 100.0  # the rest of the recording is due within a few polls
        try:
            rest += rows(resumed.next_batch())
        except StopIteration:
            break
    resumed.close()
    whole, _ = _read(path, (0, 1), batch_size=30_000)
    assert len(sent + rest) == len(whole) and sorted(sent + rest) == sorted(whole)  # each row once
