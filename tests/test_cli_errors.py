"""Mistakes in a flow file, as the user sees them: exit 4 with file:line and a hint, exit 3 for an invalid flow.

Each test runs the real ``edgeflow`` command in a subprocess and checks the whole message.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_cli import ROOT, edgeflow

RECORDING = ROOT / "examples/data/pump_vibration.csv"
HEADER = f"""import edgeflow.operators as eo
from edgeflow import Flow
flow = Flow('bad')
s = eo.replay('samples', flow, '{RECORDING}')
"""
DEBUG_HINT = "(edgeflow --debug ... shows the full traceback)\n"


def _flow_file(tmp_path: Path, body: str, *, header: str = HEADER) -> str:
    path = tmp_path / "bad_flow.py"
    path.write_text(header + body)
    return str(path)


def test_unknown_keyword_names_file_line_operator_and_closest_name(tmp_path: Path) -> None:
    target = _flow_file(tmp_path, "w = eo.window('win', s, rate_hz=500, size=256, hopp=64)\n")
    done = edgeflow("validate", target)
    assert done.returncode == 4
    assert done.stderr == (
        f"cannot load flow: {target}:5: eo.window() got an unexpected keyword argument 'hopp'; did you mean 'hop'?\n"
        + DEBUG_HINT
    )
    assert done.stdout == ""


def test_unknown_keyword_on_a_multi_line_call_names_the_operator(tmp_path: Path) -> None:
    body = "w = eo.window(\n    'win',\n    s,\n    rate_hz=500,\n    size=256,\n    max_gap=0.1,\n)\n"
    done = edgeflow("run", _flow_file(tmp_path, body))
    assert done.returncode == 4
    assert "eo.window() got an unexpected keyword argument 'max_gap'; did you mean 'max_gap_s'?" in done.stderr
    assert "samples in" not in done.stderr


def test_unknown_keyword_without_a_close_name_lists_the_valid_ones(tmp_path: Path) -> None:
    done = edgeflow("validate", _flow_file(tmp_path, "m = eo.map('m', s, lambda x: x, zzz=1)\n"))
    assert done.returncode == 4
    assert ":5: eo.map() got an unexpected keyword argument 'zzz'; it takes step_id, up, fn\n" in done.stderr


def test_unknown_keyword_inside_a_project_operator_names_both_files(tmp_path: Path) -> None:
    (tmp_path / "operators").mkdir()
    (tmp_path / "operators/smooth.py").write_text(
        "import edgeflow.operators as eo\n\n\n"
        "def smooth(step_id, up):\n    return eo.map(step_id, up, lambda x: x, fnn=1)\n"
    )
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows/f.py").write_text(
        "import edgeflow.operators as eo\nfrom edgeflow import Flow\nfrom operators.smooth import smooth\n\n\n"
        "def make_flow():\n    flow = Flow('f')\n"
        f"    smooth('sm', eo.replay('samples', flow, '{RECORDING}'))\n    return flow\n"
    )
    done = edgeflow("validate", "flows/f.py:make_flow()", cwd=tmp_path)
    assert done.returncode == 4
    assert done.stderr.splitlines()[0] == (
        "cannot load flow: operators/smooth.py:5: eo.map() got an unexpected keyword argument 'fnn'; "
        "did you mean 'fn'? (reached from flows/f.py:8)"
    )


def test_syntax_error_names_file_line_and_code(tmp_path: Path) -> None:
    target = _flow_file(tmp_path, "w = eo.window('win', s, rate_hz=500, size=256,\n")
    done = edgeflow("validate", target)
    assert done.returncode == 4
    assert done.stderr.splitlines()[0] == (
        f"cannot load flow: {target}:5: syntax error: '(' was never closed: "
        "w = eo.window('win', s, rate_hz=500, size=256,"
    )
    assert "Traceback" not in done.stderr


def test_missing_import_names_file_line_and_where_edgeflow_looked(tmp_path: Path) -> None:
    target = _flow_file(tmp_path, "from operators.nope import thing\n")
    done = edgeflow("validate", target)
    assert done.returncode == 4
    assert done.stderr.splitlines()[0] == (
        f"cannot load flow: {target}:5: cannot import: No module named 'operators.nope'. Hint: edgeflow looks in the "
        f"current folder ({ROOT}) and the flow's folder; run it from the project root, or install the missing package"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "w = eo.windw('win', s, rate_hz=500)\n",
            "module 'edgeflow.operators' has no attribute 'windw'; did you mean 'window'?",
        ),
        ("other = Flw('x')\n", "name 'Flw' is not defined; did you mean 'Flow'?"),
        ("rate = 500 / 0\n", "ZeroDivisionError: division by zero"),
    ],
)
def test_other_mistakes_name_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    target = _flow_file(tmp_path, body)
    done = edgeflow("validate", target)
    assert done.returncode == 4
    assert done.stderr.splitlines()[0] == f"cannot load flow: {target}:5: {message}"


def test_debug_shows_the_full_traceback_and_keeps_the_exit_code(tmp_path: Path) -> None:
    target = _flow_file(tmp_path, "w = eo.window('win', s, rate_hz=500, size=256, hopp=64)\n")
    for done in (edgeflow("--debug", "validate", target), edgeflow("validate", target, env={"EDGEFLOW_DEBUG": "1"})):
        assert done.returncode == 4
        assert done.stderr.startswith("Traceback (most recent call last):\n")
        assert "TypeError: window() got an unexpected keyword argument 'hopp'\n" in done.stderr
        assert f'File "{target}", line 5, in <module>' in done.stderr
        assert done.stderr.endswith(
            f"cannot load flow: {target}:5: eo.window() got an unexpected keyword argument 'hopp'; "
            "did you mean 'hop'?\n"
        )


FACTORY = f"""import edgeflow.operators as eo
from edgeflow import Flow


