"""Speed benchmarks: the end-to-end suite (default), feature extraction regimes, and head-only fine-tuning.

``python -m pipelines.bench`` (or ``… suite``) runs :mod:`pipelines.bench_suite`: extraction from JPEG files against
the bare network and the peer a user would write, with the targets, in one run (markdown + JSON with ``--out``).
``extract`` times :meth:`CNNFeaturizer.transform` in three regimes: cold (forward + HDF5 writes), cache hit (same
images again: no model is built) and uncached; ``--compare-cpu`` adds the cold extraction on the CPU.  ``head`` fits
``FineTunedCNN(strategy="head")`` twice on the same images, once on cached activations (``precompute=True``: the
frozen backbone runs once) and once through the frozen backbone every epoch, and reports the per-epoch times.

Images are random but seeded uint8 arrays held in memory, so decoding from disk is not measured.  Each measured phase
is timed with :func:`time.perf_counter` (CUDA synchronised); extraction phases follow one uncounted warm-up batch of
other images.  Cold and uncached times include building the model (one per ``transform`` call, as in real use), so
small ``n_images`` understate a GPU's steady-state throughput.  Speed does not depend on the weight values: with
``--weights auto`` and no pretrained weights available the benchmarks run random-init weights, flagged in the output.

Command line::

    python -m pipelines.bench --images 256 --out bench.md
    python -m pipelines.bench --cache-scale
    python -m pipelines.bench extract --backbone resnet18 --image-size 224 --n-images 64 --compare-cpu
    python -m pipelines.bench head --backbone resnet18 --n-images 240 --epochs 3
    python -m pipelines.bench finetune --images 64 --batch-size 16 --out finetune.md
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from classifiers.finetune import FineTunedCNN
from pipelines import bench_finetune, bench_suite, cache_scale
from pipelines.bench_suite import cpu_name, synchronize, timed
from featurize.devices import precision_of, resolve_device
from featurize.images import as_items, content_key
from featurize.transformer import CNNFeaturizer
from featurize.cli import (HelpFormatter, add_common_arguments, add_weights_arguments, backbone_name, image_size,
                           resolve_backbone_weights, run_cli)

__all__ = [
    "COLUMNS",
    "HEAD_COLUMNS",
    "make_images",
    "run_benchmark",
    "benchmark_ratios",
    "format_report",
    "run_head_benchmark",
    "head_ratios",
    "format_head_report",
    "main",
]

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

HEAD_COLUMNS = [
    "path",
    "device",
    "device_name",
    "backbone",
    "n_images",
    "image_size",
    "batch_size",
    "weights",
    "pretrained",
    "epochs",
    "one_off_s",
    "first_epoch_s",
    "epoch_s",
    "fit_s",
    "torch_version",
    "threads",
]
"""Columns of :func:`run_head_benchmark`'s table, one row per training path (``precomputed``, ``forward``)."""

RANDOM_INIT_NOTE = "random-init weights (speed only; features meaningless)"
HEAD_RANDOM_INIT_NOTE = "random-init weights (speed only; accuracies meaningless)"


