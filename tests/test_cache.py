"""HDF5 cache: hits without the model, content keys, key mismatch, resume after an exception and after SIGKILL."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

import featurize.transformer as transformer_module
from conftest import assert_features_close
from featurize import CacheKeyError, CNNFeaturizer, FeatureCache, UnreadableImagesWarning

KW = dict(backbone="resnet18", weights=None, image_size=64, batch_size=4)


def test_cache_hit_returns_identical_arrays_without_the_model(tmp_path, image_folder, monkeypatch):
    _, paths, _ = image_folder
    first = CNNFeaturizer(layers=["layer2", "layer4"], cache=tmp_path, **KW).fit().transform(paths)
    uncached = CNNFeaturizer(layers=["layer2", "layer4"], **KW).fit().transform(paths)
    np.testing.assert_array_equal(first, uncached)
    direct = CNNFeaturizer(layers=["fc", "conv1"], **KW).fit().transform(paths)

    monkeypatch.setattr(transformer_module, "load_model", lambda *a: pytest.fail("model built on a cache hit"))
    again = CNNFeaturizer(layers=["layer2", "layer4"], cache=tmp_path, **KW).fit().transform(paths)
    np.testing.assert_array_equal(again, first)
    other_layers = CNNFeaturizer(layers=["fc", "conv1"], cache=tmp_path, **KW).fit().transform(paths)
    np.testing.assert_allclose(other_layers, direct, rtol=1e-5, atol=1e-6)


def test_one_file_per_key_and_its_layout(tmp_path, two_class_arrays):
    images = two_class_arrays[0][:6]
    f = CNNFeaturizer(layers="layer3", cache=tmp_path, **KW).fit()
    f.transform(images)
    CNNFeaturizer(layers="layer3", pooling="max", cache=tmp_path, **KW).fit().transform(images)
    files = sorted(p.name for p in tmp_path.glob("*.h5"))
    assert len(files) == 2 and files[0].startswith("resnet18-avg-") and files[1].startswith("resnet18-max-")
    with h5py.File(f.cache_file().path) as h5:
        assert h5.attrs["n_complete"] == 6 and h5["keys"].shape == (6,)
        assert sorted(h5["features"]) == sorted(f.spec_.cut_names)
        assert h5["features/layer3"].shape == (6, 256) and h5["features/layer3"].chunks[1] == 256
        assert not h5.attrs["pretrained"]


def test_renamed_file_hits_and_changed_file_misses(tmp_path, image_folder, monkeypatch):
    root, paths, _ = image_folder
    work = tmp_path / "imgs"
    work.mkdir()
    a, b = work / "a.png", work / "b.png"
    shutil.copy(paths[0], a)
    shutil.copy(paths[1], b)
    cache = tmp_path / "cache"
    f = CNNFeaturizer(layers="layer4", cache=cache, **KW).fit()
    before = f.transform([a, b])
    a.rename(work / "renamed.png")
    shutil.copy(paths[2], b)
    calls = []
    real = transformer_module.iter_features
    monkeypatch.setattr(transformer_module, "iter_features",
                        lambda items, *a, **k: calls.append(k["indices"]) or real(items, *a, **k))
    after = f.transform([work / "renamed.png", b])
    np.testing.assert_array_equal(after[0], before[0])
    assert calls == [[1]], "only the changed file is recomputed"
    assert not np.allclose(after[1], before[1])


def test_cache_file_with_another_key_is_refused(tmp_path, two_class_arrays):
    images = two_class_arrays[0][:2]
    path = tmp_path / "features.h5"
    CNNFeaturizer(layers="layer4", cache=path, **KW).fit().transform(images)
    with pytest.raises(CacheKeyError, match="pooling"):
        CNNFeaturizer(layers="layer4", pooling="max", cache=path, **KW).fit().transform(images)
    with pytest.raises(CacheKeyError, match="weights"):
        CNNFeaturizer(layers="layer4", cache=path, **{**KW, "random_state": 1}).fit().transform(images)
    with h5py.File(path) as h5:
        assert h5.attrs["n_complete"] == 2, "the refused file is left untouched"


def test_resume_after_an_exception_keeps_computed_rows(tmp_path, image_folder):
    _, paths, _ = image_folder
    work = [tmp_path / f"{i}.png" for i in range(12)]
    for src, dst in zip(paths, work):
        shutil.copy(src, dst)
    work[5].write_bytes(b"not a png")
    cache = tmp_path / "cache.h5"
    f = CNNFeaturizer(layers=["layer1", "layer4"], cache=cache, **KW).fit()
    with pytest.raises(ValueError, match="5.png"):
        f.transform(work)
    with h5py.File(cache) as h5:
        assert h5.attrs["n_complete"] == 4 + 3, "the batch before the failure and the good rows of its batch"
    shutil.copy(paths[5], work[5])
    resumed = f.transform(work)
    fresh = CNNFeaturizer(layers=["layer1", "layer4"], **KW).fit().transform(work)
    assert_features_close(resumed, fresh)  # rows 4, 6, 7 were forwarded in a batch of 3, rows 5 and 8-11 resumed


def test_skip_gives_nan_rows_and_lists_the_files(tmp_path, image_folder):
    _, paths, _ = image_folder
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8garbage")
    items = [paths[0], bad, tmp_path / "missing.png", paths[1]]
    for cache in (None, tmp_path / "c"):
        f = CNNFeaturizer(layers="layer4", cache=cache, on_error="skip", **KW).fit()
        with pytest.warns(UnreadableImagesWarning, match="broken.jpg") as caught:
            out = f.transform(items)
        assert np.isnan(out[1]).all() and np.isnan(out[2]).all() and np.isfinite(out[[0, 3]]).all()
        skipped = [w.message.images for w in caught if issubclass(w.category, UnreadableImagesWarning)]
        assert len(skipped) == 1
        (first, reason1), (second, reason2) = skipped[0]
        assert (first, second) == (1, 2) and "broken.jpg" in reason1 and "missing.png" in reason2
        assert not hasattr(f, "skipped_"), "transform changes no state"


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import featurize.cache as cache_module
    from featurize import CNNFeaturizer
    real_append, appends = cache_module.FeatureCache.append, []

    def killed_after_the_second(self, *args, **kwargs):
        real_append(self, *args, **kwargs)
        appends.append(1)
        if len(appends) == 2:  # on the writer thread, while the next batch is being forwarded
            os.kill(os.getpid(), signal.SIGKILL)

    cache_module.FeatureCache.append = killed_after_the_second
    CNNFeaturizer(backbone="resnet18", layers=["layer2", "fc"], weights=None, image_size=64, batch_size=2,
                  cache=sys.argv[1]).fit().transform(sys.argv[2:])
    """
)


