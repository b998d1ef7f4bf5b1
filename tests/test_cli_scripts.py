"""The two commands of a fresh machine: the README's first block, ``scripts/test`` and ``.ci/run``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .test_cli import ROOT


def test_readme_starts_with_the_main_job_and_the_test_command() -> None:
    block = (ROOT / "README.md").read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert commands == ["pip install -e '.[infer]' && edgeflow run flows/pump_int8.py", "scripts/test"]


def test_ci_runs_exactly_the_test_command() -> None:
    lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    assert "scripts/test" in commands
    assert not any("-m pytest" in line or "pip install" in line for line in commands)  # only through scripts/test
    for script in (ROOT / ".ci/run", ROOT / "scripts/test"):
        assert os.access(script, os.X_OK), f"{script} is not executable"


def test_scripts_test_checks_format_and_lint_everywhere_ci_should() -> None:
    text = (ROOT / "scripts/test").read_text()
    assert "CHECKED=(edgeflow tests operators flows bench examples models)" in text
    assert '-m ruff format --check "${CHECKED[@]}"' in text and '-m ruff check "${CHECKED[@]}"' in text
    assert "apt-get install -y mosquitto mosquitto-clients" in text and "apt-get update" in text


def test_this_environment_has_what_the_tests_need() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/check_test_env.py", "test", "train"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, "")


def test_check_test_env_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts/check_test_env.py").write_text((ROOT / "scripts/check_test_env.py").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(pyproject.replace("test = [\n", 'test = [\n    "numpy<1",\n', 1))
    done = subprocess.run(
        [sys.executable, "scripts/check_test_env.py", "test"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0].startswith("missing: numpy<1 (have ")
    assert lines[1] == f"missing: edgeflow installed from {tmp_path.resolve()} (pip install -e .)"


def test_scripts_test_passes_its_arguments_to_pytest() -> None:
    done = subprocess.run(
        ["scripts/test", "--collect-only", "tests/test_cli_scripts.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert "tests/test_cli_scripts.py::test_scripts_test_passes_its_arguments_to_pytest" in done.stdout
    # 0, or 1 when ruff found problems somewhere in the tree (reported on stderr)
    assert done.returncode == 0 or "tests passed but ruff found problems" in done.stderr, done.stderr
