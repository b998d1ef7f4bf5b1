"""Topic templates, codecs, the hand-off queue and the outbox: no broker needed."""

from __future__ import annotations

import json
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeflow.mqtt.codecs import PayloadError, make_codec
from edgeflow.mqtt.handoff import HandOff
from edgeflow.mqtt.spool import MemoryStorage, Spool, SqliteStorage
from edgeflow.mqtt.topics import TopicTemplate, check_filter


@pytest.mark.parametrize(
    ("template", "key", "topic", "expected"),
    [
        ("plant/{line}/{sensor}/accel", None, "plant/l1/pump-1/accel", "pump-1"),
        ("plant/{line}/{sensor}/accel", "{line}/{sensor}", "plant/l1/pump-1/accel", "l1/pump-1"),
        ("plant/{line}/{sensor}/accel", None, "plant/l1/pump-1/temp", None),
        ("plant/{line}/{sensor}/accel", None, "plant/l1/accel", None),
        ("plant/+/{sensor}/#", None, "plant/l1/p7/accel/x", "p7"),
        ("plant/+/{sensor}/#", None, "plant/l1/p7", "p7"),
        ("site/{sensor}", None, "site/", None),
        ("#", None, "any/topic/here", "any/topic/here"),
    ],
)
def test_template_maps_topics_to_keys(template: str, key: str | None, topic: str, expected: str | None) -> None:
    assert TopicTemplate(template, key).sensor_key(topic) == expected


_levels = st.lists(st.sampled_from(["plant", "l1", "p7", "accel", "", "$SYS"]), min_size=1, max_size=5)
_template_levels = st.lists(st.sampled_from(["plant", "accel", "{line}", "{sensor}", "+"]), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(levels=_template_levels, multi=st.booleans(), topic=_levels.map("/".join))
def test_template_fits_exactly_what_paho_matches(levels: list[str], multi: bool, topic: str) -> None:
    from paho.mqtt.client import topic_matches_sub

    if levels.count("{line}") > 1 or levels.count("{sensor}") > 1:
        return  # a named level appears twice: not a template
    tpl = TopicTemplate("/".join(levels) + ("/#" if multi else ""), key="{topic}")
    fields = tpl.match(topic)
    named = [i for i, level in enumerate(levels) if level.startswith("{")]
    parts = topic.split("/")
    expected = topic_matches_sub(tpl.filter, topic) and all(parts[i] for i in named)  # a named level is non-empty
    assert (fields is not None) == expected
    if fields is not None:
        assert fields == {levels[i][1:-1]: parts[i] for i in named}


def test_template_follows_mqtt_rules_for_dollar_topics() -> None:
    assert TopicTemplate("{sensor}/#").sensor_key("$SYS/broker/load") is None  # wildcards never match $ topics
    assert TopicTemplate("$SYS/{sensor}/#").sensor_key("$SYS/broker/load") == "broker"


def test_template_filter_and_errors() -> None:
    assert TopicTemplate("plant/{line}/{sensor}/#").filter == "plant/+/+/#"
    with pytest.raises(ValueError, match="'#' must be the last level"):
        TopicTemplate("plant/#/{sensor}")
    with pytest.raises(ValueError, match="appears twice"):
        TopicTemplate("{sensor}/{sensor}")
    with pytest.raises(ValueError, match="may only use"):
        TopicTemplate("plant/{sensor}", key="{line}")
    with pytest.raises(ValueError, match="whole level"):
        check_filter("plant/a+/x")


@pytest.mark.parametrize("codec", ["json", "csv", "f32"])
def test_codec_round_trip(codec: str) -> None:
    coder = make_codec(codec, ("x", "y"), rate_hz=8.0)  # type: ignore[arg-type]
    samples = [(1772438400.0 + i / 8, (0.5 * i, -1.25)) for i in range(5)]
    payload, props = coder.encode(samples, 8.0)
    assert coder.decode(payload, props=props) == samples


def test_json_forms() -> None:
    one = make_codec("json", ("accel",))
    assert one.decode(b'{"ts": "2026-03-02T08:00:00Z", "value": 1}') == [(1772438400.0, (1.0,))]
    assert one.decode(b'{"ts": 1772438400, "accel": 2.5}') == [(1772438400.0, (2.5,))]
    two = make_codec("json", ("x", "y"))
    assert two.decode(b'[{"ts": 1e9, "values": [1, 2]}]') == [(1e9, (1.0, 2.0))]


def test_f32_time_and_rate_from_topic_levels() -> None:
    coder = make_codec("f32", ("x",))
    payload = struct.pack("<3f", 1.0, 2.0, 3.0)
    out = coder.decode(payload, fields={"ts": "100.5", "rate_hz": "2"})
    assert out == [(100.5, (1.0,)), (101.0, (2.0,)), (101.5, (3.0,))]


@pytest.mark.parametrize(
    ("codec", "payload", "reason"),
    [
        ("json", b"{not json", "not JSON"),
        ("json", b'{"value": 1}', "missing 'ts'"),
        ("json", b'{"ts": 1e9, "value": NaN}', "non-finite"),
        ("json", b'{"ts": 1e9, "value": Infinity}', "non-finite"),
        ("json", b'{"ts": 1e9, "value": 1e6}', "outside the allowed range"),
        ("json", b'{"ts": 1e20, "value": 1}', "out of range"),
        ("json", b'{"ts": "2026-03-02T08:00:00", "value": 1}', "no timezone"),
        ("json", b'{"ts": 1e9, "value": true}', "must be a number"),
        ("json", b"[]", "empty JSON array"),
        ("json", b"\xff\xfe", "not JSON"),
        ("csv", b"1e9,abc", "could not convert"),
        ("csv", b"1e9,1,2", "expected 2 fields"),
        ("csv", b"1e9,nan", "non-finite"),
        ("f32", b"\x00\x00\x00", "whole number"),
        ("f32", struct.pack("<f", math.nan), "start time"),
    ],
)
def test_bad_payloads_say_why(codec: str, payload: bytes, reason: str) -> None:
    coder = make_codec(codec, ("value",), value_range=(-100.0, 100.0))  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match=reason):
        coder.decode(payload)