def test_resume_after_sigkill(tmp_path, image_folder):
    _, paths, _ = image_folder
    cache = tmp_path / "killed.h5"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(cache), *map(str, paths)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    with h5py.File(cache) as h5:
        assert h5.attrs["n_complete"] == 4

    f = CNNFeaturizer(layers=["layer2", "fc"], cache=cache, **{**KW, "batch_size": 2}).fit()
    resumed = f.transform(paths)
    fresh = CNNFeaturizer(layers=["layer2", "fc"], **{**KW, "batch_size": 2}).fit().transform(paths)
    assert_features_close(resumed, fresh)
    with h5py.File(cache) as h5:
        assert h5.attrs["n_complete"] == len(paths)


def _counting_forwards(monkeypatch) -> list[int]:
    forwarded: list[int] = []
    real = transformer_module.iter_features

    def counting(items, *args, **kwargs):
        forwarded.extend(kwargs["indices"])
        return real(items, *args, **kwargs)

    monkeypatch.setattr(transformer_module, "iter_features", counting)
    return forwarded


def check_interrupted_append_keeps_only_complete_rows(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C between the row writes of an append: n_complete still counts only the rows written before."""
    cache = FeatureCache(tmp_path / "c.h5", {"a": 1})
    rows = lambda b: {"x": np.full((4, 3), b, np.float32), "y": np.full((4, 2), -b, np.float32)}  # noqa: E731
    keys = lambda b: [f"{b}-{i}".ljust(40, "k") for i in range(4)]  # noqa: E731
    cache.append(keys(0), keys(0), rows(0))
    real_write = FeatureCache._write

    def interrupted(f, name, data, start, stop):
        if name == "features/y":
            raise KeyboardInterrupt
        real_write(f, name, data, start, stop)

    monkeypatch.setattr(FeatureCache, "_write", staticmethod(interrupted))
    with pytest.raises(KeyboardInterrupt):
        cache.append(keys(1), keys(1), rows(1))
    monkeypatch.setattr(FeatureCache, "_write", staticmethod(real_write))
    assert cache.n_complete == 4, "rows of an interrupted append must not count as complete"
    cache.append(keys(2), keys(2), rows(2))
    got = cache.read(np.arange(8), ["x", "y"])
    np.testing.assert_array_equal(got["x"][:, 0], [0] * 4 + [2] * 4)
    np.testing.assert_array_equal(got["y"][:, 0], [0] * 4 + [-2] * 4)


def test_an_append_interrupted_between_row_writes_keeps_only_complete_rows(tmp_path, monkeypatch):
    check_interrupted_append_keeps_only_complete_rows(tmp_path, monkeypatch)


def check_resume_after_interrupt_reuses_complete_rows(tmp_path: Path, paths: list, monkeypatch) -> None:
    """Ctrl-C inside the third append, after its rows, before n_complete: the resume forwards only the rest."""
    paths = paths[:12]
    cache = tmp_path / "c.h5"
    real_commit = FeatureCache._commit
    commits: list[int] = []

    def interrupted(f, n_complete):
        commits.append(n_complete)
        if len(commits) == 3:
            raise KeyboardInterrupt
        real_commit(f, n_complete)

    f = CNNFeaturizer(layers=["layer2", "fc"], cache=cache, **{**KW, "batch_size": 2}).fit()
    monkeypatch.setattr(FeatureCache, "_commit", staticmethod(interrupted))
    with pytest.raises(KeyboardInterrupt):
        f.transform(paths)
    monkeypatch.setattr(FeatureCache, "_commit", staticmethod(real_commit))
    assert FeatureCache(cache, f.cache_key()).n_complete == 4
    forwarded = _counting_forwards(monkeypatch)
    resumed = f.transform(paths)
    assert forwarded == list(range(4, 12)), "the 4 complete rows are reused, only the 8 others are forwarded"
    fresh = CNNFeaturizer(layers=["layer2", "fc"], **{**KW, "batch_size": 2}).fit().transform(paths)
    assert_features_close(resumed, fresh)


def test_resume_after_an_interrupt_reuses_every_complete_row(tmp_path, image_folder, monkeypatch):
    check_resume_after_interrupt_reuses_complete_rows(tmp_path, image_folder[1], monkeypatch)


KILL_BEFORE_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    from featurize.cache import FeatureCache
    from featurize import CNNFeaturizer
    real_commit, commits = FeatureCache._commit, []

    def killed(f, n_complete):
        commits.append(n_complete)
        if len(commits) == 3:  # third batch: rows written, n_complete not yet raised
            os.kill(os.getpid(), signal.SIGKILL)
        real_commit(f, n_complete)

    FeatureCache._commit = staticmethod(killed)
    CNNFeaturizer(backbone="resnet18", layers=["layer2", "fc"], weights=None, image_size=64, batch_size=2,
                  cache=sys.argv[1]).fit().transform(sys.argv[2:])
    """
)


def test_resume_after_sigkill_between_row_writes_and_n_complete(tmp_path, image_folder, monkeypatch):
    paths = image_folder[1][:12]
    cache = tmp_path / "killed.h5"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", KILL_BEFORE_COMMIT, str(cache), *map(str, paths)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    with h5py.File(cache) as h5:
        assert h5.attrs["n_complete"] == 4 and len(h5["keys"]) == 6, "rows of the third batch written, not counted"
    forwarded = _counting_forwards(monkeypatch)
    f = CNNFeaturizer(layers=["layer2", "fc"], cache=cache, **{**KW, "batch_size": 2}).fit()
    resumed = f.transform(paths)
    assert forwarded == list(range(4, 12)), "every complete row is reused"
    fresh = CNNFeaturizer(layers=["layer2", "fc"], **{**KW, "batch_size": 2}).fit().transform(paths)
    assert_features_close(resumed, fresh)
    with h5py.File(cache) as h5:
        assert h5.attrs["n_complete"] == 12
