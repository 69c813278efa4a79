"""Per-epoch cost of head-only fine-tuning on cached activations vs through the frozen backbone.

``python -m classifiers.benchmark`` fits ``FineTunedCNN(strategy="head")`` twice on the same generated images, once
with ``precompute=True`` (the frozen backbone runs once, the head trains on its activations) and once with
``precompute=False`` (every epoch runs the frozen backbone), and prints the per-epoch times and their ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from classifiers.finetune import FineTunedCNN

__all__ = ["run_head_benchmark", "main"]

RANDOM_INIT_NOTE = "random-init weights (speed only; accuracies meaningless)"


def _images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8), np.arange(n) % 2


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
    """Time head-only training through both paths on the same images.

    Parameters
    ----------
    backbone : str, default="resnet18"
    n_images : int, default=240
        Generated images (two classes, random pixels), ``image_size + 32`` pixels square.
    image_size : int, default=224
    epochs : int, default=3
    batch_size : int, default=32
    device : str, default="auto"
    weights : str, path or None, default=None
        Speed does not depend on the weight values, so random init is the default.
    seed : int, default=0

    Returns
    -------
    DataFrame
        One row per path (``precomputed``, ``forward``): ``one_off_s`` (activation pass), ``epoch_s`` (median
        per-epoch time), ``first_epoch_s``, ``fit_s`` (whole fit) and ``pretrained``.
    """
    X, y = _images(n_images, image_size + 32, seed)
    rows = []
    for precompute in (True, False):
        clf = FineTunedCNN(
            backbone=backbone, weights=weights, strategy="head", image_size=image_size, epochs=epochs,
            batch_size=batch_size, min_steps=0, validation_fraction=None, precompute=precompute, device=device,
            random_state=seed,
        )
        start = time.perf_counter()
        clf.fit(X, y)
        fit_s = time.perf_counter() - start
        times = [h["time_s"] for h in clf.history_]
        rows.append({
            "path": clf.training_path_, "device": str(clf.device_), "n_images": n_images, "image_size": image_size,
            "epochs": len(times), "one_off_s": clf.precompute_time_s_, "first_epoch_s": times[0],
            "epoch_s": float(np.median(times)), "fit_s": fit_s, "pretrained": clf.weights_.pretrained,
        })
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints the table and the per-epoch ratio."""
    p = argparse.ArgumentParser(prog="python -m classifiers.benchmark", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--n-images", type=int, default=240)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--weights", default="none", help="'none' (random init: speed only), DEFAULT or a .pth path")
    args = p.parse_args(argv)
    try:
        table = run_head_benchmark(
            backbone=args.backbone, n_images=args.n_images, image_size=args.image_size, epochs=args.epochs,
            batch_size=args.batch_size, device=args.device,
            weights=None if args.weights.lower() == "none" else args.weights,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    by_path = table.set_index("path")
    print(f"per-epoch ratio forward/precomputed: {by_path.loc['forward', 'epoch_s'] / by_path.loc['precomputed', 'epoch_s']:.0f}x")
    if not table["pretrained"].iloc[0]:
        print(f"note: {RANDOM_INIT_NOTE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
