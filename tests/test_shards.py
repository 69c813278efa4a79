"""Sharded extraction (torchrun, gloo on CPU) stitched into one cache equal to a single-process one; a killed rank
resumes; a stitched cache reads and appends like any cache; the Slurm script dry-runs."""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from conftest import assert_features_close, make_two_class_images
from featurize import CacheKeyError, CNNFeaturizer, FeatureCache
from featurize.extract import build_parser
from featurize.shards import extract_folder, list_images, shard_indices, shard_path, slurm_script

ROOT = Path(__file__).parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
ARGS = ["--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--batch-size", "2", "--quiet"]
KEY = {"a": 1}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """13 images (PNG and JPEG, 40 × 44 px) in two subfolders; the last, ``b/img_12.png``, has the content of
    ``a/img_02.png``, so the two shards of a 2-process run both hold it.  Being last, it leaves every other image in
    the same batch of 2 in a single process (images 0-11 in pairs, 12 a cache hit) as on its rank (0-5 on rank 0,
    6-12 on rank 1, resumed from an even row): the stitched rows are computed exactly as the single-process ones."""
    root = tmp_path_factory.mktemp("shard_images")
    images, _ = make_two_class_images(7, size=(40, 44), seed=3)
    for i in range(13):
        sub = root / ("a" if i < 6 else "b")
        sub.mkdir(exist_ok=True)
        ext = "jpg" if i % 3 == 1 else "png"
        Image.fromarray(images[i]).save(sub / f"img_{i:02d}.{ext}")
    (root / "b" / "img_12.png").unlink()
    shutil.copy(root / "a" / "img_02.png", root / "b" / "img_12.png")
    return root


RECORD_APPENDS = """
import os, signal
if "RANK" in os.environ:
    from featurize.cache import FeatureCache
    real, appends = FeatureCache.append, []

    def recorded(self, keys, *args, **kwargs):  # rows computed per rank; rank 1 is killed after its KILL_AFTER-th
        real(self, keys, *args, **kwargs)
        with open(os.path.join(os.path.dirname(__file__), "rank%s.txt" % os.environ["RANK"]), "a") as f:
            f.write("%d\\n" % len(keys))
        appends.append(len(keys))
        if os.environ["RANK"] == "1" and os.environ.get("KILL_AFTER") == str(len(appends)):
            os.kill(os.getpid(), signal.SIGKILL)

    FeatureCache.append = recorded
"""


