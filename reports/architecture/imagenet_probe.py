"""Question 5: ImageNet images are centred single objects; natural scenes are not.  A probe, measured.

For each image file the classifier sees two views: the *centre crop* (a central square covering
``crop_fraction`` of the shorter side — what an ImageNet photo of one object looks like) and the *full scene*
(the whole image resized to a square), and, when the weights' preprocessing is given, a third: the *eval transform*
the weights were evaluated with (resize + centre crop).  Top-1 confidence and prediction entropy are compared: an
ImageNet classifier is typically more confident (lower entropy) on the object-centred view; :func:`top1_counts`
says what the ImageNet head calls the images (e.g. how many of the course's photos are an "ant" or a "bee").
Without pretrained weights the numbers are meaningless (a random network's outputs carry no knowledge of ImageNet)
and the report says so.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from featurize.preprocessing import Preprocessing

__all__ = ["views", "probe_images", "summarize_probe", "top1_counts", "generated_scenes"]

EVAL_VIEW = "eval transform"


def views(image: Image.Image, size: int = 224, crop_fraction: float = 0.5,
          preprocessing: Preprocessing | None = None) -> dict[str, Image.Image]:
    """The views of an image: ``"centre crop"`` and ``"full scene"``, both ``size × size`` RGB, and with
    ``preprocessing`` the ``"eval transform"`` (its resize + centre crop).

    Raises
    ------
    ValueError
        If ``crop_fraction`` is not in (0, 1].
    """
    if not 0 < crop_fraction <= 1:
        raise ValueError(f"crop_fraction must be in (0, 1]; got {crop_fraction}")
    image = image.convert("RGB")
    w, h = image.size
    side = max(1, round(crop_fraction * min(w, h)))
    left, top = (w - side) // 2, (h - side) // 2
    crop = image.crop((left, top, left + side, top + side))
    out = {
        "centre crop": crop.resize((size, size), Image.BILINEAR),
        "full scene": image.resize((size, size), Image.BILINEAR),
    }
    if preprocessing is not None:
        out[EVAL_VIEW] = Image.fromarray(preprocessing.geometry(image).permute(1, 2, 0).numpy())
    return out


def _to_tensor(image: Image.Image, prep: Preprocessing) -> torch.Tensor:
    return Preprocessing(None, None, prep.mean, prep.std, prep.interpolation)(image)


def probe_images(
    model: nn.Module,
    images: list[tuple[str, Image.Image]],
    preprocessing: Preprocessing,
    size: int = 224,
    crop_fraction: float = 0.5,
    categories: list[str] | None = None,
    eval_view: bool = False,
) -> pd.DataFrame:
    """Top-1 class, confidence and entropy of the model on the views of every image.

    Parameters
    ----------
    model : torch.nn.Module
        An ImageNet classifier in eval mode.
    images : list of (name, PIL.Image)
        The images.
    preprocessing : Preprocessing
        Normalisation of the weights (only ``mean``/``std`` are used; the views are already square).
    size : int
        Side of each view.
    crop_fraction : float
        Side of the centre crop relative to the image's shorter side.
    categories : list of str or None
        Class names (index → name); default the index.
    eval_view : bool
        Add the view of the weights' own eval transform (``preprocessing``'s resize + centre crop).

    Returns
    -------
    pandas.DataFrame
        ``image``, ``view``, ``top1`` (class name), ``confidence`` (top-1 softmax probability), ``entropy`` (nats)
        and ``entropy_norm`` (entropy / ln K, 1 = uniform).
    """
    rows = []
    with torch.no_grad():
        for name, image in images:
            pair = views(image, size, crop_fraction, preprocessing if eval_view else None)
            prob = torch.cat([F.softmax(model(_to_tensor(v, preprocessing)[None]).float(), dim=1)
                              for v in pair.values()])
            entropy = -(prob * prob.clamp_min(1e-12).log()).sum(dim=1)
            conf, top = prob.max(dim=1)
            for i, view in enumerate(pair):
                cls = int(top[i])
                rows.append(
                    {
                        "image": name,
                        "view": view,
                        "top1": categories[cls] if categories else str(cls),
                        "confidence": float(conf[i]),
                        "entropy": float(entropy[i]),
                        "entropy_norm": float(entropy[i]) / math.log(prob.shape[1]),
                    }
                )
    return pd.DataFrame(rows)


def _ci95(values: np.ndarray) -> tuple[float, float]:
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    half = 1.96 * float(np.std(values, ddof=1)) / math.sqrt(n)
    return float(values.mean()) - half, float(values.mean()) + half


def summarize_probe(table: pd.DataFrame) -> pd.DataFrame:
    """Mean confidence and entropy per view with n and a normal-approximation 95% CI; ``agree`` = same top-1.

    Returns
    -------
    pandas.DataFrame
        One row per view: ``view``, ``n``, ``confidence``, ``confidence_ci95``, ``entropy``, ``entropy_ci95``,
        plus a last row ``"crop − full (paired)"`` with the mean paired differences and the top-1 agreement rate.
    """
    rows = []
    for view, group in table.groupby("view", sort=False):
        conf, ent = group["confidence"].to_numpy(), group["entropy"].to_numpy()
        rows.append(
            {
                "view": view,
                "n": len(group),
                "confidence": conf.mean(),
                "confidence_ci95": "[{:.4g}, {:.4g}]".format(*_ci95(conf)),
                "entropy": ent.mean(),
                "entropy_ci95": "[{:.4g}, {:.4g}]".format(*_ci95(ent)),
            }
        )
    wide = table.pivot(index="image", columns="view", values=["confidence", "entropy", "top1"])
    if {"centre crop", "full scene"} <= set(table["view"]):
        dconf = (wide["confidence"]["centre crop"] - wide["confidence"]["full scene"]).to_numpy(float)
        dent = (wide["entropy"]["centre crop"] - wide["entropy"]["full scene"]).to_numpy(float)
        agree = float((wide["top1"]["centre crop"] == wide["top1"]["full scene"]).mean())
        rows.append(
            {
                "view": f"crop − full (paired; top-1 agree {agree:.0%})",
                "n": len(dconf),
                "confidence": dconf.mean(),
                "confidence_ci95": "[{:.4g}, {:.4g}]".format(*_ci95(dconf)),
                "entropy": dent.mean(),
                "entropy_ci95": "[{:.4g}, {:.4g}]".format(*_ci95(dent)),
            }
        )
    return pd.DataFrame(rows)


def top1_counts(table: pd.DataFrame, top: int = 8) -> pd.DataFrame:
    """What the classifier calls the images: per view, the ``top`` most frequent top-1 classes with their counts and
    share of the images (the rest summed as ``"(other classes)"``).

    Returns
    -------
    pandas.DataFrame
        ``view``, ``top1``, ``images``, ``share``.
    """
    rows = []
    for view, group in table.groupby("view", sort=False):
        counts = group["top1"].value_counts()
        kept = counts.iloc[:top]
        entries = list(kept.items())
        if len(counts) > top:
            entries.append((f"({len(counts) - top} other classes)", int(counts.iloc[top:].sum())))
        rows += [{"view": view, "top1": name, "images": int(n), "share": n / len(group)} for name, n in entries]
    return pd.DataFrame(rows, columns=["view", "top1", "images", "share"])


def generated_scenes(n: int = 4, size: tuple[int, int] = (240, 320), seed: int = 0) -> list[tuple[str, Image.Image]]:
    """Synthetic "scenes": one large central object (disc) among smaller clutter on a textured background.

    They stand in for real photos when none are given; the probe then only shows that the code runs.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    scenes = []
    for i in range(n):
        img = rng.normal(120, 25, size=(h, w, 3)) + 40 * np.sin(xx / rng.uniform(5, 15))[..., None]
        for _ in range(6):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(8, 25)
            img[((yy - cy) ** 2 + (xx - cx) ** 2) < r**2] = rng.uniform(0, 255, 3)
        r = 0.2 * min(h, w)
        img[((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < r**2] = rng.uniform(0, 255, 3)
        scenes.append((f"generated_{i}", Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))))
    return scenes
