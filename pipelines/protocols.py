"""Published evaluation protocols as presets of :class:`pipelines.compare.CompareConfig` settings (``--protocol``)."""

from __future__ import annotations

from dataclasses import dataclass

from featurize.registry import Registry

__all__ = ["PROTOCOLS", "Protocol", "protocol"]


@dataclass(frozen=True)
class Protocol:
    """A published evaluation protocol as a set of :class:`pipelines.compare.CompareConfig` settings."""

    name: str
    description: str
    settings: dict


PROTOCOLS: Registry[Protocol] = Registry("protocol")
for _protocol in (
    Protocol("default", "this library's comparison: every head tuned by inner CV; fine-tuning from the linear probe "
             "(LP-FT) with BatchNorm statistics frozen, flip + crop augmentation and a step budget, the probe, "
             "learning rate and epoch count chosen on an inner validation split, then refitted on all training images",
             {}),
    Protocol("tutorial", "the PyTorch transfer-learning tutorial: ResNet-18, SGD (momentum 0.9, lr 1e-3), StepLR "
             "(step 7, gamma 0.1), 25 epochs, batch 4, random-resized crop + flip; 'fine-tune all' (finetune_full) "
             "and 'fixed feature extractor' (finetune_head) on all training images, scored on the whole val set "
             "(the last epoch is kept: no epoch is picked on the val images)",
             {"backbones": ["resnet18"], "methods": ["finetune_full", "finetune_head"], "augment": ["flip_crop"],
              "optimizer": "sgd", "lr": 1e-3, "lr_ratio": 1.0, "schedule": "step:7", "epochs": 25, "min_steps": 0,
              "batch_size": 4, "weight_decay": 0.0, "validation_fraction": None, "image_size": "auto",
              "train_sizes": ["all"], "bn": "train", "head_init": "random"}),
    Protocol("kornblith", "Kornblith et al. (2019): L-BFGS logistic regression on the penultimate layer, L2 penalty "
             "searched on a log grid 1e-6..1e5 by inner CV",
             {"methods": ["logistic"], "cuts": {"*": ["penultimate"]}, "image_size": "auto"}),
    Protocol("razavian", "Razavian et al. (2014): VGG-16's first fully-connected layer (fc6), L2-normalised, linear "
             "SVM with C chosen by inner CV",
             {"backbones": ["vgg16"], "methods": ["linear_svm"], "cuts": {"*": ["fc6"]}, "image_size": "auto"}),
):
    PROTOCOLS.register(_protocol.name, _protocol)
"""Protocol presets of ``--protocol``: name → settings (explicit options still override them)."""


def protocol(name: str) -> Protocol:
    """The preset called ``name``; an unknown name raises a ValueError listing the valid ones."""
    if name not in PROTOCOLS:
        raise ValueError(f"--protocol: unknown {name!r}; valid protocols: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
