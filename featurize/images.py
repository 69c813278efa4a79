"""Image inputs: file paths, PIL images or a uint8 array (N, H, W, 3), decoded lazily in DataLoader workers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["IMAGE_EXTENSIONS", "UnreadableImagesWarning", "as_items", "describe", "content_key", "load_image", "ImageDataset", "collate_skipping"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
"""File extensions read as images when listing folders."""


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


def content_key(item: object) -> str:
    """sha1 of an image's content: file bytes for paths, decoded pixels (+ mode and size) otherwise.

    Raises
    ------
    OSError
        When a path cannot be read.
    """
    h = hashlib.sha1()
    if isinstance(item, (str, os.PathLike)):
        with open(item, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    elif isinstance(item, Image.Image):
        h.update(f"PIL:{item.mode}:{item.size}".encode())
        h.update(item.tobytes())
    else:
        arr = np.ascontiguousarray(item)
        h.update(f"array:{arr.dtype}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def load_image(item: object) -> Image.Image | torch.Tensor:
    """Decode one item to RGB: a PIL image for paths/PIL inputs, a uint8 (3, H, W) tensor for arrays."""
    if isinstance(item, (str, os.PathLike)):
        with Image.open(Path(item)) as im:
            return im.convert("RGB")
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    arr = np.asarray(item)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8 (H, W, 3); got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)


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

    Notes
    -----
    ``__getitem__`` returns ``(index, tensor, None)`` or ``(index, None, error message)``.
    """

    def __init__(self, items: Sequence, transform: Callable, indices: Sequence[int] | None = None):
        self.items = items
        self.transform = transform
        self.indices = list(range(len(items))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        index = self.indices[i]
        item = self.items[index]
        try:
            return index, self.transform(load_image(item)), None
        except Exception as exc:  # noqa: BLE001 - any decode failure is reported per file
            return index, None, f"{describe(item, index)}: {type(exc).__name__}: {exc}"


def collate_skipping(batch: list) -> tuple[list[int], torch.Tensor | list[torch.Tensor] | None, list[tuple[int, str]]]:
    """Collate ``ImageDataset`` samples: stack the good ones, list the failures.

    Returns
    -------
    indices : list of int
        Item indices of the stacked tensors.
    images : Tensor (B, 3, H, W), list of tensors (sizes differ) or None (all failed)
    errors : list of (index, message)
    """
    good = [(i, t) for i, t, err in batch if err is None]
    errors = [(i, err) for i, _, err in batch if err is not None]
    if not good:
        return [], None, errors
    tensors = [t for _, t in good]
    same = all(t.shape == tensors[0].shape for t in tensors)
    return [i for i, _ in good], torch.stack(tensors) if same else tensors, errors
