"""featurize.writer.BackgroundWriter, and the featurizer's cache writes through it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import featurize.transformer as transformer_module
from featurize import CNNFeaturizer, FeatureCache
from featurize.writer import BackgroundWriter


def test_writes_every_item_in_order_on_another_thread():
    written, threads = [], set()

    def write(item):
        time.sleep(0.002)
        written.append(item)
        threads.add(threading.current_thread().name)

    with BackgroundWriter(write, depth=2) as writer:
        for i in range(20):
            writer.put(i)
    assert written == list(range(20))
    assert threads == {"featurize-writer"}


def test_an_exception_in_the_block_still_writes_what_was_put():
    written = []

    def slow(item):
        time.sleep(0.02)
        written.append(item)

    with pytest.raises(KeyboardInterrupt):
        with BackgroundWriter(slow, depth=4) as writer:
            for i in range(4):
                writer.put(i)
            raise KeyboardInterrupt
    assert written == [0, 1, 2, 3]


def test_a_failed_write_is_raised_in_the_caller_and_stops_later_writes():
    written = []

    def write(item):
        if item == 2:
            raise OSError("disk full")
        written.append(item)

    with pytest.raises(OSError, match="disk full"):
        with BackgroundWriter(write) as writer:
            for i in range(50):
                writer.put(i)
                time.sleep(0.001)
    assert written == [0, 1]


def test_featurizer_keeps_every_computed_batch_when_a_later_image_fails(image_folder, tmp_path):
    """on_error='raise' stops the transform; the batches before the failure are in the cache (written in the
    background, drained before the error propagates)."""
    _, paths, _ = image_folder
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    items = [str(p) for p in paths[:6]] + [str(broken)]
    fz = CNNFeaturizer("resnet18", weights=None, image_size=32, batch_size=2, num_workers=0, cache=tmp_path / "c")
    fz.fit()
    with pytest.raises(ValueError, match="broken.jpg"):
        fz.transform(items)
    assert fz.cache_file().n_complete == 6


def test_the_next_batch_is_computed_while_one_is_being_written(image_folder, tmp_path, monkeypatch):
    """The first cache write waits until the second batch has been computed: with writes in the caller's thread
    that could never happen (the wait times out and the write fails)."""
    _, paths, _ = image_folder
    second_batch = threading.Event()
    calls = []
    real_append = FeatureCache.append

    def waiting_append(self, *args, **kwargs):
        calls.append(threading.current_thread().name)
        if len(calls) == 1 and not second_batch.wait(timeout=20):
            raise AssertionError("the second batch was not computed while the first one was being written")
        real_append(self, *args, **kwargs)

    real_iter = transformer_module.iter_features

    def counting_iter(*args, **kwargs):
        for n, batch in enumerate(real_iter(*args, **kwargs), start=1):
            if n == 2:
                second_batch.set()
            yield batch

    monkeypatch.setattr(FeatureCache, "append", waiting_append)
    monkeypatch.setattr(transformer_module, "iter_features", counting_iter)
    fz = CNNFeaturizer("resnet18", weights=None, image_size=32, batch_size=2, num_workers=0, cache=tmp_path / "c")
    out = fz.fit().transform([str(p) for p in paths[:6]])
    assert np.isfinite(out).all() and len(calls) == 3
    assert fz.cache_file().n_complete == 6
