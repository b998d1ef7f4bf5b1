"""The flow graph users declare: named steps joined by streams.

Operators (see :mod:`edgeflow.operators`) add steps; the compiler
(:mod:`edgeflow.compiler`) checks the graph and the engine (:mod:`edgeflow.engine`)
runs it. A step's ``schema`` rule is pure: it computes the step's output schema
from its inputs' schemas, or raises. Its ``build`` factory is called once per run
with a :class:`StepContext` (the resolved schemas, the run's counters, whatever
``check`` prepared) and returns the engine-neutral implementation:

* ``source``: a :class:`~edgeflow.connectors.Source`;
* ``map``: a :class:`MapLogic` (``fn(item) -> item | None`` or ``batch(items) -> items``);
* ``keyed``: ``new_state(resume) -> KeyedLogic``, one per sensor, resumed from a snapshot;
* ``sink``: a :class:`~edgeflow.connectors.Sink`.

>>> flow = Flow("demo")
>>> flow.name
'demo'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from edgeflow.errors import FlowValidationError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from edgeflow.context import RunContext

__all__ = ["Flow", "KeyedLogic", "MapLogic", "Schema", "Step", "StepContext", "StepKind", "Stream", "build_config"]

StepKind = Literal["source", "map", "keyed", "sink"]
ItemKind = Literal["samples", "windows", "scored", "summaries", "any"]


@dataclass(frozen=True, slots=True)
class Schema:
    """What a stream carries, known before data flows.

    >>> Schema("windows", channels=("accel",), rate_hz=500.0).n_features
    0
    """

    kind: ItemKind
    channels: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    rate_hz: float | None = None
    window_size: int | None = None

    @property
    def n_features(self) -> int:
        """Length of the feature vector on each item (0 when there is none)."""
        return len(self.features)

    def but(self, **changes: Any) -> Schema:
        """Return a copy with some fields changed."""
        return replace(self, **changes)


class KeyedLogic(Protocol):
    """Per-sensor state of a keyed step, fed batches of one sensor's items in order."""

    def on_batch(self, items: list[Any]) -> Iterable[Any]:
        """Consume items; return what to emit downstream."""
        ...

    def on_eof(self) -> Iterable[Any]:
        """Input has ended: return what is left to emit."""
        ...

    def snapshot(self) -> Any:
        """Return a picklable copy of the state, from which the step's factory can resume it."""
        ...

    # A state may also have ``discard: bool``: when true after a batch, the engine drops the state (the
    # next item of that sensor gets a new one), e.g. for a sensor refused by a bound on sensors.
    # Its class may have a static ``on_batches([(state, items), ...]) -> list``: the engine then hands it
    # several sensors' batches in one call (to vectorize across them); it must return what each state's
    # ``on_batch(items)`` would (order across sensors free), as ``SensorWindows.on_batches`` does.


@dataclass(frozen=True, slots=True)
class MapLogic:
    """A stateless step: *fn* per item (``None`` drops it) and/or *batch* over many items at once.

    A batch function may take items of several sensors and return items in any number (results and
    dead letters); outputs are routed by their ``.sensor``. A step that holds items back across batches
    (e.g. to run a model on larger batches) gives *flush*: the engine calls ``flush(False)`` every
    *flush_every_s* seconds while the flow runs (return what is overdue) and ``flush(True)`` once its
    input has ended (return everything held), so nothing held is lost.
    """

    fn: Callable[[Any], Any] | None = None
    batch: Callable[[list[Any]], list[Any]] | None = None
    flush: Callable[[bool], list[Any]] | None = None
    flush_every_s: float = 0.05


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a step's ``build`` factory gets when a compiled flow starts running.

    >>> from edgeflow.context import RunContext
    >>> ctx = StepContext("win", (Schema("samples", channels=("x",)),), Schema("windows"), RunContext("demo"))
    >>> ctx.input.channels
    ('x',)
    """

    step_id: str
    inputs: tuple[Schema, ...]
    """The resolved schemas of the step's inputs."""
    schema: Schema
    """The step's own output schema."""
    run: RunContext
    prepared: Any = None
    """What the step's ``check`` returned at compile time (a loaded model, a probed broker...)."""
    priorities: dict[str, str] = field(default_factory=dict)
    """The flow's sensor priorities (sensor -> ``"high"``), from every step that declares them (``eo.infer``'s
    ``priorities=``): a source can hand high-priority sensors' input on first."""

    @property
    def input(self) -> Schema:
        """The schema of the step's only input."""
        (schema,) = self.inputs
        return schema


SchemaRule = Callable[[tuple[Schema, ...]], Schema]


