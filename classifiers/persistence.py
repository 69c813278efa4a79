"""Saving and loading a fitted :class:`classifiers.finetune.FineTunedCNN` with torch's own format.

The file holds the adapted network's state dict, the estimator's parameters, what its weights resolved to and its
fitted attributes, all as plain types, so it loads with ``torch.load(weights_only=True)`` and without any download.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torchvision.models import WeightsEnum

from classifiers.surgery import build_adapted
from featurize.preprocessing import Preprocessing
from featurize.weights import ResolvedWeights

__all__ = ["FORMAT", "load_estimator", "save_estimator"]

FORMAT = 3
"""Format written; 1 (before ``min_steps``/``refit``) and 2 (before the probe, ``bn`` and ``lr_candidates``) load
too."""
_READABLE = (1, 2, 3)
_BEFORE_RECIPE = {"bn": "train", "head_init": "random", "lr_candidates": None, "augment_views": 0}
"""What formats 1 and 2 trained with, for the parameters they predate."""
_FITTED = ("history", "n_epochs", "best_epoch", "selected_epochs", "n_steps", "validation_score", "training_path",
           "candidates", "chosen")


def _plain(params: dict) -> dict:
    out = {}
    for key, value in params.items():
        if isinstance(value, WeightsEnum):
            value = value.name
        elif isinstance(value, (Path, torch.device)):
            value = str(value)
        out[key] = value
    return out


def save_estimator(est, path: str | Path) -> None:
    """Write a fitted estimator to ``path``."""
    w = est.weights_
    payload = {
        "format": FORMAT,
        "params": _plain(est.get_params(deep=False)),
        "classes": est.classes_.tolist(),
        "state_dict": est.model_.state_dict(),
        "weights": {"kind": w.kind, "identity": w.identity, "pretrained": w.pretrained,
                    "preprocessing": asdict(w.preprocessing), "path": None if w.path is None else str(w.path),
                    "seed": w.seed},
        "validation_indices": None if est.validation_indices_ is None else est.validation_indices_.tolist(),
        **{name: getattr(est, f"{name}_") for name in _FITTED},
    }
    torch.save(payload, path)


def load_estimator(cls, path: str | Path):
    """Rebuild a fitted estimator of class ``cls`` written by :func:`save_estimator` (formats 1–3; format 1 has no
    ``n_steps_``: -1).

    Raises
    ------
    ValueError
        When the file is not such an estimator file.
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") not in _READABLE:
        raise ValueError(f"{path}: not a {cls.__name__} file of format {', '.join(map(str, _READABLE))}")
    params = payload["params"]
    if payload["format"] < 3:
        params = {**_BEFORE_RECIPE, **params}
    est = cls(**params)
    est._validate_params()
    spec = est._spec()
    w = payload["weights"]
    est.weights_ = ResolvedWeights(
        kind=w["kind"], identity=w["identity"], pretrained=w["pretrained"],
        preprocessing=Preprocessing(**{k: tuple(v) if isinstance(v, list) else v
                                       for k, v in w["preprocessing"].items()}),
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
    est.candidates_ = payload.get("candidates", [])
    est.chosen_ = payload.get("chosen", {})
    est.precompute_time_s_ = 0.0
    return est
