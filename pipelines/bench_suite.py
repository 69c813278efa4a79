"""The end-to-end speed suite of ``python -m pipelines.bench``: the library against the bare network and a peer.

Everything is measured in one run on the same JPEG files, and reported as ratios (these machines are shared and
noisy), each beside its target:

- (a) :class:`CNNFeaturizer` with a cache and the library's defaults, from JPEG files to pooled cut points in HDF5,
  against (i) the bare model forward on pre-made contiguous fp32 tensors, (ii) the same in ``channels_last``, and
  (iii) the peer a user would write: torchvision's ``create_feature_extractor`` + ``DataLoader(num_workers=2)`` +
  HDF5 written by hand;
- (b) one pass capturing 4 cut points against 4 single-cut passes (each stopping at its cut, as
  ``CNNFeaturizer(layers=cut)`` does) and against 4 full forward passes;
- (c) a cache-hit ``transform`` (hashing and lookup included) against the cold extraction;
- (d) peak memory (PSS of the process and its loader workers, sampled every 20 ms, each run in a fresh process)
  of extracting 10·N images against N, and against the bare forward of the same images;
- (e) a head-only fine-tuning epoch on cached activations against one through the frozen backbone;
- (f) on CUDA, the end-to-end path against the bare bf16 channels_last forward at batch ≥ 128, and that forward
  against timm's model of the same name and settings (when timm is installed);
- absolute end-to-end images/s for resnet18, resnet50 and vgg16.

Speed does not depend on the weight values; with random-init weights the report says so.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms._presets import ImageClassification

from featurize.backbones import get_backbone_spec, list_backbones, load_model
from featurize.families import FAMILIES
from featurize.devices import prepare, resolve_device
from featurize.images import resolve_workers
from featurize.multicut import MultiCutExtractor
from featurize.shards import list_images
from featurize.transformer import CNNFeaturizer
from pipelines.bench_head import run_head_benchmark
from pipelines.benchmarking import (RANDOM_INIT_NOTE, BenchResult, PeakMemory, Target, hardware, hardware_line,
                                    ratio_lines, ratio_table, timed, weights_line, write_jpegs)

__all__ = ["Target", "TARGETS", "SuiteResult", "write_jpegs", "run_suite", "format_suite", "suite_payload",
           "bench_cuts", "benchable_backbones"]

log = logging.getLogger(__name__)


def bench_cuts(backbone: str) -> list[str]:
    """The 4 cut points the suite captures on ``backbone`` (its family's ``bench_cuts``)."""
    cuts = list(FAMILIES[get_backbone_spec(backbone).family].bench_cuts)
    if not cuts:
        raise ValueError(f"the bench suite has no cut points for backbone {backbone!r}; it measures "
                         f"{', '.join(benchable_backbones())}")
    return cuts


def benchable_backbones() -> list[str]:
    """Listed backbones whose family names the suite's 4 cut points."""
    return [b for b in list_backbones() if FAMILIES[get_backbone_spec(b).family].bench_cuts]


TARGETS: tuple[Target, ...] = (
    Target("library/bare_fp32", "(a-i) end-to-end vs bare forward, contiguous fp32", 1.2, device="cpu"),
    Target("library/bare_channels_last", "(a-ii) end-to-end vs bare forward, channels_last", 0.85, device="cpu"),
    Target("library/peer", "(a-iii) end-to-end vs torchvision FX + DataLoader(2) + h5py", 1.25, device="cpu"),
    Target("multicut/single_cut_passes", "(b) 1 pass, 4 cuts vs 4 single-cut passes, each stopping at its cut", 3.5),
    Target("multicut/full_passes", "(b) 1 pass, 4 cuts vs 4 full forward passes (no target)", None),
    Target("cache_hit/library", "(c) cache-hit transform vs cold extraction", 100.0),
    Target("rss_10n/rss_n", "(d) peak memory (PSS), 10·N images vs N", 1.10, at_least=False),
    Target("rss_n/rss_bare", "(d) peak memory (PSS), library vs bare forward (N images)", 1.15, at_least=False),
    Target("head_forward/head_precomputed", "(e) head-only epoch: cached activations vs frozen backbone", 100.0),
    Target("library/bare_bf16_channels_last", "(f) end-to-end vs bare bf16 channels_last forward", 0.8,
           device="cuda"),
    Target("bare_bf16_channels_last/timm", "(f) bare forward vs timm's same model and settings", 0.95,
           device="cuda"),
)
"""Every ratio the suite reports: adding one is one entry here (and the measurement it divides)."""


class SuiteResult(BenchResult):
    """What :func:`run_suite` measured.

    Attributes
    ----------
    measurements : DataFrame
        One row per measurement: ``name``, ``backbone``, ``n_images``, ``seconds``, ``images_per_s``, ``rss_mb``.
    ratios : DataFrame
        One row per :data:`TARGETS` entry measured: ``name``, ``what``, ``value``, ``target``, ``met``.
    hardware : dict
        CPU model, threads, GPU, torch/torchvision versions, device.
    settings : dict
        Backbone, cut points, batch size, images, weights and whether they are pretrained, precision.
    """


class _Files(Dataset):
    """The peer's dataset: a file list through torchvision's preset (as a user would write it)."""

    def __init__(self, paths: Sequence[Path], transform: Callable):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB"))


def _peer(paths: Sequence[Path], build: Callable[[], torch.nn.Module], modules: Sequence[str], preset: Callable,
          batch_size: int, device: torch.device, out: Path) -> None:
    """torchvision ``create_feature_extractor`` + ``DataLoader(num_workers=2)`` + average pooling + h5py by hand,
    with the weights' preset (``weights.transforms()``); the model is built inside, as the library builds its own."""
    from torchvision.models.feature_extraction import create_feature_extractor

    extractor = create_feature_extractor(build().to(device), return_nodes={m: m for m in modules}).eval()
    loader = DataLoader(_Files(paths, preset), batch_size=batch_size, num_workers=2,
                        pin_memory=device.type == "cuda")
    with h5py.File(out, "w") as f, torch.inference_mode():
        start = 0
        for batch in loader:
            feats = extractor(batch.to(device, non_blocking=True))
            for name, x in feats.items():
                x = x.mean(dim=(2, 3)) if x.ndim == 4 else x
                if name not in f:
                    f.create_dataset(name, (len(paths), x.shape[1]), dtype="f4")
                f[name][start:start + len(batch)] = x.float().cpu().numpy()
            start += len(batch)


def _bare(model: torch.nn.Module, tensors: torch.Tensor, batch_size: int, device: torch.device,
          channels_last: bool, bf16: bool = False) -> Callable[[], None]:
    """A call running the whole model over pre-made tensors (already on ``device``), batch by batch."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = copy.deepcopy(model).to(device).to(memory_format=fmt)
    batches = [t.contiguous(memory_format=fmt) for t in tensors.split(batch_size)]

    def run() -> None:
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            for x in batches:
                model(x)

    return run


def _rss_probe(argv: Sequence[str]) -> None:
    """Entry of a fresh process measuring peak memory: ``library <paths file> <cache dir> <json params>`` or
    ``bare <paths file> <json params>``; prints ``{"peak_mb": …}`` (see
    :class:`~pipelines.benchmarking.PeakMemory`)."""
    kind, paths_file = argv[0], argv[1]
    paths = Path(paths_file).read_text().split("\n")
    params = json.loads(argv[-1])
    sampler = PeakMemory()
    sampler.start()
    if kind == "library":
        CNNFeaturizer(cache=argv[2], **params).fit().transform(paths)
    else:
        featurizer = CNNFeaturizer(**params).fit()
        model = load_model(featurizer.spec_, featurizer.weights_).to(memory_format=torch.channels_last)
        prep = featurizer.preprocessing_
        with torch.inference_mode():
            for start in range(0, len(paths), featurizer.batch_size):
                batch = [prep(Image.open(p).convert("RGB")) for p in paths[start:start + featurizer.batch_size]]
                model(torch.stack(batch).contiguous(memory_format=torch.channels_last))
    print(json.dumps({"peak_mb": sampler.stop()}))


def _peak_rss(kind: str, paths: Sequence[Path], params: dict, root: Path) -> float:
    """Peak memory in MiB (process + loader workers, PSS) of one probe run in a fresh interpreter."""
    listing = root / f"paths-{kind}-{len(paths)}.txt"
    listing.write_text("\n".join(str(p) for p in paths))
    cache = [str(Path(tempfile.mkdtemp(prefix="rss-", dir=root)))] if kind == "library" else []
    out = subprocess.run([sys.executable, "-c", "import sys; from pipelines.bench_suite import _rss_probe; "
                          "_rss_probe(sys.argv[1:])", kind, str(listing), *cache, json.dumps(params)],
                         check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"])


def _measurement(name: str, backbone: str, n_images: int, seconds: float = float("nan"),
                 rss_mb: float = float("nan")) -> dict[str, object]:
    return {"name": name, "backbone": backbone, "n_images": n_images, "seconds": seconds,
            "images_per_s": n_images / seconds if seconds == seconds else float("nan"), "rss_mb": rss_mb}


def run_suite(
    backbone: str = "resnet18",
    *,
    n_images: int = 256,
    data: str | Path | None = None,
    batch_size: int | None = None,
    image_size: int | str = "auto",
    device: str = "auto",
    weights: object = None,
    full: bool = False,
    rss_images: int = 48,
    others: Sequence[str] = ("resnet50", "vgg16"),
    head_images: int = 64,
    workdir: str | Path | None = None,
    seed: int = 0,
) -> SuiteResult:
    """Run the suite (see the module docstring) and return its measurements and ratios.

    Parameters
    ----------
    backbone : str
        The backbone of (a)–(f) (a ResNet or VGG name).
    n_images : int
        JPEG files of (a)–(c); generated (500 × 375) unless ``data`` is given.
    data : path, optional
        A folder of images to use instead (searched recursively, the first ``n_images`` in sorted order).
    batch_size : int, optional
        Default 32 on the CPU, 128 on CUDA.
    image_size : int or "auto"
        Crop side (``"auto"``: the weights' own, 224).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.
    weights : str, path or None
        As :class:`CNNFeaturizer`; random init by default (speed does not depend on the values).
    full : bool
        Measure the absolute speeds of ``others`` on ``n_images`` instead of 2 batches, and (d) on 2·``rss_images``.
    rss_images : int
        N of (d) (10·N images are extracted too).
    others : sequence of str
        Further backbones whose absolute end-to-end speed is measured.
    head_images : int
        Generated images of (e).
    workdir : path, optional
        Where images and cache files go (a temporary directory by default, removed afterwards).
    seed : int
        Seed of the generated images and of the random init.

    Returns
    -------
    SuiteResult
    """
    dev = resolve_device(device)
    batch_size = batch_size or (128 if dev.type == "cuda" else 32)
    spec = get_backbone_spec(backbone)
    cuts = bench_cuts(backbone)
    modules = [spec.cut(c).module for c in cuts]
    owned = workdir is None
    root = Path(tempfile.mkdtemp(prefix="bench-suite-")) if owned else Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    try:
        if data is not None:
            paths = list_images(data)[:n_images]
        else:
            paths = write_jpegs(root / "images", n_images, seed=seed)
        warm = write_jpegs(root / "warm-up", batch_size, seed=seed + 1)
        n = len(paths)
        params = dict(backbone=backbone, layers=cuts, weights=weights, batch_size=batch_size, device=str(dev),
                      image_size=image_size, random_state=seed)
        featurizer = CNNFeaturizer(**params).fit()
        resolved = featurizer.weights_
        log.info("suite: %d images, %s, batch %d, %s", n, backbone, batch_size, resolved.label)

        featurizer.transform(warm)
        cache = root / "cache"
        rows.append(_measurement("library", backbone, n, timed(
            dev, lambda: CNNFeaturizer(cache=cache, **params).fit().transform(paths))))
        rows.append(_measurement("cache_hit", backbone, n, timed(
            dev, lambda: CNNFeaturizer(cache=cache, **params).fit().transform(paths))))

        model = load_model(spec, resolved)
        prep = featurizer.preprocessing_
        preset = ImageClassification(crop_size=prep.crop, resize_size=prep.resize)
        build = functools.partial(load_model, spec, resolved)
        _peer(warm, build, modules, preset, batch_size, dev, root / "peer-warm.h5")
        rows.append(_measurement("peer", backbone, n, timed(
            dev, lambda: _peer(paths, build, modules, preset, batch_size, dev, root / "peer.h5"))))

        tensors = torch.stack([prep(Image.open(p).convert("RGB")) for p in paths]).to(dev)
        variants = {"bare_fp32": dict(channels_last=False), "bare_channels_last": dict(channels_last=True)}
        if dev.type == "cuda":
            variants["bare_bf16_channels_last"] = dict(channels_last=True, bf16=True)
        for name, kw in variants.items():
            run = _bare(model, tensors, batch_size, dev, **kw)
            run()
            rows.append(_measurement(name, backbone, n, timed(dev, run)))
        if dev.type == "cuda":
            rows += _timm_bare(backbone, tensors, batch_size, dev)

        rows += _multicut(model, spec, cuts, tensors[: 2 * batch_size], dev)
        del tensors
        rows += _rss(paths, root, params, rss_images * (2 if full else 1), seed)
        rows += _head(backbone, weights, dev, head_images, prep.crop, seed)
        for other in others:
            count = n if full else min(n, 2 * batch_size)
            other_params = {**params, "backbone": other, "layers": bench_cuts(other)}
            CNNFeaturizer(**other_params).fit().transform(warm[:4])
            rows.append(_measurement(f"library[{other}]", other, count, timed(
                dev, lambda: CNNFeaturizer(cache=root / f"cache-{other}", **other_params).fit().transform(
                    paths[:count]))))
    finally:
        if owned:
            shutil.rmtree(root, ignore_errors=True)
    measurements = pd.DataFrame(rows)
    settings = {"backbone": backbone, "cuts": cuts, "batch_size": batch_size, "n_images": n,
                "image_size": featurizer.preprocessing_.crop,
                "images": str(data) if data is not None else "generated 500 × 375 JPEG, quality 90",
                "weights": resolved.label, "pretrained": resolved.pretrained,
                "num_workers": resolve_workers("auto", n, batch_size),
                "precision": "bf16-amp" if dev.type == "cuda" else "fp32"}
    return SuiteResult(measurements, _ratios(measurements, dev), hardware(dev), settings)


def _multicut(model: torch.nn.Module, spec, cuts: Sequence[str], tensors: torch.Tensor,
              device: torch.device) -> list[dict[str, object]]:
    """(b): one pass capturing every cut, each cut alone (stopping there), and full passes, on pre-made tensors."""
    model = prepare(model, device)
    x = tensors.contiguous(memory_format=torch.channels_last)
    every = MultiCutExtractor(model, [spec.cut(c) for c in cuts], "avg")
    single = [MultiCutExtractor(model, [spec.cut(c)], "avg") for c in cuts]

    def passes(calls):
        def run():
            with torch.inference_mode():
                for call in calls:
                    call(x)
        return run

    passes([every])()
    n = len(x)
    return [_measurement("multicut", spec.name, n, timed(device, passes([every]))),
            _measurement("single_cut_passes", spec.name, n, timed(device, passes(single))),
            _measurement("full_passes", spec.name, n, timed(device, passes([model] * len(cuts))))]


def _rss(paths: Sequence[Path], root: Path, params: dict, n: int, seed: int) -> list[dict[str, object]]:
    """(d): peak memory of the library on N and 10·N images, and of the bare forward on N, each in a fresh process."""
    many = write_jpegs(root / "rss", 10 * n, seed=seed + 2)
    probe = {k: v for k, v in params.items() if k != "device"} | {"device": "cpu"}
    backbone = params["backbone"]
    return [_measurement("rss_n", backbone, n, rss_mb=_peak_rss("library", many[:n], probe, root)),
            _measurement("rss_10n", backbone, 10 * n, rss_mb=_peak_rss("library", many, probe, root)),
            _measurement("rss_bare", backbone, n, rss_mb=_peak_rss("bare", many[:n], probe, root))]


def _head(backbone: str, weights: object, device: torch.device, n: int, size: int,
          seed: int) -> list[dict[str, object]]:
    """(e): per-epoch time of head-only fine-tuning on cached activations and through the frozen backbone."""
    df = run_head_benchmark(backbone=backbone, n_images=n, image_size=size, epochs=2, device=str(device),
                            weights=weights, seed=seed).set_index("path")
    return [_measurement(f"head_{path}", backbone, n, float(df.loc[path, "epoch_s"])) for path in df.index]


def _timm_bare(backbone: str, tensors: torch.Tensor, batch_size: int, device: torch.device) -> list[dict]:
    """(f): timm's model of the same name, bf16 channels_last, random init; nothing when timm is absent."""
    try:
        import timm
    except ImportError:
        log.info("timm is not installed: the bare forward is not compared with timm's")
        return []
    run = _bare(timm.create_model(backbone, pretrained=False).eval(), tensors, batch_size, device,
                channels_last=True, bf16=True)
    run()
    return [_measurement("timm", backbone, len(tensors), timed(device, run))]


def _ratios(measurements: pd.DataFrame, device: torch.device) -> pd.DataFrame:
    """Every :data:`TARGETS` ratio whose two measurements exist (time ratios as speed, RSS ratios as memory)."""
    by = measurements.set_index("name")

    def value(top: str, bottom: str) -> float:
        if top.startswith("rss"):
            return by.loc[top, "rss_mb"] / by.loc[bottom, "rss_mb"]
        column = "seconds" if top == "head_forward" else "images_per_s"
        return by.loc[top, column] / by.loc[bottom, column]

    return ratio_table(TARGETS, by.index, value, device)


def format_suite(result: SuiteResult) -> str:
    """The suite as markdown: settings, hardware, the ratio table with targets, the measurements."""
    s = result.settings
    lines = [
        f"backbone {s['backbone']} (cuts {', '.join(s['cuts'])}), batch {s['batch_size']}, {s['n_images']} images "
        f"at {s['image_size']} px "
        f"({s['images']}), num_workers auto = {s['num_workers']}, {s['precision']}",
        weights_line(s["weights"], s["pretrained"], RANDOM_INIT_NOTE),
        hardware_line(result.hardware),
        "",
        *ratio_lines(result.ratios),
    ]
    lines += ["", "| measurement | backbone | images | seconds | images/s | peak PSS MiB |",
              "|---|---|---:|---:|---:|---:|"]
    for m in result.measurements.itertuples():
        def num(v, fmt):
            return "" if v != v else format(v, fmt)
        lines.append(f"| {m.name} | {m.backbone} | {m.n_images} | {num(m.seconds, '.3f')} | "
                     f"{num(m.images_per_s, '.1f')} | {num(m.rss_mb, '.0f')} |")
    if not s["pretrained"]:
        lines += ["", f"note: {RANDOM_INIT_NOTE}"]
    return "\n".join(lines)


def suite_payload(result: SuiteResult) -> dict[str, object]:
    """The suite as a JSON-ready mapping."""
    return result.payload()
