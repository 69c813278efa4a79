"""What a fine-tuning run feeds the trainable part of a network: images, or activations of the frozen part computed
once.

With the frozen stages in eval mode and no augmentation before them, what enters the first trainable module depends
on the image only: it is computed once (:func:`inputs_of`) and the network is trained from there.  For the head alone
that is the head's input; for ``last_block`` (or ``last:k``) it is the input of the first trainable stage, and the
frozen modules that run before it are swapped for ``Identity`` (:func:`skip_prefix`), so the cached activation
flows through the unchanged ``forward`` of the model into the trainable stages.  The swap is checked on real
activations before it is used: the logits of the skipped network must equal those of the whole one.  With
augmentation, the frozen part runs once on a bank of augmented views of every image (:func:`augmented_views`), and
each epoch draws one per image (:func:`classifiers.batches.view_batches`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from classifiers.batches import Batches, image_batches, tensor_batches, view_batches
from featurize.devices import autocast, to_device
from featurize.multicut import StopForward
from featurize.spec import set_module
from featurize.transformer import CNNFeaturizer

__all__ = ["FitImages", "TrainingInputs", "augmented_views", "batches_for", "head_features", "inputs_of", "skip_prefix",
           "training_inputs"]

log = logging.getLogger(__name__)


@torch.no_grad()
def inputs_of(model: nn.Module, paths: Sequence[str], batches: Batches, device: torch.device) -> list[torch.Tensor]:
    """The activations entering each module of ``paths`` (model in eval mode) for every batch, on the CPU, in batch
    order; the forward stops once all of them are captured."""
    captured: dict[str, torch.Tensor] = {}

    def hook(_module, inputs, path):
        captured[path] = inputs[0].float().cpu()
        if len(captured) == len(paths):
            raise StopForward()

    handles = [model.get_submodule(p).register_forward_pre_hook(lambda m, i, p=p: hook(m, i, p)) for p in paths]
    model.eval()
    out: dict[str, list[torch.Tensor]] = {p: [] for p in paths}
    try:
        for _, images in batches():
            captured.clear()
            try:
                with autocast(device):
                    model(to_device(images, device))
            except StopForward:
                pass
            for p in paths:
                out[p].append(captured[p])
    finally:
        for h in handles:
            h.remove()
    return [torch.cat(out[p]) for p in paths]


def _finished_before(model: nn.Module, first: str, example: torch.Tensor) -> list[str] | None:
    """The outermost modules whose forward finishes before module ``first`` starts (one forward of ``example``);
    None when ``first`` is not reached."""
    finished: list[str] = []
    handles = [m.register_forward_hook(lambda _m, _i, _o, path=path: finished.append(path))
               for path, m in model.named_modules() if path]

    def stop(_module, _inputs):
        raise StopForward()

    handles.append(model.get_submodule(first).register_forward_pre_hook(stop))
    try:
        with torch.no_grad():
            model(example)
        return None
    except StopForward:
        done = set(finished)
        return [p for p in finished if p.rpartition(".")[0] not in done]
    finally:
        for h in handles:
            h.remove()


@contextmanager
def skip_prefix(model: nn.Module, first: str, images: torch.Tensor, cached: torch.Tensor,
                device: torch.device) -> Iterator[bool]:
    """Within the context, ``model`` maps the input of module ``first`` to the logits (the modules that ran before it
    are ``Identity``); yields whether that holds, checked on ``images`` and their ``cached`` inputs of ``first``
    (False: the model is left whole; train it on images).  The original modules are put back on exit."""
    model.eval()
    with torch.no_grad(), autocast(device):
        expected = model(to_device(images, device)).float()
    prefix = _finished_before(model, first, to_device(images[:1], device))
    replaced = {path: model.get_submodule(path) for path in prefix or []}
    for path in replaced:
        set_module(model, path, nn.Identity())
    try:
        ok = bool(replaced)
        if ok:
            try:
                with torch.no_grad(), autocast(device):
                    got = model(to_device(cached, device)).float()
                scale = float(expected.abs().max()) or 1.0
                ok = got.shape == expected.shape and torch.allclose(got, expected, rtol=2e-2, atol=2e-2 * scale)
            except Exception:  # noqa: BLE001 - any failure of the skipped network means it cannot be skipped
                ok = False
        if not ok:
            log.info("%s: the frozen part cannot be skipped (its forward is not a plain sequence before %s); the "
                     "network is trained on images", type(model).__name__, first)
            for path, module in replaced.items():
                set_module(model, path, module)
            replaced = {}
        yield ok
    finally:
        for path, module in replaced.items():
            set_module(model, path, module)


@dataclass
class TrainingInputs:
    """What one fit trains: ``net`` (the whole model, the model with its frozen part skipped, or the bare head) with
    its ``head`` path, fed images or cached activations (``path`` says which: ``"forward"``, ``"suffix"`` or
    ``"precomputed"``): ``train_cached`` (V, N, …) holds V views of every image (one without augmentation),
    ``eval_cached`` (N, …) the unaugmented ones."""

    path: str
    net: nn.Module
    head: str
    train_cached: torch.Tensor | None
    eval_cached: torch.Tensor | None


def head_features(est, model, adaptation, items, X, eval_transform, seed: int,
                  extra: str | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The head inputs of every image (from the featurizer's cache when ``cache`` is set) and, when ``extra``
    names a module, the inputs of that module too (one forward pass for both)."""
    if est.cache is not None and extra is None:
        fz = CNNFeaturizer(
            backbone=est.backbone, layers=adaptation.feature_cut, pooling="avg", weights=est.weights,
            image_size=est.image_size, cache=est.cache, batch_size=est.batch_size, device=est.device,
            num_workers=est.num_workers, random_state=seed, verbose=est.verbose,
        )
        return torch.from_numpy(np.asarray(fz.fit_transform(X), dtype=np.float32)), None
    batches = image_batches(items, eval_transform, range(len(items)), est.batch_size, est.device_,
                            num_workers=est.num_workers)
    paths = [adaptation.head] if extra is None else [extra, adaptation.head]
    captured = inputs_of(model, paths, batches, est.device_)
    return captured[-1], (captured[0] if extra is not None else None)


