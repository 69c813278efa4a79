"""The results tables agree with the predictions, and a killed comparison resumes to the same tables."""

import json
from dataclasses import asdict
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from pipelines.compare import main
from pipelines.results import FitKey, Journal, JournalMismatch

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["backbone", "cut", "pooling", "method", "augment", "train_size", "split"]
STABLE = [c for c in ("backbone", "cut", "pooling", "method", "family", "augment", "train_size", "split", "n_train",
                      "n_test", "n_correct", "accuracy", "balanced_accuracy", "weights", "pretrained")]


def _argv(dataset, tmp_path, out, *extra):
    return ["--dataset", str(dataset), "--backbones", "resnet18", "--cuts", "layer3", "layer4",
            "--methods", "logistic", "pixels", "finetune_head", "--train-sizes", "3", "all", "--splits", "2",
            "--finetune-splits", "1", "--weights", "none", "--image-size", "32", "--finetune-image-size", "32",
            "--epochs", "1", "--quiet", "--data-dir", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"),
            "--out", str(out), "--n-jobs", "1", *extra]


@pytest.fixture(scope="module")
def finished(tiny_dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    assert main(_argv(tiny_dataset, tmp, tmp / "out")) == 0
    return tmp


def _read(out: Path) -> pd.DataFrame:
    results = pd.read_csv(out / "results.csv", keep_default_na=False)
    return results[STABLE].sort_values(KEYS).reset_index(drop=True)


def check_results_match_predictions(out: Path) -> None:
    """Every row of results.csv is recomputed exactly from its rows of predictions.csv."""
    results = pd.read_csv(out / "results.csv", keep_default_na=False)
    predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert len(predictions) == int(results["n_test"].sum())
    for key, group in predictions.groupby(KEYS):
        row = results.set_index(KEYS).loc[key]
        correct = int((group["y_true"] == group["y_pred"]).sum())
        assert row["n_correct"] == correct and row["n_test"] == len(group)
        assert row["accuracy"] == pytest.approx(correct / len(group))
        assert row["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(group["y_true"], group["y_pred"]))


def test_results_are_recomputed_exactly_from_the_predictions(finished):
    check_results_match_predictions(finished / "out")


def test_rerun_with_the_same_command_skips_every_finished_fit(tiny_dataset, finished, monkeypatch):
    from pipelines.compare.runner import Runner

    def no_fit(self, job):
        raise AssertionError(f"{job.method.name} was fitted again")

    before = _read(finished / "out")
    monkeypatch.setattr(Runner, "prepare", no_fit)
    assert main(_argv(tiny_dataset, finished, finished / "out")) == 0
    pd.testing.assert_frame_equal(_read(finished / "out"), before)
    assert json.loads((finished / "out" / "manifest.json").read_text())["resumed_fits"] == len(before)


_KILLER = """
import os, signal, sys
import pipelines.results as results
limit, cut_line = int(os.environ["KILL_AFTER"]), os.environ.get("KILL_MID_LINE") == "1"
real = results.Journal._append
count = [0]
def append(self, record):
    if "key" in record:
        count[0] += 1
        if count[0] > limit:
            if cut_line:
                with open(self.path, "ab") as f:
                    f.write(b'{"key": {"method": "log')
            os.kill(os.getpid(), signal.SIGKILL)
    real(self, record)
results.Journal._append = append
from pipelines.compare import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("after, mid_line", [(0, False), (3, True), (7, False)])
def test_sigkilled_run_resumes_to_the_same_tables(tiny_dataset, finished, tmp_path, after, mid_line):
    out = tmp_path / "out"
    env = {**os.environ, "KILL_AFTER": str(after), "KILL_MID_LINE": "1" if mid_line else "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    killed = subprocess.run([sys.executable, "-c", _KILLER, *_argv(tiny_dataset, tmp_path, out)], env=env, cwd=ROOT,
                            capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert not (out / "results.csv").exists()
    journal = (out / "journal.jsonl").read_bytes()
    assert journal.count(b"\n") == 1 + after
    assert main(_argv(tiny_dataset, tmp_path, out)) == 0
    pd.testing.assert_frame_equal(_read(out), _read(finished / "out"))
    assert json.loads((out / "manifest.json").read_text())["resumed_fits"] == after


def test_another_configuration_refuses_the_journal_unless_restarted(tiny_dataset, finished, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_argv(tiny_dataset, tmp_path, out, "--seed", "1")) == 0
    assert main(_argv(tiny_dataset, tmp_path, out)) == 2
    assert "--restart" in capsys.readouterr().err
    assert main(_argv(tiny_dataset, tmp_path, out, "--restart")) == 0
    pd.testing.assert_frame_equal(_read(out), _read(finished / "out"))


def test_journal_keeps_fits_and_drops_a_cut_line(tmp_path):
    config = {"a": 1}
    journal = Journal(tmp_path, config)
    from pipelines.results import Fit

    key = FitKey("logistic", "resnet18", "layer3", "avg", "none", 5, 0)
    journal.record(Fit(key, "frozen", "w", False, np.array([0, 1]), 0.1, 0.0, 0.0, 0).to_json())
    with open(journal.path, "ab") as f:
        f.write(b'{"key": ')
    again = Journal(tmp_path, config)
    assert len(again.records) == 1 and Fit.from_json(again[asdict(key)]).y_pred.tolist() == [0, 1]
    assert journal.path.read_bytes().endswith(b"}\n")
    with pytest.raises(JournalMismatch, match="another configuration"):
        Journal(tmp_path, {"a": 2})


def test_worker_processes_give_the_same_tables_as_one_process(tiny_dataset, finished, tmp_path):
    assert main(_argv(tiny_dataset, tmp_path, tmp_path / "out", "--n-jobs", "2")) == 0
    columns = ["selection_score", "hyperparameters", "seed"]
    one = pd.read_csv(tmp_path / "out" / "results.csv", keep_default_na=False).sort_values(KEYS)
    many = pd.read_csv(finished / "out" / "results.csv", keep_default_na=False).sort_values(KEYS)
    pd.testing.assert_frame_equal(one[STABLE + columns].reset_index(drop=True),
                                  many[STABLE + columns].reset_index(drop=True))


def test_a_changed_dataset_refuses_the_journal(tiny_dataset, tmp_path, capsys):
    import shutil

    data = tmp_path / "data_copy"
    shutil.copytree(tiny_dataset, data)
    out = tmp_path / "out"
    assert main(_argv(data, tmp_path, out, "--methods", "pixels")) == 0
    moved = next((data / "val" / "ants").iterdir())
    moved.rename(data / "val" / "bees" / moved.name)
    assert main(_argv(data, tmp_path, out, "--methods", "pixels")) == 2
    assert "another configuration" in capsys.readouterr().err
