"""timm models as backbones (``timm:<model name>``): cut points from the model's own feature info, weights through
the Hugging Face cache or a local file, preprocessing from timm's pretrained config.

timm is imported on first use (it is slow to import).

Cut points
----------
- CNNs (ResNet, ConvNeXt, EfficientNet …): the modules of the model's ``feature_info`` with their channels and
  reduction (``act1``, ``layer1`` … ``layer4`` for ResNets; ``stages.0`` … ``stages.3`` for ConvNeXt), i.e. what
  ``features_only=True`` returns.
- Vision transformers (ViT, DeiT, DINOv2, EVA …): every block ``blocks.i``, i.e. what ``forward_intermediates``
  returns with ``norm=False``: a token sequence whose patch tokens form the (C, H, W) grid the spatial poolings see,
  after ``num_prefix_tokens`` prefix tokens (class token, registers) that only the ``cls`` poolings read.  They are
  built with ``dynamic_img_size=True``, so any input size works (position embeddings resampled).
- Then, for every model, ``pre_logits`` (the vector entering the classifier, pooled and normalised as the model
  does: ``forward_head(x, pre_logits=True)``) and ``head`` (the classifier's output; the pre-logits again for
  models without a classifier, such as DINOv2).

A cut point's name is its module path with ``_`` for ``.`` (``stages_0``, ``blocks_11``: feature names split on
``.``); the module path is accepted wherever a cut point name is.

Weights
-------
``"DEFAULT"`` is the pretrained tag of the name (timm's default tag when the name has none), read from the Hugging
Face cache (``HF_HOME``), never downloaded; a path to a local ``.safetensors`` / ``.pth`` / ``.bin`` file is loaded
through timm's own checkpoint mapping; ``None`` is random initialisation, flagged as for torchvision models.

Stages and surgery
------------------
One stage per module of the model's feature info (ResNet ``act1``, ``layer1`` …; ConvNeXt ``stages.i``; ViT
``blocks.i``), each with the modules before it since the previous one (the stem joins the first stage, with a ViT's
class/register tokens and position embedding); what follows the last one (final norms) joins the last stage.  A
stage path is a module or, for those embeddings, a parameter.  The new head goes where the model's classifier is
(``cut=None`` = ``"pre_logits"``): timm's ``reset_classifier`` keeps the model's own pooling and norms.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
from pathlib import Path

import torch
from torch import nn

from featurize.families.base import BackboneFamily
from featurize.preprocessing import Preprocessing
from featurize.spec import Adaptation, BackboneSpec, measure_cut_points
from featurize.weights import (
    ResolvedWeights,
    build_random,
    file_sha256,
    is_weights_path,
    local_file,
    random_weights,
    read_verified,
)

__all__ = ["TIMM_PREFIX", "TimmFamily", "import_timm", "timm_spec"]

log = logging.getLogger(__name__)

TIMM_PREFIX = "timm:"
"""Backbone names starting with this are timm models (``timm:vit_small_patch14_dinov2.lvd142m``)."""
_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_HF_FILES = ("model.safetensors", "pytorch_model.bin")
_MEASURE_SIZE = 224


def import_timm():
    """The timm module.

    Raises
    ------
    ImportError
        When timm is not installed; the message names the command that installs it.
    """
    try:
        import timm
    except ImportError as exc:
        raise ImportError("timm backbones need the timm package, which is not installed: pip install -e .") from exc
    return timm


def _create(
    model_name: str, kwargs: tuple[tuple[str, object], ...], weights: object = None, pretrained: bool = False, **extra
) -> nn.Module:
    """Build a timm model, random init unless ``pretrained`` (``weights=None`` as torchvision builders take it)."""
    if weights is not None:
        raise ValueError("timm builders take weights=None only; pretrained weights go through load_model")
    return import_timm().create_model(model_name, pretrained=pretrained, **dict(kwargs), **extra)


def _is_tokens(model: nn.Module) -> bool:
    return getattr(model, "num_prefix_tokens", None) is not None and hasattr(model, "patch_embed")


def _module_path(model: nn.Module, module: nn.Module) -> str:
    return next(path for path, m in model.named_modules() if m is module)


def _pre_logits_module(model: nn.Module, classifier: str) -> str | None:
    """The module whose output enters the classifier (the last one to return that very tensor), from one meta
    forward; None when a functional operation stands between them."""
    finished: list[tuple[str, torch.Tensor]] = []
    entering: list[torch.Tensor] = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out, path=path: finished.append((path, out)))
        for path, m in model.named_modules()
        if path and path != classifier and not path.startswith(f"{classifier}.")
    ]
    handles.append(model.get_submodule(classifier).register_forward_pre_hook(lambda _m, i: entering.append(i[0])))
    try:
        model(torch.empty(1, 3, _MEASURE_SIZE, _MEASURE_SIZE, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return next((path for path, out in reversed(finished) if out is entering[0]), None)


@functools.lru_cache(maxsize=None)
def timm_spec(name: str, model_name: str, family: str) -> BackboneSpec:
    """The spec of backbone ``name``, timm model ``model_name``, in ``family`` (built on the meta device).

    Raises
    ------
    ImportError
        When timm is not installed.
    ValueError
        For an unknown model or pretrained tag, or a model whose feature maps are not (N, C, H, W).
    """
    timm = import_timm()
    if not timm.is_model(model_name):
        raise ValueError(f"Unknown timm model {model_name!r} (backbone {name!r}); list the names with "
                         f"timm.list_models('{model_name.split('.')[0][:6]}*', pretrained=True)")
    try:
        with torch.device("meta"):
            probe = timm.create_model(model_name, pretrained=False)
    except RuntimeError as exc:
        arch = model_name.split(".")[0]
        raise ValueError(f"backbone {name!r}: {exc} Tags: {', '.join(timm.list_pretrained(f'{arch}.*'))}") from exc
    kwargs = (("dynamic_img_size", True),) if _is_tokens(probe) else ()
    builder = functools.partial(_create, model_name, kwargs)
    with torch.device("meta"):
        model = builder().eval()
    features = [(info["module"], info["num_chs"]) for info in getattr(model, "feature_info", None) or []]
    if not features:
        raise ValueError(f"backbone {name!r}: timm model {model_name!r} has no feature_info to cut at")
    classifier = _module_path(model, model.get_classifier())
    paths = [(module.replace(".", "_"), module) for module, _ in features]
    pre_logits = _pre_logits_module(model, classifier)
    if pre_logits is not None:
        paths.append(("pre_logits", pre_logits))
    paths.append(("head", classifier))
    tokens = (model.num_prefix_tokens, bool(getattr(model, "has_class_token", False))) if kwargs else None
    cuts = measure_cut_points(model, paths, _MEASURE_SIZE, tokens)
    for cut, (_, channels) in zip(cuts, features):
        if cut.channels != channels:
            raise ValueError(f"backbone {name!r}: the output of {cut.module} is not (N, C={channels}, H, W) "
                             "(channels-last models such as Swin are not supported)")
    return BackboneSpec(name=name, family=family, builder=builder, weights_enum=None, cut_points=tuple(cuts),
                        classifier=classifier)


@functools.lru_cache(maxsize=None)
def _pretrained_cfg(spec: BackboneSpec) -> dict:
    with torch.device("meta"):
        return dict(spec.builder().pretrained_cfg)


@functools.lru_cache(maxsize=None)
def timm_preprocessing(spec: BackboneSpec) -> Preprocessing:
    """timm's eval transform of the model's pretrained config as a :class:`Preprocessing`.

    ``resolve_model_data_config`` gives the input size, ``crop_pct``, interpolation and mean/std; timm's eval
    transform resizes the shorter side to ``floor(size / crop_pct)`` and centre-crops ``size``, which is exactly
    :class:`Preprocessing`.  Other crop modes (``squash``, ``border``) and non-square inputs are approximated by
    that centre crop, with a warning.
    """
    timm = import_timm()
    with torch.device("meta"):
        config = timm.data.resolve_model_data_config(spec.builder())
    _, height, width = config["input_size"]
    crop_pct = config.get("crop_pct") or timm.data.DEFAULT_CROP_PCT
    if height != width or config.get("crop_mode", "center") != "center":
        log.warning("%s: timm's eval transform (input %dx%d, crop_mode %r) is approximated by resize + centre crop "
                    "to %d", spec.name, height, width, config.get("crop_mode"), height)
    return Preprocessing(
        resize=math.floor(height / crop_pct),
        crop=int(height),
        mean=tuple(float(m) for m in config["mean"]),
        std=tuple(float(s) for s in config["std"]),
        interpolation=str(config["interpolation"]),
    )


def _hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub"


def _cached_pretrained_file(spec: BackboneSpec) -> tuple[str, Path]:
    """The ``<arch>.<tag>`` of a timm backbone's pretrained weights and their file in the Hugging Face cache.

    Raises
    ------
    FileNotFoundError
        When they are not cached; the message says what to download and where to put it.
    """
    from huggingface_hub import try_to_load_from_cache

    cfg = _pretrained_cfg(spec)
    tagged = f"{cfg.get('architecture')}.{cfg.get('tag')}" if cfg.get("tag") else str(cfg.get("architecture"))
    hub_id = cfg.get("hf_hub_id")
    files = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else _HF_FILES
    cache = _hf_cache_dir()
    for filename in files if hub_id else ():
        found = try_to_load_from_cache(hub_id, filename, cache_dir=cache)
        if isinstance(found, str):
            return tagged, Path(found)
    source = (f"the Hugging Face repository {hub_id} ({' or '.join(files)}; e.g. `huggingface-cli download {hub_id} "
              f"{files[0]}` where a network exists)" if hub_id else f"{cfg.get('url') or 'its authors'}")
    raise FileNotFoundError(
        f"Pretrained weights {tagged} for backbone {spec.name!r} are not in the Hugging Face cache {str(cache)!r} "
        f"(HF_HOME={os.environ.get('HF_HOME', '')!r}) and are never downloaded here. Get them from {source} into that "
        f"cache, or pass weights='/path/to/{files[0]}', or weights=None for a random-init run."
    )


def _state_dict(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load

        return load(data)
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


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


class TimmFamily(BackboneFamily):
    """Any timm model, named ``timm:<model name>`` (``timm:convnext_tiny.fb_in22k``)."""

    name = "timm"
    description = "any timm model as timm:<model name> (feature_info cut points, Hugging Face cache weights)"
    default_cuts = ("penultimate",)

    def names(self) -> list[str]:
        return []

    def owns(self, backbone: str) -> bool:
        return isinstance(backbone, str) and backbone.startswith(TIMM_PREFIX)

    def spec(self, backbone: str) -> BackboneSpec:
        return timm_spec(backbone, backbone.removeprefix(TIMM_PREFIX), self.name)

    def resolve_weights(self, spec: BackboneSpec, weights: object, random_state: int | None = 0) -> ResolvedWeights:
        """``"DEFAULT"`` (the Hugging Face cache), a weights file, or None."""
        timm = import_timm()
        preprocessing = timm_preprocessing(spec)
        if weights is None:
            return random_weights(random_state, preprocessing, f"torch={torch.__version__},timm={timm.__version__}")
        if is_weights_path(weights, _FILE_SUFFIXES):
            return local_file(weights, preprocessing, "'DEFAULT', a weights file or None")
        if weights == "DEFAULT":
            tagged, path = _cached_pretrained_file(spec)
            return ResolvedWeights(kind="timm", identity=f"timm:{tagged}:sha256={file_sha256(path)[:16]}",
                                   pretrained=True, preprocessing=preprocessing, path=path)
        raise ValueError(
            f"weights={weights!r} for {spec.name}: timm backbones take 'DEFAULT' (the pretrained tag in the backbone "
            f"name, timm:<model>.<tag>, from the Hugging Face cache), a path to a weights file, or None (random init)"
        )

    def weights_file(self, resolved: ResolvedWeights, download: bool = True) -> Path:
        if resolved.kind == "random":
            raise ValueError("random-init weights have no file")
        return resolved.path

    def load_model(self, spec: BackboneSpec, resolved: ResolvedWeights) -> nn.Module:
        """The file is read once; those bytes are hashed (checked against ``resolved.identity``), then handed to
        timm's own pretrained loader (``pretrained_cfg_overlay=dict(state_dict=...)``: its checkpoint mapping
        applies)."""
        if resolved.kind == "random":
            return build_random(spec, resolved)
        data = read_verified(resolved, resolved.path)
        overlay = dict(state_dict=_state_dict(data, resolved.path), source="", file=None, url=None, hf_hub_id=None)
        try:
            model = spec.builder(pretrained=True, pretrained_cfg_overlay=overlay)
        except (RuntimeError, KeyError) as exc:
            raise ValueError(f"weights {resolved.identity} do not fit {spec.name}: {exc}") from exc
        return model.eval()

    def weights_dir_file(self, backbone: str, weights: str) -> str:
        """``<model name>.safetensors``."""
        return f"{backbone.removeprefix(TIMM_PREFIX)}.safetensors"

    def adapt(self, model: nn.Module, spec: BackboneSpec, cut: str | None, n_classes: int) -> Adaptation:
        del cut
        model.reset_classifier(n_classes)
        head = next(path for path, m in model.named_modules() if m is model.get_classifier())
        features = [c.module for c in spec.cut_points if c.is_spatial]
        return Adaptation(head=head, stages=_timm_stages(model, features, head), feature_cut="pre_logits")

    def head_cuts(self, spec: BackboneSpec) -> list[str]:
        return ["pre_logits"]

    def categories(self, spec: BackboneSpec, resolved: ResolvedWeights) -> list[str] | None:
        """ImageNet-1k's class names (timm's ``ImageNetInfo``, first synonym) for pretrained 1000-class heads."""
        if not resolved.pretrained or spec.cut("head").channels != 1000:
            return None
        info = import_timm().data.ImageNetInfo()
        return [info.index_to_description(i).split(",")[0] for i in range(1000)]
