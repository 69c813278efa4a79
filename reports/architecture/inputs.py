"""Images the architecture report runs on: probe files or folders, and a photo as a network's input tensor."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from featurize.images import IMAGE_EXTENSIONS
from featurize.weights import ResolvedWeights

__all__ = ["load_images", "to_input"]


def load_images(paths: list[str]) -> list[tuple[str, Image.Image]]:
    """``(file name, RGB image)`` of every image file given, folders searched recursively in sorted order.

    Raises
    ------
    ValueError
        When a path does not exist.
    """
    images = []
    for p in map(Path, paths):
        if not p.exists():
            raise ValueError(f"probe image {str(p)!r} does not exist (give image files or folders)")
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS) if p.is_dir() else [p]
        for f in files:
            with Image.open(f) as im:
                images.append((f.name, im.convert("RGB")))
    return images


def to_input(image: Image.Image, resolved: ResolvedWeights, hw: tuple[int, int]) -> torch.Tensor:
    """``image`` resized to ``hw`` = (H, W) (bilinear, whole image) and normalised as ``resolved``'s weights
    expect: a float32 (3, H, W) tensor."""
    resized = image.convert("RGB").resize((hw[1], hw[0]), Image.BILINEAR)
    return resolved.preprocessing.normalize(pil_to_tensor(resized))
