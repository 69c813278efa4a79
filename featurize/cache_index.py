"""The key index of a feature cache file: key → row lookups and appends at a cost that does not grow with the file.

``/index`` is an open-addressing hash table (linear probing, a power-of-two capacity kept at most 5/8 full) of each
key's 63-bit fingerprint and row, written with the rows it indexes, before ``n_complete`` is raised, and fsynced with
them.  The file's ``index_rows`` attribute says how many rows it covers.  The index is only a hint: every row it
returns is checked against ``/keys`` and against ``n_complete``, so it never yields a row that is not complete or
holds another key.  Rows it does not cover (a file written before the index existed, or rebuilt after damage) are
looked up in ``/keys`` and indexed by the next append; an index that is missing, malformed, ahead of ``n_complete``
(a crash inside an append) or caught pointing at another key's row is rebuilt from ``/keys`` by the next append
(under the lock).  Readers never write it.  The index lives inside the HDF5 file rather than beside it, so the
cache's crash guarantees cover it and it cannot outlive the file it describes.
"""

from __future__ import annotations

import uuid

import h5py
import numpy as np

__all__ = ["KeyIndex", "fingerprints"]

_INDEX = "index"
_INDEX_MIN = 1024
_WINDOW = 16
_BULK = 4096


def fingerprints(keys: np.ndarray) -> np.ndarray:
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


class KeyIndex:
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
        fps = fingerprints(keys)
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
        for fp, row in zip(fingerprints(keys).tolist(), range(start, stop)):
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
        fps = fingerprints(self.f["keys"][:n]) if n else np.zeros(0, np.int64)
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
