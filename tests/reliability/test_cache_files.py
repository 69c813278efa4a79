"""Cache files in hostile places: no lock possible, foreign or garbage files, rebuilt files' permissions, durability
order (fsync before n_complete and before renames), rows from other library versions."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

import featurize.cache as cache_module
import featurize.once as once
from featurize.cache import CacheKeyError, FeatureCache

ROOT = Path(__file__).parents[2]
DAMAGED = ROOT / "tests" / "data" / "damaged_cache.h5"
KEY = {"a": 1}


def _batch(b: int) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    keys = [hashlib.sha1(f"{b}-{i}".encode()).hexdigest() for i in range(4)]
    return keys, [f"/data/img_{b}_{i}.png" for i in range(4)], {"x": np.full((4, 6), b, np.float32)}


def _no_lock(monkeypatch, path: Path) -> None:
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path) + ".lock")

    monkeypatch.setattr("filelock.FileLock.acquire", refuse)


def check_rebuild_keeps_permissions(tmp_path: Path) -> None:
    path = tmp_path / "damaged.h5"
    shutil.copy(DAMAGED, path)
    os.chmod(path, 0o640)
    keys, paths, _ = _batch(1000)
    FeatureCache(path, KEY).append(keys, paths, {"x": np.full((4, 6), 1000, np.float32),
                                                 "y": np.full((4, 3), -1000, np.float32)})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640, "a rebuild must keep the file's permissions"


def test_a_rebuild_keeps_the_file_permissions(tmp_path):
    check_rebuild_keeps_permissions(tmp_path)


def check_fsync_before_n_complete_and_before_renames(tmp_path: Path, monkeypatch) -> None:
    """Record fsyncs, n_complete writes and renames; every n_complete and rename follows an fsync of the data."""
    events: list[str] = []
    real_fsync, real_replace, real_set = os.fsync, os.replace, h5py.AttributeManager.__setitem__

    def fsync(fd):
        events.append("fsync")
        return real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        return real_replace(src, dst)

    def setitem(self, name, value):
        if name == "n_complete":
            events.append(f"n_complete={int(value)}")
        return real_set(self, name, value)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(h5py.AttributeManager, "__setitem__", setitem)
    cache = FeatureCache(tmp_path / "c.h5", KEY)
    cache.append(*_batch(0))
    cache.append(*_batch(1))
    raised = [i for i, e in enumerate(events) if e.startswith("n_complete=") and e != "n_complete=0"]
    assert raised, events
    for i in raised:
        assert events[i - 1] == "fsync", f"rows not fsynced before {events[i]}: {events}"
        assert "fsync" in events[i + 1:i + 2], f"{events[i]} not fsynced: {events}"
    for i in (i for i, e in enumerate(events) if e == "replace"):
        assert events[i - 1] == "fsync", f"file renamed into place before its fsync: {events}"
    assert events.count("replace") == 1, "the new file is renamed into place once"


def test_fsync_before_n_complete_and_before_renames(tmp_path, monkeypatch):
    check_fsync_before_n_complete_and_before_renames(tmp_path, monkeypatch)


CUT_SHORT = """
import hashlib, resource, signal, sys
import numpy as np
from featurize.cache import FeatureCache
cache = FeatureCache(sys.argv[1], {"a": 1})
for b in range(4):
    keys = [hashlib.sha1(f"{b}-{i}".encode()).hexdigest() for i in range(64)]
    cache.append(keys, keys, {"x": np.full((64, 2048), b, np.float32)})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (cache.path.stat().st_size + 100_000, resource.RLIM_INFINITY))
keys = [hashlib.sha1(f"big-{i}".encode()).hexdigest() for i in range(256)]
try:
    cache.append(keys, keys, {"x": np.full((256, 2048), 10, np.float32)})
except OSError as exc:
    print("disk full")
"""


def check_a_reader_without_the_lock_modifies_nothing(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "full.h5"
    done = subprocess.run([sys.executable, "-c", CUT_SHORT, str(path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert "disk full" in done.stdout, done.stderr[-2000:]
    before = path.read_bytes()
    _no_lock(monkeypatch, path)
    monkeypatch.setattr(once, "_SEEN", set())
    with pytest.warns(RuntimeWarning, match="without the lock") as caught:
        for _ in range(3):
            with pytest.raises(OSError, match="cannot be read as HDF5.*left untouched"):
                FeatureCache(path, KEY)
    assert sum("without the lock" in str(w.message) for w in caught) == 1, "warned once"
    assert path.read_bytes() == before, "a reader without the lock must not repair (truncate) the file"


def test_a_reader_without_the_lock_modifies_nothing(tmp_path, monkeypatch):
    check_a_reader_without_the_lock_modifies_nothing(tmp_path, monkeypatch)


def test_a_writer_without_the_lock_is_refused_clearly(tmp_path, monkeypatch):
    path = tmp_path / "c.h5"
    FeatureCache(path, KEY).append(*_batch(0))
    before = path.read_bytes()
    _no_lock(monkeypatch, path)
    monkeypatch.setattr(once, "_SEEN", set())
    with pytest.warns(RuntimeWarning, match="without the lock"):
        cache = FeatureCache(path, KEY)
        assert cache.n_complete == 4
    with pytest.raises(OSError, match=r"cannot write cache file .*c\.h5.*lock file cannot be created"):
        cache.append(*_batch(1))
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", ["foreign_hdf5", "garbage", "truncated_header"])
def test_foreign_garbage_and_truncated_files_are_refused_and_left_untouched(tmp_path, content):
    path = tmp_path / "c.h5"
    if content == "foreign_hdf5":
        with h5py.File(path, "w") as f:
            f["data"] = np.arange(10)
    elif content == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    else:
        FeatureCache(path, KEY).append(*_batch(0))
        path.write_bytes(path.read_bytes()[:40])
    before = path.read_bytes()
    with pytest.raises((CacheKeyError, OSError), match="not a feature cache|cannot be read as HDF5"):
        FeatureCache(path, KEY)
    assert path.read_bytes() == before


def check_rows_from_other_versions_warn(tmp_path: Path, monkeypatch) -> None:
    cache = FeatureCache(tmp_path / "c.h5", KEY)
    cache.append(*_batch(0))
    monkeypatch.setattr(once, "_SEEN", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.read(np.arange(4), ["x"])
    monkeypatch.setattr(cache_module, "software_versions", lambda: "torch=9.9;torchvision=9.9;Pillow=99")
    cache.append(*_batch(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.read(np.arange(4, 8), ["x"])  # rows of this process's versions only
    with pytest.warns(RuntimeWarning, match=r"computed with torch=.*may differ in the last bits"):
        np.testing.assert_array_equal(cache.read(np.arange(8), ["x"])["x"][:, 0], [0] * 4 + [1] * 4)


def test_rows_from_other_versions_warn(tmp_path, monkeypatch):
    check_rows_from_other_versions_warn(tmp_path, monkeypatch)
