"""The HDF5 layout of a feature cache file (:class:`featurize.cache.FeatureCache`), and writing and reading its rows.

Layout::

    attrs: key (JSON of the key fields), key_hash, n_complete, format, versions_seen (JSON list), index_id (random,
           per file), index_rows (rows the key index covers)
    /keys            (n,) S40      sha1 of each image's content
    /paths           (n,) str      where each row came from (informative only)
    /versions        (n,) str      torch/torchvision/Pillow versions each row was computed with
    /features/<cut>  (n, D) float32, chunked, resizable, uncompressed
    /index           (capacity, 2) int64  key index (:mod:`featurize.cache_index`); its index_id attr must be the
                     file's, else it is ignored
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import h5py
import numpy as np

__all__ = ["FORMAT", "key_hash", "read_strings", "row_datasets", "write_rows"]

FORMAT = 1
"""Format version written in the ``format`` attribute."""

_CHUNK_BYTES = 4 << 20


def key_hash(key: Mapping[str, object]) -> str:
    """16-hex-digit hash of a key mapping (order-independent)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def row_datasets(f: h5py.File) -> list[str]:
    """Names of the datasets that hold one row per image and matter (``/keys`` and every ``/features/<cut>``)."""
    return ["keys", *(f"features/{cut}" for cut in f.get("features", {}))]


def write_rows(f: h5py.File, name: str, data: np.ndarray, start: int, stop: int) -> None:
    """Write rows ``start:stop`` of a row dataset, creating it (chunked, resizable) on first use.

    Raises
    ------
    RuntimeError
        When the dataset holds fewer than ``start`` rows (rows recorded complete are missing).
    """
    if name not in f:
        if data.dtype == object:
            f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(1024,))
        elif data.ndim == 1:
            f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=data.dtype, chunks=(1024,))
        else:
            dim = data.shape[1]
            rows = int(max(1, min(256, _CHUNK_BYTES // (4 * dim))))
            f.create_dataset(name, shape=(0, dim), maxshape=(None, dim), dtype=np.float32, chunks=(rows, dim))
    ds = f[name]
    if ds.shape[0] < start:
        raise RuntimeError(f"{name} in {f.filename} has {ds.shape[0]} rows, fewer than the {start} recorded "
                           "complete")
    ds.resize(stop, axis=0)
    ds[start:stop] = data


def read_strings(f: h5py.File, name: str, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of an informative string dataset (paths, versions); ``""`` where missing/unreadable."""
    try:
        values = f[name][start:stop]
        if len(values) < stop - start:
            raise KeyError(name)
        return np.array([p.decode() if isinstance(p, bytes) else p for p in values], dtype=object)
    except (OSError, KeyError):
        return np.array([""] * (stop - start), dtype=object)