def test_f32_non_finite() -> None:
    coder = make_codec("f32", ("value",), rate_hz=10.0)
    with pytest.raises(PayloadError, match="non-finite"):
        coder.decode(struct.pack("<2f", 1.0, math.inf), props={"ts": "1e9"})


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["ts", "value", "values", "x"]), inner),
    max_leaves=12,
)
_payloads = st.one_of(
    st.binary(max_size=64),
    _json_values.map(lambda doc: json.dumps(doc).encode()),
    st.text(max_size=40).map(str.encode),
)


@settings(max_examples=400, deadline=None)
@given(payload=_payloads, codec=st.sampled_from(["json", "csv", "f32"]))
def test_fuzzed_payloads_decode_or_raise_payload_error(payload: bytes, codec: str) -> None:
    coder = make_codec(codec, ("value",), value_range=(-1e3, 1e3), rate_hz=100.0)  # type: ignore[arg-type]
    try:
        samples = coder.decode(payload, props={"ts": "1e9"})
    except PayloadError:
        return
    for ts, values in samples:
        assert math.isfinite(ts) and all(math.isfinite(v) and -1e3 <= v <= 1e3 for v in values)


def test_handoff_block_then_drop_oldest() -> None:
    q: HandOff[int] = HandOff(2, "block", block_s=0.01)
    for n in range(4):
        q.put(n)
    assert q.take(10) == [2, 3]
    assert (q.dropped, q.blocked) == (2, 2)


