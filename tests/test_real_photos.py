"""The course's real ants/bees photos (../shared/data/hymenoptera_data), when they are beside this checkout."""

from pathlib import Path

import pandas as pd
import pytest

from pipelines.compare import main
from pipelines.datasets import load_image_folder
from pipelines.splits import imageset_design

HYMENOPTERA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera_data"
pytestmark = pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason="the course photos are not beside this checkout")


def test_the_course_photos_load_with_the_tutorial_layout():
    photos = load_image_folder(HYMENOPTERA)
    assert len(photos) == 398 and photos.classes == ["ants", "bees"]
    assert photos.class_counts("train") == {"ants": 124, "bees": 121}
    assert photos.class_counts("val") == {"ants": 70, "bees": 83}
    assert imageset_design(photos) == "fixed_test"


def test_compare_runs_on_the_course_photos_and_scores_every_draw_on_all_153_val_images(tmp_path):
    out = tmp_path / "out"
    argv = ["--dataset", str(HYMENOPTERA), "--backbones", "resnet18", "--cuts", "layer4", "--methods", "logistic",
            "pixels", "--train-sizes", "5", "--splits", "2", "--weights", "none", "--image-size", "32", "--n-jobs",
            "1", "--quiet", "--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    assert main(argv) == 0
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 4 and (results["n_test"] == 153).all() and set(results["design"]) == {"fixed_test"}
    assert results["selection_score"].notna().all()
    predictions = pd.read_csv(out / "predictions.csv")
    assert (predictions.groupby(["method", "split"])["index"].nunique() == 153).all(), "the whole val set, once"
    assert "(n=153 test images × 2 draws)" in (out / "summary.md").read_text()
