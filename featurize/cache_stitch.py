"""Stitching shard caches into one (written by sharded extraction) without copying their features.

A stitched cache holds HDF5 virtual datasets (``/keys`` and every ``/features/<cut>``) over shard files kept beside
it, found by relative name; its paths, versions and key index are real.  It is read like any cache, refused while a
shard file is missing, and copied into a real file by its first append (:class:`featurize.cache.FeatureCache`).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from featurize.cache_format import FORMAT, key_hash, read_strings, row_datasets, write_rows
from featurize.cache_index import KeyIndex

__all__ = ["ShardPart", "read_part", "shard_files", "write_stitched"]


def shard_files(f: h5py.File) -> list[str]:
    """The shard files a stitched cache's virtual datasets read (relative to it); empty for an ordinary cache."""
    keys = f.get("keys")
    if not isinstance(keys, h5py.Dataset) or not keys.is_virtual:
        return []
    return sorted({m.file_name for name in row_datasets(f) for m in f[name].virtual_sources()})


@dataclass
class ShardPart:
    """The rows one shard contributes: ``kept`` (its rows, increasing), the shape and dtype of each row dataset,
    their ``paths`` and ``versions`` strings, and the shard file's attributes."""

    path: Path
    kept: np.ndarray
    shapes: dict[str, tuple[tuple[int, ...], np.dtype]]
    strings: dict[str, np.ndarray]
    attrs: dict[str, object]


def read_part(path: Path, f: h5py.File, seen: set[bytes]) -> ShardPart | None:
    """The complete rows of the open shard ``f`` whose keys are not in ``seen`` (which gains them); None if none."""
    n = int(f.attrs.get("n_complete", 0))
    keys = f["keys"][:n].tolist() if n else []
    kept = np.array([i for i, k in enumerate(keys) if not (k in seen or seen.add(k))], np.int64)
    if not len(kept):
        return None
    strings = {name: read_strings(f, name, 0, n)[kept] for name in ("paths", "versions")}
    shapes = {name: (f[name].shape, f[name].dtype) for name in row_datasets(f)}
    return ShardPart(path, kept, shapes, strings, dict(f.attrs))


def _runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """``(position, first, stop)`` of each run of consecutive values in an increasing array of rows."""
    if not len(rows):
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts, stops = np.r_[0, breaks], np.r_[breaks, len(rows)]
    return [(int(a), int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops)]


def write_stitched(f: h5py.File, folder: Path, key: Mapping[str, object], parts: list[ShardPart]) -> None:
    """Write into the new file ``f`` (to be placed in ``folder``) one cache of the parts' rows, in part order."""
    total = sum(len(part.kept) for part in parts)
    versions_seen = set()
    for part in parts:
        versions_seen |= set(json.loads(part.attrs.get("versions_seen", "[]")))
    for name, value in (parts[0].attrs if parts else {}).items():
        if name not in ("index_rows", "index_id"):
            f.attrs[name] = value
    f.attrs.update({"key": json.dumps(key, sort_keys=True), "key_hash": key_hash(key), "format": FORMAT,
                    "versions_seen": json.dumps(sorted(versions_seen)), "index_id": uuid.uuid4().hex})
    for name in (parts[0].shapes if parts else {}):
        shape, dtype = parts[0].shapes[name]
        layout = h5py.VirtualLayout((total, *shape[1:]), dtype)
        at = 0
        for part in parts:
            source = h5py.VirtualSource(os.path.relpath(part.path, folder), name, shape=part.shapes[name][0],
                                        dtype=part.shapes[name][1])
            for position, start, stop in _runs(part.kept):
                layout[at + position: at + position + stop - start] = source[start:stop]
            at += len(part.kept)
        f.create_virtual_dataset(name, layout)
    for name in ("paths", "versions"):
        values = np.concatenate([part.strings[name] for part in parts]) if parts else np.zeros(0, object)
        write_rows(f, name, values.astype(object), 0, total)
    KeyIndex(f).build(total)
    f.attrs["n_complete"] = total
