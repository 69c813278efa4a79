"""Faults in datasets: wrong or torn zips and manifests, and hostile file names in image folders and CSV files."""

from __future__ import annotations

import csv
import json
import logging
import os
import sys

import numpy as np
import pytest
from PIL import Image
from test_download import _closed_port_url, make_hymenoptera_zip

from featurize.weights import file_sha256
from pipelines import datasets, download
from pipelines.datasets import generate_demo, load_csv, load_dataset, load_image_folder


@pytest.fixture(scope="module")
def genuine_zip() -> bytes:
    return make_hymenoptera_zip()


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    """``data_dir`` whose hymenoptera download cannot succeed: zips must be placed by hand."""
    monkeypatch.setattr(datasets, "HYMENOPTERA_URL", _closed_port_url())
    (tmp_path / "hymenoptera").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    "wrong, message",
    [(lambda z: z[: len(z) // 2], "not a valid zip"), (lambda z: make_hymenoptera_zip(n_val=(70, 80)), "150 images")],
    ids=["half-written", "wrong-layout"],
)
def test_wrong_zip_does_not_poison_the_manifest(offline_home, genuine_zip, wrong, message):
    zip_path = offline_home / "hymenoptera" / "hymenoptera_data.zip"
    zip_path.write_bytes(wrong(genuine_zip))
    with pytest.raises(ValueError, match=message) as info:
        load_dataset("hymenoptera", offline_home, verbose=False)
    assert str(zip_path) in str(info.value) and "delete it" in str(info.value)
    assert "sha256" not in download.read_manifest(offline_home / "hymenoptera" / "manifest.json")
    assert not (offline_home / "hymenoptera" / "extracted.partial").exists()
    zip_path.write_bytes(genuine_zip)
    assert len(load_dataset("hymenoptera", offline_home, verbose=False)) == 153 + 6
    manifest = json.loads((offline_home / "hymenoptera" / "manifest.json").read_text())
    assert manifest["sha256"] == file_sha256(zip_path) and manifest["complete"]


def test_unfinished_manifest_of_older_versions_is_not_trusted(offline_home, genuine_zip):
    """Older versions recorded a zip's sha256 before validating it; such a record is ignored."""
    zip_path = offline_home / "hymenoptera" / "hymenoptera_data.zip"
    poisoned = {"url": "x", "sha256": "0" * 64, "size": 3}
    (offline_home / "hymenoptera" / "manifest.json").write_text(json.dumps(poisoned))
    zip_path.write_bytes(genuine_zip)
    assert len(load_dataset("hymenoptera", offline_home, verbose=False)) == 153 + 6


@pytest.mark.parametrize(
    "content", ["{\"sha256\": ", "[]", json.dumps({"complete": True, "sha256": "zz", "root": "hymenoptera_data"}),
                json.dumps({"complete": True, "sha256": "a" * 64, "root": "../../etc"})],
    ids=["truncated", "list", "bad-sha", "escaping-root"],
)
def test_corrupt_hymenoptera_manifest_names_the_file(offline_home, genuine_zip, content):
    manifest = offline_home / "hymenoptera" / "manifest.json"
    manifest.write_text(content)
    (offline_home / "hymenoptera" / "hymenoptera_data.zip").write_bytes(genuine_zip)
    with pytest.raises(ValueError, match="delete it") as info:
        load_dataset("hymenoptera", offline_home, verbose=False)
    assert f"manifest {manifest}" in str(info.value)
    manifest.unlink()
    assert len(load_dataset("hymenoptera", offline_home, verbose=False)) == 153 + 6


def test_failed_manifest_write_leaves_a_usable_state(offline_home, genuine_zip, monkeypatch):
    zip_path = offline_home / "hymenoptera" / "hymenoptera_data.zip"
    zip_path.write_bytes(genuine_zip)

    def disk_full(data, fh, **kwargs):
        fh.write(json.dumps(data)[:10])
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(download.json, "dump", disk_full)
        with pytest.raises(OSError, match="No space"):
            load_dataset("hymenoptera", offline_home, verbose=False)
    assert len(load_dataset("hymenoptera", offline_home, verbose=False)) == 153 + 6


def test_corrupt_demo_manifest_regenerates(tmp_path, caplog):
    target = generate_demo(tmp_path / "demo", verbose=False)
    (target / "manifest.json").write_text("{ half")
    with caplog.at_level(logging.WARNING):
        generate_demo(target, verbose=False)
    assert str(target / "manifest.json") in caplog.text
    assert json.loads((target / "manifest.json").read_text())["classes"] == ["ants", "bees"]


HOSTILE = {
    "newline": "new\nline.png",
    "dash": "-rf.png",
    "double-dash": "--help.png",
    "long": "x" * 245 + ".png",
    "blanks": " spaced .png",
    "comma-quote": 'a,"b".png',
}


def _write_png(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path, "PNG")


@pytest.fixture
def hostile_folder(tmp_path):
    """root/{ants,bees}/<hostile names>, plus a non-UTF-8 name in each class where the OS allows it."""
    if sys.platform != "linux":
        pytest.skip("arbitrary bytes in file names are a Linux file system feature")
    root = tmp_path / "hostile"
    for k, cls in enumerate(("ants", "-bees\n")):
        (root / cls).mkdir(parents=True)
        for i, name in enumerate(HOSTILE.values()):
            _write_png(root / cls / name, 10 * k + i)
        _write_png(os.fsdecode(os.fsencode(root / cls) + b"/caf\xe9.png"), 10 * k + 9)
    return root


def test_image_folder_with_hostile_names(hostile_folder):
    imageset = load_image_folder(hostile_folder)
    assert imageset.classes == ["-bees\n", "ants"]
    assert len(imageset) == 2 * (len(HOSTILE) + 1)
    for item, label in zip(imageset.items, imageset.labels):
        assert os.path.isfile(item)
        assert os.path.basename(os.path.dirname(item)) == imageset.classes[label]
    assert {os.path.basename(item) for item in imageset.items} >= set(HOSTILE.values()) | {"caf\udce9.png"}


@pytest.mark.parametrize("case", [*HOSTILE, "non-utf8"])
def test_csv_with_hostile_names_round_trips(hostile_folder, tmp_path, case):
    folder = load_image_folder(hostile_folder)
    name = "caf\udce9.png" if case == "non-utf8" else HOSTILE[case]
    keep = [i for i, item in enumerate(folder.items) if os.path.basename(item) in (name, "-rf.png")]
    table = tmp_path / "list.csv"
    with open(table, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        for i in keep:
            writer.writerow([os.path.relpath(folder.items[i], tmp_path), folder.classes[folder.labels[i]]])
    imageset = load_csv(table)
    assert [os.path.realpath(p) for p in imageset.items] == [os.path.realpath(folder.items[i]) for i in keep]
    assert [imageset.classes[y] for y in imageset.labels] == [folder.classes[folder.labels[i]].strip() for i in keep]


def test_csv_odd_labels_and_byte_order_mark(image_folder, tmp_path):
    paths = image_folder[1]
    table = tmp_path / "excel.csv"
    rows = [f"{p},{label}" for p, label in zip(paths[:4], ["--5", "²", "--5", "²"])]
    table.write_text("\ufeffpath,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    imageset = load_csv(table)
    assert sorted(imageset.classes) == ["--5", "²"] and imageset.labels.tolist() == [0, 1, 0, 1]
    table.write_text("path,label\n" + "\n".join(f"{p},{y}" for p, y in zip(paths[:4], ["-1", "+2", "10", "-1"])))
    assert load_csv(table).classes == ["-1", "+2", "10"]


@pytest.mark.parametrize(
    "body, message",
    [
        ("{p},ants\nnew\nline.png,bees\n", "empty path or label.*row.*2.*quote"),
        ("{p},ants\n{p},bees,extra,fields\n", "cannot be read as a CSV"),
        ("{long},ants\n{p},bees\n", "do not exist"),
        ("{p},ants\nnul\x00byte.png,bees\n", "do not exist"),
    ],
    ids=["unquoted-newline", "ragged", "name-too-long", "nul-byte"],
)
def test_csv_malformed_rows_name_the_file(image_folder, tmp_path, body, message):
    table = tmp_path / "bad.csv"
    table.write_text("path,label\n" + body.format(p=image_folder[1][0], long="y" * 5000 + ".png"))
    with pytest.raises(ValueError, match=message) as info:
        load_csv(table)
    assert str(table) in str(info.value)


def test_csv_path_blanks_are_kept_when_the_file_has_them(tmp_path):
    for name in (" lead.png", "lead.png", "tail.png"):
        _write_png(tmp_path / name, len(name))
    table = tmp_path / "blanks.csv"
    table.write_text("path,label\n lead.png,ants\nlead.png,bees\n tail.png ,bees\n")
    assert [os.path.basename(p) for p in load_csv(table).items] == [" lead.png", "lead.png", "tail.png"]
