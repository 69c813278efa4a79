"""The cache's persistent key index: lost, stale, foreign or corrupt, it never yields a wrong or incomplete row."""

from __future__ import annotations

import errno
import hashlib
import os

import h5py
import numpy as np
import pytest

from featurize.cache import FeatureCache
from pipelines.cache_scale import CACHE_SCALE_COLUMNS, format_cache_scale, run_cache_scale

KEY = {"a": 1}


def _batch(b: int, n: int = 4) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    keys = [hashlib.sha1(f"{b}-{i}".encode()).hexdigest() for i in range(n)]
    return keys, [f"/data/img_{b}_{i}.png" for i in range(n)], {"x": np.full((n, 3), b, np.float32)}


def _filled(path, batches=range(6), n: int = 4) -> FeatureCache:
    cache = FeatureCache(path, KEY)
    for b in batches:
        cache.append(*_batch(b, n))
    return cache


def _all_keys(batches=range(6), n: int = 4) -> list[str]:
    return [k for b in batches for k in _batch(b, n)[0]]


def _expect_rows(cache: FeatureCache, batches=range(6), n: int = 4) -> None:
    keys = _all_keys(batches, n)
    absent = [hashlib.sha1(f"absent-{i}".encode()).hexdigest() for i in range(5)]
    rows = cache.lookup([*keys, *absent])
    np.testing.assert_array_equal(rows, [*range(len(keys)), *[-1] * len(absent)])
    np.testing.assert_array_equal(cache.read(rows[: len(keys)], ["x"])["x"][:, 0],
                                  [b for b in batches for _ in range(n)])


def _reappend_adds_nothing(cache: FeatureCache, batches=range(6), n: int = 4) -> None:
    before = cache.n_complete
    for b in batches:
        cache.append(*_batch(b, n))
    assert cache.n_complete == before, "keys already stored must not be appended again"


def test_a_lost_index_is_rebuilt_from_the_keys_and_equal(tmp_path):
    path = tmp_path / "c.h5"
    cache = _filled(path, n=300)
    with h5py.File(path, "r") as f:
        original = f["index"][:]
    with h5py.File(path, "a") as f:
        del f["index"]
    _expect_rows(cache, n=300)
    _reappend_adds_nothing(cache, n=300)
    with h5py.File(path, "r") as f:
        assert f.attrs["index_rows"] == f.attrs["n_complete"] == 1800
        np.testing.assert_array_equal(np.sort(f["index"][:], axis=0), np.sort(original, axis=0))
    _expect_rows(FeatureCache(path, KEY), n=300)


@pytest.mark.parametrize("covered", [0, 9])
def test_rows_the_index_does_not_cover_are_found_and_indexed_by_the_next_append(tmp_path, covered):
    """A file written before the index existed (covered=0) or whose index lags its complete rows."""
    path = tmp_path / "c.h5"
    _filled(path)
    with h5py.File(path, "a") as f:
        table = f["index"][:]
        table[table[:, 1] > covered] = 0  # forget every row from `covered` on
        f["index"][:] = table
        f.attrs["index_rows"] = covered
        if not covered:
            del f["index"], f.attrs["index_id"]
    cache = FeatureCache(path, KEY)
    _expect_rows(cache)
    _reappend_adds_nothing(cache)
    with h5py.File(path, "r") as f:
        assert f.attrs["index_rows"] == 24
    _expect_rows(cache)


def test_lookups_never_return_rows_beyond_n_complete_after_a_crash(tmp_path, monkeypatch):
    path = tmp_path / "c.h5"
    cache = _filled(path, range(2))
    real_commit = FeatureCache._commit

    def crash(f, n_complete):
        raise KeyboardInterrupt

    monkeypatch.setattr(FeatureCache, "_commit", staticmethod(crash))
    with pytest.raises(KeyboardInterrupt):
        cache.append(*_batch(7))
    monkeypatch.setattr(FeatureCache, "_commit", staticmethod(real_commit))
    with h5py.File(path, "r") as f:
        assert f.attrs["n_complete"] == 8 and f.attrs["index_rows"] == 12, "the crash left the index ahead"
    crashed = _batch(7)[0]
    np.testing.assert_array_equal(cache.lookup(crashed), [-1] * 4)
    cache.append(*_batch(8))  # overwrites the crashed rows 8..11 with other keys
    np.testing.assert_array_equal(cache.lookup(crashed), [-1] * 4)
    _expect_rows(cache, [0, 1, 8])
    cache.append(*_batch(7))
    _expect_rows(cache, [0, 1, 8, 7])


def test_an_index_from_another_file_is_not_used(tmp_path):
    """A file's /index copied from another file (same key, some rows in common) is ignored and rebuilt."""
    ours, theirs = tmp_path / "ours.h5", tmp_path / "theirs.h5"
    cache = _filled(ours)
    _filled(theirs, [0, 7, 8, 3, 9, 5])
    with h5py.File(ours, "a") as dst, h5py.File(theirs, "r") as src:
        del dst["index"]
        src.copy("index", dst)
    _expect_rows(cache)
    _reappend_adds_nothing(cache)
    _expect_rows(cache)


