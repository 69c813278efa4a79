"""Feature-extraction speed: cold (forward + HDF5 writes), cache hit, uncached, and optionally GPU vs CPU.

Images are random but seeded uint8 arrays held in memory, so decoding from disk is not measured.  Each measured
phase is one :meth:`CNNFeaturizer.transform` call timed with :func:`time.perf_counter` (CUDA synchronised), after one
warm-up batch of other images that is not counted.  Cold and uncached times include building the model (one per
``transform`` call, as in real use), so small ``n_images`` understate a GPU's steady-state throughput.

Examples
--------
``python -m featurize.benchmark --backbone resnet18 --image-size 224 --n-images 64 --compare-cpu``
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from featurize.backbones import list_backbones
from featurize.devices import precision_of, resolve_device
from featurize.images import as_items, content_key
from featurize.transformer import CNNFeaturizer

__all__ = ["COLUMNS", "make_images", "run_benchmark", "benchmark_ratios", "format_report", "main"]

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

RANDOM_INIT_NOTE = "random-init weights (speed only; features meaningless)"


def make_images(n_images: int, image_size: int, seed: int = 0) -> np.ndarray:
    """Seeded random uint8 images of shape ``(n_images, image_size + 32, image_size + 32, 3)``."""
    side = image_size + 32
    return np.random.default_rng(seed).integers(0, 256, size=(n_images, side, side, 3), dtype=np.uint8)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> tuple[float, str]:
    """Peak memory in MiB and what it measures (CUDA allocations since the last reset, or process max RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "process_max_rss"


def _featurizer(cache: str | None, device: torch.device, **params) -> CNNFeaturizer:
    return CNNFeaturizer(cache=cache, device=str(device), **params).fit()


def _measure(phase: str, featurizer: CNNFeaturizer, images: np.ndarray, cache_hits: int) -> dict[str, object]:
    device = featurizer.device_
    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    featurizer.transform(images)
    _sync(device)
    seconds = time.perf_counter() - start
    peak, kind = _peak_memory(device)
    return {
        "phase": phase,
        "device": str(device),
        "device_name": _device_name(device),
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
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _warm_up(device: torch.device, warmup: np.ndarray, **params) -> None:
    _featurizer(None, device, **params).transform(warmup)
    _sync(device)


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
    ratios = {"cache_hit/cold": float(ips["cache_hit"] / ips["cold"]), "cold/uncached": float(ips["cold"] / ips["uncached"])}
    if "cpu_cold" in ips:
        ratios["gpu/cpu"] = float(ips["cold"] / ips["cpu_cold"])
    return ratios


def format_report(df: pd.DataFrame) -> str:
    """Plain-text summary: environment, one line per phase, ratios, and the random-init note when it applies."""
    first = df.iloc[0]
    lines = [
        f"backbone {first.backbone} ({first.layers}), image_size {first.image_size}, n_images {first.n_images}, "
        f"batch_size {first.batch_size}",
        f"weights: {first.weights}" + ("" if first.pretrained else f"  [{RANDOM_INIT_NOTE}]"),
        f"torch {first.torch_version}, {first.threads} CPU thread(s)",
    ]
    for device, group in df.groupby("device", sort=False):
        lines.append(f"device {device}: {group.iloc[0].device_name} ({group.iloc[0].precision})")
    table = df[["phase", "device", "seconds", "images_per_s", "cache_hits", "peak_memory_mb", "peak_memory_kind"]]
    lines += ["", table.to_string(index=False, float_format=lambda v: f"{v:.3f}"), ""]
    lines += [f"ratio {name}: {value:.2f}x" for name, value in benchmark_ratios(df).items()]
    if not first.pretrained:
        lines.append(f"note: {RANDOM_INIT_NOTE}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m featurize.benchmark", description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet18", choices=list_backbones(), metavar="NAME",
                   help="backbone (default: resnet18)")
    p.add_argument("--layers", default="layer4", help="cut point returned by the transforms (default: layer4)")
    p.add_argument("--image-size", type=int, default=224, help="crop side fed to the network (default: 224)")
    p.add_argument("--n-images", type=int, default=64, help="images per measured phase (default: 64)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    p.add_argument("--weights", default="none",
                   help="'none' (random init; the default, since speed does not depend on the weight values), "
                        "DEFAULT, a torchvision enum name or a .pth path")
    p.add_argument("--cache-dir", default=None,
                   help="directory for the cache files, in a fresh subdirectory removed afterwards (default: a temp "
                        "directory)")
    p.add_argument("--compare-cpu", action="store_true", help="on CUDA, also time the cold extraction on the CPU")
    p.add_argument("--no-amp", action="store_true", help="fp32 on CUDA instead of bfloat16 autocast")
    p.add_argument("--seed", type=int, default=0, help="seed of the images and of the random init (default: 0)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the rows and ratios as JSON")
    p.add_argument("--quiet", action="store_true", help="print nothing (use with --json)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for invalid arguments)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING, format="%(message)s")
    weights = None if args.weights.lower() == "none" else args.weights
    try:
        df = run_benchmark(
            backbone=args.backbone, image_size=args.image_size, n_images=args.n_images, batch_size=args.batch_size,
            device=args.device, weights=weights, cache_dir=args.cache_dir, compare_cpu=args.compare_cpu,
            layers=args.layers, amp=not args.no_amp, seed=args.seed,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        payload = {"rows": df.to_dict(orient="records"), "ratios": benchmark_ratios(df)}
        if not bool(df["pretrained"].iloc[0]):
            payload["note"] = RANDOM_INIT_NOTE
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    if not args.quiet:
        print(format_report(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
