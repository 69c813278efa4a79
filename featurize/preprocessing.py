"""The preprocessing of a backbone's weights: resize → centre crop → scale to [0, 1] → normalise."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from featurize.images import DECODE_IDENTITY

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Resize → centre crop → scale to [0, 1] → normalise, as torchvision's ``ImageClassification`` preset.

    The geometric steps run in PIL, as the preset does for PIL images (how torchvision's pretrained weights are
    evaluated), so files give the preset's exact output; arrays are turned into PIL images first, so a file and the
    same pixels as an array give the same result.  PIL's resampling is also the fastest here (1.1 ms vs 3.1 ms per
    500 × 375 photo for torch's uint8 antialiased resize, one thread).  :meth:`geometry` (the uint8 crop, decoded and
    resized in the loader's workers) and :meth:`normalize` (on a whole batch, on the device) split the work so that
    workers ship uint8 crops and the arithmetic runs batched; their composition is :meth:`__call__`.

    Parameters
    ----------
    resize : int or None
        Shorter side after resizing; ``None`` keeps the image size.
    crop : int or None
        Side of the centre crop; ``None`` keeps the full (resized) image.
    mean, std : tuple of float
        Per-channel normalisation.
    interpolation : str
        ``"bilinear"`` or ``"bicubic"`` …, a :class:`torchvision.transforms.InterpolationMode` value.
    """

    resize: int | None = 256
    crop: int | None = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def with_size(self, image_size: int | None) -> "Preprocessing":
        """The same preprocessing at another crop size (resize scaled in proportion); ``None`` = full image."""
        if image_size is None:
            return Preprocessing(None, None, self.mean, self.std, self.interpolation)
        ratio = (self.resize or image_size) / (self.crop or image_size)
        return Preprocessing(round(image_size * ratio), image_size, self.mean, self.std, self.interpolation)

    def geometry(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """Resize and crop a PIL image (other modes converted to RGB) or a uint8 (3, H, W) tensor; returns the uint8
        (3, H', W') crop."""
        if isinstance(image, torch.Tensor):
            image = Image.fromarray(image.permute(1, 2, 0).numpy())
        elif image.mode != "RGB":
            image = image.convert("RGB")
        if self.resize is not None:
            image = F.resize(image, [self.resize], interpolation=InterpolationMode(self.interpolation))
        if self.crop is not None:
            image = F.center_crop(image, [self.crop])
        return F.pil_to_tensor(image)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Scale uint8 images (3, H, W) or batches (B, 3, H, W) to [0, 1] and normalise; float32, same layout.

        The arithmetic of torchvision's ``convert_image_dtype`` then ``normalize`` (x / 255, − mean, / std), done in
        place on one new tensor: the same bits, 4–9× faster on a batch.
        """
        if images.dtype != torch.uint8:
            raise ValueError(f"normalize expects uint8 images (from geometry()); got {images.dtype}")
        out = images.to(torch.float32).div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=out.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=out.device).view(-1, 1, 1)
        return out.sub_(mean).div_(std)

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """Apply to a PIL image or a uint8 (3, H, W) tensor; returns a normalised float32 (3, H', W') tensor."""
        return self.normalize(self.geometry(image))

    def identity(self) -> str:
        """A stable string describing this preprocessing (part of cache keys)."""
        mean = ",".join(f"{m:.4f}" for m in self.mean)
        std = ",".join(f"{s:.4f}" for s in self.std)
        return (f"resize={self.resize};crop={self.crop};mean={mean};std={std};interp={self.interpolation};"
                f"resampler=pil;decode={DECODE_IDENTITY}")
