"""Questions 2 and 4, measured: translation equivariance of convolutions and the stabilising effect of pooling.

- Equivariance: a stack of convolutions/poolings with total stride ``j`` commutes with translations by multiples
  of ``j``: shifting the input by ``d = m·j`` pixels shifts the feature map by ``m`` units, exactly, wherever the
  receptive field does not touch the border.  A shift that is not a multiple of ``j`` has no exact counterpart.
- Pooling: the relative change of a feature map when the input moves by a few pixels, without pooling and after
  ``w × w`` max pooling (and global max/average pooling): pooling trades position for stability.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from featurize.backbones import BackboneSpec
from reports.architecture.receptive_field import ReceptiveField, forward_to, module_receptive_fields

__all__ = ["translation_equivariance", "pooling_stability", "resize_source"]


def resize_source(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a normalised (3, H, W) image to a (1, 3, size, size) batch (bilinear)."""
    return F.interpolate(image[None].float(), size=(size, size), mode="bilinear", align_corners=False)


def _valid_units(rf: ReceptiveField, n_units: int, size: int) -> range:
    half = (rf.size - 1) / 2
    ok = [i for i in range(n_units) if rf.centre(i) - half >= 0 and rf.centre(i) + half <= size - 1]
    return range(ok[0], ok[-1] + 1) if ok else range(0)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def translation_equivariance(
    model: nn.Module, spec: BackboneSpec, cuts: list[str], image: torch.Tensor
) -> pd.DataFrame:
    """Shift the input by the cut's stride (and by 1 pixel) and compare with the shifted feature map.

    Parameters
    ----------
    model : torch.nn.Module
        The CNN, in eval mode.
    spec : BackboneSpec
        Its registry entry (cut points → modules).
    cuts : list of str
        Spatial cut points to test.
    image : torch.Tensor
        A normalised (3, H, W) image, resized to fit each cut (field + 8 jumps of valid interior).

    Returns
    -------
    pandas.DataFrame
        ``cut``, ``jump``, ``rf_size``, ``input``, ``shift_px``, ``shift_units`` (``shift_px / jump``),
        ``valid_units`` (rows × cols compared: units whose field avoids the borders), ``rel_error``
        (‖f(shifted x) − shifted f(x)‖ / ‖f(x)‖ on them; for a shift that is not a multiple of the jump, the best
        of the two nearest unit shifts) and ``equivariant`` (``rel_error < 1e-4``).
    """
    fields = module_receptive_fields(model)
    rows = []
    for cut in cuts:
        module = spec.cut(cut).module
        rf = fields[module]
        size = int(math.ceil((rf.size + 8 * rf.jump) / rf.jump) * rf.jump)
        source = resize_source(image, size + 2 * rf.jump)
        base = source[..., :size, :size]
        with torch.no_grad():
            fa = forward_to(model, module, base)[0].clone()
            for shift in sorted({rf.jump, 1, 2 * rf.jump}):
                fb = forward_to(model, module, source[..., shift : shift + size, :size])[0].clone()
                valid = _valid_units(rf, fa.shape[1], size)
                cols = _valid_units(rf, fa.shape[2], size)
                errors = []
                for m in {math.floor(shift / rf.jump), math.ceil(shift / rf.jump)}:
                    rows_b = [i for i in valid if i + m in valid]
                    if not rows_b:
                        continue
                    b = fb[:, rows_b[0] : rows_b[-1] + 1, cols.start : cols.stop]
                    a = fa[:, rows_b[0] + m : rows_b[-1] + m + 1, cols.start : cols.stop]
                    errors.append(_rel(b, a))
                rows.append(
                    {
                        "cut": cut,
                        "jump": rf.jump,
                        "rf_size": rf.size,
                        "input": f"{size}x{size}",
                        "shift_px": shift,
                        "shift_units": shift / rf.jump,
                        "valid_units": f"{len(valid)}x{len(cols)}",
                        "rel_error": min(errors) if errors else float("nan"),
                        "equivariant": bool(errors) and min(errors) < 1e-4,
                    }
                )
    return pd.DataFrame(rows)


def pooling_stability(
    model: nn.Module,
    spec: BackboneSpec,
    cut: str,
    image: torch.Tensor,
    size: int = 128,
    shifts: tuple[int, ...] = (1, 2, 3, 4),
    windows: tuple[int, ...] = (1, 2, 4, 8),
) -> pd.DataFrame:
    """Relative change of a feature map under small input translations, with and without max pooling.

    Parameters
    ----------
    model : torch.nn.Module
        The CNN, in eval mode.
    spec : BackboneSpec
        Its registry entry.
    cut : str
        A spatial cut point (best one before the network's first pooling: ``conv1_2`` / ``conv1``).
    image : torch.Tensor
        A normalised (3, H, W) image.
    size : int
        Input side.
    shifts : tuple of int
        Diagonal shifts in input pixels.
    windows : tuple of int
        Max-pooling windows (stride = window) applied to the feature map; 1 = no pooling.

    Returns
    -------
    pandas.DataFrame
        ``cut``, ``pooling`` (``"none"``, ``"max w×w"``, ``"global max"``, ``"global avg"``), ``shift_px`` and
        ``rel_change`` = ‖p(f(shifted x)) − p(f(x))‖ / ‖p(f(x))‖ (same positions, no re-alignment).
    """
    module = spec.cut(cut).module
    source = resize_source(image, size + max(shifts))
    poolings: dict[str, object] = {
        ("none" if w == 1 else f"max {w}x{w}"): (lambda t, w=w: F.max_pool2d(t, w) if w > 1 else t) for w in windows
    }
    poolings["global max"] = lambda t: t.amax(dim=(2, 3))
    poolings["global avg"] = lambda t: t.mean(dim=(2, 3))
    with torch.no_grad():
        fa = forward_to(model, module, source[..., :size, :size]).clone()
        rows = []
        for shift in shifts:
            fb = forward_to(model, module, source[..., shift : shift + size, shift : shift + size]).clone()
            for name, pool in poolings.items():
                rows.append({"cut": cut, "pooling": name, "shift_px": shift, "rel_change": _rel(pool(fb), pool(fa))})
    return pd.DataFrame(rows)
