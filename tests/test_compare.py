"""End-to-end ``python -m pipelines.compare`` on a tiny configuration."""

import json
from html.parser import HTMLParser

import pandas as pd
import pytest
from conftest import make_two_class_images, write_image_folder

from pipelines.compare import RESULT_COLUMNS, build_parser, main


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    for subset, seed in (("train", 1), ("val", 2)):
        images, labels = make_two_class_images(6, size=(40, 44), seed=seed)
        write_image_folder(root / subset, images, labels)
    return root


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.tables = [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])
        self.tables += tag == "table"


def test_compare_cli_writes_every_output(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "--dataset", str(tiny_dataset), "--backbones", "resnet18", "--cuts", "layer3", "layer4",
        "--methods", "logistic", "multilayer", "pixels", "finetune_head", "scratch",
        "--train-sizes", "3", "all", "--splits", "2", "--finetune-splits", "1", "--weights", "none",
        "--image-size", "32", "--finetune-image-size", "32", "--epochs", "1", "--quiet",
        "--data-dir", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "RANDOM-INIT" in printed and "(n=12×2)" in printed

    for name in ("results.csv", "predictions.csv", "summary.md", "report.html", "manifest.json"):
        assert (out / name).is_file(), name
    results = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert list(results.columns) == RESULT_COLUMNS
    sizes, splits = 2, 2
    frozen = splits * sizes * (2 + 1)  # logistic × 2 cuts + multilayer over all cuts
    pixels = splits * sizes
    finetune = 1 * sizes * 2  # finetune_head + scratch on the first split only
    assert len(results) == frozen + pixels + finetune
    assert set(results["family"]) == {"frozen", "pixels", "finetune", "scratch"}
    assert (results["n_test"] == 12).all() and results["accuracy"].between(0, 1).all()
    assert not results.loc[results["family"] != "pixels", "pretrained"].astype(str).eq("True").any()

    summary = (out / "summary.md").read_text()
    assert "RANDOM-INIT" in summary and "95%" in summary and "[" in summary
    page = _Images()
    page.feed((out / "report.html").read_text())
    assert page.tables >= 2 and page.srcs, "tables and plots in the HTML report"
    for src in page.srcs:
        assert (out / src).is_file(), src
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pretrained"] == {"resnet18": False}
    assert manifest["environment"]["versions"]["torch"]
    assert manifest["seeds"]["base"] == 0 and "pipelines.compare" in manifest["command"]
    predictions = pd.read_csv(out / "predictions.csv")
    assert set(predictions["y_true"]) == {"ants", "bees"}


def test_bad_method_is_a_clear_error(tiny_dataset, tmp_path, capsys):
    assert main(["--dataset", str(tiny_dataset), "--methods", "svm", "--out", str(tmp_path), "--quiet"]) == 2
    assert "valid methods: linear_svm" in capsys.readouterr().err


def test_missing_pretrained_weights_name_the_file(tiny_dataset, tmp_path, capsys):
    code = main(["--dataset", str(tiny_dataset), "--backbones", "resnet18", "--weights", "DEFAULT",
                 "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2 and "resnet18-f37072fd.pth" in capsys.readouterr().err


def test_help_documents_the_options():
    text = build_parser().format_help()
    for option in ("--dataset", "--backbones", "--cuts", "--methods", "--augment", "--train-sizes", "--splits",
                   "--weights", "--weights-dir", "--device", "--out", "--quiet", "--seed"):
        assert option in text
