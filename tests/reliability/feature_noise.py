"""The float32 noise of features between forward passes that differ only in batch composition and thread count: the
measurement behind ``conftest.FEATURE_NOISE``.  Not a test (pytest does not collect it); run it by hand::

    python tests/reliability/feature_noise.py

Each thread count runs in its own process (``OMP_NUM_THREADS``); there the same images are featurized (resnet18,
random-init weights seed 0, every cut point) at several batch sizes.  Printed per image set and cut point: the largest
|value| of the reference run (1 thread, all images in one batch), the largest absolute difference of any other run,
that difference over the largest |value|, the largest relative difference of the values above 1e-3 of it, and the
run that gave the largest difference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TESTS = Path(__file__).parents[1]
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS.parent))

from conftest import FEATURE_NOISE, make_two_class_images  # noqa: E402

CUTS = ["conv1", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
# name: (images, image_size); the images of tests/test_shards.py's folder and of conftest's two_class_arrays
SETS = {
    "shards 13 @ 32 px": (lambda: make_two_class_images(7, size=(40, 44), seed=3)[0][:13], 32),
    "folder 24 @ 64 px": (lambda: make_two_class_images(12)[0], 64),
    "folder 24 @ 32 px": (lambda: make_two_class_images(12)[0], 32),
}
BATCH_SIZES = (1, 2, 3, 4)
THREADS = (1, 2)


def _features(out: Path) -> None:
    """Featurize every set at every batch size (and all images in one batch) in this process; save to ``out``."""
    from featurize import CNNFeaturizer

    saved = {}
    for name, (images, size) in SETS.items():
        images = images()
        for batch in (*BATCH_SIZES, len(images)):
            f = CNNFeaturizer("resnet18", layers=CUTS, weights=None, image_size=size, batch_size=batch,
                              num_workers=0).fit()
            x = f.transform(images)
            bounds = np.cumsum([0, *(f.feature_dims_[c] for c in CUTS)])
            saved.update({f"{name}|{c}|{batch}": x[:, a:b] for c, a, b in zip(CUTS, bounds, bounds[1:])})
    np.savez(out, **saved)


def measure() -> float:
    """Run every thread count in its own process, print the table; return the largest difference / largest |value|."""
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for threads in THREADS:
            out = Path(tmp) / f"threads{threads}.npz"
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(TESTS.parent)}
            subprocess.run([sys.executable, __file__, "--child", str(out)], env=env, check=True)
            with np.load(out) as data:
                runs.update({(*key.rsplit("|", 1), threads): data[key] for key in data.files})
    print(f"{'images':18} {'cut':8} {'max|ref|':>9} {'max |diff|':>10} {'/max|ref|':>10} {'max rel':>9}  worst run")
    worst_ratio, per_run = 0.0, {}
    for name, (images, _) in SETS.items():
        n = len(images())
        for cut in CUTS:
            ref = runs[f"{name}|{cut}", str(n), 1]
            scale = float(np.abs(ref).max())
            large = np.abs(ref) >= 1e-3 * scale
            diffs = {(batch, threads): np.abs(x - ref) for (key, batch, threads), x in runs.items()
                     if key == f"{name}|{cut}"}
            for run, d in diffs.items():
                per_run[run] = max(per_run.get(run, 0.0), float(d.max()) / scale)
            (batch, threads), diff = max(diffs.items(), key=lambda item: item[1].max())
            rel = max(float((d[large] / np.abs(ref[large])).max()) for d in diffs.values())
            ratio = float(diff.max()) / scale
            worst_ratio = max(worst_ratio, ratio)
            where = f"batch {batch}, {threads} thread(s)" if ratio else "-"
            print(f"{name:18} {cut:8} {scale:9.3g} {diff.max():10.2e} {ratio:10.2e} {rel:9.2e}  {where}")
    print("\nlargest difference / largest |value| over every set and cut point, per run (batch size 'all' = "
          "the number of images):")
    for (batch, threads), ratio in sorted(per_run.items(), key=lambda item: (item[0][1], int(item[0][0]))):
        print(f"  batch {batch:>2}, {threads} thread(s): {ratio:.2e}")
    print(f"largest difference / largest |value|: {worst_ratio:.2e}; FEATURE_NOISE = {FEATURE_NOISE:g} "
          f"(margin {FEATURE_NOISE / worst_ratio:.1f}x)" if worst_ratio else "no difference at all")
    return worst_ratio


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _features(args.child)
    else:
        measure()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
