"""The settings of one comparison (:class:`CompareConfig`), importable without torch: the command builds its parser
and answers ``--help`` from them before anything heavy is imported."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pipelines.protocols import protocol

__all__ = ["AUTO_BACKBONES", "CACHED_EXTRAS", "CompareConfig", "DEFAULT_BACKBONES", "DEFAULT_METHODS",
           "default_backbones", "finetune_backbones", "finetune_image_size", "finetune_split_count",
           "protocol_overrides", "resolve_backbones", "results_config"]

DEFAULT_METHODS = ("linear_svm", "logistic", "random_forest", "multilayer", "pixels", "finetune_head",
                   "finetune_last_block")
"""Methods of the default run; ``scratch`` and ``finetune_full`` are left to ``--methods`` (on a CPU they cost more
than the whole default comparison)."""
_NOT_RESULTS = ("out", "quiet", "command", "restart", "n_jobs", "data_dir", "cache_dir", "export", "export_config")

DEFAULT_BACKBONES = ("efficientnet_lite0",)
"""Backbones of the default run: ImageNet weights that install with pip, so every machine runs pretrained."""
CACHED_EXTRAS = ("resnet18", "vgg16")
"""The course's backbones, added to the default run when their ImageNet weights are already in the torchvision
cache (never downloaded by default)."""
AUTO_BACKBONES = "auto"
"""``backbones=("auto",)``: :func:`default_backbones`, resolved when the run starts."""


def default_backbones() -> tuple[str, ...]:
    """:data:`DEFAULT_BACKBONES`, then each of :data:`CACHED_EXTRAS` whose weights file is in the torchvision cache."""
    from featurize.backbones import get_backbone_spec, resolve_weights, weights_file

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

    ``backbones`` ``("auto",)`` is :func:`default_backbones`; ``cuts`` maps a backbone to its cut points (default per
    family; ``penultimate`` is the layer before the
    classifier); ``train_sizes`` None is the default learning curve the dataset can provide;
    ``finetune_splits`` None fine-tunes on every split; ``finetune_backbones`` None
    fine-tunes the first of ``backbones``, ``["all"]`` every one; ``finetune_image_size="same"`` fine-tunes at the
    frozen features' crop size; ``restart`` discards the journal of an earlier run in ``out``; ``export`` is a folder
    where the pre-selected configuration (or ``export_config``, ``backbone/cut/method``) is refitted on every labelled
    image and saved with its card (:mod:`pipelines.compare.export`).  Use :meth:`for_protocol` for the published
    protocols.
    """

    protocol: str = "default"
    dataset: str = "demo"
    backbones: Sequence[str] = (AUTO_BACKBONES,)
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
    export: str | None = None
    export_config: str | None = None
    command: str = field(default_factory=_command)

    @classmethod
    def for_protocol(cls, name: str, **overrides) -> "CompareConfig":
        """The configuration of a protocol of :data:`PROTOCOLS`, with ``overrides`` on top."""
        return cls(**{"protocol": name, **protocol(name).settings, **overrides})


def resolve_backbones(config: CompareConfig) -> CompareConfig:
    """``config`` with ``backbones=("auto",)`` replaced by :func:`default_backbones` (unchanged otherwise)."""
    if list(config.backbones) != [AUTO_BACKBONES]:
        return config
    return replace(config, backbones=default_backbones())


def finetune_image_size(config: CompareConfig) -> int | str | None:
    """The fine-tuning crop size: ``finetune_image_size``, or ``image_size`` when it is ``"same"``."""
    return config.image_size if config.finetune_image_size == "same" else config.finetune_image_size


def finetune_backbones(config: CompareConfig) -> list[str]:
    """The backbones fine-tuned: ``finetune_backbones`` (``["all"]``: every one), default the first of ``backbones``."""
    if config.finetune_backbones is None:
        return list(config.backbones[:1])
    chosen = [config.finetune_backbones] if isinstance(config.finetune_backbones, str) else config.finetune_backbones
    return list(config.backbones) if list(chosen) == ["all"] else list(chosen)


def finetune_split_count(config: CompareConfig) -> int:
    """Splits the costly methods run on: ``finetune_splits``, by default every split (on a CPU as on a GPU: no
    verdict rests on fewer than 5 draws)."""
    if config.finetune_splits is not None:
        return min(config.finetune_splits, config.splits)
    return config.splits


def protocol_overrides(config: CompareConfig) -> list[str]:
    """Settings of ``config`` that differ from its protocol preset (the preset's own settings only)."""
    def norm(value):
        return list(value) if isinstance(value, (list, tuple)) else value

    preset = protocol(config.protocol).settings
    return [k for k, v in preset.items() if norm(getattr(config, k)) != norm(v)]


def results_config(config: CompareConfig) -> dict:
    """The configuration fields that determine the results (what a journal must match to be resumed)."""
    return {k: v for k, v in asdict(config).items() if k not in _NOT_RESULTS}
