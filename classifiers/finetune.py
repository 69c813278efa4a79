"""Fine-tune a torchvision ResNet/VGG end to end, as a scikit-learn classifier.

Stages
------
Fine-tuning strategies unfreeze the deepest *stages* of the (possibly cut) network:

- ResNet: stage 0 is the stem (``conv1`` + ``bn1``), stages 1–4 are ``layer1`` … ``layer4``.
- VGG: stages 1–5 are the convolution blocks (``features`` modules up to and including each max pool), stage 6 is
  the fully-connected block ``fc6``/``fc7`` (``classifier.0`` … ``classifier.5``, dropout included).

Stages past the cut point are removed, a stage the cut goes through is kept up to the cut.  The new head (a
``Linear`` layer) is always trainable:

- ``strategy="head"``: only the head (a linear probe trained end to end with the backbone frozen);
- ``"last_block"`` = ``"last:1"``: the head and the deepest stage; ``"last:k"``: the head and the k deepest stages;
- ``"full"``: everything (with ``weights=None`` this is the from-scratch baseline).

Cut points
----------
``cut=None`` replaces the network's own classifier (ResNet ``fc``, VGG ``fc8`` = ``classifier.6``).  A ResNet cut at
``conv1``/``layerN`` drops the later stages and puts global average pooling + a new ``Linear`` there (``avgpool`` is
the same as ``None``).  A VGG cut at a convolution or pool drops the later ``features`` and the FC block and puts
global average pooling + ``Linear``; a cut at ``fc6``/``fc7`` keeps the network up to that layer (and its dropout)
and puts the ``Linear`` after it.  Cutting at the classifier itself (``fc``, ``fc8``) is an error.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, column_or_1d
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models import WeightsEnum
from tqdm.auto import tqdm

from classifiers.augment import AUGMENTATIONS, get_augmentation
from featurize.backbones import BackboneSpec, get_backbone_spec, set_module
from featurize.devices import autocast, prepare, resolve_device, to_device
from featurize.images import ImageDataset, as_items, collate_skipping
from featurize.weights import Preprocessing, ResolvedWeights, load_model, resolve_weights

__all__ = ["FineTunedCNN", "STRATEGIES", "SCHEDULES", "OPTIMIZERS"]

log = logging.getLogger(__name__)

STRATEGIES = ("head", "last_block", "last:k", "full")
SCHEDULES = ("cosine", "step", "constant")
OPTIMIZERS = ("adamw", "sgd")
_FORMAT = 1


@dataclass(frozen=True)
class _Adaptation:
    """Where the new head sits and how the kept network splits into stages."""

    head: str
    stages: tuple[tuple[str, ...], ...]
    feature_cut: str


def _adapt_resnet(model: nn.Module, spec: BackboneSpec, cut: str | None, n_classes: int) -> _Adaptation:
    name = "avgpool" if cut is None else spec.cut(cut).name
    depth = 4 if name == "avgpool" else 0 if name == "conv1" else int(name.removeprefix("layer"))
    for k in range(depth + 1, 5):
        set_module(model, f"layer{k}", nn.Identity())
    if depth == 0:
        model.maxpool = nn.Identity()
    model.fc = nn.Linear(spec.cut(name).channels, n_classes)
    stages = (("conv1", "bn1"), *((f"layer{k}",) for k in range(1, depth + 1)))
    return _Adaptation(head="fc", stages=stages, feature_cut=name)


def _adapt_vgg(model: nn.Module, spec: BackboneSpec, cut: str | None, n_classes: int) -> _Adaptation:
    point = spec.cut(cut or "fc7")
    if point.module.startswith("features."):
        end = int(point.module.split(".")[1])
        model.features = model.features[: end + 1]
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Sequential(nn.Linear(point.channels, n_classes))
        head_index = 0
    else:
        head_index = int(point.module.split(".")[1]) + 2
        model.classifier = nn.Sequential(*list(model.classifier)[:head_index], nn.Linear(point.channels, n_classes))
    stages, block = [], []
    for idx, layer in enumerate(model.features):
        block.append(f"features.{idx}")
        if isinstance(layer, nn.MaxPool2d):
            stages.append(tuple(block))
            block = []
    if block:
        stages.append(tuple(block))
    if head_index:
        stages.append(tuple(f"classifier.{i}" for i in range(head_index)))
    return _Adaptation(head=f"classifier.{head_index}", stages=tuple(stages), feature_cut=point.name)


def _check_cut(spec: BackboneSpec, cut: str | None) -> None:
    if cut is None:
        return
    valid = [c for c in spec.cut_names if spec.cut(c).module != spec.classifier]
    if not isinstance(cut, str) or cut not in valid:
        raise ValueError(
            f"cut={cut!r} is not a cut point of {spec.name} where a new head can go; valid: None (replace the "
            f"network's classifier), {', '.join(valid)}"
        )


def build_adapted(spec: BackboneSpec, model: nn.Module, cut: str | None, n_classes: int) -> _Adaptation:
    """Cut ``model`` in place and give it a new ``Linear`` head for ``n_classes`` classes (see module docstring)."""
    _check_cut(spec, cut)
    adapt = _adapt_resnet if spec.family == "resnet" else _adapt_vgg
    return adapt(model, spec, cut, n_classes)


def _parse_strategy(strategy: object, n_stages: int | None) -> int:
    """Number of stages the strategy unfreezes (``n_stages=None``: check the syntax only)."""
    if strategy == "head":
        return 0
    if strategy == "full":
        return n_stages or 0
    if strategy == "last_block":
        return 1
    if isinstance(strategy, str) and strategy.startswith("last:"):
        k = strategy.removeprefix("last:")
        if k.isdigit() and 1 <= int(k) <= (n_stages or int(k)):
            return int(k)
        raise ValueError(
            f"strategy={strategy!r}: k must be an integer from 1 to the number of stages of the network"
            + (f" ({n_stages})" if n_stages else "")
        )
    raise ValueError(f"Unknown strategy={strategy!r}; valid: 'head', 'last_block', 'last:k' (k ≥ 1), 'full'")


def _set_trainable(model: nn.Module, paths: list[str]) -> list[nn.Parameter]:
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for path in paths:
        for p in model.get_submodule(path).parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


def _set_mode(model: nn.Module, trainable: list[str]) -> None:
    """Trainable modules in train mode, everything else (frozen BatchNorm, frozen dropout) in eval mode."""
    model.eval()
    for path in trainable:
        model.get_submodule(path).train()


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), target)


class _EarlyStopping:
    """Track the best validation loss, keep a copy of the best weights, say when patience ran out."""

    def __init__(self, patience: int | None):
        self.patience = patience
        self.best_loss = math.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.wait = 0

    def step(self, epoch: int, val_loss: float, net: nn.Module) -> bool:
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.wait = val_loss, epoch, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
        else:
            self.wait += 1
        return self.patience is not None and self.wait >= self.patience

    def restore(self, net: nn.Module) -> None:
        if self.best_state is not None:
            net.load_state_dict(self.best_state)


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
    """Adapt a torchvision ResNet/VGG to a classification task by fine-tuning (see the module docstring).

    Parameters
    ----------
    backbone : str
        A :func:`featurize.backbones.list_backbones` name.
    weights : str, WeightsEnum, path or None
        As :func:`featurize.weights.resolve_weights`; ``None`` = random init (with ``strategy="full"``: training
        from scratch).
    strategy : str
        ``"head"``, ``"last_block"``, ``"last:k"`` or ``"full"``: which stages train (module docstring).
    cut : str or None
        Cut point where the new head goes; ``None`` replaces the network's own classifier.
    augment : str
        A :data:`classifiers.augment.AUGMENTATIONS` policy (``"none"``, ``"flip_crop"``, ``"strong"``, ``"mixup"``,
        ``"flip_crop+mixup"``, ``"strong+mixup"``).
    epochs : int
        Epochs with the strategy's trainable stages (after ``freeze_epochs``).
    freeze_epochs : int
        Head-only epochs before unfreezing (fastai's ``fine_tune`` recipe uses 1); ignored for ``"head"``.
    lr : float
        Learning rate of the head (1e-3 suits AdamW; the PyTorch tutorial's SGD uses 1e-3 too).
    lr_backbone : float or None
        Learning rate of the unfrozen backbone stages; ``None`` = ``lr * lr_ratio``.
    lr_ratio : float
        Discriminative learning rate: backbone lr / head lr when ``lr_backbone`` is None (pretrained layers move
        less than the new head).
    optimizer : str
        ``"adamw"`` or ``"sgd"`` (momentum 0.9).
    weight_decay : float
        Weight decay of the trainable parameters (frozen ones are not in the optimiser at all).
    schedule : str
        Per-epoch learning-rate schedule of each phase: ``"cosine"`` (to 0), ``"step"`` (×0.1 every third of the
        phase) or ``"constant"``.
    batch_size : int
        Mini-batch size.
    validation_fraction : float or None
        Stratified inner validation split for early stopping and best-epoch restore; ``None`` trains on everything
        for all epochs and keeps the last weights.
    patience : int or None
        Epochs without a validation-loss improvement before stopping; ``None`` never stops early (the best epoch is
        still restored).
    image_size : "auto" or int
        Side of the network input; ``"auto"`` = the weights' preprocessing crop (224).
    precompute : bool
        With ``strategy="head"`` and ``augment="none"``, compute the frozen activations at the cut once and train
        the head on them (same result as the full forward, much faster); False re-runs the frozen network every epoch.
    cache : str, path or None
        Directory (or ``.h5`` file) where :class:`featurize.CNNFeaturizer` keeps those activations between fits;
        None keeps them in memory for this fit only.
    device : str
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda[:N]"``.  CUDA runs in bf16 autocast and channels_last.
    num_workers : int
        DataLoader workers decoding images.
    random_state : int or None
        Seed of the random init (``weights=None``), the new head, the validation split, shuffling and augmentation.
    verbose : bool
        Progress bar over epochs.

    Attributes
    ----------
    classes_ : ndarray
        Class labels.
    model_ : torch.nn.Module
        The adapted network (on CPU, eval mode).
    weights_ : ResolvedWeights
        What ``weights`` resolved to (``.pretrained``, ``.label``).
    history_ : list of dict
        Per epoch: ``epoch``, ``phase``, ``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy`` (NaN
        without validation), ``lr``, ``lr_backbone`` (NaN when the backbone is frozen), ``time_s``.
    n_epochs_ : int
        Epochs run.
    best_epoch_ : int
        Epoch (1-based) whose weights were kept.
    training_path_ : str
        ``"precomputed"`` (head trained on cached activations) or ``"forward"``.
    precompute_time_s_ : float
        Seconds spent computing the cached activations (0 for the forward path).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        weights: object = "DEFAULT",
        strategy: str = "head",
        cut: str | None = None,
        augment: str = "none",
        epochs: int = 10,
        freeze_epochs: int = 0,
        lr: float = 1e-3,
        lr_backbone: float | None = None,
        lr_ratio: float = 0.1,
        optimizer: str = "adamw",
        weight_decay: float = 1e-2,
        schedule: str = "cosine",
        batch_size: int = 32,
        validation_fraction: float | None = 0.1,
        patience: int | None = 5,
        image_size: str | int = "auto",
        precompute: bool = True,
        cache: str | Path | None = None,
        device: str = "auto",
        num_workers: int = 0,
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
        self.lr = lr
        self.lr_backbone = lr_backbone
        self.lr_ratio = lr_ratio
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
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
        return tags

    # ------------------------------------------------------------------ validation
    def _validate_params(self) -> BackboneSpec:
        spec = get_backbone_spec(self.backbone)
        _check_cut(spec, self.cut)
        _parse_strategy(self.strategy, None)
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"Unknown augment={self.augment!r}; valid policies: {', '.join(AUGMENTATIONS)}")
        for name, choices in (("schedule", SCHEDULES), ("optimizer", OPTIMIZERS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"Unknown {name}={getattr(self, name)!r}; valid: {', '.join(choices)}")
        for name, low in (("epochs", 1), ("freeze_epochs", 0), ("batch_size", 1), ("num_workers", 0)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer ≥ {low}; got {value!r}")
        for name in ("lr", "lr_ratio") + (("lr_backbone",) if self.lr_backbone is not None else ()):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a positive number; got {value!r}")
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be ≥ 0; got {self.weight_decay!r}")
        if self.validation_fraction is not None and not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1) or None; got {self.validation_fraction!r}")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(f"patience must be an integer ≥ 1 or None; got {self.patience!r}")
        size = self.image_size
        if size != "auto" and (not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 32):
            raise ValueError(f"image_size must be 'auto' or an integer ≥ 32; got {self.image_size!r}")
        return spec

    def _image_size(self, resolved: ResolvedWeights) -> int:
        return int(resolved.preprocessing.crop or 224) if self.image_size == "auto" else int(self.image_size)

    # ------------------------------------------------------------------ data
    def _loader(
        self, items, transform, indices, device: torch.device, shuffle: bool = False, generator=None
    ) -> DataLoader:
        drop_last = shuffle and len(indices) % self.batch_size == 1 and len(indices) > 1
        return DataLoader(
            ImageDataset(items, transform, indices),
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            drop_last=drop_last,
            num_workers=self.num_workers,
            collate_fn=collate_skipping,
            pin_memory=device.type == "cuda",
        )

    @staticmethod
    def _images(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for indices, images, errors in loader:
            if errors:
                raise ValueError(f"could not read {len(errors)} image(s), e.g. {errors[0][1]}")
            yield torch.as_tensor(indices), images

    def _forward(
        self, model: nn.Module, loader: DataLoader, device: torch.device
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run ``model`` over every batch of ``loader`` under autocast: the batches' indices and float CPU outputs."""
        idx, out = [], []
        for indices, images in self._images(loader):
            with autocast(device):
                out.append(model(to_device(images, device)).float().cpu())
            idx.append(indices)
        return idx, out

    @torch.no_grad()
    def _head_inputs(
        self, model: nn.Module, head: str, loader: DataLoader, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The activations entering the head (eval mode), by running ``model`` with its head replaced by Identity."""
        original = model.get_submodule(head)
        set_module(model, head, nn.Identity())
        model.eval()
        try:
            idx, out = self._forward(model, loader, device)
        finally:
            set_module(model, head, original)
        return torch.cat(idx), torch.cat(out)

    def _precompute(self, model, adaptation, items, X, eval_transform, seed) -> torch.Tensor:
        """Head inputs of every image, in input order (from the featurizer's cache when ``cache`` is set)."""
        featurizer = None
        if self.cache is not None:
            try:
                from featurize import CNNFeaturizer as featurizer
            except ImportError:
                log.info("featurize.CNNFeaturizer is not available; computing head inputs in memory")
        if featurizer is not None:
            fz = featurizer(
                backbone=self.backbone, layers=adaptation.feature_cut, pooling="avg", weights=self.weights,
                image_size=self.image_size, cache=self.cache, batch_size=self.batch_size, device=self.device,
                num_workers=self.num_workers, random_state=seed, verbose=self.verbose,
            )
            return torch.from_numpy(np.asarray(fz.fit_transform(X), dtype=np.float32))
        prepare(model, self.device_)
        loader = self._loader(items, eval_transform, range(len(items)), self.device_)
        idx, feats = self._head_inputs(model, adaptation.head, loader, self.device_)
        return feats[torch.argsort(idx)]

    # ------------------------------------------------------------------ training
    def _make_optimizer(self, head_params, backbone_params) -> torch.optim.Optimizer:
        groups = [{"params": head_params, "lr": self.lr}]
        if backbone_params:
            lr_backbone = self.lr_backbone if self.lr_backbone is not None else self.lr * self.lr_ratio
            groups.append({"params": backbone_params, "lr": lr_backbone})
        if self.optimizer == "sgd":
            return torch.optim.SGD(groups, momentum=0.9, weight_decay=self.weight_decay)
        return torch.optim.AdamW(groups, weight_decay=self.weight_decay)

    def _make_schedule(self, opt: torch.optim.Optimizer, n_epochs: int):
        if self.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_epochs)
        if self.schedule == "step":
            return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, n_epochs // 3), gamma=0.1)
        return None

    def _run_epoch(self, net, opt, batches, y, batch_transform, epoch) -> tuple[float, float]:
        total, correct, n = 0.0, 0, 0
        for step, (indices, x) in enumerate(batches(), 1):
            x, target = to_device(x, self.device_), y[indices].to(self.device_)
            hard = target
            if batch_transform is not None:
                x, target = batch_transform(x, F.one_hot(target, len(self.classes_)).float())
            with autocast(self.device_):
                logits = net(x)
            loss = _loss(logits, target)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"Training diverged: the loss is {loss.item()} at epoch {epoch} (batch {step}). "
                    f"Lower the learning rate (lr={self.lr:g}; try lr={self.lr / 10:g})."
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(hard)
            correct += int((logits.argmax(1) == hard).sum())
            n += len(hard)
        return total / max(n, 1), correct / max(n, 1)

    @torch.no_grad()
    def _evaluate(self, net, batches, y) -> tuple[float, float]:
        total, correct, n = 0.0, 0, 0
        for indices, x in batches():
            target = y[indices].to(self.device_)
            with autocast(self.device_):
                logits = net(to_device(x, self.device_))
            total += _loss(logits, target).item() * len(target)
            correct += int((logits.argmax(1) == target).sum())
            n += len(target)
        return total / n, correct / n

    def _train(self, net, phases, head_path, train_batches, val_batches, y, batch_transform) -> None:
        """Run the phases ``(name, trainable module paths, n_epochs)``; early stopping on the validation loss."""
        stopper = _EarlyStopping(self.patience) if val_batches is not None else None
        epoch = 0
        bar = tqdm(total=sum(n for _, _, n in phases), desc=f"fine-tune {self.backbone}", disable=not self.verbose)
        with bar:
            for phase, trainable, n_epochs in phases:
                _set_trainable(net, [head_path, *trainable])
                head_params = list(net.get_submodule(head_path).parameters())
                backbone_params = [p for path in trainable for p in net.get_submodule(path).parameters()]
                opt = self._make_optimizer(head_params, backbone_params)
                sched = self._make_schedule(opt, n_epochs)
                if stopper is not None:
                    stopper.wait = 0
                for done in range(1, n_epochs + 1):
                    epoch += 1
                    start = time.perf_counter()
                    lrs = [g["lr"] for g in opt.param_groups]
                    _set_mode(net, [head_path, *trainable])
                    train_loss, train_acc = self._run_epoch(net, opt, train_batches, y, batch_transform, epoch)
                    if sched is not None:
                        sched.step()
                    val_loss = val_acc = math.nan
                    if val_batches is not None:
                        net.eval()
                        val_loss, val_acc = self._evaluate(net, val_batches, y)
                    row = {
                        "epoch": epoch, "phase": phase, "train_loss": train_loss, "train_accuracy": train_acc,
                        "val_loss": val_loss, "val_accuracy": val_acc, "lr": lrs[0],
                        "lr_backbone": lrs[1] if len(lrs) > 1 else math.nan, "time_s": time.perf_counter() - start,
                    }
                    self.history_.append(row)
                    log.info("epoch %d (%s): %s", epoch, phase, row)
                    bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val_acc:.3f}")
                    bar.update()
                    if stopper is not None and stopper.step(epoch, val_loss, net):
                        log.info("early stopping of phase %s at epoch %d (best epoch %d)", phase, epoch,
                                 stopper.best_epoch)
                        bar.update(n_epochs - done)
                        break
        self.n_epochs_ = epoch
        if stopper is not None:
            stopper.restore(net)
            self.best_epoch_ = stopper.best_epoch
        else:
            self.best_epoch_ = epoch

    def fit(self, X, y) -> "FineTunedCNN":
        """Fine-tune on images ``X`` (paths, PIL images or a uint8 (N, H, W, 3) array) with labels ``y``.

        Raises
        ------
        ValueError
            For bad parameters, mismatched lengths, fewer than two classes or unreadable images.
        FloatingPointError
            When the loss becomes NaN/inf (the message names the epoch and suggests a lower learning rate).
        """
        spec = self._validate_params()
        items = as_items(X)
        y = column_or_1d(np.asarray(y), warn=True)
        if len(items) != len(y):
            raise ValueError(f"X has {len(items)} images but y has {len(y)} labels")
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y has a single class ({self.classes_[0]!r}); a classifier needs at least two")
        seed = (
            int(check_random_state(None).randint(2**31 - 1)) if self.random_state is None else int(self.random_state)
        )
        self.device_ = resolve_device(self.device)
        self.spec_ = spec
        self.weights_ = resolve_weights(spec, self.weights, random_state=seed)
        size = self._image_size(self.weights_)
        eval_transform = self.weights_.preprocessing.with_size(size)
        train_transform, batch_transform = get_augmentation(self.augment, self.weights_.preprocessing, size)
        train_idx, val_idx = self._split(y_enc, seed)

        devices = [self.device_.index or 0] if self.device_.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            model = load_model(spec, self.weights_)
            adaptation = build_adapted(spec, model, self.cut, len(self.classes_))
            n_unfrozen = _parse_strategy(self.strategy, len(adaptation.stages))
            trainable = [p for stage in adaptation.stages[len(adaptation.stages) - n_unfrozen :] for p in stage]
            phases = []
            if n_unfrozen and self.freeze_epochs:
                phases.append(("frozen", [], self.freeze_epochs))
            phases.append((str(self.strategy), trainable, self.epochs))
            self.history_ = []
            generator = torch.Generator().manual_seed(seed)
            y_t = torch.as_tensor(y_enc, dtype=torch.long)
            try:
                if n_unfrozen == 0 and self.augment == "none" and self.precompute:
                    self.training_path_ = "precomputed"
                    start = time.perf_counter()
                    feats = self._precompute(model, adaptation, items, X, eval_transform, seed)
                    self.precompute_time_s_ = time.perf_counter() - start
                    head = model.get_submodule(adaptation.head).to(self.device_)
                    train_batches = self._tensor_batches(feats, train_idx, True, generator)
                    val_batches = self._tensor_batches(feats, val_idx) if val_idx is not None else None
                    self._train(head, [("head", [], self.epochs)], "", train_batches, val_batches, y_t, None)
                else:
                    self.training_path_ = "forward"
                    self.precompute_time_s_ = 0.0
                    prepare(model, self.device_)
                    train_loader = self._loader(
                        items, train_transform, train_idx, self.device_, shuffle=True, generator=generator
                    )
                    val_batches = None
                    if val_idx is not None:
                        val_loader = self._loader(items, eval_transform, val_idx, self.device_)
                        val_batches = lambda: self._images(val_loader)  # noqa: E731
                    self._train(
                        model, phases, adaptation.head, lambda: self._images(train_loader), val_batches, y_t,
                        batch_transform,
                    )
            finally:
                model.to("cpu", memory_format=torch.contiguous_format)
        model.requires_grad_(False)
        self.model_ = model.eval()
        self.adaptation_ = adaptation
        return self

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

    def _tensor_batches(self, feats: torch.Tensor, indices, shuffle: bool = False, generator=None) -> Callable:
        indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        drop_last = shuffle and len(indices) % self.batch_size == 1 and len(indices) > 1

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            order = indices[torch.randperm(len(indices), generator=generator)] if shuffle else indices
            stop = len(order) - 1 if drop_last else len(order)
            for start in range(0, stop, self.batch_size):
                chunk = order[start : start + self.batch_size]
                yield chunk, feats[chunk]

        return batches

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _logits(self, X) -> torch.Tensor:
        check_is_fitted(self, "model_")
        items = as_items(X)
        device = resolve_device(self.device)
        size = self._image_size(self.weights_)
        loader = self._loader(items, self.weights_.preprocessing.with_size(size), range(len(items)), device)
        model = self.model_.to(device).eval()
        try:
            idx, out = self._forward(model, loader, device)
        finally:
            self.model_.to("cpu")
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
        """Write the adapted network (state dict), the parameters and ``classes_`` to ``path`` (torch format)."""
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
            "training_path": self.training_path_,
        }
        torch.save(payload, path)

    @classmethod
    def load(cls, path: str | Path) -> "FineTunedCNN":
        """Rebuild a fitted :class:`FineTunedCNN` written by :meth:`save` (no download, ``weights_only`` load)."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != _FORMAT:
            raise ValueError(f"{path}: not a FineTunedCNN file of format {_FORMAT}")
        est = cls(**payload["params"])
        spec = est._validate_params()
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
        for p in model.parameters():
            p.requires_grad_(False)
        est.model_ = model.eval()
        est.spec_ = spec
        est.history_ = payload["history"]
        est.n_epochs_ = payload["n_epochs"]
        est.best_epoch_ = payload["best_epoch"]
        est.training_path_ = payload["training_path"]
        est.precompute_time_s_ = 0.0
        return est