def test_spool_orders_survives_reopen_and_counts_overflow(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "outbox.sqlite"
    spool = Spool(path, capacity=3, overflow="drop_newest", alerts_first=True)
    rows = [("t", b"a", 1, False, 0), ("t", b"b", 1, False, 1), ("t", b"c", 1, False, 0), ("t", b"d", 1, False, 0)]
    assert spool.put(rows) == 1
    spool.close()
    again = Spool(path, capacity=3, overflow="drop_oldest", alerts_first=True)
    assert len(again) == 3
    assert [r.payload for r in again.next_rows(10)] == [b"b", b"a", b"c"]  # the alert first, then in order
    assert again.put([("t", b"e", 1, False, 0)]) == 1  # drops the oldest routine message, "a"
    assert [r.payload for r in again.next_rows(10)] == [b"b", b"c", b"e"]
    first = again.next_rows(1)
    assert [r.payload for r in again.next_rows(10, skip={first[0].seq})] == [b"c", b"e"]
    again.close()


@pytest.mark.parametrize("alerts_first", [False, True])
@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
def test_memory_outbox_behaves_like_the_sqlite_one(tmp_path, overflow, alerts_first) -> None:  # type: ignore[no-untyped-def]
    """One Spool (one set of rules) over each storage: the storages must agree row for row."""
    disk = Spool(SqliteStorage(tmp_path / "o.sqlite"), capacity=4, overflow=overflow, alerts_first=alerts_first)
    memory = Spool(MemoryStorage(), capacity=4, overflow=overflow, alerts_first=alerts_first)
    script = [
        [("t", b"a", 1, False, 0), ("t", b"b", 1, False, 1), ("t", b"c", 1, False, 0)],
        [("t", b"d", 1, False, 1), ("t", b"e", 1, False, 0), ("t", b"f", 1, False, 0)],
        [("t", bytes([65 + i]), 1, False, i % 2) for i in range(6)],  # more than the capacity at once
    ]
    for rows in script:
        assert memory.put(rows) == disk.put(rows)
        want = [(r.payload, r.seq) for r in disk.next_rows(10)]
        assert [(r.payload, r.seq) for r in memory.next_rows(10)] == want
        first = disk.next_rows(1)[0].seq
        assert [r.payload for r in memory.next_rows(10, skip={first}, after=0)] == [
            r.payload for r in disk.next_rows(10, skip={first}, after=0)
        ]
        memory.ack([first])
        disk.ack([first])
        assert len(memory) == len(disk)
    disk.close()


def test_outbox_storage_is_pluggable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A storage kept in a plain list (rules stay in Spool): any object with the SpoolStorage methods works."""
    from edgeflow.mqtt.spool import NewRow, SpoolRow

    class ListStorage:
        path = "list"

        def __init__(self) -> None:
            self.rows_: list[tuple[int, NewRow]] = []
            self.seq = 0

        def __len__(self) -> int:
            return len(self.rows_)

        def append(self, rows: list[NewRow]) -> None:
            for row in rows:
                self.seq += 1
                self.rows_.append((self.seq, row))

        def delete(self, seqs: set[int]) -> None:
            self.rows_ = [(seq, row) for seq, row in self.rows_ if seq not in seqs]

        def oldest(self, n: int) -> list[int]:
            return [seq for seq, row in sorted(self.rows_, key=lambda r: (r[1][4], r[0]))][:n]

        def rows(self, alerts_first: bool, after: int, limit: int) -> list[SpoolRow]:
            ordered = sorted(self.rows_, key=lambda r: (-r[1][4], r[0])) if alerts_first else self.rows_
            found = [SpoolRow(seq, t, p, q, r) for seq, (t, p, q, r, _prio) in ordered if seq > after]
            return found[:limit]

        def close(self) -> None:
            pass

    spool = Spool(ListStorage(), capacity=2, overflow="drop_oldest", alerts_first=True)
    assert spool.put([("t", b"a", 1, False, 0), ("t", b"!", 1, False, 1), ("t", b"b", 1, False, 0)]) == 1
    assert [r.payload for r in spool.next_rows(5)] == [b"!", b"b"]  # "a", the oldest routine row, was dropped
