"""The resequencing step behind a shared MQTT subscription, fed by hand (no broker): order, gaps, duplicates, resume."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from edgeflow.metrics import FlowStats
from edgeflow.mqtt.resequence import Arrivals, Arrived, Resequencer, ResequenceSettings
from edgeflow.records import SampleBlock


def _msg(seq: int, ts: float | None = None, *, dup: bool = False, pub: str | None = "p", void: bool = False) -> Arrived:
    samples = [] if void else [(float(seq) if ts is None else ts, (float(seq),))]
    return Arrived("s/a", pub, seq if pub is not None else 0, dup, seq, 10, samples, void)


def _ts(out: list[Any]) -> list[float]:
    return [t for block in out if type(block) is SampleBlock for t in block.ts.tolist()]


def _feed(seq: Resequencer, *messages: Arrived) -> list[float]:
    return _ts(seq.on_batch([Arrivals("a", list(messages))]))


def test_stamped_messages_are_released_in_sequence_order_whatever_partition_they_came_through() -> None:
    stats = FlowStats()
    seq = Resequencer(ResequenceSettings("samples"), stats)
    assert _feed(seq, _msg(1), _msg(3), _msg(5)) == [1.0]
    assert _feed(seq, _msg(4)) == []
    assert _feed(seq, _msg(2), _msg(6)) == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert stats.samples_in == 6 and stats.counts["mqtt.accepted"] == 6
    assert "mqtt.lost_upstream" not in stats.counts


def test_duplicates_by_stamp_are_counted_and_dropped_held_or_released() -> None:
    stats = FlowStats()
    seq = Resequencer(ResequenceSettings("samples"), stats)
    assert _feed(seq, _msg(1), _msg(3), _msg(3, dup=True), _msg(1, dup=True), _msg(1)) == [1.0]
    assert _feed(seq, _msg(2)) == [2.0, 3.0]
    assert stats.counts["mqtt.duplicate_messages"] == 3 and stats.counts["mqtt.duplicates"] == 3
    assert stats.samples_in == 3


def test_a_gap_counts_as_lost_once_window_later_messages_came_and_a_late_one_is_handed_on() -> None:
    stats = FlowStats()
    seq = Resequencer(ResequenceSettings("samples", window=3), stats)
    assert _feed(seq, _msg(1), _msg(4), _msg(5)) == [1.0]  # 2 and 3 missing; two messages held
    assert _feed(seq, _msg(6)) == [4.0, 5.0, 6.0]  # three held: the gap is given up on
    assert stats.counts["mqtt.lost_upstream"] == 2
    assert _feed(seq, _msg(3)) == [3.0]  # came after all: on to the window step, which sees it late
    assert stats.counts["mqtt.late_messages"] == 1
    assert _feed(seq, _msg(3)) == []  # and again: now a duplicate
    assert stats.counts["mqtt.duplicate_messages"] == 1


def test_the_end_of_input_releases_everything_held_counting_the_gaps_left() -> None:
    stats = FlowStats()
    seq = Resequencer(ResequenceSettings("samples"), stats)
    assert _feed(seq, _msg(1), _msg(3), _msg(7)) == [1.0]
    assert _ts(seq.on_eof()) == [3.0, 7.0]
    assert stats.counts["mqtt.lost_upstream"] == 1 + 3


def test_a_void_message_keeps_its_number_without_samples_or_a_loss() -> None:
    """A message the partition dropped (hand-off queue full) or made a dead letter is not lost upstream."""
    stats = FlowStats()
    seq = Resequencer(ResequenceSettings("samples"), stats)
    assert _feed(seq, _msg(1), _msg(3), _msg(2, void=True)) == [1.0, 3.0]
    assert "mqtt.lost_upstream" not in stats.counts and stats.samples_in == 2


def test_a_publisher_first_seen_mid_sequence_starts_where_its_lowest_number_is() -> None:
    stats = FlowStats()
    seq = Resequencer(ResequenceSettings("samples"), stats)
    assert _feed(seq, _msg(41), _msg(40)) == []  # no baseline yet: wait for the others
    assert _ts(seq.on_eof()) == [40.0, 41.0]
    assert "mqtt.lost_upstream" not in stats.counts


def test_a_snapshot_resumes_what_was_held_and_the_numbers_seen() -> None:
    stats = FlowStats()
    seq = Resequencer(ResequenceSettings("samples"), stats)
    assert _feed(seq, _msg(1), _msg(3)) == [1.0]
    state = pickle.loads(pickle.dumps(seq.snapshot()))
    again = Resequencer(ResequenceSettings("samples"), stats, state)
    assert _feed(again, _msg(1, dup=True), _msg(2)) == [2.0, 3.0]
    assert stats.counts["mqtt.duplicate_messages"] == 1
    with pytest.raises(TypeError, match=r"step 'samples'.*ResequenceState.*Hint"):
        Resequencer(ResequenceSettings("samples"), stats, {"not": "a state"})  # type: ignore[arg-type]


def test_unstamped_samples_are_reordered_by_event_time_within_the_buffer() -> None:
    stats = FlowStats()
    seq = Resequencer(ResequenceSettings("samples", window=2), stats)
    free = [_msg(n, ts, pub=None) for n, ts in ((1, 1.0), (2, 3.0), (3, 2.0), (4, 4.0))]
    assert _feed(seq, *free) == [1.0, 2.0]  # at most two held: the oldest go on, in time order
    assert _feed(seq, _msg(5, 1.5, pub=None), _msg(6, 3.0, pub=None, dup=True)) == [1.5]
    assert stats.counts["mqtt.late_samples"] == 1  # older than one already released: the window's to judge
    assert stats.counts["mqtt.duplicates"] == 1  # a redelivery of a held sample
    assert _ts(seq.on_eof()) == [3.0, 4.0]


def test_settings_are_checked_with_a_hint() -> None:
    with pytest.raises(ValueError, match=r"step 'samples': reorder window got 0.*Hint: set reorder_window"):
        ResequenceSettings("samples", window=0)
