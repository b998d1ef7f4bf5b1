"""Read recorded sensor data: CSV or JSONL files (optionally gzipped), parsed in vectorized chunks.

One parser for every reader of recordings: the replay source, ``edgeflow publish``
and tests. Rows need a timezone-aware timestamp (or epoch seconds), a sensor id
and one or more numeric values; a bad row becomes a
:class:`~edgeflow.records.DeadLetter` naming its line and the reason, and the
rest of the chunk is kept.

>>> channels, rows = read_recording("examples/data/pump_vibration.csv", limit=2)
>>> channels, next(rows)
(('accel',), ('pump-3', 1772438400.001925, (0.14372,)))
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edgeflow.isotime import parse_fixed_iso
from edgeflow.records import DeadLetter, Sample, SampleBlock, TimeFormat, clip
from edgeflow.sensor_split import owners_of_fields, share_of

__all__ = ["Chunk", "RecordingReader", "factorize", "is_jsonl", "read_columns", "read_recording", "value_columns_of"]

Row = tuple[str, float, tuple[float, ...]]


MAX_LINE_BYTES = 65_536
"""Longer lines are not sensor rows: they become dead letters, read in pieces, never held whole."""
DEFAULT_BATCH_ROWS = 8_192
"""Rows a replay reads at a time unless told otherwise."""
ROWS_PER_SENSOR, MAX_BATCH_ROWS = 64, 262_144
"""A growing reader aims at this many rows per sensor in a batch, up to this many rows in all (~7 MB of arrays):
with thousands of sensors, each sensor's share of a batch stays large enough to be worth a vectorized step."""
_FEW_ROWS = 8
"""Up to this many rows, each of another sensor, a chunk's blocks are cut row by row rather than by a sort."""
RECENT_SENSORS = 16_384
"""Sensor ids a growing reader remembers across batches (bounded: a flood of new ids costs at most this many)."""
PARSE_ROWS = 16_384
"""Lines parsed at once: bounds the transient text and strings of a large batch."""
_READ_BYTES = 1 << 20
"""Bytes an uncompressed recording is read in at a time."""
_NO_LINES = np.zeros(0, dtype=np.int64)
_MAX_TIME_WIDTH = 40
"""Wider time fields are not fixed-width ISO text: parsed as strings."""