def make_images(n_images: int, image_size: int, seed: int = 0) -> np.ndarray:
    """Seeded random uint8 images of shape ``(n_images, image_size + 32, image_size + 32, 3)``."""
    side = image_size + 32
    return np.random.default_rng(seed).integers(0, 256, size=(n_images, side, side, 3), dtype=np.uint8)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> tuple[float, str]:
    """Peak memory in MiB and what it measures (CUDA allocations since the last reset, or process max RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "process_max_rss"


def _environment(device: torch.device) -> dict[str, object]:
    return {"device": str(device), "device_name": _device_name(device), "torch_version": torch.__version__,
            "threads": torch.get_num_threads()}


def _environment_lines(df: pd.DataFrame, precision: bool = False) -> list[str]:
    """The hardware lines of a report: torch version and threads, then each device with its name."""
    first = df.iloc[0]
    lines = [f"torch {first.torch_version}, {first.threads} CPU thread(s)"]
    for device, group in df.groupby("device", sort=False):
        suffix = f" ({group.iloc[0].precision})" if precision else ""
        lines.append(f"device {device}: {group.iloc[0].device_name}{suffix}")
    return lines


def _weights_line(df: pd.DataFrame, note: str) -> str:
    first = df.iloc[0]
    return f"weights: {first.weights}" + ("" if first.pretrained else f"  [{note}]")


def _featurizer(cache: str | None, device: torch.device, **params) -> CNNFeaturizer:
    return CNNFeaturizer(cache=cache, device=str(device), **params).fit()


def _measure(phase: str, featurizer: CNNFeaturizer, images: np.ndarray, cache_hits: int) -> dict[str, object]:
    device = featurizer.device_
    _reset_peak(device)
    seconds = timed(device, lambda: featurizer.transform(images))
    peak, kind = _peak_memory(device)
    return {
        "phase": phase,
        **_environment(device),
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


def _report(df: pd.DataFrame, header: str, note: str, columns: list[str], ratio_lines: list[str],
            precision: bool = False) -> str:
    """The plain-text layout both benchmarks share: settings, weights, environment, table, ratios, random-init note."""
    lines = [header, _weights_line(df, note), *_environment_lines(df, precision=precision)]
    lines += ["", df[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"), "", *ratio_lines]
    if not df.iloc[0].pretrained:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def format_report(df: pd.DataFrame) -> str:
    """Plain-text summary: environment, one line per phase, ratios, and the random-init note when it applies."""
    first = df.iloc[0]
    header = (f"backbone {first.backbone} ({first.layers}), image_size {first.image_size}, n_images "
              f"{first.n_images}, batch_size {first.batch_size}")
    columns = ["phase", "device", "seconds", "images_per_s", "cache_hits", "peak_memory_mb", "peak_memory_kind"]
    ratios = [f"ratio {name}: {value:.2f}x" for name, value in benchmark_ratios(df).items()]
    return _report(df, header, RANDOM_INIT_NOTE, columns, ratios, precision=True)




def run_head_benchmark(
    backbone: str = "resnet18",
    n_images: int = 240,
    image_size: int = 224,
    epochs: int = 3,
    batch_size: int = 32,
    device: str = "auto",
    weights: object = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Time head-only training on cached activations and through the frozen backbone, on the same images.

    Parameters
    ----------
    backbone : str
        A :func:`featurize.list_backbones` name.
    n_images : int
        Generated images (two classes, random pixels), ``image_size + 32`` pixels square.
    image_size : int
        Crop side fed to the network.
    epochs : int
        Epochs of each fit, exactly (``min_steps=0``).
    batch_size : int
        Training batch size.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.
    weights : str, path or None
        As :class:`FineTunedCNN`; ``None`` (random init) by default since speed does not depend on the values.
    seed : int
        Seed of the generated images and of the fits.

    Returns
    -------
    DataFrame
        One row per path (``precomputed``, ``forward``) with the columns :data:`HEAD_COLUMNS`: ``one_off_s``
        (activation pass), ``first_epoch_s``, ``epoch_s`` (median per-epoch time) and ``fit_s`` (whole fit).

    Raises
    ------
    ValueError
        For an unknown backbone, bad weights or an unavailable device (from :class:`FineTunedCNN`).
    """
    dev = resolve_device(device)
    X, y = make_images(n_images, image_size, seed), np.arange(n_images) % 2
    rows = []
    for precompute in (True, False):
        clf = FineTunedCNN(
            backbone, weights=weights, strategy="head", image_size=image_size, epochs=epochs, batch_size=batch_size,
            min_steps=0, validation_fraction=None, precompute=precompute, device=str(dev), random_state=seed,
        )
        fit_s = timed(dev, lambda: clf.fit(X, y))
        times = [h["time_s"] for h in clf.history_]
        rows.append({
            "path": clf.training_path_, **_environment(clf.device_), "backbone": backbone, "n_images": n_images,
            "image_size": image_size, "batch_size": batch_size, "weights": clf.weights_.identity,
            "pretrained": clf.weights_.pretrained, "epochs": len(times), "one_off_s": clf.precompute_time_s_,
            "first_epoch_s": times[0], "epoch_s": float(np.median(times)), "fit_s": fit_s,
        })
    return pd.DataFrame(rows, columns=HEAD_COLUMNS)


def head_ratios(df: pd.DataFrame) -> dict[str, float]:
    """Per-epoch time ratio ``forward/precomputed`` of a :func:`run_head_benchmark` table."""
    epoch_s = df.set_index("path")["epoch_s"]
    return {"forward/precomputed": float(epoch_s["forward"] / epoch_s["precomputed"])}


def format_head_report(df: pd.DataFrame) -> str:
    """Plain-text summary: environment, one line per path, the per-epoch ratio and the random-init note."""
    first = df.iloc[0]
    header = (f"backbone {first.backbone}, image_size {first.image_size}, n_images {first.n_images}, "
              f"batch_size {first.batch_size}, epochs {first.epochs}")
    columns = ["path", "device", "epochs", "one_off_s", "first_epoch_s", "epoch_s", "fit_s"]
    ratios = [f"per-epoch ratio {name}: {value:.0f}x" for name, value in head_ratios(df).items()]
    return _report(df, header, HEAD_RANDOM_INIT_NOTE, columns, ratios)


def _crop_side(text: str) -> int:
    """argparse type of ``--image-size``: the shared vocabulary, restricted to an integer (images are generated)."""
    value = image_size(text)
    if not isinstance(value, int):
        raise argparse.ArgumentTypeError(f"a benchmark generates its images, so the image size must be an integer; "
                                         f"got {text!r}")
    return value