def _pass_through(inputs: tuple[Schema, ...]) -> Schema:
    return inputs[0] if inputs else Schema("any")


@dataclass(slots=True)
class Step:
    """One named node of a flow."""

    step_id: str
    operator: str
    kind: StepKind
    inputs: tuple[str, ...]
    config: BaseModel | None = None
    schema: SchemaRule = _pass_through
    """Computes this step's output schema from its inputs' schemas; raises
    :class:`FlowValidationError` when the inputs do not fit."""
    build: Callable[[StepContext], Any] | None = None
    """Makes the step's implementation for one run (see the module docstring for what each kind returns)."""
    can_fail: bool = False
    """Whether the step may emit :class:`~edgeflow.records.DeadLetter` items."""
    check: Callable[[], Any] | None = None
    """Extra checks run once at compile time (files exist, models load...); what it returns reaches
    ``build`` as ``StepContext.prepared``."""


@dataclass(frozen=True, slots=True)
class Stream:
    """The output of a step, handed to the next operator."""

    flow: Flow
    step_id: str

    def __repr__(self) -> str:
        return f"Stream({self.flow.name!r}, {self.step_id!r})"


@dataclass
class Flow:
    """A named dataflow graph.

    >>> import edgeflow.operators as eo
    >>> flow = Flow("pump")
    >>> s = eo.replay("samples", flow, "examples/data/pump_vibration.csv")
    >>> [step.step_id for step in flow.steps]
    ['samples']
    """

    name: str
    dead_letter_path: str | None = None
    """JSONL file for dead letters; ``None`` prints them to stderr."""
    recovery_dir: str | None = None
    """Folder of the snapshot store: with it, a restarted flow resumes its sources and every step's state from
    the last snapshot instead of starting over (``None``: no snapshots)."""
    snapshot_every_s: float = 1.0
    """Seconds between snapshots when ``recovery_dir`` is set: at most this much output is repeated after a crash."""
    metrics_port: int | None = None
    """Serve Prometheus ``/metrics``, ``/healthz`` and ``/readyz`` on this port while the flow runs (process *i* of a
    cluster: port + *i*); ``edgeflow run --metrics-port`` overrides it. ``None``: no metrics server."""
    latency_budget_ms: float | None = None
    """Ingest → verdict latency the flow promises (p99, milliseconds): a scoring step that breaks it steps down its
    degradation ladder (:mod:`edgeflow.operators.ladder`) and back up when load falls. ``None``: no budget."""
    steps: list[Step] = field(default_factory=list)

    def __post_init__(self) -> None:
        budget = self.latency_budget_ms
        if budget is not None and not (isinstance(budget, (int, float)) and 0 < budget < float("inf")):
            problem = "a latency budget must be a positive number of milliseconds"
            raise FlowValidationError(self.name, "latency_budget_ms", budget, problem, hint="e.g. latency_budget_ms=15")

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, steps={[step.step_id for step in self.steps]})"

    def add_step(self, step: Step) -> Stream:
        """Add a step and return its output stream.

        Duplicate ids fail at once; unknown inputs and cycles fail at compile time.
        """
        if any(existing.step_id == step.step_id for existing in self.steps):
            raise FlowValidationError(
                step.step_id,
                "step_id",
                step.step_id,
                "another step already uses this id",
                hint="give each step a unique id",
            )
        self.steps.append(step)
        return Stream(self, step.step_id)


def build_config(step_id: str, model: type[BaseModel], /, **settings: Any) -> Any:
    """Validate an operator's settings, turning pydantic errors into a :class:`FlowValidationError`.

    >>> from pydantic import BaseModel, Field
    >>> class Cfg(BaseModel):
    ...     size: int = Field(gt=0)
    >>> build_config("win", Cfg, size=0)
    Traceback (most recent call last):
    ...
    edgeflow.errors.FlowValidationError: step 'win': field 'size' got 0: Input should be greater than 0...
    """
    from pydantic import ValidationError

    try:
        return model(**settings)
    except ValidationError as exc:
        first = exc.errors()[0]
        field, value, problem = ".".join(str(part) for part in first["loc"]) or None, first.get("input"), first["msg"]
        if field is None and (named := _FIELD_IN_MESSAGE.match(problem)):  # a cross-field check names its field
            field, problem = named.group(1), named.group(2)
            value = settings.get(field)
        raise FlowValidationError(
            step_id, field, value, problem, hint=f"see the settings of {model.__name__}"
        ) from None


_FIELD_IN_MESSAGE = re.compile(r"^Value error, (\w+): (.*)$", re.DOTALL)
