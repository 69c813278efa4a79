"""From a comparison to a model you can use: refit the pre-selected configuration on every labelled image and save
it with its card (``python -m pipelines.compare ... --export DIR``).

Which configuration: by default the one with the highest training-side score among the configurations the report
pre-selected per family at the largest train size — never by test accuracy.  The scores are of two kinds and both
optimistic: a frozen head's or the raw pixels' is the best mean inner-CV accuracy of its grid (the pre-selection within
the family is by that score), a fine-tuning method's is the accuracy on the inner validation split that also chose its
epochs and candidate (the family's configuration is fixed in advance: the first one of the run); the card names the
kind.  ``--export-config backbone/cut/method`` names another configuration.

The refit uses the comparison's settings and the seed of its first draw (from-scratch training keeps its random
initialisation); a frozen-feature configuration is saved as a scikit-learn ``Pipeline`` (``CNNFeaturizer`` + the tuned
head) with joblib, a fine-tuned one with :meth:`classifiers.finetune.FineTunedCNN.save` (torch's format).
``model.json`` beside it is the card (:mod:`pipelines.exported` reads it back and checks it).
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import joblib
import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from classifiers.heads import pixels_baseline
from featurize.backbones import get_backbone_spec, weights_file
from featurize.environment import PACKAGES, package_versions
from featurize.images import as_items
from featurize.weights import ResolvedWeights, file_sha256
from pipelines.compare.config import CompareConfig
from pipelines.compare.plan import build_settings, fit_seed
from pipelines.compare.runner import PIXEL_SIZE, featurizer_for, small_pixels
from pipelines.datasets import ImageSet
from pipelines.methods import NO_BACKBONE, BuildContext, get_method
from reports.tables import accuracy_text

if TYPE_CHECKING:
    from classifiers.finetune import FineTunedCNN

__all__ = ["CARD", "CARD_FORMAT", "choose_export", "decode_pixels", "export_model", "forget_cache", "model_steps",
           "weights_record"]

log = logging.getLogger(__name__)

CARD = "model.json"
"""The card's file name in an export folder."""
CARD_FORMAT = 1
_KEY = ("backbone", "cut", "method")
SCORE_KINDS = {
    "frozen": "mean inner-CV accuracy of the best grid point (training images only)",
    "pixels": "mean inner-CV accuracy of the best grid point (training images only)",
    "finetune": "accuracy on the inner validation split that chose the epochs and candidate (training images only)",
    "linear_probe_sgd": "accuracy on the inner validation split that chose the epochs (training images only)",
    "scratch": "accuracy on the inner validation split that chose the epochs (training images only)",
}
"""What a family's training-side score is (the card says it; the kinds differ and both are optimistic)."""


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
        score = analysis.results[(analysis.results["train_size"] == size)
                                 & analysis.is_config(analysis.results, {c: row[c] for c in analysis.config})]
        return {**row, "selected_by": "named by the user (--export-config)",
                "selection_score": float(score["selection_score"].astype(float).mean()) if len(score) else math.nan,
                "score_kind": SCORE_KINDS.get(row["family"], SCORE_KINDS["frozen"]),
                "pre_selected": chosen.to_dict("records")}
    chosen = analysis.selected[analysis.selected["train_size"] == size].copy()
    chosen = chosen[chosen["selection_score"].astype(float).notna()]
    if chosen.empty:
        raise ValueError(f"no configuration has a training-side score at {size} images/class to be exported by; "
                         "name one with --export-config backbone/cut/method")
    best = chosen.iloc[int(np.argmax(chosen["selection_score"].astype(float).to_numpy()))].to_dict()
    row = analysis.row({c: best[c] for c in analysis.config}).to_dict()
    return {**row, "selected_by": f"highest training-side score among the pre-selected configurations at {size} "
                                  f"images/class ({best['selected_by']} within its family)",
            "selection_score": float(best["selection_score"]),
            "score_kind": SCORE_KINDS.get(best["family"], SCORE_KINDS["frozen"]),
            "pre_selected": chosen.to_dict("records")}


def decode_pixels(X, size: int = PIXEL_SIZE) -> np.ndarray:
    """Image files → the raw-pixel baseline's features, as the comparison computes them."""
    small = np.stack([small_pixels(item, size) for item in as_items(X)])
    return pixels_baseline(size).fit_transform(small)


