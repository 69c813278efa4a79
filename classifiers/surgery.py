"""Fine-tuning surgery: which stages a strategy unfreezes, freezing, train/eval modes; the cut itself and the new
head are each backbone family's (:meth:`featurize.families.BackboneFamily.adapt`, whose module docstrings say
where each family's stages and head go).

Stages past the cut point are removed, a stage the cut goes through is kept up to the cut.  The new head (a
``Linear`` layer) is always trainable:

- ``strategy="head"``: only the head (a linear probe trained end to end with the backbone frozen);
- ``"last_block"`` = ``"last:1"``: the head and the deepest stage; ``"last:k"``: the head and the k deepest stages;
- ``"full"``: everything (with ``weights=None`` this is the from-scratch baseline).

``cut=None`` replaces the network's own classifier (ResNet ``fc``, VGG ``fc8`` = ``classifier.6``, a timm model's
classifier); cutting at the classifier itself is an error.
"""

from __future__ import annotations

from torch import nn

from classifiers.options import STRATEGIES
from featurize.families import FAMILIES
from featurize.spec import Adaptation, BackboneSpec

__all__ = [
    "STRATEGIES",
    "Adaptation",
    "build_adapted",
    "check_cut",
    "check_strategy",
    "freeze_except",
    "parameters_at",
    "set_train_mode",
    "unfrozen_stages",
]



def check_cut(spec: BackboneSpec, cut: str | None) -> None:
    """Raise a ValueError listing the valid cut points when a new head cannot go at ``cut``."""
    if cut is None:
        return
    valid = FAMILIES[spec.family].head_cuts(spec)
    if not isinstance(cut, str) or cut not in valid:
        raise ValueError(
            f"cut={cut!r} is not a cut point of {spec.name} where a new head can go; valid: None (replace the "
            f"network's classifier), {', '.join(valid)}"
        )


def build_adapted(spec: BackboneSpec, model: nn.Module, cut: str | None, n_classes: int) -> Adaptation:
    """Cut ``model`` in place and give it a new ``Linear`` head for ``n_classes`` classes (see module docstring).

    Raises
    ------
    ValueError
        For a cut point where no head can go.
    """
    check_cut(spec, cut)
    return FAMILIES[spec.family].adapt(model, spec, cut, n_classes)


def unfrozen_stages(strategy: object, n_stages: int | None = None) -> int:
    """Number of stages ``strategy`` unfreezes (``n_stages=None``: check the syntax only).

    Raises
    ------
    ValueError
        For an unknown strategy or a ``"last:k"`` with k outside 1..n_stages.
    """
    fixed = {"head": 0, "last_block": 1, "full": n_stages or 0}
    if isinstance(strategy, str) and strategy in fixed:
        return fixed[strategy]
    if isinstance(strategy, str) and strategy.startswith("last:"):
        k = strategy.removeprefix("last:")
        if k.isdigit() and 1 <= int(k) <= (n_stages or int(k)):
            return int(k)
        raise ValueError(
            f"strategy={strategy!r}: k must be an integer from 1 to the number of stages of the network"
            + (f" ({n_stages})" if n_stages else "")
        )
    raise ValueError(f"Unknown strategy={strategy!r}; valid: 'head', 'last_block', 'last:k' (k ≥ 1), 'full'")


def check_strategy(strategy: object) -> None:
    """Check the syntax of a strategy (the stage count is checked once the network is built)."""
    unfrozen_stages(strategy)


def parameters_at(model: nn.Module, path: str) -> list[nn.Parameter]:
    """The parameters under a stage path: a submodule's, or the parameter itself (a ViT's ``pos_embed``)."""
    try:
        return list(model.get_submodule(path).parameters())
    except AttributeError:
        return [model.get_parameter(path)]


def freeze_except(model: nn.Module, paths: list[str]) -> list[nn.Parameter]:
    """Freeze every parameter of ``model`` except those under ``paths``; return the trainable ones."""
    model.requires_grad_(False)
    params = []
    for path in paths:
        for p in parameters_at(model, path):
            p.requires_grad_(True)
            params.append(p)
    return params


def set_train_mode(model: nn.Module, trainable: list[str], bn_frozen: bool = False) -> None:
    """Trainable modules in train mode, everything else (frozen BatchNorm, frozen dropout) in eval mode; with
    ``bn_frozen`` every BatchNorm layer stays in eval mode (its running statistics are used and kept)."""
    model.eval()
    modules = dict(model.named_modules())
    for path in trainable:
        if path in modules:
            modules[path].train()
    if bn_frozen:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
