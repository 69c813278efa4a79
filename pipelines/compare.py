"""Off-the-shelf CNN features + classical heads vs fine-tuning, on one dataset, over repeated paired splits.

``python -m pipelines.compare`` (no arguments) runs the default comparison on the embedded demo set and writes
``results.csv``, ``predictions.csv``, ``summary.md``, ``report.html``, plots and ``manifest.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.metrics import balanced_accuracy_score
from tqdm.auto import tqdm

from classifiers.finetune import FineTunedCNN
from classifiers.heads import list_heads, make_head, pixels_baseline
from featurize import CNNFeaturizer, get_backbone_spec, list_backbones, resolve_weights
from featurize.devices import resolve_device
from featurize.images import load_image
from pipelines.cli import HelpFormatter, resolve_backbone_weights
from pipelines.datasets import ImageSet, default_data_dir, load_dataset
from pipelines.splits import Split, parse_train_sizes, repeated_splits

__all__ = ["CompareConfig", "CompareResult", "FINETUNE_METHODS", "DEFAULT_CUTS", "run_compare", "main"]

log = logging.getLogger(__name__)

FINETUNE_METHODS = {"finetune_head": "head", "finetune_last_block": "last_block", "finetune_full": "full"}
OTHER_METHODS = ("pixels", "scratch")
DEFAULT_CUTS = {
    "resnet": ("layer2", "layer3", "layer4"),
    "vgg": ("pool3", "pool4", "pool5", "fc7"),
}
DEFAULT_METHODS = ("linear_svm", "logistic", "random_forest", "multilayer", "pixels", "finetune_head", "finetune_last_block", "scratch")
PIXEL_SIZE = 32
RESULT_COLUMNS = [
    "dataset", "backbone", "weights", "pretrained", "cut", "pooling", "method", "family", "augment", "train_size",
    "split", "n_train", "n_test", "n_correct", "accuracy", "balanced_accuracy", "fit_time_s", "predict_time_s",
    "extract_time_s", "seed",
]


def all_methods() -> list[str]:
    """Every method name ``--methods`` accepts."""
    return [*list_heads(), *OTHER_METHODS, *FINETUNE_METHODS]


@dataclass
class CompareConfig:
    """Settings of one comparison (the CLI's options; see ``python -m pipelines.compare --help``).

    ``cuts`` maps a backbone to its cut points (default per family); ``finetune_backbones`` None fine-tunes the first
    of ``backbones``, ``["all"]`` every one.
    """

    dataset: str = "demo"
    backbones: Sequence[str] = ("resnet18", "vgg16")
    cuts: dict[str, list[str]] | None = None
    methods: Sequence[str] = DEFAULT_METHODS
    augment: Sequence[str] = ("none",)
    train_sizes: Sequence[int | str] = (5, 10, "all")
    splits: int = 10
    finetune_splits: int = 3
    finetune_backbones: Sequence[str] | None = None
    weights: str = "auto"
    weights_dir: str | None = None
    pooling: str = "avg"
    image_size: int | str = "auto"
    finetune_image_size: int | str = 160
    epochs: int = 6
    device: str = "auto"
    data_dir: str | None = None
    cache_dir: str | None = None
    out: str = "runs/compare"
    seed: int = 0
    quiet: bool = False
    command: str = field(default_factory=lambda: " ".join([Path(sys.executable).name, "-m", "pipelines.compare", *sys.argv[1:]]))


@dataclass
class CompareResult:
    """What :func:`run_compare` produced: ``results`` (one row per configuration × split), ``predictions``,
    ``meta`` (the manifest) and ``paths`` of the written files."""

    results: pd.DataFrame
    predictions: pd.DataFrame
    meta: dict
    paths: dict[str, Path]


def _validate(config: CompareConfig) -> None:
    unknown = [b for b in config.backbones if b not in list_backbones()]
    if unknown:
        raise ValueError(f"--backbones: unknown {unknown}; valid backbones: {', '.join(list_backbones())}")
    bad = [m for m in config.methods if m not in all_methods()]
    if bad:
        raise ValueError(f"--methods: unknown {bad}; valid methods: {', '.join(all_methods())}")
    for backbone, cuts in (config.cuts or {}).items():
        if backbone not in config.backbones:
            raise ValueError(f"--cuts: {backbone}:{cuts[0]} names a backbone not in --backbones "
                             f"{list(config.backbones)}")
        spec = get_backbone_spec(backbone)
        for cut in cuts:
            spec.cut(cut)
    stray = [b for b in _finetune_backbones(config) if b not in config.backbones]
    if stray:
        raise ValueError(f"--finetune-backbones: {stray} not in --backbones {list(config.backbones)}; fine-tuned "
                         "backbones must be compared too ('all' fine-tunes every one)")
    if config.splits < 1 or config.finetune_splits < 0:
        raise ValueError("--splits must be ≥ 1 and --finetune-splits ≥ 0")


def _finetune_backbones(config: CompareConfig) -> list[str]:
    """The backbones fine-tuned: ``finetune_backbones`` (``["all"]``: every one), default the first of ``backbones``."""
    if config.finetune_backbones is None:
        return list(config.backbones[:1])
    chosen = [config.finetune_backbones] if isinstance(config.finetune_backbones, str) else config.finetune_backbones
    return list(config.backbones) if list(chosen) == ["all"] else list(chosen)


def _cuts_for(config: CompareConfig, backbone: str) -> list[str]:
    if config.cuts and backbone in config.cuts:
        return list(config.cuts[backbone])
    return list(DEFAULT_CUTS[get_backbone_spec(backbone).family])


def _environment() -> dict:
    versions = {}
    for pkg in ("torch", "torchvision", "scikit-learn", "numpy", "pandas", "h5py", "scipy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": versions,
    }


def _row(config, imageset, split: Split, y_pred, *, backbone, weights, pretrained, cut, pooling, method, family,
         augment, fit_time, predict_time, extract_time) -> dict:
    y_true = imageset.labels[split.test_idx]
    correct = int((y_pred == y_true).sum())
    return {
        "dataset": imageset.name, "backbone": backbone, "weights": weights, "pretrained": pretrained, "cut": cut,
        "pooling": pooling, "method": method, "family": family, "augment": augment,
        "train_size": split.train_size, "split": split.split, "n_train": len(split.train_idx),
        "n_test": len(split.test_idx), "n_correct": correct, "accuracy": correct / len(y_true),
        "balanced_accuracy": balanced_accuracy_score(y_true, y_pred), "fit_time_s": fit_time,
        "predict_time_s": predict_time, "extract_time_s": extract_time, "seed": config.seed,
    }


def _predictions(imageset: ImageSet, split: Split, y_pred, fields: dict) -> pd.DataFrame:
    classes = np.asarray(imageset.classes)
    return pd.DataFrame({
        **{k: fields[k] for k in ("backbone", "cut", "pooling", "method", "augment")},
        "train_size": split.train_size, "split": split.split,
        "index": split.test_idx, "y_true": classes[imageset.labels[split.test_idx]], "y_pred": classes[y_pred],
    })


def _fit_predict(estimator, X_train, y_train, X_test) -> tuple[np.ndarray, float, float]:
    start = time.perf_counter()
    estimator.fit(X_train, y_train)
    fit_time = time.perf_counter() - start
    start = time.perf_counter()
    y_pred = estimator.predict(X_test)
    return np.asarray(y_pred), fit_time, time.perf_counter() - start


class _Runner:
    """Accumulates result and prediction rows while the comparison runs."""

    def __init__(self, config: CompareConfig, imageset: ImageSet):
        self.config = config
        self.imageset = imageset
        self.rows: list[dict] = []
        self.predictions: list[pd.DataFrame] = []

    def record(self, split: Split, y_pred: np.ndarray, **fields) -> None:
        self.rows.append(_row(self.config, self.imageset, split, y_pred, **fields))
        self.predictions.append(_predictions(self.imageset, split, y_pred, fields))


def _extract(config, imageset, backbone, weights, cache_dir, device) -> tuple[pd.DataFrame, float, CNNFeaturizer]:
    featurizer = CNNFeaturizer(
        backbone, layers="all", pooling=config.pooling, weights=weights, image_size=config.image_size,
        cache=cache_dir, device=device, verbose=not config.quiet,
    ).set_output(transform="pandas")
    start = time.perf_counter()
    features = featurizer.fit().transform(imageset.items)
    return features, (time.perf_counter() - start) / max(len(imageset.items), 1), featurizer


def _unreadable(items: Sequence) -> np.ndarray:
    """True where an image cannot be decoded; such images are left out of every method, not only the frozen ones."""
    bad = np.zeros(len(items), dtype=bool)
    for i, item in enumerate(items):
        try:
            load_image(item)
        except Exception:  # noqa: BLE001 - any decode failure (truncated, not an image, unsupported) drops the image
            bad[i] = True
    return bad


def _drop_unreadable(imageset: ImageSet, bad: np.ndarray) -> ImageSet:
    if not bad.any():
        return imageset
    log.warning("dropping %d unreadable image(s): %s", int(bad.sum()), [imageset.items[i] for i in np.flatnonzero(bad)])
    keep = ~bad
    return ImageSet(
        name=imageset.name, items=[p for p, k in zip(imageset.items, keep) if k], labels=imageset.labels[keep],
        classes=imageset.classes, subset=None if imageset.subset is None else imageset.subset[keep], root=imageset.root,
    )


def run_compare(config: CompareConfig) -> CompareResult:
    """Run the comparison and write every output file into ``config.out``.

    Parameters
    ----------
    config : CompareConfig

    Returns
    -------
    CompareResult

    Raises
    ------
    ValueError
        For unknown backbones, cut points or methods, or train sizes the dataset cannot provide.
    FileNotFoundError
        When explicitly requested pretrained weights are missing.
    """
    from reports.compare_report import summary_table, write_report

    _validate(config)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    wall = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(config.data_dir) if config.data_dir else default_data_dir()
    cache_dir = Path(config.cache_dir) if config.cache_dir else data_dir / "features"
    device = str(resolve_device(config.device))
    imageset = load_dataset(config.dataset, data_dir=data_dir, verbose=not config.quiet)
    bad = _unreadable(imageset.items)
    unreadable = [str(imageset.items[i]) for i in np.flatnonzero(bad)]
    imageset = _drop_unreadable(imageset, bad)
    methods = list(config.methods)
    frozen_heads = [m for m in methods if m in list_heads()]
    finetunes = [m for m in methods if m in FINETUNE_METHODS or m == "scratch"]

    weights = {b: resolve_backbone_weights(b, config.weights, config.weights_dir) for b in config.backbones}
    features, per_image, featurizers = {}, {}, {}
    if frozen_heads:
        for backbone in config.backbones:
            features[backbone], per_image[backbone], featurizers[backbone] = _extract(
                config, imageset, backbone, weights[backbone], cache_dir, device
            )
    identities = {b: resolve_weights(get_backbone_spec(b), w).identity for b, w in weights.items()}
    pretrained = {b: w is not None for b, w in weights.items()}

    runner = _Runner(config, imageset)
    splits = list(repeated_splits(imageset, config.train_sizes, config.splits, config.seed))
    jobs = len(splits) * (len(config.backbones) * len(frozen_heads) + ("pixels" in methods))
    bar = tqdm(total=jobs, desc="classical heads", unit="fit", disable=config.quiet)
    pixels = _pixel_features(imageset.items) if "pixels" in methods else None
    for split in splits:
        y_train = imageset.labels[split.train_idx]
        if pixels is not None:
            y_pred, fit_t, pred_t = _fit_predict(make_head("logistic"), pixels[split.train_idx], y_train, pixels[split.test_idx])
            runner.record(split, y_pred, backbone="none (raw pixels)", weights="none", pretrained=None, cut="", pooling="",
                          method="pixels", family="pixels", augment="none", fit_time=fit_t, predict_time=pred_t,
                          extract_time=0.0)
            bar.update()
        for backbone in config.backbones if frozen_heads else ():
            frame = features[backbone]
            blocks = frame.columns.str.split(".").str[0]
            extract_t = per_image[backbone] * (len(split.train_idx) + len(np.unique(split.test_idx)))
            for method in frozen_heads:
                cuts = ["all"] if method == "multilayer" else _cuts_for(config, backbone)
                for cut in cuts:
                    X = frame if cut == "all" else frame.loc[:, blocks == cut]
                    X = X if method == "multilayer" else X.to_numpy()
                    y_pred, fit_t, pred_t = _fit_predict(
                        make_head(method, random_state=config.seed),
                        _take(X, split.train_idx), y_train, _take(X, split.test_idx),
                    )
                    runner.record(split, y_pred, backbone=backbone, weights=identities[backbone],
                                  pretrained=pretrained[backbone], cut=cut, pooling=config.pooling, method=method,
                                  family="frozen", augment="none", fit_time=fit_t, predict_time=pred_t,
                                  extract_time=extract_t)
                bar.update()
    bar.close()

    if finetunes and config.finetune_splits:
        _run_finetuning(config, imageset, splits, finetunes, weights, identities, pretrained, cache_dir, device, runner)

    results = pd.DataFrame(runner.rows, columns=RESULT_COLUMNS)
    predictions = pd.concat(runner.predictions, ignore_index=True) if runner.predictions else pd.DataFrame()
    meta = {
        "dataset": imageset.name,
        "dataset_root": str(imageset.root),
        "n_images": len(imageset.items),
        "n_classes": len(imageset.classes),
        "classes": imageset.classes,
        "class_counts": {k: int(v) for k, v in imageset.class_counts().items()},
        "unreadable_images": unreadable,
        "seeds": {"base": config.seed, "splits": config.splits, "finetune_splits": config.finetune_splits},
        "weights": identities,
        "weights_labels": {b: featurizers[b].weights_.label for b in featurizers},
        "pretrained": pretrained,
        "device": device,
        "command": config.command,
        "config": {k: v for k, v in asdict(config).items() if k != "command"},
        "environment": _environment(),
        "started": started,
    }
    results.to_csv(out / "results.csv", index=False)
    predictions.to_csv(out / "predictions.csv", index=False)
    meta["wall_time_s"] = round(time.perf_counter() - wall, 1)
    meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    paths = {"results_csv": out / "results.csv", "predictions_csv": out / "predictions.csv"}
    paths.update(write_report(results, predictions, meta, out))
    (out / "manifest.json").write_text(json.dumps(meta, indent=2, default=str))
    paths["manifest"] = out / "manifest.json"
    meta["summary"] = summary_table(results)
    return CompareResult(results, predictions, meta, paths)


def _pixel_features(paths: Sequence[str]) -> np.ndarray:
    """Raw-pixel baseline features: every image resized to PIXEL_SIZE², flattened, in [0, 1]."""
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((PIXEL_SIZE, PIXEL_SIZE))) for p in paths])
    return pixels_baseline(PIXEL_SIZE).fit_transform(images)


def _take(X, idx):
    return X.iloc[idx] if hasattr(X, "iloc") else X[idx]


def _run_finetuning(config, imageset, splits, methods, weights, identities, pretrained, cache_dir, device, runner):
    backbones = _finetune_backbones(config)
    chosen = [s for s in splits if s.split < config.finetune_splits]
    jobs = [(s, b, m, a) for s in chosen for b in backbones for m in methods for a in config.augment
            if not (m == "scratch" and a != config.augment[0])]
    items = np.asarray(imageset.items, dtype=object)
    for split, backbone, method, augment in tqdm(jobs, desc="fine-tuning", unit="fit", disable=config.quiet):
        scratch = method == "scratch"
        per_class = len(split.train_idx) / len(imageset.classes)
        estimator = FineTunedCNN(
            backbone=backbone,
            weights=None if scratch else weights[backbone],
            strategy="full" if scratch else FINETUNE_METHODS[method],
            augment=augment,
            epochs=config.epochs * (2 if scratch else 1),
            lr=1e-3,
            image_size=config.finetune_image_size,
            validation_fraction=0.2 if per_class >= 10 else None,
            patience=3,
            cache=cache_dir,
            device=device,
            random_state=config.seed,
        )
        y_pred, fit_t, pred_t = _fit_predict(
            estimator, items[split.train_idx], imageset.labels[split.train_idx], items[split.test_idx]
        )
        runner.record(
            split, y_pred, backbone=backbone,
            weights=resolve_weights(get_backbone_spec(backbone), None, config.seed).identity if scratch else identities[backbone],
            pretrained=False if scratch else pretrained[backbone], cut="", pooling="", method=method,
            family="scratch" if scratch else "finetune", augment=augment, fit_time=fit_t, predict_time=pred_t,
            extract_time=0.0,
        )


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m pipelines.compare`` argument parser."""
    d = CompareConfig()
    p = argparse.ArgumentParser(
        prog="python -m pipelines.compare",
        description=(
            "Compare pretrained-CNN features + classical heads with end-to-end fine-tuning on an image dataset, over "
            "repeated paired splits; write results.csv, predictions.csv, summary.md, report.html, plots and "
            "manifest.json into --out. Every accuracy is reported with n and a 95% CI."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--dataset", default=d.dataset,
                   help="'demo' (embedded, generated on first use), 'hymenoptera' (downloaded once), an ImageFolder "
                        "directory (class subfolders, optionally under train/ and val/) or a CSV of path,label[,subset]")
    p.add_argument("--backbones", nargs="+", default=list(d.backbones), help=f"any of {', '.join(list_backbones())}")
    p.add_argument("--cuts", nargs="+", default=None, metavar="[BACKBONE:]CUT",
                   help="cut points for the classical heads, e.g. layer3 layer4 or resnet18:layer3 vgg16:fc7 "
                        "(default: resnet layer2 layer3 layer4; vgg pool3 pool4 pool5 fc7)")
    p.add_argument("--methods", nargs="+", default=list(d.methods), metavar="METHOD",
                   help=f"from {', '.join(all_methods())}; 'pixels' = logistic regression on 32x32 pixels, "
                        "'scratch' = the whole network trained from random init")
    p.add_argument("--augment", nargs="+", default=list(d.augment),
                   help="augmentation policies for fine-tuning (none, flip_crop, strong, mixup, flip_crop+mixup, …)")
    p.add_argument("--train-sizes", nargs="+", default=[str(s) for s in d.train_sizes],
                   help="training images per class, integers or 'all'")
    p.add_argument("--splits", type=int, default=d.splits, help="repeated stratified splits (val set bootstrapped "
                   "when the dataset has a fixed val folder)")
    p.add_argument("--finetune-splits", type=int, default=d.finetune_splits,
                   help="how many of those splits the (costly) fine-tuning methods run on; 0 skips fine-tuning")
    p.add_argument("--finetune-backbones", nargs="+", default=None,
                   help="backbones that are fine-tuned ('all' for every --backbones entry; default: the first "
                        "--backbones entry)")
    p.add_argument("--weights", default=d.weights,
                   help="'auto' (ImageNet weights when cached or downloadable, else random init, flagged in every "
                        "output), 'DEFAULT' or an enum name (required), 'none' (random init) or a .pth path")
    p.add_argument("--weights-dir", default=None, help="folder holding torchvision weight files under their own names")
    p.add_argument("--pooling", default=d.pooling, help="avg, max, avgmax, flatten or grid:k")
    p.add_argument("--image-size", default=str(d.image_size), help="feature extraction crop size, or 'auto'")
    p.add_argument("--finetune-image-size", default=str(d.finetune_image_size),
                   help="fine-tuning crop size ('auto' = the weights' 224); smaller is much faster on a CPU")
    p.add_argument("--epochs", type=int, default=d.epochs, help="fine-tuning epochs (from scratch: twice this)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    p.add_argument("--data-dir", default=None, help="where datasets live (default $CNN_TRANSFER_DATA or "
                   "~/.cache/cnn-transfer)")
    p.add_argument("--cache-dir", default=None, help="HDF5 feature cache directory (default <data-dir>/features)")
    p.add_argument("--out", default=d.out, help="output folder")
    p.add_argument("--seed", type=int, default=d.seed, help="base seed of splits and models")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _size(value: str) -> int | str:
    return value if value == "auto" else int(value)


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    """Turn parsed CLI arguments into a :class:`CompareConfig`."""
    cuts = None
    if args.cuts:
        cuts = {}
        plain = [c for c in args.cuts if ":" not in c]
        for backbone in dict.fromkeys([*args.backbones, *(c.split(":", 1)[0] for c in args.cuts if ":" in c)]):
            named = [c.split(":", 1)[1] for c in args.cuts if c.startswith(f"{backbone}:")]
            chosen = list(dict.fromkeys([*named, *plain]))
            if chosen:
                cuts[backbone] = chosen
    return CompareConfig(
        dataset=args.dataset, backbones=args.backbones, cuts=cuts, methods=args.methods, augment=args.augment,
        train_sizes=parse_train_sizes(args.train_sizes), splits=args.splits, finetune_splits=args.finetune_splits,
        finetune_backbones=args.finetune_backbones, weights=args.weights, weights_dir=args.weights_dir,
        pooling=args.pooling, image_size=_size(args.image_size), finetune_image_size=_size(args.finetune_image_size),
        epochs=args.epochs, device=args.device, data_dir=args.data_dir, cache_dir=args.cache_dir, out=args.out,
        seed=args.seed, quiet=args.quiet,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pipelines").setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        result = run_compare(config_from_args(args))
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from reports.compare_report import random_init_backbones
    from reports.tables import to_markdown

    summary = result.meta["summary"]
    random_init = random_init_backbones(result.results, result.meta)
    if random_init:
        print(f"\n*** RANDOM-INIT WEIGHTS for {', '.join(random_init)}: these numbers say nothing about transfer "
              "from ImageNet ***")
    largest = summary["train_size"].max()
    top = summary[summary["train_size"] == largest]
    print(f"\nMean accuracy with 95% CI over splits (n = test images per split × splits), {largest} images/class:")
    print(to_markdown(top[["backbone", "cut", "method", "family", "pretrained", "accuracy_95ci", "fit_time_s"]]))
    print(f"\nWall time {result.meta['wall_time_s']:.0f} s. Report: {result.paths['report_html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