def weights_record(resolved: ResolvedWeights | None, backbone: str, argument: object) -> dict:
    """What the card says of the weights: the argument (a file as an absolute path), identity, pretrained flag, file
    name and full sha256."""
    if resolved is None:
        return {"argument": None, "identity": "none", "pretrained": None, "file": None, "sha256": None}
    path = sha = None
    if resolved.pretrained:
        path = weights_file(get_backbone_spec(backbone), resolved, download=False)
        sha = file_sha256(path)
    if resolved.kind == "file":
        argument = str(resolved.path)
    return {"argument": None if argument is None else str(argument), "identity": resolved.identity,
            "pretrained": resolved.pretrained, "file": None if path is None else path.name, "sha256": sha}


def library_version() -> str:
    """This library's installed version (``"not installed"`` outside a pip installation)."""
    return package_versions(("cnn-transfer",), missing="not installed")["cnn-transfer"]


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
    featurizer = featurizer_for(config, row["backbone"], weights, layers, cache_dir, str(config.device))
    return Pipeline([("features", featurizer), ("head", estimator)])


def export_model(config: CompareConfig, analysis, imageset: ImageSet, weights: dict[str, object],
                 out: str | Path, name: str | None = None, cache_dir: str | Path | None = None) -> Path:
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
    cache_dir : path, optional
        The comparison's feature cache: the refit reads the features (and cached inputs) computed there instead of
        running the network again. The saved model carries no cache folder (``cache=None``).

    Returns
    -------
    Path
        The card (``out/model.json``).
    """
    row = choose_export(analysis, name)
    backbone = row["backbone"] if row["backbone"] != NO_BACKBONE else None
    argument = weights.get(backbone) if backbone and not get_method(row["method"]).random_init else None
    cache = Path(cache_dir) if cache_dir is not None else None
    estimator = _estimator(config, row, imageset, argument, cache)
    log.info("export: refitting %s on %d labelled images", "/".join(str(row[k]) for k in _KEY), len(imageset.items))
    estimator.fit(list(imageset.items), np.asarray(imageset.classes)[imageset.labels])
    forget_cache(estimator)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fine_tuned = hasattr(estimator, "save")
    file = "model.pt" if fine_tuned else "model.joblib"
    if fine_tuned:
        estimator.save(out / file)
        resolved, chosen = estimator.weights_, {"chosen": estimator.chosen_, "candidates": estimator.candidates_}
        preprocessing = estimator.weights_.preprocessing.with_size(estimator.input_size(resolved)).identity()
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
        "file_sha256": file_sha256(out / file),
        "classes": [str(c) for c in imageset.classes],
        "configuration": {k: (None if row.get(k) != row.get(k) else row.get(k)) for k in
                          (*_KEY, "pooling", "augment", "family") if k in row},
        "selected_by": row["selected_by"], "selection_score": row["selection_score"],
        "selection_score_kind": row["score_kind"],
        "weights": weights_record(resolved, backbone, argument) if backbone else weights_record(None, "", None),
        "preprocessing": preprocessing, "hyperparameters": chosen,
        "seed": fit_seed(config.seed, 0, row["method"]),
        "trained_on": {"dataset": imageset.name, "images": len(imageset.items),
                       "class_counts": {str(k): int(v) for k, v in imageset.class_counts().items()}},
        "accuracy": {"estimate": row["accuracy"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
                     "ci_conditional": bool(row.get("ci_conditional", False)), "draw_min": row.get("draw_min"),
                     "draw_median": row.get("draw_median"), "n_test": int(row["n_test"]),
                     "n_draws": int(row["n_splits"]), "design": row["design"], "train_size": int(row["train_size"]),
                     "text": accuracy_text(row),
                     "measured_by": "the comparison, on its test images, at its largest train size (the exported "
                                    "model itself is refitted on every labelled image, test images included)"},
        "versions": {"cnn-transfer": library_version(), **package_versions((*PACKAGES, "timm"))},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = out / CARD
    path.write_text(json.dumps(card, indent=2, default=_plain))
    return path


def model_steps(model: Pipeline | FineTunedCNN) -> list:
    """The estimators of an export: a pipeline's steps, or the fine-tuned network itself."""
    return list(model.named_steps.values()) if isinstance(model, Pipeline) else [model]


def forget_cache(estimator: Pipeline | FineTunedCNN) -> None:
    """Drop the exporting machine's cache folder from every step of a fitted export before it is saved; the fitted
    state, and so every prediction, is unchanged."""
    for step in model_steps(estimator):
        if "cache" in step.get_params(deep=False):
            step.set_params(cache=None)


def _plain(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    return str(value)