def _open_binary(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def is_jsonl(path: Path) -> bool:
    """Whether *path* is a JSON Lines recording (by its suffixes), rather than CSV.

    >>> is_jsonl(Path("day.jsonl.gz")), is_jsonl(Path("day.csv"))
    (True, False)
    """
    return ".jsonl" in path.suffixes or ".ndjson" in path.suffixes


def read_columns(path: Path) -> list[str]:
    """Column names of a recording: the CSV header, or the keys of the first JSONL record."""
    with _open_binary(path) as f:
        first = f.readline(MAX_LINE_BYTES).decode("utf-8")  # only the header: bad bytes later are dead letters
    if not first:
        return []
    if is_jsonl(path):
        record = json.loads(first)
        return list(record) if isinstance(record, dict) else []
    return next(csv.reader([first]))


def value_columns_of(columns: Sequence[str], time_column: str, sensor_column: str | None) -> tuple[str, ...]:
    """Return the default value columns: every column but the time and sensor ones.

    >>> value_columns_of(["ts", "sensor", "x", "y"], "ts", "sensor")
    ('x', 'y')
    """
    return tuple(c for c in columns if c not in (time_column, sensor_column))


def factorize(labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Codes (int32, one per label) and the distinct labels in order of first appearance.

    Dicts do this in C, far cheaper than sorting an array of strings.

    >>> codes, names = factorize(["b", "a", "b"])
    >>> codes.tolist(), names
    ([0, 1, 0], ['b', 'a'])
    """
    names = list(dict.fromkeys(labels))
    lookup = {name: code for code, name in enumerate(names)}
    codes = np.fromiter(map(lookup.__getitem__, labels), dtype=np.int32, count=len(labels))
    return codes, names


@dataclass
class Chunk:
    """Parsed rows in file order, as arrays; sensors as codes into ``names`` (in order of first appearance)."""

    ts: np.ndarray
    codes: np.ndarray
    names: list[str]
    values: np.ndarray
    nbytes: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @property
    def sensors(self) -> list[str]:
        """The sensor of every row."""
        names = self.names
        return [names[c] for c in self.codes.tolist()]

    def split(self, n: int) -> tuple[Chunk, Chunk]:
        """Split into the first *n* rows and the rest."""
        head = Chunk(self.ts[:n], self.codes[:n], self.names, self.values[:n], self.nbytes[:n])
        return head, Chunk(self.ts[n:], self.codes[n:], self.names, self.values[n:], self.nbytes[n:])

    @classmethod
    def concat(cls, parts: list[Chunk]) -> Chunk:
        """Join chunks in order; sensor codes are renumbered into one list of names.

        >>> a = Chunk(np.array([1.0]), np.array([0], np.int32), ["x"], np.zeros((1, 1)), np.ones(1, np.int64))
        >>> b = Chunk(np.array([2.0, 3.0]), np.array([0, 1], np.int32), ["y", "x"], np.zeros((2, 1)), np.ones(2, int))
        >>> c = Chunk.concat([a, b])
        >>> c.sensors, c.names
        (['x', 'y', 'x'], ['x', 'y'])
        """
        if len(parts) == 1:
            return parts[0]
        names = list(dict.fromkeys(name for part in parts for name in part.names))
        lookup = {name: code for code, name in enumerate(names)}
        codes = [np.array([lookup[n] for n in part.names], dtype=np.int32)[part.codes] for part in parts]
        return cls(
            np.concatenate([part.ts for part in parts]),
            np.concatenate(codes),
            names,
            np.concatenate([part.values for part in parts]),
            np.concatenate([part.nbytes for part in parts]),
        )

    @classmethod
    def of(cls, samples: list[Sample], channels: int) -> Chunk:
        """Make rows from samples parsed one by one."""
        codes, names = factorize([s.sensor for s in samples])
        return cls(
            np.fromiter((s.ts for s in samples), dtype=np.float64, count=len(samples)),
            codes,
            names,
            np.array([s.values for s in samples], dtype=np.float64).reshape(len(samples), channels),
            np.fromiter((s.nbytes for s in samples), dtype=np.int64, count=len(samples)),
        )

    def blocks(self, t_in: int) -> list[SampleBlock]:
        """One :class:`SampleBlock` per sensor, sensors in order of first appearance, rows in file order.

        Grouping costs one stable sort of integer codes per chunk, whatever the number of sensors.

        >>> codes, names = factorize(["b", "a", "b"])
        >>> c = Chunk(np.array([1.0, 2.0, 3.0]), codes, names, np.zeros((3, 1)), np.ones(3, np.int64))
        >>> [(b.sensor, b.ts.tolist()) for b in c.blocks(0)]
        [('b', [1.0, 3.0]), ('a', [2.0])]
        >>> codes, names = factorize(["c", "a", "b"])  # a few rows of as many sensors: a block a row
        >>> c = Chunk(np.array([1.0, 2.0, 3.0]), codes, names, np.zeros((3, 1)), np.ones(3, np.int64))
        >>> [(b.sensor, b.ts.tolist()) for b in c.blocks(0)]
        [('c', [1.0]), ('a', [2.0]), ('b', [3.0])]
        """
        if not len(self):
            return []
        codes = self.codes
        first, last = int(codes.min()), int(codes.max())
        if first == last:
            return [SampleBlock(self.names[first], self.ts, self.values, self.nbytes, t_in)]
        if len(codes) <= _FEW_ROWS:
            few = codes.tolist()
            if len(set(few)) == len(few):  # a few rows of as many sensors (a paced poll): a block a row, no sort
                ts, values, nbytes, names = self.ts, self.values, self.nbytes, self.names
                return [
                    SampleBlock(names[c], ts[i : i + 1], values[i : i + 1], nbytes[i : i + 1], t_in)
                    for i, c in enumerate(few)
                ]
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(first, last + 2)).tolist()
        ts, values, nbytes = self.ts[order], self.values[order], self.nbytes[order]
        names = self.names
        return [
            SampleBlock(names[first + g], ts[lo:hi], values[lo:hi], nbytes[lo:hi], t_in)
            for g, (lo, hi) in enumerate(itertools.pairwise(bounds))
            if hi > lo
        ]


def _lines_of(raw: bytes) -> list[bytes]:
    r"""Split *raw* into lines that keep their newline (only ``\n`` ends a line, as in a file).

    >>> _lines_of(b"a\nb\r\nc")
    [b'a\n', b'b\r\n', b'c']
    """
    parts = raw.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    return [*lines, parts[-1]] if parts[-1] else lines


def _layout(raw: bytes, lines: int, columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Bytes, line starts, line ends and comma positions (lines x columns-1) of *lines* unquoted CSV rows.

    ``None`` unless every line has exactly ``columns - 1`` commas (checked vectorized).
    """
    buf = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    if ends.size != lines - 1 and ends.size != lines:
        return None
    if ends.size == lines - 1:  # the last line has no newline
        ends = np.append(ends, buf.size)
    per_line = columns - 1
    commas = np.flatnonzero(buf == 44)
    if commas.size != lines * per_line or (
        per_line and (np.searchsorted(commas, ends) != np.arange(1, lines + 1) * per_line).any()
    ):
        return None
    starts = np.concatenate(([0], ends[:-1] + 1))
    return buf, starts, ends, commas.reshape(lines, per_line)


class RecordingReader:
    """Reads a recording *batch_size* lines at a time, vectorized (row by row only when some rows are bad).

    >>> reader = RecordingReader(Path("examples/data/pump_vibration.csv"), ("accel",), step_id="doc", batch_size=4)
    >>> chunk, dead = reader.read()
    >>> len(chunk), dead, reader.line
    (4, [], 5)
    >>> reader.close()
    """

    def __init__(
        self,
        path: Path,
        values: tuple[str, ...],
        *,
        step_id: str,
        time_column: str = "ts",
        sensor_column: str = "sensor",
        sensor: str | None = None,
        time_format: TimeFormat | None = None,
        batch_size: int = 1024,
        start_line: int = 0,
        grow: bool = False,
        share: tuple[int, int] = (0, 1),
    ) -> None:
        self._step_id = step_id
        self._share = share
        """``(index, parts)``: read only the rows of the sensors :func:`~edgeflow.sensor_split.share_of` gives
        to partition *index* of *parts* (the file's own faults, such as an over-long line, go to partition 0)."""
        self._values = values
        self._time_column = time_column
        self._sensor_column = sensor_column
        self._sensor = sensor
        self._time = time_format or TimeFormat()
        self.batch_size = batch_size
        """Lines read per :meth:`read`; with *grow*, it rises with the sensors seen (64 rows each, at most 262,144),
        so each sensor's share of a batch stays large enough to be worth a vectorized step."""
        self._grow = grow
        self._recent: dict[str, None] = {}
        """Sensors of earlier batches, newest last, at most :data:`RECENT_SENSORS` (with *grow*): ids that come
        back batch after batch recur too."""
        self._path = path
        self._file = _open_binary(path)
        self._plain = path.suffix != ".gz"
        self._buffer = b""
        """Bytes of an uncompressed file read; those from offset ``_at`` on are not handed on yet."""
        self._at = 0
        self._ends: np.ndarray = _NO_LINES
        """Offsets of the newlines in ``_buffer`` from ``_at`` on."""
        self._jsonl = is_jsonl(path)
        self._ended = False
        self.line = 0
        """Lines read so far (the header included)."""
        if not self._jsonl:
            names = next(csv.reader([self._file.readline().decode("utf-8", errors="replace")]))
            self.line = 1
            self._ncols = len(names)
            self._i_ts = names.index(time_column)
            self._i_sensor = -1 if sensor is not None else names.index(sensor_column)
            self._i_vals = [names.index(v) for v in values]
        while self.line < start_line and not self._ended:  # resuming: these lines were handed on before
            if self._plain:
                self.line += self._read_plain_block(start_line - self.line)[1]
            else:
                self.line += len(self._read_lines(start_line - self.line)[0])

    def _read_lines(self, n: int) -> tuple[list[bytes], list[DeadLetter]]:
        """Read up to *n* lines of a gzip file; over-long lines and a damaged end of file become dead letters."""
        lines: list[bytes] = []
        dead: list[DeadLetter] = []
        readline = self._file.readline
        try:
            while len(lines) + len(dead) < n:
                line = readline(MAX_LINE_BYTES + 1)
                if not line:
                    self._ended = True
                    break
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    dead.append(self._too_long(line, self.line + len(lines) + len(dead) + 1))
                    lines.append(b"")  # keeps line numbers; parsed as nothing
                    continue
                lines.append(line)
        except (EOFError, OSError, zlib.error) as exc:  # a truncated or corrupt gzip file
            self._ended = True
            where = self.line + len(lines) + 1
            reason = f"line {where}: the file ends early or is damaged ({type(exc).__name__}: {exc}); input stops here"
            dead.append(DeadLetter(self._step_id, reason, str(self._path)))
        return lines, dead

    def _read_plain_block(self, n: int) -> tuple[bytes, int, list[DeadLetter]]:
        """Read up to *n* lines of an uncompressed file as one block of bytes: ``(bytes, lines, dead letters)``.

        The file is read in large pieces and cut at newlines found by numpy (once per piece); no object
        per line is made. A line over :data:`MAX_LINE_BYTES` ends the block before it; on the next call it
        is skipped (never held whole) as one line and one dead letter.
        """
        data, at, ends = self._buffer, self._at, self._ends
        try:
            while (
                ends.size < n
                and not self._ended
                and len(data) - (int(ends[-1]) + 1 if ends.size else at) <= MAX_LINE_BYTES
            ):
                more = self._file.read(_READ_BYTES)
                if not more:
                    self._ended = True
                    break
                data, ends, at = data[at:] + more, ends - at, 0
                ends = np.concatenate(
                    (ends, np.flatnonzero(np.frombuffer(more, np.uint8) == 10) + (len(data) - len(more)))
                )
        except OSError as exc:
            self._ended, self._buffer, self._at, self._ends = True, b"", 0, _NO_LINES
            reason = f"line {self.line + 1}: the file cannot be read ({type(exc).__name__}: {exc}); input stops here"
            return b"", 0, [DeadLetter(self._step_id, reason, str(self._path))]
        taken = ends[:n]
        lengths = np.diff(taken, prepend=at - 1)
        count = lengths.size
        tail = len(data) - (int(ends[-1]) + 1 if ends.size else at)  # bytes after the last newline
        if count < n and self._ended and tail:
            lengths = np.append(lengths, tail)  # the last line has no newline
            count += 1
        long = np.flatnonzero(lengths > MAX_LINE_BYTES)
        if (long.size and long[0] == 0) or (count == 0 and tail):  # an over-long line first: skip it alone
            size = int(lengths[0]) if count else tail
            head = data[at : at + size]
            self._keep(data, at + size, ends[1:] if count else ends)
            return b"", 1, [self._too_long(head, self.line + 1)]
        if long.size:
            count = int(long[0])
        size = int(lengths[:count].sum())
        self._keep(data, at + size, ends[count:])
        return data[at : at + size], count, []

    def _keep(self, data: bytes, at: int, ends: np.ndarray) -> None:
        """Keep *data* from offset *at* (newlines at *ends*) for the next read."""
        self._buffer, self._at, self._ends = data, at, ends
        if at < len(data):
            self._ended = False

    def _too_long(self, head: bytes, line: int) -> DeadLetter:
        size = len(head)
        while not head.endswith(b"\n"):
            head = self._file.readline(MAX_LINE_BYTES)
            if not head:
                break
            size += len(head)
        reason = f"line {line}: {size:,} bytes long; rows over {MAX_LINE_BYTES:,} bytes are not sensor rows"
        return DeadLetter(self._step_id, reason, clip(head.decode("utf-8", errors="replace")))

    def read(self) -> tuple[Chunk | None, list[DeadLetter]]:
        """Parse the next lines: the good rows as a chunk (``None`` at the end of the file) and the dead letters.

        A large batch is parsed in parts of at most :data:`PARSE_ROWS` lines, so that the text and the
        strings of a part are freed before the next is read: only the parsed arrays add up.
        """
        parts: list[Chunk] = []
        dead: list[DeadLetter] = []
        start = self.line
        sensors: dict[str, None] = {}
        while self.line - start < self.batch_size and not self._ended:
            before = self.line
            part, part_dead = self._read_part(min(self.batch_size - (self.line - start), PARSE_ROWS))
            dead.extend(part_dead)
            if part is not None and len(part):
                parts.append(part)
                if self._grow:
                    sensors.update(dict.fromkeys(part.names))
                    self._grow_for(sensors, sum(map(len, parts)))
            if self.line == before:
                break
        if self._grow:
            self._grow_for(sensors, sum(map(len, parts)), after=True)
            self._remember(sensors)
        if parts:
            return Chunk.concat(parts), dead
        if self.line > start or dead:  # lines read, none of them this partition's: not the end yet
            return Chunk.of([], len(self._values)), dead
        return None, dead

    def _grow_for(self, sensors: dict[str, None], rows: int, *, after: bool = False) -> None:
        """Grow the batch to :data:`ROWS_PER_SENSOR` rows per sensor seen, when sensors recur.

        Sensors recur when they send several rows in this batch, or when most of them were in the previous
        batch too (more sensors than a batch has rows). Sensors that each sent one row and are never seen again
        (a flood of distinct ids) gain nothing from larger batches and would only put more sensors in flight at
        once, so they do not make it grow.

        While a batch is read (*after* false) only its own rows count: how far a batch reaches must depend on
        its first line and the batch size it started with alone, which is what a replay's snapshot records
        (a resumed reader re-reads that batch, remembering no earlier one). Earlier batches' sensors grow
        the next batch, once this one is read.
        """
        recent = self._recent if after else {}
        again = sum(1 for name in sensors if name in recent) if recent else 0
        if rows >= 2 * len(sensors) or 2 * again >= len(sensors):  # a split file holds other partitions' rows too
            seen = len(sensors) + len(recent) - again
            self.batch_size = max(self.batch_size, min(ROWS_PER_SENSOR * seen * self._share[1], MAX_BATCH_ROWS))

    def _remember(self, sensors: dict[str, None]) -> None:
        """Add a batch's sensors to the recent ones, forgetting the oldest beyond :data:`RECENT_SENSORS`."""
        recent = self._recent
        for name in sensors:
            recent.pop(name, None)
        recent.update(sensors)
        if len(recent) > RECENT_SENSORS:
            self._recent = dict.fromkeys(list(recent)[-RECENT_SENSORS:])

    def _read_part(self, lines: int) -> tuple[Chunk | None, list[DeadLetter]]:
        if self._ended and self._at >= len(self._buffer):
            return None, []
        raw_lines: list[bytes] | None = None
        if self._plain:
            raw, count, dead = self._read_plain_block(lines)
            if dead and not raw:
                raw_lines = [b""] * count  # an over-long line (or none): parsed as nothing
        else:
            raw_lines, dead = self._read_lines(lines)
            count, raw = len(raw_lines), b"" if dead else b"".join(raw_lines)
        if not count:
            return (None, dead) if not dead else (Chunk.of([], len(self._values)), dead)
        first_line = self.line + 1
        self.line += count
        if self._share[1] > 1:
            if self._share[0] != 0:
                dead = []
            own = self._own_rows(raw, count) if raw_lines is None else None
            if own is None:  # row by row: not ours become empty lines, which parse as nothing
                raw_lines = [line if self._owns(line) else b"" for line in raw_lines or _lines_of(raw)]
            else:
                raw, count = own
                if not count:
                    return Chunk.of([], len(self._values)), []
        if raw_lines is None and not self._jsonl:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = ""
            chunk = self._parse_csv_fast(raw, count, text) if text else None
            if chunk is not None:
                return chunk, []
        samples: list[Sample] = []
        for n, raw_line in enumerate(raw_lines if raw_lines is not None else _lines_of(raw), start=first_line):
            if not raw_line:
                continue  # an over-long line, already a dead letter
            try:
                line_text = raw_line.decode("utf-8")
            except UnicodeDecodeError as exc:
                reason = f"not UTF-8 text: byte 0x{raw_line[exc.start]:02x} at column {exc.start + 1}"
                dead.append(self._dead(n, reason, raw_line.decode("utf-8", errors="replace")))
                continue
            item = self._from_json(line_text, n) if self._jsonl else self._from_csv(line_text, n)
            if type(item) is Sample:
                samples.append(item)
            else:
                dead.append(item)  # type: ignore[arg-type]
        dead.sort(key=_line_of)
        return Chunk.of(samples, len(self._values)), dead

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def _own_rows(self, raw: bytes, count: int) -> tuple[bytes, int] | None:
        """Return this partition's rows of *raw* and their number (``None`` if a line is not a plain CSV row)."""
        layout = _layout(raw, count, self._ncols) if b'"' not in raw and b"\r" not in raw else None
        if layout is None:
            return None
        buf, starts, ends, commas = layout
        i = self._i_sensor
        first = starts if i == 0 else commas[:, i - 1] + 1
        last = ends if i == commas.shape[1] else commas[:, i]
        mine = owners_of_fields(buf, first, last, self._share[1]) == self._share[0]
        lengths = np.minimum(ends + 1, buf.size) - starts
        return buf[np.repeat(mine, lengths)].tobytes(), int(mine.sum())

    def _owns(self, raw_line: bytes) -> bool:
        """Whether this partition reads *raw_line*: its sensor's share, or partition 0 for a row without one."""
        index, parts = self._share
        try:
            row = next(csv.reader([raw_line.decode("utf-8")]), [])
        except (UnicodeDecodeError, csv.Error):
            row = []
        if not raw_line or len(row) <= self._i_sensor:
            return bool(raw_line) and index == 0
        return share_of(row[self._i_sensor], parts) == index

    def _parse_csv_fast(self, raw: bytes, n: int, text: str) -> Chunk | None:
        """Parse well-formed rows at once; ``None`` if any row needs the careful, row-by-row path.

        Rows without quotes are split in one pass (every field of the chunk in one list) after checking,
        vectorized, that every line has the right number of commas. A timestamp column of one width is
        parsed from the bytes (:func:`edgeflow.isotime.parse_fixed_iso`), without a string per row.
        """
        if '"' in text or "\r" in text:
            lines = _lines_of(raw)
            return self._parse_csv_quoted(text, np.fromiter(map(len, lines), dtype=np.int64, count=len(lines)))
        layout = _layout(raw, n, self._ncols)
        if layout is None:
            return None
        buf, starts, ends, commas = layout
        k = self._ncols
        nbytes = np.minimum(ends + 1, buf.size) - starts
        body = text[:-1] if text.endswith("\n") else text
        fields = body.replace("\n", ",").split(",")
        ts = self._timestamps_of(buf, starts, ends, commas)
        return self._columns(
            fields[self._i_ts :: k] if ts is None else ts,
            None if self._sensor is not None else fields[self._i_sensor :: k],
            [fields[i::k] for i in self._i_vals],
            nbytes,
        )

    def _timestamps_of(
        self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, commas: np.ndarray
    ) -> np.ndarray | None:
        """Parse the time column from the bytes when every row writes it in one width; else ``None``."""
        if self._time.tz not in (None, "UTC", "Etc/UTC"):
            return None
        i = self._i_ts
        first = starts if i == 0 else commas[:, i - 1] + 1
        last = ends if i == commas.shape[1] else commas[:, i]
        width = int(last[0] - first[0])
        if width > _MAX_TIME_WIDTH or not (last - first == width).all():
            return None
        rows = buf[first[:, None] + np.arange(width)]
        return parse_fixed_iso(rows, naive_utc=self._time.tz is not None)

    def _parse_csv_quoted(self, text: str, nbytes: np.ndarray) -> Chunk | None:
        try:
            rows = list(csv.reader(text.splitlines()))
        except csv.Error:
            return None
        if len(rows) != nbytes.size or any(len(row) != self._ncols for row in rows):
            return None
        columns = list(zip(*rows, strict=True))
        sensors = None if self._sensor is not None else columns[self._i_sensor]
        return self._columns(columns[self._i_ts], sensors, [columns[i] for i in self._i_vals], nbytes)

    def _columns(
        self,
        ts_text: Sequence[str] | np.ndarray,
        sensor_text: Sequence[str] | None,
        value_text: list[Sequence[str]],
        nbytes: np.ndarray,
    ) -> Chunk | None:
        try:
            ts = ts_text if isinstance(ts_text, np.ndarray) else self._time.parse_many(ts_text)
            values = np.array(value_text, dtype=np.float64).T
        except ValueError:
            return None
        if sensor_text is None:
            codes, names = np.zeros(nbytes.size, dtype=np.int32), [self._sensor or ""]
        else:
            codes, names = factorize(sensor_text)
        if not (np.isfinite(values).all() and np.isfinite(ts).all()) or "" in names:
            return None
        return Chunk(ts, codes, names, values, nbytes)

    def _dead(self, line: int, reason: str, raw: str) -> DeadLetter:
        return DeadLetter(self._step_id, f"line {line}: {reason}", clip(raw.rstrip("\r\n")))

    def _from_csv(self, raw: str, line: int) -> Sample | DeadLetter:
        try:
            row = next(csv.reader([raw]), [])
        except csv.Error as exc:
            return self._dead(line, f"not a CSV row: {exc}", raw)
        try:
            if len(row) != self._ncols:
                msg = f"expected {self._ncols} columns, got {len(row)}"
                raise ValueError(msg)
            ts = self._time.parse(row[self._i_ts])
            values = tuple(float(row[i]) for i in self._i_vals)
        except ValueError as exc:
            return self._dead(line, str(exc), raw)
        sensor = self._sensor if self._sensor is not None else row[self._i_sensor]
        return self._check(ts, sensor, values, len(raw), raw, line)

    def _from_json(self, raw: str, line: int) -> Sample | DeadLetter:
        try:
            record = json.loads(raw)
            ts = record[self._time_column]
            ts = self._time.parse(ts if isinstance(ts, str) else repr(float(ts)))
            sensor = self._sensor if self._sensor is not None else str(record[self._sensor_column])
            values = tuple(float(record[v]) for v in self._values)
        except (ValueError, KeyError, TypeError) as exc:
            return self._dead(line, f"{type(exc).__name__}: {exc}", raw)
        return self._check(ts, sensor, values, len(raw), raw, line)

    def _check(
        self, ts: float, sensor: str, values: tuple[float, ...], nbytes: int, raw: str, line: int
    ) -> Sample | DeadLetter:
        if not sensor:
            return self._dead(line, "empty sensor id", raw)
        if not math.isfinite(ts):
            return self._dead(line, f"timestamp {ts!r} is not a finite number", raw)
        if not all(map(math.isfinite, values)):
            return self._dead(line, f"non-finite value in {values}", raw)
        return Sample(ts, sensor, values, nbytes, 0)


def _line_of(letter: DeadLetter) -> int:
    head = letter.reason.split(":", 1)[0]
    return int(head[5:]) if head.startswith("line ") and head[5:].isdigit() else 0


def read_recording(
    path: str | Path,
    *,
    time_column: str = "ts",
    sensor_column: str = "sensor",
    value_columns: Sequence[str] | None = None,
    sensor: str | None = None,
    time_format: TimeFormat | None = None,
    limit: int | None = None,
) -> tuple[tuple[str, ...], Iterator[Row]]:
    """Channel names and ``(sensor, ts, values)`` rows of a recording, in file order, parsed as replay parses it.

    Rows replay would turn into dead letters are skipped.
    """
    path = Path(path)
    channels = tuple(value_columns or value_columns_of(read_columns(path), time_column, sensor_column))
    reader = RecordingReader(
        path,
        channels,
        step_id="read",
        time_column=time_column,
        sensor_column=sensor_column,
        sensor=sensor,
        time_format=time_format,
    )

    def rows() -> Iterator[Row]:
        n = 0
        try:
            while True:
                chunk, _dead = reader.read()
                if chunk is None:
                    return
                for sensor, ts, values in zip(chunk.sensors, chunk.ts.tolist(), chunk.values.tolist(), strict=True):
                    yield (sensor, ts, tuple(values))
                    n += 1
                    if limit is not None and n >= limit:
                        return
        finally:
            reader.close()

    return channels, rows()
