"""Fine-tune a torchvision ResNet/VGG or a timm model end to end, as a scikit-learn classifier.

The estimator only: the network surgery (cut points, stages, freezing) is :mod:`classifiers.surgery`, the training
loop (phases, early stopping, optimiser and schedule tables) is :mod:`classifiers.training`.

Fair fine-tuning budget
-----------------------
Each phase runs ``max(epochs, ceil(min_steps / steps per epoch))`` epochs, so a handful of images still gets
``min_steps`` optimizer steps (5 images per class, batch 32: one step per epoch).  With ``validation_fraction``,
early stopping picks the epoch of the lowest validation loss; with ``refit=True`` (default) the network is then
trained again from the same initial weights (same seed) on *all* training images for that many epochs, with the
same per-phase schedule (the learning-rate trajectory of the selection run, cut at the selected epoch).
``validation_score_`` is the inner-validation accuracy at the selected epoch: a training-side selection score.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, column_or_1d
from torch import nn
from torchvision.models import WeightsEnum

from classifiers.augment import AUGMENTATIONS, get_augmentation
from classifiers.surgery import (
    STRATEGIES,
    Adaptation,
    build_adapted,
    check_cut,
    check_strategy,
    unfrozen_stages,
)
from classifiers.training import (
    OPTIMIZERS,
    SCHEDULES,
    parse_schedule,
    EarlyStopping,
    Optimisation,
    Phase,
    image_batches,
    phase_epochs,
    run_phases,
    tensor_batches,
)
from featurize.backbones import BackboneSpec, get_backbone_spec, load_model, resolve_weights
from featurize.devices import autocast, prepare, resolve_device, to_device
from featurize.extract import StopForward
from featurize.images import as_items
from featurize.transformer import CNNFeaturizer
from featurize.preprocessing import Preprocessing
from featurize.weights import ResolvedWeights

__all__ = ["FineTunedCNN", "STRATEGIES", "SCHEDULES", "OPTIMIZERS"]

_FORMAT = 2
_READABLE_FORMATS = (1, 2)


def _params_for_saving(params: dict) -> dict:
    out = {}
    for key, value in params.items():
        if isinstance(value, WeightsEnum):
            value = value.name
        elif isinstance(value, (Path, torch.device)):
            value = str(value)
        out[key] = value
    return out


class FineTunedCNN(ClassifierMixin, BaseEstimator):
    """Adapt a torchvision ResNet/VGG or a timm model (``timm:<model name>``) to a classification task by fine-tuning.

    Strategies, stages and cut points are described in :mod:`classifiers.surgery`; the step budget and the refit
    in this module's docstring.

    Parameters
    ----------
    backbone : str
        A :func:`featurize.backbones.list_backbones` name, or ``timm:<model name>``.
    weights : str, WeightsEnum, path or None
        As :func:`featurize.weights.resolve_weights`; ``None`` = random init (with ``strategy="full"``: training
        from scratch).
    strategy : str
        ``"head"``, ``"last_block"``, ``"last:k"`` or ``"full"``: which stages train.
    cut : str or None
        Cut point where the new head goes; ``None`` replaces the network's own classifier.
    augment : str
        A :data:`classifiers.augment.AUGMENTATIONS` policy (``"none"``, ``"flip_crop"``, ``"strong"``, ``"mixup"``,
        ``"flip_crop+mixup"``, ``"strong+mixup"``).
    epochs : int
        Epochs with the strategy's trainable stages (after ``freeze_epochs``), at least (see ``min_steps``).
    freeze_epochs : int
        Head-only epochs before unfreezing (fastai's ``fine_tune`` recipe uses 1); ignored for ``"head"``.
    min_steps : int
        Floor on the optimizer steps of each phase: its epochs are raised to ``ceil(min_steps / steps per epoch)``
        when that is more.  60 steps is one epoch of the PyTorch transfer-learning tutorial (244 images, batch 4)
        and lets a new head trained by AdamW at lr=1e-3 converge; with 120 images/class and batch 32 (8 steps per
        epoch) the floor is inactive at ``epochs=10``.  0 disables it.  When the floor raises a phase's epochs by
        a factor f, its ``patience`` is multiplied by f too (it measures the same amount of training).
    lr : float
        Learning rate of the head (1e-3 suits AdamW; the PyTorch tutorial's SGD uses 1e-3 too).
    lr_backbone : float or None
        Learning rate of the unfrozen backbone stages; ``None`` = ``lr * lr_ratio``.
    lr_ratio : float
        Discriminative learning rate: backbone lr / head lr when ``lr_backbone`` is None (pretrained layers move
        less than the new head).
    lr_decay : float, default=1.0
        Per-stage decay of the backbone's learning rate: the deepest unfrozen stage trains at the backbone lr, the
        stage k below it at ``lr_backbone · lr_decay**k`` (layer-wise decay; 1 = one rate for all stages).
    optimizer : str
        A :data:`classifiers.training.OPTIMIZERS` name: ``"adamw"`` or ``"sgd"`` (momentum 0.9).
    weight_decay : float
        Weight decay of the trainable parameters (frozen ones are not in the optimiser at all).
    schedule : str
        A :data:`classifiers.training.SCHEDULES` name, per epoch within each phase: ``"cosine"`` (to 0), ``"step"``
        (×0.1 every third of the phase), ``"step:k"`` (×0.1 every k epochs) or ``"constant"``.
    batch_size : int
        Mini-batch size.
    validation_fraction : float or None
        Stratified inner validation split choosing the epoch count (early stopping on the validation loss);
        ``None`` trains on everything for all epochs and keeps the last weights.
    patience : int or None
        Epochs without a validation-loss improvement before a phase stops; ``None`` never stops early.
    refit : bool
        With ``validation_fraction``: after the epoch count is chosen, train again from the same initial weights on
        all training images for that many epochs (True), or keep the best weights of the selection run, trained on
        the images outside the validation split (False).  Ignored without validation.
    image_size : "auto" or int
        Side of the network input; ``"auto"`` = the weights' preprocessing crop (224).
    precompute : bool
        With ``strategy="head"`` and ``augment="none"``, compute the frozen activations at the cut once and train
        the head on them (same result as the full forward, much faster); False re-runs the frozen network every epoch.
    cache : str, path or None
        Directory (or ``.h5`` file) where :class:`featurize.CNNFeaturizer` keeps those activations between fits;
        None keeps them in memory for this fit only.
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
    adaptation_ : classifiers.surgery.Adaptation
        Head path and stages of ``model_``.
    weights_ : ResolvedWeights
        What ``weights`` resolved to (``.pretrained``, ``.label``).
    history_ : list of dict
        Per epoch: ``run`` (``"train"`` without validation, ``"select"`` for the run on the inner training split,
        ``"refit"`` for the run on all images), ``epoch`` (1-based within its run), ``phase`` (``"frozen"``,
        ``"head"`` or the strategy), ``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy`` (NaN
        without validation), ``lr``, ``lr_backbone`` (NaN when the backbone is frozen), ``steps``, ``time_s``.
    n_epochs_ : int
        Epochs run, all runs together (``len(history_)``).
    selected_epochs_ : int
        Epochs of the kept weights: the best validation epoch, or all epochs without validation.
    best_epoch_ : int
        Same as ``selected_epochs_`` (epoch of its run whose weights were kept).
    n_steps_ : int
        Optimizer steps that produced the kept weights.
    validation_score_ : float
        Inner-validation accuracy at the selected epoch; NaN without validation.
    validation_indices_ : ndarray or None
        Positions in ``X`` of the inner validation images (None without validation).
    training_path_ : str
        ``"precomputed"`` (head trained on cached activations) or ``"forward"``.
    precompute_time_s_ : float
        Seconds spent computing the cached activations (0 for the forward path).
    """

    _parameter_constraints: dict = {
        "backbone": [str],
        "weights": "no_validation",
        "strategy": [str],
        "cut": [None, str],
        "augment": [StrOptions(set(AUGMENTATIONS))],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "freeze_epochs": [Interval(Integral, 0, None, closed="left")],
        "min_steps": [Interval(Integral, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "lr_backbone": [None, Interval(Real, 0, None, closed="neither")],
        "lr_ratio": [Interval(Real, 0, None, closed="neither")],
        "lr_decay": [Interval(Real, 0, 1, closed="right")],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "schedule": [str],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [None, Interval(Real, 0, 1, closed="neither")],
        "patience": [None, Interval(Integral, 1, None, closed="left")],
        "refit": ["boolean"],
        "image_size": [StrOptions({"auto"}), Interval(Integral, 32, None, closed="left")],
        "precompute": ["boolean"],
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
        augment: str = "none",
        epochs: int = 10,
        freeze_epochs: int = 0,
        min_steps: int = 60,
        lr: float = 1e-3,
        lr_backbone: float | None = None,
        lr_ratio: float = 0.1,
        lr_decay: float = 1.0,
        optimizer: str = "adamw",
        weight_decay: float = 1e-2,
        schedule: str = "cosine",
        batch_size: int = 32,
        validation_fraction: float | None = 0.1,
        patience: int | None = 5,
        refit: bool = True,
        image_size: str | int = "auto",
        precompute: bool = True,
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
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.refit = refit
        self.image_size = image_size
        self.precompute = precompute
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
        return spec

    def _seed(self) -> int:
        if isinstance(self.random_state, Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(2**31 - 1))

    def _image_size(self, resolved: ResolvedWeights) -> int:
        return int(resolved.preprocessing.crop or 224) if self.image_size == "auto" else int(self.image_size)

    def _optimisation(self) -> Optimisation:
        lr_backbone = self.lr_backbone if self.lr_backbone is not None else self.lr * self.lr_ratio
        return Optimisation(self.optimizer, self.lr, lr_backbone, self.weight_decay, self.schedule, self.lr_decay)

    def _phase(self, name: str, trainable: list[str], epochs: int, n_train: int,
               depths: Sequence[int] = ()) -> Phase:
        n = phase_epochs(epochs, n_train, self.batch_size, self.min_steps)
        patience = None if self.patience is None else math.ceil(self.patience * n / epochs)
        return Phase(name, tuple(trainable), n, patience, tuple(depths))

    def _phases(self, adaptation: Adaptation, n_unfrozen: int, n_train: int, precomputed: bool) -> list[Phase]:
        if precomputed:
            return [self._phase("head", [], self.epochs, n_train)]
        phases = []
        if n_unfrozen and self.freeze_epochs:
            phases.append(self._phase("frozen", [], self.freeze_epochs, n_train))
        phases.append(self._phase(str(self.strategy), adaptation.trainable(n_unfrozen), self.epochs, n_train,
                                  adaptation.depths(n_unfrozen)))
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

    # ------------------------------------------------------------------ activations
    def _forward(self, model: nn.Module, batches, device: torch.device) -> tuple[list[torch.Tensor], list]:
        """Run ``model`` over every batch under autocast: the batches' indices and float CPU outputs."""
        idx, out = [], []
        for indices, images in batches():
            with autocast(device):
                out.append(model(to_device(images, device)).float().cpu())
            idx.append(indices)
        return idx, out

    @torch.no_grad()
    def _head_inputs(self, model: nn.Module, head: str, batches, device: torch.device) -> torch.Tensor:
        """The activations entering the head (eval mode), in batch order: the forward stops at the head."""

        def stop(_module, inputs):
            raise StopForward(inputs[0].float().cpu())

        handle = model.get_submodule(head).register_forward_pre_hook(stop)
        model.eval()
        out = []
        try:
            for _, images in batches():
                try:
                    with autocast(device):
                        model(to_device(images, device))
                except StopForward as caught:
                    out.append(caught.output)
        finally:
            handle.remove()
        return torch.cat(out)

    def _precompute(self, model, adaptation: Adaptation, items, X, eval_transform, seed: int) -> torch.Tensor:
        """Head inputs of every image, in input order (from the featurizer's cache when ``cache`` is set)."""
        if self.cache is not None:
            fz = CNNFeaturizer(
                backbone=self.backbone, layers=adaptation.feature_cut, pooling="avg", weights=self.weights,
                image_size=self.image_size, cache=self.cache, batch_size=self.batch_size, device=self.device,
                num_workers=self.num_workers, random_state=seed, verbose=self.verbose,
            )
            return torch.from_numpy(np.asarray(fz.fit_transform(X), dtype=np.float32))
        prepare(model, self.device_)
        batches = image_batches(items, eval_transform, range(len(items)), self.batch_size, self.device_,
                                num_workers=self.num_workers)
        return self._head_inputs(model, adaptation.head, batches, self.device_)

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
        size = self._image_size(self.weights_)
        eval_transform = self.weights_.preprocessing.with_size(size)
        train_transform, batch_transform = get_augmentation(self.augment, self.weights_.preprocessing, size)
        train_idx, val_idx = self._split(y_enc, seed)
        self.validation_indices_ = val_idx
        y_t = torch.as_tensor(y_enc, dtype=torch.long)

        devices = [self.device_.index or 0] if self.device_.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            model = load_model(spec, self.weights_)
            adaptation = build_adapted(spec, model, self.cut, len(self.classes_))
            n_unfrozen = unfrozen_stages(self.strategy, len(adaptation.stages))
            precomputed = n_unfrozen == 0 and self.augment == "none" and self.precompute
            initial = copy.deepcopy(model.state_dict()) if val_idx is not None and self.refit else None
            try:
                if precomputed:
                    start = time.perf_counter()
                    feats = self._precompute(model, adaptation, items, X, eval_transform, seed)
                    self.precompute_time_s_ = time.perf_counter() - start
                    net, head = model.get_submodule(adaptation.head).to(self.device_), ""

                    def train_batches(idx, generator):
                        return tensor_batches(feats, idx, self.batch_size, shuffle=True, generator=generator)

                    val_batches = None if val_idx is None else tensor_batches(feats, val_idx, self.batch_size)
                else:
                    self.precompute_time_s_ = 0.0
                    net, head = prepare(model, self.device_), adaptation.head

                    def train_batches(idx, generator):
                        return image_batches(items, train_transform, idx, self.batch_size, self.device_,
                                             num_workers=self.num_workers, shuffle=True, generator=generator)

                    val_batches = None if val_idx is None else image_batches(
                        items, eval_transform, val_idx, self.batch_size, self.device_, num_workers=self.num_workers
                    )
                phases = self._phases(adaptation, n_unfrozen, len(train_idx), precomputed)
                self._train(net, head, phases, train_batches, train_idx, val_batches, y_t, batch_transform, seed,
                            initial, model)
            finally:
                model.to("cpu", memory_format=torch.contiguous_format)
        self.training_path_ = "precomputed" if precomputed else "forward"
        model.requires_grad_(False)
        self.model_ = model.eval()
        self.adaptation_ = adaptation
        return self

    def _train(self, net, head, phases, train_batches, train_idx, val_batches, y, batch_transform, seed, initial,
               model) -> None:
        """The selection run (early stopping on the validation split), then the refit on all images."""
        common = dict(optimisation=self._optimisation(), device=self.device_, n_classes=len(self.classes_),
                      batch_transform=batch_transform, verbose=bool(self.verbose), desc=f"fine-tune {self.backbone}")
        self.history_ = []
        stopper = EarlyStopping() if val_batches is not None else None
        generator = torch.Generator().manual_seed(seed)
        n_epochs, _ = run_phases(net, head, phases, train_batches(train_idx, generator), y, history=self.history_,
                                 run="train" if stopper is None else "select", val=val_batches, stopper=stopper,
                                 **common)
        self.selected_epochs_ = n_epochs if stopper is None else stopper.best_epoch
        self.validation_score_ = math.nan if stopper is None else stopper.best_score
        run = "train" if stopper is None else "select"
        if stopper is not None and self.refit:
            model.load_state_dict(initial)
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            run_phases(net, head, phases, train_batches(np.arange(len(y)), generator), y, history=self.history_,
                       run="refit", max_epochs=self.selected_epochs_, **common)
            run = "refit"
        elif stopper is not None:
            stopper.restore(net)
        self.n_epochs_ = len(self.history_)
        self.best_epoch_ = self.selected_epochs_
        self.n_steps_ = sum(
            h["steps"] for h in self.history_ if h["run"] == run and h["epoch"] <= self.selected_epochs_
        )

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _logits(self, X) -> torch.Tensor:
        check_is_fitted(self, "model_")
        items = as_items(X)
        device = resolve_device(self.device)
        size = self._image_size(self.weights_)
        batches = image_batches(items, self.weights_.preprocessing.with_size(size), range(len(items)),
                                self.batch_size, device, num_workers=self.num_workers)
        model = self.model_ if device.type == "cpu" else prepare(copy.deepcopy(self.model_), device)
        idx, out = self._forward(model, batches, device)
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
        w = self.weights_
        payload = {
            "format": _FORMAT,
            "params": _params_for_saving(self.get_params(deep=False)),
            "classes": self.classes_.tolist(),
            "state_dict": self.model_.state_dict(),
            "weights": {
                "kind": w.kind, "identity": w.identity, "pretrained": w.pretrained,
                "preprocessing": asdict(w.preprocessing), "path": None if w.path is None else str(w.path),
                "seed": w.seed,
            },
            "history": self.history_,
            "n_epochs": self.n_epochs_,
            "best_epoch": self.best_epoch_,
            "selected_epochs": self.selected_epochs_,
            "n_steps": self.n_steps_,
            "validation_score": self.validation_score_,
            "validation_indices": None if self.validation_indices_ is None else self.validation_indices_.tolist(),
            "training_path": self.training_path_,
        }
        torch.save(payload, path)

    @classmethod
    def load(cls, path: str | Path) -> "FineTunedCNN":
        """Rebuild a fitted :class:`FineTunedCNN` written by :meth:`save` (no download, ``weights_only`` load).

        Files of format 1 (before ``min_steps``/``refit``) load too; their ``n_steps_`` is -1 (not recorded).
        """
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") not in _READABLE_FORMATS:
            raise ValueError(f"{path}: not a FineTunedCNN file of format {', '.join(map(str, _READABLE_FORMATS))}")
        est = cls(**payload["params"])
        est._validate_params()
        spec = est._spec()
        w = payload["weights"]
        est.weights_ = ResolvedWeights(
            kind=w["kind"], identity=w["identity"], pretrained=w["pretrained"],
            preprocessing=Preprocessing(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in w["preprocessing"].items()}
            ),
            enum=spec.weights_enum[w["identity"].split(".")[-1]] if w["kind"] == "torchvision" else None,
            path=None if w["path"] is None else Path(w["path"]), seed=w["seed"],
        )
        est.classes_ = np.asarray(payload["classes"])
        with torch.device("meta"):
            model = spec.builder(weights=None)
            est.adaptation_ = build_adapted(spec, model, est.cut, len(est.classes_))
        model.load_state_dict(payload["state_dict"], assign=True)
        model.requires_grad_(False)
        est.model_ = model.eval()
        est.spec_ = spec
        est.history_ = payload["history"]
        est.n_epochs_ = payload["n_epochs"]
        est.best_epoch_ = payload["best_epoch"]
        est.selected_epochs_ = payload.get("selected_epochs", est.best_epoch_)
        est.n_steps_ = payload.get("n_steps", -1)
        est.validation_score_ = payload.get("validation_score", math.nan)
        indices = payload.get("validation_indices")
        est.validation_indices_ = None if indices is None else np.asarray(indices, dtype=np.int64)
        est.training_path_ = payload["training_path"]
        est.precompute_time_s_ = 0.0
        return est
