"""Settings of the architecture report (what ``python -m reports.architecture`` parses); imports nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ReportConfig"]


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
