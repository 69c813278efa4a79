"""Figures of the architecture report, each written as one PNG (matplotlib ``Figure`` + Agg canvas, no pyplot
state, so drawing never switches the process's matplotlib backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from reports.architecture.receptive_field import ReceptiveField

__all__ = ["plot_erf", "plot_heatmap", "plot_params", "plot_pooling", "plot_probe"]


def _figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")


def plot_params(table: pd.DataFrame, name: str, path: Path) -> None:
    """Learned weights per convolution vs its fully-connected equivalent (log10), from a :func:`layer_table`."""
    conv = table[table["type"] == "Conv2d"]
    fig = _figure((10, 3.5))
    ax = fig.subplots()
    x = np.arange(len(conv))
    ax.bar(x - 0.2, np.log10(conv["weights"] + conv["biases"]), 0.4, label="convolution (weights + biases)")
    ax.bar(x + 0.2, np.log10(conv["fc_weights"].astype(float)), 0.4, label="fully-connected equivalent")
    ax.set_xticks(x, conv["layer"], rotation=70, fontsize=7)
    ax.set_ylabel("log10(#weights)")
    ax.set_title(f"{name}: learned weights per layer, 224×224 input")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_pooling(df: pd.DataFrame, name: str, path: Path) -> None:
    """Relative feature change against the input shift, one line per pooling (a :func:`pooling_stability`)."""
    fig = _figure((5, 3.5))
    ax = fig.subplots()
    for pooling, group in df.groupby("pooling", sort=False):
        ax.plot(group["shift_px"], group["rel_change"], marker="o", label=pooling)
    ax.set_xlabel("input shift (pixels, diagonal)")
    ax.set_ylabel("relative feature change")
    ax.set_title(f"{name} {df['cut'].iloc[0]}: pooling vs small translations", fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_erf(panels: list[dict], name: str, label: str, path: Path) -> None:
    """Theoretical (top) and effective (bottom) receptive field of the central unit, one column per cut."""
    fig = _figure((3 * len(panels), 6.2))
    axes = fig.subplots(2, len(panels), squeeze=False)
    for j, panel in enumerate(panels):
        for i, (key, title) in enumerate((("theory", "theoretical (linearised)"), ("effective", "effective"))):
            ax = axes[i, j]
            ax.imshow(panel[key].numpy(), cmap="magma")
            top, left = panel["corner"]
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), panel["rf"], panel["rf"], fill=False, edgecolor="cyan",
                                   lw=1))
            ax.set_title(f"{panel['cut']} {title}\nRF {panel['rf']} px", fontsize=8)
            ax.axis("off")
    fig.suptitle(f"{name}: receptive fields of the central unit ({label})", fontsize=9)
    _save(fig, path)


def plot_heatmap(image: Image.Image, score: np.ndarray, rf: ReceptiveField, title: str, path: Path) -> None:
    """The input and a score map drawn over it, each score at the centre of its receptive field."""
    fig = _figure((10, 4))
    axes = fig.subplots(1, 2)
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
    _save(fig, path)


def plot_probe(df: pd.DataFrame, name: str, path: Path) -> None:
    """Top-1 confidence and entropy of the centre crop against the full scene, one point per image."""
    wide = df.pivot(index="image", columns="view", values=["confidence", "entropy"])
    fig = _figure((9, 4))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("confidence", "entropy")):
        full, crop = wide[metric]["full scene"], wide[metric]["centre crop"]
        ax.scatter(full, crop)
        lo, hi = float(min(full.min(), crop.min())), float(max(full.max(), crop.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"{metric}: full scene")
        ax.set_ylabel(f"{metric}: centre crop")
    fig.suptitle(f"{name}: top-1 confidence and entropy, one point per image", fontsize=9)
    _save(fig, path)
