"""The fine-tuning loop: batching, optimiser and schedule tables, train/evaluation steps, phases, callbacks.

A fit is a list of :class:`Phase` (e.g. a frozen head-only phase, then the strategy's stages unfrozen) run by a
:class:`Trainer`.  What happens around the epochs is pluggable, as in skorch: :class:`History` collects one row per
epoch, :class:`EarlyStopping` watches the validation loss, keeps a copy of the best weights and ends a phase when its
patience ran out, :class:`ProgressBar` shows a tqdm bar (``verbose``) and logs every epoch at DEBUG level on the
``classifiers.training`` logger.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from classifiers.batches import Batches
from featurize.registry import Registry
from classifiers.surgery import freeze_except, parameters_at, set_train_mode
from featurize.devices import autocast, to_device

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "Callback",
    "EarlyStopping",
    "History",
    "Optimisation",
    "Phase",
    "ProgressBar",
    "Trainer",
    "epochs_per_phase",
    "evaluate",
    "loss",
]

log = logging.getLogger(__name__)


OPTIMIZERS: Registry[Callable[[list[dict], float], torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register("adamw", lambda groups, weight_decay: torch.optim.AdamW(groups, weight_decay=weight_decay))
OPTIMIZERS.register("sgd", lambda groups, weight_decay: torch.optim.SGD(groups, momentum=0.9,
                                                                        weight_decay=weight_decay))
"""Optimiser name -> ``factory(param_groups, weight_decay)``; SGD uses momentum 0.9."""


SCHEDULES: Registry[Callable[[torch.optim.Optimizer, int, int | None], object | None]] = Registry("schedule")
SCHEDULES.register("cosine", lambda opt, n_epochs, k: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_epochs))
SCHEDULES.register("step", lambda opt, n_epochs, k: torch.optim.lr_scheduler.StepLR(
    opt, step_size=k or max(1, n_epochs // 3), gamma=0.1))
SCHEDULES.register("constant", lambda opt, n_epochs, k: None)
"""Per-epoch schedule name -> ``factory(optimizer, phase_epochs, k)``: cosine to 0, ×0.1 every third of the phase
(``step``) or every ``k`` epochs (``step:k``, the PyTorch tutorial's StepLR(7, 0.1) is ``step:7``), or constant."""
_WITH_K = re.compile(r"^(?P<name>[a-z]+):(?P<k>[1-9][0-9]*)$")


def parse_schedule(schedule: str) -> tuple[str, int | None]:
    """``(name, k)`` of a schedule of :data:`SCHEDULES` (``k`` only for ``step:k``).

    Raises
    ------
    ValueError
        For anything else; the message lists the valid schedules.
    """
    if isinstance(schedule, str):
        if schedule in SCHEDULES:
            return schedule, None
        match = _WITH_K.match(schedule)
        if match and match["name"] == "step":
            return "step", int(match["k"])
    raise ValueError(f"Unknown schedule {schedule!r}; valid schedules: {', '.join(SCHEDULES)}, step:k (k ≥ 1)")


def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy in float32 (``target``: class indices or soft MixUp targets)."""
    return F.cross_entropy(logits.float(), target)


# ---------------------------------------------------------------------------------------------- steps
@dataclass(frozen=True)
class Optimisation:
    """How the trainable parameters move: optimiser name, learning rates, weight decay, schedule name, and the
    per-stage decay of the backbone's learning rate (stage k below the deepest trains at ``lr_backbone·decay^k``)."""

    optimizer: str
    lr: float
    lr_backbone: float
    weight_decay: float
    schedule: str
    stage_decay: float = 1.0

    def optimizer_for(self, head_params: list, backbone_params: list,
                      depths: Sequence[int] | None = None) -> torch.optim.Optimizer:
        """Optimiser with a group for the head (``lr``), then one per depth of the unfrozen backbone stages, deepest
        first (``depths[i]``: stages between ``backbone_params[i]``'s stage and the deepest; default all 0)."""
        groups = [{"params": head_params, "lr": self.lr}]
        depths = [0] * len(backbone_params) if depths is None else list(depths)
        for depth in sorted(set(depths)):
            params = [p for p, d in zip(backbone_params, depths) if d == depth]
            groups.append({"params": params, "lr": self.lr_backbone * self.stage_decay ** depth})
        return OPTIMIZERS[self.optimizer](groups, self.weight_decay)


@dataclass(frozen=True)
class Phase:
    """A stretch of training: its name, the module paths trained besides the head, its epochs and patience, and
    each path's stage depth below the deepest unfrozen stage (for per-stage learning rates; default all 0)."""

    name: str
    trainable: tuple[str, ...]
    epochs: int
    patience: int | None = None
    depths: tuple[int, ...] = ()


@torch.no_grad()
def evaluate(net: nn.Module, batches: Batches, y: torch.Tensor, device: torch.device) -> tuple[float, float]:
    """Mean loss and accuracy of ``net`` (eval mode) over ``batches``."""
    net.eval()
    total, correct, n = 0.0, 0, 0
    for indices, x in batches():
        target = y[indices].to(device)
        with autocast(device):
            logits = net(to_device(x, device))
        total += loss(logits, target).item() * len(target)
        correct += int((logits.argmax(1) == target).sum())
        n += len(target)
    return total / n, correct / n


# ---------------------------------------------------------------------------------------------- callbacks
class Callback:
    """A pluggable piece of a training run (skorch-style): override the hooks it needs.

    :meth:`on_epoch_end` returns True to end the current phase early.
    """

    def on_run_begin(self, run: str, total_epochs: int) -> None:
        """Before the first epoch of a run (``"train"``, ``"select"``, ``"refit"``) of ``total_epochs`` epochs."""

    def on_phase_begin(self, phase: Phase) -> None:
        """Before the first epoch of a phase."""

    def on_epoch_end(self, row: dict, net: nn.Module) -> bool:
        """After every epoch, with its history row; True stops the phase."""
        return False

    def on_run_end(self) -> None:
        """After the last epoch of a run."""


class History(Callback):
    """Collects one row per epoch: ``run``, ``epoch``, ``phase``, ``train_loss``, ``train_accuracy``, ``val_loss``,
    ``val_accuracy`` (NaN without validation), ``lr``, ``lr_backbone`` (NaN when the backbone is frozen),
    ``steps``, ``time_s``."""

    def __init__(self, rows: list[dict] | None = None) -> None:
        self.rows = [] if rows is None else rows

    def on_epoch_end(self, row: dict, net: nn.Module) -> bool:
        self.rows.append(row)
        return False


class ProgressBar(Callback):
    """A tqdm bar over the epochs of each run (shown when ``verbose``); every epoch is logged at DEBUG level."""

    def __init__(self, desc: str, verbose: bool) -> None:
        self.desc, self.verbose = desc, verbose
        self._bar: tqdm | None = None

    def on_run_begin(self, run: str, total_epochs: int) -> None:
        self._bar = tqdm(total=total_epochs, desc=f"{self.desc} ({run})", disable=not self.verbose)

    def on_epoch_end(self, row: dict, net: nn.Module) -> bool:
        log.debug("%s epoch %d (%s): %s", row["run"], row["epoch"], row["phase"], row)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_acc=f"{row['val_accuracy']:.3f}")
            self._bar.update()
        return False

    def on_run_end(self) -> None:
        if self._bar is not None:
            self._bar.close()


