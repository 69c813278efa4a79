"""Statistics over repeated training draws: intervals, paired tests, equivalence, selection, crossover.

Two experimental designs, named in every output (``design`` column of ``results.csv``), each an object of
:data:`DESIGNS` (:mod:`~reports.stats.designs`) that knows its accuracy interval, its paired test and its crossover
resampling:

``"fixed_test"``
    A fixed test set (hymenoptera ``val/``); every training draw (split) is scored on the whole test set. The data
    of one configuration is a 0/1 correctness matrix of shape (J splits, N test images) and the uncertainty has two
    sources, the training draw and the test images: :func:`two_level_interval` carries both (variance components
    of a crossed splits × images design, Satterthwaite degrees of freedom).
``"resampled"``
    Random train/test splits of one pool: the Nadeau–Bengio corrected resampled t over per-split accuracies
    (:func:`mean_ci`, :func:`paired_difference` with ``overlap = n_test / n_train``).

How the intervals stay valid where pretrained networks put them — each choice checked by ``tests/test_simulation.py``
(1000 experiments per cell; ``python tests/test_simulation.py`` prints the old-versus-new tables that the README's
evaluation section quotes):

* **Accuracies use the logit scale.** The two-level variance is carried to ``logit(p)`` by the delta method, the
  Student-t interval is built there and transformed back, so it never leaves [0, 1] and is asymmetric where the sampling
  distribution is: near the ceiling a test set with few hard images gives a high estimate *and* a small variance, and
  the symmetric interval then missed above the truth (0.85–0.94 coverage at 0.97–0.99; 0.94–0.97 on the logit scale with
  the floor below). A bootstrap-t over draws × images was the alternative; it cannot see what dominates those misses (a
  test set that happens to hold none of the population's rare hard images) and costs a resampling loop per interval.
  **Continuity:** each class's test-image variance is at least what half a pseudo image right on half the draws would
  give (:data:`PSEUDO_IMAGE`), and the logit is read no closer to 0 or 1 than that half image allows. A perfect 153/153
  then gives [0.977, 1] (Clopper–Pearson: [0.976, 1]) instead of no interval, test sets without a hard image are still
  covered (0.99 with 1.5% very hard images: 0.90 without the floor, 0.97 with it, slightly conservative), and at
  ordinary accuracies the floor never binds.
* **Paired differences stay on the raw scale.** Two methods' correctness on the same images share their hard
  images, so their difference is close to symmetric even near the ceiling: the raw two-level interval covers
  0.95–0.98 at ≥ 5 draws in every simulated pair (conservative where both err on the same images), with a type-I
  error ≤ 0.05. Combining the two logit intervals (MOVER) over-covered (0.98–1.00, 60–90% wider) in a trial of the
  same models. The t p-value and the TOST use the interval's standard error and degrees of freedom, so an
  interval, its test and its equivalence verdict never disagree; bounds are clipped to [−1, 1].
* **Numerics that cannot be absurd.** A variance counts as zero below a relative tolerance (``_RTOL`` of
  :mod:`~reports.stats.intervals`) of the terms it is computed from, so rounding noise never passes for a variance
  (the old code gave ±1.9e128 from a 1.7e-21 "variance"); Satterthwaite degrees of freedom lie between 1 and the
  design's own (draws − 1 plus images − classes). When the test-image component is estimated ≤ 0 it is left
  out; when the draw component is zero as well, the undebiased image variance (an upper bound) is used instead. A
  NaN interval is left only when nothing varies — no draw differs from another and no test image from another of
  its class — and its note says so.
* **Fewer than :data:`MIN_DRAWS` training draws.** A draw variance from J < 5 draws has J − 1 < 4 degrees of
  freedom: at J = 2 the unconditional interval covered 0.86–0.96 with widths up to 1e150. Such an interval is
  therefore *conditional on these draws* (``conditional``, said in its note): it covers test-image sampling around
  the mean accuracy of the models actually trained, which it does (0.94–0.97). No verdict — "better", "as good as",
  "works", a crossover point — rests on fewer than :data:`MIN_DRAWS` draws: :func:`paired_comparison` leaves
  ``significant`` and ``equivalent`` missing (``few_draws``) and :func:`crossover` reports the per-size differences
  only.
* **Draws that sometimes fail.** A t interval over a handful of draws assumes their accuracies vary smoothly; when
  one draw in seven fails it covers 0.78–0.86. No interval over few draws can see that, so :func:`summarize` puts
  the per-draw minimum and median next to every mean accuracy.
* **The crossover** is read from a monotone (isotonic) fit of the per-size differences in log size, not from the
  first size where a noisy mean turns positive (median 16 for a planted 31.6 at 5 draws and ten sizes; the fit:
  27); its bootstrap keeps at least two distinct draws in every resample.

Nothing here looks at test accuracy to choose a configuration: :func:`select_best` ranks by training-side
evidence (``selection_score``) only, and :func:`paired_comparison` / :func:`crossover` take pre-selected
configurations.
"""

from reports.stats.correctness import Correctness, correctness_matrices
from reports.stats.crossover import crossing_interval, crossover
from reports.stats.designs import DESIGNS, Design, FixedTestDesign, ResampledDesign, design_of
from reports.stats.intervals import (
    MIN_DRAWS,
    NOT_TESTABLE,
    PSEUDO_IMAGE,
    IntervalRecord,
    mean_ci,
    resampled_interval,
    resampling_overlap,
    two_level_interval,
    wilson_ci,
)
from reports.stats.paired import paired_comparison
from reports.stats.schema import CONFIG_COLUMNS, PAIR_KEYS, VARIANT_COLUMNS, config_columns, config_label
from reports.stats.selection import select_best
from reports.stats.significance import (
    EQUIVALENCE_MARGIN,
    holm,
    mcnemar_exact,
    paired_difference,
    paired_interval,
    t_test_p,
    tost,
)
from reports.stats.summary import summarize

__all__ = [
    "CONFIG_COLUMNS",
    "DESIGNS",
    "EQUIVALENCE_MARGIN",
    "MIN_DRAWS",
    "NOT_TESTABLE",
    "PAIR_KEYS",
    "PSEUDO_IMAGE",
    "VARIANT_COLUMNS",
    "Correctness",
    "Design",
    "FixedTestDesign",
    "IntervalRecord",
    "ResampledDesign",
    "config_columns",
    "config_label",
    "correctness_matrices",
    "crossing_interval",
    "crossover",
    "design_of",
    "holm",
    "mcnemar_exact",
    "mean_ci",
    "paired_comparison",
    "paired_difference",
    "paired_interval",
    "resampled_interval",
    "resampling_overlap",
    "select_best",
    "summarize",
    "t_test_p",
    "tost",
    "two_level_interval",
    "wilson_ci",
]
