"""The architecture report CLI writes markdown and HTML with existing figures."""

from __future__ import annotations

import re
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
