"""Architecture report: the course's questions 1–8 answered by computing them on the real torchvision models.

:func:`build_report` runs every analysis of the package (``conv_arith``, ``receptive_field``, ``invariance``,
``imagenet_probe``, ``fcn``) through the sections of :mod:`reports.architecture.sections` and writes
``architecture.md``, ``architecture.html`` and PNG figures in ``figures/``; the command is
:mod:`reports.architecture.cli` (``python -m reports.architecture``).  With ``weights="auto"`` (the default) and no
pretrained weights available, the report runs with random-init weights and says so (RANDOM-INIT banner).
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from featurize.backbones import get_backbone_spec, load_model, resolve_weights
from featurize.cli import resolve_backbone_weights
from reports.architecture.config import ReportConfig
from reports.architecture.conv_arith import savings_summary
from reports.architecture.imagenet_probe import generated_scenes
from reports.architecture.inputs import load_images, to_input
from reports.architecture.sections import (
    add_table,
    fcn_section,
    q1_examples,
    q1_section,
    q2_q4_section,
    q3_section,
    q5_section,
)
from reports.document import Document

__all__ = ["ReportConfig", "build_report"]

log = logging.getLogger(__name__)


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
    probe_set = load_images(cfg.probe_images) if cfg.probe_images else (
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
    add_table(report, q1_examples(), "examples (computed by reports.architecture.conv_arith.layer_arithmetic)")
    q1_tables = {}
    progress = tqdm(cfg.backbones, desc="architecture", disable=not cfg.verbose)
    for b in progress:
        q1_tables[b] = q1_section(report, get_backbone_spec(b), fig_dir)

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
        q2_q4_section(report, spec, models[b], to_input(image, resolved[b], (256, 256)), fig_dir)

    report.add("heading", "Q3 — receptive fields")
    report.add("text", "r ← r + (k − 1)·d·j, start ← start + ((k − 1)·d/2 − p)·j, j ← j·s along the main path; a "
                    "ResNet block takes the max over its paths (the 1×1 downsample shortcut does not enlarge the "
                    "field). Measured: gradient support of one central unit in a linearised copy (positive "
                    "constant conv weights, identity batch norm, ReLU, ReLU6 … → identity, max → average pooling: no "
                    "cancellation). The field grows linearly with depth at each stage and by jumps after each "
                    "stride: deep units see large parts of the image (objects, context), shallow ones edges and "
                    "textures. The effective field (gradient magnitude with the real weights) is concentrated in "
                    "the centre of the theoretical one.")
    label = "pretrained weights" if pretrained else "random-init weights"
    for b in cfg.backbones:
        q3_section(report, get_backbone_spec(b), models[b], cfg, label, fig_dir)

    report.add("heading", "Q6 – Q8 — larger inputs and fully convolutional networks")
    report.add("text", "Q6: every convolution and pooling layer runs on any input at least as large as its field; only "
                    "layers expecting a fixed number of inputs (fully-connected) break. Q7: a fully-connected layer "
                    "reading a C×h×w map is an h×w convolution without padding (its weight matrix reshaped), and a "
                    "fully-connected layer on a vector is a 1×1 convolution. Q8: with those convolutions the network "
                    "runs on a larger image and outputs a spatial map of class scores — one prediction per window, "
                    "the basis of detection/segmentation (FCN).")
    for b in cfg.backbones:
        fcn_section(report, get_backbone_spec(b), models[b], resolved[b], image, cfg, fig_dir)

    report.add("heading", "Q5 — ImageNet images vs natural images")
    report.add("text", "ImageNet photos show one centred object filling much of the frame, one label per image. A "
                    f"probe on each image: the centre crop ({cfg.crop_fraction:.0%} of the shorter side, resized to "
                    f"{cfg.size}²) vs the full scene (whole image resized to {cfg.size}²).")
    for b in cfg.backbones:
        q5_section(report, get_backbone_spec(b), models[b], resolved[b], probe_set, cfg, fig_dir)

    md_path, html_path = out / "architecture.md", out / "architecture.html"
    report.write(md_path, html_path)
    figures = sorted(fig_dir.glob("*.png"))
    log.info("wrote %s, %s and %d figures", md_path, html_path, len(figures))
    return {"markdown": md_path, "html": html_path, "figures": figures}
