"""Image inputs: file paths, PIL images or a uint8 array (N, H, W, 3), decoded lazily in DataLoader workers."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

__all__ = [
    "IMAGE_EXTENSIONS", "MAX_PIXELS", "DECODE_IDENTITY", "UnreadableImagesWarning", "as_items", "describe",
    "content_key", "read_image", "load_image", "ImageDataset", "collate_skipping", "collate_keyed", "resolve_workers",
    "usable_cpus", "MAX_AUTO_WORKERS", "image_files",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
"""File extensions read as images when listing folders."""


def image_files(folder: str | Path) -> list[Path]:
    """The image files (by :data:`IMAGE_EXTENSIONS`) under ``folder``, recursively, sorted by relative path (the same
    order on every machine)."""
    root = Path(folder)
    return sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                  key=lambda p: p.relative_to(root).as_posix())


MAX_PIXELS = 64_000_000
"""Default limit on the pixels of an image file (64 Mpx; a decoded RGB image takes 3 bytes per pixel)."""

DECODE_IDENTITY = "rgb;exif-transpose"
"""How files and PIL images are decoded (part of the preprocessing identity, hence of cache keys)."""


MAX_AUTO_WORKERS = 8
"""Cap of ``num_workers="auto"``."""


def resolve_workers(num_workers: int | str, n_images: int, batch_size: int) -> int:
    """DataLoader workers for ``num_workers``: an integer as it is, or ``"auto"``.

    ``"auto"`` is the usable CPUs minus one (the main process runs the forward), at most :data:`MAX_AUTO_WORKERS`,
    and 0 (decode in the main process) when the images fit in one batch, where starting a worker costs more than it
    overlaps, or inside a daemonic process (a multiprocessing pool or Dask worker), which may not have children.
    """
    if num_workers != "auto":
        return int(num_workers)
    if n_images <= batch_size or multiprocessing.current_process().daemon:
        return 0
    return max(0, min(MAX_AUTO_WORKERS, usable_cpus() - 1))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class UnreadableImagesWarning(UserWarning):
    """Some images could not be read and gave NaN rows.

    Attributes
    ----------
    images : list of (int, str)
        Every unreadable image as (position in the input, "<path or #position>: <reason>"), in input order,
        duplicates included.
    """

    def __init__(self, images: Sequence[tuple[int, str]]):
        self.images = [(int(i), str(reason)) for i, reason in images]
        super().__init__(f"{len(self.images)} image(s) could not be read and give NaN rows: "
                         f"{[reason for _, reason in self.images]}")

    def __reduce__(self):
        return type(self), (self.images,)


def as_items(X: object) -> Sequence:
    """Normalise an image collection into an indexable sequence.

    Parameters
    ----------
    X : sequence of paths / PIL images, uint8 ndarray (N, H, W, 3), pandas Series or one-column DataFrame
        The images.

    Returns
    -------
    sequence
        A list of paths/PIL images, or the (N, H, W, 3) uint8 array itself.

    Raises
    ------
    ValueError
        For arrays of the wrong shape or dtype, or items of an unsupported type.
    """
    if hasattr(X, "iloc"):
        X = X.to_numpy()
        if X.ndim == 2:
            if X.shape[1] != 1:
                raise ValueError(f"a DataFrame of images must have one column of paths; got {X.shape[1]} columns")
            X = X[:, 0]
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim != 4 or X.shape[-1] != 3 or X.dtype != np.uint8:
            raise ValueError(
                f"an image array must be uint8 with shape (N, H, W, 3); got dtype {X.dtype} and shape {X.shape}"
            )
        return X
    if isinstance(X, (str, os.PathLike, Image.Image)):
        raise ValueError("X must be a collection of images, not a single image; wrap it in a list")
    items = list(X)
    for i, item in enumerate(items):
        if not isinstance(item, (str, os.PathLike, Image.Image, np.ndarray)):
            raise ValueError(f"X[{i}] is a {type(item).__name__}; expected a path, a PIL image or a uint8 array")
    return items


def describe(item: object, index: int) -> str:
    """How to name an item in messages: its path, or its position."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    return f"<image #{index}>"


def _rgb(image: Image.Image) -> Image.Image:
    """What the network sees: the image turned upright by its EXIF orientation, as RGB (palettes applied)."""
    return ImageOps.exif_transpose(image).convert("RGB")


def _pixels_key(image: Image.Image) -> str:
    return hashlib.sha1(f"PIL-RGB:{image.size}".encode() + image.tobytes()).hexdigest()


def _array_key(arr: np.ndarray) -> str:
    arr = np.ascontiguousarray(arr)
    return hashlib.sha1(f"array:{arr.dtype}:{arr.shape}".encode() + arr.tobytes()).hexdigest()


