"""Fine-tune a pretrained CNN end to end, as a scikit-learn classifier, with the recipe careful practitioners use on a
few images.

The estimator only: the network surgery is each backbone family's (:mod:`featurize.families`), the training loop
with its callbacks is :mod:`classifiers.training`, the linear probe :mod:`classifiers.probe`, the cached inputs of
the frozen part :mod:`classifiers.inputs`, saving and loading :mod:`classifiers.persistence`.

The default recipe
------------------
- **BatchNorm statistics frozen** (``bn="frozen"``): every BatchNorm layer keeps ImageNet's running statistics (eval
  mode) while the affine parameters of the trainable stages learn; batches of 5–20 images would otherwise overwrite
  them with noisy estimates.
- **Probe first, then fine-tune** (``head_init="probe"``, LP-FT, Kumar et al. 2022): for strategies that unfreeze
  stages, the new head starts as a logistic regression fitted on the frozen head inputs (:mod:`classifiers.probe`),
  and the probe alone stays a candidate: with an inner validation split, the candidate with the lowest validation
  loss — the probe, or fine-tuning at one of ``lr_candidates`` stopped at its best epoch — is kept (then refitted on
  every training image); the choice is in ``chosen_`` and every candidate in ``candidates_``.
- **Augmentation** (``augment="auto"``): flip + random-resized crop when stages are unfrozen (the PyTorch tutorial's
  policy), none for the head alone.

Fair fine-tuning budget
-----------------------
Each phase runs ``max(epochs, ceil(min_steps / steps per epoch))`` epochs, so a handful of images still gets
``min_steps`` optimizer steps.  With ``validation_fraction``, early stopping picks the epoch of the lowest validation
loss; with ``refit=True`` (default) the network is then trained again from the same initial weights (same seed) on
*all* training images for that many epochs, with the same per-phase schedule.  ``validation_score_`` is the
inner-validation accuracy of the kept candidate: a training-side selection score.

Cost
----
With the frozen stages in eval mode and no augmentation, what enters the trainable part depends on the image only:
``precompute=True`` computes it once (the head's input for ``strategy="head"``, the first trainable stage's input for
``last_block``/``last:k``) and trains from there — the same result as the full forward, for a fraction of the cost.
With augmentation the frozen part runs once on ``augment_views`` augmented views of every image, and each epoch
trains on one of them per image.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, column_or_1d

from classifiers.augment import AUGMENTATIONS, get_augmentation
from classifiers.options import BN_MODES, HEAD_INITS
from classifiers.candidates import Candidates
from classifiers.inputs import FitImages, training_inputs
from classifiers.persistence import load_estimator, save_estimator
from classifiers.surgery import STRATEGIES, build_adapted, check_cut, check_strategy, unfrozen_stages
from classifiers.training import OPTIMIZERS, SCHEDULES, Optimisation, Phase, parse_schedule
from classifiers.batches import image_batches, phase_epochs
from featurize.backbones import get_backbone_spec, load_model, resolve_weights
from featurize.devices import autocast, prepare, resolve_device, to_device
from featurize.images import as_items
from featurize.spec import BackboneSpec
from featurize.weights import ResolvedWeights

__all__ = ["AUTO_LR", "FineTunedCNN", "HEAD_INITS", "STRATEGIES", "SCHEDULES", "OPTIMIZERS"]

AUTO_LR = {"random": 1e-3, "probe": 1e-4}
"""``lr="auto"``: the head's learning rate by how it starts.  A random head needs 1e-3 (AdamW) to converge within the
step budget; a head that starts as the fitted probe needs no such push, and at 1e-3 (backbone 1e-4) full fine-tuning
on 5 EfficientNet-Lite0 photos per class fell below its probe (0.895 and 0.902 on the 153 val photos, probes 0.928
and 0.941), where 1e-4 kept it (0.922 on the first draw)."""



class FineTunedCNN(ClassifierMixin, BaseEstimator):
    """Adapt a pretrained CNN (any :func:`featurize.list_backbones` name or ``timm:<model name>``) to a
    classification task by fine-tuning.

    Strategies and stages are described in :mod:`classifiers.surgery`; the recipe, the step budget, the refit and
    the cached inputs in this module's docstring.

    Parameters
    ----------
    backbone : str
        A :func:`featurize.list_backbones` name, or ``timm:<model name>``.
    weights : str, WeightsEnum, path or None
        As :func:`featurize.resolve_weights`; ``None`` = random init (with ``strategy="full"``: training from
        scratch).
    strategy : str
        ``"head"``, ``"last_block"``, ``"last:k"`` or ``"full"``: which stages train.
    cut : str or None
        Cut point where the new head goes; ``None`` replaces the network's own classifier.
    augment : str
        ``"auto"`` (``"flip_crop"`` when stages are unfrozen, ``"none"`` for the head alone) or a
        :data:`classifiers.augment.AUGMENTATIONS` policy (``"none"``, ``"flip_crop"``, ``"strong"``, ``"mixup"``,
        ``"flip_crop+mixup"``, ``"strong+mixup"``).
    epochs : int
        Epochs with the strategy's trainable stages (after ``freeze_epochs``), at least (see ``min_steps``).
    freeze_epochs : int
        Head-only epochs before unfreezing (fastai's ``fine_tune`` recipe uses 1); ignored for ``"head"``.
    min_steps : int
        Floor on the optimizer steps of each phase: its epochs are raised to ``ceil(min_steps / steps per epoch)``
        when that is more; 0 disables it.  When the floor raises a phase's epochs by a factor f, its ``patience`` is
        multiplied by f too (it measures the same amount of training).
    lr : float or "auto"
        Learning rate of the head; ``"auto"`` (default): 1e-3 for a random head, 1e-4 for a head that starts as the
        probe (see :data:`AUTO_LR`).
    lr_backbone : float or None
        Learning rate of the unfrozen backbone stages; ``None`` = ``lr * lr_ratio``.
    lr_ratio : float
        Discriminative learning rate: backbone lr / head lr when ``lr_backbone`` is None.
    lr_decay : float, default=1.0
        Per-stage decay of the backbone's learning rate: the deepest unfrozen stage trains at the backbone lr, the
        stage k below it at ``lr_backbone · lr_decay**k``.
    lr_candidates : sequence of float or None
        Head learning rates tried on the inner validation split (each with the same ``lr_ratio``/``lr_decay``); the
        one with the lowest validation loss is kept.  None = ``[lr]``.  Without validation only ``lr`` is used.
    optimizer : str
        A :data:`classifiers.training.OPTIMIZERS` name: ``"adamw"`` or ``"sgd"`` (momentum 0.9).
    weight_decay : float
        Weight decay of the trainable parameters (frozen ones are not in the optimiser at all).
    schedule : str
        A :data:`classifiers.training.SCHEDULES` name, per epoch within each phase: ``"cosine"`` (to 0), ``"step"``
        (×0.1 every third of the phase), ``"step:k"`` (×0.1 every k epochs) or ``"constant"``.
    batch_size : int
        Mini-batch size.
    bn : {"frozen", "train"}
        BatchNorm layers keep their running statistics (``"frozen"``) or update them from each batch in the trainable
        stages (``"train"``).
    head_init : {"probe", "random"}
        With stages unfrozen: start from the linear probe, kept as a candidate (``"probe"``, LP-FT), or from a
        random head (``"random"``).  The head-only strategy always trains a random head.
    validation_fraction : float or None
        Stratified inner validation split choosing the candidate and the epoch count (early stopping on the
        validation loss); ``None`` trains on everything for all epochs and keeps the last weights.
    patience : int or None
        Epochs without a validation-loss improvement before a phase stops; ``None`` never stops early.
    refit : bool
        With ``validation_fraction``: after the choice, train again from the same initial weights on all training
        images (True), or keep the chosen candidate trained on the images outside the validation split (False).
    image_size : "auto" or int
        Side of the network input; ``"auto"`` = the weights' preprocessing crop.
    precompute : bool
        Compute what enters the trainable part once (the frozen stages run in eval mode) and train from there: without
        augmentation the same result as the full forward, much faster; with augmentation, on ``augment_views`` views
        of every image.  False re-runs the frozen part every step.  Not for ``"full"`` (nothing is frozen) nor MixUp
        (it blends images, not activations).
    augment_views : int
        With augmentation and ``precompute``: how many augmented views of every image go through the frozen part,
        once; every epoch trains on one of them per image (drawn from ``random_state``) — a fixed bank of augmented
        views instead of fresh ones each epoch.  0 runs the frozen part on fresh views every step.
    cache : str, path or None
        Directory (or ``.h5`` file) where :class:`featurize.CNNFeaturizer` keeps the head inputs between fits (the
        probe's features, the head-only strategy's inputs), when they are all this fit needs of the frozen part (the
        cached inputs of a first trainable stage are computed in the same pass, without it); None keeps them in
        memory for this fit only.
    device : str
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda[:N]"``.  CUDA runs in bf16 autocast; batches are
        channels_last on every device.
    num_workers : int or "auto", default="auto"
        DataLoader workers decoding images (persisting across epochs); ``"auto"`` as :class:`CNNFeaturizer`.
        Augmented images depend on ``random_state`` only, not on the number of workers.
    random_state : int, RandomState or None
        Seed of the random init (``weights=None``), the new head, the validation split, shuffling and augmentation.
    verbose : bool
        Progress bar over epochs.

    Attributes
    ----------
    classes_ : ndarray
        Class labels.
    model_ : torch.nn.Module
        The adapted network (on CPU, eval mode).
    adaptation_ : featurize.spec.Adaptation
        Head path and stages of ``model_``.
    weights_ : ResolvedWeights
        What ``weights`` resolved to (``.pretrained``, ``.label``).
    history_ : list of dict
        Per epoch: ``run`` (``"train"`` without validation, ``"select"`` for the runs on the inner training split,
        ``"refit"`` for the run on all images), ``candidate_lr`` (the run's head learning rate), ``epoch`` (1-based
        within its run), ``phase`` (``"frozen"``, ``"head"`` or the strategy), ``train_loss``, ``train_accuracy``,
        ``val_loss``, ``val_accuracy`` (NaN without validation), ``lr``, ``lr_backbone`` (NaN when the backbone is
        frozen), ``steps``, ``time_s``.
    candidates_ : list of dict
        Per candidate: ``candidate`` (``"probe"`` or ``"finetune"``), ``lr``, ``epochs``, ``val_loss``,
        ``val_accuracy``, ``chosen`` (empty without validation: nothing to choose).
    chosen_ : dict
        The kept candidate: ``candidate``, ``lr`` (NaN for the probe), ``epochs``, and the probe's ``probe_C``.
    n_epochs_ : int
        Epochs run, all runs together (``len(history_)``).
    selected_epochs_ : int
        Fine-tuning epochs of the kept weights (0 when the probe was kept).
    best_epoch_ : int
        Same as ``selected_epochs_``.
    n_steps_ : int
        Optimizer steps that produced the kept weights.
    validation_score_ : float
        Inner-validation accuracy of the kept candidate; NaN without validation.
    validation_indices_ : ndarray or None
        Positions in ``X`` of the inner validation images (None without validation).
    training_path_ : str
        ``"precomputed"`` (the head on cached head inputs), ``"suffix"`` (the unfrozen stages on cached inputs of
        the first one) or ``"forward"`` (images through the whole network).
    precompute_time_s_ : float
        Seconds spent computing the cached inputs and the probe's features (0 when nothing was cached).
    """

    _parameter_constraints: dict = {
        "backbone": [str],
        "weights": "no_validation",
        "strategy": [str],
        "cut": [None, str],
        "augment": [StrOptions({"auto", *AUGMENTATIONS})],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "freeze_epochs": [Interval(Integral, 0, None, closed="left")],
        "min_steps": [Interval(Integral, 0, None, closed="left")],
        "lr": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "lr_backbone": [None, Interval(Real, 0, None, closed="neither")],
        "lr_ratio": [Interval(Real, 0, None, closed="neither")],
        "lr_decay": [Interval(Real, 0, 1, closed="right")],
        "lr_candidates": [None, list, tuple],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "schedule": [str],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "bn": [StrOptions(set(BN_MODES))],
        "head_init": [StrOptions(set(HEAD_INITS))],
        "validation_fraction": [None, Interval(Real, 0, 1, closed="neither")],
        "patience": [None, Interval(Integral, 1, None, closed="left")],
        "refit": ["boolean"],
        "image_size": [StrOptions({"auto"}), Interval(Integral, 32, None, closed="left")],
        "precompute": ["boolean"],
        "augment_views": [Interval(Integral, 0, None, closed="left")],
        "cache": [None, str, os.PathLike],
        "device": [str, torch.device],
        "num_workers": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        backbone: str = "resnet18",
        *,
        weights: object = "DEFAULT",
        strategy: str = "head",
        cut: str | None = None,
        augment: str = "auto",
        epochs: int = 10,
        freeze_epochs: int = 0,
        min_steps: int = 60,
        lr: float | str = "auto",
        lr_backbone: float | None = None,
        lr_ratio: float = 0.1,
        lr_decay: float = 1.0,
        lr_candidates: Sequence[float] | None = None,
        optimizer: str = "adamw",
        weight_decay: float = 1e-2,
        schedule: str = "cosine",
        batch_size: int = 32,
        bn: str = "frozen",
        head_init: str = "probe",
        validation_fraction: float | None = 0.1,
        patience: int | None = 5,
        refit: bool = True,
        image_size: str | int = "auto",
        precompute: bool = True,
        augment_views: int = 8,
        cache: str | Path | None = None,
        device: str = "auto",
        num_workers: int | str = "auto",
        random_state: int | None = 0,
        verbose: bool = False,
    ):
        self.backbone = backbone
        self.weights = weights
        self.strategy = strategy
        self.cut = cut
        self.augment = augment
        self.epochs = epochs
        self.freeze_epochs = freeze_epochs
        self.min_steps = min_steps
        self.lr = lr
        self.lr_backbone = lr_backbone
        self.lr_ratio = lr_ratio
        self.lr_decay = lr_decay
        self.lr_candidates = lr_candidates
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.batch_size = batch_size
        self.bn = bn
        self.head_init = head_init
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.refit = refit
        self.image_size = image_size
        self.precompute = precompute
        self.augment_views = augment_views
        self.cache = cache
        self.device = device
        self.num_workers = num_workers
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.non_deterministic = self.random_state is None
        return tags

    # ------------------------------------------------------------------ configuration
    def _spec(self) -> BackboneSpec:
        """The backbone's registry entry, once the cut and strategy (checks the constraints can't say) are valid."""
        spec = get_backbone_spec(self.backbone)
        check_cut(spec, self.cut)
        check_strategy(self.strategy)
        parse_schedule(self.schedule)
        if self.lr_candidates is not None and (not self.lr_candidates or not all(
                isinstance(v, Real) and v > 0 for v in self.lr_candidates)):
            raise ValueError(f"lr_candidates must be None or a non-empty list of positive learning rates; got "
                             f"{self.lr_candidates!r}")
        return spec

    def _seed(self) -> int:
        if isinstance(self.random_state, Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(2**31 - 1))

    def input_size(self, resolved: ResolvedWeights) -> int:
        """The side of the network input: ``image_size``, or the crop of the weights' preprocessing for ``"auto"``."""
        return int(resolved.preprocessing.crop or 224) if self.image_size == "auto" else int(self.image_size)

    def augment_policy(self, n_unfrozen: int) -> str:
        """The augmentation policy of a fit unfreezing ``n_unfrozen`` stages (``"auto"`` resolved)."""
        if self.augment != "auto":
            return self.augment
        return "flip_crop" if n_unfrozen else "none"

    def learning_rate(self, probe_head: bool) -> float:
        """The head's learning rate: ``lr``, or for ``"auto"`` :data:`AUTO_LR` of the head's start."""
        return AUTO_LR["probe" if probe_head else "random"] if self.lr == "auto" else float(self.lr)

    def optimisation_for(self, lr: float) -> Optimisation:
        """How the trainable parameters move when the head's learning rate is ``lr``."""
        lr_backbone = self.lr_backbone if self.lr_backbone is not None else lr * self.lr_ratio
        return Optimisation(self.optimizer, lr, lr_backbone, self.weight_decay, self.schedule, self.lr_decay)

    def _phase(self, name: str, trainable: list[str], epochs: int, n_train: int,
               depths: Sequence[int] = ()) -> Phase:
        n = phase_epochs(epochs, n_train, self.batch_size, self.min_steps)
        patience = None if self.patience is None else math.ceil(self.patience * n / epochs)
        return Phase(name, tuple(trainable), n, patience, tuple(depths))

    def _phases(self, adaptation, n_unfrozen: int, n_train: int) -> list[Phase]:
        if n_unfrozen == 0:
            return [self._phase("head", [], self.epochs, n_train)]
        phases = []
        if self.freeze_epochs:
            phases.append(self._phase("frozen", [], self.freeze_epochs, n_train))
        trainable = adaptation.trainable(n_unfrozen)
        phases.append(self._phase(str(self.strategy), trainable, self.epochs, n_train, adaptation.depths(n_unfrozen)))
        return phases

    def _split(self, y_enc: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        n, n_classes = len(y_enc), len(self.classes_)
        if self.validation_fraction is None:
            return np.arange(n), None
        n_val = max(n_classes, int(round(self.validation_fraction * n)))
        if np.bincount(y_enc).min() < 2 or n - n_val < n_classes:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} needs at least 2 images per class and room for a "
                f"training set ({n} images, {n_classes} classes); use validation_fraction=None to train on everything"
            )
        train_idx, val_idx = train_test_split(np.arange(n), test_size=n_val, stratify=y_enc, random_state=seed)
        return np.sort(train_idx), np.sort(val_idx)

    # ------------------------------------------------------------------ training
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y) -> "FineTunedCNN":
        """Fine-tune on images ``X`` (paths, PIL images or a uint8 (N, H, W, 3) array) with labels ``y``.

        Raises
        ------
        ValueError
            For bad parameters, mismatched lengths, fewer than two classes or unreadable images.
        FloatingPointError
            When the loss becomes NaN/inf (the message names the epoch and suggests a lower learning rate).
        """
        spec = self._spec()
        items = as_items(X)
        y = column_or_1d(np.asarray(y), warn=True)
        if len(items) != len(y):
            raise ValueError(f"X has {len(items)} images but y has {len(y)} labels")
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y has one class ({self.classes_[0]!r}); a classifier needs at least two")
        seed = self._seed()
        self.device_ = resolve_device(self.device)
        self.spec_ = spec
        self.weights_ = resolve_weights(spec, self.weights, random_state=seed)
        size = self.input_size(self.weights_)
        eval_transform = self.weights_.preprocessing.with_size(size)
        train_idx, val_idx = self._split(y_enc, seed)
        self.validation_indices_ = val_idx

        devices = [self.device_.index or 0] if self.device_.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), ExitStack() as stack:
            torch.manual_seed(seed)
            model = load_model(spec, self.weights_)
            adaptation = build_adapted(spec, model, self.cut, len(self.classes_))
            n_unfrozen = unfrozen_stages(self.strategy, len(adaptation.stages))
            augment = self.augment_policy(n_unfrozen)
            train_transform, batch_transform = get_augmentation(augment, self.weights_.preprocessing, size)
            stack.callback(model.to, "cpu", memory_format=torch.contiguous_format)
            prepare(model, self.device_)
            start = time.perf_counter()
            images = FitImages(items, X, train_transform, eval_transform, augment, seed)
            inputs, head_in = training_inputs(self, model, adaptation, n_unfrozen, images, stack)
            self.precompute_time_s_ = 0.0 if inputs.path == "forward" and head_in is None else \
                time.perf_counter() - start
            run = Candidates(self, inputs, adaptation.head, items, (train_transform, eval_transform),
                             batch_transform, torch.as_tensor(y_enc, dtype=torch.long), seed)
            phases = self._phases(adaptation, n_unfrozen, len(train_idx))
            run.choose_and_train(model, copy.deepcopy(model.state_dict()), phases, head_in, train_idx, val_idx)
        self.training_path_ = inputs.path
        model.requires_grad_(False)
        self.model_ = model.eval()
        self.adaptation_ = adaptation
        return self

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _logits(self, X) -> torch.Tensor:
        check_is_fitted(self, "model_")
        items = as_items(X)
        device = resolve_device(self.device)
        size = self.input_size(self.weights_)
        batches = image_batches(items, self.weights_.preprocessing.with_size(size), range(len(items)),
                                self.batch_size, device, num_workers=self.num_workers)
        model = self.model_ if device.type == "cpu" else prepare(copy.deepcopy(self.model_), device)
        idx, out = [], []
        for indices, images in batches():
            with autocast(device):
                out.append(model(to_device(images, device)).float().cpu())
            idx.append(indices)
        if not out:
            return torch.empty(0, len(self.classes_))
        return torch.cat(out)[torch.argsort(torch.cat(idx))]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n_images, n_classes), columns in ``classes_`` order."""
        return torch.softmax(self._logits(X).double(), dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        """Most probable class of each image."""
        return self.classes_[self._logits(X).argmax(1).numpy()]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write the adapted network (state dict), the parameters and the fitted attributes to ``path``."""
        check_is_fitted(self, "model_")
        save_estimator(self, path)

    @classmethod
    def load(cls, path: str | Path) -> "FineTunedCNN":
        """Rebuild a fitted :class:`FineTunedCNN` written by :meth:`save` (no download, ``weights_only`` load)."""
        return load_estimator(cls, path)
