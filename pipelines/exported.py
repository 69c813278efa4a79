"""Using an exported model: load it with its card, check that it still holds, and predict new images.

Loading refuses a model whose card names another version of this library, whose model file is not the one written
with the card, or whose weights file (read again by the frozen-feature pipeline at every prediction) is no longer the
file the model was trained with; the error says which and what to do.  The weights are found again on this machine
(the pip-installed file, the torchvision or Hugging Face cache, the same local path), so an export moves between
machines.  A fine-tuned network carries its own weights in ``model.pt``.  Unreadable images are listed with their
reason, never dropped.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from classifiers.finetune import FineTunedCNN
from featurize import CNNFeaturizer
from featurize.backbones import get_backbone_spec, resolve_weights, weights_file
from featurize.images import read_image
from featurize.weights import ResolvedWeights, file_sha256
from pipelines.compare.export import CARD, CARD_FORMAT, library_version, model_steps

__all__ = ["ExportedModel", "load_exported"]


@dataclass
class ExportedModel:
    """A loaded export: the fitted ``model`` (a scikit-learn ``Pipeline`` or a :class:`FineTunedCNN`) and its
    ``card`` (the parsed ``model.json``)."""

    model: object
    card: dict

    def use_cache(self, folder: str | Path | None) -> ExportedModel:
        """Read (and store) the CNN features of the images it predicts in the HDF5 cache folder ``folder`` — e.g. the
        comparison's ``<data dir>/features``, where its images already are — instead of recomputing them; None turns
        the cache off. A model that reads no CNN features (a fine-tuned network, raw pixels) warns that the folder is
        not used. Returns the model itself."""
        featurizers = [step for step in model_steps(self.model) if isinstance(step, CNNFeaturizer)]
        if folder is not None and not featurizers:
            warnings.warn(f"this export ({self.card['kind']}, {self.card['configuration'].get('method')}) reads no CNN "
                          f"features: the cache folder {folder} is not used", UserWarning, stacklevel=2)
        for featurizer in featurizers:
            featurizer.set_params(cache=None if folder is None else str(folder))
        return self

    @property
    def scores(self) -> str:
        """``"probability"`` when the model gives class probabilities, else ``"decision_score"``."""
        return "probability" if hasattr(self.model, "predict_proba") else "decision_score"

    def _scores(self, items: list) -> np.ndarray:
        if self.scores == "probability":
            return np.asarray(self.model.predict_proba(items))
        raw = np.asarray(self.model.decision_function(items), dtype=float)
        return np.column_stack([-raw, raw]) if raw.ndim == 1 else raw

    def _scores_of_readable(self, chunk: list, n_classes: int) -> tuple[dict[int, str], np.ndarray]:
        """Scores of the images of ``chunk`` that can be read, and the reason of each that cannot (by position).
        Images are decoded once, by the model; only when it fails is each image read alone to find the culprits."""
        try:
            return {}, self._scores(chunk)
        except Exception:
            errors = {}
            for i, item in enumerate(chunk):
                try:
                    read_image(item)
                except Exception as exc:  # noqa: BLE001 - every decode failure is listed with its reason
                    errors[i] = f"{type(exc).__name__}: {exc}"
            if not errors:
                raise
        readable = [item for i, item in enumerate(chunk) if i not in errors]
        return errors, self._scores(readable) if readable else np.empty((0, n_classes))

    def predict(self, images: Sequence, batch: int = 64, verbose: bool = False) -> pd.DataFrame:
        """Class and per-class scores of every image.

        Parameters
        ----------
        images : sequence of paths
            The images, in the order of the output rows.
        batch : int
            Images predicted per call (a progress bar counts them).
        verbose : bool
            Show the progress bar.

        Returns
        -------
        DataFrame
            One row per image: ``image``, ``status`` (``"ok"`` or ``"unreadable"``), ``error`` (the reason, empty
            when readable), ``predicted`` and one ``probability_<class>`` (or ``decision_score_<class>``) column per
            class (empty for unreadable images).
        """
        classes = [str(c) for c in self.model.classes_]
        columns = [f"{self.scores}_{c}" for c in classes]
        rows = []
        with tqdm(total=len(images), desc="predict", unit="img", disable=not verbose) as bar:
            for start in range(0, len(images), batch):
                chunk = list(images[start:start + batch])
                errors, scores = self._scores_of_readable(chunk, len(classes))
                predicted = np.asarray(classes)[scores.argmax(axis=1)] if len(scores) else []
                good = iter(zip(predicted, scores))
                for i, item in enumerate(chunk):
                    row = {"image": str(item), "status": "unreadable" if i in errors else "ok",
                           "error": errors.get(i, "")}
                    if i not in errors:
                        label, values = next(good)
                        row.update(predicted=label, **dict(zip(columns, values)))
                    rows.append(row)
                bar.update(len(chunk))
        return pd.DataFrame(rows, columns=["image", "status", "error", "predicted", *columns])


def _check_version(card: dict, where: Path) -> None:
    expected, installed = card["versions"]["cnn-transfer"], library_version()
    if expected != installed:
        raise ValueError(f"{where / CARD}: the model was exported with cnn-transfer {expected}, this is {installed}; "
                         f"export it again with this version (python -m pipelines.compare ... --export DIR) or "
                         f"install cnn-transfer {expected}")


def _weights_here(card: dict, where: Path) -> ResolvedWeights | None:
    """The weights the pipeline's featurizer reads on this machine, checked to be the file the model was trained with
    (None when there is nothing to check: no featurizer, or random init)."""
    record = card["weights"]
    if card["kind"] != "sklearn_pipeline" or not record.get("pretrained"):
        return None
    backbone = card["configuration"]["backbone"]
    spec = get_backbone_spec(backbone)
    try:
        resolved = resolve_weights(spec, record["argument"])
        path = weights_file(spec, resolved, download=False)
    except (FileNotFoundError, ValueError) as exc:
        raise ValueError(f"{where / CARD}: the weights of {backbone} it was trained with ({record['file']}, sha256 "
                         f"{record['sha256']}) are not available here ({exc})") from exc
    digest = file_sha256(path)
    if digest != record["sha256"]:
        raise ValueError(f"{where / CARD}: the model was trained with {record['file']} (sha256 {record['sha256']}) "
                         f"but {path} now has sha256 {digest}: its features would not be the ones the head learnt. "
                         "Put the original weights file back, or export the model again with these weights")
    return resolved


def load_exported(model_dir: str | Path) -> ExportedModel:
    """Load an export written by :func:`pipelines.compare.export.export_model` and check its card.

    Raises
    ------
    FileNotFoundError
        When the folder holds no card or no model file.
    ValueError
        When the card is of another format, names another library version, or the weights file changed.
    """
    where = Path(model_dir)
    if not (where / CARD).is_file():
        raise FileNotFoundError(f"{where}: no {CARD} (export a model with python -m pipelines.compare ... --export "
                                f"{where})")
    card = json.loads((where / CARD).read_text())
    if card.get("format") != CARD_FORMAT:
        raise ValueError(f"{where / CARD}: card format {card.get('format')!r}, this library reads {CARD_FORMAT}")
    _check_version(card, where)
    resolved = _weights_here(card, where)
    file = where / card["file"]
    if not file.is_file():
        raise FileNotFoundError(f"{file}: the model file its card names is missing")
    if file_sha256(file) != card["file_sha256"]:
        raise ValueError(f"{file} is not the model file written with {where / CARD} (its sha256 differs): export the "
                         "model again, or put the original file back")
    model = FineTunedCNN.load(file) if card["kind"] == "finetuned_cnn" else joblib.load(file)
    if resolved is not None:
        model.named_steps["features"].weights_ = resolved
    return ExportedModel(model, card)
