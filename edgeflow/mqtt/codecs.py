"""Payload codecs: MQTT payload bytes to ``(ts, values)`` samples and back.

* ``json``: an object ``{"ts": 1772438400.5, "accel": 0.12}`` (values under the
  channel names, under ``"values": [...]``, or under ``"value"`` for one
  channel), or an array of such objects (a batch);
* ``csv``: one or more lines ``ts,v1[,v2...]``;
* ``f32``: raw little-endian float32, channels interleaved, evenly spaced; the
  first sample's time and the rate come from MQTT v5 user properties ``ts``
  and ``rate_hz``, or from topic levels ``{ts}`` and ``{rate_hz}``, or (rate
  only) from the codec's setting.

Timestamps are epoch seconds (a number, or timezone-aware ISO 8601 text).
Anything that does not decode, or holds a NaN/inf or out-of-range number,
raises :class:`PayloadError` with the reason; the source turns it into a dead
letter.

**Sequence stamps.** A publisher may number its messages per topic so that the
source can count what went missing on the way (``mqtt.lost_upstream``): MQTT v5
user properties ``seq`` (1, 2, 3 ... per topic) and ``pub`` (an id of the
publisher, so a restarted publisher starting again at 1 is not taken for
duplicates). Without user properties (MQTT 3.1.1) the ``json`` codec also reads
``"seq"`` and ``"pub"`` keys of the object (of the first object of an array).
``edgeflow publish`` stamps every message (:func:`read_stamp`, :meth:`Codec.decode_stamped`).

>>> codec = make_codec("json", ("accel",))
>>> payload, props = codec.encode([(1772438400.5, (0.25,))])
>>> payload
b'{"ts":1772438400.5,"accel":0.25}'
>>> codec.decode(payload)
[(1772438400.5, (0.25,))]
>>> codec.decode(b'{"ts": 1772438400.5, "accel": NaN}')
Traceback (most recent call last):
...
edgeflow.mqtt.codecs.PayloadError: non-finite value nan
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

import numpy as np

from edgeflow.records import parse_timestamp

__all__ = [
    "Codec",
    "CodecName",
    "CsvCodec",
    "F32Codec",
    "JsonCodec",
    "PayloadError",
    "SampleTuple",
    "Stamp",
    "make_codec",
    "read_stamp",
    "stamp_properties",
]

CodecName = Literal["json", "csv", "f32"]
SampleTuple = tuple[float, tuple[float, ...]]
_STAMP_KEYS = ("seq", "pub")


class Stamp(NamedTuple):
    """A message's place in its publisher's sequence on its topic."""

    publisher: str
    """Who numbered it (``""`` when the publisher gave no id)."""
    seq: int
    """1, 2, 3 ... per topic and publisher."""


def stamp_properties(stamp: Stamp) -> dict[str, str]:
    """Return the MQTT v5 user properties carrying *stamp*.

    >>> stamp_properties(Stamp("a1b2", 7))
    {'seq': '7', 'pub': 'a1b2'}
    """
    return {"seq": str(stamp.seq), "pub": stamp.publisher}


def read_stamp(props: Mapping[str, str] | None) -> Stamp | None:
    """Read the stamp in MQTT v5 user properties: ``None`` without one (or a ``seq`` that is not a positive integer).

    >>> read_stamp({"seq": "7", "pub": "a1b2"}), read_stamp({"seq": "x"}), read_stamp(None)
    (Stamp(publisher='a1b2', seq=7), None, None)
    """
    seq = props.get("seq") if props else None
    if seq is None:
        return None
    if isinstance(seq, str) and seq.isdigit() and len(seq) < 19:  # the usual case, kept fast
        n = int(seq)
        return Stamp(props.get("pub", ""), n) if n > 0 else None  # type: ignore[union-attr]
    return _stamp(props.get("pub", ""), seq)  # type: ignore[union-attr]


def _stamp(publisher: object, seq: object) -> Stamp | None:
    if isinstance(seq, bool):
        return None
    if isinstance(seq, str):
        seq = int(seq) if seq.isdigit() and len(seq) < 20 else None
    if not isinstance(seq, int) or seq < 1 or seq >= 2**63:
        return None
    return Stamp(publisher if isinstance(publisher, str) else str(publisher)[:64], seq)


_TS_MIN, _TS_MAX = 0.0, 4_102_444_800.0  # 1970 .. 2100


class PayloadError(ValueError):
    """A payload that cannot become samples; the message is the reason."""


def _ts(raw: object) -> float:
    """Epoch seconds from a JSON number, or from text by :func:`edgeflow.records.parse_timestamp`; range-checked."""
    if isinstance(raw, bool):
        msg = f"timestamp must be epoch seconds or ISO 8601 text, got {raw!r}"
        raise PayloadError(msg)
    if isinstance(raw, (int, float)):
        ts = float(raw)
    elif isinstance(raw, str):
        try:
            ts = parse_timestamp(raw)
        except ValueError as exc:
            msg = f"bad timestamp {raw[:40]!r}: {exc}"
            raise PayloadError(msg) from None
    else:
        msg = f"timestamp must be epoch seconds or ISO 8601 text, got {type(raw).__name__}"
        raise PayloadError(msg)
    if not _TS_MIN < ts < _TS_MAX:  # also rejects NaN
        msg = f"timestamp {ts!r} out of range (epoch seconds between 1970 and 2100)"
        raise PayloadError(msg)
    return ts


class Codec:
    """Base of the codecs: channel names, the allowed value range and the checks they share."""

    name: str = ""

    def __init__(self, channels: Sequence[str], value_range: tuple[float, float] | None = None) -> None:
        self.channels = tuple(channels)
        self.value_range = value_range

    def _check(self, values: tuple[float, ...]) -> tuple[float, ...]:
        for v in values:
            if not math.isfinite(v):
                msg = f"non-finite value {v!r}"
                raise PayloadError(msg)
        if self.value_range is not None:
            lo, hi = self.value_range
            for v in values:
                if not lo <= v <= hi:
                    msg = f"value {v!r} outside the allowed range [{lo}, {hi}]"
                    raise PayloadError(msg)
        return values

    def decode(
        self, payload: bytes, fields: Mapping[str, str] | None = None, props: Mapping[str, str] | None = None
    ) -> list[SampleTuple]:
        """Decode *payload* into samples; *fields* are the topic's named levels, *props* the v5 user properties."""
        raise NotImplementedError

    def decode_stamped(
        self, payload: bytes, fields: Mapping[str, str] | None = None, props: Mapping[str, str] | None = None
    ) -> tuple[list[SampleTuple], Stamp | None]:
        """Decode *payload* and return its samples with its sequence stamp (user properties), if any.

        A payload that does not decode raises :class:`PayloadError`; :func:`read_stamp` still reads its stamp.
        """
        return self.decode(payload, fields, props), read_stamp(props)

    def encode(
        self, samples: Sequence[SampleTuple], rate_hz: float | None = None, stamp: Stamp | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """Payload and user properties holding *samples* (one sensor's, in order), stamped with *stamp*."""
        raise NotImplementedError


def _number(raw: object, name: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        msg = f"value {name!r} must be a number, got {raw!r}"[:200]
        raise PayloadError(msg)
    return float(raw)


class JsonCodec(Codec):
    """JSON object per sample, or an array of them.

    >>> JsonCodec(("x", "y")).decode(b'[{"ts": 1e9, "values": [1, 2]}, {"ts": 1e9, "x": 3, "y": 4}]')
    [(1000000000.0, (1.0, 2.0)), (1000000000.0, (3.0, 4.0))]
    """

    name = "json"

    def _one(self, obj: object) -> SampleTuple:
        if not isinstance(obj, dict):
            msg = f"expected a JSON object per sample, got {type(obj).__name__}"
            raise PayloadError(msg)
        if "ts" not in obj:
            msg = "missing 'ts'"
            raise PayloadError(msg)
        ts = _ts(obj["ts"])
        channels = self.channels
        if "values" in obj:
            raw = obj["values"]
            if not isinstance(raw, list) or len(raw) != len(channels):
                msg = f"'values' must be a list of {len(channels)} numbers {list(channels)}, got {raw!r}"[:200]
                raise PayloadError(msg)
            values = tuple(_number(v, c) for v, c in zip(raw, channels, strict=True))
        elif len(channels) == 1 and channels[0] not in obj and "value" in obj:
            values = (_number(obj["value"], "value"),)
        else:
            missing = [c for c in channels if c not in obj]
            if missing:
                msg = f"missing value(s) {missing}; expected keys {list(channels)}, 'values' or 'value'"
                raise PayloadError(msg)
            values = tuple(_number(obj[c], c) for c in channels)
        return ts, self._check(values)

    def _parse(self, payload: bytes) -> object:
        try:
            return json.loads(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            msg = f"not JSON: {exc}"
            raise PayloadError(msg) from None
        except RecursionError:
            msg = "not JSON: nested too deeply"
            raise PayloadError(msg) from None

    def _samples(self, doc: object) -> list[SampleTuple]:
        if isinstance(doc, list):
            if not doc:
                msg = "empty JSON array"
                raise PayloadError(msg)
            return [self._one(item) for item in doc]
        return [self._one(doc)]

    def decode(
        self, payload: bytes, fields: Mapping[str, str] | None = None, props: Mapping[str, str] | None = None
    ) -> list[SampleTuple]:
        return self._samples(self._parse(payload))

    def decode_stamped(
        self, payload: bytes, fields: Mapping[str, str] | None = None, props: Mapping[str, str] | None = None
    ) -> tuple[list[SampleTuple], Stamp | None]:
        """Return samples and stamp: user properties first, else ``"seq"``/``"pub"`` keys of the (first) object.

        >>> JsonCodec(("x",)).decode_stamped(b'{"ts": 1e9, "x": 1, "seq": 4, "pub": "p"}')
        ([(1000000000.0, (1.0,))], Stamp(publisher='p', seq=4))
        """
        doc = self._parse(payload)
        stamp = read_stamp(props)
        if stamp is None:
            head = doc[0] if isinstance(doc, list) and doc else doc
            if isinstance(head, dict) and "seq" in head and "seq" not in self.channels:
                stamp = _stamp(head.get("pub", ""), head["seq"])
        return self._samples(doc), stamp

    def encode(
        self, samples: Sequence[SampleTuple], rate_hz: float | None = None, stamp: Stamp | None = None
    ) -> tuple[bytes, dict[str, str]]:
        docs = [{"ts": ts, **dict(zip(self.channels, values, strict=True))} for ts, values in samples]
        body = docs[0] if len(docs) == 1 else docs
        return json.dumps(body, separators=(",", ":")).encode(), stamp_properties(stamp) if stamp else {}

    def encode_in_payload(self, samples: Sequence[SampleTuple], stamp: Stamp) -> bytes:
        """Return a payload carrying *stamp* as ``"seq"``/``"pub"`` keys of its (first) object, for MQTT 3.1.1.

        >>> JsonCodec(("x",)).encode_in_payload([(1e9, (1.0,))], Stamp("p", 4))
        b'{"ts":1000000000.0,"x":1.0,"seq":4,"pub":"p"}'
        """
        docs: list[dict[str, object]] = [
            {"ts": ts, **dict(zip(self.channels, values, strict=True))} for ts, values in samples
        ]
        docs[0].update(seq=stamp.seq, pub=stamp.publisher)
        body = docs[0] if len(docs) == 1 else docs
        return json.dumps(body, separators=(",", ":")).encode()


class CsvCodec(Codec):
    r"""Lines of ``ts,v1[,v2...]``.

    >>> CsvCodec(("accel",)).decode(b"1772438400.5,0.25\n2026-03-02T08:00:01Z,-1")
    [(1772438400.5, (0.25,)), (1772438401.0, (-1.0,))]
    """

    name = "csv"

    def decode(
        self, payload: bytes, fields: Mapping[str, str] | None = None, props: Mapping[str, str] | None = None
    ) -> list[SampleTuple]:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            msg = f"not UTF-8 text: {exc}"
            raise PayloadError(msg) from None
        out = []
        width = len(self.channels) + 1
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            cells = line.split(",")
            if len(cells) != width:
                msg = f"line {n}: expected {width} fields (ts,{','.join(self.channels)}), got {len(cells)}"
                raise PayloadError(msg)
            ts = _ts(cells[0].strip())
            try:
                values = tuple(float(cell) for cell in cells[1:])
            except ValueError as exc:
                msg = f"line {n}: {exc}"
                raise PayloadError(msg) from None
            out.append((ts, self._check(values)))
        if not out:
            msg = "empty CSV payload"
            raise PayloadError(msg)
        return out

    def encode(
        self, samples: Sequence[SampleTuple], rate_hz: float | None = None, stamp: Stamp | None = None
    ) -> tuple[bytes, dict[str, str]]:
        lines = [",".join([repr(ts), *map(repr, values)]) for ts, values in samples]
        return "\n".join(lines).encode(), stamp_properties(stamp) if stamp else {}


class F32Codec(Codec):
    """Raw little-endian float32 frames, evenly spaced at *rate_hz*.

    >>> codec = F32Codec(("x",), rate_hz=4.0)
    >>> payload, props = codec.encode([(100.0, (1.0,)), (100.25, (2.0,))])
    >>> len(payload), props
    (8, {'ts': '100.0', 'rate_hz': '4.0'})
    >>> codec.decode(payload, props=props)
    [(100.0, (1.0,)), (100.25, (2.0,))]
    """

    name = "f32"

    def __init__(
        self, channels: Sequence[str], value_range: tuple[float, float] | None = None, rate_hz: float | None = None
    ) -> None:
        super().__init__(channels, value_range)
        self.rate_hz = rate_hz

    def _meta(self, name: str, fields: Mapping[str, str], props: Mapping[str, str]) -> str | None:
        return props.get(name) if name in props else fields.get(name)

    def decode(
        self, payload: bytes, fields: Mapping[str, str] | None = None, props: Mapping[str, str] | None = None
    ) -> list[SampleTuple]:
        fields, props = fields or {}, props or {}
        ch = len(self.channels)
        if not payload or len(payload) % (4 * ch):
            msg = f"f32 payload of {len(payload)} bytes is not a whole number of {ch}-channel float32 frames"
            raise PayloadError(msg)
        raw_ts = self._meta("ts", fields, props)
        if raw_ts is None:
            msg = "f32 payload without a start time: set user property 'ts' or a topic level {ts}"
            raise PayloadError(msg)
        ts0 = _ts(raw_ts)
        raw_rate = self._meta("rate_hz", fields, props)
        try:
            rate = float(raw_rate) if raw_rate is not None else self.rate_hz
        except ValueError:
            rate = math.nan
        if rate is None or not math.isfinite(rate) or rate <= 0:
            msg = f"f32 payload needs a positive rate_hz (user property, topic level or setting), got {raw_rate!r}"
            raise PayloadError(msg)
        frames = np.frombuffer(payload, dtype="<f4").reshape(-1, ch)
        bad = ~np.isfinite(frames)
        if bad.any():
            msg = f"non-finite value {float(frames[bad][0])!r}"
            raise PayloadError(msg)
        if self.value_range is not None:
            lo, hi = self.value_range
            out_of = (frames < lo) | (frames > hi)
            if out_of.any():
                msg = f"value {float(frames[out_of][0])!r} outside the allowed range [{lo}, {hi}]"
                raise PayloadError(msg)
        rows = frames.astype(np.float64).tolist()
        return [(ts0 + i / rate, tuple(row)) for i, row in enumerate(rows)]

    def encode(
        self, samples: Sequence[SampleTuple], rate_hz: float | None = None, stamp: Stamp | None = None
    ) -> tuple[bytes, dict[str, str]]:
        rate = rate_hz or self.rate_hz
        if rate is None:
            msg = "the f32 codec needs rate_hz to encode"
            raise ValueError(msg)
        data = np.asarray([values for _, values in samples], dtype="<f4")
        props = {"ts": repr(samples[0][0]), "rate_hz": repr(float(rate))}
        return data.tobytes(), {**props, **stamp_properties(stamp)} if stamp else props


def make_codec(
    name: CodecName,
    channels: Sequence[str],
    value_range: tuple[float, float] | None = None,
    rate_hz: float | None = None,
) -> Codec:
    """Build the codec called *name* for *channels*.

    >>> make_codec("csv", ("a", "b")).name
    'csv'
    """
    if name == "json":
        return JsonCodec(channels, value_range)
    if name == "csv":
        return CsvCodec(channels, value_range)
    if name == "f32":
        return F32Codec(channels, value_range, rate_hz)
    msg = f"unknown codec {name!r}; expected one of json, csv, f32"
    raise ValueError(msg)
