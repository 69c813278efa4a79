"""What a comparison method is: one entry per method in one table.

A :class:`Method` says what it is called, which family its results belong to, what it is trained on (frozen
features at one cut point or all of them, raw pixels, or the images themselves), whether it runs on every split or
only on the few the costly fine-tuning gets, how its estimator is built for one fit, and what that fitted estimator
chose on its training images alone (its training-side selection score and hyperparameters).  Adding a method is one
:func:`register_method` call.

Every classical head (and the raw-pixel baseline) is tuned inside each training split by an inner stratified
cross-validation over its documented grid (:func:`classifiers.heads.make_tuned_head`); fine-tuning chooses its
number of epochs on an inner validation split of the training images and is then refitted on all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from classifiers.heads import HEADS, make_tuned_head
from featurize.registry import Registry

__all__ = ["FAMILIES", "FINETUNE_SETTINGS", "NO_BACKBONE", "BuildContext", "Method", "METHODS", "get_method",
           "list_methods", "register_method"]

FAMILIES: dict[str, str] = {
    "frozen": "frozen CNN features + a classical head",
    "finetune": "end-to-end fine-tuning of the CNN (the new head and some or all of its layers)",
    "linear_probe_sgd": "a new linear head trained by SGD on the frozen CNN (a linear probe, fitted end to end)",
    "scratch": "the whole CNN trained from random initialisation",
    "pixels": "a classical head on raw pixels (no CNN)",
}
"""Families of methods, with what each one means in the reports."""

NO_BACKBONE = "none (raw pixels)"
"""What the ``backbone`` column holds for methods that use no backbone."""

INPUTS = ("features", "pixels", "images")
CUTS = ("each", "all", "none")


@dataclass(frozen=True)
class BuildContext:
    """What a method's builder may use for one fit.

    Attributes
    ----------
    backbone : str or None
        The backbone (None for methods without one).
    weights : object
        The ``weights`` argument of that backbone (None = random init).
    augment : str
        Augmentation policy (``"none"`` for methods that do not augment).
    n_per_class : int
        Training images per class of the split.
    seed : int
        Seed of the fit.
    settings : dict
        Run-wide fine-tuning settings the builders read (:data:`FINETUNE_SETTINGS` names them).
    """

    backbone: str | None
    weights: object
    augment: str
    n_per_class: int
    seed: int
    settings: dict[str, Any]


@dataclass(frozen=True)
class Method:
    """One way of learning the task.

    Parameters
    ----------
    name : str
        What ``--methods`` calls it.
    family : str
        A key of :data:`FAMILIES`.
    description : str
        One line for ``--help`` and the reports.
    inputs : {"features", "pixels", "images"}
        Pooled CNN activations, raw pixels, or the images (the estimator runs the CNN itself).
    cuts : {"each", "all", "none"}
        One fit per cut point, one fit on all cut points together, or no cut point.
    build : callable
        ``build(BuildContext) -> estimator`` with ``fit``/``predict``.
    chosen : callable
        ``chosen(fitted estimator) -> (selection_score, hyperparameters)``: what the fit chose on its training images
        only (inner-CV accuracy of the chosen grid point, or inner-validation accuracy of the chosen epoch).
    costly : bool
        Runs only on the first ``finetune_splits`` splits and the fine-tuned backbones.
    augment : str or None
        The augmentation policy of its training, or None: once per ``--augment`` policy.
    auto_augment : str
        The policy ``--augment auto`` stands for (flip + random-resized crop for fine-tuning, none for a probe).
    random_init : bool
        Ignores the run's weights and starts from random initialisation.
    """

    name: str
    family: str
    description: str
    inputs: str
    cuts: str
    build: Callable[[BuildContext], Any]
    chosen: Callable[[Any], tuple[float, dict]]
    costly: bool = False
    augment: str | None = "none"
    auto_augment: str = "none"
    random_init: bool = False

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"method {self.name!r}: family must be one of {', '.join(FAMILIES)}; got {self.family!r}")
        if self.inputs not in INPUTS or self.cuts not in CUTS:
            raise ValueError(f"method {self.name!r}: inputs must be one of {INPUTS} and cuts one of {CUTS}")

    @property
    def needs_backbone(self) -> bool:
        """Whether the method runs on a backbone (everything but raw pixels)."""
        return self.inputs != "pixels"

    def policies(self, requested: Sequence[str]) -> list[str]:
        """The augmentation policies it is fitted with: its own, else each requested one (``auto`` resolved)."""
        if self.augment is not None:
            return [self.augment]
        return list(dict.fromkeys(self.auto_augment if policy == "auto" else policy for policy in requested))


METHODS: Registry[Method] = Registry("method")
"""The methods registered besides the classical heads (every head of :data:`classifiers.heads.HEADS` is a method
too, derived when it is looked up, so a head registered later is a method as well)."""


def register_method(method: Method) -> Method:
    """Add a method to :data:`METHODS`; a name already registered (or a head's) is refused."""
    if method.name in HEADS:
        raise ValueError(f"A head is already registered under the name {method.name!r}.")
    return METHODS.register(method.name, method)


def _head_method(name: str) -> Method:
    """The frozen-feature method of head ``name``: tuned by inner CV, at each cut point (``multilayer``: all)."""
    return Method(name, "frozen", HEADS[name].description, "features", "all" if name == "multilayer" else "each",
                  _tuned_head(name), _searched)


def get_method(name: str) -> Method:
    """The method called ``name`` (a head of :data:`classifiers.heads.HEADS` or a registered method).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid ones.
    """
    if isinstance(name, str) and name in HEADS:
        return _head_method(name)
    if isinstance(name, str) and name in METHODS:
        return METHODS[name]
    raise ValueError(f"Unknown method {name!r}; valid methods: {', '.join(list_methods())}")


def list_methods() -> list[str]:
    """Every method name: the heads, then the registered methods, in registration order."""
    return [*HEADS, *METHODS]


FINETUNE_SETTINGS = ("epochs", "min_steps", "image_size", "optimizer", "schedule", "batch_size", "lr", "lr_ratio",
                     "lr_grid", "bn", "head_init", "weight_decay", "validation_fraction", "inner_folds", "cache_dir",
                     "device")
"""Keys of :attr:`BuildContext.settings` (the comparison's tuning and fine-tuning options)."""
MIN_VALIDATION_PER_CLASS = 10
"""Below this many training images per class, fine-tuning keeps no validation split: no candidate is chosen (the
probe-initialised network is fine-tuned at ``lr`` for the step budget)."""
MIN_GRID_PER_CLASS = 20
"""From this many training images per class on, the head learning rates of ``lr_grid`` are tried on the inner
validation split (below, its 2–4 validation images per class choose only between the probe and ``lr``)."""
PATIENCE = 3
"""Early-stopping patience of the fine-tuning methods, in epochs (FineTunedCNN scales it with the step floor)."""


def _searched(search) -> tuple[float, dict]:
    params = {key.removeprefix("clf__"): value for key, value in search.best_params_.items()}
    return float(search.best_score_), params


def _trained(model) -> tuple[float, dict]:
    chosen = model.chosen_
    return float(model.validation_score_), {"candidate": chosen["candidate"], "lr": chosen["lr"],
                                            "epochs": int(model.selected_epochs_), "steps": int(model.n_steps_)}


def _tuned_head(name: str) -> Callable[[BuildContext], Any]:
    return lambda ctx: make_tuned_head(name, n_per_class=ctx.n_per_class, random_state=ctx.seed,
                                       max_folds=ctx.settings["inner_folds"])


def _finetune_builder(strategy: str, **fixed) -> Callable[[BuildContext], Any]:
    def build(ctx: BuildContext):
        from classifiers.finetune import FineTunedCNN  # torch: imported when a fit is built, not by --help

        s = ctx.settings
        validation = s["validation_fraction"] if ctx.n_per_class >= MIN_VALIDATION_PER_CLASS else None
        grid = s["lr_grid"] if validation is not None and ctx.n_per_class >= MIN_GRID_PER_CLASS else None
        params = {
            "weights": ctx.weights, "strategy": strategy, "augment": ctx.augment, "epochs": s["epochs"],
            "min_steps": s["min_steps"], "lr": s["lr"], "lr_ratio": s["lr_ratio"], "optimizer": s["optimizer"],
            "lr_candidates": tuple(grid) if grid else None, "bn": s["bn"], "head_init": s["head_init"],
            "schedule": s["schedule"], "batch_size": s["batch_size"], "image_size": s["image_size"],
            "weight_decay": s["weight_decay"],
            "validation_fraction": validation, "refit": True, "patience": PATIENCE, "cache": s["cache_dir"],
            "device": s["device"], "random_state": ctx.seed, **fixed,
        }
        return FineTunedCNN(ctx.backbone, **params)

    return build


register_method(Method("pixels", "pixels", "logistic regression on 32×32 raw pixels, tuned like the heads", "pixels",
                       "none", _tuned_head("logistic"), _searched))
register_method(Method("finetune_head", "linear_probe_sgd",
                       "new linear head trained by SGD on the frozen backbone (a linear probe)", "images", "none",
                       _finetune_builder("head"), _trained, costly=True, augment=None))
register_method(Method("finetune_last_block", "finetune",
                       "the deepest stage and a new head trained (LP-FT: from the linear probe, kept as a candidate)",
                       "images", "none", _finetune_builder("last_block"), _trained, costly=True, augment=None,
                       auto_augment="flip_crop"))
register_method(Method("finetune_full", "finetune",
                       "every layer trained (discriminative learning rates; LP-FT: from the linear probe, kept as a "
                       "candidate)", "images", "none", _finetune_builder("full"), _trained, costly=True, augment=None,
                       auto_augment="flip_crop"))
register_method(Method("scratch", "scratch",
                       "the whole network trained from random initialisation (one learning rate, flip + crop "
                       "augmentation, BatchNorm statistics learnt)", "images", "none",
                       _finetune_builder("full", lr_ratio=1.0, bn="train", head_init="random"),
                       _trained, costly=True, augment="flip_crop", random_init=True))
