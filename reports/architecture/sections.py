"""The sections of the architecture report: each question's tables, figures and prose for one backbone.

Every function adds its blocks to a :class:`reports.document.Document` and writes its figures into ``fig_dir``
(referenced as ``figures/<name>.png``); the numbers come from the package's analyses (``conv_arith``,
``receptive_field``, ``invariance``, ``imagenet_probe``, ``fcn``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from featurize.backbones import BackboneSpec
from featurize.families import FAMILIES
from featurize.weights import ResolvedWeights
from reports.architecture.config import ReportConfig
from reports.architecture.conv_arith import layer_arithmetic, layer_table, savings_summary
from reports.architecture.fcn import convolutionalize, try_stages
from reports.architecture.figures import plot_erf, plot_heatmap, plot_params, plot_pooling, plot_probe
from reports.architecture.imagenet_probe import probe_images, summarize_probe, top1_counts
from reports.architecture.inputs import to_input
from reports.architecture.invariance import pooling_stability, translation_equivariance
from reports.architecture.receptive_field import (
    effective_receptive_field,
    input_gradient,
    linearized_copy,
    mass_square,
    measure_receptive_field,
    module_receptive_fields,
    receptive_field_table,
)
from reports.document import Document
from reports.tables import compact_cell

__all__ = ["add_table", "fcn_section", "q1_examples", "q1_section", "q2_q4_section", "q3_section", "q5_section"]


def add_table(report: Document, df: pd.DataFrame, caption: str = "") -> None:
    """Add ``df`` as a table whose cells are :func:`reports.tables.compact_cell` text."""
    report.add("table", df, caption, cell=compact_cell)


def _stage_ends(spec: BackboneSpec) -> list[str]:
    spatial = [c for c in spec.cut_points if c.is_spatial]
    return [c.name for c, nxt in zip(spatial, spatial[1:] + [None]) if nxt is None or nxt.stride > c.stride]


def q1_section(report: Document, spec: BackboneSpec, fig_dir: Path) -> pd.DataFrame:
    """Q1 for one backbone: every convolution and pooling layer at 224×224 (shapes and weights, checked against the
    real modules) and the figure of weights vs fully-connected equivalents; returns the layer table."""
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
    add_table(report, table.drop(columns=["kernel", "stride", "padding"]).assign(
        k_s_p=table["kernel"] + " / " + table["stride"] + " / " + table["padding"]))
    path = fig_dir / f"params_{spec.name}.png"
    plot_params(table, spec.name, path)
    report.add("figure", f"figures/{path.name}", f"{spec.name}: convolution weights vs fully-connected equivalent")
    return table


def q1_examples() -> pd.DataFrame:
    """Q1 worked examples: output size and weight counts of a few convolutions and a pooling, with the
    fully-connected equivalent."""
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


def q3_section(
    report: Document, spec: BackboneSpec, model: nn.Module, cfg: ReportConfig, label: str, fig_dir: Path
) -> pd.DataFrame:
    """Q3 for one backbone: the receptive field of every cut point (analytic, checked by a gradient measurement up
    to ``cfg.rf_check_max``) and the theoretical vs effective fields of the stage ends; returns the field table."""
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
    add_table(report, table.drop(columns=["module"]),
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
        plot_erf(panels, spec.name, label, path)
        add_table(report, pd.DataFrame([{"cut": p["cut"], "input": p["size"], "theoretical_rf": p["rf"],
                                         "effective_rf_95pct_mass": p["erf95"]} for p in panels]),
                  "effective RF = side of the centred square holding 95% of the gradient magnitude "
                  f"({cfg.erf_samples} random inputs, {label})")
        report.add("figure", f"figures/{path.name}",
                   f"{spec.name}: theoretical field (cyan box, linearised gradient) vs effective field")
    return table


def q2_q4_section(report: Document, spec: BackboneSpec, model: nn.Module, image: torch.Tensor, fig_dir: Path) -> None:
    """Q2/Q4 for one backbone: translation equivariance at up to four cut points and the stability of max pooling
    under small shifts, measured on ``image`` (a normalised (3, H, W) tensor)."""
    fields = module_receptive_fields(model)
    spatial = [c.name for c in spec.cut_points if c.is_spatial and 0 < fields[c.module].size <= 100]
    picks = sorted({spatial[round(i)] for i in np.linspace(0, len(spatial) - 1, min(4, len(spatial)))},
                   key=spec.index)
    eq = translation_equivariance(model, spec, picks, image)
    report.add("heading", f"{spec.name}: translation equivariance", level=3)
    add_table(report, eq, "shift the input by the cut's jump (and by 1 px): feature map shifted by "
                          "shift/jump units, compared on units whose field avoids the borders")
    first_pool = next((i for i, c in enumerate(spec.cut_points) if c.name.startswith("pool")), None)
    cut = spec.cut_points[first_pool - 1].name if first_pool else spec.cut_points[0].name
    stab = pooling_stability(model, spec, cut, image)
    report.add("heading", f"{spec.name}: max pooling vs small translations (cut {cut})", level=3)
    add_table(report, stab.pivot(index="pooling", columns="shift_px", values="rel_change").reset_index()
              .rename(columns=lambda c: f"shift {c}px" if isinstance(c, (int, np.integer)) else c),
              "relative change ‖p(f(shifted x)) − p(f(x))‖ / ‖p(f(x))‖, same positions")
    path = fig_dir / f"pooling_{spec.name}.png"
    plot_pooling(stab, spec.name, path)
    report.add("figure", f"figures/{path.name}", f"{spec.name}: pooling and small translations")


def fcn_section(report: Document, spec: BackboneSpec, model: nn.Module, resolved: ResolvedWeights,
                image: Image.Image, cfg: ReportConfig, fig_dir: Path) -> None:
    """Q6–Q8 for one backbone: the convolutionalized network checked against the original on 224×224, its score
    map on ``cfg.large``, the unmodified network stage by stage there, and the class heatmap over ``image``."""
    try:
        fcn = convolutionalize(model).eval()
    except ValueError as exc:
        report.add("heading", f"{spec.name}: convolutionalized", level=3)
        report.add("text", f"Not computed for {spec.name}: {exc}. Its classifier already follows a global pooling, "
                           "so its convolutional part runs on any input size (Q6).")
        return
    x224 = to_input(image, resolved, (224, 224))[None]
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
    xl = to_input(image, resolved, (h, w))[None]
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
    add_table(report, pd.DataFrame(try_stages(model, xl)),
              f"Q6 — the unmodified torchvision {spec.name} stage by stage on {h}×{w}")
    if fcn.family == "vgg":
        report.add("text", "torchvision's VGG has an AdaptiveAvgPool2d((7, 7)) before the classifier: it resamples "
                           "any pool5 map to 7×7, so the unmodified network does run on larger inputs (and loses the "
                           "spatial layout). The original VGG had no such pool: with it removed, the convolutional "
                           "part still runs, and fc6 fails because the flattened map no longer has 512·7·7 values.")
        add_table(report, pd.DataFrame(try_stages(model, xl, replace={"avgpool": nn.Identity()})),
                  f"the original VGG (no adaptive pool) on {h}×{w}")
    else:
        report.add("text", "ResNet ends with a global AdaptiveAvgPool2d(1): every stage runs on any input size, "
                           "the fc layer always sees 512 (2048) values.")
    head_rf = module_receptive_fields(fcn)["head"]
    report.add("text", f"Each score of the map has a {head_rf.size}-px receptive field; scores are {head_rf.jump} "
                       f"px apart, the first centred at pixel {head_rf.start:g} (the heatmap below is placed "
                       "accordingly).")
    mean_scores = big.mean(dim=(2, 3))[0]
    cls = cfg.class_index if cfg.class_index is not None else int(mean_scores.argmax())
    categories = resolved.enum.meta.get("categories") if resolved.enum is not None else None
    name = categories[cls] if categories else f"class {cls}"
    heat = torch.softmax(big[0], dim=0)[cls].numpy()
    path = fig_dir / f"heatmap_{spec.name}.png"
    plot_heatmap(image.resize((w, h)), heat, head_rf,
                 f"softmax score of '{name}' per position ({heat.shape[0]}×{heat.shape[1]} map)", path)
    report.add("figure", f"figures/{path.name}", f"{spec.name} fully convolutional: heatmap of '{name}'")


def q5_section(report: Document, spec: BackboneSpec, model: nn.Module, resolved: ResolvedWeights,
               images: list[tuple[str, Image.Image]], cfg: ReportConfig, fig_dir: Path) -> None:
    """Q5 for one backbone: the ImageNet probe of ``images`` (centre crop, full scene, the weights' eval view):
    confidence and entropy, the most frequent top-1 classes, per image and as a figure."""
    categories = FAMILIES[spec.family].categories(spec, resolved)
    table = probe_images(model, images, resolved.preprocessing, cfg.size, cfg.crop_fraction, categories,
                         eval_view=True)
    report.add("heading", f"{spec.name}: centre crop vs full scene", level=3)
    if not resolved.pretrained:
        report.add("banner", "WARNING — random-init weights: these confidences and entropies are MEANINGLESS (the "
                             "network knows nothing of ImageNet); the table only shows the probe runs")
    add_table(report, summarize_probe(table), "mean over images, normal-approximation 95% CI")
    add_table(report, top1_counts(table), "what the ImageNet head calls the images: the most frequent top-1 classes "
                                          "per view (eval transform = the weights' own resize + centre crop)"
                                          + ("" if categories else "; class indices: the class names are unknown"))
    add_table(report, table, "per image")
    path = fig_dir / f"probe_{spec.name}.png"
    plot_probe(table, spec.name, path)
    report.add("figure", f"figures/{path.name}", f"{spec.name}: centre crop vs full scene")
