"""Fine-tuning speed, as ratios measured in one run: ``python -m pipelines.bench finetune``.

- (g) :class:`FineTunedCNN` full fine-tuning against the bare PyTorch loop a user would write — the same network
  (the family's model with a new ``Linear`` head), the same weights, batch size, JPEG files and number of optimizer
  steps: a ``Dataset`` decoding the files through the weights' preprocessing, a ``DataLoader`` with the library's
  worker count, ``AdamW``, ``model.train()``, forward, cross-entropy, backward, step.  Both times include building
  the model and decoding the images.  Target: ≥ 0.95× the bare loop's steps per second.
- (h) ``strategy="last_block"`` without augmentation: the cached inputs of the first trainable stage
  (``precompute=True``: the frozen part runs once per image) against the forward path (the frozen part runs every
  step), same steps; no target.
- Step times of the bare loop on pre-made tensors in other arithmetic (contiguous fp32, channels_last, bf16 autocast):
  what else was tried to make fine-tuning cheaper on a CPU, reported without targets.

BatchNorm runs in train mode on both sides of (g) (the bare loop's default), so the two do the same arithmetic.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from classifiers.finetune import FineTunedCNN
from featurize.backbones import get_backbone_spec, load_model, resolve_weights
from featurize.devices import resolve_device
from featurize.families import FAMILIES
from featurize.images import resolve_workers
from featurize.shards import list_images
from pipelines.benchmarking import (RANDOM_INIT_NOTE, BenchResult, Target, hardware, hardware_line, ratio_lines,
                                    ratio_table, timed, weights_line, write_jpegs)

__all__ = ["FINETUNE_TARGETS", "FinetuneBench", "format_finetune", "run_finetune_bench"]

log = logging.getLogger(__name__)

FINETUNE_TARGETS: tuple[Target, ...] = (
    Target("library_full/bare_full", "(g) FineTunedCNN full fine-tuning vs a bare PyTorch loop (same model, weights, "
           "batch, images, steps)", 0.95),
    Target("last_block_cached/last_block_forward", "(h) last_block: cached inputs of the first trainable stage vs "
           "the frozen part run every step (no target)", None),
    Target("step_channels_last/step_fp32", "bare full step on tensors: channels_last vs contiguous fp32 (no target)",
           None),
    Target("step_bf16/step_fp32", "bare full step on tensors: bf16 autocast + channels_last vs fp32 (no target)",
           None),
)
"""The ratios of the fine-tuning benchmark (steps per second over steps per second)."""


class FinetuneBench(BenchResult):
    """What :func:`run_finetune_bench` measured: ``measurements`` (``name``, ``steps``, ``seconds``,
    ``steps_per_s``), ``ratios`` (``name``, ``what``, ``value``, ``target``, ``met``), ``hardware``, ``settings``."""


class _Files(Dataset):
    """The bare loop's dataset: files through the weights' preprocessing, with their labels."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], transform: Callable):
        self.paths, self.labels, self.transform = list(paths), list(labels), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB")), self.labels[i]


def _bare_loop(backbone: str, weights: object, paths: Sequence[Path], labels: Sequence[int], batch_size: int,
               epochs: int, image_size: int, device: torch.device) -> int:
    """The loop a user would write; returns its optimizer steps."""
    spec = get_backbone_spec(backbone)
    resolved = resolve_weights(spec, weights)
    model = load_model(spec, resolved)
    FAMILIES[spec.family].adapt(model, spec, None, 2)
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = DataLoader(_Files(paths, labels, resolved.preprocessing.with_size(image_size)), batch_size=batch_size,
                        shuffle=True, num_workers=resolve_workers("auto", len(paths), batch_size), drop_last=True)
    steps = 0
    for _ in range(epochs):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return steps


