"""From a comparison to a model you can use: refit the pre-selected configuration on every labelled image and save
it with its card (``python -m pipelines.compare ... --export DIR``).

Which configuration: by default the one with the highest training-side score among the configurations the report
pre-selected per family at the largest train size (frozen heads and raw pixels by their mean inner-CV accuracy,
fine-tuning by its inner-validation accuracy) — never by test accuracy; ``--export-config backbone/cut/method`` names
another.  The refit uses the comparison's settings and the seed of its first draw; a frozen-feature configuration is
saved as a scikit-learn ``Pipeline`` (``CNNFeaturizer`` + the tuned head) with joblib, a fine-tuned one with
:meth:`classifiers.finetune.FineTunedCNN.save` (torch's format).  ``model.json`` beside it is the card
(:mod:`pipelines.exported` reads it back and checks it).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from classifiers.heads import pixels_baseline
from featurize import CNNFeaturizer
from featurize.backbones import get_backbone_spec, weights_file
from featurize.environment import PACKAGES, package_versions
from featurize.images import as_items, load_image
from featurize.weights import ResolvedWeights, file_sha256
from pipelines.compare.config import CompareConfig
from pipelines.compare.plan import build_settings, fit_seed
from pipelines.datasets import ImageSet
from pipelines.methods import NO_BACKBONE, BuildContext, get_method
from reports.tables import format_accuracy

__all__ = ["CARD", "CARD_FORMAT", "choose_export", "decode_pixels", "export_model", "weights_record"]

log = logging.getLogger(__name__)

CARD = "model.json"
"""The card's file name in an export folder."""
CARD_FORMAT = 1
PIXEL_SIZE = 32
_KEY = ("backbone", "cut", "method")


def choose_export(analysis, name: str | None = None) -> dict:
    """The configuration to export, as the summary row (a dict) of the largest train size.

    Parameters
    ----------
    analysis : reports.analysis.Analysis
        The comparison's analysis.
    name : str, optional
        ``backbone/cut/method`` (``cut`` empty for methods without one, e.g. ``efficientnet_lite0//finetune_full``;
        a fourth part names the augmentation policy when several ran).

    Returns
    -------
    dict
        The summary row, plus ``selected_by`` and ``selection_score``.

    Raises
    ------
    ValueError
        When nothing can be chosen, or ``name`` matches no configuration or several (the message lists them).
    """
    size = analysis.largest
    summary = analysis.summary[analysis.summary["train_size"] == size]
    if name is not None:
        parts = name.split("/")
        keys = [*_KEY, "augment"][: len(parts)]
        if len(parts) not in (3, 4):
            raise ValueError(f"--export-config {name!r}: write backbone/cut/method (cut may be empty), optionally "
                             "/augment")
        hit = summary[np.all([summary[k].fillna("").astype(str) == v for k, v in zip(keys, parts)], axis=0)]
        if len(hit) != 1:
            known = ", ".join(sorted({"/".join(str(r.get(k, "")) for k in keys) for r in summary.to_dict("records")}))
            raise ValueError(f"--export-config {name!r} matches {len(hit)} configurations at {size} images/class; "
                             f"valid: {known}")
        row = hit.iloc[0].to_dict()
        chosen = analysis.selected[analysis.selected["train_size"] == size]
        score = analysis.results[(analysis.results["train_size"] == size) & _same(analysis.results, row,
                                                                                   analysis.config)]
        return {**row, "selected_by": "named by the user (--export-config)",
                "selection_score": float(score["selection_score"].astype(float).mean()) if len(score) else math.nan,
                "pre_selected": chosen.to_dict("records")}
    chosen = analysis.selected[analysis.selected["train_size"] == size].copy()
    chosen = chosen[chosen["selection_score"].astype(float).notna()]
    if chosen.empty:
        raise ValueError(f"no configuration has a training-side score at {size} images/class to be exported by; "
                         "name one with --export-config backbone/cut/method")
    best = chosen.iloc[int(np.argmax(chosen["selection_score"].astype(float).to_numpy()))].to_dict()
    row = summary[_same(summary, best, analysis.config)].iloc[0].to_dict()
    return {**row, "selected_by": f"highest training-side score among the pre-selected configurations at {size} "
                                  f"images/class ({best['selected_by']} within its family)",
            "selection_score": float(best["selection_score"]), "pre_selected": chosen.to_dict("records")}


def _same(frame: pd.DataFrame, values: dict, columns: Sequence[str]) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for c in columns:
        if c in frame.columns:
            mask &= frame[c].fillna("").astype(str) == ("" if values.get(c) is None or values.get(c) != values.get(c)
                                                         else str(values.get(c)))
    return mask


def decode_pixels(X, size: int = PIXEL_SIZE) -> np.ndarray:
    """Image files → the raw-pixel baseline's features, as the comparison computes them."""
    small = np.stack([np.asarray(load_image(item).resize((size, size))) for item in as_items(X)])
    return pixels_baseline(size).fit_transform(small)


