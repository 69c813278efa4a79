"""``--backend dask``: grid searches and compare's repeated fits on a real Dask ``LocalCluster`` (2 worker processes,
loopback) give the same scores as the local run."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.backend import LOCAL_WORKERS, parallel_backend
from pipelines.compare import main as compare_main
from pipelines.grid import run_grid

pytest.importorskip("dask.distributed")

KW = dict(backbone="resnet18", weights=None, image_size=32, cv=3, verbose=False, cuts=("layer2", "layer4"),
          head_grid={"clf__C": [0.1, 1.0, 10.0]})


def _split_scores(search) -> pd.DataFrame:
    columns = [c for c in search.cv_results_ if c.startswith("split") and c.endswith("_test_score")]
    return pd.DataFrame({c: search.cv_results_[c] for c in [*columns, "mean_test_score", "params"]})


def test_a_grid_search_on_a_local_dask_cluster_scores_like_one_process(tmp_path, image_folder):
    from dask.distributed import get_client
    from joblib.parallel import get_active_backend

    _, paths, labels = image_folder
    alone = run_grid(paths, labels, cache_dir=tmp_path, n_jobs=1, **KW)
    with parallel_backend("dask", "local"):
        client = get_client()
        assert len(client.scheduler_info()["workers"]) == LOCAL_WORKERS
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert type(get_active_backend()[0]).__name__ == "DaskDistributedBackend"
        on_dask = run_grid(paths, labels, cache_dir=tmp_path, n_jobs=-1, **KW)
    pd.testing.assert_frame_equal(_split_scores(on_dask.search), _split_scores(alone.search))
    assert on_dask.estimate["accuracy_95ci"] == alone.estimate["accuracy_95ci"]


def test_compare_with_the_dask_backend_gives_the_accuracies_of_the_local_run(tmp_path, tiny_dataset, monkeypatch):
    import joblib
    from joblib.parallel import get_active_backend

    import pipelines.compare.runner as compare_module

    backends = []

    class Recorded(joblib.Parallel):
        def __init__(self, *args, **kwargs):
            backends.append(type(get_active_backend()[0]).__name__)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(compare_module, "Parallel", Recorded)

    def run(out, *backend):
        argv = ["--dataset", str(tiny_dataset), "--backbones", "resnet18", "--cuts", "layer3", "layer4",
                "--methods", "logistic", "pixels", "--train-sizes", "3", "all", "--splits", "2", "--weights", "none",
                "--image-size", "32", "--n-jobs", "2", "--quiet", "--data-dir", str(tmp_path / "data"),
                "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / out), *backend]
        assert compare_main(argv) == 0
        return pd.read_csv(tmp_path / out / "results.csv", keep_default_na=False)

    local = run("local")
    dask = run("dask", "--backend", "dask", "--scheduler", "local")
    assert backends[0] != "DaskDistributedBackend" and backends[-1] == "DaskDistributedBackend"
    key = ["method", "backbone", "cut", "train_size", "split"]
    columns = [*key, "accuracy", "n_test", "selection_score", "hyperparameters"]
    pd.testing.assert_frame_equal(dask[columns].sort_values(key).reset_index(drop=True),
                                  local[columns].sort_values(key).reset_index(drop=True))


def test_an_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="--backend must be 'local' or 'dask'"), parallel_backend("ray"):
        pass
