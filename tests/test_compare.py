"""End-to-end ``python -m pipelines.compare`` on a tiny configuration."""

import json
from html.parser import HTMLParser

import pandas as pd
import pytest

from pipelines.compare import RESULT_COLUMNS, build_parser, main


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
    assert "RANDOM-INIT" in printed and "(n=12 test images × 2 draws)" in printed

    for name in ("results.csv", "predictions.csv", "summary.md", "report.html", "manifest.json"):
        assert (out / name).is_file(), name
    results = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert list(results.columns) == RESULT_COLUMNS
    sizes, splits = 2, 2
    frozen = splits * sizes * (2 + 1)  # logistic × 2 cuts + multilayer over all cuts
    pixels = splits * sizes
    finetune = 1 * sizes * 2  # finetune_head + scratch on the first split only
    assert len(results) == frozen + pixels + finetune
    assert set(results["family"]) == {"frozen", "pixels", "linear_probe_sgd", "scratch"}
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


def _parse(*argv):
    from pipelines.compare import config_from_args

    return config_from_args(build_parser().parse_args(list(argv)))


def test_cut_options_qualified_for_one_backbone_keep_the_defaults_of_the_others():
    from featurize.families import FAMILIES
    from pipelines.compare import cuts_for, validate

    config = _parse("--backbones", "resnet18", "vgg16", "--cuts", "vgg16:fc7")
    assert cuts_for(config, "vgg16") == ["fc7"]
    assert cuts_for(config, "resnet18") == list(FAMILIES["resnet"].default_cuts) == ["layer2", "layer3", "layer4"]
    with pytest.raises(ValueError, match="vgg19.*not in --backbones"):
        validate(_parse("--backbones", "resnet18", "--cuts", "vgg19:fc7"))
    mixed = _parse("--backbones", "resnet18", "--cuts", "resnet18:layer3", "layer4")
    assert cuts_for(mixed, "resnet18") == ["layer3", "layer4"]


def test_fine_tuning_follows_the_backbones_asked_for():
    from pipelines.compare import finetune_backbones, validate

    assert finetune_backbones(_parse("--backbones", "vgg11", "resnet34")) == ["vgg11"]
    assert finetune_backbones(_parse("--backbones", "vgg11", "resnet34", "--finetune-backbones", "all")) == [
        "vgg11", "resnet34"]
    with pytest.raises(ValueError, match="--finetune-backbones"):
        validate(_parse("--backbones", "vgg11", "--finetune-backbones", "resnet18"))
    from pipelines.compare import CompareConfig

    for every in (["all"], "all"):
        config = CompareConfig(backbones=("vgg11", "resnet34"), finetune_backbones=every)
        validate(config)
        assert finetune_backbones(config) == ["vgg11", "resnet34"]


def test_help_is_plain_text():
    text = build_parser().format_help()
    assert "95%%" not in text and "default: None" not in text


def test_unreadable_images_are_dropped_for_every_method(tiny_dataset, tmp_path, caplog):
    """Only fine-tuning and pixels run here (no frozen head): a broken file must still be left out, and recorded."""
    import shutil

    root = tmp_path / "data_with_broken"
    shutil.copytree(tiny_dataset, root)
    broken = root / "train" / "ants" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    argv = ["--dataset", str(root), "--backbones", "resnet18", "--methods", "pixels", "finetune_head",
            "--train-sizes", "3", "--splits", "1", "--finetune-splits", "1", "--weights", "none",
            "--finetune-image-size", "32", "--epochs", "1", "--quiet", "--n-jobs", "1",
            "--data-dir", str(tmp_path / "d"), "--cache-dir", str(tmp_path / "c"), "--out", str(out)]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["unreadable_images"] == [str(broken)]
    from datetime import datetime

    elapsed = datetime.fromisoformat(manifest["finished"]) - datetime.fromisoformat(manifest["started"])
    assert abs(elapsed.total_seconds() - manifest["wall_time_s"]) <= 1.5
    results = pd.read_csv(out / "results.csv")
    assert set(results["method"]) == {"pixels", "finetune_head"} and (results["n_test"] == 12).all()


@pytest.mark.parametrize("name", ["default", "tutorial", "kornblith", "razavian"])
def test_every_protocol_preset_builds_valid_estimators(name):
    from pipelines.compare import CompareConfig, protocol_overrides, validate
    from pipelines.protocols import PROTOCOLS

    config = CompareConfig.for_protocol(name)
    validate(config)
    assert protocol_overrides(config) == []
    assert name in PROTOCOLS and PROTOCOLS[name].description


def test_settings_fine_tuning_cannot_use_are_refused_before_any_work():
    from pipelines.compare import CompareConfig, validate

    with pytest.raises(ValueError, match="--finetune-image-size"):
        validate(CompareConfig(image_size=None))
    with pytest.raises(ValueError, match="--inner-folds"):
        validate(CompareConfig(inner_folds=1))
    with pytest.raises(ValueError, match="schedule"):
        validate(CompareConfig(schedule="step:x"))
    with pytest.raises(ValueError, match="--augment"):
        validate(CompareConfig(augment=["sideways"]))


def test_auto_weights_never_download(monkeypatch):
    import torch

    from featurize.cli import resolve_backbone_weights

    monkeypatch.delenv("FEATURIZE_OFFLINE", raising=False)

    def download(*args, **kwargs):
        raise AssertionError("--weights auto tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    assert resolve_backbone_weights("resnet18", "auto") is None


def test_plain_cuts_apply_to_the_auto_backbones():
    from pipelines.compare import cuts_for, validate
    from pipelines.compare.config import resolve_backbones

    config = _parse("--cuts", "blocks_6", "penultimate")
    validate(config)
    assert cuts_for(resolve_backbones(config), "efficientnet_lite0") == ["blocks_6", "pre_logits"]


def test_export_config_is_checked_before_any_work():
    from pipelines.compare import validate

    with pytest.raises(ValueError, match="give --export DIR"):
        validate(_parse("--export-config", "efficientnet_lite0//finetune_full"))
    with pytest.raises(ValueError, match="backbone/cut/method"):
        validate(_parse("--export", "x", "--export-config", "finetune_full"))
    with pytest.raises(ValueError, match="valid methods"):
        validate(_parse("--export", "x", "--export-config", "efficientnet_lite0//finetune_everything"))
