"""The architecture report CLI writes markdown and HTML with existing figures."""

from __future__ import annotations

import re

from reports.architecture import main


def test_cli_writes_report(tmp_path, capsys):
    out = tmp_path / "report"
    rc = main([
        "--backbones", "resnet18", "--weights", "none", "--out", str(out), "--size", "64", "--large", "256", "320",
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
    images = re.findall(r"<img src='([^']+)'", page)
    assert images and all((out / p).is_file() for p in images)
    assert set(re.findall(r"\]\(([^)]+\.png)\)", md)) == set(images)


def test_cli_pretrained_offline_fails_clearly(tmp_path, capsys):
    rc = main(["--backbones", "resnet18", "--out", str(tmp_path / "r"), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--weights none" in err and "resnet18" in err.lower()
