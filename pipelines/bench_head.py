"""Head-only fine-tuning speed: ``python -m pipelines.bench head``.

``FineTunedCNN(strategy="head")`` is fitted twice on the same generated images, once on cached activations
(``precompute=True``: the frozen backbone runs once) and once through the frozen backbone every epoch, and the
per-epoch times are reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from classifiers.finetune import FineTunedCNN
from featurize.devices import resolve_device
from pipelines.benchmarking import make_images, row_environment, text_report, timed

__all__ = ["HEAD_COLUMNS", "HEAD_RANDOM_INIT_NOTE", "format_head_report", "head_ratios", "run_head_benchmark"]

HEAD_COLUMNS = [
    "path",
    "device",
    "device_name",
    "backbone",
    "n_images",
    "image_size",
    "batch_size",
    "weights",
    "pretrained",
    "epochs",
    "one_off_s",
    "first_epoch_s",
    "epoch_s",
    "fit_s",
    "torch_version",
    "threads",
]
"""Columns of :func:`run_head_benchmark`'s table, one row per training path (``precomputed``, ``forward``)."""

HEAD_RANDOM_INIT_NOTE = "random-init weights (speed only; accuracies meaningless)"
"""The flag of a fine-tuning benchmark run with random-init weights."""


def run_head_benchmark(
    backbone: str = "resnet18",
    n_images: int = 240,
    image_size: int = 224,
    epochs: int = 3,
    batch_size: int = 32,
    device: str = "auto",
    weights: object = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Time head-only training on cached activations and through the frozen backbone, on the same images.

    Parameters
    ----------
    backbone : str
        A :func:`featurize.list_backbones` name.
    n_images : int
        Generated images (two classes, random pixels), ``image_size + 32`` pixels square.
    image_size : int
        Crop side fed to the network.
    epochs : int
        Epochs of each fit, exactly (``min_steps=0``).
    batch_size : int
        Training batch size.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.
    weights : str, path or None
        As :class:`FineTunedCNN`; ``None`` (random init) by default since speed does not depend on the values.
    seed : int
        Seed of the generated images and of the fits.

    Returns
    -------
    DataFrame
        One row per path (``precomputed``, ``forward``) with the columns :data:`HEAD_COLUMNS`: ``one_off_s``
        (activation pass), ``first_epoch_s``, ``epoch_s`` (median per-epoch time) and ``fit_s`` (whole fit).

    Raises
    ------
    ValueError
        For an unknown backbone, bad weights or an unavailable device (from :class:`FineTunedCNN`).
    """
    dev = resolve_device(device)
    X, y = make_images(n_images, image_size, seed), np.arange(n_images) % 2
    rows = []
    for precompute in (True, False):
        clf = FineTunedCNN(
            backbone, weights=weights, strategy="head", image_size=image_size, epochs=epochs, batch_size=batch_size,
            min_steps=0, validation_fraction=None, precompute=precompute, device=str(dev), random_state=seed,
        )
        fit_s = timed(dev, lambda: clf.fit(X, y))
        times = [h["time_s"] for h in clf.history_]
        rows.append({
            "path": clf.training_path_, **row_environment(clf.device_), "backbone": backbone, "n_images": n_images,
            "image_size": image_size, "batch_size": batch_size, "weights": clf.weights_.identity,
            "pretrained": clf.weights_.pretrained, "epochs": len(times), "one_off_s": clf.precompute_time_s_,
            "first_epoch_s": times[0], "epoch_s": float(np.median(times)), "fit_s": fit_s,
        })
    return pd.DataFrame(rows, columns=HEAD_COLUMNS)


def head_ratios(df: pd.DataFrame) -> dict[str, float]:
    """Per-epoch time ratio ``forward/precomputed`` of a :func:`run_head_benchmark` table."""
    epoch_s = df.set_index("path")["epoch_s"]
    return {"forward/precomputed": float(epoch_s["forward"] / epoch_s["precomputed"])}


def format_head_report(df: pd.DataFrame) -> str:
    """Plain-text summary: environment, one line per path, the per-epoch ratio and the random-init note."""
    first = df.iloc[0]
    header = (f"backbone {first.backbone}, image_size {first.image_size}, n_images {first.n_images}, "
              f"batch_size {first.batch_size}, epochs {first.epochs}")
    columns = ["path", "device", "epochs", "one_off_s", "first_epoch_s", "epoch_s", "fit_s"]
    ratios = [f"per-epoch ratio {name}: {value:.0f}x" for name, value in head_ratios(df).items()]
    return text_report(df, header, HEAD_RANDOM_INIT_NOTE, columns, ratios)
