"""Q5 probe: on a model whose outputs are known, crop-vs-scene confidences and entropies are the right numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from featurize.preprocessing import Preprocessing
from reports.architecture.imagenet_probe import probe_images, summarize_probe, views

IDENTITY = Preprocessing(None, None, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
SCALE = 5.0
N_CLASSES = 3


class MeanBrightness(nn.Module):
    """Logits ``[SCALE · mean pixel, 0, 0]``: the brighter the view, the more confident in class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), N_CLASSES)
        logits[:, 0] = SCALE * x.mean(dim=(1, 2, 3))
        return logits


def framed_object(h: int, w: int) -> Image.Image:
    """Black scene with a white centred square exactly as large as the probe's centre crop (half the short side)."""
    img = np.zeros((h, w, 3), np.uint8)
    side = min(h, w) // 2
    top, left = (h - side) // 2, (w - side) // 2
    img[top:top + side, left:left + side] = 255
    return Image.fromarray(img)


def expected(mean: float) -> tuple[float, float]:
    """Top-1 confidence and entropy of softmax([SCALE·mean, 0, 0])."""
    p = np.exp([SCALE * mean, 0.0, 0.0])
    p /= p.sum()
    return float(p.max()), float(-(p * np.log(p)).sum())


IMAGES = [("a", framed_object(200, 300)), ("b", framed_object(160, 400)), ("c", framed_object(240, 240))]


def check_probe_numbers(model: nn.Module) -> None:
    table = probe_images(model, IMAGES, IDENTITY, size=64, crop_fraction=0.5, categories=["obj", "x", "y"])
    assert list(table.columns) == ["image", "view", "top1", "confidence", "entropy", "entropy_norm"]
    assert len(table) == 2 * len(IMAGES)
    for name, image in IMAGES:
        pair = views(image, 64, 0.5)
        crop = np.asarray(pair["centre crop"], np.float32) / 255
        assert crop.min() == 1.0  # the centre crop is the object alone
        full = np.asarray(pair["full scene"], np.float32).mean() / 255
        w, h = image.size
        assert full == pytest.approx((min(h, w) // 2) ** 2 / (h * w), abs=0.02)
        rows = table[table["image"] == name].set_index("view")
        for view, mean in (("centre crop", 1.0), ("full scene", full)):
            confidence, entropy = expected(mean)
            assert rows.loc[view, "confidence"] == pytest.approx(confidence, abs=1e-5)
            assert rows.loc[view, "entropy"] == pytest.approx(entropy, abs=1e-5)
            assert rows.loc[view, "entropy_norm"] == pytest.approx(entropy / math.log(N_CLASSES), abs=1e-5)
            assert rows.loc[view, "top1"] == "obj"
        assert rows.loc["centre crop", "confidence"] > rows.loc["full scene", "confidence"] + 0.2

    summary = summarize_probe(table).set_index("view")
    for view in ("centre crop", "full scene"):
        values = table.loc[table["view"] == view, "confidence"]
        assert summary.loc[view, "n"] == len(IMAGES)
        assert summary.loc[view, "confidence"] == pytest.approx(values.mean())
        low, high = (float(v) for v in summary.loc[view, "confidence_ci95"].strip("[]").split(","))
        half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
        assert (low, high) == pytest.approx((values.mean() - half, values.mean() + half), abs=1e-3)
    paired = summary.loc["crop − full (paired; top-1 agree 100%)"]
    crop, full = (table[table["view"] == v].set_index("image")["confidence"] for v in ("centre crop", "full scene"))
    assert paired["n"] == len(IMAGES)
    assert paired["confidence"] == pytest.approx((crop - full).mean()) and paired["confidence"] > 0.2
    assert paired["entropy"] < 0


def test_probe_numbers_on_a_model_with_known_outputs():
    check_probe_numbers(MeanBrightness())


def test_views_reject_bad_crop_fraction():
    with pytest.raises(ValueError, match="crop_fraction"):
        views(IMAGES[0][1], 32, 0)
