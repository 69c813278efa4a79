"""torchvision's ResNet and VGG families: builders and weights enums, cut points, weights, fine-tuning surgery.

Cut points
----------
A cut point is a friendly name (``layer3``, ``conv4_2``, ``fc7``) bound to the torchvision module path whose output
it denotes (``layer3``, ``features.19``, ``classifier.4``).  Convolution cut points of VGG denote the activation
after the ReLU (and BatchNorm for the ``_bn`` variants); ``fc6``/``fc7`` are post-ReLU too, ``fc8`` is the logits.
ResNet's ``conv1`` is the stem activation (conv1 → bn1 → relu), before the max pool.

Weights
-------
``"DEFAULT"`` or an enum member name (``"IMAGENET1K_V1"``), an enum member, a path to a local ``.pth`` state dict
(sha256-checked when the name carries torchvision's hash prefix; loaded with ``weights_only=True``), or ``None``
(random init).  Enum weights come from the TORCH_HOME cache and are downloaded only where a network exists and
``FEATURIZE_OFFLINE`` is unset.

Stages and surgery
------------------
- ResNet: stage 0 is the stem (``conv1`` + ``bn1``), stages 1–4 are ``layer1`` … ``layer4``.  A cut at
  ``conv1``/``layerN`` drops the later stages and puts global average pooling + a new ``Linear`` there (``avgpool``
  is the same as ``None``).
- VGG: stages 1–5 are the convolution blocks (``features`` modules up to and including each max pool), stage 6 is
  the fully-connected block ``fc6``/``fc7`` (``classifier.0`` … ``classifier.5``, dropout included).  A cut at a
  convolution or pool drops the later ``features`` and the FC block and puts global average pooling + ``Linear``; a
  cut at ``fc6``/``fc7`` keeps the network up to that layer (and its dropout) and puts the ``Linear`` after it.
"""

from __future__ import annotations

import io
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision import models
from torchvision.models import WeightsEnum

from featurize.families.base import BackboneFamily
from featurize.preprocessing import Preprocessing
from featurize.spec import Adaptation, BackboneSpec, measure_cut_points, meta_model, set_module
from featurize.weights import (
    OFFLINE_ENV,
    ResolvedWeights,
    build_random,
    is_weights_path,
    local_file,
    random_weights,
    read_verified,
)

__all__ = ["ResNetFamily", "TorchvisionFamily", "VGGFamily"]


def _preset_of(enum: WeightsEnum) -> Preprocessing:
    t = enum.transforms()
    return Preprocessing(
        resize=int(t.resize_size[0]),
        crop=int(t.crop_size[0]),
        mean=tuple(float(m) for m in t.mean),
        std=tuple(float(s) for s in t.std),
        interpolation=t.interpolation.value,
    )


def _cached_file(enum: WeightsEnum) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)


