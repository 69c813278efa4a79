"""The results of a comparison: one row schema for every fit, and the journal that makes a run resumable.

Every finished fit (one method × backbone × cut × augmentation on one split) becomes a :class:`Fit`; its row of
``results.csv`` and its rows of ``predictions.csv`` are derived from it, so both files always agree.  The
:class:`Journal` appends each finished fit to ``journal.jsonl`` in the output folder as soon as it is done (one line,
flushed and fsynced); a run killed at any point and started again with the same configuration skips every fit
already journaled and ends with the same tables.  A journal written for another configuration is refused unless
the caller asks to start over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from pipelines.datasets import ImageSet
from pipelines.splits import Split, imageset_design

__all__ = ["RESULT_COLUMNS", "PREDICTION_COLUMNS", "Fit", "FitKey", "Journal", "JournalMismatch", "dataset_fingerprint",
           "tables"]

log = logging.getLogger(__name__)

RESULT_COLUMNS = [
    "dataset", "design", "backbone", "weights", "pretrained", "cut", "pooling", "method", "family", "augment",
    "train_size", "split", "n_train", "n_test", "n_correct", "accuracy", "balanced_accuracy", "selection_score",
    "hyperparameters", "fit_time_s", "predict_time_s", "extract_time_s", "seed",
]
"""Columns of ``results.csv``, one row per fit.  ``design`` is "fixed_test" or "resampled" (pipelines.splits);
``selection_score`` is what the fit's own training images said of its choices (inner-CV accuracy of the chosen
hyperparameters, or inner-validation accuracy of the chosen epoch; empty when nothing was chosen), and
``hyperparameters`` the choices themselves (JSON).  ``extract_time_s`` is this run's feature-extraction wall time
for the fit's images (every cut point at once; near 0 when the cache already held them)."""

PREDICTION_COLUMNS = ["backbone", "cut", "pooling", "method", "augment", "train_size", "split", "index", "y_true",
                      "y_pred"]
"""Columns of ``predictions.csv``, one row per fit and test image."""

_JOURNAL = "journal.jsonl"
_FORMAT = 1


@dataclass(frozen=True)
class FitKey:
    """What identifies a fit inside one run."""

    method: str
    backbone: str
    cut: str
    pooling: str
    augment: str
    train_size: int
    split: int


@dataclass
class Fit:
    """One finished fit: which configuration on which split, its test predictions and what it cost.

    ``y_pred`` are class indices aligned with the split's ``test_idx``; ``selection_score`` and ``hyperparameters``
    come from the training images only.
    """

    key: FitKey
    family: str
    weights: str
    pretrained: bool | None
    y_pred: np.ndarray
    fit_time_s: float
    predict_time_s: float
    extract_time_s: float
    seed: int
    selection_score: float = float("nan")
    hyperparameters: dict = field(default_factory=dict)

    def row(self, imageset: ImageSet, split: Split) -> dict:
        """The fit's row of ``results.csv``."""
        y_true = imageset.labels[split.test_idx]
        correct = int((self.y_pred == y_true).sum())
        key = asdict(self.key)
        return {
            "dataset": imageset.name, "design": imageset_design(imageset), "backbone": key["backbone"],
            "weights": self.weights,
            "pretrained": self.pretrained, "cut": key["cut"], "pooling": key["pooling"], "method": key["method"],
            "family": self.family, "augment": key["augment"], "train_size": split.train_size, "split": split.split,
            "n_train": len(split.train_idx), "n_test": len(split.test_idx), "n_correct": correct,
            "accuracy": correct / len(y_true), "balanced_accuracy": balanced_accuracy_score(y_true, self.y_pred),
            "selection_score": self.selection_score,
            "hyperparameters": json.dumps(self.hyperparameters, sort_keys=True, default=str),
            "fit_time_s": self.fit_time_s, "predict_time_s": self.predict_time_s,
            "extract_time_s": self.extract_time_s, "seed": self.seed,
        }

    def predictions(self, imageset: ImageSet, split: Split) -> pd.DataFrame:
        """The fit's rows of ``predictions.csv``."""
        classes = np.asarray(imageset.classes)
        key = asdict(self.key)
        return pd.DataFrame({
            **{k: key[k] for k in ("backbone", "cut", "pooling", "method", "augment")},
            "train_size": split.train_size, "split": split.split, "index": split.test_idx,
            "y_true": classes[imageset.labels[split.test_idx]], "y_pred": classes[self.y_pred],
        }, columns=PREDICTION_COLUMNS)

    def to_json(self) -> dict:
        """JSON-serialisable form (for the journal)."""
        return {"key": asdict(self.key), "family": self.family, "weights": self.weights,
                "pretrained": self.pretrained, "y_pred": self.y_pred.tolist(), "fit_time_s": self.fit_time_s,
                "predict_time_s": self.predict_time_s, "extract_time_s": self.extract_time_s, "seed": self.seed,
                "selection_score": self.selection_score, "hyperparameters": self.hyperparameters}

    @classmethod
    def from_json(cls, data: Mapping) -> "Fit":
        """Inverse of :meth:`to_json`."""
        return cls(key=FitKey(**data["key"]), family=data["family"], weights=data["weights"],
                   pretrained=data["pretrained"], y_pred=np.asarray(data["y_pred"], dtype=np.int64),
                   fit_time_s=data["fit_time_s"], predict_time_s=data["predict_time_s"],
                   extract_time_s=data["extract_time_s"], seed=data["seed"],
                   selection_score=float(data["selection_score"]),
                   hyperparameters=dict(data["hyperparameters"]))