class EarlyStopping(Callback):
    """Track the best validation loss, keep a copy of the best weights, say when patience ran out.

    Patience counts per phase (reset by :meth:`start_phase`, which :meth:`on_phase_begin` calls with the phase's
    patience); :meth:`update` records an epoch; :meth:`restore` loads the best weights; read :attr:`best_epoch`,
    :attr:`best_loss`, :attr:`best_score`.
    """

    def __init__(self) -> None:
        self._best_loss = math.inf
        self._best_score = math.nan
        self._best_epoch = 0
        self._best_state: dict[str, torch.Tensor] | None = None
        self._wait = 0
        self._patience: int | None = None

    @property
    def best_epoch(self) -> int:
        """1-based epoch of the lowest validation loss so far (0 before any epoch)."""
        return self._best_epoch

    @property
    def best_loss(self) -> float:
        """Lowest validation loss so far."""
        return self._best_loss

    @property
    def best_score(self) -> float:
        """Validation accuracy at :attr:`best_epoch` (NaN before any epoch)."""
        return self._best_score

    def start_phase(self, patience: int | None) -> None:
        """Reset the patience counter; ``patience=None`` never stops."""
        self._patience, self._wait = patience, 0

    def update(self, epoch: int, val_loss: float, val_score: float, net: nn.Module) -> bool:
        """Record an epoch; True when the phase should stop."""
        if val_loss < self._best_loss:
            self._best_loss, self._best_score, self._best_epoch, self._wait = val_loss, val_score, epoch, 0
            self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
        else:
            self._wait += 1
        return self._patience is not None and self._wait >= self._patience

    def restore(self, net: nn.Module) -> None:
        """Load the best weights into ``net`` (no-op before any epoch)."""
        if self._best_state is not None:
            net.load_state_dict(self._best_state)

    def on_phase_begin(self, phase: Phase) -> None:
        self.start_phase(phase.patience)

    def on_epoch_end(self, row: dict, net: nn.Module) -> bool:
        return self.update(row["epoch"], row["val_loss"], row["val_accuracy"], net)


