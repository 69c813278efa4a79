"""Architecture report: the course's questions 1–8 answered by computing them on the real torchvision models.

Usage::

    python -m reports.architecture [--backbones vgg16 resnet18] [--image PATH] [--out DIR]
                                   [--weights auto|none|DEFAULT|PATH] [--weights-dir DIR] [--quiet]

writes ``DIR/architecture.md`` and ``DIR/architecture.html`` (tables, and PNG figures in ``DIR/figures``).
Every analysis is an importable function of the package's modules (``conv_arith``, ``receptive_field``,
``invariance``, ``imagenet_probe``, ``fcn``); this module only runs them and assembles the results as a
:class:`reports.document.Document`.  With ``--weights auto`` (the default) and no pretrained weights available, the
report runs with random-init weights and says so (RANDOM-INIT banner).
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from featurize.backbones import BackboneSpec, get_backbone_spec  # noqa: E402
from featurize.families import FAMILIES  # noqa: E402
from reports.architecture.fcn import convolutionalize, try_stages  # noqa: E402
from featurize.backbones import load_model, resolve_weights  # noqa: E402
from featurize.weights import ResolvedWeights  # noqa: E402
from featurize.cli import (  # noqa: E402
    HelpFormatter, add_weights_arguments, backbone_name, resolve_backbone_weights, run_cli)
from reports.architecture.conv_arith import layer_arithmetic, layer_table, savings_summary  # noqa: E402
from reports.architecture.imagenet_probe import (  # noqa: E402
    generated_scenes, probe_images, summarize_probe, top1_counts)
from reports.architecture.invariance import pooling_stability, translation_equivariance  # noqa: E402
from reports.architecture.receptive_field import (  # noqa: E402
    ReceptiveField,
    effective_receptive_field,
    input_gradient,
    linearized_copy,
    mass_square,
    measure_receptive_field,
    module_receptive_fields,
    receptive_field_table,
)
from reports.document import Document  # noqa: E402

__all__ = ["ReportConfig", "build_report", "main"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class ReportConfig:
    """Settings of the architecture report (the CLI's options).

    Parameters
    ----------
    backbones : list of str
        Backbones analysed.
    weights : str or None
        ``"auto"`` (pretrained when obtainable, else random init, flagged), ``"DEFAULT"``, an enum name, a ``.pth``
        path or ``None``/``"none"`` (random init); see :func:`featurize.cli.resolve_backbone_weights`.
    weights_dir : str or None
        Folder holding torchvision weight files under their own names.
    image : str or None
        Image for the fully-convolutional heatmap (default: a generated scene).
    probe_images : list of str
        Files or folders for the ImageNet probe (default: ``image`` if given, else generated scenes).
    size : int
        Side of the probe's views.
    large : pair of int
        (H, W) of the larger input of questions 6–8.
    class_index : int or None
        ImageNet class of the heatmap (default: the best-scoring class).
    rf_check_max : int
        Largest receptive field checked by a gradient measurement (bigger ones need big inputs).
    erf_max : int
        Largest receptive field shown in the effective-receptive-field figure.
    erf_samples : int
        Random inputs averaged for the effective receptive field.
    crop_fraction : float
        Side of the probe's centre crop relative to the shorter side.
    verbose : bool
        Progress bar over backbones.
    """

    backbones: list[str] = field(default_factory=lambda: ["vgg16", "resnet18"])
    weights: str | None = "auto"
    weights_dir: str | None = None
    image: str | None = None
    probe_images: list[str] = field(default_factory=list)
    size: int = 224
    large: tuple[int, int] = (384, 512)
    class_index: int | None = None
    rf_check_max: int = 450
    erf_max: int = 250
    erf_samples: int = 2
    crop_fraction: float = 0.5
    verbose: bool = True


# ---------------------------------------------------------------- rendering


def _fmt(value: object) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "NO"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "—"
        if math.isinf(v):
            return "∞"
        if v == 0:
            return "0"
        if v.is_integer() and abs(v) < 1e6:
            return f"{int(v)}"
        if abs(v) >= 1e6 or abs(v) < 1e-3:
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(value)


def _table(report: Document, df: pd.DataFrame, caption: str = "") -> None:
    report.add("table", df, caption, cell=_fmt)


# ---------------------------------------------------------------- inputs


def _load_images(paths: list[str]) -> list[tuple[str, Image.Image]]:
    images = []
    for p in map(Path, paths):
        if not p.exists():
            raise ValueError(f"probe image {str(p)!r} does not exist (give image files or folders)")
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES) if p.is_dir() else [p]
        for f in files:
            with Image.open(f) as im:
                images.append((f.name, im.convert("RGB")))
    return images


def _to_input(image: Image.Image, resolved: ResolvedWeights, hw: tuple[int, int]) -> torch.Tensor:
    prep = resolved.preprocessing
    resized = image.convert("RGB").resize((hw[1], hw[0]), Image.BILINEAR)
    arr = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean, std = torch.tensor(prep.mean)[:, None, None], torch.tensor(prep.std)[:, None, None]
    return (arr - mean) / std


def _stage_ends(spec: BackboneSpec) -> list[str]:
    spatial = [c for c in spec.cut_points if c.is_spatial]
    return [c.name for c, nxt in zip(spatial, spatial[1:] + [None]) if nxt is None or nxt.stride > c.stride]


# ---------------------------------------------------------------- figures


def _savefig(fig: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def _plot_params(table: pd.DataFrame, name: str, path: Path) -> None:
    conv = table[table["type"] == "Conv2d"]
    fig, ax = plt.subplots(figsize=(10, 3.5))
    x = np.arange(len(conv))
    ax.bar(x - 0.2, np.log10(conv["weights"] + conv["biases"]), 0.4, label="convolution (weights + biases)")
    ax.bar(x + 0.2, np.log10(conv["fc_weights"].astype(float)), 0.4, label="fully-connected equivalent")
    ax.set_xticks(x, conv["layer"], rotation=70, fontsize=7)
    ax.set_ylabel("log10(#weights)")
    ax.set_title(f"{name}: learned weights per layer, 224×224 input")
    ax.legend(fontsize=8)
    _savefig(fig, path)


def _plot_pooling(df: pd.DataFrame, name: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for pooling, group in df.groupby("pooling", sort=False):
        ax.plot(group["shift_px"], group["rel_change"], marker="o", label=pooling)
    ax.set_xlabel("input shift (pixels, diagonal)")
    ax.set_ylabel("relative feature change")
    ax.set_title(f"{name} {df['cut'].iloc[0]}: pooling vs small translations", fontsize=9)
    ax.legend(fontsize=7)
    _savefig(fig, path)


def _plot_erf(panels: list[dict], name: str, label: str, path: Path) -> None:
    fig, axes = plt.subplots(2, len(panels), figsize=(3 * len(panels), 6.2), squeeze=False)
    for j, panel in enumerate(panels):
        for i, (key, title) in enumerate((("theory", "theoretical (linearised)"), ("effective", "effective"))):
            ax = axes[i, j]
            ax.imshow(panel[key].numpy(), cmap="magma")
            top, left = panel["corner"]
            ax.add_patch(plt.Rectangle((left - 0.5, top - 0.5), panel["rf"], panel["rf"], fill=False,
                                       edgecolor="cyan", lw=1))
            ax.set_title(f"{panel['cut']} {title}\nRF {panel['rf']} px", fontsize=8)
            ax.axis("off")
    fig.suptitle(f"{name}: receptive fields of the central unit ({label})", fontsize=9)
    _savefig(fig, path)


def _plot_heatmap(image: Image.Image, score: np.ndarray, rf: ReceptiveField, title: str, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].imshow(image)
    axes[0].set_title("input", fontsize=9)
    axes[1].imshow(image)
    first, half = rf.start, rf.jump / 2
    last_row, last_col = (first + (n - 1) * rf.jump + half for n in score.shape)
    extent = (first - half, last_col, last_row, first - half)
    im = axes[1].imshow(score, cmap="jet", alpha=0.5, extent=extent, interpolation="nearest")
    axes[1].set_xlim(0, image.size[0])
    axes[1].set_ylim(image.size[1], 0)
    axes[1].set_title(title, fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.03)
    for ax in axes:
        ax.axis("off")
    _savefig(fig, path)


def _plot_probe(df: pd.DataFrame, name: str, path: Path) -> None:
    wide = df.pivot(index="image", columns="view", values=["confidence", "entropy"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, metric in zip(axes, ("confidence", "entropy")):
        full, crop = wide[metric]["full scene"], wide[metric]["centre crop"]
        ax.scatter(full, crop)
        lo, hi = float(min(full.min(), crop.min())), float(max(full.max(), crop.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"{metric}: full scene")
        ax.set_ylabel(f"{metric}: centre crop")
    fig.suptitle(f"{name}: top-1 confidence and entropy, one point per image", fontsize=9)
    _savefig(fig, path)


# ---------------------------------------------------------------- sections


def _q1(report: Document, spec: BackboneSpec, fig_dir: Path) -> pd.DataFrame:
    with torch.device("meta"):
        meta = spec.builder(weights=None)
    table = layer_table(meta, 224)
    summary = savings_summary(table)
    report.add("heading", f"{spec.name}: every convolution and pooling layer at 224×224", level=3)
    report.add(
        "text",
        f"{len(table)} layers; output shapes checked against a real forward (hooks): "
        f"{'all equal' if table['shape_ok'].all() else 'MISMATCH'}; weight counts checked against the modules' "
        f"parameters: {'all equal' if table['params_ok'].all() else 'MISMATCH'}. The {summary['conv_layers']} "
        f"convolutions learn {summary['conv_weights']:,} weights; fully-connected layers producing the same outputs "
        f"would need {summary['fc_equivalent_weights']:.3g} ({summary['ratio']:.3g} times more).",
    )
    _table(report, table.drop(columns=["kernel", "stride", "padding"]).assign(
        k_s_p=table["kernel"] + " / " + table["stride"] + " / " + table["padding"]))
    path = fig_dir / f"params_{spec.name}.png"
    _plot_params(table, spec.name, path)
    report.add("figure", f"figures/{path.name}", f"{spec.name}: convolution weights vs fully-connected equivalent")
    return table


def _q1_examples() -> pd.DataFrame:
    configs = [
        ((224, 224, 3), 3, 64, 1, 1, False),
        ((224, 224, 3), 7, 64, 3, 2, False),
        ((56, 56, 64), 3, 128, 1, 2, False),
        ((224, 224, 64), 2, None, 0, 2, True),
        ((7, 7, 512), 7, 4096, 0, 1, False),
        ((32, 48, 16), 5, 8, 0, 3, False),
    ]
    rows = []
    for shape, k, c, p, s, pool in configs:
        a = layer_arithmetic(shape, k, c, p, s, pooling=pool)
        rows.append(
            {
                "input x×y×z": "×".join(map(str, shape)),
                "layer": f"{'maxpool' if pool else f'conv C={c}'} k={k} p={p} s={s}",
                "output": "×".join(map(str, a.output_shape)),
                "weights k·k·z·C": a.weights,
                "with bias": a.weights_with_bias,
                "FC weights": a.fc_weights,
                "FC with bias": a.fc_weights + a.fc_biases,
                "ratio FC/conv": a.ratio,
            }
        )
    return pd.DataFrame(rows)


def _q3(
    report: Document, spec: BackboneSpec, model: nn.Module, cfg: ReportConfig, label: str, fig_dir: Path
) -> pd.DataFrame:
    table = receptive_field_table(spec.name)
    with torch.device("meta"):
        meta = spec.builder(weights=None)
    probe = linearized_copy(meta)
    measured, centres = [], []
    for row in table.itertuples():
        if not row.rf_size:
            measured.append("global")
            centres.append("")
        elif row.rf_size > cfg.rf_check_max:
            measured.append(f"skipped (> {cfg.rf_check_max})")
            centres.append("")
        else:
            m = measure_receptive_field(spec, row.cut, model=probe, linearized=True)
            measured.append(f"{m['measured_size']} ({'match' if m['match'] else 'MISMATCH'})")
            centres.append(f"{m['measured_centre'][0]:g} vs {m['analytic_centre'][0]:g}")
    table = table.assign(measured=measured, centre_measured_vs_analytic=centres)
    report.add("heading", f"{spec.name}: receptive field of every cut point", level=3)
    _table(report, table.drop(columns=["module"]),
               "rf_size 0 = global (the whole image); start = centre of unit 0's field (input pixels); measured = "
               "support of the input gradient of the central unit in the linearised network")
    fields = module_receptive_fields(model)
    ends = [c for c in _stage_ends(spec) if 0 < fields[spec.cut(c).module].size <= cfg.erf_max][-4:]
    panels = []
    for cut in ends:
        rf = fields[spec.cut(cut).module]
        size = int(math.ceil((rf.size + 2 * rf.jump) / rf.jump) * rf.jump)
        module = spec.cut(cut).module
        theory, unit = input_gradient(probe, module, torch.ones(1, 3, size, size))
        theory = theory.abs() / theory.abs().max()
        eff = effective_receptive_field(model, module, size, cfg.erf_samples)
        half = (rf.size - 1) / 2
        c = rf.centre(unit[0]), rf.centre(unit[1])
        panels.append({"cut": cut, "rf": rf.size, "theory": theory, "effective": eff,
                       "corner": (c[0] - half, c[1] - half),
                       "erf95": mass_square(eff), "size": size})
    if panels:
        path = fig_dir / f"erf_{spec.name}.png"
        _plot_erf(panels, spec.name, label, path)
        _table(report, pd.DataFrame([{"cut": p["cut"], "input": p["size"], "theoretical_rf": p["rf"],
                                           "effective_rf_95pct_mass": p["erf95"]} for p in panels]),
                   "effective RF = side of the centred square holding 95% of the gradient magnitude "
                   f"({cfg.erf_samples} random inputs, {label})")
        report.add("figure", f"figures/{path.name}",
                   f"{spec.name}: theoretical field (cyan box, linearised gradient) vs effective field")
    return table


def _q2_q4(report: Document, spec: BackboneSpec, model: nn.Module, image: torch.Tensor, fig_dir: Path) -> None:
    fields = module_receptive_fields(model)
    spatial = [c.name for c in spec.cut_points if c.is_spatial and 0 < fields[c.module].size <= 100]
    picks = sorted({spatial[round(i)] for i in np.linspace(0, len(spatial) - 1, min(4, len(spatial)))},
                   key=spec.index)
    eq = translation_equivariance(model, spec, picks, image)
    report.add("heading", f"{spec.name}: translation equivariance", level=3)
    _table(report, eq, "shift the input by the cut's jump (and by 1 px): feature map shifted by "
                            "shift/jump units, compared on units whose field avoids the borders")
    first_pool = next((i for i, c in enumerate(spec.cut_points) if c.name.startswith("pool")), None)
    cut = spec.cut_points[first_pool - 1].name if first_pool else spec.cut_points[0].name
    stab = pooling_stability(model, spec, cut, image)
    report.add("heading", f"{spec.name}: max pooling vs small translations (cut {cut})", level=3)
    _table(report, stab.pivot(index="pooling", columns="shift_px", values="rel_change").reset_index()
               .rename(columns=lambda c: f"shift {c}px" if isinstance(c, (int, np.integer)) else c),
               "relative change ‖p(f(shifted x)) − p(f(x))‖ / ‖p(f(x))‖, same positions")
    path = fig_dir / f"pooling_{spec.name}.png"
    _plot_pooling(stab, spec.name, path)
    report.add("figure", f"figures/{path.name}", f"{spec.name}: pooling and small translations")


def _fcn(report: Document, spec: BackboneSpec, model: nn.Module, resolved: ResolvedWeights, image: Image.Image,
         cfg: ReportConfig, fig_dir: Path) -> None:
    try:
        fcn = convolutionalize(model).eval()
    except ValueError as exc:
        report.add("heading", f"{spec.name}: convolutionalized", level=3)
        report.add("text", f"Not computed for {spec.name}: {exc}. Its classifier already follows a global pooling, "
                           "so its convolutional part runs on any input size (Q6).")
        return
    x224 = _to_input(image, resolved, (224, 224))[None]
    with torch.no_grad():
        ref = model(x224)
        scores = fcn(x224)
    diff = float((scores.mean(dim=(2, 3)) - ref).abs().max())
    tol = 1e-4 * max(1.0, float(ref.abs().max()))
    report.add("heading", f"{spec.name}: convolutionalized", level=3)
    how = ("fc6 → 7×7 convolution over pool5 (weights reshaped 4096×512×7×7), fc7 and fc8 → 1×1 convolutions; "
           "the adaptive pool is dropped" if fcn.family == "vgg" else
           "avgpool + fc → 1×1 convolution over layer4 (the fc weights reshaped 1000×512×1×1), then the map is "
           "averaged; averaging and a linear layer commute, so the mean of the map is the original logits")
    report.add("text", f"{how}. On 224×224: score map {tuple(scores.shape)}, max |FCN − original logits| = "
                    f"{diff:.2e} (tolerance 1e-4·max(1, max|logit|) = {tol:.1e}): "
                    f"{'equal' if diff <= tol else 'NOT EQUAL'}.")
    h, w = cfg.large
    xl = _to_input(image, resolved, (h, w))[None]
    with torch.no_grad():
        big = fcn(xl)
    if fcn.family == "vgg":
        expect = (h // 32 - 6, w // 32 - 6)
        why = (f"pool5 is ⌊{h}/32⌋×⌊{w}/32⌋ = {h // 32}×{w // 32}; the 7×7 fc6 convolution (no padding) leaves "
               f"{expect[0]}×{expect[1]} positions, 32 px apart: each score vector is the classifier applied to "
               "one 224×224 window of the image (up to the zero padding at that window's borders; one fc6 unit "
               "sees 212 + 6·32 = 404 px)")
    else:
        expect = (math.ceil(h / 32), math.ceil(w / 32))
        why = (f"layer4 is ⌈{h}/32⌉×⌈{w}/32⌉ = {expect[0]}×{expect[1]}; the 1×1 convolution scores every layer4 "
               "position (32 px apart) separately; their mean is what the original network outputs at this size")
    report.add("text", f"On {h}×{w}: score map {tuple(big.shape)} (expected 1000×{expect[0]}×{expect[1]}: "
                    f"{'yes' if tuple(big.shape[2:]) == expect else 'NO'}). {why}.")
    _table(report, pd.DataFrame(try_stages(model, xl)),
               f"Q6 — the unmodified torchvision {spec.name} stage by stage on {h}×{w}")
    if fcn.family == "vgg":
        report.add("text", "torchvision's VGG has an AdaptiveAvgPool2d((7, 7)) before the classifier: it resamples any "
                        "pool5 map to 7×7, so the unmodified network does run on larger inputs (and loses the "
                        "spatial layout). The original VGG had no such pool: with it removed, the convolutional "
                        "part still runs, and fc6 fails because the flattened map no longer has 512·7·7 values.")
        _table(report, pd.DataFrame(try_stages(model, xl, replace={"avgpool": nn.Identity()})),
                   f"the original VGG (no adaptive pool) on {h}×{w}")
    else:
        report.add("text", "ResNet ends with a global AdaptiveAvgPool2d(1): every stage runs on any input size, the "
                        "fc layer always sees 512 (2048) values.")
    head_rf = module_receptive_fields(fcn)["head"]
    report.add("text", f"Each score of the map has a {head_rf.size}-px receptive field; scores are {head_rf.jump} px "
                    f"apart, the first centred at pixel {head_rf.start:g} (the heatmap below is placed accordingly).")
    mean_scores = big.mean(dim=(2, 3))[0]
    cls = cfg.class_index if cfg.class_index is not None else int(mean_scores.argmax())
    categories = resolved.enum.meta.get("categories") if resolved.enum is not None else None
    name = categories[cls] if categories else f"class {cls}"
    heat = torch.softmax(big[0], dim=0)[cls].numpy()
    path = fig_dir / f"heatmap_{spec.name}.png"
    _plot_heatmap(image.resize((w, h)), heat, head_rf, f"softmax score of '{name}' per position "
                                              f"({heat.shape[0]}×{heat.shape[1]} map)", path)
    report.add("figure", f"figures/{path.name}", f"{spec.name} fully convolutional: heatmap of '{name}'")


def _q5(report: Document, spec: BackboneSpec, model: nn.Module, resolved: ResolvedWeights,
        images: list[tuple[str, Image.Image]], cfg: ReportConfig, fig_dir: Path) -> None:
    categories = FAMILIES[spec.family].categories(spec, resolved)
    table = probe_images(model, images, resolved.preprocessing, cfg.size, cfg.crop_fraction, categories,
                         eval_view=True)
    report.add("heading", f"{spec.name}: centre crop vs full scene", level=3)
    if not resolved.pretrained:
        report.add("banner", "WARNING — random-init weights: these confidences and entropies are MEANINGLESS (the "
                             "network knows nothing of ImageNet); the table only shows the probe runs")
    _table(report, summarize_probe(table), "mean over images, normal-approximation 95% CI")
    _table(report, top1_counts(table), "what the ImageNet head calls the images: the most frequent top-1 classes per "
                                       "view (eval transform = the weights' own resize + centre crop)"
                                       + ("" if categories else "; class indices: the class names are unknown"))
    _table(report, table, "per image")
    path = fig_dir / f"probe_{spec.name}.png"
    _plot_probe(table, spec.name, path)
    report.add("figure", f"figures/{path.name}", f"{spec.name}: centre crop vs full scene")


# ---------------------------------------------------------------- driver


def build_report(cfg: ReportConfig, out: str | Path) -> dict[str, Path]:
    """Run every analysis and write ``architecture.md``, ``architecture.html`` and ``figures/*.png`` into ``out``.

    Parameters
    ----------
    cfg : ReportConfig
        Settings.
    out : str or Path
        Output directory (created).

    Returns
    -------
    dict
        ``{"markdown": path, "html": path, "figures": [paths]}``.

    Raises
    ------
    ValueError
        For an unknown backbone or a missing image.
    FileNotFoundError
        When pretrained weights are requested but not available (message says where to put them).
    """
    for name in cfg.backbones:
        get_backbone_spec(name)
    if cfg.image is not None and not Path(cfg.image).is_file():
        raise ValueError(f"image {cfg.image!r} does not exist")
    out = Path(out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    if cfg.image is not None:
        with Image.open(cfg.image) as im:
            image = im.convert("RGB")
        image_desc = f"`{cfg.image}`"
    else:
        image = generated_scenes(1, size=cfg.large, seed=1)[0][1]
        image_desc = "a generated scene (no --image given)"
    probe_set = _load_images(cfg.probe_images) if cfg.probe_images else (
        [(Path(cfg.image).name, image)] if cfg.image else generated_scenes(4))

    resolved = {b: resolve_weights(get_backbone_spec(b), resolve_backbone_weights(b, cfg.weights, cfg.weights_dir))
                for b in cfg.backbones}
    models = {b: load_model(get_backbone_spec(b), resolved[b]) for b in cfg.backbones}
    pretrained = all(r.pretrained for r in resolved.values())

    report = Document("CNN architecture: questions 1–8 computed on the real models")
    if not pretrained:
        report.add("banner", "WARNING — results computed with RANDOM-INIT weights (not pretrained). Shapes, weight "
                             "counts, receptive-field sizes and equivariance do not depend on the weights; effective "
                             "receptive fields, heatmaps and every confidence/entropy below are NOT meaningful.")
    report.add("text", "Weights: " + "; ".join(f"{b}: {r.label}" for b, r in resolved.items())
               + f". Heatmap image: {image_desc}. Probe images: {len(probe_set)}"
               + ("" if cfg.probe_images or cfg.image else " generated scenes") + ".")

    report.add("heading", "Q1 — output size and number of weights")
    report.add("text", "Per spatial dimension, n' = ⌊(n + 2p − d(k − 1) − 1)/s⌋ + 1 (d = dilation, 1 for an ordinary "
                    "convolution: n' = ⌊(n + 2p − k)/s⌋ + 1). C filters on an x×y×z input: output x'×y'×C, "
                    "k·k·z·C weights + C biases. A fully-connected layer producing the same output needs "
                    "(x·y·z)·(x'·y'·C) weights + x'·y'·C biases. Pooling: no weights, z channels kept.")
    _table(report, _q1_examples(), "examples (computed by reports.architecture.conv_arith.layer_arithmetic)")
    q1_tables = {}
    progress = tqdm(cfg.backbones, desc="architecture", disable=not cfg.verbose)
    for b in progress:
        q1_tables[b] = _q1(report, get_backbone_spec(b), fig_dir)

    report.add("heading", "Q2 / Q4 — why convolutions and pooling (measured)")
    report.add("text", "Convolutions share one small kernel over all positions: far fewer weights (Q1 tables: "
               + ", ".join(f"{b} {savings_summary(t)['ratio']:.3g}× fewer than fully-connected"
                           for b, t in q1_tables.items())
               + ") and translation equivariance — shifting the input by the stride shifts the output, exactly "
                 "(rel_error ≈ 0 below); a shift that is not a multiple of the stride has no exact counterpart. "
                 "Pooling buys stability to small translations at the price of position: the feature change under a "
                 "1–4 px shift drops with the pooling window, and global pooling is nearly invariant.")
    for b in cfg.backbones:
        spec = get_backbone_spec(b)
        _q2_q4(report, spec, models[b], _to_input(image, resolved[b], (256, 256)), fig_dir)

    report.add("heading", "Q3 — receptive fields")
    report.add("text", "r ← r + (k − 1)·d·j, start ← start + ((k − 1)·d/2 − p)·j, j ← j·s along the main path; a "
                    "ResNet block takes the max over its paths (the 1×1 downsample shortcut does not enlarge the "
                    "field). Measured: gradient support of one central unit in a linearised copy (positive "
                    "constant conv weights, identity batch norm, ReLU → identity, max → average pooling: no "
                    "cancellation). The field grows linearly with depth at each stage and by jumps after each "
                    "stride: deep units see large parts of the image (objects, context), shallow ones edges and "
                    "textures. The effective field (gradient magnitude with the real weights) is concentrated in "
                    "the centre of the theoretical one.")
    label = "pretrained weights" if pretrained else "random-init weights"
    for b in cfg.backbones:
        _q3(report, get_backbone_spec(b), models[b], cfg, label, fig_dir)

    report.add("heading", "Q6 – Q8 — larger inputs and fully convolutional networks")
    report.add("text", "Q6: every convolution and pooling layer runs on any input at least as large as its field; only "
                    "layers expecting a fixed number of inputs (fully-connected) break. Q7: a fully-connected layer "
                    "reading a C×h×w map is an h×w convolution without padding (its weight matrix reshaped), and a "
                    "fully-connected layer on a vector is a 1×1 convolution. Q8: with those convolutions the network "
                    "runs on a larger image and outputs a spatial map of class scores — one prediction per window, "
                    "the basis of detection/segmentation (FCN).")
    for b in cfg.backbones:
        _fcn(report, get_backbone_spec(b), models[b], resolved[b], image, cfg, fig_dir)

    report.add("heading", "Q5 — ImageNet images vs natural images")
    report.add("text", "ImageNet photos show one centred object filling much of the frame, one label per image. A "
                    f"probe on each image: the centre crop ({cfg.crop_fraction:.0%} of the shorter side, resized to "
                    f"{cfg.size}²) vs the full scene (whole image resized to {cfg.size}²).")
    for b in cfg.backbones:
        _q5(report, get_backbone_spec(b), models[b], resolved[b], probe_set, cfg, fig_dir)

    md_path, html_path = out / "architecture.md", out / "architecture.html"
    report.write(md_path, html_path)
    figures = sorted(fig_dir.glob("*.png"))
    log.info("wrote %s, %s and %d figures", md_path, html_path, len(figures))
    return {"markdown": md_path, "html": html_path, "figures": figures}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reports.architecture", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--backbones", nargs="+", default=["vgg16", "resnet18"], type=backbone_name, metavar="NAME",
                   help="backbones to analyse")
    p.add_argument("--image", default=None, help="image for the fully-convolutional heatmap (default: generated)")
    p.add_argument("--probe-images", nargs="+", default=[], metavar="PATH",
                   help="image files or folders for the Q5 probe (default: --image, else generated scenes)")
    p.add_argument("--out", default="architecture_report", help="output directory")
    add_weights_arguments(p)
    p.add_argument("--size", type=int, default=224, help="side of the Q5 probe's views")
    p.add_argument("--large", type=int, nargs=2, default=[384, 512], metavar=("H", "W"),
                   help="larger input of Q6–Q8")
    p.add_argument("--class-index", type=int, default=None, help="ImageNet class of the heatmap (default: best)")
    p.add_argument("--rf-check-max", type=int, default=450, help="largest receptive field measured by gradient")
    p.add_argument("--erf-max", type=int, default=250, help="largest receptive field in the effective-RF figure")
    p.add_argument("--erf-samples", type=int, default=2, help="random inputs per effective RF")
    p.add_argument("--crop-fraction", type=float, default=0.5, help="probe centre crop / shorter side")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    return p


def _run(args: argparse.Namespace) -> int:
    cfg = ReportConfig(
        backbones=args.backbones, weights=args.weights, weights_dir=args.weights_dir, image=args.image,
        probe_images=args.probe_images, size=args.size, large=tuple(args.large), class_index=args.class_index,
        rf_check_max=args.rf_check_max, erf_max=args.erf_max, erf_samples=args.erf_samples,
        crop_fraction=args.crop_fraction, verbose=not args.quiet,
    )
    try:
        paths = build_report(cfg, args.out)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{exc}\nPretrained weights are unavailable. Provide the file as the message says, or rerun with "
            "--weights auto or --weights none for a random-init report (shapes and receptive fields stay exact; "
            "confidences and heatmaps are then meaningless).") from exc
    if not args.quiet:
        print(f"wrote {paths['markdown']} and {paths['html']} ({len(paths['figures'])} figures)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for bad input or unavailable requested weights)."""
    return run_cli(_parser(), _run, argv)
