"""HDF5 activation cache: one file per (backbone, weights identity, preprocessing, pooling, precision) key.

:class:`FeatureCache` is the store: content-keyed rows of pooled activations, appended per batch and read by key.
The file layout is :mod:`featurize.cache_format`, the key index :mod:`featurize.cache_index`, the repairs of a
damaged file :mod:`featurize.cache_repair` and stitched caches (written by sharded extraction)
:mod:`featurize.cache_stitch`.

Every open, for reading or writing, happens under a file lock (``<file>.lock``), so readers never meet a file in
the middle of an append (HDF5's own locking would refuse them).  Rows are appended per batch; the file is opened,
extended, flushed and closed for every batch, and ``n_complete`` is raised last.  After a crash, rows beyond
``n_complete`` are ignored and overwritten, so a resumed run yields the same rows as an uninterrupted one.  When an
append fails (HDF5 is not crash-safe), the complete rows are copied into a fresh file that atomically replaces the
damaged one, and the append is retried.  A new file is written under a temporary name (``<file>.new``) and renamed
into place once its key and first rows are on disk, so a crash during the first append leaves no file at all.  Rows
are fsynced before ``n_complete`` is raised, and a rebuilt or new file before it is renamed into place
(:mod:`featurize.durable`), so ``n_complete`` never counts rows a power cut could lose.  A file cut short by a full
disk is extended back when no complete row was lost.  A file held open by another program, or unreadable otherwise,
is reported and left as it is.  No file is ever modified without the lock: a reader that cannot take it (read-only
folder) reads unlocked, with a warning, and repairs nothing.  Each row records the torch, torchvision and Pillow
versions it was computed with (``/versions``); reading rows computed with other versions warns, since features may
then differ in the last bits.  No h5py handle outlives a call, so nothing is shared across fork.

Lookups and appends cost the same whatever the number of rows (the key index, written and fsynced with the rows it
indexes).  Readers never write the index: a reader in a read-only place keeps the keys of the rows it does not cover
in memory, per file.

A stitched cache (:meth:`FeatureCache.stitch`) holds virtual datasets over shard files kept beside it: it is read
like any cache, refused while a shard file is missing, and copied into a real file by its first append.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
from filelock import FileLock

from featurize.cache_format import FORMAT, key_hash, write_rows
from featurize.cache_index import KeyIndex
from featurize.cache_repair import extend_cut_short, rebuild
from featurize.cache_stitch import read_part, shard_files, write_stitched
from featurize.durable import replacing
from featurize.environment import package_versions
from featurize.once import first_time

__all__ = ["FeatureCache", "CacheKeyError", "key_hash", "software_versions"]

log = logging.getLogger(__name__)

def _warn_once(path: Path, what: str, message: str) -> None:
    if first_time("cache", str(path), what):
        warnings.warn(message, RuntimeWarning, stacklevel=4)


@functools.lru_cache(maxsize=1)
def software_versions() -> str:
    """The torch, torchvision and Pillow versions features are computed with, as one string (stored per row)."""
    versions = package_versions(("torch", "torchvision", "Pillow"), missing="absent")
    return ";".join(f"{name}={value}" for name, value in versions.items())


def _sync(f: h5py.File) -> None:
    """Flush an open HDF5 file and fsync it, so what was written survives a power cut."""
    f.flush()
    os.fsync(f.id.get_vfd_handle())


class CacheKeyError(ValueError):
    """A cache file was written for another backbone, weights, preprocessing or pooling."""


class FeatureCache:
    """Content-keyed store of pooled activations in one HDF5 file.

    Parameters
    ----------
    path : path-like
        The ``.h5`` file (created on first append).
    key : mapping
        What the features depend on; a file with another key is refused, never reused.

    Raises
    ------
    CacheKeyError
        When ``path`` exists and was written for another key.
    """

    def __init__(self, path: str | Path, key: Mapping[str, object]):
        self.path = Path(path)
        self.key = dict(key)
        self.hash = key_hash(self.key)
        self.lock = FileLock(str(self.path) + ".lock")
        self._tail: tuple[tuple, int, int, dict[bytes, int]] | None = None
        if self.path.exists():
            with self._reading() as f:
                self._check_key(f)

    @classmethod
    def in_directory(cls, directory: str | Path, key: Mapping[str, object], stem: str) -> "FeatureCache":
        """The cache for ``key`` inside a directory, as ``<directory>/<stem>-<keyhash>.h5``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / f"{stem}-{key_hash(key)}.h5", key)

    @classmethod
    def stitch(cls, path: str | Path, shards: Sequence[str | Path], key: Mapping[str, object]) -> "FeatureCache":
        """Write ``path`` as one cache of the shards' complete rows, in shard order, without copying features.

        ``/keys`` and every ``/features/<cut>`` are HDF5 virtual datasets over the shard files (kept beside
        ``path``, found by relative name); paths, versions and the key index are real.  A key stored by several
        shards is kept once, at its first row, as one cache filled in the same order would.  Shards that do not
        exist are skipped (a rank given no image, or only unreadable ones).  The first append to the stitched
        cache copies its rows into a real file.

        Parameters
        ----------
        path : path-like
            The stitched cache; an existing one is replaced, any other existing file is refused.
        shards : sequence of path-like
            Shard caches, in row order, all written for ``key``.
        key : mapping
            The cache key.

        Returns
        -------
        FeatureCache

        Raises
        ------
        FileExistsError
            When ``path`` is an ordinary (not stitched) cache: its rows would be lost.
        CacheKeyError
            When ``path`` or a shard was written for another key.
        """
        out = cls(path, key)
        parts, seen = [], set()
        for shard in (cls(p, key) for p in shards if Path(p).exists()):
            with shard._reading() as f:
                part = read_part(shard.path, f, seen)
            if part is not None:
                parts.append(part)
        with out.lock:
            out.refuse_unless_stitched()
            with replacing(out.path, ".new") as tmp, h5py.File(tmp, "w") as f:
                write_stitched(f, out.path.parent, out.key, parts)
        return out

    def refuse_unless_stitched(self) -> None:
        """Raise ``FileExistsError`` when the file exists and is an ordinary cache (stitching would lose its rows)."""
        if self.path.exists() and not self.stitched:
            raise FileExistsError(f"{str(self.path)!r} is an ordinary cache, not a stitched one; move it away (or "
                                  "pass another --out) to stitch the shards there")

    @contextmanager
    def _locked(self) -> Iterator[bool]:
        """The writers' lock, yielding whether it is held.

        Readers of a cache in a read-only place go without (warned once per file): they read, but repair nothing.
        """
        try:
            self.lock.acquire()
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            _warn_once(self.path, "lock", f"cannot create the lock file {self.lock.lock_file!r} ({exc}); reading the "
                       "cache without the lock, so a writer elsewhere could race this read (nothing is modified)")
            yield False
            return
        try:
            yield True
        finally:
            self.lock.release()

    @contextmanager
    def _reading(self) -> Iterator[h5py.File]:
        with self._locked() as held, self._open("r", repair=held) as f:
            yield f

    def _open(self, mode: str, repair: bool = True) -> h5py.File:
        """Open the file (``repair``: the lock is held, a file a full disk cut short may be extended back)."""
        try:
            f = h5py.File(self.path, mode)
        except OSError as exc:
            if repair and extend_cut_short(self.path, exc):
                return self._open(mode)
            if "unable to lock file" in str(exc).lower():
                raise OSError(
                    f"cache file {str(self.path)!r} is held open by a program that does not use this library's lock "
                    f"({exc}); close it there and retry."
                ) from exc
            raise OSError(
                f"cache file {str(self.path)!r} cannot be read as HDF5 ({exc}). It was left untouched; move it away "
                "(or pass another cache path) to start a fresh cache."
            ) from exc
        missing = [name for name in shard_files(f) if not (self.path.parent / name).is_file()]
        if missing:
            f.close()
            raise OSError(f"cache file {str(self.path)!r} is stitched from shard files and some are missing: "
                          f"{', '.join(missing)} (looked for beside it); put them back, or rerun the extraction")
        return f

    def _check_key(self, f: h5py.File) -> None:
        stored = f.attrs.get("key")
        if stored is None:
            raise CacheKeyError(f"{str(self.path)!r} is not a feature cache (no key attribute); use another path")
        if json.loads(stored) != json.loads(json.dumps(self.key, sort_keys=True)):
            theirs = json.loads(stored)
            diff = {k: (theirs.get(k), self.key.get(k))
                    for k in set(theirs) | set(self.key) if theirs.get(k) != self.key.get(k)}
            raise CacheKeyError(
                f"cache file {str(self.path)!r} holds features for another configuration "
                f"(field: (in file, requested) = {diff}). Use a cache directory (one file per key) or another file."
            )

    @property
    def n_complete(self) -> int:
        """Rows recorded complete."""
        if not self.path.exists():
            return 0
        with self._reading() as f:
            return int(f.attrs.get("n_complete", 0))

    @property
    def stitched(self) -> bool:
        """Whether the file is stitched from shard files (:meth:`stitch`)."""
        if not self.path.exists():
            return False
        with self._reading() as f:
            return bool(shard_files(f))

    def index(self) -> dict[str, int]:
        """Map image key → row, over complete rows only."""
        if not self.path.exists():
            return {}
        with self._reading() as f:
            n = int(f.attrs.get("n_complete", 0))
            keys = f["keys"][:n] if "keys" in f else []
        return {k.decode(): i for i, k in enumerate(keys)}

    def lookup(self, keys: Sequence[str]) -> np.ndarray:
        """Row of each key, ``-1`` where absent (complete rows only)."""
        if not self.path.exists() or not len(keys):
            return np.full(len(keys), -1, np.int64)
        storable = np.array([k.isascii() and len(k) <= 40 for k in keys])  # the only keys /keys can hold
        wanted = np.array([k if ok else "" for k, ok in zip(keys, storable)], dtype="S40")
        with self._reading() as f:
            rows = self._find(f, wanted, int(f.attrs.get("n_complete", 0)))[0]
        rows[~storable] = -1
        return rows

    def _find(self, f: h5py.File, keys: np.ndarray, n: int,
              index: KeyIndex | None = None) -> tuple[np.ndarray, bool]:
        """Rows of ``S40`` keys among the ``n`` complete rows (the index, then the rows it does not cover), and
        whether the index proved sound."""
        index = index or KeyIndex(f)
        try:
            covered = index.covered(n)
            rows, suspect = index.find(keys, n) if covered else (np.full(len(keys), -1, np.int64), False)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            log.warning("the key index of %s is unreadable (%s); searching its keys", self.path, exc)
            suspect = True
        if suspect:
            covered, rows = 0, np.full(len(keys), -1, np.int64)
        missing = np.flatnonzero(rows < 0)
        if covered < n and missing.size:
            tail = self._tail_keys(f, covered, n)
            rows[missing] = [tail.get(keys[i], -1) for i in missing]
        return rows, not suspect

    def _tail_keys(self, f: h5py.File, start: int, n: int) -> dict[bytes, int]:
        """Key → row over rows ``start:n``, kept in memory per file and extended as the file grows."""
        st = os.fstat(f.id.get_vfd_handle())
        identity = (str(f.attrs.get("index_id", "")), st.st_dev, st.st_ino)
        if self._tail is None or self._tail[:2] != (identity, start) or self._tail[2] > n:
            self._tail = (identity, start, start, {})
        _, _, stop, tail = self._tail
        for row, k in enumerate(f["keys"][stop:n].tolist(), start=stop):
            tail.setdefault(k, row)
        self._tail = (identity, start, n, tail)
        return tail

    def cuts(self) -> list[str]:
        """Cut points stored in the file."""
        if not self.path.exists():
            return []
        with self._reading() as f:
            return list(f["features"]) if "features" in f else []

    def read(self, rows: np.ndarray, cuts: Sequence[str]) -> dict[str, np.ndarray]:
        """Features of the given rows (any order, repeats allowed) for each cut point."""
        rows = np.asarray(rows, dtype=np.int64)
        uniq, inverse = np.unique(rows, return_inverse=True)
        out = {}
        with self._reading() as f:
            n = int(f.attrs.get("n_complete", 0))
            if len(uniq) and (uniq[0] < 0 or uniq[-1] >= n):
                raise IndexError(f"rows out of range for {self.path} (complete rows: {n})")
            self._check_versions(f, uniq)
            for cut in cuts:
                if cut not in f["features"]:
                    raise KeyError(f"cut point {cut!r} is not stored in {self.path}; stored: {list(f['features'])}")
                ds = f["features"][cut]
                if not len(uniq):
                    block = np.empty((0, ds.shape[1]), ds.dtype)
                else:
                    block = ds[:n][uniq] if len(uniq) > n // 4 else ds[uniq]
                out[cut] = np.asarray(block, dtype=np.float32)[inverse]
        return out

    def _check_versions(self, f: h5py.File, rows: np.ndarray) -> None:
        """Warn (once per file and versions) when rows were computed with other torch/torchvision/Pillow versions."""
        current = software_versions()
        if set(json.loads(f.attrs.get("versions_seen", "[]"))) <= {current} or not len(rows) or "versions" not in f:
            return
        ds = f["versions"]
        recorded = ds[: int(rows[-1]) + 1][rows] if len(rows) > len(ds) // 4 else ds[rows]
        other = sorted({v.decode() if isinstance(v, bytes) else v for v in recorded} - {current, ""})
        if other:
            _warn_once(self.path, f"versions {other}", f"cache file {str(self.path)!r} holds rows computed with "
                       f"{', '.join(other)}; this process runs {current}. Features may differ in the last bits; "
                       "use another cache path to recompute them with these versions.")

    def append(self, keys: Sequence[str], paths: Sequence[str], features: Mapping[str, np.ndarray],
               meta: Mapping[str, object] | None = None) -> None:
        """Append rows (skipping keys already complete) and record them complete.

        Parameters
        ----------
        keys : sequence of str
            Content hashes of the rows.
        paths : sequence of str
            Where each row came from.
        features : mapping
            Cut point → (len(keys), D) array.
        meta : mapping, optional
            Extra attributes written when the file is created (backbone, weights label …).
        """
        if not len(keys):
            return
        try:
            self.lock.acquire()
        except OSError as exc:
            raise OSError(f"cannot write cache file {str(self.path)!r}: its lock file cannot be created ({exc}); "
                          "make the folder writable or pass another cache path") from exc
        try:
            if self.path.exists():
                self._append_existing(keys, paths, features, meta)
            else:
                self._create(keys, paths, features, meta)
        finally:
            self.lock.release()

    def _create(self, keys, paths, features, meta) -> None:
        """Write a new file under a temporary name; rename it into place once key and rows are on disk (lock held)."""
        with replacing(self.path, ".new") as tmp, h5py.File(tmp, "w") as f:
            self._append_to(f, keys, paths, features, meta)

    def _append_existing(self, keys, paths, features, meta) -> None:
        """Append to the existing file; rebuild it from its complete rows when the append fails, or first when it is
        stitched from shards (its rows are then copied into a real file, no longer backed by them) (lock held)."""
        f = self._open("a")
        complete, stitched = 0, False
        try:
            with f:
                complete = int(f.attrs.get("n_complete", 0))
                stitched = bool(shard_files(f))
                if not stitched:
                    self._append_to(f, keys, paths, features, meta)
                    return
        except (OSError, RuntimeError) as exc:
            if not complete:
                raise
            log.warning("appending to %s failed (%s); rebuilding it from its %d complete rows", self.path, exc,
                        complete)
        if stitched:
            log.info("%s is stitched from shard files: copying its %d rows into a real file before appending",
                     self.path, complete)
        self._rebuild()
        with self._open("a") as f:
            self._append_to(f, keys, paths, features, meta)

    def _append_to(self, f: h5py.File, keys: Sequence[str], paths: Sequence[str],
                   features: Mapping[str, np.ndarray], meta: Mapping[str, object] | None) -> None:
        if "key" not in f.attrs:
            f.attrs["key"] = json.dumps(self.key, sort_keys=True)
            f.attrs["key_hash"] = self.hash
            f.attrs["format"] = FORMAT
            f.attrs["n_complete"] = 0
            for name, value in (meta or {}).items():
                f.attrs[name] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
            f.attrs["index_id"] = uuid.uuid4().hex
        else:
            self._check_key(f)
        n = int(f.attrs["n_complete"])
        index = KeyIndex(f)
        index.prepare(n)
        wanted = np.array(keys, dtype="S40")
        found, sound = self._find(f, wanted, n, index)
        if not sound:
            log.warning("the key index of %s pointed at rows of other keys; rebuilding it from its keys", self.path)
            index.build(n)
        keep, seen = [], set()
        for i, k in enumerate(wanted.tolist()):
            if found[i] < 0 and k not in seen:
                seen.add(k)
                keep.append(i)
        if not keep:
            return
        m = n + len(keep)
        seen_versions = json.loads(f.attrs.get("versions_seen", "[]"))
        if software_versions() not in seen_versions:
            f.attrs["versions_seen"] = json.dumps(sorted([*seen_versions, software_versions()]))
        self._write(f, "versions", np.array([software_versions()] * len(keep), dtype=object), n, m)
        self._write(f, "keys", np.array([keys[i] for i in keep], dtype="S40"), n, m)
        self._write(f, "paths", np.array([str(paths[i]) for i in keep], dtype=object), n, m)
        for cut, arr in features.items():
            self._write(f, f"features/{cut}", np.asarray(arr, dtype=np.float32)[keep], n, m)
        index.insert(wanted[keep], n, m)
        _sync(f)
        self._commit(f, m)

    @staticmethod
    def _commit(f: h5py.File, n_complete: int) -> None:
        """Record the rows up to ``n_complete`` complete (after they are on disk) and make that durable."""
        f.attrs["n_complete"] = n_complete
        _sync(f)

    def _rebuild(self) -> None:
        """Put a fresh copy of the complete rows in place of the file (:func:`featurize.cache_repair.rebuild`; lock
        held)."""
        rebuild(self.path, lambda: self._open("r"))

    _write = staticmethod(write_rows)
    """Write rows of one dataset (:func:`featurize.cache_format.write_rows`): every append goes through it."""
