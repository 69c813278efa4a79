"""tests/reliability/stress.py, the stress runner maintainers use on timing- and load-sensitive tests, still works."""

from __future__ import annotations

import os
import re
from pathlib import Path

import stress


def _busy_loops_left() -> list[int]:
    """Processes of ours still running the runner's busy loop."""
    left = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"getppid" in cmdline:
            left.append(int(entry.name))
    return left


def test_the_stress_runner_runs_each_test_repeatedly_under_load_and_counts_its_passes(tmp_path, capsys):
    trivial = tmp_path / "test_trivial.py"
    trivial.write_text("def test_passes():\n    pass\n\n\ndef test_fails():\n    assert False, 'planted'\n")
    status = stress.main(["--repeat", "2", "--load", "1", "--threads", "1", "--timeout", "120", str(trivial)])
    out = capsys.readouterr().out
    assert re.search(r"^1 +2/2 +0 +0  \S*test_passes$", out, re.M), out
    assert re.search(r"^1 +0/2 +2 +0  \S*test_fails$", out, re.M), out
    assert out.count("AssertionError: planted") == 2 and status == 1
    assert _busy_loops_left() == [], "the busy loops are stopped when the runner ends"
