"""One contract for every built-in operator (like River's checks): found automatically from ``eo.__all__``.

Each operator must: validate its settings into a frozen pydantic model that forbids unknown fields,
turn a bad setting into a FlowValidationError naming the step and the field, and compile in a flow.
A new operator without a case here fails ``test_every_public_operator_has_a_case``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import edgeflow.operators as eo
from edgeflow import Flow, FlowValidationError, Stream
from edgeflow.compiler import compile_flow
from edgeflow.context import RunContext
from edgeflow.operators.output import SinkSpec
from operators.crest_factor import crest_factor

REC = "examples/data/pump_vibration.csv"
MODEL = "models/pump_ae/manifest.json"


def _samples(flow: Flow) -> Stream:
    return eo.replay("samples", flow, REC)


def _windows(flow: Flow) -> Stream:
    return eo.window("win", _samples(flow), rate_hz=500, size=256, hop=64)


def _features(flow: Flow) -> Stream:
    names = [
        "mean",
        "std",
        "min",
        "max",
        "rms",
        "ptp",
        "skew",
        "kurtosis",
        "p5",
        "p95",
        "fft_bands(0-50,50-150,150-250)",
    ]
    return eo.features("feat", _windows(flow), names)


def _scored(flow: Flow) -> Stream:
    return eo.zscore_detector("detect", _features(flow))


@dataclass(frozen=True)
class Case:
    build: Callable[[Flow, dict[str, Any]], Stream | SinkSpec | None]
    bad: dict[str, Any]
    """One bad setting: its field name is what the error must name."""


CASES: dict[str, Case] = {
    "replay": Case(lambda f, kw: eo.replay("op", f, REC, **kw), {"batch_size": 0}),
    "window": Case(lambda f, kw: eo.window("op", _samples(f), **{"rate_hz": 500, "size": 64, **kw}), {"rate_hz": 0}),
    "features": Case(lambda f, kw: eo.features("op", _windows(f), **{"names": ["rms"], **kw}), {"names": ()}),
    "zscore_detector": Case(lambda f, kw: eo.zscore_detector("op", _features(f), **kw), {"threshold": -1}),
    "ewma_detector": Case(lambda f, kw: eo.ewma_detector("op", _features(f), **kw), {"warmup": 1}),
    "robust_detector": Case(lambda f, kw: eo.robust_detector("op", _features(f), **kw), {"history": 2}),
    "seasonal_detector": Case(lambda f, kw: eo.seasonal_detector("op", _features(f), **kw), {"bins_per_day": 0}),
    "river_detector": Case(
        lambda f, kw: eo.river_detector("op", _features(f), _hst(), **{"threshold": 0.9, **kw}), {"warmup": -1}
    ),
    "summarize": Case(lambda f, kw: eo.summarize("op", _scored(f), **kw), {"every_s": 0}),
    "infer": Case(
        lambda f, kw: eo.infer("op", crest_factor("crest", _features(f)), **{"model": MODEL, **kw}), {"num_threads": 0}
    ),
    "mqtt_source": Case(lambda f, kw: eo.mqtt_source("op", f, "plant/{sensor}/accel", **kw), {"qos": 7}),
    "mqtt_sink": Case(lambda f, kw: eo.mqtt_sink(**{"step_id": "op", **kw}), {"qos": 5}),
    "map": Case(lambda f, kw: eo.map("op", _samples(f), lambda x: x), {}),
    "filter": Case(lambda f, kw: eo.filter("op", _samples(f), lambda x: True), {}),
    "output": Case(lambda f, kw: eo.output("op", _samples(f), eo.stdout()), {}),
    "stdout": Case(lambda f, kw: eo.stdout(), {}),
    "jsonl": Case(lambda f, kw: eo.jsonl("out/conformance.jsonl"), {}),
    "stateful": Case(lambda f, kw: eo.stateful("op", _scored(f), _Count), {}),
    "window_feature": Case(lambda f, kw: _doubled_rms("op", _features(f), **kw), {"factr": 3.0}),
}


def _hst() -> Any:
    pytest.importorskip("river")  # the optional `river` extra
    from river import anomaly, preprocessing

    return preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=1)


class _Count:
    def __init__(self) -> None:
        self.n = 0

    def update(self, item: Any) -> Any:
        self.n += 1
        return item


@eo.window_feature(needs=["rms"], adds=["rms2"])
def _doubled_rms(rms: Any, *, factor: float = 2.0) -> Any:
    return factor * rms


def test_every_public_operator_has_a_case() -> None:
    assert set(CASES) == set(eo.__all__)


@pytest.mark.parametrize("name", sorted(CASES))
def test_operator_settings_are_frozen_strict_and_named_in_errors(name: str) -> None:
    case = CASES[name]
    flow = Flow(f"conf-{name}")
    made = case.build(flow, {})
    if isinstance(made, SinkSpec):
        assert callable(made.build)
    else:
        step = next(s for s in flow.steps if s.step_id == "op")
        if step.config is not None:
            assert isinstance(step.config, BaseModel)
            assert step.config.model_config.get("frozen") is True
            assert step.config.model_config.get("extra") == "forbid"
            field = next(iter(type(step.config).model_fields))
            with pytest.raises(ValidationError):
                setattr(step.config, field, getattr(step.config, field))
        if isinstance(made, Stream):
            assert repr(made) == f"Stream('conf-{name}', 'op')"
    if case.bad:
        ((field, value),) = case.bad.items()
        with pytest.raises(FlowValidationError) as info:
            case.build(Flow(f"bad-{name}"), case.bad)
        assert info.value.step_id == "op" and info.value.field == field
        assert str(info.value).startswith(f"step 'op': field '{field}' got {value!r}")


@pytest.mark.parametrize(
    "name",
    [
        "window",
        "zscore_detector",
        "ewma_detector",
        "summarize",
        "features",
        "infer",
        "stateful",
        "window_feature",
        "replay",
        "robust_detector",
        "seasonal_detector",
        "river_detector",
    ],
)
def test_operator_compiles_and_its_state_snapshots_and_resumes(name: str) -> None:
    flow = Flow(f"compile-{name}")
    out = CASES[name].build(flow, {})
    assert isinstance(out, Stream)
    eo.output("sink", out, eo.stdout())
    compiled = compile_flow(flow)
    step = next(s for s in compiled.order if s.step_id == "op")
    made = compiled.build(step, RunContext(flow.name))
    if step.kind == "keyed":
        state = made(None)
        assert list(state.on_eof()) == []
        snap = pickle.dumps(state.snapshot())
        resumed = made(pickle.loads(snap))
        assert pickle.dumps(resumed.snapshot()) == snap
    elif step.kind == "source":
        part = made.open(made.partitions()[0], None)
        first = part.next_batch()
        resumed = made.open(made.partitions()[0], pickle.loads(pickle.dumps(part.snapshot())))
        assert resumed.snapshot() == part.snapshot() and first
        part.close()
        resumed.close()
    else:
        assert step.kind == "map" and (made.fn is not None or made.batch is not None)
