"""Coverage of the fixed-test-set intervals in simulated experiments of known truth (numpy only, seconds).

The simulated design is hymenoptera's: a fixed test set of 70 ants + 83 bees, a pool of 120 training images per
class, J = 10 training draws (splits), each scored on the whole test set. Test image ``n`` has an easiness
``e_n`` drawn from a per-class Beta population; training draw ``j`` has a per-class quality ``q_jc`` = base +
helpfulness of the images it drew (centred on the pool, so its mean over draws is exactly zero) + training noise
(seed); the model is right on image ``n`` with probability ``1 − (1 − q_jc)(1 − e_n)``. The truth — the expected
accuracy over training draws and the test-image population — is then exactly
``Σ_c w_c (1 − (1 − base)(1 − mean e_c))``.

Run as a script (``python tests/test_simulation.py``) to print the before/after table: the old method (every split
bootstraps the test set, Nadeau–Bengio interval, best-by-test crossover) against the new one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from reports import stats

N_TEST = (70, 83)
POOL = 120
N_SPLITS = 10
EASINESS = ((2.0, 2.5), (2.5, 2.0))  # Beta parameters of the ants / bees test-image populations
CLASSES = np.repeat([0, 1], N_TEST)
WEIGHTS = np.array(N_TEST) / sum(N_TEST)


@dataclass(frozen=True)
class Method:
    """A method's expected quality at a train size and how much a training draw moves it."""

    base: float
    helpfulness: float = 0.15  # weight of the drawn images' helpfulness
    seed: float = 0.10  # half-width of the uniform training noise
    bias: float = 0.05  # half-width of the uniform class bias (+ants, −bees)


def mean_easiness() -> np.ndarray:
    return np.array([a / (a + b) for a, b in EASINESS])


def truth(method: Method, balanced: bool = False) -> float:
    per_class = 1 - (1 - method.base) * (1 - mean_easiness())
    return float(per_class.mean() if balanced else per_class @ WEIGHTS)


