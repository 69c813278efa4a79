"""The structure the layer contract declares: import-linter's contracts hold, no module imports another module's
private names, no module grows past 500 lines, and every command answers ``--help`` without importing torch."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("featurize", "classifiers", "reports", "pipelines")
MAX_LINES = 500
COMMANDS = ("pipelines.compare", "pipelines.grid", "pipelines.bench", "pipelines.predict", "reports.architecture",
            "featurize.extract")


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def private_imports(path: Path) -> list[str]:
    """``from <project module> import _name`` statements of a file, as ``"line: module._name"``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            found += [f"{node.lineno}: {node.module}.{alias.name}" for alias in node.names
                      if alias.name.startswith("_") and not alias.name.startswith("__")]
    return found


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter is not installed")
def test_the_import_contracts_hold():
    done = subprocess.run(["lint-imports"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_module_imports_another_modules_private_names():
    offenders = {str(p.relative_to(ROOT)): hits for p in _modules() if (hits := private_imports(p))}
    assert not offenders, offenders


def test_the_private_import_check_sees_a_planted_one(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("from featurize.cache import _warn_once\nfrom featurize import CNNFeaturizer\n")
    assert private_imports(planted) == ["1: featurize.cache._warn_once"]


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_answer_help_without_importing_torch(command):
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", command, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time")]
    assert "usage:" in done.stdout
    assert not [m for m in imported if m.split(".")[0] in ("torch", "torchvision", "timm")], command
