"""One forward pass, several cut points: hooks pool each activation as it is produced, the pass stops after the
deepest requested cut point.  Token activations of vision transformers are split into class token and patch grid
first (:func:`patch_grid`).

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

from featurize.registry import Registry
from featurize.spec import CutPoint
from featurize.devices import autocast, prepare, to_device
from featurize.images import MAX_PIXELS, ImageDataset, collate_keyed, resolve_workers

__all__ = [
    "Pooling", "POOLINGS", "StopForward", "parse_pooling", "pooling_of", "pooling_label", "pooled_dim", "pool",
    "patch_grid", "MultiCutExtractor", "Batch", "iter_features",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pooling:
    """One pooling of a (B, C, H, W) activation (a CNN map, or a transformer's patch grid) into (B, D) features.

    Attributes
    ----------
    name : str
        The name users pass (``"grid"`` is given as ``"grid:k"``).
    dim : callable
        ``(channels, (H, W), k) -> D``.
    apply : callable or None
        ``(x float32 (B, C, H, W), k) -> (B, D)``, always a new tensor; None for poolings of the class token.
    takes_k : bool
        Whether the name carries an integer ``k ≥ 1`` (``grid:k``).
    size_dependent : bool
        Whether ``D`` depends on the image size (then a fixed ``image_size`` is needed).
    with_cls : callable or None
        For token models with a class token: ``(cls float32 (B, C), grid (B, C, H, W), k) -> (B, D)``, used
        instead of ``apply``; such a pooling is refused for cut points without a class token.
    """

    name: str
    dim: Callable[[int, tuple[int, int], int], int]
    apply: Callable[[torch.Tensor, int], torch.Tensor] | None
    takes_k: bool = False
    size_dependent: bool = False
    with_cls: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None

    @property
    def pattern(self) -> str:
        """How the name is written (``grid:k``)."""
        return f"{self.name}:k" if self.takes_k else self.name


def _avgmax(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


POOLINGS: Registry[Pooling] = Registry("pooling")
for _pooling in (
    Pooling("avg", lambda c, hw, k: c, lambda x, k: x.mean(dim=(2, 3))),
    Pooling("max", lambda c, hw, k: c, lambda x, k: x.amax(dim=(2, 3))),
    Pooling("avgmax", lambda c, hw, k: 2 * c, _avgmax),
    Pooling("flatten", lambda c, hw, k: c * hw[0] * hw[1], lambda x, k: x.flatten(1).clone(), size_dependent=True),
    Pooling("grid", lambda c, hw, k: c * k * k, lambda x, k: F.adaptive_avg_pool2d(x, k).flatten(1), takes_k=True),
    Pooling("mean", lambda c, hw, k: c, lambda x, k: x.mean(dim=(2, 3))),
    Pooling("cls", lambda c, hw, k: c, None, with_cls=lambda cls, x, k: cls.clone()),
    Pooling("cls+mean", lambda c, hw, k: 2 * c, None,
            with_cls=lambda cls, x, k: torch.cat([cls, x.mean(dim=(2, 3))], dim=1)),
):
    POOLINGS.register(_pooling.name, _pooling)
"""Every pooling, by name: adding one is one entry here.  On token models (ViT) the spatial poolings see the patch
tokens as a (C, H, W) grid (prefix tokens left out): ``mean`` is the mean patch token (the same numbers as ``avg``),
``cls`` the class token, ``cls+mean`` both concatenated."""

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
    """Feature dimension of a cut point after pooling, for an activation of spatial size ``spatial``.

    Raises
    ------
    ValueError
        For a pooling of the class token (``cls``, ``cls+mean``) at a spatial cut point that has none.
    """
    name, k = parse_pooling(pooling)
    if not cut.is_spatial:
        return cut.channels
    if POOLINGS[name].with_cls is not None and not cut.cls_token:
        raise ValueError(f"pooling={pooling!r} takes the class token, and cut point {cut.name!r} has none (only "
                         "token models with a class token, such as ViTs, do); use 'avg', 'mean' or another pooling")
    return POOLINGS[name].dim(cut.channels, spatial, k)


def pool(x: torch.Tensor, pooling: str, spatial: bool = True, cls: torch.Tensor | None = None) -> torch.Tensor:
    """Pool an activation to (B, D) float32, always as a new tensor.

    Parameters
    ----------
    x : Tensor
        (B, C, H, W) feature map (for token models, the patch grid), or (B, C) / (B, C, 1, 1) vector.
    pooling : str
        A name of :data:`POOLINGS`: ``avg``, ``max``, ``avgmax`` (avg then max, concatenated), ``flatten``
        (C·H·W, channel-major), ``grid:k`` (k × k adaptive average pooling, flattened channel-major), ``mean``,
        or ``cls`` / ``cls+mean`` (these need ``cls``).
    spatial : bool
        False for vector cut points, which are returned as they are (copied) whatever the pooling.
    cls : Tensor or None
        (B, C) class token of a token model.

    Returns
    -------
    Tensor
        (B, D) float32.

    Raises
    ------
    ValueError
        For a pooling of the class token without ``cls``.
    """
    name, k = parse_pooling(pooling)
    x = x.float()
    if not spatial or x.ndim == 2:
        return x.flatten(1).clone()
    entry = POOLINGS[name]
    if entry.with_cls is None:
        return entry.apply(x, k)
    if cls is None:
        raise ValueError(f"pooling={pooling!r} takes the class token; this activation has none")
    return entry.with_cls(cls.float(), x, k)


def patch_grid(
    tokens: torch.Tensor, cut: CutPoint, input_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split a token activation (B, prefix + H·W, C) into its (B, C, H, W) patch grid and class token (or None).

    ``H, W`` are the input size divided by the cut point's stride (the patch size).

    Raises
    ------
    RuntimeError
        When the patch tokens do not fill that grid (a model with padding or pooled tokens).
    """
    h, w = input_hw[0] // cut.stride, input_hw[1] // cut.stride
    batch, n, channels = tokens.shape
    if n - cut.prefix_tokens != h * w:
        raise RuntimeError(f"cut point {cut.name!r}: {n - cut.prefix_tokens} patch tokens do not form the "
                           f"{h}x{w} grid of a {input_hw[0]}x{input_hw[1]} input with patch size {cut.stride}")
    grid = tokens[:, cut.prefix_tokens:].transpose(1, 2).reshape(batch, channels, h, w)
    return grid, tokens[:, 0] if cut.cls_token else None


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
        input_hw = tuple(x.shape[-2:])

        def hook(cut: CutPoint):
            def fn(_module, _inputs, output):
                if cut.name in out:
                    return
                if cut.is_tokens:
                    grid, cls = patch_grid(output, cut, input_hw)
                    out[cut.name] = pool(grid, self.pooling, True, cls)
                else:
                    out[cut.name] = pool(output, self.pooling, cut.is_spatial)
                remaining.discard(cut.name)
                if not remaining:
                    raise StopForward

            return fn

        handles = [
            self._modules[c.name].register_forward_hook(hook(c)) for c in self.cuts
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
    model: nn.Module | Callable[[], nn.Module],
    cuts: Sequence[CutPoint],
    pooling: str,
    transform: Callable,
    *,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    indices: Sequence[int] | None = None,
    batch_size: int = 32,
    device: torch.device = torch.device("cpu"),
    amp: bool = True,
    num_workers: int | str = "auto",
    max_pixels: int | None = MAX_PIXELS,
    verbose: bool = False,
) -> Iterator[Batch]:
    """Decode, preprocess and featurize images batch by batch.

    Parameters
    ----------
    items : sequence
        Images (see :func:`featurize.images.as_items`).
    model : nn.Module or callable
        Backbone in eval mode, or a function building it: it is then built once the loader's workers have started,
        so building overlaps the decoding of the first batches.  Moved to ``device`` (channels_last).
    cuts : sequence of CutPoint
        Cut points to capture.
    pooling : str
        Pooling for every cut point.
    transform : callable
        Preprocessing of one decoded image, run in the loader's workers (e.g. :meth:`Preprocessing.geometry`).
    batch_transform : callable, optional
        Applied to each batch once it is on ``device`` (e.g. :meth:`Preprocessing.normalize`).
    indices : sequence of int, optional
        Which items to featurize (default all).
    batch_size : int
        Images per forward.
    num_workers : int or "auto"
        DataLoader workers decoding images while the model runs (see :func:`featurize.images.resolve_workers`).
    device : torch.device
        Where the forward runs; CUDA gets bf16 autocast (``amp``) and pinned host memory.
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
    workers = resolve_workers(num_workers, len(dataset), batch_size)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_keyed,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )
    log.debug("featurizing %d image(s) with %d loader worker(s)", len(dataset), workers)
    batches = iter(loader)
    model = prepare(model if isinstance(model, nn.Module) else model(), device)
    extractor = MultiCutExtractor(model, cuts, pooling)
    with tqdm(total=len(dataset), unit="img", desc="featurize", disable=not verbose) as bar, torch.inference_mode():
        for idx, images, errors, keys in batches:
            features: dict[str, list[np.ndarray]] = {c.name: [] for c in cuts}
            groups = [images] if isinstance(images, torch.Tensor) else [t[None] for t in images or []]
            for group in groups:
                group = to_device(group, device)
                if batch_transform is not None:
                    group = batch_transform(group)
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