def weights_record(resolved: ResolvedWeights | None, backbone: str, argument: object) -> dict:
    """What the card says of the weights: the argument, identity, pretrained flag, file name and full sha256."""
    if resolved is None:
        return {"argument": None, "identity": "none", "pretrained": None, "file": None, "sha256": None}
    path = sha = None
    if resolved.pretrained:
        path = weights_file(get_backbone_spec(backbone), resolved, download=False)
        sha = file_sha256(path)
    return {"argument": None if argument is None else str(argument), "identity": resolved.identity,
            "pretrained": resolved.pretrained, "file": None if path is None else path.name, "sha256": sha}


def _estimator(config: CompareConfig, row: dict, imageset: ImageSet, weights: object, cache_dir: Path | None):
    """The exported estimator of a configuration, unfitted, and its inputs."""
    method = get_method(row["method"])
    counts = np.bincount(imageset.labels, minlength=len(imageset.classes))
    augment = row.get("augment") or method.policies(config.augment)[0]
    context = BuildContext(backbone=row["backbone"] if method.needs_backbone else None, weights=weights,
                           augment=augment, n_per_class=int(counts.min()),
                           seed=fit_seed(config.seed, 0, method.name),
                           settings=build_settings(config, cache_dir, str(config.device)))
    estimator = method.build(context)
    if method.inputs == "images":
        return estimator
    if method.inputs == "pixels":
        return Pipeline([("pixels", FunctionTransformer(decode_pixels, kw_args={"size": PIXEL_SIZE})),
                         ("head", estimator)])
    layers = "all" if method.cuts == "all" else row["cut"]
    featurizer = CNNFeaturizer(row["backbone"], layers=layers, pooling=config.pooling, weights=weights,
                               image_size=config.image_size, device=str(config.device), verbose=not config.quiet)
    return Pipeline([("features", featurizer.set_output(transform="pandas")), ("head", estimator)])


def export_model(config: CompareConfig, analysis, imageset: ImageSet, weights: dict[str, object],
                 out: str | Path, name: str | None = None) -> Path:
    """Refit the chosen configuration on every labelled image of ``imageset`` and write it with its card to ``out``.

    Parameters
    ----------
    config : CompareConfig
        The comparison's settings (seed, image size, pooling, fine-tuning recipe …).
    analysis : reports.analysis.Analysis
        Its analysis (pre-selections and the accuracies the card quotes).
    imageset : ImageSet
        The comparison's images (unreadable ones already left out).
    weights : dict
        Backbone → the ``weights`` argument the comparison used.
    out : path
        The export folder (created).
    name : str, optional
        ``backbone/cut/method`` to export instead of the pre-selected one (see :func:`choose_export`).

    Returns
    -------
    Path
        The card (``out/model.json``).
    """
    row = choose_export(analysis, name)
    backbone = row["backbone"] if row["backbone"] != NO_BACKBONE else None
    argument = weights.get(backbone) if backbone else None
    estimator = _estimator(config, row, imageset, argument, None)
    log.info("export: refitting %s on %d labelled images", "/".join(str(row[k]) for k in _KEY), len(imageset.items))
    estimator.fit(list(imageset.items), np.asarray(imageset.classes)[imageset.labels])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fine_tuned = hasattr(estimator, "save")
    file = "model.pt" if fine_tuned else "model.joblib"
    if fine_tuned:
        estimator.save(out / file)
        resolved, chosen = estimator.weights_, {"chosen": estimator.chosen_, "candidates": estimator.candidates_}
        preprocessing = estimator.weights_.preprocessing.with_size(estimator._image_size(resolved)).identity()
    else:
        joblib.dump(estimator, out / file)
        head = estimator.named_steps["head"]
        chosen = {"best_params": {k.removeprefix("clf__"): v for k, v in head.best_params_.items()},
                  "inner_cv_accuracy": float(head.best_score_)}
        features = estimator.named_steps.get("features")
        resolved = None if features is None else features.weights_
        preprocessing = None if features is None else features.preprocessing_.identity()
    card = {
        "format": CARD_FORMAT, "kind": "finetuned_cnn" if fine_tuned else "sklearn_pipeline", "file": file,
        "classes": [str(c) for c in imageset.classes],
        "configuration": {k: (None if row.get(k) != row.get(k) else row.get(k)) for k in
                          (*_KEY, "pooling", "augment", "family") if k in row},
        "selected_by": row["selected_by"], "selection_score": row["selection_score"],
        "weights": weights_record(resolved, backbone, argument) if backbone else weights_record(None, "", None),
        "preprocessing": preprocessing, "hyperparameters": chosen,
        "seed": fit_seed(config.seed, 0, row["method"]),
        "trained_on": {"dataset": imageset.name, "images": len(imageset.items),
                       "class_counts": {str(k): int(v) for k, v in imageset.class_counts().items()}},
        "accuracy": {"estimate": row["accuracy"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
                     "n_test": int(row["n_test"]), "n_draws": int(row["n_splits"]), "design": row["design"],
                     "train_size": int(row["train_size"]),
                     "text": format_accuracy(row["accuracy"], row["ci_low"], row["ci_high"], int(row["n_test"]),
                                             int(row["n_splits"])),
                     "measured_by": "the comparison, on its test images, at its largest train size (the exported "
                                    "model itself is refitted on every labelled image, test images included)"},
        "versions": {"cnn-transfer": metadata.version("cnn-transfer"), **package_versions((*PACKAGES, "timm"))},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = out / CARD
    path.write_text(json.dumps(card, indent=2, default=_plain))
    return path


def _plain(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    return str(value)