def tables(fits: Iterable[Fit], imageset: ImageSet,
           splits: Mapping[tuple[int, int], Split]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``results`` and ``predictions`` tables of a set of fits (``splits`` keyed by (train_size, split))."""
    rows, predictions = [], []
    for fit in fits:
        split = splits[(fit.key.train_size, fit.key.split)]
        rows.append(fit.row(imageset, split))
        predictions.append(fit.predictions(imageset, split))
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    preds = pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame(columns=PREDICTION_COLUMNS)
    return results, preds


class JournalMismatch(ValueError):
    """The output folder holds a journal of another configuration."""


def dataset_fingerprint(items: Sequence, labels: Sequence) -> dict:
    """What identifies a dataset for a journal: its images (names, and sizes for files) and its labels."""
    h = hashlib.sha1()
    for n, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            size = os.path.getsize(item) if os.path.isfile(item) else -1
            h.update(f"{os.fspath(item)}\0{size}\n".encode(errors="surrogateescape"))
        else:
            h.update(f"#{n}\n".encode())
    return {"images": h.hexdigest(), "labels": hashlib.sha1(np.asarray(labels).astype(str).tobytes()).hexdigest()}


def fingerprint(config: Mapping) -> str:
    """Hash of the configuration fields that determine a run's results."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Journal:
    """Append-only record of the finished work of one run, in ``<out>/journal.jsonl``.

    Each record is a JSON object with a ``"key"`` mapping that identifies the piece of work (for a comparison, a
    :class:`FitKey`); :class:`Fit` records are written by :meth:`Fit.to_json`.

    Parameters
    ----------
    out : path
        The run's output folder.
    config : mapping
        The fields of the configuration that determine its results (JSON-serialisable).
    restart : bool, default=False
        Discard a journal of another configuration instead of refusing it.

    Raises
    ------
    JournalMismatch
        When ``out`` holds the journal of another configuration and ``restart`` is False.
    """

    def __init__(self, out: str | Path, config: Mapping, *, restart: bool = False):
        self.path = Path(out) / _JOURNAL
        self.header = {"format": _FORMAT, "fingerprint": fingerprint(config), "config": dict(config)}
        self.records: dict[str, dict] = {}
        if self.path.is_file():
            if restart:
                log.info("starting over: %s discarded", self.path)
                self.path.unlink()
            else:
                self._load()
        if not self.path.is_file():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append(self.header)

    def _load(self) -> None:
        lines = self.path.read_bytes().split(b"\n")
        complete = lines[:-1]  # a line without its newline was cut by a kill: ignored and overwritten
        header = json.loads(complete[0]) if complete else None
        if header is None:
            self.path.unlink()
            return
        if header.get("fingerprint") != self.header["fingerprint"]:
            theirs = header.get("config", {})
            diff = {k: (theirs.get(k), v) for k, v in self.header["config"].items() if theirs.get(k) != v}
            raise JournalMismatch(
                f"{self.path} holds the finished fits of another configuration (field: (journal, now) = {diff}). "
                "Pass --restart to discard them and start over, or choose another --out."
            )
        for line in complete[1:]:
            record = json.loads(line)
            self.records[_canonical(record["key"])] = record
        if lines[-1]:
            with open(self.path, "r+b") as f:
                f.truncate(sum(len(line) + 1 for line in complete))
        if self.records:
            log.info("resuming: %d finished piece(s) of work read from %s", len(self.records), self.path)

    def _append(self, record: Mapping) -> None:
        with open(self.path, "ab") as f:
            f.write(json.dumps(record, default=str).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def __contains__(self, key: Mapping) -> bool:
        return _canonical(key) in self.records

    def __getitem__(self, key: Mapping) -> dict:
        return self.records[_canonical(key)]

    def record(self, record: Mapping) -> None:
        """Journal a finished piece of work, a mapping with a ``"key"`` (durably, before returning)."""
        self._append(record)
        self.records[_canonical(record["key"])] = dict(record)


def _canonical(key: Mapping) -> str:
    return json.dumps(dict(key), sort_keys=True, default=str)
