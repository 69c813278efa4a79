"""Dataset loaders: image folders, CSV files, the generated demo set, and spec dispatch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_two_class_images, write_image_folder
from PIL import Image

from pipelines.datasets import ImageSet, generate_demo, load_dataset
from pipelines.demo import DEMO_PER_CLASS


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory):
    """root/train/{ants,bees} with 4 + 3 images, root/val/{ants,bees} with 2 + 2, plus noise files."""
    root = tmp_path_factory.mktemp("split")
    images, labels = make_two_class_images(4, size=(32, 32))
    keep = np.r_[0:4, 4:7]
    write_image_folder(root / "train", images[keep], labels[keep])
    write_image_folder(root / "val", images[[0, 1, 4, 5]], labels[[0, 1, 4, 5]])
    (root / "train" / "ants" / "notes.txt").write_text("not an image")
    (root / "train" / "ants" / ".hidden.png").write_bytes(b"")
    Image.fromarray(images[0]).save(root / "train" / "bees" / "UPPER.JPEG")
    return root


def test_load_folder_with_train_val(split_folder):
    imageset = load_dataset(str(split_folder), verbose=False)
    assert isinstance(imageset, ImageSet)
    assert imageset.name == "split0" and imageset.root == split_folder
    assert imageset.classes == ["ants", "bees"] and imageset.has_split
    assert imageset.class_counts("train") == {"ants": 4, "bees": 4}
    assert imageset.class_counts("val") == {"ants": 2, "bees": 2}
    assert len(imageset) == 12 and imageset.labels.dtype == np.int64
    assert any(item.endswith("UPPER.JPEG") for item in imageset.items)
    assert not any(item.endswith((".txt", ".hidden.png")) for item in imageset.items)
    for item, label in zip(imageset.items, imageset.labels):
        assert f"/{imageset.classes[label]}/" in item
    assert "train 8 / val 4" in imageset.summary()


def test_load_flat_folder(image_folder):
    root, paths, labels = image_folder
    imageset = load_dataset(root, verbose=False)
    assert imageset.subset is None and not imageset.has_split
    assert imageset.items == [str(p) for p in paths]
    np.testing.assert_array_equal(imageset.labels, labels)
    with pytest.raises(ValueError, match="no fixed split"):
        imageset.class_counts("train")


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        load_dataset(tmp_path / "empty", verbose=False)
    images, labels = make_two_class_images(2, size=(16, 16))
    write_image_folder(tmp_path / "single", images[:2], labels[:2])
    with pytest.raises(ValueError, match="single class"):
        load_dataset(tmp_path / "single", verbose=False)
    write_image_folder(tmp_path / "half" / "train", images, labels)
    with pytest.raises(ValueError, match="no val/ folder"):
        load_dataset(tmp_path / "half", verbose=False)


def test_load_csv(tmp_path, image_folder):
    root, paths, labels = image_folder
    names = np.array(["ants", "bees"])[labels]
    rows = ["path,label,subset"]
    for i, (path, name) in enumerate(zip(paths, names)):
        shown = path if i % 2 else path.relative_to(root)
        rows.append(f"{shown},{name},{'train' if i % 3 else 'VAL'}")
    csv = root / "list.csv"
    csv.write_text("\n".join(rows) + "\n")
    imageset = load_dataset(str(csv), verbose=False)
    assert imageset.name == "list" and imageset.classes == ["ants", "bees"]
    assert imageset.items == [str(p) for p in paths]
    np.testing.assert_array_equal(imageset.labels, labels)
    assert imageset.subset.tolist() == ["train" if i % 3 else "val" for i in range(len(paths))]


def test_csv_numeric_labels_without_subset(tmp_path, image_folder):
    root, paths, labels = image_folder
    csv = tmp_path / "numbers.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{10 if y else 9}\n" for p, y in zip(paths, labels)))
    imageset = load_dataset(csv, verbose=False)
    assert imageset.classes == ["9", "10"] and imageset.subset is None
    np.testing.assert_array_equal(imageset.labels, labels)


@pytest.mark.parametrize(
    "content, message",
    [
        ("file,label\n{p},ants\n", "lacks column"),
        ("path,label\nmissing.png,ants\n{p},bees\n", "do not exist"),
        ("path,label\n{p},ants\n{p},ants\n", "single class"),
        ("path,label,subset\n{p},ants,train\n{p},bees,test\n", "'train' or 'val'"),
        ("path,label,subset\n{p},ants,train\n{p},bees,train\n", "no 'val' row"),
    ],
    ids=["columns", "missing-file", "one-class", "bad-subset", "no-val"],
)
def test_csv_errors(tmp_path, image_folder, content, message):
    csv = tmp_path / "bad.csv"
    csv.write_text(content.format(p=image_folder[1][0]))
    with pytest.raises(ValueError, match=message):
        load_dataset(csv, verbose=False)


def test_unknown_spec_lists_choices(tmp_path):
    with pytest.raises(ValueError, match="'demo', 'hymenoptera'.*folder.*csv"):
        load_dataset("imagenet", tmp_path, verbose=False)
    (tmp_path / "table.txt").write_text("path,label\n")
    with pytest.raises(ValueError, match="unknown dataset spec"):
        load_dataset(tmp_path / "table.txt", verbose=False)


def test_imageset_validates():
    with pytest.raises(ValueError, match="labels"):
        ImageSet("x", ["a", "b"], np.array([0]), ["a", "b"], None, ".")
    with pytest.raises(ValueError, match="subset values"):
        ImageSet("x", ["a", "b"], np.array([0, 1]), ["a", "b"], np.array(["train", "test"]), ".")


@pytest.fixture(scope="module")
def demo_dirs(tmp_path_factory):
    first, second = tmp_path_factory.mktemp("demo_a"), tmp_path_factory.mktemp("demo_b")
    return generate_demo(first / "demo", verbose=False), generate_demo(second / "demo", verbose=False)


def test_demo_is_deterministic(demo_dirs):
    first, second = demo_dirs
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert len(files) == 2 * sum(DEMO_PER_CLASS.values()) + 1
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_demo_loads_with_split_and_is_reused(demo_dirs):
    data_dir = demo_dirs[0].parent
    imageset = load_dataset("demo", data_dir, verbose=False)
    assert imageset.name == "demo" and imageset.classes == ["ants", "bees"]
    assert imageset.class_counts("train") == {"ants": DEMO_PER_CLASS["train"], "bees": DEMO_PER_CLASS["train"]}
    assert imageset.class_counts("val") == {"ants": DEMO_PER_CLASS["val"], "bees": DEMO_PER_CLASS["val"]}
    with Image.open(imageset.items[0]) as image:
        assert image.size == (160, 160) and image.mode == "RGB"
    pixels = np.stack([np.asarray(Image.open(p), dtype=np.float32).mean(axis=(0, 1)) for p in imageset.items])
    assert pixels.std(axis=0).min() > 5, "backgrounds should vary"
    manifest = demo_dirs[0] / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    load_dataset("demo", data_dir, verbose=False)
    assert manifest.stat().st_mtime_ns == stamp


def test_demo_regenerates_half_written_folder(tmp_path, demo_dirs):
    target = tmp_path / "demo"
    (target / "train" / "ants").mkdir(parents=True)
    (target / "train" / "ants" / "stale.jpg").write_bytes(b"truncated")
    generate_demo(target, verbose=False)
    assert not (target / "train" / "ants" / "stale.jpg").exists()
    assert json.loads((target / "manifest.json").read_text())["classes"] == ["ants", "bees"]
    reference = demo_dirs[0] / "val" / "bees" / "bees_000.jpg"
    assert (target / "val" / "bees" / "bees_000.jpg").read_bytes() == reference.read_bytes()
