"""What a comparison runs: the checks of a configuration before any work, the cut points, the seeds, and the list of
fits (:class:`Job`) in the order the tables list them."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifiers.augment import AUGMENTATIONS
from classifiers.training import parse_schedule
from featurize.backbones import get_backbone_spec, is_backbone, list_backbones, penultimate_cut
from featurize.families import FAMILIES
from pipelines.compare.config import CompareConfig, finetune_backbones, finetune_image_size, resolve_backbones
from pipelines.methods import (FINETUNE_SETTINGS, MIN_GRID_PER_CLASS, NO_BACKBONE, BuildContext, Method, get_method,
                               list_methods)
from pipelines.protocols import protocol
from pipelines.results import FitKey
from pipelines.splits import Split

__all__ = ["Job", "build_settings", "cuts_for", "fit_seed", "plan", "validate"]


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
    config = resolve_backbones(config)
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
    if config.export_config is not None:
        parts = config.export_config.split("/")
        if not config.export or len(parts) not in (3, 4):
            raise ValueError(f"--export-config {config.export_config!r}: write backbone/cut/method (cut may be empty, "
                             "an optional /augment after it) and give --export DIR")
        get_method(parts[2])
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


def cuts_for(config: CompareConfig, backbone: str) -> list[str]:
    """Cut points the frozen-feature heads use on ``backbone``: ``config.cuts`` (its entry, else the ``"*"`` entry
    for every backbone) or the family's defaults; ``penultimate`` names the cut point just before the classifier."""
    spec = get_backbone_spec(backbone)
    chosen = (config.cuts or {}).get(backbone) or (config.cuts or {}).get("*") or FAMILIES[spec.family].default_cuts
    return list(dict.fromkeys(penultimate_cut(spec) if c == "penultimate" else spec.cut(c).name for c in chosen))


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


