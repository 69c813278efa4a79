"""Mini-batches for fine-tuning: the batching rule, the step budget, batches of precomputed activations (one view or
a bank of augmented views) and of decoded images, seeded so that augmented images depend on the seed only."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler

from featurize.images import ImageDataset, collate_skipping, resolve_workers

__all__ = ["Batches", "drop_last", "image_batches", "phase_epochs", "steps_per_epoch", "tensor_batches",
           "view_batches"]

Batches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]
"""A callable returning an iterator of ``(indices, inputs)`` batches: one epoch per call."""


def drop_last(n: int, batch_size: int, shuffle: bool) -> bool:
    """The one batching rule: drop a trailing batch of a single image when shuffling (training).

    A batch of one breaks BatchNorm in train mode; evaluation (no shuffle) always keeps every image.
    """
    return shuffle and n > 1 and n % batch_size == 1


def steps_per_epoch(n: int, batch_size: int, shuffle: bool = True) -> int:
    """Optimizer steps of one epoch over ``n`` images under :func:`drop_last`."""
    return n // batch_size if drop_last(n, batch_size, shuffle) else math.ceil(n / batch_size)


def phase_epochs(epochs: int, n: int, batch_size: int, min_steps: int) -> int:
    """``epochs``, raised so that the phase runs at least ``min_steps`` optimizer steps over ``n`` images."""
    return max(epochs, math.ceil(min_steps / max(steps_per_epoch(n, batch_size), 1)))


def tensor_batches(
    feats: torch.Tensor, indices, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
) -> Batches:
    """Batches ``(indices, feats[indices])`` of precomputed activations, reshuffled at every call when ``shuffle``."""
    indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    stop = len(indices) - 1 if drop_last(len(indices), batch_size, shuffle) else len(indices)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = indices[torch.randperm(len(indices), generator=generator)] if shuffle else indices
        for start in range(0, stop, batch_size):
            chunk = order[start : min(start + batch_size, stop)]
            yield chunk, feats[chunk]

    return batches


def _derived(generator: torch.Generator | None) -> torch.Generator:
    """A second generator seeded from ``generator``'s seed, so drawing from it leaves ``generator``'s stream as is."""
    base = generator.initial_seed() if generator is not None else torch.initial_seed()
    return torch.Generator().manual_seed((base * 1_000_003 + 12_345) % 2**63)


def view_batches(
    views: torch.Tensor, indices, batch_size: int, generator: torch.Generator | None = None
) -> Batches:
    """Training batches ``(indices, views[v, indices])`` over a bank of ``V`` precomputed views of every item
    (``views`` of shape (V, N, …)): each call (epoch) shuffles as :func:`tensor_batches` does with ``generator`` and
    gives every item one of its views, drawn from a generator derived from it."""
    indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    stop = len(indices) - 1 if drop_last(len(indices), batch_size, True) else len(indices)
    picks = _derived(generator)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = indices[torch.randperm(len(indices), generator=generator)]
        chosen = torch.randint(views.shape[0], (len(order),), generator=picks)
        for start in range(0, stop, batch_size):
            chunk = order[start : min(start + batch_size, stop)]
            yield chunk, views[chosen[start : start + len(chunk)], chunk]

    return batches


class _SeededOrder(Sampler):
    """Each epoch, the permutation :func:`tensor_batches` draws from ``generator`` (or the items in order, without
    ``shuffle``), every position paired with a seed from a generator derived from it."""

    def __init__(self, n: int, generator: torch.Generator | None, shuffle: bool = True):
        self.n, self.generator, self.shuffle = n, generator, shuffle
        self.seeds = _derived(generator)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.n, generator=self.generator).tolist() if self.shuffle else list(range(self.n))
        yield from zip(order, torch.randint(2**62, (self.n,), generator=self.seeds).tolist())

    def __len__(self) -> int:
        return self.n


class _SeededDataset(Dataset):
    """Serves ``(index, seed)`` samples: the transform's random draws come from ``seed`` alone, so an augmented image
    is the same whichever process (main or any loader worker) decodes it, and the caller's RNG is left untouched."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, sample: tuple[int, int]) -> tuple:
        index, seed = sample
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]


def image_batches(
    items, transform, indices: Sequence[int], batch_size: int, device: torch.device, *,
    num_workers: int | str = "auto", shuffle: bool = False, generator: torch.Generator | None = None,
) -> Batches:
    """Batches ``(indices, images)`` decoded by a DataLoader; an unreadable image raises a ValueError naming it.

    ``num_workers`` as :func:`featurize.images.resolve_workers`; training workers persist across epochs.  The
    loader's own seed draws come from a private generator, never from the caller's RNG (MixUp, dropout).  When
    shuffling (training), the order is :func:`tensor_batches`' for the same ``generator``; with a ``generator``
    (always when shuffling), every sample gets a seed derived from it that its random transform draws from, so the
    augmented images depend on ``generator`` only, not on the number of workers (or machine).
    """
    dataset = ImageDataset(items, transform, indices)
    sampler: Sampler = SequentialSampler(dataset)
    if shuffle or generator is not None:
        dataset, sampler = _SeededDataset(dataset), _SeededOrder(len(dataset), generator, shuffle)
    workers = resolve_workers(num_workers, len(indices), batch_size)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last(len(indices), batch_size, shuffle),
        num_workers=workers,
        collate_fn=collate_skipping,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0 and shuffle,
        generator=torch.Generator().manual_seed(0),
    )

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx, images, errors in loader:
            if errors:
                raise ValueError(f"could not read {len(errors)} image(s), e.g. {errors[0][1]}")
            yield torch.as_tensor(idx), images

    return batches
