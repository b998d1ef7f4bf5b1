"""Start-up: wall time of ``edgeflow run`` on a tiny replay flow, beside the floor of its libraries.

    python bench/bench_startup.py               # 15 interleaved rounds
    python bench/bench_startup.py --rounds 31
    git archive HEAD~5 | tar -x -C /tmp/before && python bench/bench_startup.py --compare /tmp/before

Every figure is a fresh process, started by this script and timed until it has exited; the rows
are interleaved round by round, so noise from other work on the machine hits all of them alike.
Medians with min-max. The flow: the first 300 rows of ``examples/data/pump_vibration.csv`` ->
window (16 points, hop 8) -> features (mean, std) -> z-score -> 10 s summaries to JSONL. The
plain bytewax row runs the same steps written directly on bytewax and numpy (no validation,
no dead letters, no counters) with ``python -m bytewax.run``: the floor a bytewax user pays.

Then where one ``edgeflow run`` spends its time: by phase (an instrumented run of the same
command: ``edgeflow.cli.main()`` with timestamps where it loads, compiles, runs and returns), and
by library (``-X importtime``, self time summed by top-level package; importtime itself slows
imports, so those milliseconds are larger than in a plain run). A markdown table on stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDING = ROOT / "examples" / "data" / "pump_vibration.csv"
ROWS = 300
HEAVY = ("paho", "ssl", "asyncio", "scipy", "rich", "rich.live", "ai_edge_litert", "tensorflow", "certifi")

FLOW = """
import edgeflow.operators as eo
from edgeflow import Flow

flow = Flow("tiny")
s = eo.replay("samples", flow, __CSV__)
w = eo.window("win", s, rate_hz=500, size=16, hop=8, max_gap_s=0.05)
f = eo.features("feat", w, ["mean", "std"])
eo.summarize("summary", eo.zscore_detector("detect", f, warmup=5), every_s=10, sink=eo.jsonl(__OUT__))
"""

BYTEWAX_FLOW = '''
"""The tiny flow written directly on bytewax and numpy: windows of 16 (hop 8), mean/std, z-score, 10 s summaries."""

import json
from datetime import datetime

import bytewax.operators as op
import numpy as np
from bytewax.connectors.files import FileSink
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.testing import TestingSource

SIZE, HOP, WARMUP, EVERY_S = 16, 8, 5, 10.0


def rows(path):
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            ts, sensor, value = line.rstrip().split(",")
            yield sensor, (datetime.fromisoformat(ts).timestamp(), float(value))


class Sensor(StatefulBatchLogic):
    def __init__(self):
        self.buf, self.n, self.total, self.sq, self.summary = [], 0, 0.0, 0.0, None

    def on_batch(self, samples):
        out = []
        for sample in samples:
            self.buf.append(sample)
            if len(self.buf) == SIZE:
                out.extend(self._window(np.array(self.buf).T))
                self.buf = self.buf[HOP:]
        return out, StatefulBatchLogic.RETAIN

    def _window(self, window):
        ts, values = window
        feats = np.array([values.mean(), values.std()])
        score = 0.0
        if self.n >= WARMUP:
            mean = self.total / self.n
            std = np.sqrt(np.maximum(self.sq / self.n - mean * mean, 1e-12))
            score = float(np.abs((feats - mean) / std).max())
        self.n, self.total, self.sq = self.n + 1, self.total + feats, self.sq + feats * feats
        start = ts[-1] // EVERY_S * EVERY_S
        out = []
        if self.summary is not None and self.summary["start"] != start:
            out = self.on_eof()[0]
        if self.summary is None:
            self.summary = {"start": start, "windows": 0, "max_score": 0.0}
        self.summary["windows"] += 1
        self.summary["max_score"] = max(self.summary["max_score"], score)
        return out

    def on_eof(self):
        out = [] if self.summary is None else [self.summary]
        self.summary = None
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self):
        return None


flow = Dataflow("tiny_bytewax")
samples = op.input("samples", flow, TestingSource(rows(__CSV__), batch_size=1024))
summaries = op.stateful_batch("summaries", samples, lambda resume: Sensor())
lines = op.map("json", summaries, lambda kv: ("all", json.dumps({"sensor": kv[0], **kv[1]})))
op.output("jsonl", lines, FileSink(__OUT__))
'''

PHASES = r"""
import sys, time
marks = [("start", time.perf_counter())]
import edgeflow.cli
import edgeflow.cli.flows as flows
marks.append(("import edgeflow.cli (typer)", time.perf_counter()))
import functools
load, compile_target, finish, command = flows.load_flow, flows.compile_target, flows._finish, flows.run
seconds = []

@functools.wraps(command)
def timed_command(*args, **kw):
    marks.append(("parse command line (typer)", time.perf_counter()))
    return command(*args, **kw)

def timed_load(target):
    marks.append(("run command until the flow file loads", time.perf_counter()))
    flow = load(target)
    marks.append(("load the flow file (operators, settings)", time.perf_counter()))
    return flow

