"""What a fine-tuning run feeds the trainable part of a network: images, or activations of the frozen part computed
once.

With the frozen stages in eval mode and no augmentation before them, what enters the first trainable module depends
on the image only: it is computed once (:func:`inputs_of`) and the network is trained from there.  For the head alone
that is the head's input; for ``last_block`` (or ``last:k``) it is the input of the first trainable stage, and the
frozen modules that run before it are swapped for ``Identity`` (:func:`skip_prefix`), so the cached activation
flows through the unchanged ``forward`` of the model into the trainable stages.  The swap is checked on real
activations before it is used: the logits of the skipped network must equal those of the whole one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from featurize.devices import autocast, to_device
from featurize.multicut import StopForward
from featurize.spec import set_module

__all__ = ["inputs_of", "skip_prefix"]

log = logging.getLogger(__name__)

Batches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]


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
