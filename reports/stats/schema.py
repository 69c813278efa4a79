"""The results schema the statistics read: which columns identify a configuration, and how a key is normalised."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["CONFIG_COLUMNS", "PAIR_KEYS", "VARIANT_COLUMNS", "check_columns", "check_level", "config_columns",
           "config_key", "config_label", "default_by", "is_blank", "matching", "nanmean", "norm"]

CONFIG_COLUMNS: tuple[str, ...] = ("backbone", "cut", "method")
VARIANT_COLUMNS: tuple[str, ...] = ("pooling", "augment")
PAIR_KEYS: tuple[str, ...] = ("train_size", "split")


def config_columns(results: pd.DataFrame) -> list[str]:
    """Columns that identify a configuration: backbone, cut and method, plus pooling and augmentation policy where
    they take more than one non-blank value in ``results`` (so runs that differ only there are never merged)."""
    fixed = [c for c in CONFIG_COLUMNS if c in results.columns]

    def varies(column: str) -> bool:
        values = results[column].dropna()
        return values[values.astype(str) != ""].nunique() > 1

    return fixed + [c for c in VARIANT_COLUMNS if c in results.columns and varies(c)]


def config_label(values: dict | pd.Series, columns: Sequence[str]) -> str:
    """``"resnet18 / layer4 / linear_svm"``: a configuration's values joined, empty values skipped."""
    parts = [str(values[c]) for c in columns if c in values and not is_blank(values[c])]
    return " / ".join(parts) if parts else "(all)"


def is_blank(value: object) -> bool:
    """Whether a configuration value is missing: None, NaN or ``""``."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def norm(value: object) -> object:
    """Hashable, NaN-free key value: blanks become ``""``, numbers floats."""
    if is_blank(value) or value is pd.NA:
        return ""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    return value


def matching(frame: pd.DataFrame, values: dict) -> pd.DataFrame:
    """The rows of ``frame`` whose columns equal ``values`` (compared through :func:`norm`)."""
    return frame[np.all([frame[k].map(norm) == norm(v) for k, v in values.items()], axis=0)]


def config_key(values: dict | pd.Series, columns: Sequence[str]) -> tuple:
    """The normalised key (:func:`norm`) of ``values`` over ``columns``."""
    return tuple(norm(values[c]) for c in columns)


def default_by(results: pd.DataFrame, by: Sequence[str] | None) -> list[str]:
    """``by``, or the configuration columns of ``results`` and ``train_size``."""
    if by is not None:
        return list(by)
    return config_columns(results) + (["train_size"] if "train_size" in results.columns else [])


def check_level(level: float) -> None:
    """Raise ValueError unless ``0 < level < 1``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def check_columns(results: pd.DataFrame, columns: Sequence[str], what: str = "results") -> None:
    """Raise ValueError naming the ``columns`` that ``results`` lacks (and the ones it has)."""
    missing = [c for c in columns if c not in results.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; available columns: {list(results.columns)}")


def nanmean(frame: pd.DataFrame, column: str) -> float:
    """Mean of ``frame[column]`` ignoring NaN; NaN when the column is absent or empty."""
    if column not in frame or frame[column].isna().all():
        return math.nan
    return float(frame[column].astype(float).mean())
