"""One forward pass, several cut points: hooks pool each activation as it is produced, the pass stops after the
deepest requested cut point.

Pooling happens inside the forward hook, so the stored tensor is a new one that later in-place operations
(``ReLU(inplace=True)``, ``out += identity``) cannot overwrite; ``flatten`` clones explicitly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from featurize.backbones import CutPoint
from featurize.devices import autocast, prepare, to_device
from featurize.images import MAX_PIXELS, ImageDataset, collate_keyed

__all__ = [
    "Pooling", "POOLINGS", "StopForward", "parse_pooling", "pooling_of", "pooling_label", "pooled_dim", "pool",
    "MultiCutExtractor", "Batch", "iter_features",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pooling:
    """One pooling of a (B, C, H, W) activation into (B, D) features.

    Attributes
    ----------
    name : str
        The name users pass (``"grid"`` is given as ``"grid:k"``).
    dim : callable
        ``(channels, (H, W), k) -> D``.
    apply : callable
        ``(x float32 (B, C, H, W), k) -> (B, D)``, always a new tensor.
    takes_k : bool
        Whether the name carries an integer ``k ≥ 1`` (``grid:k``).
    size_dependent : bool
        Whether ``D`` depends on the image size (then a fixed ``image_size`` is needed).
    """

    name: str
    dim: Callable[[int, tuple[int, int], int], int]
    apply: Callable[[torch.Tensor, int], torch.Tensor]
    takes_k: bool = False
    size_dependent: bool = False

    @property
    def pattern(self) -> str:
        """How the name is written (``grid:k``)."""
        return f"{self.name}:k" if self.takes_k else self.name


def _avgmax(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


POOLINGS: dict[str, Pooling] = {p.name: p for p in (
    Pooling("avg", lambda c, hw, k: c, lambda x, k: x.mean(dim=(2, 3))),
    Pooling("max", lambda c, hw, k: c, lambda x, k: x.amax(dim=(2, 3))),
    Pooling("avgmax", lambda c, hw, k: 2 * c, _avgmax),
    Pooling("flatten", lambda c, hw, k: c * hw[0] * hw[1], lambda x, k: x.flatten(1).clone(), size_dependent=True),
    Pooling("grid", lambda c, hw, k: c * k * k, lambda x, k: F.adaptive_avg_pool2d(x, k).flatten(1), takes_k=True),
)}
"""Every pooling, by name: adding one is one entry here."""

_WITH_K = re.compile(r"^(?P<name>[a-z]+):(?P<k>[1-9][0-9]*)$")


def parse_pooling(pooling: str) -> tuple[str, int]:
    """Validate a pooling name; return ``(name, k)`` (``k`` is the parameter of ``grid:k``, 0 otherwise).

    Raises
    ------
    ValueError
        For anything but a name of :data:`POOLINGS` (``grid:k`` with k ≥ 1).
    """
    if isinstance(pooling, str):
        entry = POOLINGS.get(pooling)
        if entry is not None and not entry.takes_k:
            return pooling, 0
        match = _WITH_K.match(pooling)
        if match and match["name"] in POOLINGS and POOLINGS[match["name"]].takes_k:
            return match["name"], int(match["k"])
    valid = ", ".join(p.pattern for p in POOLINGS.values())
    raise ValueError(f"Unknown pooling {pooling!r}; valid poolings: {valid} (e.g. 'grid:2')")


def pooling_of(pooling: str) -> Pooling:
    """The :data:`POOLINGS` entry of a pooling name (validated)."""
    return POOLINGS[parse_pooling(pooling)[0]]


def pooling_label(pooling: str) -> str:
    """Short label used in feature names and file names (``grid:2`` → ``grid2``)."""
    name, k = parse_pooling(pooling)
    return f"{name}{k or ''}"


def pooled_dim(cut: CutPoint, pooling: str, spatial: tuple[int, int]) -> int:
    """Feature dimension of a cut point after pooling, for an activation of spatial size ``spatial``."""
    name, k = parse_pooling(pooling)
    return POOLINGS[name].dim(cut.channels, spatial, k) if cut.is_spatial else cut.channels


def pool(x: torch.Tensor, pooling: str, spatial: bool = True) -> torch.Tensor:
    """Pool an activation to (B, D) float32, always as a new tensor.

    Parameters
    ----------
    x : Tensor
        (B, C, H, W) feature map, or (B, C) / (B, C, 1, 1) vector.
    pooling : str
        A name of :data:`POOLINGS`: ``avg``, ``max``, ``avgmax`` (avg then max, concatenated), ``flatten``
        (C·H·W, channel-major) or ``grid:k`` (k × k adaptive average pooling, flattened channel-major).
    spatial : bool
        False for vector cut points, which are returned as they are (copied) whatever the pooling.

    Returns
    -------
    Tensor
        (B, D) float32.
    """
    name, k = parse_pooling(pooling)
    x = x.float()
    if not spatial or x.ndim == 2:
        return x.flatten(1).clone()
    return POOLINGS[name].apply(x, k)


class StopForward(Exception):
    """Raised by a forward hook to end the forward pass early; ``output`` carries what the hook wants returned."""

    def __init__(self, output: object = None) -> None:
        super().__init__()
        self.output = output


class MultiCutExtractor:
    """Capture several cut points of a model in one forward pass.

    Parameters
    ----------
    model : nn.Module
        The backbone (eval mode).
    cuts : sequence of CutPoint
        Cut points to capture, from the backbone's spec (their ``module`` paths must exist in ``model``).
    pooling : str
        Pooling applied to every cut point.

    Examples
    --------
    >>> features = MultiCutExtractor(model, [spec.cut("layer2"), spec.cut("layer4")], "avg")(batch)
    """

    def __init__(self, model: nn.Module, cuts: Sequence[CutPoint], pooling: str):
        parse_pooling(pooling)
        self.model = model
        self.cuts = list(cuts)
        self.pooling = pooling
        self._modules = {c.name: model.get_submodule(c.module) for c in self.cuts}

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the model on a batch; return {cut name: (B, D) float32 tensor} in the order of ``cuts``."""
        out: dict[str, torch.Tensor] = {}
        remaining = set(self._modules)

        def hook(name: str, spatial: bool):
            def fn(_module, _inputs, output):
                if name in out:
                    return
                out[name] = pool(output, self.pooling, spatial)
                remaining.discard(name)
                if not remaining:
                    raise StopForward

            return fn

        handles = [
            self._modules[c.name].register_forward_hook(hook(c.name, c.is_spatial)) for c in self.cuts
        ]
        try:
            self.model(x)
        except StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [c.name for c in self.cuts if c.name not in out]
        if missing:
            raise RuntimeError(f"cut points {missing} were not reached by the forward pass")
        return {c.name: out[c.name] for c in self.cuts}


