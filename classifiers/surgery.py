"""Model surgery for fine-tuning: cut a torchvision ResNet/VGG or a timm model, give it a new head, split it into
stages, freeze.

Stages
------
Fine-tuning strategies unfreeze the deepest *stages* of the (possibly cut) network:

- ResNet: stage 0 is the stem (``conv1`` + ``bn1``), stages 1–4 are ``layer1`` … ``layer4``.
- VGG: stages 1–5 are the convolution blocks (``features`` modules up to and including each max pool), stage 6 is
  the fully-connected block ``fc6``/``fc7`` (``classifier.0`` … ``classifier.5``, dropout included).
- timm models: one stage per module of the model's feature info (ResNet ``act1``, ``layer1`` …; ConvNeXt
  ``stages.i``; ViT ``blocks.i``), each with the modules before it since the previous one (the stem joins the first
  stage, with a ViT's class/register tokens and position embedding); what follows the last one (final norms) joins
  the last stage.  A stage path is a module or, for those embeddings, a parameter.

Stages past the cut point are removed, a stage the cut goes through is kept up to the cut.  The new head (a
``Linear`` layer) is always trainable:

- ``strategy="head"``: only the head (a linear probe trained end to end with the backbone frozen);
- ``"last_block"`` = ``"last:1"``: the head and the deepest stage; ``"last:k"``: the head and the k deepest stages;
- ``"full"``: everything (with ``weights=None`` this is the from-scratch baseline).

Cut points
----------
``cut=None`` replaces the network's own classifier (ResNet ``fc``, VGG ``fc8`` = ``classifier.6``).  A ResNet cut at
``conv1``/``layerN`` drops the later stages and puts global average pooling + a new ``Linear`` there (``avgpool`` is
the same as ``None``).  A VGG cut at a convolution or pool drops the later ``features`` and the FC block and puts
global average pooling + ``Linear``; a cut at ``fc6``/``fc7`` keeps the network up to that layer (and its dropout)
and puts the ``Linear`` after it.  Cutting at the classifier itself (``fc``, ``fc8``) is an error.  A timm model
takes ``cut=None`` (= ``"pre_logits"``): timm's ``reset_classifier`` puts the new ``Linear`` in place of its
classifier, keeping the model's own pooling and norms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from featurize.backbones import BackboneSpec, set_module

__all__ = [
    "ADAPTERS",
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

STRATEGIES = ("head", "last_block", "last:k", "full")


@dataclass(frozen=True)
class Adaptation:
    """Where the new head sits and how the kept network splits into stages (shallow to deep)."""

    head: str
    stages: tuple[tuple[str, ...], ...]
    feature_cut: str

    def trainable(self, n_unfrozen: int) -> list[str]:
        """Module paths of the ``n_unfrozen`` deepest stages (the head not included)."""
        return [path for stage in self.stages[len(self.stages) - n_unfrozen :] for path in stage]

    def depths(self, n_unfrozen: int) -> list[int]:
        """For each path of :meth:`trainable`, how many stages lie between its stage and the deepest one."""
        stages = self.stages[len(self.stages) - n_unfrozen :]
        return [len(stages) - 1 - i for i, stage in enumerate(stages) for _ in stage]


def _adapt_resnet(model: nn.Module, spec: BackboneSpec, cut: str | None, n_classes: int) -> Adaptation:
    name = "avgpool" if cut is None else spec.cut(cut).name
    depth = 4 if name == "avgpool" else 0 if name == "conv1" else int(name.removeprefix("layer"))
    for k in range(depth + 1, 5):
        set_module(model, f"layer{k}", nn.Identity())
    if depth == 0:
        model.maxpool = nn.Identity()
    model.fc = nn.Linear(spec.cut(name).channels, n_classes)
    stages = (("conv1", "bn1"), *((f"layer{k}",) for k in range(1, depth + 1)))
    return Adaptation(head="fc", stages=stages, feature_cut=name)


def _adapt_vgg(model: nn.Module, spec: BackboneSpec, cut: str | None, n_classes: int) -> Adaptation:
    point = spec.cut(cut or "fc7")
    if point.module.startswith("features."):
        end = int(point.module.split(".")[1])
        model.features = model.features[: end + 1]
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Sequential(nn.Linear(point.channels, n_classes))
        head_index = 0
    else:
        head_index = int(point.module.split(".")[1]) + 2
        model.classifier = nn.Sequential(*list(model.classifier)[:head_index], nn.Linear(point.channels, n_classes))
    stages, block = [], []
    for idx, layer in enumerate(model.features):
        block.append(f"features.{idx}")
        if isinstance(layer, nn.MaxPool2d):
            stages.append(tuple(block))
            block = []
    if block:
        stages.append(tuple(block))
    if head_index:
        stages.append(tuple(f"classifier.{i}" for i in range(head_index)))
    return Adaptation(head=f"classifier.{head_index}", stages=tuple(stages), feature_cut=point.name)


def _timm_stages(model: nn.Module, features: list[str], classifier: str) -> tuple[tuple[str, ...], ...]:
    """Stages of a timm model: walk its modules in definition order, closing a stage at each feature module."""
    stages: list[tuple[str, ...]] = []
    current = [name for name, _ in model.named_parameters(recurse=False)]

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if path == classifier:
                continue
            if any(f.startswith(f"{path}.") for f in (*features, classifier)):
                current.extend(f"{path}.{p}" for p, _ in child.named_parameters(recurse=False))
                walk(child, f"{path}.")
                continue
            current.append(path)
            if path in features:
                stages.append(tuple(current))
                current.clear()

    walk(model, "")
    stages[-1] += tuple(current)
    return tuple(stages)


def _adapt_timm(model: nn.Module, spec: BackboneSpec, cut: str | None, n_classes: int) -> Adaptation:
    del cut
    model.reset_classifier(n_classes)
    head = next(path for path, m in model.named_modules() if m is model.get_classifier())
    features = [c.module for c in spec.cut_points if c.is_spatial]
    return Adaptation(head=head, stages=_timm_stages(model, features, head), feature_cut="pre_logits")


ADAPTERS: dict[str, Callable[[nn.Module, BackboneSpec, str | None, int], Adaptation]] = {
    "resnet": _adapt_resnet,
    "vgg": _adapt_vgg,
    "timm": _adapt_timm,
}

HEAD_CUTS: dict[str, Callable[[BackboneSpec], list[str]]] = {
    "timm": lambda spec: ["pre_logits"],
}
"""Cut points where a new head can go, for families that do not take every cut point before the classifier."""


def check_cut(spec: BackboneSpec, cut: str | None) -> None:
    """Raise a ValueError listing the valid cut points when a new head cannot go at ``cut``."""
    if cut is None:
        return
    every = [c for c in spec.cut_names if spec.cut(c).module != spec.classifier]
    valid = HEAD_CUTS[spec.family](spec) if spec.family in HEAD_CUTS else every
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
        For a cut point where no head can go, or a backbone family without an adapter.
    """
    check_cut(spec, cut)
    if spec.family not in ADAPTERS:
        raise ValueError(f"No fine-tuning adapter for family {spec.family!r}; known: {', '.join(ADAPTERS)}")
    return ADAPTERS[spec.family](model, spec, cut, n_classes)


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


def set_train_mode(model: nn.Module, trainable: list[str]) -> None:
    """Trainable modules in train mode, everything else (frozen BatchNorm, frozen dropout) in eval mode."""
    model.eval()
    modules = dict(model.named_modules())
    for path in trainable:
        if path in modules:
            modules[path].train()
