"""edgeflow: stream-processing dataflows for AI on IoT edge gateways.

>>> import edgeflow.operators as eo
>>> flow = Flow("pump")
>>> samples = eo.replay("samples", flow, "examples/data/pump_vibration.csv")
"""

from edgeflow.errors import EdgeflowError, FlowValidationError
from edgeflow.graph import Flow, Schema, Step, Stream, build_config

__all__ = ["EdgeflowError", "Flow", "FlowValidationError", "Schema", "Step", "Stream", "build_config"]
__version__ = "0.1.0"
