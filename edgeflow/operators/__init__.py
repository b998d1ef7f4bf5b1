"""Built-in operators: plain functions ``(step_id, up, ...) -> Stream``.

>>> import edgeflow.operators as eo
>>> sorted(eo.__all__)[:4]
['ewma_detector', 'features', 'filter', 'infer']
"""

from edgeflow.operators.custom import filter, map
from edgeflow.operators.detect import ewma_detector, zscore_detector
from edgeflow.operators.features import features
from edgeflow.operators.infer import infer
from edgeflow.operators.mqtt import mqtt_sink, mqtt_source
from edgeflow.operators.output import jsonl, output, stdout
from edgeflow.operators.replay import replay
from edgeflow.operators.summarize import summarize
from edgeflow.operators.window import window

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
    "stdout",
    "summarize",
    "window",
    "zscore_detector",
]
