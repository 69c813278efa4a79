"""What a comparison method is: one entry per method in one table.

A :class:`Method` says what it is called, which family its results belong to, what it is trained on (frozen
features at one cut point or all of them, raw pixels, or the images themselves), whether it runs on every split or
only on the few the costly fine-tuning gets, and how its estimator is built for one fit.  Adding a method is one
:func:`register_method` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from classifiers.finetune import FineTunedCNN
from classifiers.heads import HEADS, make_head

__all__ = ["FAMILIES", "NO_BACKBONE", "BuildContext", "Method", "METHODS", "get_method", "list_methods", "register_method"]

FAMILIES: dict[str, str] = {
    "frozen": "frozen CNN features + a classical head",
    "finetune": "end-to-end fine-tuning of the CNN",
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
        Run-wide settings the builders read (``epochs``, ``finetune_image_size``, ``cache_dir``, ``device``).
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
    costly : bool
        Runs only on the first ``finetune_splits`` splits and the fine-tuned backbones.
    augments : bool
        Runs once per ``--augment`` policy.
    random_init : bool
        Ignores the run's weights and starts from random initialisation.
    """

    name: str
    family: str
    description: str
    inputs: str
    cuts: str
    build: Callable[[BuildContext], Any]
    costly: bool = False
    augments: bool = False
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


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add a method to :data:`METHODS`; a name already registered is refused."""
    if method.name in METHODS:
        raise ValueError(f"A method is already registered under the name {method.name!r}.")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method called ``name``; an unknown name raises a ValueError listing the valid ones."""
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name]


def list_methods() -> list[str]:
    """Every registered method name, in registration order."""
    return list(METHODS)


def _head_builder(name: str) -> Callable[[BuildContext], Any]:
    return lambda ctx: make_head(name, random_state=ctx.seed)


def _finetune_builder(strategy: str, **fixed) -> Callable[[BuildContext], Any]:
    def build(ctx: BuildContext) -> FineTunedCNN:
        settings = ctx.settings
        params = {
            "weights": ctx.weights, "strategy": strategy, "augment": ctx.augment, "epochs": settings["epochs"],
            "lr": 1e-3, "image_size": settings["finetune_image_size"],
            "validation_fraction": 0.2 if ctx.n_per_class >= 10 else None, "patience": 3,
            "cache": settings["cache_dir"], "device": settings["device"], "random_state": settings["seed"],
        }
        params.update({k: v(settings) if callable(v) else v for k, v in fixed.items()})
        return FineTunedCNN(backbone=ctx.backbone, **params)

    return build


for _name, _description in HEADS.items():
    register_method(Method(_name, "frozen", _description, "features", "all" if _name == "multilayer" else "each",
                           _head_builder(_name)))
register_method(Method("pixels", "pixels", "logistic regression on 32×32 raw pixels", "pixels", "none",
                       lambda ctx: make_head("logistic")))
register_method(Method("finetune_head", "finetune", "new linear head trained end to end, backbone frozen", "images",
                       "none", _finetune_builder("head"), costly=True, augments=True))
register_method(Method("finetune_last_block", "finetune", "new head + the deepest stage trained", "images", "none",
                       _finetune_builder("last_block"), costly=True, augments=True))
register_method(Method("finetune_full", "finetune", "every layer trained (discriminative learning rates)", "images",
                       "none", _finetune_builder("full"), costly=True, augments=True))
register_method(Method("scratch", "scratch", "the whole network trained from random initialisation", "images", "none",
                       _finetune_builder("full", epochs=lambda s: 2 * s["epochs"]), costly=True, random_init=True))