@dataclass
class Batch:
    """Pooled features of one batch: item ``indices``, their content ``keys`` (of the bytes decoded), ``features``
    {cut: (b, D) float32 array}, and ``errors`` (index, message)."""

    indices: list[int]
    keys: list[str]
    features: dict[str, np.ndarray]
    errors: list[tuple[int, str]]


def iter_features(
    items: Sequence,
    model: nn.Module,
    cuts: Sequence[CutPoint],
    pooling: str,
    transform,
    *,
    indices: Sequence[int] | None = None,
    batch_size: int = 32,
    device: torch.device = torch.device("cpu"),
    amp: bool = True,
    num_workers: int = 0,
    max_pixels: int | None = MAX_PIXELS,
    verbose: bool = False,
) -> Iterator[Batch]:
    """Decode, preprocess and featurize images batch by batch.

    Parameters
    ----------
    items : sequence
        Images (see :func:`featurize.images.as_items`).
    model : nn.Module
        Backbone in eval mode; moved to ``device``.
    cuts : sequence of CutPoint
        Cut points to capture.
    pooling : str
        Pooling for every cut point.
    transform : callable
        Preprocessing of one decoded image.
    indices : sequence of int, optional
        Which items to featurize (default all).
    batch_size, num_workers : int
        DataLoader settings; images decode in the workers.
    device : torch.device
        Where the forward runs; CUDA gets channels_last and bf16 autocast (``amp``).
    max_pixels : int or None
        Image files with more pixels are reported as errors before decoding.
    verbose : bool
        Show a tqdm progress bar.

    Yields
    ------
    Batch
        Features (float32, on the CPU) of the images decoded successfully, and the failures.
    """
    dataset = ImageDataset(items, transform, indices, with_keys=True, max_pixels=max_pixels)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_keyed,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    model = prepare(model, device)
    extractor = MultiCutExtractor(model, cuts, pooling)
    with tqdm(total=len(dataset), unit="img", desc="featurize", disable=not verbose) as bar, torch.inference_mode():
        for idx, images, errors, keys in loader:
            features: dict[str, list[np.ndarray]] = {c.name: [] for c in cuts}
            groups = [images] if isinstance(images, torch.Tensor) else [t[None] for t in images or []]
            for group in groups:
                group = to_device(group, device)
                with autocast(device, amp):
                    pooled = extractor(group)
                for name, tensor in pooled.items():
                    features[name].append(tensor.float().cpu().numpy())
            yield Batch(
                indices=list(idx),
                keys=list(keys),
                features={n: np.concatenate(f) if f else np.empty((0, 0), np.float32) for n, f in features.items()},
                errors=errors,
            )
            bar.update(len(idx) + len(errors))


if __name__ == "__main__":
    from featurize.shards import main

    raise SystemExit(main())
