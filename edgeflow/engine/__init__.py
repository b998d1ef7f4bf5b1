"""The one package that knows bytewax: it lowers a compiled flow to a bytewax ``Dataflow`` and runs it.

Everything else in edgeflow speaks edgeflow's own protocols
(:mod:`edgeflow.connectors`, :class:`~edgeflow.graph.KeyedLogic`,
:class:`~edgeflow.graph.MapLogic`), so the engine can be replaced by
rewriting this package alone.
"""

from edgeflow.engine.dataflow import build_dataflow, fused_function
from edgeflow.engine.execute import execute

__all__ = ["build_dataflow", "execute", "fused_function"]