def timed_compile(target, **kw):
    compiled = compile_target(target, **kw)
    marks.append(("compile", time.perf_counter()))
    return compiled

def timed_finish(report, **kw):
    seconds.append(report.seconds)
    marks.append(("run (engine import, dataflow, execute)", time.perf_counter()))
    return finish(report, **kw)

flows.load_flow, flows.compile_target, flows._finish, flows.run = timed_load, timed_compile, timed_finish, timed_command
sys.argv = ["edgeflow", "run", sys.argv[1], "--quiet"]
try:
    edgeflow.cli.main()
except SystemExit:
    pass
marks.append(("report, return", time.perf_counter()))
import json
sys.stdout.write(json.dumps({"marks": marks, "engine_s": seconds}))
"""


def _filled(template: str, csv: Path, out: Path) -> str:
    return template.replace("__CSV__", repr(str(csv))).replace("__OUT__", repr(str(out)))


def _write_inputs(folder: Path) -> tuple[Path, Path]:
    """Write the tiny recording and the two flows into *folder*; return the edgeflow and bytewax flow files."""
    csv = folder / "tiny.csv"
    with RECORDING.open(encoding="utf-8") as src:
        csv.write_text("".join(next(src) for _ in range(ROWS + 1)), encoding="utf-8")
    flow = folder / "tiny_flow.py"
    flow.write_text(_filled(FLOW, csv, folder / "edgeflow.jsonl"), encoding="utf-8")
    plain = folder / "tiny_bytewax.py"
    plain.write_text(_filled(BYTEWAX_FLOW, csv, folder / "bytewax.jsonl"), encoding="utf-8")
    return flow, plain


def _timed(cmd: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        msg = f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]}"
        raise RuntimeError(msg)
    return elapsed


def _spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values) * 1e3:.0f} ({min(values) * 1e3:.0f}-{max(values) * 1e3:.0f})"


def _phases(flow: Path, env: dict[str, str], rounds: int) -> dict[str, list[float]]:
    """Milliseconds per phase of ``edgeflow run`` (instrumented), over *rounds* fresh processes."""
    out: dict[str, list[float]] = {}
    for _ in range(rounds):
        spawned = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", PHASES, str(flow)],
            capture_output=True,
            text=True,
            env=env,
            cwd=flow.parent,
            check=True,
        )
        exited = time.perf_counter()
        data = json.loads(done.stdout)
        marks = [("spawn", spawned), *data["marks"], ("exit", exited)]
        for (_, before), (name, after) in itertools.pairwise(marks):
            label = {"start": "interpreter start (site, .pth files)", "exit": "exit (interpreter shutdown)"}.get(
                name, name
            )
            out.setdefault(label, []).append((after - before) * 1e3)
        if data["engine_s"]:
            out.setdefault("(of the run: the engine running the flow)", []).append(data["engine_s"][0] * 1e3)
    return out


def _import_groups(flow: Path, env: dict[str, str], runs: int = 3) -> tuple[dict[str, float], set[str]]:
    """Median self import time (ms, under -X importtime) by top-level package, and every module imported."""
    groups: list[dict[str, float]] = []
    modules: set[str] = set()
    for _ in range(runs):
        cmd = [sys.executable, "-X", "importtime", "-m", "edgeflow", "run", str(flow), "--quiet"]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=flow.parent, check=True)
        totals: dict[str, float] = {}
        for line in done.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            fields = line.replace("import time:", "").split("|")
            self_us, name = fields[0].strip(), fields[2].strip()
            modules.add(name)
            top = name.split(".")[0]
            if top.startswith("_") and top.lstrip("_") in ("pydantic_core", "bytewax"):
                top = top.lstrip("_")
            group = _GROUPS.get(top, "stdlib and other")
            totals[group] = totals.get(group, 0.0) + int(self_us) / 1e3
        groups.append(totals)
    names = {name for g in groups for name in g}
    return {name: statistics.median(g.get(name, 0.0) for g in groups) for name in names}, modules


_WHY = {
    "ssl": " (with asyncio: pydantic_core's typing_extensions.deprecated imports asyncio on Python < 3.12)",
    "asyncio": " (see ssl)",
    "certifi": " (a .pth file of this machine's site-packages, before any edgeflow code)",
}

_GROUPS = {
    "numpy": "numpy",
    "pydantic": "pydantic (+ pydantic_core, annotated_types, typing_inspection)",
    "pydantic_core": "pydantic (+ pydantic_core, annotated_types, typing_inspection)",
    "annotated_types": "pydantic (+ pydantic_core, annotated_types, typing_inspection)",
    "typing_inspection": "pydantic (+ pydantic_core, annotated_types, typing_inspection)",
    "typing_extensions": "pydantic (+ pydantic_core, annotated_types, typing_inspection)",
    "bytewax": "bytewax",
    "typer": "typer (+ click, annotated_doc)",
    "click": "typer (+ click, annotated_doc)",
    "annotated_doc": "typer (+ click, annotated_doc)",
    "rich": "rich",
    "edgeflow": "edgeflow",
    "tiny_flow": "edgeflow",
    "certifi": "site: certifi (a .pth file of this machine)",
    "__editable___edgeflow_0_1_0_finder": "site: editable-install finder",
}


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (fresh processes each)")
    parser.add_argument(
        "--compare",
        type=Path,
        help="also time `edgeflow run` with the edgeflow package of this source tree (e.g. `git archive` of a commit)",
    )
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        _bench(folder, args.rounds, args.compare)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _bench(folder: Path, rounds: int, compare: Path | None = None) -> None:
    flow, plain = _write_inputs(folder)
    # This checkout's edgeflow, however (or wherever) the package is installed; every row gets the same path entry.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cached = {**env, "PYTHONPYCACHEPREFIX": str(folder / "pycache")}
    cached.pop("PYTHONDONTWRITEBYTECODE", None)
    py = sys.executable
    script = Path(py).parent / "edgeflow"
    rows: list[tuple[str, list[str], dict[str, str]]] = [
        ("`python -c pass` (interpreter, site)", [py, "-c", "pass"], env),
        (
            "`python -c 'import bytewax, numpy'` (bytewax is a namespace package: numpy alone)",
            [py, "-c", "import bytewax, numpy"],
            env,
        ),
        (
            "`python -c 'import bytewax.operators, bytewax.run, numpy'`",
            [py, "-c", "import bytewax.operators, bytewax.run, numpy"],
            env,
        ),
        ("plain bytewax, same tiny flow (`python -m bytewax.run`)", [py, "-m", "bytewax.run", str(plain)], env),
        ("`python -c 'import edgeflow'`", [py, "-c", "import edgeflow"], env),
        ("`python -c 'import edgeflow.operators'`", [py, "-c", "import edgeflow.operators"], env),
        ("**`edgeflow run tiny.py --quiet`**", [str(script), "run", str(flow), "--quiet"], env),
    ]
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        rows.append(
            (
                "`edgeflow run` with edgeflow's bytecode cached (no PYTHONDONTWRITEBYTECODE)",
                [str(script), "run", str(flow), "--quiet"],
                cached,
            )
        )
        _timed([str(script), "run", str(flow), "--quiet"], cached, folder)  # writes the cache
    if compare is not None:
        other = {**env, "PYTHONPATH": str(compare.resolve())}
        rows.append((f"`edgeflow run` of {compare}", [str(script), "run", str(flow), "--quiet"], other))
    shim = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "shims" / "edgeflow"
    if shim.exists():  # what `edgeflow` on this machine's PATH is: a bash script that finds the interpreter first
        rows.append(("`edgeflow run` through the pyenv shim on PATH", [str(shim), "run", str(flow), "--quiet"], env))
    for _, cmd, row_env in rows:  # warm the file cache
        _timed(cmd, row_env, folder)
    times: dict[str, list[float]] = {label: [] for label, _, _ in rows}
    for _ in range(rounds):
        for label, cmd, row_env in rows:
            times[label].append(_timed(cmd, row_env, folder))
    load = os.getloadavg()
    print(f"## Start-up ({rounds} interleaved rounds, {os.cpu_count()} cores, load {load[0]:.1f} at the end)\n")
    where = subprocess.run(
        [py, "-c", "import edgeflow; print(edgeflow.__file__)"], capture_output=True, text=True, env=env, cwd=folder
    )
    home = Path(where.stdout.strip()).parent
    version = sys.version.split()[0]
    print(f"Tiny flow: {ROWS} rows, 4 sensors; python {version}; edgeflow from {home}; ms, median (min-max).\n")
    print("| command | wall ms |")
    print("|---|---|")
    for label, values in times.items():
        print(f"| {label} | {_spread(values)} |")
    phases = _phases(flow, env, max(5, rounds // 2))
    print("\n### Where one `edgeflow run` goes (instrumented, ms, median (min-max))\n")
    print("| phase | ms |")
    print("|---|---|")
    for label, values in phases.items():
        print(f"| {label} | {_spread([v / 1e3 for v in values])} |")
    groups, modules = _import_groups(flow, env)
    print("\n### Imports of `edgeflow run` by library (self time under `-X importtime`, ms, median of 3)\n")
    print("| library | ms |")
    print("|---|---|")
    for name, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {ms:.1f} |")
    loaded = [f"{name}{_WHY.get(name, '')}" for name in HEAVY if name in modules]
    absent = [name for name in HEAVY if name not in modules]
    print(f"\nLoaded by `edgeflow run` of the tiny flow: {', '.join(loaded) or 'none of the heavy ones'}.")
    print(f"Not loaded: {', '.join(absent)}.")


if __name__ == "__main__":
    main()
