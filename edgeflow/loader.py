"""Find the flow in a flow file, the way the engine's own runner finds a dataflow.

``flows/pump.py`` uses the module's ``flow`` variable; ``flows/pump.py:my_flow``
names another variable; ``flows/pump.py:make_flow()`` or
``flows/pump.py:make_flow(rate=2)`` calls a factory. The current directory is
put on ``sys.path`` so a flow can import the project's own ``operators``.

A mistake in the user's code (a syntax error, a missing import, an unknown
keyword, a bad factory argument) becomes a :class:`FlowLoadError` that names the
file and line, with the original exception as its ``__cause__``.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import functools
import importlib.util
import inspect
import linecache
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from edgeflow.errors import EdgeflowError, FlowValidationError
from edgeflow.graph import Flow

__all__ = ["FlowLoadError", "load_flow", "user_code_line"]

_EDGEFLOW_DIR = Path(__file__).resolve().parent


@functools.cache
def _library_dirs() -> tuple[Path, ...]:
    """Return the standard library's and the installed packages' folders (looked up when an error needs them)."""
    import sysconfig

    paths = sysconfig.get_paths()
    return tuple(Path(p).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib") if (p := paths.get(key)))


_UNEXPECTED_KEYWORD = re.compile(r"(?P<func>[\w.<>]+)\(\) got an unexpected keyword argument '(?P<kw>\w+)'")


class FlowLoadError(EdgeflowError):
    """The flow file is missing, does not import, or holds no flow.

    *file* and *line* say where in the user's code the mistake is, when known:

    >>> str(FlowLoadError("name 'windw' is not defined", file="flows/a.py", line=7))
    "flows/a.py:7: name 'windw' is not defined"
    """

    def __init__(self, msg: str, *, file: str | None = None, line: int | None = None) -> None:
        self.file = file
        self.line = line
        super().__init__(f"{file}:{line}: {msg}" if file is not None and line is not None else msg)


def _split(target: str) -> tuple[Path, str]:
    path, _, attr = target.partition(".py:")
    if attr:
        return Path(path + ".py"), attr
    return Path(target), "flow"


def _shown(path: str | Path) -> str:
    """*path* relative to the current folder when it is below it, else as it is."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _is_user_code(filename: str) -> bool:
    """Tell whether *filename* is the user's: not edgeflow itself, the standard library or a package."""
    if filename.startswith("<"):
        return False
    resolved = Path(filename).resolve()
    return not any(resolved.is_relative_to(folder) for folder in (_EDGEFLOW_DIR, *_library_dirs()))


def _frames(tb: TracebackType | None) -> list[TracebackType]:
    out = []
    while tb is not None:
        out.append(tb)
        tb = tb.tb_next
    return out


def user_code_line(exc: BaseException) -> str | None:
    """``file:line`` of the innermost frame of the user's own code that *exc* went through, if any.

    >>> try:
    ...     int("x")
    ... except ValueError as exc:
    ...     print(user_code_line(exc))
    None
    """
    user = [tb for tb in _frames(exc.__traceback__) if _is_user_code(tb.tb_frame.f_code.co_filename)]
    return f"{_shown(user[-1].tb_frame.f_code.co_filename)}:{user[-1].tb_lineno}" if user else None


