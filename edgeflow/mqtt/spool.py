"""The MQTT sink's outbox: one set of rules (order, capacity, overflow) over a pluggable storage.

:class:`Spool` holds the rules; a :class:`SpoolStorage` only keeps rows. Rows keep
their insertion order (sequence numbers are never reused, even across restarts)
and a priority: with ``alerts_first`` the drain order is alerts first, then
everything else, each in insertion order; otherwise strict insertion order.
When full, ``"drop_oldest"`` deletes the oldest routine rows (then the oldest
alerts) to make room and ``"drop_newest"`` refuses the new rows; both report
how many were dropped.

Two storages: :class:`SqliteStorage` (a file in WAL mode, survives a restart)
and :class:`MemoryStorage` (an ordered dict, lost on exit; keeps SQLite, whose
calls hand the GIL to other threads, off the worker's path).

>>> spool = Spool(None, capacity=2, overflow="drop_oldest")
>>> spool.put([("t", b"1", 1, False, 0), ("t", b"2", 1, False, 0), ("t", b"3", 1, False, 0)])
1
>>> [row.payload for row in spool.next_rows(10)]
[b'2', b'3']
>>> spool.ack([row.seq for row in spool.next_rows(1)]); len(spool)
1
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Sequence
from itertools import chain, islice
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

__all__ = ["MemoryStorage", "NewRow", "OverflowPolicy", "Spool", "SpoolRow", "SpoolStorage", "SqliteStorage"]

OverflowPolicy = Literal["drop_oldest", "drop_newest"]
NewRow = tuple[str, bytes, int, bool, int]
"""A message to queue: ``(topic, payload, qos, retain, prio)``; ``prio`` 1 marks an alert."""


class SpoolRow(NamedTuple):
    """One queued message."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class SpoolStorage(Protocol):
    """Where an outbox keeps its rows; :class:`Spool` calls it under its lock, one call at a time."""

    path: str

    def __len__(self) -> int: ...

    def append(self, rows: Sequence[NewRow]) -> None:
        """Store *rows* in order under new, increasing sequence numbers."""
        ...

    def delete(self, seqs: Collection[int]) -> None:
        """Remove the rows with these sequence numbers (unknown ones are ignored)."""
        ...

    def oldest(self, n: int) -> list[int]:
        """Sequence numbers of the *n* oldest routine rows, then (if fewer) the oldest alerts."""
        ...

    def rows(self, alerts_first: bool, after: int, limit: int) -> list[SpoolRow]:
        """Up to *limit* rows with ``seq > after``, in drain order."""
        ...

    # optional: ``last_seq() -> int``, the highest sequence number ever given (0 for none); without it the
    # outbox's age (:meth:`Spool.oldest_enqueued`) is how long the outbox has been non-empty

    def close(self) -> None:
        """Write back and release."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prio INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_drain ON outbox (prio DESC, seq);
"""


class SqliteStorage:
    """Rows in a SQLite file (WAL, ``synchronous=NORMAL``); ``AUTOINCREMENT`` never reuses a sequence number.

    >>> store = SqliteStorage(":memory:")
    >>> store.append([("t", b"x", 1, False, 0)]); len(store), store.rows(False, 0, 5)[0].payload
    (1, b'x')
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._count: int = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def __len__(self) -> int:
        return self._count

    def append(self, rows: Sequence[NewRow]) -> None:
        self._db.execute("BEGIN")
        self._db.executemany("INSERT INTO outbox (topic, payload, qos, retain, prio) VALUES (?, ?, ?, ?, ?)", rows)
        self._db.execute("COMMIT")
        self._count += len(rows)

    def delete(self, seqs: Collection[int]) -> None:
        self._db.execute("BEGIN")
        cur = self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
        self._db.execute("COMMIT")
        self._count -= cur.rowcount

    def oldest(self, n: int) -> list[int]:
        return [seq for (seq,) in self._db.execute("SELECT seq FROM outbox ORDER BY prio, seq LIMIT ?", (n,))]

    def rows(self, alerts_first: bool, after: int, limit: int) -> list[SpoolRow]:
        order = "prio DESC, seq" if alerts_first else "seq"
        cur = self._db.execute(
            f"SELECT seq, topic, payload, qos, retain FROM outbox WHERE seq > ? ORDER BY {order} LIMIT ?",
            (after, limit),
        )
        return [SpoolRow(seq, topic, bytes(payload), qos, bool(retain)) for seq, topic, payload, qos, retain in cur]

    def last_seq(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Checkpoint the WAL and close the file."""
        if self.path != ":memory:":
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()


class MemoryStorage:
    """Rows in an insertion-ordered dict (alerts also indexed), for an outbox that need not survive a restart.

    >>> store = MemoryStorage()
    >>> store.append([("t", b"a", 1, False, 0), ("t", b"!", 1, False, 1)])
    >>> [r.payload for r in store.rows(True, 0, 5)], store.oldest(1)
    ([b'!', b'a'], [1])
    """

    path = ":memory:"

    def __init__(self) -> None:
        self._rows: dict[int, SpoolRow] = {}  # every row, in sequence order
        self._alerts: dict[int, SpoolRow] = {}  # the alerts among them
        self._seq = 0

    def __len__(self) -> int:
        return len(self._rows)

    def append(self, rows: Sequence[NewRow]) -> None:
        for topic, payload, qos, retain, prio in rows:
            self._seq += 1
            row = self._rows[self._seq] = SpoolRow(self._seq, topic, payload, qos, bool(retain))
            if prio:
                self._alerts[self._seq] = row

    def delete(self, seqs: Collection[int]) -> None:
        rows, alerts = self._rows, self._alerts
        for seq in seqs:
            if rows.pop(seq, None) is not None and alerts:
                alerts.pop(seq, None)

    def _routine(self) -> Iterator[SpoolRow]:
        alerts = self._alerts
        return (row for row in self._rows.values() if row.seq not in alerts) if alerts else iter(self._rows.values())

    def oldest(self, n: int) -> list[int]:
        return [row.seq for row in islice(chain(self._routine(), self._alerts.values()), n)]

    def rows(self, alerts_first: bool, after: int, limit: int) -> list[SpoolRow]:
        ordered = chain(self._alerts.values(), self._routine()) if alerts_first else self._rows.values()
        out: list[SpoolRow] = []
        for row in ordered:
            if row.seq > after:
                out.append(row)
                if len(out) >= limit:
                    break
        return out

    def last_seq(self) -> int:
        return self._seq

    def close(self) -> None:
        """Nothing to write back."""


