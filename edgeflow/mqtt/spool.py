"""A bounded, ordered outbox on disk (SQLite in WAL mode) for store-and-forward.

Rows keep their insertion order (``AUTOINCREMENT`` never reuses a sequence
number, even across restarts) and a priority: with ``alerts_first`` the
drain order is alerts first, then everything else, each in insertion order.
When full, ``"drop_oldest"`` deletes the oldest routine rows (then the oldest
alerts) to make room and ``"drop_newest"`` refuses the new rows; both report
how many were dropped.

>>> spool = Spool(":memory:", capacity=2, overflow="drop_oldest")
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
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Literal, NamedTuple

__all__ = ["MemorySpool", "OverflowPolicy", "Spool", "SpoolRow", "open_spool"]

OverflowPolicy = Literal["drop_oldest", "drop_newest"]

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


class SpoolRow(NamedTuple):
    """One queued message."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Spool:
    """The outbox; every method is thread-safe and commits before it returns.

    *path* ``":memory:"`` keeps the queue in memory (store-and-forward within a run only).
    """

    def __init__(
        self, path: str | Path, capacity: int, overflow: OverflowPolicy = "drop_oldest", *, alerts_first: bool = False
    ) -> None:
        self.path = str(path)
        self.capacity = capacity
        self.overflow = overflow
        self._order = "prio DESC, seq" if alerts_first else "seq"
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._count: int = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def put(self, rows: Iterable[tuple[str, bytes, int, bool, int]]) -> int:
        """Append ``(topic, payload, qos, retain, prio)`` rows in order; return how many messages were dropped."""
        new = list(rows)
        if not new:
            return 0
        with self._lock:
            dropped = 0
            excess = self._count + len(new) - self.capacity
            if excess > 0:
                if self.overflow == "drop_newest":
                    keep = max(0, len(new) - excess)
                    dropped, new = len(new) - keep, new[:keep]
                else:
                    if len(new) > self.capacity:
                        dropped += len(new) - self.capacity
                        new = new[-self.capacity :]
                    excess = self._count + len(new) - self.capacity
                    if excess > 0:
                        cur = self._db.execute(
                            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY prio, seq LIMIT ?)",
                            (excess,),
                        )
                        self._count -= cur.rowcount
                        dropped += cur.rowcount
            if new:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO outbox (topic, payload, qos, retain, prio) VALUES (?, ?, ?, ?, ?)", new
                )
                self._db.execute("COMMIT")
                self._count += len(new)
            return dropped

    def next_rows(self, limit: int, skip: Collection[int] = (), after: int = 0) -> list[SpoolRow]:
        """Return the next *limit* rows in drain order, leaving out sequence numbers in *skip* (already in flight).

        In strict order (no ``alerts_first``), *after* (the highest sequence number already handed out) lets
        the query start past the rows in flight instead of reading and skipping them.
        """
        with self._lock:
            if self._order == "seq":
                cur = self._db.execute(
                    "SELECT seq, topic, payload, qos, retain FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, limit + sum(1 for seq in skip if seq > after)),
                )
            else:
                cur = self._db.execute(
                    f"SELECT seq, topic, payload, qos, retain FROM outbox ORDER BY {self._order} LIMIT ?",
                    (limit + len(skip),),
                )
            rows = [SpoolRow(seq, topic, bytes(payload), qos, bool(retain)) for seq, topic, payload, qos, retain in cur]
        return [row for row in rows if row.seq not in skip][:limit]

    def ack(self, seqs: Collection[int]) -> None:
        """Delete delivered rows."""
        if not seqs:
            return
        with self._lock:
            self._db.execute("BEGIN")
            cur = self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            self._db.execute("COMMIT")
            self._count -= cur.rowcount

    def adopt(self, other: str | Path) -> int:
        """Move every message of another outbox file to the end of this one, in its order; return how many.

        A run with fewer workers than the last one adopts the outboxes no worker owns any more.
        """
        rows = _take_outbox_file(other)
        self.put(rows)
        return len(rows)

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        """Checkpoint the WAL and close the file."""
        with self._lock:
            if self.path != ":memory:":
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()


def _take_outbox_file(path: str | Path) -> list[tuple[str, bytes, int, bool, int]]:
    """Read every message of an outbox file in its order, then delete the file (with its WAL)."""
    source = sqlite3.connect(str(path))
    try:
        rows = source.execute("SELECT topic, payload, qos, retain, prio FROM outbox ORDER BY seq").fetchall()
    finally:
        source.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return [(topic, bytes(payload), qos, bool(retain), prio) for topic, payload, qos, retain, prio in rows]


