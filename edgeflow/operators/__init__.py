"""Built-in operators: plain functions ``(step_id, up, ...) -> Stream``.

Each operator's module is imported when a flow first uses it, so a flow pays
only for the operators it uses (and never for MQTT or the model runtime unless
it uses them).

>>> import edgeflow.operators as eo
>>> sorted(eo.__all__)[:4]
['ewma_detector', 'features', 'filter', 'infer']
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeflow.operators.baselines import robust_detector, seasonal_detector
    from edgeflow.operators.custom import filter, map
    from edgeflow.operators.detect import ewma_detector, zscore_detector
    from edgeflow.operators.features import features
    from edgeflow.operators.inference import infer
    from edgeflow.operators.mqtt import mqtt_sink, mqtt_source
    from edgeflow.operators.output import jsonl, output, stdout
    from edgeflow.operators.replay import replay
    from edgeflow.operators.river_anomaly import river_detector
    from edgeflow.operators.stateful import stateful
    from edgeflow.operators.summarize import summarize
    from edgeflow.operators.window import window
    from edgeflow.operators.window_feature import window_feature

__all__ = [
    "ewma_detector",
    "features",
    "filter",
    "infer",
    "jsonl",
    "map",
    "mqtt_sink",
    "mqtt_source",
    "output",
    "replay",
    "river_detector",
    "robust_detector",
    "seasonal_detector",
    "stateful",
    "stdout",
    "summarize",
    "window",
    "window_feature",
    "zscore_detector",
]

_LAZY = {
    "ewma_detector": "edgeflow.operators.detect",
    "features": "edgeflow.operators.features",
    "filter": "edgeflow.operators.custom",
    "infer": "edgeflow.operators.inference",
    "jsonl": "edgeflow.operators.output",
    "map": "edgeflow.operators.custom",
    "mqtt_sink": "edgeflow.operators.mqtt",
    "mqtt_source": "edgeflow.operators.mqtt",
    "output": "edgeflow.operators.output",
    "replay": "edgeflow.operators.replay",
    "river_detector": "edgeflow.operators.river_anomaly",
    "robust_detector": "edgeflow.operators.baselines",
    "seasonal_detector": "edgeflow.operators.baselines",
    "stateful": "edgeflow.operators.stateful",
    "stdout": "edgeflow.operators.output",
    "summarize": "edgeflow.operators.summarize",
    "window": "edgeflow.operators.window",
    "window_feature": "edgeflow.operators.window_feature",
    "zscore_detector": "edgeflow.operators.detect",
}
"""Every operator and the module that defines it."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    msg = f"module 'edgeflow.operators' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Operators(ModuleType):
    """The package's module type: an operator named like its module (``window``) stays the operator.

    Importing ``edgeflow.operators.window`` sets the package's ``window`` to the module; here it is set to
    the module's ``window`` operator instead, as the eager ``from ... import window`` of old left it.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, ModuleType) and _LAZY.get(name) == value.__name__ and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Operators