def _add_shared(p: argparse.ArgumentParser, n_images: int, n_images_help: str) -> None:
    p.add_argument("--backbone", default="resnet18", type=backbone_name, metavar="NAME", help="backbone")
    p.add_argument("--image-size", type=_crop_side, default=224, help="crop side fed to the network")
    p.add_argument("--n-images", type=int, default=n_images, help=n_images_help)
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    add_weights_arguments(p)
    add_common_arguments(p, seed_help="seed of the generated images and of the random init")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the rows and ratios as JSON (with --quiet, the report is not printed)")


_WEIGHTS_EPILOG = ("Speed does not depend on the weight values: with --weights auto and no pretrained weights "
                   "available, the benchmark runs random-init weights and says so in its output.")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.bench", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    commands = p.add_subparsers(dest="command", required=True, metavar="{suite,extract,head,finetune,cache-scale}")
    suite = commands.add_parser(
        "suite", help="(default) end-to-end suite: library vs bare network vs peer, with targets",
        description=bench_suite.__doc__.split("\n\n")[0], epilog=_WEIGHTS_EPILOG, formatter_class=HelpFormatter)
    suite.add_argument("--backbone", default="resnet18", metavar="NAME", help="backbone of the ratios",
                       choices=bench_suite.benchable_backbones())
    suite.add_argument("--images", type=_positive, default=256,
                       help="JPEG files measured (generated unless --data)")
    suite.add_argument("--data", default=None, metavar="DIR", help="use the images of this folder (recursive)")
    suite.add_argument("--batch-size", type=_positive, default=None, help="batch size (default 32 on CPU, 128 on CUDA)")
    suite.add_argument("--rss-images", type=_positive, default=48, help="N of the peak-RSS ratio (10·N also run)")
    suite.add_argument("--full", action="store_true", help="longer: absolute speeds on all images, (d) on 2·N")
    suite.add_argument("--workdir", default=None, help="keep images and caches here (default: a temp dir, removed)")
    suite.add_argument("--out", default=None, metavar="FILE.md",
                       help="write the report as markdown here and as JSON beside it (FILE.json)")
    add_weights_arguments(suite)
    add_common_arguments(suite, seed_help="seed of the generated images and of the random init")
    suite.set_defaults(body=_suite)
    extract = commands.add_parser(
        "extract", help="feature extraction: cold, cache hit, uncached (and CPU) images/s",
        description="Feature-extraction speed: cold (forward + HDF5 writes), cache hit, uncached, and optionally "
                    "GPU vs CPU.", epilog=_WEIGHTS_EPILOG, formatter_class=HelpFormatter)
    _add_shared(extract, 64, "images per measured phase")
    extract.add_argument("--layers", default="layer4", help="cut point returned by the transforms")
    extract.add_argument("--cache-dir", default=None,
                         help="directory for the cache files, in a fresh subdirectory removed afterwards (default: a "
                              "temp directory)")
    extract.add_argument("--compare-cpu", action="store_true", help="on CUDA, also time the cold extraction on the CPU")
    extract.add_argument("--no-amp", action="store_true", help="fp32 on CUDA instead of bfloat16 autocast")
    extract.set_defaults(body=_extract)
    head = commands.add_parser(
        "head", help="head-only fine-tuning per epoch: cached activations vs frozen backbone",
        description="Per-epoch cost of head-only fine-tuning on cached activations vs through the frozen backbone.",
        epilog=_WEIGHTS_EPILOG, formatter_class=HelpFormatter)
    _add_shared(head, 240, "generated images (two classes)")
    head.add_argument("--epochs", type=int, default=3, help="epochs of each fit")
    head.set_defaults(body=_head)
    finetune = commands.add_parser(
        "finetune", help="fine-tuning steps/s: FineTunedCNN vs a bare PyTorch loop, cached last-block inputs",
        description=bench_finetune.__doc__.split("\n\n")[0], epilog=_WEIGHTS_EPILOG, formatter_class=HelpFormatter)
    finetune.add_argument("--backbone", default="efficientnet_lite0", type=backbone_name, metavar="NAME",
                          help="backbone fine-tuned")
    finetune.add_argument("--images", type=_positive, default=64, help="JPEG files (generated unless --data)")
    finetune.add_argument("--data", default=None, metavar="DIR", help="use the images of this folder (recursive)")
    finetune.add_argument("--batch-size", type=_positive, default=16, help="batch size")
    finetune.add_argument("--epochs", type=_positive, default=2, help="epochs of every measured run")
    finetune.add_argument("--image-size", type=_crop_side, default=224, help="crop side fed to the network")
    finetune.add_argument("--out", default=None, metavar="FILE.md",
                          help="write the report as markdown here and as JSON beside it (FILE.json)")
    add_weights_arguments(finetune)
    add_common_arguments(finetune, seed_help="seed of the generated images and of the fits")
    finetune.set_defaults(body=_finetune)
    scale = commands.add_parser(
        "cache-scale", help="(also --cache-scale) cache bookkeeping per batch at 1k, 100k and 1M rows",
        description="Append + lookup + read time per batch in cache files of growing size (synthetic rows).",
        formatter_class=HelpFormatter)
    scale.add_argument("--sizes", type=_positive, nargs="+", default=[1_000, 100_000, 1_000_000], help="rows")
    scale.add_argument("--dim", type=_positive, default=8, help="feature width")
    scale.add_argument("--repeats", type=_positive, default=7, help="timed batches per size (median)")
    scale.add_argument("--json", default=None, metavar="PATH", help="also write the table as JSON")
    scale.add_argument("--quiet", action="store_true", help="do not print the table")
    scale.set_defaults(body=_cache_scale)
    return p