def augmented_views(est, model, first: str | None, items, transform, seed: int) -> torch.Tensor:
    """The inputs of module ``first`` (or of the head) for ``augment_views`` augmented views of every image, (V, N,
    …); each view's random draws come from ``seed`` and the view's number only."""
    views = []
    for view in range(est.augment_views):
        generator = torch.Generator().manual_seed(seed * 1_000 + view)
        batches = image_batches(items, transform, range(len(items)), est.batch_size, est.device_,
                                num_workers=est.num_workers, generator=generator)
        views.append(inputs_of(model, [first], batches, est.device_)[0])
    return torch.stack(views)


@dataclass(frozen=True)
class FitImages:
    """The images of one fit and how they are seen: ``items`` (decoded lazily), the caller's ``X`` (for the
    featurizer's cache), the training and evaluation transforms, the augmentation policy and the fit's seed."""

    items: list
    X: object
    train_transform: object
    eval_transform: object
    augment: str
    seed: int


def training_inputs(est, model, adaptation, n_unfrozen: int, images: FitImages,
                    stack: ExitStack) -> tuple[TrainingInputs, torch.Tensor | None]:
    """What this fit trains on, and the head inputs of every image when the probe needs them (a skipped frozen
    part is restored when ``stack`` closes)."""
    items, X, augment, seed = images.items, images.X, images.augment, images.seed
    train_transform, eval_transform = images.train_transform, images.eval_transform
    probe = n_unfrozen > 0 and est.head_init == "probe"
    stages = len(adaptation.stages)
    cacheable = est.precompute and n_unfrozen < stages and "mixup" not in augment and (
        augment == "none" or est.augment_views > 0)
    first = adaptation.trainable(n_unfrozen)[0] if n_unfrozen else adaptation.head
    forward = TrainingInputs("forward", model, adaptation.head, None, None)
    if not (probe or cacheable):
        return forward, None
    head_in, stage_in = head_features(est, model, adaptation, items, X, eval_transform, seed,
                                      first if cacheable and n_unfrozen else None)
    if not cacheable:
        return forward, head_in
    eval_in = head_in if n_unfrozen == 0 else stage_in
    views = eval_in[None] if augment == "none" else augmented_views(est, model, first, items, train_transform, seed)
    if n_unfrozen == 0:
        return TrainingInputs("precomputed", model.get_submodule(adaptation.head), "", views, eval_in), None
    sample = next(image_batches(items, eval_transform, range(min(2, len(items))), 2, est.device_,
                                num_workers=0)())[1]
    if stack.enter_context(skip_prefix(model, first, sample, stage_in[: len(sample)], est.device_)):
        return TrainingInputs("suffix", model, adaptation.head, views, eval_in), head_in if probe else None
    return forward, head_in if probe else None


def batches_for(est, inputs: TrainingInputs, items, transform, idx, generator=None):
    """Training batches (shuffled with ``generator``) or, without a generator, evaluation batches."""
    if generator is None and inputs.eval_cached is not None:
        return tensor_batches(inputs.eval_cached, idx, est.batch_size)
    if generator is not None and inputs.train_cached is not None:
        views = inputs.train_cached
        return (tensor_batches(views[0], idx, est.batch_size, shuffle=True, generator=generator)
                if len(views) == 1 else view_batches(views, idx, est.batch_size, generator))
    return image_batches(items, transform, idx, est.batch_size, est.device_, num_workers=est.num_workers,
                         shuffle=generator is not None, generator=generator)
