"""Find the flow in a flow file, the way ``python -m bytewax.run`` finds a dataflow.

``flows/pump.py`` uses the module's ``flow`` variable; ``flows/pump.py:my_flow``
names another variable; ``flows/pump.py:make_flow()`` or
``flows/pump.py:make_flow(rate=2)`` calls a factory. The current directory is
put on ``sys.path`` so a flow can import the project's own ``operators``.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

from edgeflow.errors import EdgeflowError
from edgeflow.graph import Flow

__all__ = ["FlowLoadError", "load_flow"]


class FlowLoadError(EdgeflowError):
    """The flow file is missing, does not import, or holds no flow."""


def _split(target: str) -> tuple[Path, str]:
    path, _, attr = target.partition(".py:")
    if attr:
        return Path(path + ".py"), attr
    return Path(target), "flow"


def load_flow(target: str) -> Flow:
    """Import *target* (``file.py[:name]`` or ``file.py:factory(...)``) and return its :class:`Flow`.

    >>> load_flow("flows/pump_vibration.py").name
    'pump_vibration'
    """
    path, attr = _split(target)
    if not path.is_file():
        msg = f"flow file {str(path)!r} does not exist (looked from {Path.cwd()})"
        raise FlowLoadError(msg)
    for folder in (str(Path.cwd()), str(path.resolve().parent)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    module_name = f"_edgeflow_flow_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)  # errors in the user's file propagate with their own traceback
    name, _, call = attr.partition("(")
    if not hasattr(module, name):
        msg = f"{path} has no {name!r}; define `flow = Flow(...)` or name the variable as FILE.py:NAME"
        raise FlowLoadError(msg)
    obj = getattr(module, name)
    if call:
        parsed = ast.parse(f"f({call}", mode="eval").body
        assert isinstance(parsed, ast.Call)
        args = [ast.literal_eval(a) for a in parsed.args]
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in parsed.keywords if kw.arg}
        obj = obj(*args, **kwargs)
    if not isinstance(obj, Flow):
        msg = f"{target} is a {type(obj).__name__}, not an edgeflow Flow"
        raise FlowLoadError(msg)
    return obj
