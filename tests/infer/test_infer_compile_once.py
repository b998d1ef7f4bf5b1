"""A model is loaded, checked and smoke-tested once per compile; runs reuse it (issue 7: compile once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.compiler import compile_flow
from edgeflow.model import LiteRTModelHandler
from edgeflow.runtime import run
from edgeflow.testing import run_capture
from flows.pump_int8 import add_features, make_flow

from .handler_support import ZScoreModel, save_zscore_model
from .infer_support import RECORDING


class _Calls:
    """Counts calls to a method of LiteRTModelHandler; the method itself runs unchanged."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.n = 0
        real = getattr(LiteRTModelHandler, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.n += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(LiteRTModelHandler, name, counted)


def test_one_load_per_compile_for_a_whole_run(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = _Calls(monkeypatch, "_load")  # read, sha256, interpreter, manifest checks, smoke test
    reads = _Calls(monkeypatch, "_read")  # the file read and hashed
    copies = _Calls(monkeypatch, "worker_copy")
    compiled = compile_flow(make_flow())
    assert (loads.n, reads.n, copies.n) == (1, 1, 0)
    capture = run_capture(compiled)
    assert capture.report.stats.counts["infer.windows"] > 1800
    assert (loads.n, reads.n) == (1, 1)  # the run scored every window without loading the model again
    assert copies.n == 1  # one worker thread: one interpreter made from the bytes already checked
    run(compiled)
    assert (loads.n, reads.n, copies.n) == (1, 1, 2)  # a second run of the same compiled flow: still no load
    compile_flow(make_flow())
    assert loads.n == 2


def test_several_workers_share_the_one_load(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = _Calls(monkeypatch, "_load")
    copies = _Calls(monkeypatch, "worker_copy")
    compiled = compile_flow(make_flow())
    one, two = run_capture(compiled), run_capture(compiled, workers=2)
    assert loads.n == 1
    assert 2 <= copies.n <= 3  # one interpreter per thread scoring at once, never a reload
    verdicts = [sorted((s["sensor"], tuple(s["interval"]), s["anomaly"]) for s in c.only()) for c in (one, two)]
    assert verdicts[0] == verdicts[1]


def test_one_load_per_compile_for_a_handler_object(tmp_path: Path, recorded: Any) -> None:
    handler = ZScoreModel(save_zscore_model(tmp_path / "z.npz", recorded.x[recorded.y == 0], threshold=10.0))
    flow = Flow("infer-handler-once")
    scores = eo.infer("model", add_features(eo.replay("samples", flow, RECORDING)), model=handler)
    eo.summarize("summary", scores, every_s=10, sink=eo.stdout())
    compiled = compile_flow(flow)
    assert handler.loads == 1
    run_capture(compiled, workers=2)
    assert handler.loads == 1