def _output(args: argparse.Namespace, df: pd.DataFrame, ratios: dict[str, float], note: str, report: str) -> int:
    if args.json:
        payload: dict[str, object] = {"rows": df.to_dict(orient="records"), "ratios": ratios}
        if not bool(df["pretrained"].iloc[0]):
            payload["note"] = note
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    if not args.quiet:
        print(report)
    return 0


def _extract(args: argparse.Namespace) -> int:
    df = run_benchmark(
        backbone=args.backbone, image_size=args.image_size, n_images=args.n_images, batch_size=args.batch_size,
        device=args.device, weights=resolve_backbone_weights(args.backbone, args.weights, args.weights_dir),
        cache_dir=args.cache_dir, compare_cpu=args.compare_cpu, layers=args.layers, amp=not args.no_amp,
        seed=args.seed,
    )
    return _output(args, df, benchmark_ratios(df), RANDOM_INIT_NOTE, format_report(df))


def _head(args: argparse.Namespace) -> int:
    df = run_head_benchmark(
        backbone=args.backbone, n_images=args.n_images, image_size=args.image_size, epochs=args.epochs,
        batch_size=args.batch_size, device=args.device,
        weights=resolve_backbone_weights(args.backbone, args.weights, args.weights_dir), seed=args.seed,
    )
    return _output(args, df, head_ratios(df), HEAD_RANDOM_INIT_NOTE, format_head_report(df))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return value


def _suite(args: argparse.Namespace) -> int:
    result = bench_suite.run_suite(
        args.backbone, n_images=args.images, data=args.data, batch_size=args.batch_size, device=args.device,
        weights=resolve_backbone_weights(args.backbone, args.weights, args.weights_dir), full=args.full,
        rss_images=args.rss_images, workdir=args.workdir, seed=args.seed,
    )
    report = bench_suite.format_suite(result)
    _write(args.out, report, bench_suite.suite_payload(result))
    if not args.quiet:
        print(report)
    return 0


def _write(out: str | None, report: str, payload: dict) -> None:
    """The report as markdown at ``out`` and its payload as JSON beside it (nothing without ``out``)."""
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report + "\n", encoding="utf-8")
        path.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")


def _finetune(args: argparse.Namespace) -> int:
    result = bench_finetune.run_finetune_bench(
        args.backbone, weights=resolve_backbone_weights(args.backbone, args.weights, args.weights_dir),
        n_images=args.images, data=args.data, batch_size=args.batch_size, epochs=args.epochs,
        image_size=args.image_size, device=args.device, seed=args.seed)
    report = bench_finetune.format_finetune(result)
    _write(args.out, report, {"settings": result.settings, "hardware": result.hardware,
                              "ratios": result.ratios.to_dict(orient="records"),
                              "measurements": result.measurements.to_dict(orient="records")})
    if not args.quiet:
        print(report)
    return 0


def _cache_scale(args: argparse.Namespace) -> int:
    df = cache_scale.run_cache_scale(sizes=args.sizes, dim=args.dim, repeats=args.repeats)
    if args.json:
        Path(args.json).write_text(json.dumps(df.to_dict(orient="records"), indent=2), encoding="utf-8")
    if not args.quiet:
        print(cache_scale.format_cache_scale(df))
    return 0


_COMMANDS = ("suite", "extract", "head", "finetune", "cache-scale", "-h", "--help")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (no command: ``suite``); returns the exit status (2 for invalid arguments or
    unavailable weights)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--cache-scale"]:
        argv[0] = "cache-scale"
    if not argv or argv[0] not in _COMMANDS:
        argv.insert(0, "suite")
    return run_cli(_parser(), lambda args: args.body(args), argv)


if __name__ == "__main__":
    sys.exit(main())