def _env(record: Path | None = None, kill_after: int | None = None) -> dict[str, str]:
    path = os.pathsep.join(str(p) for p in (record, ROOT) if p)
    kill = {"KILL_AFTER": str(kill_after)} if kill_after else {}
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **kill}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(folder: Path, out: Path, record: Path | None = None, kill_after: int | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [str(TORCHRUN), "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={_port()}",
         "-m", "featurize.extract", "--data", str(folder), "--out", str(out), *ARGS],
        env=_env(record, kill_after), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


def _single(folder: Path, out: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "featurize.extract", "--data", str(folder), "--out", str(out),
                           *ARGS], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "RuntimeWarning" not in done.stderr, "python -m featurize.extract must not import itself twice"
    return done.stdout


def _contents(path: Path) -> tuple[list[bytes], dict[str, np.ndarray], dict]:
    with h5py.File(path, "r") as f:
        n = int(f.attrs["n_complete"])
        return (f["keys"][:n].tolist(), {c: f["features"][c][:n] for c in f["features"]},
                {k: f.attrs[k] for k in ("key", "key_hash", "n_complete", "backbone", "pretrained")})


def _assert_same_cache(ours: Path, reference: Path) -> None:
    keys, feats, attrs = _contents(ours)
    ref_keys, ref_feats, ref_attrs = _contents(reference)
    assert keys == ref_keys, "same rows in the same order"
    assert attrs == ref_attrs
    assert sorted(feats) == sorted(ref_feats)
    for cut in ref_feats:
        assert_features_close(feats[cut], ref_feats[cut], err_msg=cut)


def test_the_shards_are_contiguous_blocks_covering_every_image_once():
    for n, world in ((13, 2), (13, 4), (3, 5), (0, 2)):
        blocks = [list(shard_indices(n, r, world)) for r in range(world)]
        assert sum(blocks, []) == list(range(n))
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed")
def test_torchrun_with_two_processes_a_killed_rank_resumes_and_the_stitched_cache_equals_a_single_process_one(
        tmp_path, folder):
    reference = tmp_path / "single.h5"
    assert "RANDOM-INIT" in _single(folder, reference)
    out = tmp_path / "sharded" / "cache.h5"
    out.parent.mkdir()

    record = tmp_path / "record"
    record.mkdir()
    (record / "sitecustomize.py").write_text(RECORD_APPENDS)
    run = _torchrun(folder, out, record, kill_after=2)  # rank 1 SIGKILLs itself once its 2nd batch is stored
    try:
        output = run.communicate(timeout=300)[0]
    finally:
        os.killpg(run.pid, signal.SIGKILL) if _alive(run.pid) else None
    assert run.returncode != 0 and "SIGKILL" in output, output[-3000:]
    shard = shard_path(out, 1, 2)
    before = [FeatureCache(shard_path(out, r, 2), _contents_key(reference)).n_complete for r in (0, 1)]
    assert before[0] <= 6 and before[1] == 4 and not out.exists()

    for r in (0, 1):
        (record / f"rank{r}.txt").unlink(missing_ok=True)
    rerun = _torchrun(folder, out, record)
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, output[-3000:]
    computed = [sum(map(int, (record / f"rank{r}.txt").read_text().split() or [0]))
                if (record / f"rank{r}.txt").exists() else 0 for r in (0, 1)]
    assert computed == [6 - before[0], 7 - before[1]], "each rank resumes its shard: stored rows are not recomputed"
    assert "13 rows" not in output and "12 rows from 2 process(es)" in output, output[-2000:]
    _assert_same_cache(out, reference)
    with h5py.File(out, "r") as f:
        assert f["keys"].is_virtual and f["features/layer4"].is_virtual
    with h5py.File(shard, "r") as f:
        assert f.attrs["n_complete"] == 7 and f["paths"][0].decode().endswith("img_06.png")

    images = list_images(folder)
    featurizer = dict(backbone="resnet18", layers=["layer2", "layer4"], weights=None, image_size=32)
    from_stitched = CNNFeaturizer(cache=str(out), **featurizer).fit().transform(images)
    from_single = CNNFeaturizer(cache=str(reference), **featurizer).fit().transform(images)
    assert_features_close(from_stitched, from_single)


def _contents_key(reference: Path) -> dict:
    import json

    with h5py.File(reference, "r") as f:
        return json.loads(f.attrs["key"])


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except OSError:
        return False
    return True


def _shard(path: Path, batches: list[int]) -> Path:
    cache = FeatureCache(path, KEY)
    for b in batches:
        keys = [hashlib.sha1(f"{b}-{i}".encode()).hexdigest() for i in range(3)]
        cache.append(keys, [f"/img/{b}-{i}.png" for i in range(3)], {"x": np.full((3, 2), b, np.float32)},
                     meta={"backbone": "synthetic"})
    return path


def test_a_stitched_cache_keeps_duplicates_once_reads_like_a_cache_and_appends_after_a_real_copy(tmp_path, caplog):
    out = tmp_path / "out.h5"
    shards = [_shard(shard_path(out, 0, 3), [0, 1]), shard_path(out, 1, 3), _shard(shard_path(out, 2, 3), [1, 2])]
    reference = _shard(tmp_path / "reference.h5", [0, 1, 1, 2])
    cache = FeatureCache.stitch(out, shards, KEY)
    assert cache.n_complete == 9
    keys = [hashlib.sha1(f"{b}-{i}".encode()).hexdigest() for b in (0, 1, 2) for i in range(3)]
    np.testing.assert_array_equal(cache.lookup(keys), np.arange(9))
    np.testing.assert_array_equal(cache.read(np.arange(9), ["x"])["x"][:, 0], [0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert cache.index() == FeatureCache(reference, KEY).index()
    with h5py.File(out, "r") as f:
        assert f["features/x"].is_virtual and f.attrs["backbone"] == "synthetic"
        assert [p.decode() for p in f["paths"][:]] == [f"/img/{b}-{i}.png" for b in (0, 1, 2) for i in range(3)]
    assert FeatureCache.stitch(out, shards, KEY).n_complete == 9, "a stitched cache is replaced by a new stitch"

    new = [hashlib.sha1(f"new-{i}".encode()).hexdigest() for i in range(2)]
    with caplog.at_level(logging.INFO, logger="featurize.cache"):
        cache.append(new, new, {"x": np.full((2, 2), 7, np.float32)})
    assert "stitched from shard files" in caplog.text and "failed" not in caplog.text, "materialised on purpose"
    with h5py.File(out, "r") as f:
        assert not f["keys"].is_virtual and not f["features/x"].is_virtual, "materialised before the append"
    for p in shards:
        p.unlink(missing_ok=True)
    np.testing.assert_array_equal(cache.lookup([*keys, *new]), np.arange(11))
    np.testing.assert_array_equal(cache.read(np.arange(11), ["x"])["x"][:, 0], [0, 0, 0, 1, 1, 1, 2, 2, 2, 7, 7])


def test_a_stitched_cache_missing_a_shard_is_refused_and_an_ordinary_cache_is_never_overwritten(tmp_path):
    out = tmp_path / "out.h5"
    shards = [_shard(shard_path(out, 0, 2), [0]), _shard(shard_path(out, 1, 2), [1])]
    FeatureCache.stitch(out, shards, KEY)
    shards[1].unlink()
    with pytest.raises(OSError, match="shard files and some are missing: out.h5.shard-1-of-2.h5"):
        FeatureCache(out, KEY).read(np.arange(6), ["x"])
    ordinary = _shard(tmp_path / "ordinary.h5", [5])
    before = ordinary.read_bytes()
    with pytest.raises(FileExistsError, match="ordinary cache"):
        FeatureCache.stitch(ordinary, shards[:1], KEY)
    assert ordinary.read_bytes() == before


def test_a_sharded_run_refuses_an_ordinary_cache_at_out_before_any_work(tmp_path, folder, monkeypatch):
    other_key = _shard(tmp_path / "other.h5", [5])
    featurizer = CNNFeaturizer("resnet18", weights=None, image_size=32)
    key = featurizer.fit().cache_key()
    out = tmp_path / "out.h5"
    FeatureCache(out, key).append(["k"], ["p"], {c: np.zeros((1, 2), np.float32) for c in key["cuts"]})
    monkeypatch.setattr(FeatureCache, "_create", lambda *a: pytest.fail("a shard was written"))
    with pytest.raises(CacheKeyError):
        extract_folder(featurizer, folder, other_key, rank=1, world_size=2)
    with pytest.raises(FileExistsError, match="ordinary cache"):
        extract_folder(featurizer, folder, out, rank=1, world_size=2)
    assert not shard_path(out, 1, 2).exists()


def test_the_slurm_script_runs_torchrun_with_this_command(tmp_path, capsys):
    argv = ["--data", "/scratch/imagenet/train", "--out", "/scratch/cache.h5", "--backbone", "resnet50",
            "--print-slurm", "--nodes", "4", "--gpus-per-node=8", "--batch-size", "256"]
    from featurize.extract import main

    assert main(argv) == 0
    script = capsys.readouterr().out
    assert script == slurm_script([a for a in argv if a not in ("--print-slurm", "--nodes", "4", "--gpus-per-node=8")],
                                  4, 8)
    assert "#SBATCH --nodes=4" in script and "#SBATCH --gpus-per-node=8" in script
    path = tmp_path / "job.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    line = next(x for x in script.splitlines() if x.startswith("srun "))
    words = shlex.split(line.replace('"$SLURM_NNODES"', "4").replace('"$SLURM_JOB_ID"', "1")
                        .replace('"$head:29500"', "node1:29500"))
    assert words[:3] == ["srun", "torchrun", "--nproc_per_node=8"]
    assert "--rdzv_backend=c10d" in words and "--rdzv_endpoint=node1:29500" in words
    command = words[words.index("featurize.extract") + 1:]
    args = build_parser().parse_args(command)
    assert (args.data, args.out, args.backbone, args.batch_size, args.print_slurm) == (
        "/scratch/imagenet/train", "/scratch/cache.h5", "resnet50", 256, False)
