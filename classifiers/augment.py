"""Named data-augmentation policies for fine-tuning.

A policy is ``"<base>"`` or ``"<base>+mixup"`` where ``<base>`` is

- ``"none"``: the weights' evaluation preprocessing (resize → centre crop → normalise), no randomness;
- ``"flip_crop"``: the PyTorch transfer-learning tutorial's ``RandomResizedCrop`` + ``RandomHorizontalFlip``;
- ``"strong"``: ``flip_crop`` followed by ``TrivialAugmentWide`` (one random photometric/geometric op per image).

``"mixup"`` alone means ``"none+mixup"``.  MixUp acts on whole batches (it blends pairs of images and their
one-hot targets), so it is returned separately as a batch transform: ``torchvision.transforms.v2.MixUp`` called
on ``(images, one_hot_targets)``; it returns the blended images and soft targets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from featurize.preprocessing import Preprocessing

__all__ = ["AUGMENTATIONS", "get_augmentation"]

_BASES = ("none", "flip_crop", "strong")
AUGMENTATIONS: tuple[str, ...] = (*_BASES, "mixup", "flip_crop+mixup", "strong+mixup")
MIXUP_ALPHA = 0.2


def _parse(name: str) -> tuple[str, bool]:
    if not isinstance(name, str) or name not in AUGMENTATIONS:
        raise ValueError(f"Unknown augment={name!r}; valid policies: {', '.join(AUGMENTATIONS)}")
    if name == "mixup":
        return "none", True
    base, _, mix = name.partition("+")
    return base, bool(mix)


def get_augmentation(
    name: str, preprocessing: Preprocessing, image_size: int | None = None, mixup_alpha: float = MIXUP_ALPHA
) -> tuple[Callable, Callable | None]:
    """Build the transforms of a named augmentation policy.

    Parameters
    ----------
    name : str
        One of :data:`AUGMENTATIONS`.
    preprocessing : Preprocessing
        The weights' preprocessing (normalisation statistics, interpolation, resize/crop ratio).
    image_size : int or None
        Side of the training crops; ``None`` uses ``preprocessing.crop``.
    mixup_alpha : float
        Beta(α, α) parameter of MixUp (0.2 is the usual ImageNet value).

    Returns
    -------
    train_transform : callable
        PIL image or uint8 (3, H, W) tensor → normalised float32 (3, image_size, image_size) tensor.
    batch_transform : callable or None
        ``v2.MixUp`` for ``*mixup`` policies, to call as ``batch_transform(images, one_hot_targets)``; else None.

    Raises
    ------
    ValueError
        For an unknown policy name; the message lists the valid ones.
    """
    import torch  # the policy names above stay importable without torch (commands list them in --help)
    from torchvision.transforms import InterpolationMode, v2

    base, mixup = _parse(name)
    prep = preprocessing.with_size(image_size) if image_size is not None else preprocessing
    if base == "none":
        train = prep
    else:
        size = prep.crop or prep.resize
        if size is None:
            raise ValueError(f"augment={name!r} needs a fixed image_size; got image_size=None and no crop size")
        interpolation = InterpolationMode(prep.interpolation)
        steps: list[torch.nn.Module] = [
            v2.ToImage(),
            v2.RandomResizedCrop(size, interpolation=interpolation, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
        if base == "strong":
            steps.append(v2.TrivialAugmentWide(interpolation=interpolation))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(prep.mean), list(prep.std))]
        train = v2.Compose(steps)
    return train, (v2.MixUp(alpha=mixup_alpha) if mixup else None)
