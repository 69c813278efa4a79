"""Fault injection on the HDF5 cache: SIGKILL at markers inside appends, creation and rebuild; concurrent writers;
a full disk during the first append.  Every child process is seeded and CI-sized (a few appends of 4 rows)."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featurize.cache import FeatureCache

ROOT = Path(__file__).parents[2]
DAMAGED = ROOT / "tests" / "data" / "damaged_cache.h5"
KEY = {"a": 1}

CHILD = r"""
import hashlib, importlib, os, signal, sys
import numpy as np

# the cache modules alone (h5py, numpy, filelock): the child starts in a fraction of a second, without torch
import featurize.cache as cm

path, owner_name, attr, when, after, first, count = sys.argv[1:8]
when, after, first, count = int(when), after == "after", int(first), int(count)
owner = cm.FeatureCache if owner_name == "FeatureCache" else importlib.import_module(owner_name)
real = getattr(owner, attr)
calls = [0]

def marked(*args, **kwargs):
    calls[0] += 1
    if calls[0] == when and not after:
        os.kill(os.getpid(), signal.SIGKILL)
    out = real(*args, **kwargs)
    if calls[0] == when and after:
        os.kill(os.getpid(), signal.SIGKILL)
    return out

static = owner is cm.FeatureCache and isinstance(cm.FeatureCache.__dict__[attr], staticmethod)
setattr(owner, attr, staticmethod(marked) if static else marked)
cache = cm.FeatureCache(path, {"a": 1})
for b in range(first, first + count):
    keys = [hashlib.sha1(f"{b}-{i}".encode()).hexdigest() for i in range(4)]
    cache.append(keys, [f"/data/img_{b}_{i}.png" for i in range(4)],
                 {"x": np.full((4, 6), b, np.float32), "y": np.full((4, 3), -b, np.float32)})
