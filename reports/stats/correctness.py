"""Correctness matrices of a fixed test set: training draws × test images, from the long predictions table."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports.stats.schema import check_columns, norm

__all__ = ["Correctness", "correctness_matrices"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Correctness:
    """Correctness of one configuration at one train size: ``correct[j, n]`` for split ``splits[j]`` and test
    image ``index[n]`` of class ``y_true[n]``."""

    splits: np.ndarray
    index: np.ndarray
    y_true: np.ndarray
    correct: np.ndarray

    def aligned(self, other: Correctness) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(splits, index, y_true, self_correct, other_correct)`` on the splits and images both have."""
        splits = np.intersect1d(self.splits, other.splits)
        index = np.intersect1d(self.index, other.index)

        def take(c: Correctness) -> np.ndarray:
            rows = np.searchsorted(c.splits, splits)
            cols = np.searchsorted(c.index, index)
            return c.correct[np.ix_(rows, cols)]

        y = self.y_true[np.searchsorted(self.index, index)]
        return splits, index, y, take(self), take(other)


def correctness_matrices(predictions: pd.DataFrame, config: Sequence[str]) -> dict[tuple, Correctness]:
    """Split × image correctness per (configuration, train size) from the long ``predictions`` table.

    Keys are ``(*config values, train_size)`` with blanks as ``""`` and numbers as floats. Images not scored on
    every split of a configuration are left out (logged).
    """
    check_columns(predictions, [*config, "train_size", "split", "index", "y_true", "y_pred"], "predictions")
    data = predictions.assign(_ok=(predictions["y_true"].astype(str) == predictions["y_pred"].astype(str))
                              .astype(float))
    keys = [*config, "train_size"]
    data[list(config)] = data[list(config)].astype(object).where(data[list(config)].notna(), "")
    out: dict[tuple, Correctness] = {}
    for key, group in data.groupby(keys, sort=True):
        wide = group.pivot_table(index="split", columns="index", values="_ok", aggfunc="mean")
        complete = wide.columns[wide.notna().all(axis=0)]
        if len(complete) < wide.shape[1]:
            logger.warning("%s: %d test image(s) not scored on every split left out", key,
                           wide.shape[1] - len(complete))
        wide = wide[complete]
        y = group.groupby("index")["y_true"].first().reindex(wide.columns).astype(str)
        out[tuple(norm(k) for k in key)] = Correctness(np.asarray(wide.index), np.asarray(wide.columns),
                                                       y.to_numpy(), wide.to_numpy())
    return out
