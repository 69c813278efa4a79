"""Running the fits of a comparison: the images decoded once, each backbone's features extracted once (cached), the
classical heads in worker processes and the fine-tuning in this one, every finished fit journaled."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from tqdm.auto import tqdm

from classifiers.heads import pixels_baseline
from featurize import CNNFeaturizer, ResolvedWeights
from featurize.backbones import get_backbone_spec, resolve_weights
from featurize.images import load_image
from pipelines.compare.config import CompareConfig
from pipelines.compare.plan import Job, build_settings, fit_seed
from pipelines.datasets import ImageSet
from pipelines.methods import BuildContext
from pipelines.results import Fit

__all__ = ["PIXEL_SIZE", "BackboneRun", "Runner", "decode_all", "drop_unreadable", "extract", "featurizer_for",
           "fit_predict", "progress", "small_pixels"]

log = logging.getLogger(__name__)

PIXEL_SIZE = 32
"""Side of the raw-pixel baseline's images."""


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


def small_pixels(item, size: int = PIXEL_SIZE) -> np.ndarray:
    """One image decoded and resized to ``size`` × ``size`` (uint8 RGB): the raw-pixel baseline's input."""
    return np.asarray(load_image(item).resize((size, size)))


def decode_all(items: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """One decoding pass over the images: which cannot be read (left out of every method), and the raw-pixel
    baseline's features of the others (``PIXEL_SIZE``², flattened, in [0, 1]; zeros for unreadable ones)."""
    bad = np.zeros(len(items), dtype=bool)
    small = np.zeros((len(items), PIXEL_SIZE, PIXEL_SIZE, 3), dtype=np.uint8)
    for i, item in enumerate(items):
        try:
            small[i] = small_pixels(item)
        except Exception:  # noqa: BLE001 - any decode failure (truncated, not an image, unsupported) drops the image
            bad[i] = True
    return bad, pixels_baseline(PIXEL_SIZE).fit_transform(small)


def drop_unreadable(imageset: ImageSet, bad: np.ndarray) -> ImageSet:
    log.warning("dropping %d unreadable image(s): %s", int(bad.sum()), [imageset.items[i] for i in np.flatnonzero(bad)])
    keep = ~bad
    return ImageSet(
        name=imageset.name, items=[p for p, k in zip(imageset.items, keep) if k], labels=imageset.labels[keep],
        classes=imageset.classes, subset=None if imageset.subset is None else imageset.subset[keep], root=imageset.root,
    )


def featurizer_for(config: CompareConfig, backbone: str, weights: object, layers: str | Sequence[str],
                   cache_dir: Path | None, device: str) -> CNNFeaturizer:
    """The comparison's featurizer of ``backbone`` (its pooling, image size and cache, pandas output): extraction and
    the export build theirs here, so the export's refit finds the extracted features in the cache."""
    return CNNFeaturizer(backbone, layers=layers, pooling=config.pooling, weights=weights,
                         image_size=config.image_size, cache=cache_dir, device=device,
                         verbose=not config.quiet).set_output(transform="pandas")


def extract(config: CompareConfig, run: BackboneRun, items: Sequence, cache_dir: Path, device: str) -> None:
    """Pooled features of every standard cut point of one backbone (cached), and the extraction time per image."""
    featurizer = featurizer_for(config, run.name, run.weights, "all", cache_dir, device)
    start = time.perf_counter()
    run.features = featurizer.fit().transform(items)
    run.extract_time_per_image = (time.perf_counter() - start) / max(len(items), 1)


class Runner:
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
        """The arguments of :func:`fit_predict` for a job: its estimator, training inputs and labels, test inputs."""
        split = job.split
        counts = np.bincount(self.imageset.labels[split.train_idx], minlength=len(self.imageset.classes))
        weights, _ = self._weights(job)
        context = BuildContext(backbone=job.backbone if job.method.needs_backbone else None, weights=weights,
                               augment=job.augment, n_per_class=int(counts.min()), seed=self._seed(job),
                               settings=self.settings)
        X_train, X_test = self._inputs(job)
        return job.method.build(context), X_train, self.imageset.labels[split.train_idx], X_test, job.method.chosen

    def finish(self, job: Job, outcome: tuple) -> Fit:
        """The :class:`Fit` of a job from what :func:`fit_predict` returned."""
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
            outcomes = parallel(delayed(fit_predict)(*self.prepare(job)) for job in cheap)
            for outcome, job in zip(outcomes, cheap):  # outcomes first: the generator is run to its end
                yield job, self.finish(job, outcome)
        for job in (job for job in jobs if job.method.costly):
            yield job, self.finish(job, fit_predict(*self.prepare(job)))


def fit_predict(estimator, X_train, y_train, X_test, chosen) -> tuple:
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


def progress(results: Iterator[tuple[Job, Fit]], total: int, skipped: int, quiet: bool) -> Iterator[Fit]:
    """The fits as they finish, with a progress bar that counts the journaled ones as done (and says so)."""
    if skipped:
        log.info("%d of %d fits already finished in an earlier run: skipped", skipped, total)
    with tqdm(total=total, initial=skipped, desc="fits", unit="fit", disable=quiet) as bar:
        for job, fit in results:
            bar.set_postfix_str(f"{job.method.name} {job.backbone} {job.cut}".strip())
            bar.update()
            yield fit


