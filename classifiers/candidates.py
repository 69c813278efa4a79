"""The candidates of one fine-tuning fit — the linear probe and a run per learning rate — trained on the inner
training split, the choice on the inner validation split, and the refit on every training image."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from classifiers.inputs import TrainingInputs, batches_for
from classifiers.probe import Probe, fit_probe
from classifiers.training import EarlyStopping, History, ProgressBar, Trainer, epochs_per_phase, evaluate
from classifiers.batches import tensor_batches

__all__ = ["Candidates"]


class Candidates:
    """The training of one fit: the candidates on the inner training split, the choice, the refit."""

    def __init__(self, est, inputs: TrainingInputs, head: str, items, transforms, batch_transform,
                 y: torch.Tensor, seed: int):
        self.est, self.inputs, self.head, self.items, self.y, self.seed = est, inputs, head, items, y, seed
        self.train_transform, self.eval_transform = transforms
        self.batch_transform = batch_transform
        est.history_, est.candidates_ = [], []

    def _probe(self, head_in: torch.Tensor | None, idx: np.ndarray) -> Probe | None:
        if head_in is None:
            return None
        return fit_probe(head_in[idx], self.y.numpy()[idx], len(self.est.classes_), self.seed)

    def _start(self, model: nn.Module, initial: dict, probe: Probe | None) -> None:
        """Back to the initial weights, with the probe in the head."""
        model.load_state_dict(initial)
        if probe is not None:
            probe.load_into(model.get_submodule(self.head))

    def _train(self, phases, idx, lr: float, run: str, val_idx=None, max_epochs=None) -> EarlyStopping:
        """One training run from the current weights; returns its early-stopping record."""
        est = self.est
        trainer = Trainer(self.inputs.net, self.inputs.head, est.optimisation_for(lr), est.device_,
                          len(est.classes_), self.batch_transform, est.bn)
        stopper, history = EarlyStopping(), History()
        callbacks = [history, ProgressBar(f"fine-tune {est.backbone}", bool(est.verbose))]
        val = None if val_idx is None else batches_for(est, self.inputs, self.items, self.eval_transform, val_idx)
        if val is not None:
            callbacks.append(stopper)
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        trainer.run(phases, batches_for(est, self.inputs, self.items, self.train_transform, idx, generator), self.y,
                    val=val, callbacks=callbacks, max_epochs=max_epochs, run=run)
        est.history_ += [{**row, "candidate_lr": lr} for row in history.rows]
        return stopper

    def _probe_scores(self, probe: Probe, head_in: torch.Tensor, val_idx: np.ndarray) -> tuple[float, float]:
        head = nn.Linear(probe.weight.shape[1], probe.weight.shape[0])
        probe.load_into(head)
        return evaluate(head, tensor_batches(head_in, val_idx, self.est.batch_size), self.y, torch.device("cpu"))

    def choose_and_train(self, model, initial, phases, head_in, train_idx, val_idx) -> None:
        """Train the candidates, keep the best on the inner validation split, refit; or train once without it."""
        est, everything = self.est, np.arange(len(self.y))
        if val_idx is None:
            probe = self._probe(head_in, everything)
            self._start(model, initial, probe)
            lr = est.learning_rate(probe is not None)
            self._train(phases, everything, lr, "train")
            self._finish("finetune", lr, sum(p.epochs for p in phases), math.nan, probe, "train")
            return
        probe = self._probe(head_in, train_idx)
        scored = []
        if probe is not None:
            loss, acc = self._probe_scores(probe, head_in, val_idx)
            scored.append({"candidate": "probe", "lr": math.nan, "epochs": 0, "val_loss": loss, "val_accuracy": acc})
        stoppers = {}
        for lr in est.lr_candidates or [est.learning_rate(probe is not None)]:
            self._start(model, initial, probe)
            stoppers[lr] = stopper = self._train(phases, train_idx, lr, "select", val_idx)
            scored.append({"candidate": "finetune", "lr": lr, "epochs": stopper.best_epoch,
                           "val_loss": stopper.best_loss, "val_accuracy": stopper.best_score})
        best = min(range(len(scored)), key=lambda i: (scored[i]["val_loss"], i))
        chosen = scored[best]
        est.candidates_ = [{**c, "chosen": i == best} for i, c in enumerate(scored)]
        kept = "select"
        if est.refit:
            probe = self._probe(head_in, everything)
            self._start(model, initial, probe)
            if chosen["candidate"] == "finetune":
                selected = [h for h in est.history_ if h["run"] == "select" and h["candidate_lr"] == chosen["lr"]]
                budget = epochs_per_phase(phases, selected, chosen["epochs"])
                self._train(phases, everything, chosen["lr"], "refit", max_epochs=budget)
                kept = "refit"
        elif chosen["candidate"] == "probe":
            self._start(model, initial, probe)
        else:
            stoppers[chosen["lr"]].restore(self.inputs.net)
        self._finish(chosen["candidate"], chosen["lr"], chosen["epochs"], chosen["val_accuracy"], probe, kept)

    def _finish(self, candidate: str, lr: float, epochs: int, score: float, probe: Probe | None, kept: str) -> None:
        """The fitted attributes that say what was kept."""
        est = self.est
        est.n_epochs_ = len(est.history_)
        est.selected_epochs_ = est.best_epoch_ = int(min(epochs, est.n_epochs_))
        est.n_steps_ = sum(h["steps"] for h in est.history_
                           if h["run"] == kept and h["candidate_lr"] == lr and h["epoch"] <= epochs)
        est.validation_score_ = float(score)
        est.chosen_ = {"candidate": candidate, "lr": float(lr), "epochs": est.selected_epochs_,
                       "probe_C": math.nan if probe is None else probe.C}
