"""Static checks that CI enforces: ruff, mypy and ansible-lint's production profile."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON_PATHS = ["ckernel", "simproto", "simctl", "worker_agent", "benchmarks", "images",
                "tests/support"]


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _tool(name: str) -> str:
    """The tool installed beside this interpreter (the dev and deploy extras)."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev,deploy]'")
    return found


def test_ruff_is_clean() -> None:
    result = _run(_tool("ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = _run(_tool("mypy"), *PYTHON_PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile() -> None:
    result = _run(_tool("ansible-lint"), "--offline", "--profile", "production", "ansible/")
    assert result.returncode == 0, result.stdout + result.stderr