def _closest(word: str, candidates: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest of *candidates*, or ``""``.

    >>> _closest("hopp", ["size", "hop", "rate_hz"])
    "; did you mean 'hop'?"
    """
    names = sorted({c for c in candidates if not c.startswith("_")})
    match = difflib.get_close_matches(word, names, n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def _resolve(node: ast.expr, scope: dict[str, Any]) -> Any:
    """Look up the object a ``name`` or ``name.attr.attr`` expression names in *scope* (``None`` if absent)."""
    if isinstance(node, ast.Name):
        return scope.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, scope)
        return None if base is None else getattr(base, node.attr, None)
    return None


def _keyword_names(func: Any) -> list[str]:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds]


def _unknown_keyword(exc: TypeError, frame: TracebackType) -> str | None:
    """``eo.window() got an unexpected keyword argument 'hopp'; did you mean 'hop'?`` for the call at *frame*."""
    found = _UNEXPECTED_KEYWORD.search(str(exc))
    if found is None:
        return None
    keyword, code = found["kw"], frame.tb_frame.f_code
    try:
        tree = ast.parse("".join(linecache.getlines(code.co_filename)))
    except (SyntaxError, ValueError):
        return None
    line = frame.tb_lineno
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and node.lineno <= line <= (node.end_lineno or node.lineno)
        and any(kw.arg == keyword for kw in node.keywords)
    ]
    if not calls:
        return None
    call = min(calls, key=lambda node: (node.end_lineno or node.lineno) - node.lineno)  # the innermost call
    scope = {**vars(builtins), **frame.tb_frame.f_globals, **frame.tb_frame.f_locals}
    names = _keyword_names(_resolve(call.func, scope))
    hint = _closest(keyword, names) or (f"; it takes {', '.join(names)}" if names else "")
    return f"{ast.unparse(call.func)}() got an unexpected keyword argument {keyword!r}{hint}"


def _describe(exc: Exception, frame: TracebackType | None) -> str:
    """Say in one line what *exc* means, with a did-you-mean where one helps."""
    if isinstance(exc, TypeError) and frame is not None and (text := _unknown_keyword(exc, frame)):
        return text
    if isinstance(exc, ImportError):
        return (
            f"cannot import: {exc}. Hint: edgeflow looks in the current folder ({Path.cwd()}) and the flow's "
            "folder; run it from the project root, or install the missing package"
        )
    if isinstance(exc, NameError) and exc.name and frame is not None:
        scope = {*frame.tb_frame.f_globals, *frame.tb_frame.f_locals, *dir(builtins)}
        return f"{exc}{_closest(exc.name, scope)}"
    if isinstance(exc, AttributeError) and exc.name and getattr(exc, "obj", None) is not None:
        return f"{exc}{_closest(exc.name, dir(exc.obj))}"
    return f"{type(exc).__name__}: {exc}"


def _user_code_error(exc: Exception, flow_file: Path) -> FlowLoadError:
    """Locate *exc* at the innermost frame of the user's code it went through, as a :class:`FlowLoadError`."""
    frames = _frames(exc.__traceback__)
    user = [tb for tb in frames if _is_user_code(tb.tb_frame.f_code.co_filename)]
    in_flow = [tb for tb in user if Path(tb.tb_frame.f_code.co_filename).resolve() == flow_file.resolve()]
    frame = user[-1] if user else None
    msg = _describe(exc, frame)
    if frame is None:
        return FlowLoadError(f"{_shown(flow_file)}: {msg}")
    if in_flow and in_flow[-1] is not frame:
        msg += f" (reached from {_shown(flow_file)}:{in_flow[-1].tb_lineno})"
    return FlowLoadError(msg, file=_shown(frame.tb_frame.f_code.co_filename), line=frame.tb_lineno)


def _parse_call(target: str, call: str) -> tuple[list[Any], dict[str, Any]]:
    try:
        parsed = ast.parse(f"f({call}", mode="eval").body
        assert isinstance(parsed, ast.Call)
        args = [ast.literal_eval(a) for a in parsed.args]
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in parsed.keywords if kw.arg}
    except (SyntaxError, ValueError):
        msg = f"{target}: factory arguments must be Python literals, e.g. FILE.py:make_flow(speed=5, out='s.jsonl')"
        raise FlowLoadError(msg) from None
    return args, kwargs


def _check_arguments(factory: Any, name: str, args: list[Any], kwargs: dict[str, Any], path: Path) -> None:
    """Fail with the factory's file and line when *args*/*kwargs* do not fit its signature."""
    if not callable(factory):
        msg = f"{_shown(path)}: {name} is a {type(factory).__name__}, not a factory; drop the (...)"
        raise FlowLoadError(msg)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        names = _keyword_names(factory)
        unknown = [key for key in kwargs if key not in signature.parameters]
        hint = _closest(unknown[0], names) if unknown else ""
        hint = hint or f"; {name}() takes {', '.join(names) or 'no keyword arguments'}"
        code = getattr(factory, "__code__", None)
        msg = f"bad factory argument for {name}(): {exc}{hint}"
        raise FlowLoadError(msg, file=_shown(path), line=code.co_firstlineno if code else None) from None


def _suggest_target(module: Any, name: str, path: Path) -> str:
    """Name the module's flow or factory closest to *name*, or say how to define one."""
    found = {key: value for key, value in vars(module).items() if isinstance(value, Flow) or inspect.isfunction(value)}
    match = difflib.get_close_matches(name, [key for key in found if not key.startswith("_")], n=1, cutoff=0.5)
    if not match:
        return "define `flow = Flow(...)` or name the variable as FILE.py:NAME"
    return f"did you mean {path}:{match[0]}{'()' if inspect.isfunction(found[match[0]]) else ''}?"


def load_flow(target: str) -> Flow:
    """Import *target* (``file.py[:name]`` or ``file.py:factory(...)``) and return its :class:`Flow`.

    >>> load_flow("flows/pump_vibration.py").name
    'pump_vibration'
    >>> load_flow("flows/pump_vibration.py:make_flow(sped=5)")
    Traceback (most recent call last):
    ...
    edgeflow.loader.FlowLoadError: flows/pump_vibration.py:...: bad factory argument ...; did you mean 'speed'?
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
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:  # IndentationError too
        sys.modules.pop(module_name, None)
        code = (exc.text or "").strip()
        msg = f"syntax error: {exc.msg}" + (f": {code}" if code else "")
        raise FlowLoadError(msg, file=_shown(exc.filename or path), line=exc.lineno) from exc
    except (FlowValidationError, FlowLoadError):
        sys.modules.pop(module_name, None)
        raise
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise _user_code_error(exc, path) from exc
    name, _, call = attr.partition("(")
    if not hasattr(module, name):
        msg = f"{path} has no {name!r}; {_suggest_target(module, name, path)}"
        raise FlowLoadError(msg)
    obj = getattr(module, name)
    if call:
        args, kwargs = _parse_call(target, call)
        _check_arguments(obj, name, args, kwargs, path)
        try:
            obj = obj(*args, **kwargs)
        except (FlowValidationError, FlowLoadError):
            raise
        except Exception as exc:
            raise _user_code_error(exc, path) from exc
    if not isinstance(obj, Flow):
        msg = f"{target} is a {type(obj).__name__}, not an edgeflow Flow"
        raise FlowLoadError(msg)
    return obj