print("not killed", flush=True)
"""


def _batch(b: int) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    keys = [hashlib.sha1(f"{b}-{i}".encode()).hexdigest() for i in range(4)]
    return keys, [f"/data/img_{b}_{i}.png" for i in range(4)], {
        "x": np.full((4, 6), b, np.float32), "y": np.full((4, 3), -b, np.float32)}


def _kill_at(path: Path, owner: str, attr: str, when: int, after: bool = False, first: int = 0, count: int = 3):
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), owner, attr, str(when), "after" if after else "before", str(first),
         str(count)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == -signal.SIGKILL, (done.stdout, done.stderr[-2000:])


# (owner: FeatureCache or a module, attribute, n-th call, kill after the call?, rows complete afterwards; None: no
# file at all)
# Each append writes 5 datasets in this order: versions, keys, paths, features/x, features/y.
KILL_POINTS = {
    "before the first append": ("FeatureCache", "append", 1, False, None),
    "inside the first append, before its first row": ("FeatureCache", "_write", 2, False, None),
    "first append, between row writes and n_complete": ("FeatureCache", "_commit", 1, False, None),
    "first append complete, before the rename into place": ("os", "replace", 1, False, None),
    "after the first append": ("FeatureCache", "append", 1, True, 4),
    "third append, between two row writes": ("FeatureCache", "_write", 13, False, 8),
    "third append, between row writes and n_complete": ("FeatureCache", "_commit", 3, False, 8),
    "third append, n_complete set but not yet flushed": ("featurize.cache", "_sync", 6, False, 8),
    "third append, n_complete flushed and synced": ("featurize.cache", "_sync", 6, True, 12),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_sigkill_anywhere_in_an_append_keeps_every_complete_row_and_the_next_run_goes_on(tmp_path, point):
    owner, attr, when, after, expected = KILL_POINTS[point]
    path = tmp_path / "c.h5"
    _kill_at(path, owner, attr, when, after)
    if expected is None:
        assert not path.exists(), "a first append killed midway must leave no file behind"
    cache = FeatureCache(path, KEY)
    assert cache.n_complete == (expected or 0)
    cache.append(*_batch(99))
    n = cache.n_complete
    assert n == (expected or 0) + 4
    rows = cache.read(np.arange(n), ["x", "y"])
    np.testing.assert_array_equal(rows["x"][:, 0], [*np.arange(n - 4) // 4, 99, 99, 99, 99])
    np.testing.assert_array_equal(rows["y"][:, 0], -rows["x"][:, 0])
    assert list(cache.index())[: n - 4] == [hashlib.sha1(f"{i // 4}-{i % 4}".encode()).hexdigest()
                                            for i in range(n - 4)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5", "c.h5.lock"], "no temporary file left"


REBUILD_KILLS = {
    "while copying the complete rows": ("featurize.cache_repair", "read_strings", 1),
    "rebuilt file written, before its fsync": ("featurize.durable", "fsync_path", 1),
    "rebuilt file synced, before the rename": ("os", "replace", 1),
}


@pytest.mark.parametrize("point", list(REBUILD_KILLS))
def test_a_sigkill_during_a_rebuild_keeps_the_complete_rows_and_the_rebuild_runs_again(tmp_path, point):
    owner, attr, when = REBUILD_KILLS[point]
    path = tmp_path / "damaged.h5"
    shutil.copy(DAMAGED, path)
    _kill_at(path, owner, attr, when, first=1000, count=1)
    cache = FeatureCache(path, KEY)
    assert cache.n_complete == 156
    np.testing.assert_array_equal(cache.read(np.arange(156), ["x"])["x"][:, 0], np.arange(156) // 4)
    cache.append(*_batch(1000))
    assert cache.n_complete == 160
    rows = cache.read(np.arange(160), ["x"])["x"][:, 0]
    np.testing.assert_array_equal(rows, [*np.arange(156) // 4, 1000, 1000, 1000, 1000])
    assert not path.with_name(path.name + ".rebuild").exists()


def _writer(path: str, first: int, n_batches: int) -> None:
    cache = FeatureCache(path, KEY)
    for b in range(first, first + n_batches):
        cache.append(*_batch(b))


def test_concurrent_writers_creating_the_same_file_lose_nothing(tmp_path):
    path = tmp_path / "c.h5"
    ctx = mp.get_context("spawn")
    writers = [ctx.Process(target=_writer, args=(str(path), first, 15)) for first in (0, 100, 200)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
    assert [w.exitcode for w in writers] == [0, 0, 0]
    cache = FeatureCache(path, KEY)
    assert cache.n_complete == 3 * 15 * 4
    index = cache.index()
    for first in (0, 100, 200):
        for b in range(first, first + 15):
            keys = _batch(b)[0]
            rows = cache.read(np.array([index[k] for k in keys]), ["x", "y"])
            assert (rows["x"] == b).all() and (rows["y"] == -b).all()


FULL_ON_FIRST = r"""
import hashlib, resource, signal, sys
import numpy as np
from featurize.cache import FeatureCache
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, resource.RLIM_INFINITY))
keys = [hashlib.sha1(f"big-{i}".encode()).hexdigest() for i in range(64)]
try:
    FeatureCache(sys.argv[1], {"a": 1}).append(keys, keys, {"x": np.ones((64, 2048), np.float32)})
except OSError as exc:
    print("disk full:", exc)
"""


def test_a_disk_full_first_append_leaves_no_file(tmp_path):
    """RLIMIT_FSIZE in a child simulates the full disk; the next run creates the file as if nothing happened."""
    path = tmp_path / "c.h5"
    done = subprocess.run([sys.executable, "-c", FULL_ON_FIRST, str(path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    # h5py may even crash (segfault) on the failed write of a new file: either way no cache file is left
    assert "disk full" in done.stdout or done.returncode != 0, done.stderr[-2000:]
    assert not path.exists()
    cache = FeatureCache(path, KEY)
    cache.append(*_batch(1))
    assert cache.n_complete == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5", "c.h5.lock"]
