"""ruff keeps the codebase as the next engineer expects it: lint and format, with the rules in
``pyproject.toml`` (``[tool.ruff]``), over the package, the tests, the benchmarks and deploy/."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def ruff(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if exe is None:
        pytest.fail("ruff is not installed: pip install -e '.[dev]'")
    return subprocess.run([exe, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_check_finds_nothing():
    out = ruff("check", "--output-format", "concise", ".")
    assert out.returncode == 0, f"`ruff check .` found problems (`ruff check --fix .` fixes some):\n{out.stdout}{out.stderr}"


def test_ruff_format_leaves_every_file_as_it_is():
    out = ruff("format", "--check", ".")
    assert out.returncode == 0, f"files `ruff format .` would change:\n{out.stdout}{out.stderr}"
