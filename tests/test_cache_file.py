"""FeatureCache file handling: readers beside a writer, a file a SIGKILL left damaged, read-only places, non-HDF5
files."""

from __future__ import annotations

import errno
import hashlib
import logging
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from featurize.cache import FeatureCache

DAMAGED = Path(__file__).parent / "data" / "damaged_cache.h5"
KEY = {"a": 1}


def _batch(b: int, n: int = 4) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    keys = [hashlib.sha1(f"{b}-{i}".encode()).hexdigest() for i in range(n)]
    return keys, [f"/data/img_{b}_{i}.png" for i in range(n)], {
        "x": np.full((n, 6), b, np.float32), "y": np.full((n, 3), -b, np.float32)}


def _writer(path: str, n_batches: int) -> None:
    cache = FeatureCache(path, KEY)
    for b in range(1, n_batches + 1):
        cache.append(*_batch(b))


def test_readers_beside_a_writer_never_fail(tmp_path):
    """Without the lock on reads, HDF5's own file locking refuses a reader while an append is in flight."""
    path = tmp_path / "c.h5"
    FeatureCache(path, KEY).append(*_batch(0))
    writer = mp.get_context("spawn").Process(target=_writer, args=(str(path), 150))
    writer.start()
    seen = []
    try:
        while writer.is_alive() or len(seen) < 3:
            cache = FeatureCache(path, KEY)
            n = cache.n_complete
            rows = cache.read(np.arange(n), ["x", "y"])
            np.testing.assert_array_equal(rows["x"][:, 0], np.arange(n) // 4)
            np.testing.assert_array_equal(rows["y"][:, 0], -(np.arange(n) // 4))
            assert len(cache.index()) >= n
            seen.append(n)
    finally:
        writer.join(timeout=120)
    assert writer.exitcode == 0
    assert seen == sorted(seen) and seen[-1] == 151 * 4


def test_append_after_a_sigkill_damaged_the_file_keeps_every_complete_row(tmp_path, caplog):
    """The fixture is a real file from a writer SIGKILLed mid-flush (4 rows per append; row i holds x=i//4,
    y=-(i//4)): its complete rows read fine, but HDF5 refuses to write past them ("len not positive after adjustment
    for EOA").  The append must rebuild the file from the complete rows and go on."""
    path = tmp_path / "damaged.h5"
    shutil.copy(DAMAGED, path)
    cache = FeatureCache(path, KEY)
    n = cache.n_complete
    assert n == 156
    before = cache.read(np.arange(n), ["x", "y"])
    np.testing.assert_array_equal(before["x"][:, 0], np.arange(n) // 4)

    with caplog.at_level(logging.WARNING, logger="featurize.cache"):
        cache.append(*_batch(1000))
    assert "rebuilding it from its 156 complete rows" in caplog.text

    after = cache.read(np.arange(n + 4), ["x", "y"])
    for cut in ("x", "y"):
        np.testing.assert_array_equal(after[cut][:n], before[cut])
    np.testing.assert_array_equal(after["x"][n:, 0], 1000)
    assert list(cache.index())[:n] == [hashlib.sha1(f"{i // 4}-{i % 4}".encode()).hexdigest() for i in range(n)]
    cache.append(*_batch(1001))
    assert cache.n_complete == n + 8
    with h5py.File(path) as f:
        assert f["paths"][0].decode() == "/data/img_0_0.png"
    assert not path.with_name(path.name + ".rebuild").exists()


def test_reads_in_a_read_only_place_go_without_the_lock(tmp_path, monkeypatch):
    path = tmp_path / "c.h5"
    FeatureCache(path, KEY).append(*_batch(0))

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path) + ".lock")

    monkeypatch.setattr("filelock.FileLock.acquire", refuse)
    cache = FeatureCache(path, KEY)
    assert cache.n_complete == 4
    np.testing.assert_array_equal(cache.read(np.array([3, 0]), ["y"])["y"][:, 0], [0, 0])


def test_a_file_that_is_not_hdf5_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not a cache")
    with pytest.raises(OSError, match="cannot be read as HDF5.*left untouched"):
        FeatureCache(path, KEY)
    assert path.read_text() == "not a cache"


def test_a_file_held_open_elsewhere_is_reported_not_rebuilt(tmp_path):
    path = tmp_path / "c.h5"
    cache = FeatureCache(path, KEY)
    cache.append(*_batch(0))
    inode = path.stat().st_ino
    holder = subprocess.Popen([sys.executable, "-c", f"import h5py, time; f = h5py.File({str(path)!r}, 'r'); "
                               "print('open', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(OSError, match="held open by a program"):
            cache.append(*_batch(1))
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert path.stat().st_ino == inode and cache.n_complete == 4


FILL_UNTIL_FULL = """
import hashlib, resource, signal, sys
import numpy as np
from featurize.cache import FeatureCache
cache = FeatureCache(sys.argv[1], {"a": 1})
for b in range(4):
    keys = [hashlib.sha1(f"{b}-{i}".encode()).hexdigest() for i in range(64)]
    cache.append(keys, keys, {"x": np.full((64, 2048), b, np.float32)})
size = cache.path.stat().st_size
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100_000, resource.RLIM_INFINITY))
keys = [hashlib.sha1(f"big-{i}".encode()).hexdigest() for i in range(256)]
try:
    cache.append(keys, keys, {"x": np.full((256, 2048), 10, np.float32)})
except OSError as exc:
    print("disk full:", exc)
"""


def test_a_disk_full_append_loses_no_complete_row(tmp_path, caplog):
    """A write that fails for lack of space (simulated by RLIMIT_FSIZE in a child process) leaves HDF5 metadata that
    promises a longer file than there is; HDF5 then refuses to open it. The complete rows were written before: the
    file gets its missing (zero) tail back and stays usable."""
    path = tmp_path / "full.h5"
    done = subprocess.run([sys.executable, "-c", FILL_UNTIL_FULL, str(path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}, timeout=120)
    assert "disk full" in done.stdout, done.stderr[-2000:]
    with pytest.raises(OSError, match="truncated file"):
        h5py.File(path, "r").close()

    with caplog.at_level(logging.WARNING, logger="featurize.cache"):
        cache = FeatureCache(path, KEY)
    assert "cut short by a failed write" in caplog.text
    assert cache.n_complete == 256
    np.testing.assert_array_equal(cache.read(np.arange(256), ["x"])["x"][:, 0], np.arange(256) // 64)
    cache.append([hashlib.sha1(b"after").hexdigest()], ["after"], {"x": np.full((1, 2048), 11, np.float32)})
    assert cache.read(np.array([256]), ["x"])["x"][0, 0] == 11


def test_a_file_that_lost_complete_rows_is_refused_not_padded(tmp_path):
    """Cut short by other means (a partial copy), the lost tail holds complete rows: zero-padding would hand back
    zeros as features, so the file is refused and left as it was."""
    path = tmp_path / "c.h5"
    FeatureCache(path, KEY).append(*_batch(0))
    os.truncate(path, path.stat().st_size - 64)
    damaged = path.read_bytes()
    with pytest.raises(OSError, match="cannot be read as HDF5.*left untouched"):
        FeatureCache(path, KEY)
    assert path.read_bytes() == damaged


def test_a_rebuild_that_cannot_copy_the_complete_rows_leaves_everything_as_it_was(tmp_path):
    path = tmp_path / "c.h5"
    cache = FeatureCache(path, KEY)
    cache.append(*_batch(0))
    with h5py.File(path, "a") as f:
        f.attrs["n_complete"] = 6  # claims more complete rows than the datasets hold
    damaged = path.read_bytes()
    with pytest.raises(OSError, match="copying its complete rows into a fresh file failed"):
        cache.append(*_batch(1))
    assert path.read_bytes() == damaged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5", "c.h5.lock"]
