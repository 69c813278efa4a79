from classifiers.benchmark import main, run_head_benchmark


def test_head_benchmark_times_both_paths():
    table = run_head_benchmark(n_images=8, image_size=32, epochs=2, batch_size=4, device="cpu")
    assert list(table["path"]) == ["precomputed", "forward"]
    assert (table["epochs"] == 2).all() and (table["epoch_s"] > 0).all()
    by_path = table.set_index("path")
    assert by_path.loc["precomputed", "one_off_s"] > 0 and by_path.loc["forward", "one_off_s"] == 0
    assert not table["pretrained"].any()


def test_head_benchmark_cli_prints_the_ratio(capsys):
    assert main(["--n-images", "8", "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "per-epoch ratio forward/precomputed" in out and "random-init" in out