def _step_variants(backbone: str, weights: object, batch_size: int, size: int, steps: int,
                   device: torch.device) -> list[dict[str, object]]:
    """Full fine-tuning steps on one pre-made batch in three arithmetics."""
    spec = get_backbone_spec(backbone)
    base = load_model(spec, resolve_weights(spec, weights))
    FAMILIES[spec.family].adapt(base, spec, None, 2)
    x = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    y = (torch.arange(batch_size) % 2).to(device)
    rows = []
    for name, channels_last, bf16 in (("step_fp32", False, False), ("step_channels_last", True, False),
                                      ("step_bf16", True, True)):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = load_model(spec, resolve_weights(spec, weights))
        FAMILIES[spec.family].adapt(model, spec, None, 2)
        model.load_state_dict(base.state_dict())
        model = model.to(device, memory_format=fmt).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = x.contiguous(memory_format=fmt)

        def run(n: int) -> None:
            for _ in range(n):
                with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                    logits = model(batch)
                loss = torch.nn.functional.cross_entropy(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        run(1)
        rows.append(_row(name, steps, timed(device, lambda: run(steps))))
    return rows


def _row(name: str, steps: int, seconds: float) -> dict[str, object]:
    return {"name": name, "steps": steps, "seconds": seconds, "steps_per_s": steps / seconds}


def _ratios(measurements: pd.DataFrame) -> pd.DataFrame:
    by = measurements.set_index("name")
    return ratio_table(FINETUNE_TARGETS, by.index,
                       lambda top, bottom: by.loc[top, "steps_per_s"] / by.loc[bottom, "steps_per_s"])


def run_finetune_bench(backbone: str = "efficientnet_lite0", *, weights: object = "DEFAULT", n_images: int = 64,
                       data: str | Path | None = None, batch_size: int = 16, epochs: int = 2, image_size: int = 224,
                       device: str = "auto", seed: int = 0) -> FinetuneBench:
    """Measure (g), (h) and the step variants (see the module docstring) in one run.

    Parameters
    ----------
    backbone : str
        The network fine-tuned.
    weights : str, path or None
        As :class:`FineTunedCNN` (speed does not depend on the values; None is random init, flagged).
    n_images : int
        JPEG files (generated 500 × 375 unless ``data`` is given; two classes, alternating).
    data : path, optional
        A folder of images to use instead (the first ``n_images`` in sorted order).
    batch_size, epochs, image_size : int
        Of every measured run (steps = epochs × n_images // batch_size).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.
    seed : int
        Seed of the generated images and of the fits.

    Returns
    -------
    FinetuneBench
    """
    dev = resolve_device(device)
    root = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    try:
        paths = list_images(data)[:n_images] if data is not None else write_jpegs(root / "images", n_images, seed=seed)
        n = len(paths) - len(paths) % batch_size
        paths = paths[:n]
        labels = [i % 2 for i in range(n)]
        steps = epochs * (n // batch_size)
        common = dict(weights=weights, epochs=epochs, min_steps=0, batch_size=batch_size, image_size=image_size,
                      validation_fraction=None, augment="none", head_init="random", bn="train", device=str(dev),
                      random_state=seed)
        warm = FineTunedCNN(backbone, strategy="head", **{**common, "epochs": 1}).fit(paths[:batch_size],
                                                                                     labels[:batch_size])
        rows = [_row("bare_full", steps, timed(dev, lambda: _bare_loop(backbone, weights, paths, labels, batch_size,
                                                                          epochs, image_size, dev)))]
        library = FineTunedCNN(backbone, strategy="full", precompute=False, **common)
        rows.append(_row("library_full", steps, timed(dev, lambda: library.fit(paths, labels))))
        for name, precompute in (("last_block_forward", False), ("last_block_cached", True)):
            est = FineTunedCNN(backbone, strategy="last_block", precompute=precompute, **common)
            rows.append(_row(name, steps, timed(dev, lambda est=est: est.fit(paths, labels))))
            log.info("%s: training path %s", name, est.training_path_)
        rows += _step_variants(backbone, weights, batch_size, image_size, max(2, steps // 2), dev)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    measurements = pd.DataFrame(rows)
    settings = {"backbone": backbone, "weights": warm.weights_.label, "pretrained": warm.weights_.pretrained,
                "n_images": n, "batch_size": batch_size, "epochs": epochs, "steps": steps, "image_size": image_size,
                "images": str(data) if data is not None else "generated 500 × 375 JPEG, quality 90"}
    return FinetuneBench(measurements, _ratios(measurements), hardware(dev), settings)


def format_finetune(result: FinetuneBench) -> str:
    """The fine-tuning benchmark as markdown: settings, hardware, ratios with targets, measurements."""
    s = result.settings
    lines = [f"backbone {s['backbone']}, {s['n_images']} images at {s['image_size']} px ({s['images']}), batch "
             f"{s['batch_size']}, {s['epochs']} epochs = {s['steps']} optimizer steps per run",
             weights_line(s["weights"], s["pretrained"], RANDOM_INIT_NOTE),
             hardware_line(result.hardware, torchvision=False), "", *ratio_lines(result.ratios)]
    lines += ["", "| measurement | steps | seconds | steps/s |", "|---|---:|---:|---:|"]
    lines += [f"| {m.name} | {m.steps} | {m.seconds:.2f} | {m.steps_per_s:.3f} |"
              for m in result.measurements.itertuples()]
    return "\n".join(lines)
