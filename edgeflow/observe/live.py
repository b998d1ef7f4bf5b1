"""What ``edgeflow run`` shows while a flow runs: a ``rich`` live panel on a terminal, one line per tick otherwise.

Both read snapshots of the run's stats (:meth:`~edgeflow.metrics.FlowStats.to_json`), one
per process, so the parent of ``edgeflow run -p N`` shows its children the same way. A
figure that does not exist yet (no output, so no latency) shows as ``-``, never ``nan``.

>>> from edgeflow.metrics import FlowStats
>>> status_line(FlowStats(samples_in=1_200).to_json())  # doctest: +ELLIPSIS
'       1,200 samples ...  windows 0  anomalous 0  dead 0  p99 - us'
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from edgeflow.metrics import FlowStats, Histogram, is_loss
from edgeflow.records import to_datetime

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

__all__ = ["LineView", "LiveView", "Part", "progress_fraction", "render", "status_line"]

Part = tuple[str, dict[str, Any]]
"""A process label (``""`` alone) and its stats snapshot (:meth:`~edgeflow.metrics.FlowStats.to_json`)."""

_RATE_WINDOW_S = 3.0
_SHOWN_SENSORS = 8
_WIDTH = 96


def progress_fraction(data: dict[str, Any]) -> float | None:
    """Share of the input read so far (0..1), when the sources can tell; ``None`` otherwise.

    A replay that counts ``replay.bytes_read`` and ``replay.bytes_total`` is exact; otherwise raw
    bytes taken in are compared with the size of the replayed files (plain files only).

    >>> progress_fraction({"counts": {"replay.bytes_read": 30, "replay.bytes_total": 120}, "bytes_in": 0})
    0.25
    >>> progress_fraction({"counts": {}, "bytes_in": 10, "expected_bytes_in": None}) is None
    True
    """
    counts = data.get("counts", {})
    total = counts.get("replay.bytes_total", 0)
    if total > 0:
        return min(1.0, counts.get("replay.bytes_read", 0) / total)
    expected = data.get("expected_bytes_in")
    if expected:
        return min(1.0, data.get("bytes_in", 0) / expected)
    return None


def _us(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:,.0f}"


def status_line(data: dict[str, Any]) -> str:
    """One line of progress (for logs and pipes, where a live panel cannot redraw)."""
    elapsed = max(float(data.get("elapsed_s") or 0.0), 1e-9)
    lat = data["latency"]
    return (
        f"{data['samples_in']:>12,} samples  {data['samples_in'] / elapsed:>10,.0f}/s  windows {data['windows']:,}  "
        f"anomalous {data['anomalies']:,}  dead {data['dead_letters']}  p99 {_us(lat['p99_us'])} us"
    )


def _total(parts: Sequence[Part]) -> dict[str, Any]:
    """One snapshot for all processes; percentiles estimated from the merged histogram when several have outputs."""
    if len(parts) == 1:
        return parts[0][1]
    data = FlowStats.merged(FlowStats.from_json(d) for _label, d in parts).to_json()
    with_outputs = [d for _label, d in parts if d["latency"]["count"]]
    if len(with_outputs) == 1:
        data["latency"].update(p50_us=with_outputs[0]["latency"]["p50_us"], p99_us=with_outputs[0]["latency"]["p99_us"])
    elif with_outputs:
        h = Histogram.from_json(data["latency"]["histogram"])
        data["latency"].update(p50_us=h.quantile_s(0.5) * 1e6, p99_us=h.quantile_s(0.99) * 1e6)
    return data


def _losses(data: dict[str, Any]) -> int:
    return sum(n for name, n in data["counts"].items() if is_loss(name))


def _clock(ts: float | None) -> str:
    if ts is None or not math.isfinite(ts):
        return "-"
    return to_datetime(ts).strftime("%H:%M:%S.%f")[:10]


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def render(
    flow: str,
    parts: Sequence[Part],
    *,
    rate: float | None = None,
    eta_s: float | None = None,
) -> RenderableType:
    """Return the live panel for *parts* (one per process); *rate* is the recent samples/s, *eta_s* the time left.

    >>> import io
    >>> from rich.console import Console
    >>> console = Console(width=100, record=True, file=io.StringIO())
    >>> console.print(render("demo", [("", FlowStats(samples_in=5).to_json())]))
    >>> "p50 -" in console.export_text() and "nan" not in console.export_text()
    True
    """
    from rich.console import Group
    from rich.constrain import Constrain
    from rich.panel import Panel
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    data = _total(parts)
    lat = data["latency"]
    elapsed = float(data.get("elapsed_s") or 0.0)
    speed = rate if rate is not None else (data["samples_in"] / elapsed if elapsed > 0 else 0.0)
    rows: list[RenderableType] = []
    fraction = progress_fraction(data)
    if fraction is not None:
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            Text("input", style="bold"),
            ProgressBar(total=1.0, completed=fraction, width=40),
            Text(f"{100 * fraction:5.1f} %  ETA {_duration(eta_s)}"),
        )
        rows.append(bar)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("samples", f"{data['samples_in']:,}   {speed:,.0f}/s")
    grid.add_row("windows", f"{data['windows']:,}   anomalous {data['anomalies']:,}   outputs {data['items_out']:,}")
    grid.add_row("latency", f"p50 {_us(lat['p50_us'])} us   p99 {_us(lat['p99_us'])} us   ({lat['count']:,} outputs)")
    grid.add_row(
        "losses",
        f"drops {_losses(data):,}   dead letters {data['dead_letters']:,}   late {data['late']:,}   "
        f"gaps {data['gaps']:,}",
    )
    reduction = 1 - data["bytes_out"] / data["bytes_in"] if data["bytes_in"] else 0.0
    grid.add_row("bytes", f"in {data['bytes_in']:,}   out {data['bytes_out']:,}   reduction {100 * reduction:.2f} %")
    models = data["models"]
    swaps = data["counts"].get("infer.swaps", 0)
    rejected = data["counts"].get("infer.swap_rejected", 0)
    rollbacks = data["counts"].get("infer.rollbacks", 0)
    model_text = "   ".join(f"{step}: {model}" for step, model in sorted(models.items())) or "-"
    if swaps or rejected or rollbacks:
        model_text += f"   (swaps {swaps}, rejected {rejected}, rolled back {rollbacks})"
    grid.add_row("model", model_text)
    if data["problems"]:
        grid.add_row(Text("problem", style="bold red"), Text("; ".join(data["problems"]), style="red"))
    rows.append(grid)
    if data["flags"]:
        sensors = Table(box=None, padding=(0, 2), show_edge=False, header_style="bold")
        for name in ("flagged sensor", "windows", "first", "last"):
            sensors.add_column(name, justify="right" if name == "windows" else "left")
        ordered = sorted(data["flags"].items(), key=lambda kv: -(kv[1]["last"] or 0.0))
        for sensor, f in ordered[:_SHOWN_SENSORS]:
            sensors.add_row(sensor, f"{f['windows']:,}", _clock(f["first"]), _clock(f["last"]))
        if len(ordered) > _SHOWN_SENSORS:
            sensors.add_row(f"+{len(ordered) - _SHOWN_SENSORS} more", "", "", "")
        rows.append(sensors)
    else:
        rows.append(Text("anomalies  none flagged yet", style="dim"))
    if len(parts) > 1:
        procs = Table(box=None, padding=(0, 2), show_edge=False, header_style="bold")
        for name in ("process", "samples", "windows", "anomalous", "dead", "drops", "p50 us", "p99 us"):
            procs.add_column(name, justify="left" if name == "process" else "right")
        for label, d in parts:
            procs.add_row(
                label,
                f"{d['samples_in']:,}",
                f"{d['windows']:,}",
                f"{d['anomalies']:,}",
                f"{d['dead_letters']:,}",
                f"{_losses(d):,}",
                _us(d["latency"]["p50_us"]),
                _us(d["latency"]["p99_us"]),
            )
        rows.append(procs)
    title = f"edgeflow run · {parts[0][1].get('flow') or flow} · {_duration(elapsed)}"
    return Constrain(Panel(Group(*rows), title=title, title_align="left"), width=_WIDTH)


class LineView:
    """One status line every *every_s* for all processes together, from a thread (a context manager).

    >>> lines = []
    >>> with LineView(lambda: [("p0", FlowStats(samples_in=7).to_json())], lines.append, every_s=0.01):
    ...     time.sleep(0.05)
    >>> lines[0].split()[:2]
    ['7', 'samples']
    """

    def __init__(
        self, snapshot: Callable[[], Sequence[Part]], write: Callable[[str], Any], every_s: float = 1.0
    ) -> None:
        self._snapshot = snapshot
        self._write = write
        self._every_s = every_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgeflow-status-lines", daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self._every_s):
            parts = self._snapshot()
            if parts:
                self._write(status_line(_total(parts)))

    def __enter__(self) -> LineView:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()


class LiveView:
    """A live panel redrawn a few times a second while a flow runs (a context manager).

    *snapshot* returns one :data:`Part` per process; it is called from the refresh thread.
    """

    def __init__(
        self, flow: str, snapshot: Callable[[], Sequence[Part]], console: Console, refresh_per_second: float = 4.0
    ) -> None:
        from rich.live import Live

        self._flow = flow
        self._snapshot = snapshot
        self._history: deque[tuple[float, int, float | None]] = deque()
        self._live = Live(
            console=console,
            get_renderable=self._render,
            refresh_per_second=refresh_per_second,
            transient=True,
            redirect_stdout=True,
            redirect_stderr=True,
        )

    def _render(self) -> RenderableType:
        parts = self._snapshot()
        if not parts:
            from rich.text import Text

            return Text(f"edgeflow run · {self._flow} · starting", style="dim")
        samples = sum(d["samples_in"] for _label, d in parts)
        fraction = progress_fraction(_total(parts)) if len(parts) > 1 else progress_fraction(parts[0][1])
        now = time.monotonic()
        self._history.append((now, samples, fraction))
        while len(self._history) > 2 and now - self._history[0][0] > _RATE_WINDOW_S:
            self._history.popleft()
        rate = eta = None
        t0, n0, f0 = self._history[0]
        if now - t0 > 0.2:
            rate = (samples - n0) / (now - t0)
            if fraction is not None and f0 is not None and fraction > f0:
                eta = (1.0 - fraction) * (now - t0) / (fraction - f0)
        return render(self._flow, parts, rate=rate, eta_s=eta)

    def __enter__(self) -> LiveView:
        self._live.start(refresh=True)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._live.stop()
