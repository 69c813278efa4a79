"""Feature-extraction speed of :class:`CNNFeaturizer` in three regimes: ``python -m pipelines.bench extract``.

Cold (forward + HDF5 writes), cache hit (same images again: no model is built) and uncached; ``compare_cpu`` adds
the cold extraction on the CPU.  Images are random but seeded uint8 arrays held in memory, so decoding from disk is
not measured.  Extraction phases follow one uncounted warm-up batch of other images.  Cold and uncached times include
building the model (one per ``transform`` call, as in real use), so small ``n_images`` understate a GPU's
steady-state throughput.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from featurize.devices import precision_of, resolve_device
from featurize.images import as_items, content_key
from featurize.transformer import CNNFeaturizer
from pipelines.benchmarking import (RANDOM_INIT_NOTE, make_images, peak_memory, reset_peak, row_environment,
                                    synchronize, text_report, timed)

__all__ = ["COLUMNS", "benchmark_ratios", "format_report", "run_benchmark"]

log = logging.getLogger(__name__)

COLUMNS = [
    "phase",
    "device",
    "device_name",
    "backbone",
    "layers",
    "image_size",
    "n_images",
    "batch_size",
    "precision",
    "weights",
    "pretrained",
    "seconds",
    "images_per_s",
    "cache_hits",
    "peak_memory_mb",
    "peak_memory_kind",
    "torch_version",
    "threads",
]
"""Columns of :func:`run_benchmark`'s table, one row per phase (``cold``, ``cache_hit``, ``uncached``,
``cpu_cold``)."""


def _featurizer(cache: str | None, device: torch.device, **params) -> CNNFeaturizer:
    return CNNFeaturizer(cache=cache, device=str(device), **params).fit()


def _measure(phase: str, featurizer: CNNFeaturizer, images: np.ndarray, cache_hits: int) -> dict[str, object]:
    device = featurizer.device_
    reset_peak(device)
    seconds = timed(device, lambda: featurizer.transform(images))
    peak, kind = peak_memory(device)
    return {
        "phase": phase,
        **row_environment(device),
        "backbone": featurizer.spec_.name,
        "layers": ",".join(featurizer.layers_),
        "image_size": featurizer.preprocessing_.crop,
        "n_images": len(images),
        "batch_size": featurizer.batch_size,
        "precision": precision_of(device, featurizer.amp),
        "weights": featurizer.weights_.identity,
        "pretrained": featurizer.weights_.pretrained,
        "seconds": seconds,
        "images_per_s": len(images) / seconds,
        "cache_hits": cache_hits,
        "peak_memory_mb": peak,
        "peak_memory_kind": kind,
    }


def _warm_up(device: torch.device, warmup: np.ndarray, **params) -> None:
    _featurizer(None, device, **params).transform(warmup)
    synchronize(device)


def _cold_and_hit(
    device: torch.device, images: np.ndarray, root: Path, prefix: str, with_hit: bool, **params
) -> list[dict[str, object]]:
    cache_dir = tempfile.mkdtemp(prefix="cache-", dir=root)
    cold = _featurizer(cache_dir, device, **params)
    rows = [_measure(f"{prefix}cold", cold, images, cache_hits=0)]
    if with_hit:
        hit = _featurizer(cache_dir, device, **params)
        hits = int((hit.cache_file().lookup([content_key(x) for x in as_items(images)]) >= 0).sum())
        if hits != len(images):
            raise RuntimeError(f"cache holds {hits} of {len(images)} images after the cold pass; the cache-hit "
                               "phase would run the model")
        rows.append(_measure(f"{prefix}cache_hit", hit, images, cache_hits=hits))
    return rows


def run_benchmark(
    backbone: str = "resnet18",
    image_size: int = 224,
    n_images: int = 64,
    batch_size: int = 32,
    device: str = "auto",
    weights: object = None,
    cache_dir: str | Path | None = None,
    compare_cpu: bool = False,
    layers: str = "layer4",
    amp: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """Measure extraction throughput of :class:`CNNFeaturizer` in its cold, cache-hit and uncached regimes.

    Parameters
    ----------
    backbone : str
        A :func:`featurize.list_backbones` name.
    image_size : int
        Crop side fed to the network; the generated images are ``image_size + 32`` pixels square.
    n_images : int
        Images per measured phase.
    batch_size : int
        Featurizer batch size (also the size of the uncounted warm-up batch).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.
    weights : str, path or None
        As :class:`CNNFeaturizer`; ``None`` (random init) by default since speed does not depend on the values.
    cache_dir : path or None
        Where the cache files go (a fresh subdirectory, removed afterwards); None = the system temp directory.
    compare_cpu : bool
        On a CUDA device, also measure the cold extraction on the CPU (ignored when ``device`` is the CPU).
    layers : str
        Cut point returned by the transforms (a cached pass stores every standard cut point anyway).
    amp : bool
        bfloat16 autocast on CUDA.
    seed : int
        Seed of the generated images and of the random init.

    Returns
    -------
    DataFrame
        One row per phase with the columns :data:`COLUMNS`: ``cold`` (fresh cache file: forward + HDF5 writes),
        ``cache_hit`` (same images again: no model is built), ``uncached`` (no cache) and, with ``compare_cpu`` on
        CUDA, ``cpu_cold``.  ``peak_memory_mb`` is CUDA's ``max_memory_allocated`` per phase, or the process'
        lifetime max RSS on the CPU.

    Raises
    ------
    ValueError
        For an unknown backbone, bad weights or an unavailable device (from :class:`CNNFeaturizer`).
    """
    if n_images < 1:
        raise ValueError(f"n_images={n_images} must be at least 1")
    params = dict(backbone=backbone, layers=layers, weights=weights, image_size=image_size, batch_size=batch_size,
                  amp=amp, random_state=seed)
    dev = resolve_device(device)
    images = make_images(n_images, image_size, seed)
    warmup = make_images(batch_size, image_size, seed + 1)
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="featurize-benchmark-", dir=cache_dir))
    try:
        log.info("benchmark on %s: warm-up", dev)
        _warm_up(dev, warmup, **params)
        rows = _cold_and_hit(dev, images, root, "", True, **params)
        rows.append(_measure("uncached", _featurizer(None, dev, **params), images, cache_hits=0))
        if compare_cpu and dev.type == "cuda":
            cpu = torch.device("cpu")
            _warm_up(cpu, warmup, **params)
            rows += _cold_and_hit(cpu, images, root, "cpu_", False, **params)
        elif compare_cpu:
            log.info("compare_cpu ignored: the benchmark device is already the CPU")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return pd.DataFrame(rows, columns=COLUMNS)


def benchmark_ratios(df: pd.DataFrame) -> dict[str, float]:
    """Throughput ratios of a :func:`run_benchmark` table: ``cache_hit/cold``, ``cold/uncached`` and, when the CPU
    was compared, ``gpu/cpu`` (cold extraction)."""
    ips = df.set_index("phase")["images_per_s"]
    ratios = {"cache_hit/cold": float(ips["cache_hit"] / ips["cold"]),
              "cold/uncached": float(ips["cold"] / ips["uncached"])}
    if "cpu_cold" in ips:
        ratios["gpu/cpu"] = float(ips["cold"] / ips["cpu_cold"])
    return ratios


def format_report(df: pd.DataFrame) -> str:
    """Plain-text summary: environment, one line per phase, ratios, and the random-init note when it applies."""
    first = df.iloc[0]
    header = (f"backbone {first.backbone} ({first.layers}), image_size {first.image_size}, n_images "
              f"{first.n_images}, batch_size {first.batch_size}")
    columns = ["phase", "device", "seconds", "images_per_s", "cache_hits", "peak_memory_mb", "peak_memory_kind"]
    ratios = [f"ratio {name}: {value:.2f}x" for name, value in benchmark_ratios(df).items()]
    return text_report(df, header, RANDOM_INIT_NOTE, columns, ratios, precision=True)