class TorchvisionFamily(BackboneFamily):
    """A torchvision model family: a table name → (builder, weights enum), the cut-point paths and the classifier."""

    models: dict[str, tuple[Callable[..., nn.Module], type[WeightsEnum]]]
    classifier: str

    def names(self) -> list[str]:
        return list(self.models)

    def paths(self, model: nn.Module) -> list[tuple[str, str]]:
        """(cut point name, module path) of every cut point, shallow to deep."""
        raise NotImplementedError

    @lru_cache(maxsize=None)
    def spec(self, backbone: str) -> BackboneSpec:
        if backbone not in self.models:
            raise ValueError(f"Unknown {self.name} backbone {backbone!r}; valid: {', '.join(self.models)}")
        builder, weights_enum = self.models[backbone]
        model = meta_model(builder)
        return BackboneSpec(name=backbone, family=self.name, builder=builder, weights_enum=weights_enum,
                            cut_points=tuple(measure_cut_points(model, self.paths(model))),
                            classifier=self.classifier)

    def resolve_weights(self, spec: BackboneSpec, weights: object, random_state: int | None = 0) -> ResolvedWeights:
        """``"DEFAULT"``/an enum member name, a member of ``spec.weights_enum``, a ``.pth`` path, or None."""
        if weights is None:
            return random_weights(random_state, Preprocessing(), f"torch={torch.__version__}")
        enum_cls = spec.weights_enum
        if isinstance(weights, WeightsEnum):
            if not isinstance(weights, enum_cls):
                raise ValueError(f"weights={weights!r} belong to another model; {spec.name} takes {enum_cls.__name__}")
            member = weights
        elif is_weights_path(weights, (".pth", ".pt")):
            return local_file(weights, Preprocessing(), "a .pth path, an enum name or None")
        elif isinstance(weights, str):
            owner, _, name = weights.rpartition(".")
            names = list(dict.fromkeys(["DEFAULT", *enum_cls.__members__]))
            if owner and owner.rpartition(".")[2] != enum_cls.__name__:
                raise ValueError(f"weights={weights!r} belong to another model; {spec.name} takes "
                                 f"{enum_cls.__name__}.<name>, with name one of {', '.join(names)}")
            if name not in names:
                raise ValueError(f"Unknown weights {weights!r} for {spec.name}; valid: {', '.join(names)}, "
                                 "a .pth path or None")
            member = enum_cls[name] if name != "DEFAULT" else enum_cls.DEFAULT
        else:
            raise ValueError(f"weights must be a string, a {enum_cls.__name__} member, a path or None; got {weights!r}")
        return ResolvedWeights(kind="torchvision", identity=f"{type(member).__name__}.{member.name}", pretrained=True,
                               preprocessing=_preset_of(member), enum=member)

    def weights_file(self, resolved: ResolvedWeights, download: bool = True) -> Path:
        """The given file, or torchvision's cached one (downloaded when missing, allowed and possible)."""
        if resolved.kind == "random":
            raise ValueError("random-init weights have no file")
        if resolved.kind == "file":
            return resolved.path
        enum = resolved.enum
        cached = _cached_file(enum)
        if not cached.is_file():
            where = (
                f"Put {cached.name} (from {enum.url}) into {cached.parent} (TORCH_HOME="
                f"{os.environ.get('TORCH_HOME', '')!r}), or pass weights='/path/to/{cached.name}', or weights=None for "
                "a random-init run."
            )
            if not download or os.environ.get(OFFLINE_ENV):
                raise FileNotFoundError(
                    f"Pretrained weights file {cached.name} is not cached and downloads are off. {where}")
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(enum.url, str(cached), hash_prefix=None, progress=True)
            except OSError as exc:
                raise FileNotFoundError(
                    f"Could not download pretrained weights file {cached.name} ({exc}). {where}") from exc
        return cached

    def load_model(self, spec: BackboneSpec, resolved: ResolvedWeights) -> nn.Module:
        if resolved.kind == "random":
            return build_random(spec, resolved)
        data = read_verified(resolved, self.weights_file(resolved, download=True))
        model = spec.builder(weights=None)
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"weights {resolved.identity} do not fit {spec.name}: {exc}") from exc
        return model.eval()

    def categories(self, spec: BackboneSpec, resolved: ResolvedWeights) -> list[str] | None:
        """The weights enum's ``categories`` (ImageNet's class names)."""
        return None if resolved.enum is None else list(resolved.enum.meta.get("categories") or []) or None

    def weights_dir_file(self, backbone: str, weights: str) -> str:
        """torchvision's own file name of the weights (``resnet18-f37072fd.pth``)."""
        return os.path.basename(self.resolve_weights(self.spec(backbone), weights).enum.url)