# ---------------------------------------------------------------------------------------------- the loop
def _phase_caps(phases: Sequence[Phase], max_epochs: int | Sequence[int] | None) -> list[int]:
    """Epochs each phase may run: all of them, the first ``max_epochs`` in total, or ``max_epochs[i]`` for phase i."""
    epochs = [p.epochs for p in phases]
    if max_epochs is None:
        return epochs
    if not isinstance(max_epochs, int):
        return [min(e, int(m)) for e, m in zip(epochs, max_epochs)]
    caps, left = [], max_epochs
    for e in epochs:
        caps.append(min(e, max(left, 0)))
        left -= e
    return caps


def epochs_per_phase(phases: Sequence[Phase], rows: Sequence[dict], up_to: int) -> list[int]:
    """How many epochs of each phase a run's history ``rows`` holds up to (and including) epoch ``up_to``."""
    return [sum(1 for r in rows if r["phase"] == phase.name and r["epoch"] <= up_to) for phase in phases]



@dataclass
class Trainer:
    """Trains a network phase after phase; callbacks record, show and stop.

    Attributes
    ----------
    net : nn.Module
        The network (or the bare head on precomputed activations, then ``head=""``).
    head : str
        Module path of the head, always trainable.
    optimisation : Optimisation
    device : torch.device
    n_classes : int
    batch_transform : callable or None
        MixUp-style ``(images, one_hot) -> (images, soft targets)``.
    bn : {"frozen", "train"}
        ``"frozen"``: every BatchNorm layer stays in eval mode (ImageNet running statistics kept, affine parameters of
        the trainable stages still learn); ``"train"``: the trainable stages' BatchNorm layers update their
        statistics from each batch.
    """

    net: nn.Module
    head: str
    optimisation: Optimisation
    device: torch.device
    n_classes: int
    batch_transform: Callable | None = None
    bn: str = "frozen"

    def _optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        freeze_except(self.net, [self.head, *phase.trainable])
        head_params = list(self.net.get_submodule(self.head).parameters())
        depth_of = dict(zip(phase.trainable, phase.depths or [0] * len(phase.trainable)))
        pairs = [(p, depth_of[path]) for path in phase.trainable for p in parameters_at(self.net, path)]
        return self.optimisation.optimizer_for(head_params, [p for p, _ in pairs], [d for _, d in pairs])

    def run(self, phases: Sequence[Phase], train: Batches, y: torch.Tensor, *, val: Batches | None = None,
            callbacks: Sequence[Callback] = (), max_epochs: int | Sequence[int] | None = None,
            run: str = "train") -> int:
        """Train through ``phases`` and return the number of epochs run.

        ``max_epochs`` caps the epochs: in total (an int), or phase by phase (one int per phase, e.g. the epochs each
        phase of a selection run had reached at its best epoch); the phases keep their schedule length either way.

        Raises
        ------
        FloatingPointError
            When the loss becomes NaN/inf (the message names the epoch and suggests a lower learning rate).
        """
        caps = _phase_caps(phases, max_epochs)
        total = sum(caps)
        for callback in callbacks:
            callback.on_run_begin(run, total)
        epoch = 0
        for phase, cap in zip(phases, caps):
            if cap == 0:
                continue
            opt = self._optimizer(phase)
            name, k = parse_schedule(self.optimisation.schedule)
            sched = SCHEDULES[name](opt, phase.epochs, k)
            for callback in callbacks:
                callback.on_phase_begin(phase)
            for _ in range(cap):
                epoch += 1
                row = self._epoch(opt, phase, train, y, val, epoch)
                row["run"] = run
                if sched is not None:
                    sched.step()
                if any([callback.on_epoch_end(row, self.net) for callback in callbacks]):
                    log.debug("phase %s stopped at epoch %d", phase.name, epoch)
                    break
        for callback in callbacks:
            callback.on_run_end()
        return epoch

    def _epoch(self, opt: torch.optim.Optimizer, phase: Phase, train: Batches, y: torch.Tensor,
               val: Batches | None, epoch: int) -> dict:
        start = time.perf_counter()
        lrs = [g["lr"] for g in opt.param_groups]
        set_train_mode(self.net, [self.head, *phase.trainable], bn_frozen=self.bn == "frozen")
        train_loss, train_acc, n_steps = self._train_epoch(opt, train, y, epoch)
        val_loss, val_acc = evaluate(self.net, val, y, self.device) if val is not None else (math.nan, math.nan)
        return {"run": "", "epoch": epoch, "phase": phase.name, "train_loss": train_loss, "train_accuracy": train_acc,
                "val_loss": val_loss, "val_accuracy": val_acc, "lr": lrs[0],
                "lr_backbone": lrs[1] if len(lrs) > 1 else math.nan, "steps": n_steps,
                "time_s": time.perf_counter() - start}

    def _train_epoch(self, opt: torch.optim.Optimizer, batches: Batches, y: torch.Tensor,
                     epoch: int) -> tuple[float, float, int]:
        """One pass over ``batches``: mean loss, accuracy (on the hard labels) and optimizer steps taken.

        Raises
        ------
        FloatingPointError
            When the loss is NaN/inf; the message names the epoch and batch and suggests a lower learning rate.
        """
        total, correct, n, steps = 0.0, 0, 0, 0
        for step, (indices, x) in enumerate(batches(), 1):
            x, hard = to_device(x, self.device), y[indices].to(self.device)
            target = hard
            if self.batch_transform is not None:
                x, target = self.batch_transform(x, F.one_hot(hard, self.n_classes).float())
            with autocast(self.device):
                logits = self.net(x)
            value = loss(logits, target)
            if not torch.isfinite(value):
                lr = self.optimisation.lr
                raise FloatingPointError(
                    f"Training diverged: the loss is {value.item()} at epoch {epoch} (batch {step}). "
                    f"Lower the learning rate (lr={lr:g}; try lr={lr / 10:g})."
                )
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            steps += 1
            total += value.item() * len(hard)
            correct += int((logits.argmax(1) == hard).sum())
            n += len(hard)
        return total / max(n, 1), correct / max(n, 1), steps
