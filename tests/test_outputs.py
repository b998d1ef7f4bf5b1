"""Issue 8.2 and 8.8: outputs are strict JSON and a restart appends instead of wiping earlier results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.metrics import FlowStats
from edgeflow.records import DeadLetter
from edgeflow.runtime import run
from edgeflow.sinks import DeadLetterSink, JsonlSink


def strict_loads(line: str) -> Any:
    """json.loads that refuses NaN and Infinity, as an RFC 8259 parser does."""

    def refuse(name: str) -> None:
        msg = f"not JSON: {name}"
        raise ValueError(msg)

    return json.loads(line, parse_constant=refuse)


def test_non_finite_numbers_are_written_as_null(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "s.jsonl", FlowStats())
    part = sink.open(0, 1)
    part.write_batch([{"score": float("nan"), "ci95": [float("-inf"), 1.5], "features": {"rms": float("inf")}}])
    part.close()
    (line,) = (tmp_path / "s.jsonl").read_text().splitlines()
    assert strict_loads(line) == {"score": None, "ci95": [None, 1.5], "features": {"rms": None}}


def test_a_second_run_appends_to_summaries_and_dead_letters(tmp_path: Path) -> None:
    rec = tmp_path / "r.csv"
    rec.write_text("ts,sensor,v\n2026-01-01T00:00:00Z,a,1\n2026-01-01T00:00:01,a,2\n2026-01-01T00:00:02Z,a,1e999\n")
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    for _ in range(2):
        flow = Flow("append", dead_letter_path=str(dead))
        eo.output("out", eo.map("as_dict", eo.replay("samples", flow, rec), lambda b: {"n": len(b)}), eo.jsonl(out))
        run(flow)
    assert [strict_loads(x) for x in out.read_text().splitlines()] == [{"n": 1}, {"n": 1}]
    letters = [strict_loads(x) for x in dead.read_text().splitlines()]
    assert [d["reason"][:6] for d in letters] == ["line 3", "line 4"] * 2


def test_dead_letters_are_strict_json(tmp_path: Path) -> None:
    part = DeadLetterSink(tmp_path / "d.jsonl").open(0, 1)
    part.write_batch([DeadLetter("s", "bad \x00 value nan", "x,y,NaN")])
    part.close()
    assert strict_loads((tmp_path / "d.jsonl").read_text())["payload"] == "x,y,NaN"