def content_key(item: object) -> str:
    """sha1 of an image's content: file bytes for paths, the RGB pixels (upright) for PIL images, the array otherwise.

    :func:`read_image` returns the same key for the content it decodes, so a cache lookup by this key and the rows
    written from decoded images agree.

    Raises
    ------
    OSError
        When a path cannot be read.
    """
    if isinstance(item, (str, os.PathLike)):
        h = hashlib.sha1()
        with open(item, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return h.hexdigest()
    if isinstance(item, Image.Image):
        return _pixels_key(_rgb(item))
    return _array_key(np.asarray(item))


def _check_pixels(image: Image.Image, name: str, max_pixels: int | None) -> None:
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ValueError(
            f"{name} is {width} × {height} = {width * height / 1e6:.1f} Mpx, above the limit of "
            f"{max_pixels / 1e6:.1f} "
            "Mpx (decoding it would take about 3 bytes per pixel per worker); pass a larger max_pixels (or None) "
            "if it is genuine, or shrink the image"
        )


def read_image(item: object, max_pixels: int | None = MAX_PIXELS) -> tuple[Image.Image | torch.Tensor, str]:
    """Decode one item to RGB and return it with the content key of exactly what was decoded.

    A file is read once: its bytes are hashed and those same bytes decoded, so the key always matches the pixels,
    even when the file is rewritten meanwhile.  EXIF orientation is applied (:data:`DECODE_IDENTITY`).

    Parameters
    ----------
    item : path, PIL image or uint8 array (H, W, 3)
    max_pixels : int or None, default=MAX_PIXELS
        Files with more pixels are refused before decoding (``None``: no limit).

    Returns
    -------
    image : PIL image (paths and PIL inputs) or uint8 (3, H, W) tensor (arrays)
    key : str
        As :func:`content_key`.

    Raises
    ------
    OSError, ValueError
        For files that cannot be read or decoded, or that exceed ``max_pixels`` (the message names the file).
    """
    if isinstance(item, (str, os.PathLike)):
        data = Path(item).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            _check_pixels(im, str(item), max_pixels)
            return _rgb(im), hashlib.sha1(data).hexdigest()
    if isinstance(item, Image.Image):
        image = _rgb(item)
        return image, _pixels_key(image)
    arr = np.asarray(item)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8 (H, W, 3); got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1), _array_key(arr)


def load_image(item: object, max_pixels: int | None = MAX_PIXELS) -> Image.Image | torch.Tensor:
    """Decode one item to RGB (see :func:`read_image`): a PIL image for paths/PIL inputs, a uint8 tensor for arrays."""
    return read_image(item, max_pixels)[0]


class ImageDataset(Dataset):
    """Lazily decoded images with a transform; failures are returned, not raised, so a caller can skip them.

    Parameters
    ----------
    items : sequence
        From :func:`as_items`.
    transform : callable
        Applied to the decoded image (PIL image or uint8 tensor).
    indices : sequence of int, optional
        Subset of ``items`` to serve, in this order.
    with_keys : bool, default=False
        Also return the content key of what was decoded (see :func:`read_image`).
    max_pixels : int or None, default=MAX_PIXELS
        Files with more pixels fail (as unreadable) before decoding.

    Notes
    -----
    ``__getitem__`` returns ``(index, tensor, None)`` or ``(index, None, error message)``, followed by the key (or
    None) when ``with_keys``.
    """

    def __init__(self, items: Sequence, transform: Callable, indices: Sequence[int] | None = None, *,
                 with_keys: bool = False, max_pixels: int | None = MAX_PIXELS):
        self.items = items
        self.transform = transform
        self.indices = list(range(len(items))) if indices is None else list(indices)
        self.with_keys = with_keys
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple:
        index = self.indices[i]
        item = self.items[index]
        try:
            image, key = read_image(item, self.max_pixels)
            sample = (index, self.transform(image), None, key)
        except Exception as exc:  # noqa: BLE001 - any decode failure is reported per file
            sample = (index, None, f"{describe(item, index)}: {type(exc).__name__}: {exc}", None)
        return sample if self.with_keys else sample[:3]


def collate_skipping(batch: list) -> tuple[list[int], torch.Tensor | list[torch.Tensor] | None, list[tuple[int, str]]]:
    """Collate ``ImageDataset`` samples: stack the good ones, list the failures.

    Returns
    -------
    indices : list of int
        Item indices of the stacked tensors.
    images : Tensor (B, 3, H, W) in channels_last memory, list of tensors (sizes differ) or None (all failed)
    errors : list of (index, message)
    """
    good = [(s[0], s[1]) for s in batch if s[2] is None]
    errors = [(s[0], s[2]) for s in batch if s[2] is not None]
    if not good:
        return [], None, errors
    tensors = [t for _, t in good]
    same = all(t.shape == tensors[0].shape for t in tensors)
    return [i for i, _ in good], _stack_channels_last(tensors) if same else tensors, errors


def _stack_channels_last(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack (C, H, W) images into a (B, C, H, W) batch in the channels_last memory format the models run in.

    Crops made from PIL images already lie in memory as (H, W, C), so this is one plain copy, where ``torch.stack``
    would transpose them to (C, H, W) and the device move transpose them back.
    """
    return torch.stack([t.permute(1, 2, 0) for t in tensors]).permute(0, 3, 1, 2)


def collate_keyed(batch: list) -> tuple[list[int], torch.Tensor | list[torch.Tensor] | None, list[tuple[int, str]],
                                        list[str]]:
    """:func:`collate_skipping` for ``with_keys`` samples, plus the content keys of the good ones (aligned)."""
    return (*collate_skipping(batch), [s[3] for s in batch if s[2] is None])
