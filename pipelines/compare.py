"""Off-the-shelf CNN features + classical heads vs fine-tuning, on one dataset, over repeated paired splits.

``python -m pipelines.compare`` (no arguments) runs the default comparison on the embedded demo set and writes
``results.csv``, ``predictions.csv``, ``summary.md``, ``report.html``, plots and ``manifest.json`` into ``--out``.
Every finished fit is journaled as it completes (``journal.jsonl``): the same command run again after a crash skips
the finished fits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from tqdm.auto import tqdm

from classifiers.augment import AUGMENTATIONS
from classifiers.heads import pixels_baseline
from classifiers.options import BN_MODES, HEAD_INITS
from classifiers.training import parse_schedule
from featurize import CNNFeaturizer, ResolvedWeights
from featurize.backbones import (get_backbone_spec, is_backbone, list_backbones, penultimate_cut, resolve_weights,
                                 weights_file)
from featurize.families import FAMILIES
from featurize.devices import resolve_device
from featurize.images import load_image
from featurize.cli import (HelpFormatter, add_common_arguments, add_weights_arguments, image_size,
                           resolve_backbone_weights, run_cli)
from pipelines.backend import add_backend_arguments, parallel_backend
from pipelines.datasets import ImageSet, default_data_dir, load_dataset
from pipelines.methods import (
    FINETUNE_SETTINGS,
    MIN_GRID_PER_CLASS,
    NO_BACKBONE,
    BuildContext,
    Method,
    get_method,
    list_methods,
)
from pipelines.protocols import PROTOCOLS, protocol
from pipelines.results import (
    RESULT_COLUMNS,
    Fit,
    FitKey,
    Journal,
    dataset_fingerprint,
    tables,
)
from pipelines.splits import (
    DESIGNS,
    Split,
    default_train_sizes,
    design_of,
    parse_train_sizes,
    repeated_splits,
)

__all__ = ["CompareConfig", "CompareResult", "RESULT_COLUMNS", "run_compare", "main"]

log = logging.getLogger(__name__)

DEFAULT_METHODS = ("linear_svm", "logistic", "random_forest", "multilayer", "pixels", "finetune_head",
                   "finetune_last_block")
"""Methods of the default run; ``scratch`` and ``finetune_full`` are left to ``--methods`` (on a CPU they cost more
than the whole default comparison)."""
PIXEL_SIZE = 32
_NOT_RESULTS = ("out", "quiet", "command", "restart", "n_jobs", "data_dir", "cache_dir")


DEFAULT_BACKBONES = ("efficientnet_lite0",)
"""Backbones of the default run: ImageNet weights that install with pip, so every machine runs pretrained."""
CACHED_EXTRAS = ("resnet18", "vgg16")
"""The course's backbones, added to the default run when their ImageNet weights are already in the torchvision
cache (never downloaded by default)."""


def default_backbones() -> tuple[str, ...]:
    """:data:`DEFAULT_BACKBONES`, then each of :data:`CACHED_EXTRAS` whose weights file is in the torchvision cache."""
    def cached(name: str) -> bool:
        spec = get_backbone_spec(name)
        try:
            weights_file(spec, resolve_weights(spec, "DEFAULT"), download=False)
        except FileNotFoundError:
            return False
        return True

    return (*DEFAULT_BACKBONES, *(name for name in CACHED_EXTRAS if cached(name)))


def _command() -> str:
    return " ".join([Path(sys.executable).name, "-m", "pipelines.compare", *sys.argv[1:]])


@dataclass
class CompareConfig:
    """Settings of one comparison (the CLI's options; see ``python -m pipelines.compare --help``).

    ``cuts`` maps a backbone to its cut points (default per family; ``penultimate`` is the layer before the
    classifier); ``train_sizes`` None is the default learning curve the dataset can provide;
    ``finetune_splits`` None fine-tunes on every split; ``finetune_backbones`` None
    fine-tunes the first of ``backbones``, ``["all"]`` every one; ``finetune_image_size="same"`` fine-tunes at the
    frozen features' crop size; ``restart`` discards the journal of an earlier run in ``out``.  Use
    :meth:`for_protocol` for the published protocols.
    """

    protocol: str = "default"
    dataset: str = "demo"
    backbones: Sequence[str] = field(default_factory=default_backbones)
    cuts: dict[str, list[str]] | None = None
    methods: Sequence[str] = DEFAULT_METHODS
    augment: Sequence[str] = ("auto",)
    train_sizes: Sequence[int | str] | None = None
    splits: int = 5
    finetune_splits: int | None = None
    finetune_backbones: Sequence[str] | None = None
    weights: str = "auto"
    weights_dir: str | None = None
    pooling: str = "avg"
    image_size: int | str | None = 128
    finetune_image_size: int | str | None = "same"
    epochs: int = 6
    min_steps: int = 30
    optimizer: str = "adamw"
    schedule: str = "cosine"
    batch_size: int = 32
    lr: float | str = "auto"
    lr_ratio: float = 0.1
    lr_grid: Sequence[float] = (1e-4, 1e-3)
    bn: str = "frozen"
    head_init: str = "probe"
    weight_decay: float = 1e-2
    validation_fraction: float | None = 0.2
    inner_folds: int = 3
    n_jobs: int | None = -1
    device: str = "auto"
    data_dir: str | None = None
    cache_dir: str | None = None
    out: str = "runs/compare"
    seed: int = 0
    quiet: bool = False
    restart: bool = False
    command: str = field(default_factory=_command)

    @classmethod
    def for_protocol(cls, name: str, **overrides) -> "CompareConfig":
        """The configuration of a protocol of :data:`PROTOCOLS`, with ``overrides`` on top."""
        return cls(**{"protocol": name, **protocol(name).settings, **overrides})


@dataclass
class CompareResult:
    """What :func:`run_compare` produced: ``results`` (one row per configuration × split), ``predictions``,
    ``meta`` (the manifest), ``paths`` of the written files and the ``analysis`` (:class:`reports.analysis.Analysis`)
    the report was written from."""

    results: pd.DataFrame
    predictions: pd.DataFrame
    meta: dict
    paths: dict[str, Path]
    analysis: object = None


@dataclass
class BackboneRun:
    """One backbone of a run: its weights and, when a frozen-feature method needs them, its pooled features."""

    name: str
    weights: object
    resolved: ResolvedWeights
    features: pd.DataFrame | None = None
    extract_time_per_image: float = 0.0

    def feature_block(self, cut: str) -> pd.DataFrame | np.ndarray:
        """Features of one cut point (an array), or of all of them (the DataFrame, whose names give the blocks)."""
        if cut == "all":
            return self.features
        return self.features.loc[:, self.features.columns.str.split(".").str[0] == cut].to_numpy()


@dataclass(frozen=True)
class Job:
    """One fit to run: a method on one split (with a backbone, cut point and augmentation policy where it has them)."""

    method: Method
    split: Split
    backbone: str = NO_BACKBONE
    cut: str = ""
    augment: str = "none"

    def key(self, pooling: str) -> FitKey:
        """The journal key of the job."""
        return FitKey(method=self.method.name, backbone=self.backbone, cut=self.cut,
                      pooling=pooling if self.method.inputs == "features" else "", augment=self.augment,
                      train_size=self.split.train_size, split=self.split.split)


def validate(config: CompareConfig) -> None:
    """Check a configuration before any work; errors name the option and the valid values."""
    unknown = [b for b in config.backbones if not is_backbone(b)]
    if unknown:
        raise ValueError(f"--backbones: unknown {unknown}; valid backbones: {', '.join(list_backbones())}, or "
                         "timm:<model name>")
    bad = [m for m in config.methods if m not in list_methods()]
    if bad:
        raise ValueError(f"--methods: unknown {bad}; valid methods: {', '.join(list_methods())}")
    protocol(config.protocol)
    for backbone, cuts in (config.cuts or {}).items():
        if backbone != "*" and backbone not in config.backbones:
            raise ValueError(f"--cuts: {backbone}:{cuts[0]} names a backbone not in --backbones "
                             f"{list(config.backbones)}")
    for backbone in config.backbones:
        cuts_for(config, backbone)
    stray = [b for b in finetune_backbones(config) if b not in config.backbones]
    if stray:
        raise ValueError(f"--finetune-backbones: {stray} not in --backbones {list(config.backbones)}; fine-tuned "
                         "backbones must be compared too ('all' fine-tunes every one)")
    if config.splits < 1 or (config.finetune_splits is not None and config.finetune_splits < 0):
        raise ValueError("--splits must be ≥ 1 and --finetune-splits ≥ 0")
    if config.inner_folds < 2:
        raise ValueError(f"--inner-folds must be ≥ 2 (the inner CV that tunes every head); got {config.inner_folds}")
    small = [s for s in (config.train_sizes or ()) if s != "all" and int(s) < 2]
    if small:
        raise ValueError(f"--train-sizes {small}: the inner CV that tunes every head needs at least 2 images per class")
    bad_augment = [a for a in config.augment if a not in ("auto", *AUGMENTATIONS)]
    if bad_augment:
        raise ValueError(f"--augment: unknown {bad_augment}; valid policies: auto, {', '.join(AUGMENTATIONS)}")
    if any(get_method(m).costly for m in config.methods):
        size = finetune_image_size(config)
        if size != "auto" and (size is None or int(size) < 32):
            raise ValueError(f"fine-tuning needs a fixed crop of at least 32 px; got {size!r} (from "
                             "--finetune-image-size, 'same' follows --image-size): pass --finetune-image-size auto or "
                             "an integer ≥ 32")
    settings = build_settings(config, cache_dir=None, device="cpu")
    for name in config.methods:
        method = get_method(name)
        context = BuildContext(backbone=config.backbones[0] if method.needs_backbone else None, weights=None,
                               augment=method.policies(config.augment)[0], n_per_class=MIN_GRID_PER_CLASS,
                               seed=config.seed, settings=settings)
        estimator = method.build(context)
        estimator._validate_params()
        if hasattr(estimator, "schedule"):
            parse_schedule(estimator.schedule)


def build_settings(config: CompareConfig, cache_dir: Path | None, device: str) -> dict:
    """The :data:`pipelines.methods.FINETUNE_SETTINGS` a run's method builders read."""
    settings = {name: getattr(config, name) for name in FINETUNE_SETTINGS if name not in ("cache_dir", "device")}
    settings.update(image_size=finetune_image_size(config), cache_dir=cache_dir, device=device)
    return settings


def finetune_image_size(config: CompareConfig) -> int | str | None:
    """The fine-tuning crop size: ``finetune_image_size``, or ``image_size`` when it is ``"same"``."""
    return config.image_size if config.finetune_image_size == "same" else config.finetune_image_size


def finetune_backbones(config: CompareConfig) -> list[str]:
    """The backbones fine-tuned: ``finetune_backbones`` (``["all"]``: every one), default the first of ``backbones``."""
    if config.finetune_backbones is None:
        return list(config.backbones[:1])
    chosen = [config.finetune_backbones] if isinstance(config.finetune_backbones, str) else config.finetune_backbones
    return list(config.backbones) if list(chosen) == ["all"] else list(chosen)


def cuts_for(config: CompareConfig, backbone: str) -> list[str]:
    """Cut points the frozen-feature heads use on ``backbone``: ``config.cuts`` (its entry, else the ``"*"`` entry
    for every backbone) or the family's defaults; ``penultimate`` names the cut point just before the classifier."""
    spec = get_backbone_spec(backbone)
    chosen = (config.cuts or {}).get(backbone) or (config.cuts or {}).get("*") or FAMILIES[spec.family].default_cuts
    return list(dict.fromkeys(penultimate_cut(spec) if c == "penultimate" else spec.cut(c).name for c in chosen))


def finetune_split_count(config: CompareConfig) -> int:
    """Splits the costly methods run on: ``finetune_splits``, by default every split (on a CPU as on a GPU: no
    verdict rests on fewer than 5 draws)."""
    if config.finetune_splits is not None:
        return min(config.finetune_splits, config.splits)
    return config.splits


def fit_seed(base: int, split: int, method: str) -> int:
    """The seed of one fit: a different, reproducible one for every (split, method)."""
    return int(np.random.SeedSequence([base, split, zlib.crc32(method.encode())]).generate_state(1)[0] % 2**31)


def plan(config: CompareConfig, splits: Sequence[Split], n_finetune: int) -> list[Job]:
    """Every fit of the run, in the order the tables list them: per split, each method's backbones, cuts, policies;
    the costly methods on the first ``n_finetune`` splits only."""
    methods = [get_method(m) for m in config.methods]
    tuned = finetune_backbones(config)
    jobs = []
    for split in splits:
        for method in methods:
            if method.costly and split.split >= n_finetune:
                continue
            backbones = [NO_BACKBONE] if not method.needs_backbone else tuned if method.costly else config.backbones
            augments = method.policies(config.augment)
            for backbone in backbones:
                for cut in _method_cuts(config, method, backbone):
                    jobs += [Job(method, split, backbone, cut, augment) for augment in augments]
    return jobs


def _method_cuts(config: CompareConfig, method: Method, backbone: str) -> list[str]:
    """The cut points a method is fitted at: each of the backbone's, all together (``"all"``), or none (``""``)."""
    if method.cuts == "each":
        return cuts_for(config, backbone)
    return ["all"] if method.cuts == "all" else [""]


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


def _decode_all(items: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """One decoding pass over the images: which cannot be read (left out of every method), and the raw-pixel
    baseline's features of the others (``PIXEL_SIZE``², flattened, in [0, 1]; zeros for unreadable ones)."""
    bad = np.zeros(len(items), dtype=bool)
    small = np.zeros((len(items), PIXEL_SIZE, PIXEL_SIZE, 3), dtype=np.uint8)
    for i, item in enumerate(items):
        try:
            small[i] = np.asarray(load_image(item).resize((PIXEL_SIZE, PIXEL_SIZE)))
        except Exception:  # noqa: BLE001 - any decode failure (truncated, not an image, unsupported) drops the image
            bad[i] = True
    return bad, pixels_baseline(PIXEL_SIZE).fit_transform(small)


def _drop(imageset: ImageSet, bad: np.ndarray) -> ImageSet:
    log.warning("dropping %d unreadable image(s): %s", int(bad.sum()), [imageset.items[i] for i in np.flatnonzero(bad)])
    keep = ~bad
    return ImageSet(
        name=imageset.name, items=[p for p, k in zip(imageset.items, keep) if k], labels=imageset.labels[keep],
        classes=imageset.classes, subset=None if imageset.subset is None else imageset.subset[keep], root=imageset.root,
    )


def _extract(config: CompareConfig, run: BackboneRun, items: Sequence, cache_dir: Path, device: str) -> None:
    """Pooled features of every standard cut point of one backbone (cached), and the extraction time per image."""
    featurizer = CNNFeaturizer(
        run.name, layers="all", pooling=config.pooling, weights=run.weights, image_size=config.image_size,
        cache=cache_dir, device=device, verbose=not config.quiet,
    ).set_output(transform="pandas")
    start = time.perf_counter()
    run.features = featurizer.fit().transform(items)
    run.extract_time_per_image = (time.perf_counter() - start) / max(len(items), 1)


class _Runner:
    """Runs the jobs of a comparison, journaling each finished fit."""

    def __init__(self, config: CompareConfig, imageset: ImageSet, runs: dict[str, BackboneRun], pixels: np.ndarray,
                 cache_dir: Path, device: str):
        self.config = config
        self.imageset = imageset
        self.runs = runs
        self.pixels = pixels
        self.settings = build_settings(config, cache_dir, device)
        self.unconverged = 0

    def _inputs(self, job: Job) -> tuple[object, object]:
        """Training and test inputs of a job."""
        split, items = job.split, np.asarray(self.imageset.items, dtype=object)
        if job.method.inputs == "pixels":
            return self.pixels[split.train_idx], self.pixels[split.test_idx]
        if job.method.inputs == "images":
            return items[split.train_idx], items[split.test_idx]
        X = self.runs[job.backbone].feature_block(job.cut)
        take = (lambda idx: X.iloc[idx]) if hasattr(X, "iloc") else (lambda idx: X[idx])
        return take(split.train_idx), take(split.test_idx)

    def prepare(self, job: Job) -> tuple:
        """The arguments of :func:`_fit_predict` for a job: its estimator, training inputs and labels, test inputs."""
        split = job.split
        counts = np.bincount(self.imageset.labels[split.train_idx], minlength=len(self.imageset.classes))
        weights, _ = self._weights(job)
        context = BuildContext(backbone=job.backbone if job.method.needs_backbone else None, weights=weights,
                               augment=job.augment, n_per_class=int(counts.min()), seed=self._seed(job),
                               settings=self.settings)
        X_train, X_test = self._inputs(job)
        return job.method.build(context), X_train, self.imageset.labels[split.train_idx], X_test, job.method.chosen

    def finish(self, job: Job, outcome: tuple) -> Fit:
        """The :class:`Fit` of a job from what :func:`_fit_predict` returned."""
        y_pred, fit_time, predict_time, score, chosen, unconverged = outcome
        self.unconverged += bool(unconverged)
        _, resolved = self._weights(job)
        return Fit(key=job.key(self.config.pooling), family=job.method.family,
                   weights=resolved.identity if resolved else "none",
                   pretrained=resolved.pretrained if resolved else None, y_pred=y_pred, fit_time_s=fit_time,
                   predict_time_s=predict_time, extract_time_s=self._extract_time(job), seed=self._seed(job),
                   selection_score=score, hyperparameters=chosen)

    def _seed(self, job: Job) -> int:
        return fit_seed(self.config.seed, job.split.split, job.method.name)

    def _weights(self, job: Job) -> tuple[object, ResolvedWeights | None]:
        """The weights argument of a job's estimator and what they resolve to (None without a backbone)."""
        if job.method.random_init:
            return None, resolve_weights(get_backbone_spec(job.backbone), None, self._seed(job))
        run = self.runs.get(job.backbone)
        return (run.weights, run.resolved) if run else (None, None)

    def _extract_time(self, job: Job) -> float:
        if job.method.inputs != "features":
            return 0.0
        n_images = len(job.split.train_idx) + len(np.unique(job.split.test_idx))
        return self.runs[job.backbone].extract_time_per_image * n_images

    def execute(self, jobs: Sequence[Job], n_jobs: int | None) -> Iterator[tuple[Job, Fit]]:
        """Run jobs, yielding each with its :class:`Fit` in job order: the classical heads ``n_jobs`` at a time in
        worker processes, then the costly ones in this process (they use every core already)."""
        cheap = [job for job in jobs if not job.method.costly]
        with Parallel(n_jobs=n_jobs, return_as="generator") as parallel:
            outcomes = parallel(delayed(_fit_predict)(*self.prepare(job)) for job in cheap)
            for outcome, job in zip(outcomes, cheap):  # outcomes first: the generator is run to its end
                yield job, self.finish(job, outcome)
        for job in (job for job in jobs if job.method.costly):
            yield job, self.finish(job, _fit_predict(*self.prepare(job)))


def _fit_predict(estimator, X_train, y_train, X_test, chosen) -> tuple:
    """Fit, predict, and read what the fit chose on its training images: ``(y_pred, fit_s, predict_s, score,
    hyperparameters, n_convergence_warnings)``; convergence warnings (solvers at the extreme penalties of an inner-CV
    grid) are counted, not printed from every worker."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        estimator.fit(X_train, y_train)
    for warning in caught:
        if not issubclass(warning.category, ConvergenceWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    fit_time = time.perf_counter() - start
    start = time.perf_counter()
    y_pred = np.asarray(estimator.predict(X_test))
    predict_time = time.perf_counter() - start
    score, params = chosen(estimator)
    unconverged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return y_pred, fit_time, predict_time, score, params, unconverged


def protocol_overrides(config: CompareConfig) -> list[str]:
    """Settings of ``config`` that differ from its protocol preset (the preset's own settings only)."""
    def norm(value):
        return list(value) if isinstance(value, (list, tuple)) else value

    preset = protocol(config.protocol).settings
    return [k for k, v in preset.items() if norm(getattr(config, k)) != norm(v)]


def _same_training_sets(splits: Sequence[Split]) -> list[int]:
    """Train sizes at which every draw has the very same training images (e.g. "all" with a fixed val/ subset)."""
    sizes: dict[int, set] = {}
    for split in splits:
        sizes.setdefault(split.train_size, set()).add(tuple(split.train_idx))
    return [size for size, draws in sizes.items() if len(draws) == 1 and len(splits) > len(sizes)]


def _results_config(config: CompareConfig) -> dict:
    """The configuration fields that determine the results (what a journal must match to be resumed)."""
    return {k: v for k, v in asdict(config).items() if k not in _NOT_RESULTS}


def _progress(results: Iterator[tuple[Job, Fit]], total: int, skipped: int, quiet: bool) -> Iterator[Fit]:
    """The fits as they finish, with a progress bar that counts the journaled ones as done (and says so)."""
    if skipped:
        log.info("%d of %d fits already finished in an earlier run: skipped", skipped, total)
    with tqdm(total=total, initial=skipped, desc="fits", unit="fit", disable=quiet) as bar:
        for job, fit in results:
            bar.set_postfix_str(f"{job.method.name} {job.backbone} {job.cut}".strip())
            bar.update()
            yield fit


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
        For unknown backbones, cut points or methods, train sizes the dataset cannot provide, or an output folder
        holding the journal of another configuration (``restart`` discards it).
    FileNotFoundError
        When explicitly requested pretrained weights are missing.
    """
    from reports.analysis import analyse
    from reports.compare_report import summary_table, write_report

    validate(config)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    wall = time.perf_counter()
    out = Path(config.out)
    data_dir = Path(config.data_dir) if config.data_dir else default_data_dir()
    cache_dir = Path(config.cache_dir) if config.cache_dir else data_dir / "features"
    device = str(resolve_device(config.device))
    imageset = load_dataset(config.dataset, data_dir=data_dir, verbose=not config.quiet)
    bad, pixels = _decode_all(imageset.items)
    unreadable = [str(imageset.items[i]) for i in np.flatnonzero(bad)]
    if bad.any():
        imageset, pixels = _drop(imageset, bad), pixels[~bad]

    runs = {}
    for backbone in config.backbones:
        weights = resolve_backbone_weights(backbone, config.weights, config.weights_dir)
        runs[backbone] = BackboneRun(backbone, weights, resolve_weights(get_backbone_spec(backbone), weights))
    identity = {"dataset_content": dataset_fingerprint(imageset.items, imageset.labels),
                "weights_resolved": {b: run.resolved.identity for b, run in runs.items()},
                "preprocessing": {b: run.resolved.preprocessing.identity() for b, run in runs.items()}}
    journal = Journal(out, {**_results_config(config), **identity}, restart=config.restart)
    sizes = default_train_sizes(imageset) if config.train_sizes is None else config.train_sizes
    splits = list(repeated_splits(imageset, sizes, config.splits, config.seed))
    n_finetune = finetune_split_count(config)
    jobs = plan(config, splits, n_finetune)
    pending = [job for job in jobs if asdict(job.key(config.pooling)) not in journal]
    for backbone in {job.backbone for job in pending if job.method.inputs == "features"}:
        _extract(config, runs[backbone], imageset.items, cache_dir, device)

    runner = _Runner(config, imageset, runs, pixels, cache_dir, device)
    for fit in _progress(runner.execute(pending, config.n_jobs), len(jobs), len(jobs) - len(pending), config.quiet):
        journal.record(fit.to_json())
    if runner.unconverged:
        log.info("%d fit(s) met a ConvergenceWarning inside their inner-CV grid (solvers at extreme penalties); the "
                 "selected hyperparameters are in results.csv", runner.unconverged)
    fits = [Fit.from_json(journal[asdict(job.key(config.pooling))]) for job in jobs]
    results, predictions = tables(fits, imageset, {(s.train_size, s.split): s for s in splits})
    meta = {
        "dataset": imageset.name,
        "dataset_root": str(imageset.root),
        "n_images": len(imageset.items),
        "n_classes": len(imageset.classes),
        "classes": imageset.classes,
        "class_counts": {k: int(v) for k, v in imageset.class_counts().items()},
        "unreadable_images": unreadable,
        "design": design_of(imageset),
        "design_description": DESIGNS[design_of(imageset)],
        "protocol": config.protocol,
        "protocol_description": protocol(config.protocol).description,
        "protocol_overrides": protocol_overrides(config),
        "train_sizes": list(dict.fromkeys(split.train_size for split in splits)),
        "same_training_set_sizes": _same_training_sets(splits),
        "seeds": {"base": config.seed, "splits": config.splits, "finetune_splits": n_finetune,
                  "per_fit": "fit_seed(base, split, method)"},
        "weights": {b: run.resolved.identity for b, run in runs.items()},
        "weights_labels": {b: run.resolved.label for b, run in runs.items()},
        "pretrained": {b: run.weights is not None for b, run in runs.items()},
        "device": device,
        "command": config.command,
        "config": {k: v for k, v in asdict(config).items() if k != "command"},
        "environment": _environment(),
        "resumed_fits": len(jobs) - len(pending),
        "started": started,
    }
    results.to_csv(out / "results.csv", index=False)
    predictions.to_csv(out / "predictions.csv", index=False)
    meta["wall_time_s"] = round(time.perf_counter() - wall, 1)
    meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    paths = {"results_csv": out / "results.csv", "predictions_csv": out / "predictions.csv"}
    analysis = analyse(results, predictions, meta)
    paths.update(write_report(results, predictions, meta, out, analysis=analysis))
    (out / "manifest.json").write_text(json.dumps(meta, indent=2, default=str))
    paths["manifest"] = out / "manifest.json"
    meta["summary"] = summary_table(results, analysis.summary)
    return CompareResult(results, predictions, meta, paths, analysis)


def build_parser(protocol_name: str = "default") -> argparse.ArgumentParser:
    """The ``python -m pipelines.compare`` argument parser, with the defaults of a protocol (option names are
    :class:`CompareConfig`'s fields)."""
    d = CompareConfig.for_protocol(protocol_name if protocol_name in PROTOCOLS else "default")
    p = argparse.ArgumentParser(
        prog="python -m pipelines.compare",
        description=(
            "Compare pretrained-CNN features + classical heads with end-to-end fine-tuning on an image dataset, over "
            "repeated paired training draws; write results.csv, predictions.csv, summary.md, report.html, plots and "
            "manifest.json into --out. Every accuracy is reported with n and a 95% CI valid for the evaluation "
            "design (a fixed val/ test set, or random splits of one pool)."
        ),
        epilog="Protocols: " + " ".join(f"'{p.name}': {p.description}." for p in PROTOCOLS.values()),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--protocol", default=d.protocol, choices=list(PROTOCOLS),
                   help="preset of the settings below (see the end of this help); explicit options override it")
    p.add_argument("--dataset", default=d.dataset,
                   help="'demo' (embedded, generated on first use), 'hymenoptera' (downloaded once), an ImageFolder "
                        "directory (class subfolders, optionally under train/ and val/) or a CSV of "
                        "path,label[,subset]")
    p.add_argument("--backbones", nargs="+", default=list(d.backbones),
                   help=f"any of {', '.join(list_backbones())}, or timm:<model name>")
    p.add_argument("--cuts", nargs="+", default=None, metavar="[BACKBONE:]CUT",
                   help="cut points for the classical heads, e.g. layer3 layer4, resnet18:layer3 vgg16:fc7 or "
                        "penultimate (default: "
                        + "; ".join(f"{f.name} {' '.join(f.default_cuts)}" for f in FAMILIES.values()) + ")")
    p.add_argument("--methods", nargs="+", default=list(d.methods), metavar="METHOD",
                   help="; ".join(f"'{m}' = {get_method(m).description}" for m in list_methods()))
    p.add_argument("--augment", nargs="+", default=list(d.augment),
                   help="augmentation policies for fine-tuning: auto (flip_crop when layers are fine-tuned, none for "
                        "the linear probe), none, flip_crop, strong, mixup, flip_crop+mixup, …")
    p.add_argument("--train-sizes", nargs="+", default=d.train_sizes,
                   help="training images per class, integers or 'all' (default: 5 10 20 50, those the dataset "
                        "can provide, and all)")
    p.add_argument("--splits", type=int, default=d.splits,
                   help="repeated stratified training draws (with a fixed val/ folder each is scored on all of it)")
    p.add_argument("--finetune-splits", type=int, default=d.finetune_splits,
                   help="how many of those draws the (costly) fine-tuning methods run on; 0 skips fine-tuning "
                        "(default: every draw; no verdict rests on fewer than 5, the report says how many ran)")
    p.add_argument("--finetune-backbones", nargs="+", default=None,
                   help="backbones that are fine-tuned ('all' for every --backbones entry; default: the first "
                        "--backbones entry)")
    add_weights_arguments(p)
    p.add_argument("--pooling", default=d.pooling, help="avg, max, avgmax, flatten or grid:k")
    p.add_argument("--image-size", type=image_size, default=d.image_size,
                   help="crop size of the frozen features (the default protocol's 128 keeps a CPU run short; 'auto' "
                        "= the weights' own 224, which the published protocols use) or 'none'")
    p.add_argument("--finetune-image-size", type=_finetune_size, default=d.finetune_image_size,
                   help="fine-tuning crop size: 'same' as --image-size, 'auto' (224) or an integer")
    p.add_argument("--epochs", type=int, default=d.epochs, help="fine-tuning epochs per phase (at least)")
    p.add_argument("--min-steps", type=int, default=d.min_steps,
                   help="fine-tuning budget floor: each phase runs at least this many optimizer steps")
    p.add_argument("--optimizer", default=d.optimizer, help="fine-tuning optimizer: adamw or sgd (momentum 0.9)")
    p.add_argument("--schedule", default=d.schedule, help="learning-rate schedule: cosine, step, step:N, constant")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="fine-tuning mini-batch size")
    p.add_argument("--lr", type=_learning_rate, default=d.lr,
                   help="learning rate of the new head: a number, or auto (1e-3 for a random head, 1e-4 for fine-tuning "
                        "that starts from the probe)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="fine-tuning weight decay")
    p.add_argument("--lr-ratio", type=float, default=d.lr_ratio,
                   help="backbone learning rate / head learning rate (from scratch: 1)")
    p.add_argument("--lr-grid", nargs="+", type=float, default=list(d.lr_grid), metavar="LR",
                   help=f"head learning rates tried on the inner validation split from {MIN_GRID_PER_CLASS} training "
                        "images per class on (below, --lr)")
    p.add_argument("--bn", choices=list(BN_MODES), default=d.bn,
                   help="BatchNorm while fine-tuning: frozen (ImageNet running statistics kept) or train (updated "
                        "from each batch)")
    p.add_argument("--head-init", choices=list(HEAD_INITS), default=d.head_init,
                   help="fine-tuning starts from the linear probe, kept as a candidate (probe, LP-FT) or from a "
                        "random head (random)")
    p.add_argument("--validation-fraction", type=_fraction, default=d.validation_fraction,
                   help="share of the training images that picks the epoch count (then refitted on all of them), "
                        "from 10 images/class on; 'none' = no inner validation")
    p.add_argument("--inner-folds", type=int, default=d.inner_folds,
                   help="folds of the inner stratified CV that tunes every head inside each training draw (at most "
                        "the images per class)")
    p.add_argument("--n-jobs", type=int, default=d.n_jobs,
                   help="classical-head fits run in parallel (-1: one worker per core; fine-tuning uses the cores "
                        "itself)")
    p.add_argument("--data-dir", default=None, help="where datasets live (default $CNN_TRANSFER_DATA or "
                   "~/.cache/cnn-transfer)")
    p.add_argument("--cache-dir", default=None, help="HDF5 feature cache directory (default <data-dir>/features)")
    p.add_argument("--out", default=d.out, help="output folder")
    p.add_argument("--restart", action="store_true",
                   help="discard the finished fits journaled in --out by an earlier run of another configuration")
    add_backend_arguments(p)
    add_common_arguments(p, seed_help="base seed of the draws and of every fit")
    return p


def _learning_rate(text: str) -> float | str:
    if text.lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number or 'auto'; got {text!r}")
    return value


def _finetune_size(text: str) -> int | str | None:
    return "same" if text.lower() == "same" else image_size(text)


def _fraction(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction strictly between 0 and 1, or 'none'; got {text!r}")
    return value


def _cut_map(cuts: Sequence[str] | None, backbones: Sequence[str]) -> dict[str, list[str]] | None:
    """``--cuts`` as backbone → cut points: ``B:CUT`` entries for that backbone, plain entries for every backbone."""
    if not cuts:
        return None
    plain = [c for c in cuts if ":" not in c]
    out = {}
    for backbone in dict.fromkeys([*backbones, *(c.rpartition(":")[0] for c in cuts if ":" in c)]):
        chosen = list(dict.fromkeys([*(c.rpartition(":")[2] for c in cuts if c.rpartition(":")[0] == backbone),
                                     *plain]))
        if chosen:
            out[backbone] = chosen
    return out


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    """Turn parsed CLI arguments into a :class:`CompareConfig` (every option is the field of the same name)."""
    values = {f.name: getattr(args, f.name) for f in fields(CompareConfig) if hasattr(args, f.name)}
    values["cuts"] = _cut_map(args.cuts, args.backbones) if args.cuts else protocol(args.protocol).settings.get("cuts")
    if args.train_sizes is not None:
        values["train_sizes"] = parse_train_sizes(args.train_sizes)
    return CompareConfig(**values)


def _protocol_in(argv: Sequence[str] | None) -> str:
    """The ``--protocol`` of a command line (its defaults shape the parser), ``default`` when absent or unknown."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--protocol", default="default")
    return pre.parse_known_args(argv)[0].protocol


def _main(args: argparse.Namespace) -> int:
    from reports.tables import to_markdown

    with parallel_backend(args.backend, args.scheduler):
        result = run_compare(config_from_args(args))
    analysis, summary = result.analysis, result.meta["summary"]
    if analysis.random_init:
        print(f"\n*** RANDOM-INIT WEIGHTS for {', '.join(analysis.random_init)}: these numbers say nothing about "
              "transfer from ImageNet ***")
    largest = analysis.largest
    top = summary[summary["train_size"] == largest]
    print(f"\nAccuracy with 95% CI ({analysis.design.replace('_', ' ')} design), {largest} images/class; "
          "selection_score = inner-CV accuracy on the training images (descriptive table, no ranking):")
    print(to_markdown(top[["backbone", "cut", "method", "family", "pretrained", "accuracy_95ci", "selection_score",
                           "fit_time_s"]]))
    picked = analysis.selected[analysis.selected["train_size"] == largest]
    print("\nPre-selected (training-side evidence only): " + "; ".join(
        f"{r['family']}: {analysis.label(r)}" for r in picked.to_dict("records")))
    print(f"\n{analysis.crossover['statement']}")
    print(f"\nWall time {result.meta['wall_time_s']:.0f} s. Report: {result.paths['report_html']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for an error the user can fix)."""
    return run_cli(build_parser(_protocol_in(argv)), _main, argv)


if __name__ == "__main__":
    sys.exit(main())