class Spool:
    """The outbox: capacity, overflow and drain order over a storage; every method is thread-safe.

    *storage* is a :class:`SpoolStorage`, a SQLite file path (:class:`SqliteStorage`), or ``None``
    for :class:`MemoryStorage`.
    """

    def __init__(
        self,
        storage: SpoolStorage | str | Path | None,
        capacity: int,
        overflow: OverflowPolicy = "drop_oldest",
        *,
        alerts_first: bool = False,
    ) -> None:
        if storage is None:
            storage = MemoryStorage()
        elif isinstance(storage, (str, Path)):
            storage = SqliteStorage(storage)
        self._store: SpoolStorage = storage
        self.path = storage.path
        self.capacity = capacity
        self.overflow = overflow
        self.alerts_first = alerts_first
        self._lock = threading.Lock()
        self._opened = time.time()
        self._last_seq = getattr(storage, "last_seq", None)
        self._before = self._last_seq() if self._last_seq is not None else 0  # rows up to here: an earlier run's
        self._puts: deque[tuple[int, float]] = deque()  # (last sequence number of a put, when), oldest first

    def put(self, rows: Iterable[NewRow]) -> int:
        """Append ``(topic, payload, qos, retain, prio)`` rows in order; return how many messages were dropped."""
        new = list(rows)
        if not new:
            return 0
        with self._lock:
            store = self._store
            dropped = 0
            excess = len(store) + len(new) - self.capacity
            if excess > 0 and self.overflow == "drop_newest":
                keep = max(0, len(new) - excess)
                dropped, new = len(new) - keep, new[:keep]
            elif excess > 0:
                if len(new) > self.capacity:
                    dropped, new = len(new) - self.capacity, new[-self.capacity :]
                excess = len(store) + len(new) - self.capacity
                if excess > 0:
                    victims = store.oldest(excess)
                    store.delete(victims)
                    dropped += len(victims)
            if new:
                empty = not len(store)
                store.append(new)
                if self._last_seq is not None:
                    self._puts.append((self._last_seq(), time.time()))
                elif empty or not self._puts:
                    self._puts.clear()
                    self._puts.append((0, time.time()))
            return dropped

    def oldest_enqueued(self) -> float | None:
        """When the oldest message still waiting was queued (epoch seconds); ``None`` when the outbox is empty.

        A message an earlier run queued counts from when this outbox was opened.

        >>> spool = Spool(None, capacity=5)
        >>> spool.oldest_enqueued() is None
        True
        >>> spool.put([("t", b"1", 1, False, 0)]); t = spool.oldest_enqueued(); t is not None
        0
        True
        """
        with self._lock:
            head = self._store.rows(False, 0, 1)
            if not head:
                self._puts.clear()
                return None
            first = head[0].seq
            puts = self._puts
            if self._last_seq is None:
                return puts[0][1] if puts else self._opened
            while puts and puts[0][0] < first:
                puts.popleft()
            if first <= self._before or not puts:
                return self._opened
            return puts[0][1]

    def next_rows(self, limit: int, skip: Collection[int] = (), after: int = 0) -> list[SpoolRow]:
        """Return the next *limit* rows in drain order, leaving out sequence numbers in *skip* (already in flight).

        In strict order (no ``alerts_first``), *after* (the highest sequence number already handed out) lets
        the storage start past the rows in flight instead of reading and skipping them.
        """
        with self._lock:
            if self.alerts_first:
                after, ahead = 0, len(skip)
            else:  # rows in flight past *after* are read and left out
                ahead = sum(1 for seq in skip if seq > after) if skip else 0
            rows = self._store.rows(self.alerts_first, after, limit + ahead)
        if ahead:
            rows = [row for row in rows if row.seq not in skip][:limit]
        return rows

    def ack(self, seqs: Collection[int]) -> None:
        """Delete delivered rows."""
        if seqs:
            with self._lock:
                self._store.delete(seqs)

    def adopt(self, other: str | Path) -> int:
        """Move every message of another outbox file to the end of this one, in its order; return how many.

        A run with fewer workers than the last one adopts the outboxes no worker owns any more.
        """
        rows = _take_outbox_file(other)
        self.put(rows)
        return len(rows)

    def __len__(self) -> int:
        return len(self._store)

    def close(self) -> None:
        """Close the storage (a file's WAL is checkpointed)."""
        with self._lock:
            self._store.close()


def _take_outbox_file(path: str | Path) -> list[NewRow]:
    """Read every message of an outbox file in its order, then delete the file (with its WAL)."""
    source = sqlite3.connect(str(path))
    try:
        rows = source.execute("SELECT topic, payload, qos, retain, prio FROM outbox ORDER BY seq").fetchall()
    finally:
        source.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return [(topic, bytes(payload), qos, bool(retain), prio) for topic, payload, qos, retain, prio in rows]
