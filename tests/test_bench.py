"""pipelines.bench: table layout, cache-hit path without a model, head-only paths, CLI output.  No timing assertions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import featurize.transformer
from pipelines import bench as benchmark

ROOT = Path(__file__).parents[1]
TINY = dict(backbone="resnet18", image_size=32, n_images=8, batch_size=4, device="cpu")


@pytest.fixture()
def model_builds(monkeypatch) -> list[str]:
    """Count models built by CNNFeaturizer (each entry: backbone name)."""
    calls: list[str] = []
    real = featurize.transformer.load_model

    def counting(spec, resolved):
        calls.append(spec.name)
        return real(spec, resolved)

    monkeypatch.setattr(featurize.transformer, "load_model", counting)
    return calls


def test_make_images_seeded():
    a, b = benchmark.make_images(3, 32, seed=5), benchmark.make_images(3, 32, seed=5)
    assert a.shape == (3, 64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, benchmark.make_images(3, 32, seed=6))


def test_run_benchmark_columns_and_cache_hit_builds_no_model(model_builds, tmp_path):
    df = benchmark.run_benchmark(**TINY, cache_dir=tmp_path, compare_cpu=True)
    assert list(df.columns) == benchmark.COLUMNS
    # compare_cpu is ignored on a CPU device: no cpu_cold row
    assert df["phase"].tolist() == ["cold", "cache_hit", "uncached"]
    assert (df["images_per_s"] > 0).all() and (df["seconds"] > 0).all()
    assert (df["peak_memory_mb"] > 0).all() and set(df["peak_memory_kind"]) == {"process_max_rss"}
    assert df.set_index("phase").loc["cache_hit", "cache_hits"] == 8
    assert (df["n_images"] == 8).all() and (df["image_size"] == 32).all() and (df["precision"] == "fp32").all()
    assert not df["pretrained"].any() and df["weights"].str.startswith("random-init").all()
    # one build each for the warm-up, the cold pass and the uncached pass; none for the cache hit
    assert model_builds == ["resnet18"] * 3
    # the fresh cache subdirectory is removed afterwards
    assert list(tmp_path.iterdir()) == []

    ratios = benchmark.benchmark_ratios(df)
    assert set(ratios) == {"cache_hit/cold", "cold/uncached"}
    assert all(v > 0 for v in ratios.values())
    text = benchmark.format_report(df)
    assert "random-init weights (speed only; features meaningless)" in text
    assert "ratio cache_hit/cold" in text


def test_gpu_cpu_ratio_from_rows():
    rows = [("cold", 100.0), ("cache_hit", 1000.0), ("uncached", 120.0), ("cpu_cold", 10.0)]
    df = pd.DataFrame(rows, columns=["phase", "images_per_s"])
    expected = {"cache_hit/cold": 10.0, "cold/uncached": 100 / 120, "gpu/cpu": 10.0}
    assert benchmark.benchmark_ratios(df) == pytest.approx(expected)


EXTRACT = ["extract", "--image-size", "32", "--n-images", "8", "--batch-size", "4", "--device", "cpu"]


def test_cli_prints_ratios_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert benchmark.main([*EXTRACT, "--weights", "none", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ratio cache_hit/cold" in printed and "ratio cold/uncached" in printed
    assert "random-init weights (speed only; features meaningless)" in printed
    assert "torch " in printed and "CPU thread(s)" in printed
    payload = json.loads(out.read_text())
    assert [r["phase"] for r in payload["rows"]] == ["cold", "cache_hit", "uncached"]
    assert payload["ratios"]["cache_hit/cold"] > 0
    assert "random-init" in payload["note"]


def test_cli_default_weights_auto_falls_back_to_random_init_flagged(tmp_path, capsys, caplog):
    # offline (tests/conftest.py): no pretrained weights, so the default 'auto' runs random-init and says so
    out = tmp_path / "bench.json"
    assert benchmark.main([*EXTRACT, "--json", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "RANDOM-INIT" in caplog.text
    payload = json.loads(out.read_text())
    assert not any(r["pretrained"] for r in payload["rows"]) and "random-init" in payload["note"]


@pytest.mark.parametrize("command", ["extract", "head"])
def test_cli_help_says_default_weights_auto(command, capsys):
    with pytest.raises(SystemExit):
        benchmark.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "speed does not depend on the weight values" in text.lower()
    assert "(default: auto)" in text


def test_cli_bad_arguments(capsys):
    assert benchmark.main(["extract", "--device", "nonsense", "--image-size", "32", "--n-images", "2"]) == 2
    assert "device" in capsys.readouterr().err
    with pytest.raises(ValueError, match="n_images"):
        benchmark.run_benchmark(**{**TINY, "n_images": 0})
    with pytest.raises(SystemExit) as exc:
        benchmark.main(["extract", "--image-size", "auto"])
    assert exc.value.code == 2 and "integer" in capsys.readouterr().err
    assert benchmark.main(["head", "--weights", "DEFAULT", "--device", "cpu"]) == 2
    assert "resnet18" in capsys.readouterr().err.lower()


def test_head_benchmark_times_both_paths():
    table = benchmark.run_head_benchmark(n_images=8, image_size=32, epochs=2, batch_size=4, device="cpu")
    assert list(table.columns) == benchmark.HEAD_COLUMNS
    assert list(table["path"]) == ["precomputed", "forward"]
    assert (table["epochs"] == 2).all() and (table["epoch_s"] > 0).all()
    by_path = table.set_index("path")
    assert by_path.loc["precomputed", "one_off_s"] > 0 and by_path.loc["forward", "one_off_s"] == 0
    assert not table["pretrained"].any()


def test_head_benchmark_cli_prints_the_ratio(tmp_path, capsys):
    out = tmp_path / "head.json"
    argv = ["head", "--n-images", "8", "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--device", "cpu",
            "--json", str(out)]
    assert benchmark.main(argv) == 0
    printed = capsys.readouterr().out
    assert "per-epoch ratio forward/precomputed" in printed
    assert "note: random-init weights (speed only; accuracies meaningless)" in printed
    assert "torch " in printed and "CPU thread(s)" in printed
    payload = json.loads(out.read_text())
    assert [r["path"] for r in payload["rows"]] == ["precomputed", "forward"]
    assert payload["ratios"]["forward/precomputed"] > 0 and "random-init" in payload["note"]


# ---------------------------------------------------------------------------------------------- the suite
SUITE = dict(n_images=6, batch_size=4, image_size=32, device="cpu", weights=None, rss_images=2, others=("resnet50",),
             head_images=8)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    from pipelines import bench_suite

    return bench_suite.run_suite("resnet18", workdir=tmp_path_factory.mktemp("suite"), **SUITE)


def test_suite_measures_every_cpu_ratio_against_its_target(suite):
    from pipelines import bench_suite

    import torch

    cpu_targets = [t.name for t in bench_suite.TARGETS if t.applies(torch.device("cpu"))]
    assert suite.ratios["name"].tolist() == cpu_targets
    assert "library/bare_bf16_channels_last" not in cpu_targets and "library/peer" in cpu_targets
    assert (suite.ratios["value"] > 0).all()
    by = suite.measurements.set_index("name")
    for name in ("library", "cache_hit", "peer", "bare_fp32", "bare_channels_last", "multicut", "single_cut_passes",
                 "full_passes", "head_precomputed", "head_forward", "library[resnet50]"):
        assert by.loc[name, "seconds"] > 0, name
    assert (by.loc[["rss_n", "rss_10n", "rss_bare"], "rss_mb"] > 100).all()
    assert by.loc["rss_10n", "n_images"] == 10 * by.loc["rss_n", "n_images"] == 20
    assert suite.settings["pretrained"] is False and suite.settings["cuts"] == ["layer1", "layer2", "layer3", "layer4"]
    assert {"cpu", "cpus", "torch", "torchvision", "gpu"} <= set(suite.hardware)
    # a met flag is the comparison of the value with the target
    for target, row in zip(bench_suite.TARGETS, suite.ratios.itertuples()):
        assert row.met == target.met(row.value)
        assert (row.met is None) == (target.threshold is None)


def test_suite_report_markdown_and_json(suite, tmp_path, monkeypatch, capsys):
    from pipelines import bench_suite

    text = bench_suite.format_suite(suite)
    assert "| `library/peer` |" in text and "random-init weights (speed only; features meaningless)" in text
    assert text.count("\n| ") >= len(suite.ratios) + len(suite.measurements)
    monkeypatch.setattr(bench_suite, "run_suite", lambda *a, **k: suite)
    out = tmp_path / "bench.md"
    assert benchmark.main(["--images", "6", "--weights", "none", "--out", str(out)]) == 0
    assert out.read_text().strip() == text and text in capsys.readouterr().out
    payload = json.loads(out.with_suffix(".json").read_text())
    assert [r["name"] for r in payload["ratios"]] == suite.ratios["name"].tolist()
    assert payload["settings"]["pretrained"] is False


def test_write_jpegs_is_seeded_and_distinct(tmp_path):
    from pipelines.bench_suite import write_jpegs

    a = write_jpegs(tmp_path / "a", 3)
    b = write_jpegs(tmp_path / "b", 3)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert len({p.read_bytes() for p in a}) == 3


def test_cache_scale_command_prints_the_table(capsys, tmp_path):
    out = tmp_path / "scale.json"
    assert benchmark.main(["--cache-scale", "--sizes", "100", "200", "--repeats", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ratio 200 / 100 rows" in text
    assert [r["rows"] for r in json.loads(out.read_text())] == [100, 200]


HEAVY = {"torch", "torchvision", "sklearn", "timm"}


def check_answers_without_heavy_imports(module: str, argv: list[str]) -> None:
    """``python -m <module> <argv>`` answers (help: status 0, argument error: 2) without importing :data:`HEAVY`."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", module, *argv], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    packages = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert f"usage: python -m {module}" in done.stdout + done.stderr
    assert done.returncode == (0 if "--help" in argv else 2)
    assert not packages & HEAVY, f"{argv} imported {sorted(packages & HEAVY)}"


@pytest.mark.parametrize("argv", [["--help"], ["suite", "--help"], ["extract", "--help"], ["head", "--help"],
                                  ["finetune", "--help"], ["cache-scale", "--help"], ["--images", "0"],
                                  ["extract", "--image-size", "auto"]])
def test_help_and_argument_errors_import_no_torch(argv):
    check_answers_without_heavy_imports("pipelines.bench", argv)