class ResNetFamily(TorchvisionFamily):
    """torchvision ResNet-18 … 152."""

    name = "resnet"
    description = "torchvision ResNet (He et al. 2016)"
    default_cuts = ("layer2", "layer3", "layer4")
    bench_cuts = ("layer1", "layer2", "layer3", "layer4")
    classifier = "fc"
    models = {
        "resnet18": (models.resnet18, models.ResNet18_Weights),
        "resnet34": (models.resnet34, models.ResNet34_Weights),
        "resnet50": (models.resnet50, models.ResNet50_Weights),
        "resnet101": (models.resnet101, models.ResNet101_Weights),
        "resnet152": (models.resnet152, models.ResNet152_Weights),
    }

    def paths(self, model: nn.Module) -> list[tuple[str, str]]:
        return [("conv1", "relu"), *((f"layer{k}", f"layer{k}") for k in range(1, 5)), ("avgpool", "avgpool"),
                ("fc", "fc")]

    def adapt(self, model: nn.Module, spec: BackboneSpec, cut: str | None, n_classes: int) -> Adaptation:
        name = "avgpool" if cut is None else spec.cut(cut).name
        depth = 4 if name == "avgpool" else 0 if name == "conv1" else int(name.removeprefix("layer"))
        for k in range(depth + 1, 5):
            set_module(model, f"layer{k}", nn.Identity())
        if depth == 0:
            model.maxpool = nn.Identity()
        model.fc = nn.Linear(spec.cut(name).channels, n_classes)
        stages = (("conv1", "bn1"), *((f"layer{k}",) for k in range(1, depth + 1)))
        return Adaptation(head="fc", stages=stages, feature_cut=name)


class VGGFamily(TorchvisionFamily):
    """torchvision VGG-11 … 19, with and without BatchNorm."""

    name = "vgg"
    description = "torchvision VGG (Simonyan & Zisserman 2015)"
    default_cuts = ("pool3", "pool4", "pool5", "fc7")
    bench_cuts = ("conv3_3", "conv4_3", "conv5_3", "fc7")
    classifier = "classifier.6"
    models = {
        "vgg11": (models.vgg11, models.VGG11_Weights),
        "vgg11_bn": (models.vgg11_bn, models.VGG11_BN_Weights),
        "vgg13": (models.vgg13, models.VGG13_Weights),
        "vgg13_bn": (models.vgg13_bn, models.VGG13_BN_Weights),
        "vgg16": (models.vgg16, models.VGG16_Weights),
        "vgg16_bn": (models.vgg16_bn, models.VGG16_BN_Weights),
        "vgg19": (models.vgg19, models.VGG19_Weights),
        "vgg19_bn": (models.vgg19_bn, models.VGG19_BN_Weights),
    }

    def paths(self, model: nn.Module) -> list[tuple[str, str]]:
        paths = []
        block, conv = 1, 0
        pending_conv = False
        for idx, layer in enumerate(model.features):
            if isinstance(layer, nn.Conv2d):
                conv += 1
                pending_conv = True
            elif isinstance(layer, nn.ReLU) and pending_conv:
                paths.append((f"conv{block}_{conv}", f"features.{idx}"))
                pending_conv = False
            elif isinstance(layer, nn.MaxPool2d):
                paths.append((f"pool{block}", f"features.{idx}"))
                block, conv = block + 1, 0
        return paths + [("fc6", "classifier.1"), ("fc7", "classifier.4"), ("fc8", "classifier.6")]

    def adapt(self, model: nn.Module, spec: BackboneSpec, cut: str | None, n_classes: int) -> Adaptation:
        point = spec.cut(cut or "fc7")
        if point.module.startswith("features."):
            end = int(point.module.split(".")[1])
            model.features = model.features[: end + 1]
            model.avgpool = nn.AdaptiveAvgPool2d(1)
            model.classifier = nn.Sequential(nn.Linear(point.channels, n_classes))
            head_index = 0
        else:
            head_index = int(point.module.split(".")[1]) + 2
            model.classifier = nn.Sequential(*list(model.classifier)[:head_index],
                                             nn.Linear(point.channels, n_classes))
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