def make_flow(speed=None, out='out.jsonl'):
    flow = Flow('factory')
    s = eo.replay('samples', flow, '{RECORDING}', speed=speed)
    eo.summarize('sum', eo.zscore_detector('det', eo.features('feat', eo.window('win', s, rate_hz=500, size=256),
                 ['mean'])), every_s=10, sink=eo.jsonl(out))
    if out == '':
        raise ValueError('out must name a file')
    return flow
"""


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            "make_flow(sped=2)",
            "{file}:5: bad factory argument for make_flow(): got an unexpected keyword argument 'sped'; "
            "did you mean 'speed'?",
        ),
        (
            "make_flow(1, 2, 3)",
            "{file}:5: bad factory argument for make_flow(): too many positional arguments; "
            "make_flow() takes speed, out",
        ),
        (
            "make_flow(speed=fast)",
            "{file}:make_flow(speed=fast): factory arguments must be Python literals, "
            "e.g. FILE.py:make_flow(speed=5, out='s.jsonl')",
        ),
        ("make_flow(out='')", "{file}:11: ValueError: out must name a file"),
        ("make_flw()", "{file} has no 'make_flw'; did you mean {file}:make_flow()?"),
        ("flow", "{file} has no 'flow'; did you mean {file}:make_flow()?"),
        ("FLOW", "{file} has no 'FLOW'; define `flow = Flow(...)` or name the variable as FILE.py:NAME"),
    ],
)
def test_bad_factory_arguments_exit_4_naming_the_factory(tmp_path: Path, call: str, message: str) -> None:
    path = tmp_path / "factory.py"
    path.write_text(FACTORY)
    done = edgeflow("validate", f"{path}:{call}")
    assert done.returncode == 4
    assert done.stderr.splitlines()[0] == "cannot load flow: " + message.format(file=path)


def test_good_factory_arguments_validate(tmp_path: Path) -> None:
    path = tmp_path / "factory.py"
    path.write_text(FACTORY)
    done = edgeflow("validate", f"{path}:make_flow(speed=2, out='x.jsonl')")
    assert done.returncode == 0, done.stderr


def test_flow_name_with_a_dot_is_refused_at_validate_time(tmp_path: Path) -> None:
    body = (
        "eo.summarize('sum', eo.zscore_detector('det', eo.features('feat', eo.window('win', s, rate_hz=500, size=256),"
        " ['mean'])), every_s=10, sink=eo.stdout())\n"
    )
    target = _flow_file(tmp_path, body, header=HEADER.replace("Flow('bad')", "Flow('pump.v2')"))
    for command in ("validate", "run"):
        done = edgeflow(command, target)
        assert done.returncode == 3, done.stderr
        assert done.stderr.startswith("invalid flow 'pump.v2': ")
        assert "a flow name may hold only letters, digits, '_' and '-'" in done.stderr
        assert "try 'pump_v2'" in done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_failing_step_exits_1_naming_the_error_and_the_line_that_raised_it(tmp_path: Path) -> None:
    target = _flow_file(tmp_path, "eo.output('out', eo.map('boom', s, lambda x: 1 / 0), eo.stdout())\n")
    done = edgeflow("run", target, env={"RUST_BACKTRACE": "0"})
    assert done.returncode == 1
    last = done.stderr.splitlines()[-2:]
    assert last[0].startswith("flow 'bad' failed: ")
    assert 'in step "bad.boom"' in last[0]
    assert last[0].endswith(f": ZeroDivisionError: division by zero at {target}:5")
    assert last[1] == DEBUG_HINT.strip()