def test_a_replaced_file_is_looked_up_afresh(tmp_path, monkeypatch):
    """One FeatureCache object, its file replaced by another (read-only place: the in-memory tail index)."""
    path, other = tmp_path / "c.h5", tmp_path / "other.h5"
    cache = _filled(path)
    _filled(other, range(6, 12))
    for p in (path, other):
        with h5py.File(p, "a") as f:
            del f["index"]
    _no_lock(monkeypatch, path)
    _expect_rows(cache)
    os.replace(other, path)
    _expect_rows(cache, range(6, 12))
    np.testing.assert_array_equal(cache.lookup(_all_keys()), [-1] * 24)


def _no_lock(monkeypatch, path) -> None:
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path) + ".lock")

    monkeypatch.setattr("filelock.FileLock.acquire", refuse)


def test_a_read_only_reader_finds_every_row_without_an_index_and_writes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "c.h5"
    _filled(path)
    with h5py.File(path, "a") as f:
        del f["index"]
    before = path.read_bytes()
    _no_lock(monkeypatch, path)
    with pytest.warns(RuntimeWarning, match="without the lock"):
        cache = FeatureCache(path, KEY)
        _expect_rows(cache)
    _expect_rows(cache)
    assert path.read_bytes() == before


@pytest.mark.parametrize("damage", ["two rows swapped", "rows shuffled", "wrong shape", "garbage"])
def test_a_corrupt_index_never_yields_another_keys_row_and_is_rebuilt(tmp_path, damage):
    path = tmp_path / "c.h5"
    cache = _filled(path)
    with h5py.File(path, "a") as f:
        table = f["index"][:]
        if damage == "two rows swapped":
            at = {row - 1: slot for slot, row in enumerate(table[:, 1]) if row}
            table[[at[5], at[6]], 1] = table[[at[6], at[5]], 1]
            f["index"][:] = table
        elif damage == "rows shuffled":
            used = np.flatnonzero(table[:, 1])
            table[used, 1] = np.roll(table[used, 1], 1)
            f["index"][:] = table
        elif damage == "wrong shape":
            del f["index"]
            f.create_dataset("index", data=table[:, :1])
            f["index"].attrs["index_id"] = f.attrs["index_id"]
        else:
            f["index"][:] = np.random.default_rng(0).integers(1, 24, table.shape)
    _expect_rows(cache)
    _reappend_adds_nothing(cache)
    _expect_rows(cache)
    with h5py.File(path, "r") as f:
        table = f["index"][:]
    assert sorted(table[table[:, 1] > 0, 1] - 1) == list(range(24)), "rebuilt: one slot per row"


def test_keys_no_row_can_hold_are_absent(tmp_path):
    cache = _filled(tmp_path / "c.h5", range(1))
    stored = _batch(0)[0][0]
    np.testing.assert_array_equal(cache.lookup(["clé", stored + "0", stored, ""]), [-1, -1, 0, -1])


def test_a_batch_with_repeated_keys_stores_the_first_once(tmp_path):
    cache = FeatureCache(tmp_path / "c.h5", KEY)
    keys, paths, feats = _batch(0)
    cache.append([keys[0], keys[1], keys[0]], paths[:3], {"x": np.arange(9, dtype=np.float32).reshape(3, 3)})
    assert cache.n_complete == 2
    np.testing.assert_array_equal(cache.read(cache.lookup([keys[0]]), ["x"])["x"], [[0, 1, 2]])


def test_the_index_grows_and_big_blocks_are_indexed(tmp_path):
    cache = FeatureCache(tmp_path / "c.h5", KEY)
    for b, n in enumerate([700, 5000, 3, 1, 3000]):
        cache.append(*_batch(b, n))
    keys = [k for b, n in enumerate([700, 5000, 3, 1, 3000]) for k in _batch(b, n)[0]]
    np.testing.assert_array_equal(cache.lookup(keys), np.arange(len(keys)))
    with h5py.File(cache.path, "r") as f:
        assert f["index"].shape[0] >= 8 * len(keys) // 5


def test_the_cache_scale_benchmark_reports_each_size_and_the_ratio(tmp_path):
    df = run_cache_scale(sizes=(100, 400), dim=4, batch=8, repeats=2, directory=tmp_path)
    assert list(df.columns) == CACHE_SCALE_COLUMNS and list(df["rows"]) == [100, 400]
    assert (df["batch_ms"] > 0).all()
    text = format_cache_scale(df)
    assert "ratio 400 / 100 rows" in text and "lookup ms" in text
    assert list(tmp_path.iterdir()) == [], "the benchmark's files are removed"


def test_a_file_a_full_disk_cut_short_gets_its_index_rebuilt(tmp_path):
    """The zeroed tail a disk-full extension restores may have held index slots: the index is rebuilt, not trusted."""
    import subprocess
    import sys
    from pathlib import Path

    from test_cache_file import FILL_UNTIL_FULL

    path = tmp_path / "full.h5"
    done = subprocess.run([sys.executable, "-c", FILL_UNTIL_FULL, str(path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}, timeout=120)
    assert "disk full" in done.stdout, done.stderr[-2000:]
    cache = FeatureCache(path, KEY)
    with h5py.File(path, "r") as f:
        assert f.attrs["index_rows"] == 0
    keys = [hashlib.sha1(f"{b}-{i}".encode()).hexdigest() for b in range(4) for i in range(64)]
    np.testing.assert_array_equal(cache.lookup(keys), np.arange(256))
    cache.append(keys[:8], keys[:8], {"x": np.zeros((8, 2048), np.float32)})
    assert cache.n_complete == 256
    with h5py.File(path, "r") as f:
        assert f.attrs["index_rows"] == 256
