"""The architecture report CLI writes markdown and HTML with existing figures, answers ``--help`` before torch is
imported, and never switches matplotlib's backend."""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser

from reports.architecture import main


def image_sources(page: str) -> list[str]:
    sources: list[str] = []

    class Images(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                sources.append(dict(attrs)["src"])

    Images().feed(page)
    return sources


def test_cli_writes_report(tmp_path, capsys):
    # default --weights auto: pretrained weights are not available offline, so it runs random-init and says so
    out = tmp_path / "report"
    rc = main([
        "--backbones", "resnet18", "--out", str(out), "--size", "64", "--large", "256", "320",
        "--rf-check-max", "100", "--erf-max", "50", "--erf-samples", "1", "--quiet",
    ])
    assert rc == 0
    md = (out / "architecture.md").read_text()
    page = (out / "architecture.html").read_text()
    assert "RANDOM-INIT" in md and "RANDOM-INIT" in page
    assert "MEANINGLESS" in md
    for q in ("Q1", "Q2", "Q3", "Q5", "Q6"):
        assert q in md
    assert "MISMATCH" not in md and "NOT EQUAL" not in md
    images = image_sources(page)
    assert images and all((out / p).is_file() for p in images)
    assert set(re.findall(r"\]\(([^)]+\.png)\)", md)) == set(images)
    assert page.startswith("<!DOCTYPE html>") and page.count("<style>") == 1


def test_cli_pretrained_offline_fails_clearly(tmp_path, capsys):
    rc = main(["--backbones", "resnet18", "--weights", "DEFAULT", "--out", str(tmp_path / "r"), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--weights none" in err and "resnet18" in err.lower()


def test_cli_bad_image_exits_2(tmp_path, capsys):
    rc = main(["--backbones", "resnet18", "--image", str(tmp_path / "missing.png"), "--out", str(tmp_path / "r"),
               "--quiet"])
    assert rc == 2
    assert "missing.png" in capsys.readouterr().err


def python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=True, timeout=300)


def test_help_answers_before_torch_is_imported():
    done = python("-X", "importtime", "-m", "reports.architecture", "--help")
    assert "usage: python -m reports.architecture" in done.stdout and "--backbones" in done.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "numpy" in imported  # the import log was read
    assert not [name for name in imported if name.split(".")[0] == "torch"]


def test_the_report_leaves_matplotlib_backend_alone(tmp_path):
    code = f"""
import matplotlib
matplotlib.use("svg")
import pandas as pd
from reports.architecture import figures, report
stability = pd.DataFrame({{"pooling": ["none", "none"], "shift_px": [1, 2], "rel_change": [0.1, 0.2], "cut": "conv1"}})
figures.plot_pooling(stability, "net", __import__("pathlib").Path({str(tmp_path / "p.png")!r}))
print(matplotlib.get_backend())
"""
    assert python("-c", code).stdout.split() == ["svg"]
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")