class MemorySpool:
    """The same outbox in memory, for ``spool=None``: same order, capacity and overflow rules, no SQLite.

    Keeping SQLite off the worker's path when nothing needs to survive a restart saves its GIL
    hand-offs on every publish.

    >>> spool = MemorySpool(capacity=2, overflow="drop_oldest")
    >>> spool.put([("t", b"1", 1, False, 0), ("t", b"2", 1, False, 0), ("t", b"3", 1, False, 0)])
    1
    >>> [row.payload for row in spool.next_rows(10)]
    [b'2', b'3']
    """

    path = ":memory:"

    def __init__(self, capacity: int, overflow: OverflowPolicy = "drop_oldest", *, alerts_first: bool = False) -> None:
        self.capacity = capacity
        self.overflow = overflow
        self._alerts_first = alerts_first
        self._lock = threading.Lock()
        self._rows: tuple[dict[int, SpoolRow], dict[int, SpoolRow]] = ({}, {})  # routine, alerts: seq order
        self._seq = 0

    def put(self, rows: Iterable[tuple[str, bytes, int, bool, int]]) -> int:
        """Append ``(topic, payload, qos, retain, prio)`` rows in order; return how many messages were dropped."""
        new = list(rows)
        with self._lock:
            dropped = 0
            excess = len(self) + len(new) - self.capacity
            if excess > 0 and self.overflow == "drop_newest":
                keep = max(0, len(new) - excess)
                dropped, new = len(new) - keep, new[:keep]
            elif excess > 0:
                if len(new) > self.capacity:
                    dropped, new = len(new) - self.capacity, new[-self.capacity :]
                excess = len(self) + len(new) - self.capacity
                for rows_of_prio in self._rows:  # the oldest queued routine rows, then the oldest alerts
                    while excess > 0 and rows_of_prio:
                        del rows_of_prio[next(iter(rows_of_prio))]
                        excess -= 1
                        dropped += 1
            for topic, payload, qos, retain, prio in new:
                self._seq += 1
                self._rows[1 if prio else 0][self._seq] = SpoolRow(self._seq, topic, payload, qos, bool(retain))
            return dropped

    def _in_order(self) -> Iterator[SpoolRow]:
        routine, alerts = self._rows
        if self._alerts_first:
            yield from alerts.values()
            yield from routine.values()
            return
        a, r = iter(alerts.values()), iter(routine.values())
        next_a, next_r = next(a, None), next(r, None)
        while next_a is not None or next_r is not None:
            if next_r is None or (next_a is not None and next_a.seq < next_r.seq):
                yield next_a  # type: ignore[misc]
                next_a = next(a, None)
            else:
                yield next_r
                next_r = next(r, None)

    def next_rows(self, limit: int, skip: Collection[int] = (), after: int = 0) -> list[SpoolRow]:
        """Return the next *limit* rows in drain order, leaving out *skip* (and, in strict order, seq <= *after*)."""
        out: list[SpoolRow] = []
        with self._lock:
            for row in self._in_order():
                if len(out) >= limit:
                    break
                if row.seq in skip or (not self._alerts_first and row.seq <= after):
                    continue
                out.append(row)
        return out

    def ack(self, seqs: Collection[int]) -> None:
        """Delete delivered rows."""
        with self._lock:
            for seq in seqs:
                for rows_of_prio in self._rows:
                    rows_of_prio.pop(seq, None)

    def adopt(self, other: str | Path) -> int:
        """Move every message of an outbox file to the end of this one (see :meth:`Spool.adopt`)."""
        rows = _take_outbox_file(other)
        self.put(rows)
        return len(rows)

    def __len__(self) -> int:
        return len(self._rows[0]) + len(self._rows[1])

    def close(self) -> None:
        """Nothing to write back."""


def open_spool(
    path: str | Path, capacity: int, overflow: OverflowPolicy = "drop_oldest", *, alerts_first: bool = False
) -> Spool | MemorySpool:
    """Open the outbox file (SQLite) at *path*, or a :class:`MemorySpool` for ``":memory:"``."""
    if str(path) == ":memory:":
        return MemorySpool(capacity, overflow, alerts_first=alerts_first)
    return Spool(path, capacity, overflow, alerts_first=alerts_first)