def draw_quality(rng: np.random.Generator, method: Method, per_class: int | None, n_splits: int,
                 helpful: np.ndarray, drawn: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(qualities (J, 2), drawn pool indices (J, 2, k)); ``per_class=None`` trains on the whole pool every time."""
    if per_class is None:
        dev = np.zeros((n_splits, 2))
    else:
        if drawn is None:
            drawn = np.argsort(rng.random((n_splits, 2, POOL)), axis=2)[:, :, :per_class]
        dev = np.take_along_axis(helpful[None], drawn, axis=2).mean(axis=2) - helpful.mean(axis=1)
    bias = rng.uniform(-method.bias, method.bias, n_splits)[:, None] * np.array([1, -1])
    q = method.base + method.helpfulness * dev + rng.uniform(-method.seed, method.seed, (n_splits, 1)) + bias
    if q.min() < 0 or q.max() > 1:
        raise AssertionError("simulated quality left [0, 1]: the truth would no longer be exact")
    return q, drawn


def draw_test_images(rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([rng.beta(a, b, n) for (a, b), n in zip(EASINESS, N_TEST)])


def correctness(rng: np.random.Generator, q: np.ndarray, easiness: np.ndarray, image_u: np.ndarray,
                stability: float = 0.8) -> np.ndarray:
    """0/1 correctness (J, N): image ``n`` is right when a uniform falls below its probability; the uniform is the
    image's own ``image_u[n]`` with probability ``stability`` (the same image is hard on every split), a fresh one
    otherwise. Marginally every uniform is U(0, 1), so the truth does not depend on ``stability``."""
    p = 1 - (1 - q[:, CLASSES]) * (1 - easiness)
    u = np.where(rng.random(p.shape) < stability, image_u[None], rng.random(p.shape))
    return (u < p).astype(float)


SETTINGS = {  # name: (images per class or None for all, method)
    "5/class": (5, Method(base=0.45, helpfulness=0.2, seed=0.22)),  # per-split accuracy sd ≈ 0.07
    "10/class": (10, Method(base=0.55)),
    "all": (None, Method(base=0.75, seed=0.02, bias=0.01)),
}


def simulate_accuracy(setting: str, n_experiments: int, seed: int = 0):
    """Yield the (J, N) correctness matrix of independent experiments."""
    per_class, method = SETTINGS[setting]
    rng = np.random.default_rng(seed)
    for _ in range(n_experiments):
        helpful = rng.uniform(-1, 1, (2, POOL))
        q, _ = draw_quality(rng, method, per_class, N_SPLITS, helpful)
        yield correctness(rng, q, draw_test_images(rng), rng.random(sum(N_TEST)))


def coverage(setting: str, n_experiments: int = 400, balanced: bool = False) -> tuple[float, float]:
    """(coverage of the truth, mean width) of the new 95% interval."""
    target = truth(SETTINGS[setting][1], balanced)
    hits, widths = [], []
    for c in simulate_accuracy(setting, n_experiments):
        record = stats.two_level_interval(c, CLASSES, balanced=balanced)
        hits.append(record["ci_low"] <= target <= record["ci_high"])
        widths.append(record["ci_high"] - record["ci_low"])
    return float(np.mean(hits)), float(np.mean(widths))


@pytest.mark.parametrize("setting", ["5/class", "all"])
def test_accuracy_interval_covers_the_truth(setting):
    cover, width = coverage(setting)
    assert 0.92 <= cover <= 0.98, f"coverage {cover:.3f} at {setting}"
    if setting == "5/class":
        assert width <= 0.25


def test_balanced_accuracy_interval_covers_the_truth():
    cover, _ = coverage("5/class", balanced=True)
    assert 0.92 <= cover <= 0.98


# --- crossover -------------------------------------------------------------------------------------------------

SIZES = (5, 10, 20, 50, 120)  # 120 = the whole pool ("all")
CROSSOVER = 31.6


def frozen_at(size: int) -> Method:
    full = size == POOL
    return Method(base=0.55 + 0.03 * math.log(size / 5), seed=0.02 if full else 0.10, bias=0.01 if full else 0.05)


def finetune_at(size: int) -> Method:
    frozen = frozen_at(size)
    return Method(base=frozen.base + 0.08 * math.log(size / CROSSOVER), seed=frozen.seed, bias=frozen.bias)


def simulate_crossover(rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(frozen, fine-tuning) correctness per train size; both methods see the same draws and test images, and
    their errors are coupled (half the images are hard or easy for both alike). The expected difference is linear
    in log size and crosses zero at exactly ``CROSSOVER``."""
    helpful = rng.uniform(-1, 1, (2, POOL))
    easiness = draw_test_images(rng)
    u_frozen = rng.random(easiness.size)
    u_tuned = np.where(rng.random(easiness.size) < 0.5, u_frozen, rng.random(easiness.size))
    frozen, tuned = [], []
    for size in SIZES:
        per_class = None if size == POOL else size
        q_fr, drawn = draw_quality(rng, frozen_at(size), per_class, N_SPLITS, helpful)
        q_ft, _ = draw_quality(rng, finetune_at(size), per_class, N_SPLITS, helpful, drawn)
        frozen.append(correctness(rng, q_fr, easiness, u_frozen))
        tuned.append(correctness(rng, q_ft, easiness, u_tuned))
    return frozen, tuned


def test_truth_of_the_planted_crossover_is_exact():
    gaps = [truth(finetune_at(s)) - truth(frozen_at(s)) for s in SIZES]
    log_s = np.log(SIZES)
    slope = np.diff(gaps) / np.diff(log_s)
    assert np.allclose(slope, slope[0])
    assert math.exp(log_s[2] - gaps[2] / slope[0]) == pytest.approx(CROSSOVER)


def crossover_coverage(n_experiments: int = 200, n_boot: int = 500, seed: int = 1) -> tuple[float, float, list]:
    rng = np.random.default_rng(seed)
    hits, estimates, cis = [], [], []
    for e in range(n_experiments):
        frozen, tuned = simulate_crossover(rng)
        found = stats.crossing_interval(SIZES, [b - a for a, b in zip(frozen, tuned)], CLASSES, n_boot=n_boot,
                                  random_state=e)
        low, high = found["ci"]
        hits.append(low <= CROSSOVER <= high)
        estimates.append(found["estimate"])
        cis.append(found["ci"])
        assert found["resamples"]["undefined"] == 0
        assert sum(v for k, v in found["resamples"].items() if k != "total") == n_boot
    return float(np.mean(hits)), float(np.median(estimates)), cis


def test_crossover_interval_covers_the_planted_crossover():
    cover, median, cis = crossover_coverage()
    assert cover >= 0.90, f"coverage {cover:.3f}"
    assert 25 < median < 40


# --- before / after (script) ------------------------------------------------------------------------------------


def _old_accuracy_interval(rng: np.random.Generator, c: np.ndarray, per_class: int | None) -> tuple[float, float]:
    """The method before issue 11: every split scored on a bootstrap resample of the test set, then the
    Nadeau–Bengio interval with overlap n_test / n_train (raw bounds; the old summary clipped them to [0, 1])."""
    from scipy import stats as sps

    n = c.shape[1]
    boot = np.array([row[rng.integers(0, n, n)].mean() for row in c])
    n_train = 2 * (per_class or POOL)
    half = sps.t.ppf(0.975, boot.size - 1) * boot.std(ddof=1) * math.sqrt(1 / boot.size + n / n_train)
    return boot.mean() - half, boot.mean() + half


def _old_crossover(frozen: list[np.ndarray], tuned: list[np.ndarray], rng: np.random.Generator) -> dict:
    """The pre-issue-11 ``crossover`` on the same data: per-split accuracies on bootstrapped test sets."""
    import pandas as pd

    old = _load_old_stats()
    rows = []
    for size, fr, ft in zip(SIZES, frozen, tuned):
        for family, c in (("frozen", fr), ("finetune", ft)):
            n = c.shape[1]
            for j, row in enumerate(c):
                acc = row[rng.integers(0, n, n)].mean()
                rows.append(dict(backbone="r18", cut="avgpool" if family == "frozen" else "", method=family,
                                 family=family, train_size=size, split=j, n_train=2 * size, n_test=n, accuracy=acc))
    return old.crossover(pd.DataFrame(rows), n_boot=500)


def _load_old_stats():
    import subprocess
    import types

    source = subprocess.run(["git", "show", "cacdd2b:reports/stats.py"], capture_output=True, text=True,
                            check=True).stdout
    module = types.ModuleType("old_stats")
    exec(compile(source, "old_stats.py", "exec"), module.__dict__)
    return module


def before_after(n_experiments: int = 400) -> None:
    rng = np.random.default_rng(123)
    print(f"{'setting':<9} {'old coverage':>12} {'old width':>10} {'(clipped)':>10} {'new coverage':>12} "
          f"{'new width':>10}")
    for setting, (per_class, method) in SETTINGS.items():
        target = truth(method)
        old_hits, old_w, old_clipped, new_hits, new_w = [], [], [], [], []
        for c in simulate_accuracy(setting, n_experiments):
            low, high = _old_accuracy_interval(rng, c, per_class)
            old_hits.append(low <= target <= high)
            old_w.append(high - low)
            old_clipped.append(min(high, 1.0) - max(low, 0.0))
            record = stats.two_level_interval(c, CLASSES)
            new_hits.append(record["ci_low"] <= target <= record["ci_high"])
            new_w.append(record["ci_high"] - record["ci_low"])
        print(f"{setting:<9} {np.mean(old_hits):>12.3f} {np.mean(old_w):>10.3f} {np.mean(old_clipped):>10.3f} "
              f"{np.mean(new_hits):>12.3f} {np.mean(new_w):>10.3f}")
    n_cross = n_experiments // 2
    old_hits, old_est = [], []
    crng = np.random.default_rng(1)
    for _ in range(n_cross):
        frozen, tuned = simulate_crossover(crng)
        found = _old_crossover(frozen, tuned, rng)
        ci = found["ci"] or (math.nan, math.nan)
        old_hits.append(ci[0] <= CROSSOVER <= ci[1])
        old_est.append(found["estimate"] if found["estimate"] is not None else math.nan)
    cover, median, _ = crossover_coverage(n_cross)
    print(f"crossover at {CROSSOVER} ({n_cross} experiments): old coverage {np.mean(old_hits):.3f}, median "
          f"{np.nanmedian(old_est):.1f}; new coverage {cover:.3f}, median {median:.1f}")


if __name__ == "__main__":
    before_after()
