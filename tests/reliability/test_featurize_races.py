"""Races and hostile inputs around the featurizer: files rewritten while read, palettes, swapped weights files,
duplicate unreadable files, EXIF orientation, pixel bombs."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import featurize.transformer as transformer_module
from featurize import CNNFeaturizer, UnreadableImagesWarning, get_backbone_spec, load_model, resolve_weights

KW = dict(backbone="resnet18", layers="layer4", weights=None, image_size=32, batch_size=4)


def _features(items, **kw):
    return CNNFeaturizer(**{**KW, **kw}).fit().transform(items)


def check_a_file_rewritten_between_lookup_and_decode_is_stored_as_what_was_decoded(tmp_path, image_folder, monkeypatch):
    _, paths, _ = image_folder
    a = tmp_path / "a.png"
    shutil.copy(paths[0], a)
    real = transformer_module.content_key

    def hash_then_rewrite(item):
        key = real(item)
        if str(item) == str(a):
            shutil.copy(paths[1], a)  # another program rewrites the file after it was hashed
        return key

    monkeypatch.setattr(transformer_module, "content_key", hash_then_rewrite)
    cache = tmp_path / "cache"
    out = _features([a], cache=cache)
    np.testing.assert_allclose(out, _features([paths[1]]), rtol=1e-5, atol=1e-6)
    monkeypatch.undo()
    same_bytes_as_before = tmp_path / "c.png"
    shutil.copy(paths[0], same_bytes_as_before)
    np.testing.assert_allclose(_features([same_bytes_as_before], cache=cache), _features([paths[0]]),
                               rtol=1e-5, atol=1e-6, err_msg="the old bytes' key must not hold the new image")


def check_palette_images_with_equal_indices_but_other_palettes_are_not_confused(tmp_path, monkeypatch):
    indices = (np.arange(48 * 48).reshape(48, 48) % 4).astype(np.uint8)
    images = []
    for palette in ([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255], [255, 255, 255, 10, 200, 30, 90, 0, 90, 0, 60, 0]):
        im = Image.fromarray(indices, "P")
        im.putpalette(palette * 64)
        images.append(im)
    first = _features([images[0]], cache=tmp_path)
    second = _features([images[1]], cache=tmp_path)
    np.testing.assert_allclose(second, _features([images[1]]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(first, second)
    monkeypatch.setattr(transformer_module, "load_model", lambda *a: pytest.fail("model built on a cache hit"))
    np.testing.assert_array_equal(_features(images, cache=tmp_path), np.concatenate([first, second]))


def check_a_weights_file_swapped_after_fit_is_refused_not_stored_under_the_old_identity(tmp_path, two_class_arrays):
    spec = get_backbone_spec("resnet18")
    path = tmp_path / "latest.pth"
    states = [load_model(spec, resolve_weights(spec, None, seed)).state_dict() for seed in (1, 2)]
    torch.save(states[0], path)
    cache = tmp_path / "cache"
    images = two_class_arrays[0][:2]
    f = CNNFeaturizer(**{**KW, "weights": path, "cache": cache}).fit()
    torch.save(states[1], path)  # a training run overwrites latest.pth
    with pytest.raises(ValueError, match="changed since it was resolved.*fit again"):
        f.transform(images)
    assert not any(p.stat().st_size for p in cache.glob("*.h5")), "nothing stored under the former identity"
    refit = f.fit().transform(images)
    torch.save(states[1], tmp_path / "b.pth")
    np.testing.assert_allclose(refit, _features(images, weights=tmp_path / "b.pth"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cached", [False, True])
def test_identical_unreadable_files_are_each_reported(tmp_path, image_folder, cached):
    _, paths, _ = image_folder
    empty = [tmp_path / "empty1.png", tmp_path / "empty2.png"]
    for p in empty:
        p.write_bytes(b"")
    items = [empty[0], paths[0], empty[1], empty[0]]
    with pytest.warns(UnreadableImagesWarning) as caught:
        out = _features(items, on_error="skip", cache=tmp_path / "c" if cached else None)
    reported = [w.message.images for w in caught if issubclass(w.category, UnreadableImagesWarning)][0]
    assert [i for i, _ in reported] == [0, 2, 3]
    assert [r.split(":")[0] for _, r in reported] == [str(empty[0]), str(empty[1]), str(empty[0])]
    assert np.isnan(out[[0, 2, 3]]).all() and np.isfinite(out[1]).all()


def check_exif_orientation_is_applied_and_part_of_the_cache_key(tmp_path, two_class_arrays):
    array = two_class_arrays[0][0]  # 72 × 80, not square
    photo = tmp_path / "phone.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(array).save(photo, exif=exif)
    upright = np.ascontiguousarray(np.rot90(array, k=-1))
    expected = _features(upright[None])
    np.testing.assert_allclose(_features([photo]), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_features([Image.open(photo)]), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_features([photo], cache=tmp_path / "c"), expected, rtol=1e-5, atol=1e-6)
    assert "exif-transpose" in CNNFeaturizer(**KW).fit().cache_key()["preprocessing"]


def test_a_pixel_bomb_is_refused_before_decoding_and_names_the_file(tmp_path, image_folder):
    _, paths, _ = image_folder
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)  # 81 Mpx in a few kB
    assert bomb.stat().st_size < 200_000
    default = CNNFeaturizer().max_pixels
    assert 50e6 <= default <= 90e6
    with pytest.raises(ValueError, match=r"bomb\.png.*81\.0 Mpx.*max_pixels"):
        _features([paths[0], bomb])
    with pytest.warns(UnreadableImagesWarning, match="bomb.png"):
        out = _features([bomb, paths[0]], on_error="skip", max_pixels=100_000)
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreadableImagesWarning)
        assert np.isfinite(_features([paths[0]], max_pixels=72 * 80)).all(), "the limit is inclusive"


def test_palette_images_with_equal_indices_but_other_palettes_are_not_confused(tmp_path, monkeypatch):
    check_palette_images_with_equal_indices_but_other_palettes_are_not_confused(tmp_path, monkeypatch)


def test_a_weights_file_swapped_after_fit_is_refused_not_stored_under_the_old_identity(tmp_path, two_class_arrays):
    check_a_weights_file_swapped_after_fit_is_refused_not_stored_under_the_old_identity(tmp_path, two_class_arrays)


def test_exif_orientation_is_applied_and_part_of_the_cache_key(tmp_path, two_class_arrays):
    check_exif_orientation_is_applied_and_part_of_the_cache_key(tmp_path, two_class_arrays)


def test_a_file_rewritten_between_lookup_and_decode_is_stored_as_what_was_decoded(tmp_path, image_folder, monkeypatch):
    check_a_file_rewritten_between_lookup_and_decode_is_stored_as_what_was_decoded(tmp_path, image_folder, monkeypatch)
