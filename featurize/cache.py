"""HDF5 activation cache: one file per (backbone, weights identity, preprocessing, pooling, precision) key.

Layout::

    attrs: key (JSON of the key fields), key_hash, n_complete, format, versions_seen (JSON list), index_id (random,
           per file), index_rows (rows the key index covers)
    /keys            (n,) S40      sha1 of each image's content
    /paths           (n,) str      where each row came from (informative only)
    /versions        (n,) str      torch/torchvision/Pillow versions each row was computed with
    /features/<cut>  (n, D) float32, chunked, resizable, uncompressed
    /index           (capacity, 2) int64  key index: (fingerprint, row + 1) slots; its index_id attr must be the
                     file's, else it is ignored

Every open, for reading or writing, happens under a file lock (``<file>.lock``), so readers never meet a file in
the middle of an append (HDF5's own locking would refuse them).  Rows are appended per batch; the file is opened,
extended, flushed and closed for every batch, and ``n_complete`` is raised last.  After a crash, rows beyond
``n_complete`` are ignored and overwritten, so a resumed run yields the same rows as an uninterrupted one.  HDF5 is
not crash-safe: a SIGKILL in the middle of a flush can leave metadata past the complete rows unwritable.  When an
append then fails, the complete rows are copied into a fresh file that atomically replaces the damaged one (keeping
its permissions, and its owner where allowed), and the append is retried.  A new file is written under a temporary
name (``<file>.new``) and renamed into place once its key and first rows are on disk, so a crash during the first
append leaves no file at all.  Rows are fsynced before ``n_complete`` is raised, and a rebuilt or new file before it
is renamed into place, so ``n_complete`` never counts rows a power cut could lose.  A write that fails for lack
of space can leave a file shorter than HDF5's recorded end; when no
complete row lies in the missing tail, the file is extended back (zeros) so it opens again.  A file held open by
another program, or unreadable otherwise, is reported and left as it is.  No file is ever modified without the
lock: a reader that cannot take it (read-only folder) reads unlocked, with a warning, and repairs nothing.  Each row
records the torch, torchvision and Pillow versions it was computed with (``/versions``); reading rows computed with
other versions warns, since features may then differ in the last bits.  No h5py handle outlives a call, so nothing
is shared across fork.

Lookups and appends cost the same whatever the number of rows: ``/index`` is an open-addressing hash table (linear
probing, a power-of-two capacity kept at most 5/8 full) of each key's 63-bit fingerprint and row, written with the
rows it indexes, before ``n_complete`` is raised, and fsynced with them.  ``index_rows`` says how many rows it
covers.  The index is only a hint: every row it returns is checked against ``/keys`` and against ``n_complete``, so
it never yields a row that is not complete or holds another key.  Rows it does not cover (a file written before the
index existed, or rebuilt after damage) are looked up in ``/keys`` and indexed by the next append; an index that is
missing, malformed, ahead of ``n_complete`` (a crash inside an append) or caught pointing at another key's row is
rebuilt from ``/keys`` by the next append (under the lock).  Readers never write it: a reader in a read-only place
keeps the uncovered rows' keys in memory, per file.  The index lives inside the HDF5 file rather than beside it, so
the crash guarantees above cover it and it cannot outlive the file it describes.

A stitched cache (:meth:`FeatureCache.stitch`, written by sharded extraction) holds virtual datasets over shard
files kept beside it: it is read like any cache, refused while a shard file is missing, and copied into a real file
by its first append.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import re
import stat
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import h5py
import numpy as np
from filelock import FileLock

__all__ = ["FeatureCache", "CacheKeyError", "key_hash", "software_versions"]

log = logging.getLogger(__name__)

FORMAT = 1
_CHUNK_BYTES = 4 << 20
_COPY_ROWS = 4096
_INDEX = "index"
_INDEX_MIN = 1024
_WINDOW = 16
_BULK = 4096
_CUT_SHORT = re.compile(r"truncated file: eof = (?P<eof>\d+),.*stored_eof = (?P<stored>\d+)")


_WARNED: set[tuple[str, str]] = set()


def _warn_once(path: Path, what: str, message: str) -> None:
    if (str(path), what) not in _WARNED:
        _WARNED.add((str(path), what))
        warnings.warn(message, RuntimeWarning, stacklevel=4)


@functools.lru_cache(maxsize=1)
def software_versions() -> str:
    """The torch, torchvision and Pillow versions features are computed with, as one string (stored per row)."""
    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "absent"

    return ";".join(f"{name}={of(name)}" for name in ("torch", "torchvision", "Pillow"))


def _sync(f: h5py.File) -> None:
    """Flush an open HDF5 file and fsync it, so what was written survives a power cut."""
    f.flush()
    os.fsync(f.id.get_vfd_handle())


def _fsync_path(path: Path) -> None:
    """fsync a closed file, or a directory (so a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_ownership(src: Path, dst: Path) -> None:
    """Give ``dst`` the permission bits of ``src``, and its owner and group where this process may."""
    st = src.stat()
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    try:
        os.chown(dst, st.st_uid, st.st_gid)
    except OSError:
        log.debug("cannot give %s the owner of %s", dst, src)


def _row_datasets(f: h5py.File) -> list[str]:
    """Names of the datasets that hold one row per image and matter (``/keys`` and every ``/features/<cut>``)."""
    return ["keys", *(f"features/{cut}" for cut in f.get("features", {}))]


def _fingerprints(keys: np.ndarray) -> np.ndarray:
    """63-bit hashes of ``S40`` keys (vectorised; the low bits pick the home slot in the index)."""
    words = np.ascontiguousarray(keys, dtype="S40").view(np.uint8).reshape(-1, 40).view("<u8")
    h = np.full(len(words), 0xCBF29CE484222325, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(words.shape[1]):
            h = (h ^ words[:, j]) * np.uint64(0x100000001B3)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(1)).astype(np.int64)


class _KeyIndex:
    """The persistent key → row hash table of an open cache file (see the module docstring)."""

    def __init__(self, f: h5py.File):
        self.f = f
        self.slots: dict[int, tuple[int, int]] = {}

    def table(self) -> h5py.Dataset | None:
        """The table, or None when it is missing, malformed or not this file's (its ``index_id`` differs)."""
        ds = self.f.get(_INDEX)
        if (not isinstance(ds, h5py.Dataset) or ds.ndim != 2 or ds.shape[1] != 2 or ds.dtype != np.int64
                or ds.shape[0] < _INDEX_MIN or ds.shape[0] & (ds.shape[0] - 1)
                or ds.attrs.get("index_id") != self.f.attrs.get("index_id")):
            return None
        return ds

    def covered(self, n: int) -> int:
        """Rows below which every complete row is in the table (0 without a usable table)."""
        return min(int(self.f.attrs.get("index_rows", 0)), n) if self.table() is not None else 0

    def find(self, keys: np.ndarray, n: int) -> tuple[np.ndarray, bool]:
        """Row of each ``S40`` key among the first ``n`` rows (``-1``: not in the table), and whether the table
        proved untrustworthy: it pointed a key at a complete row holding another key, or it misses one of three
        rows it claims to cover (the first, middle and last: a check that costs the same at any size)."""
        ds = self.table()
        cap = ds.shape[0]
        covered = self.covered(n)
        checks = sorted({0, covered // 2, covered - 1}) if covered else []
        keys = np.concatenate([keys, self.f["keys"][checks]]) if checks else keys
        fps = _fingerprints(keys)
        whole = ds[:] if len(keys) * _WINDOW > cap // 8 else None
        candidates: list[list[int]] = [[] for _ in range(len(keys))]
        todo, offset = np.arange(len(keys)), np.zeros(len(keys), np.int64)
        while todo.size and offset[todo[0]] < cap:
            window = self._windows(ds, whole, (fps[todo] + offset[todo]) & (cap - 1))
            empty = window[..., 1] == 0
            stop = np.where(empty.any(1), empty.argmax(1), _WINDOW)
            hits = (window[..., 0] == fps[todo, None]) & (np.arange(_WINDOW) < stop[:, None])
            for i, j in zip(*np.nonzero(hits)):
                candidates[todo[i]].append(int(window[i, j, 1]) - 1)
            todo = todo[stop == _WINDOW]
            offset[todo] += _WINDOW
        rows, suspect = self._verified(keys, candidates, n)
        first = len(keys) - len(checks)
        return rows[:first], suspect or rows[first:].tolist() != checks

    def _verified(self, keys: np.ndarray, candidates: list[list[int]], n: int) -> tuple[np.ndarray, bool]:
        """The first candidate row of each key that is complete and holds that key."""
        rows = np.full(len(keys), -1, np.int64)
        wanted = np.unique([r for c in candidates for r in c if 0 <= r < n]).astype(np.int64)
        if not wanted.size:
            return rows, False
        stored = self.f["keys"][:n][wanted] if len(wanted) > n // 4 else self.f["keys"][wanted]
        at = dict(zip(wanted.tolist(), stored.tolist()))
        suspect = False
        for i, rows_of_key in enumerate(candidates):
            good = [r for r in rows_of_key if at.get(r) == keys[i]]
            suspect |= len(good) < sum(r in at for r in rows_of_key)
            rows[i] = min(good, default=-1)
        return rows, suspect

    def _windows(self, ds: h5py.Dataset, whole: np.ndarray | None, starts: np.ndarray) -> np.ndarray:
        """The ``_WINDOW`` slots from each start (wrapping), remembered for an insert in the same append."""
        cap = ds.shape[0]
        if whole is not None:
            return whole[(starts[:, None] + np.arange(_WINDOW)) & (cap - 1)]
        out = np.empty((len(starts), _WINDOW, 2), np.int64)
        for i, start in enumerate(starts.tolist()):
            stop = start + _WINDOW
            out[i] = ds[start:stop] if stop <= cap else np.concatenate([ds[start:], ds[: stop - cap]])
            for j, (fp, row) in enumerate(out[i].tolist()):
                self.slots.setdefault((start + j) & (cap - 1), (fp, row))
        return out

    def prepare(self, n: int) -> None:
        """Make the table cover exactly the ``n`` complete rows (lock held): index the uncovered tail, or rebuild
        the table when it is missing, malformed or ahead of ``n`` (an append died before raising ``n_complete``).

        Raises
        ------
        RuntimeError
            When ``/keys`` holds fewer than ``n`` rows (the file is then left as it is, for a rebuild).
        """
        stored = len(self.f["keys"]) if "keys" in self.f else 0
        if stored < n:
            raise RuntimeError(f"keys in {self.f.filename} has {stored} rows, fewer than the {n} recorded complete")
        if "index_id" not in self.f.attrs:
            self.f.attrs["index_id"] = uuid.uuid4().hex
        indexed = int(self.f.attrs.get("index_rows", 0))
        if self.table() is None or indexed > n:
            self.build(n)
        elif indexed < n:
            self.insert(self.f["keys"][indexed:n], indexed, n)

    def insert(self, keys: np.ndarray, start: int, stop: int) -> None:
        """Index rows ``start:stop`` (holding ``keys``), rows below ``start`` being indexed already (lock held)."""
        ds = self.table()
        cap = ds.shape[0]
        if len(keys) > _BULK or 8 * stop > 5 * cap:
            self.build(stop)
            return
        slots, dirty = self.slots, []
        for fp, row in zip(_fingerprints(keys).tolist(), range(start, stop)):
            p = fp & (cap - 1)
            while True:
                if p not in slots:
                    self._windows(ds, None, np.array([p]))
                if slots[p][1] == 0:
                    break
                p = (p + 1) & (cap - 1)
            slots[p] = (fp, row + 1)
            dirty.append(p)
        for p in sorted(dirty):
            ds[p] = np.array(slots[p], np.int64)
        self.f.attrs["index_rows"] = stop

    def build(self, n: int) -> None:
        """(Re)build the table from the first ``n`` rows of ``/keys`` in one vectorised pass (lock held)."""
        fps = _fingerprints(self.f["keys"][:n]) if n else np.zeros(0, np.int64)
        cap = max(_INDEX_MIN, 1 << max(0, 2 * n - 1).bit_length())
        table = np.zeros((cap, 2), np.int64)
        pos, pending = fps & (cap - 1), np.arange(n)
        while pending.size:
            free = np.flatnonzero(table[pos[pending], 1] == 0)
            slots, first = np.unique(pos[pending][free], return_index=True)
            winners = pending[free[first]]
            table[slots, 0], table[slots, 1] = fps[winners], winners + 1
            left = np.ones(len(pending), bool)
            left[free[first]] = False
            pending = pending[left]
            pos[pending] = (pos[pending] + 1) & (cap - 1)
        ds = self.table()
        if ds is None and _INDEX in self.f:
            del self.f[_INDEX]
        if ds is None:
            ds = self.f.create_dataset(_INDEX, shape=(cap, 2), maxshape=(None, 2), dtype=np.int64, chunks=(1024, 2))
        ds.resize(cap, axis=0)
        ds[:] = table
        ds.attrs["index_id"] = self.f.attrs["index_id"]
        self.slots = {}
        self.f.attrs["index_rows"] = n


def _shard_files(f: h5py.File) -> list[str]:
    """The shard files a stitched cache's virtual datasets read (relative to it); empty for an ordinary cache."""
    keys = f.get("keys")
    if not isinstance(keys, h5py.Dataset) or not keys.is_virtual:
        return []
    return sorted({m.file_name for name in _row_datasets(f) for m in f[name].virtual_sources()})


def _runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """``(position, first, stop)`` of each run of consecutive values in an increasing array of rows."""
    if not len(rows):
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts, stops = np.r_[0, breaks], np.r_[breaks, len(rows)]
    return [(int(a), int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops)]


class CacheKeyError(ValueError):
    """A cache file was written for another backbone, weights, preprocessing or pooling."""


def key_hash(key: Mapping[str, object]) -> str:
    """16-hex-digit hash of a key mapping (order-independent)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


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
                n = int(f.attrs.get("n_complete", 0))
                keys = f["keys"][:n].tolist() if n else []
                kept = np.array([i for i, k in enumerate(keys) if not (k in seen or seen.add(k))], np.int64)
                strings = {name: cls._read_strings(f, name, 0, n)[kept] for name in ("paths", "versions")}
                shapes = {name: (f[name].shape, f[name].dtype) for name in _row_datasets(f)} if n else {}
                attrs = dict(f.attrs)
            if len(kept):
                parts.append((shard.path, kept, shapes, strings, attrs))
        with out.lock:
            out.refuse_unless_stitched()
            out._write_stitched(parts)
        return out

    def refuse_unless_stitched(self) -> None:
        """Raise ``FileExistsError`` when the file exists and is an ordinary cache (stitching would lose its rows)."""
        if self.path.exists() and not self.stitched:
            raise FileExistsError(f"{str(self.path)!r} is an ordinary cache, not a stitched one; move it away (or "
                                  "pass another --out) to stitch the shards there")

    def _write_stitched(self, parts: list) -> None:
        """Write the stitched file under a temporary name and rename it into place (lock held)."""
        total = sum(len(kept) for _, kept, *_ in parts)
        tmp = self.path.with_name(self.path.name + ".new")
        try:
            with h5py.File(tmp, "w") as f:
                versions_seen = set()
                for _, _, _, _, attrs in parts:
                    versions_seen |= set(json.loads(attrs.get("versions_seen", "[]")))
                for name, value in (parts[0][4] if parts else {}).items():
                    if name not in ("index_rows", "index_id"):
                        f.attrs[name] = value
                f.attrs.update({"key": json.dumps(self.key, sort_keys=True), "key_hash": self.hash, "format": FORMAT,
                                "versions_seen": json.dumps(sorted(versions_seen)), "index_id": uuid.uuid4().hex})
                for name in (parts[0][2] if parts else {}):
                    shape, dtype = parts[0][2][name]
                    layout = h5py.VirtualLayout((total, *shape[1:]), dtype)
                    at = 0
                    for shard, kept, shapes, _, _ in parts:
                        source = h5py.VirtualSource(os.path.relpath(shard, self.path.parent), name,
                                                    shape=shapes[name][0], dtype=shapes[name][1])
                        for position, start, stop in _runs(kept):
                            layout[at + position: at + position + stop - start] = source[start:stop]
                        at += len(kept)
                    f.create_virtual_dataset(name, layout)
                for name in ("paths", "versions"):
                    values = np.concatenate([p[3][name] for p in parts]) if parts else np.zeros(0, object)
                    self._write(f, name, values.astype(object), 0, total)
                _KeyIndex(f).build(total)
                f.attrs["n_complete"] = total
            _fsync_path(tmp)
            os.replace(tmp, self.path)
            _fsync_path(self.path.parent)
        finally:
            tmp.unlink(missing_ok=True)

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
            if repair and self._extend_cut_short(exc):
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
        missing = [name for name in _shard_files(f) if not (self.path.parent / name).is_file()]
        if missing:
            f.close()
            raise OSError(f"cache file {str(self.path)!r} is stitched from shard files and some are missing: "
                          f"{', '.join(missing)} (looked for beside it); put them back, or rerun the extraction")
        return f

    def _extend_cut_short(self, exc: OSError) -> bool:
        """Give a file that a failed write left shorter than its recorded end (disk full) its missing tail back.

        HDF5 then opens it again: the rows already complete were written before and are intact, and the next append
        rebuilds the file if its tail is unusable.  Extending only adds zero bytes (sparse), so nothing is lost.
        Returns whether the file was extended.
        """
        match = _CUT_SHORT.search(str(exc))
        eof, stored = (int(match["eof"]), int(match["stored"])) if match else (0, 0)
        if stored <= eof or os.path.getsize(self.path) != eof:
            return False
        try:
            os.truncate(self.path, stored)
        except OSError:
            return False
        if not self._complete_rows_before(eof):
            os.truncate(self.path, eof)
            return False
        log.warning("cache file %s was cut short by a failed write (disk full?); extended it from %s to its recorded "
                    "%s bytes to recover its complete rows", self.path, match["eof"], match["stored"])
        try:
            with h5py.File(self.path, "a") as f:
                f.attrs["index_rows"] = 0  # its key index may have lost slots in the zeroed tail: rebuild it
        except OSError:
            log.debug("cannot mark the key index of %s for rebuilding", self.path)
        return True

    def _complete_rows_before(self, eof: int) -> bool:
        """Whether every stored chunk holding complete rows lies before byte ``eof`` (so none of them was lost)."""
        try:
            with h5py.File(self.path, "r") as f:
                n = int(f.attrs.get("n_complete", 0))
                for ds in (f[name] for name in _row_datasets(f) if name in f):
                    for i in range(ds.id.get_num_chunks()):
                        info = ds.id.get_chunk_info(i)
                        if info.chunk_offset[0] < n and info.byte_offset + info.size > eof:
                            return False
        except (OSError, RuntimeError, KeyError):
            return False
        return True

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
            return bool(_shard_files(f))

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
              index: _KeyIndex | None = None) -> tuple[np.ndarray, bool]:
        """Rows of ``S40`` keys among the ``n`` complete rows (the index, then the rows it does not cover), and
        whether the index proved sound."""
        index = index or _KeyIndex(f)
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
        tmp = self.path.with_name(self.path.name + ".new")
        try:
            with h5py.File(tmp, "w") as f:
                self._append_to(f, keys, paths, features, meta)
            _fsync_path(tmp)
            os.replace(tmp, self.path)
            _fsync_path(self.path.parent)
        finally:
            tmp.unlink(missing_ok=True)

    def _append_existing(self, keys, paths, features, meta) -> None:
        """Append to the existing file; rebuild it from its complete rows when the append fails, or first when it is
        stitched from shards (its rows are then copied into a real file, no longer backed by them) (lock held)."""
        f = self._open("a")
        complete, stitched = 0, False
        try:
            with f:
                complete = int(f.attrs.get("n_complete", 0))
                stitched = bool(_shard_files(f))
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
        index = _KeyIndex(f)
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
        """Copy the complete rows into a fresh file and atomically put it in place of this one (lock held).

        Raises
        ------
        OSError
            When the complete rows themselves cannot be read; the file is then left as it is.
        """
        tmp = self.path.with_name(self.path.name + ".rebuild")
        try:
            with self._open("r") as src, h5py.File(tmp, "w") as dst:
                for name, value in src.attrs.items():
                    if name != "index_rows":
                        dst.attrs[name] = value
                n = int(src.attrs["n_complete"])
                dst.attrs["n_complete"] = 0
                names = _row_datasets(src) if n else []
                short = {name: len(src[name]) for name in names if len(src[name]) < n}
                if short:
                    raise RuntimeError(f"datasets with fewer rows than the {n} recorded complete: {short}")
                for start in range(0, n, _COPY_ROWS):
                    stop = min(n, start + _COPY_ROWS)
                    for name in names:
                        self._write(dst, name, src[name][start:stop], start, stop)
                    for name in ("paths", "versions"):
                        self._write(dst, name, self._read_strings(src, name, start, stop), start, stop)
                dst.attrs["n_complete"] = n
            _fsync_path(tmp)
            _copy_ownership(self.path, tmp)
            os.replace(tmp, self.path)
            _fsync_path(self.path.parent)
        except (OSError, RuntimeError, KeyError) as exc:
            raise OSError(
                f"cache file {str(self.path)!r} could not be appended to, and copying its complete rows into a fresh "
                f"file failed too ({exc}). It was left untouched; check free disk space, or move it away (or pass "
                "another cache path) to start a fresh cache."
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _read_strings(src: h5py.File, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of an informative string dataset (paths, versions); ``""`` where missing/unreadable."""
        try:
            values = src[name][start:stop]
            if len(values) < stop - start:
                raise KeyError(name)
            return np.array([p.decode() if isinstance(p, bytes) else p for p in values], dtype=object)
        except (OSError, KeyError):
            return np.array([""] * (stop - start), dtype=object)

    @staticmethod
    def _write(f: h5py.File, name: str, data: np.ndarray, start: int, stop: int) -> None:
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
