"""The linear probe that starts LP-FT: a tuned logistic regression on the frozen head inputs, written into the head.

Kumar et al. (2022, "Fine-tuning can distort pretrained features") start fine-tuning from a linear probe instead of a
random head: a random head's large gradients distort the pretrained features before it is any good.  The probe here
is the library's ``logistic`` head (standardisation + L2 logistic regression, the penalty chosen by an inner
stratified CV on the training images only, Kornblith et al. 2019), fitted on the activations that enter the network's
classifier; its scaler is folded into the ``Linear`` head, so the network computes the probe's exact logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from classifiers.heads import make_head, make_tuned_head

__all__ = ["Probe", "fit_probe"]

MAX_FOLDS = 3
"""Inner folds of the probe's penalty search (fewer when a class has fewer training images)."""


@dataclass(frozen=True)
class Probe:
    """A fitted linear probe as ``Linear`` parameters.

    Attributes
    ----------
    weight : Tensor of shape (n_classes, n_features)
    bias : Tensor of shape (n_classes,)
    C : float
        The chosen inverse L2 penalty.
    cv_score : float
        Its inner-CV accuracy (NaN when too few images for an inner CV: C fixed at 1).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    C: float
    cv_score: float

    def load_into(self, head: nn.Linear) -> None:
        """Write the probe into ``head`` (same shape)."""
        with torch.no_grad():
            head.weight.copy_(self.weight)
            head.bias.copy_(self.bias)


def fit_probe(features: torch.Tensor, y: np.ndarray, n_classes: int, random_state: int) -> Probe:
    """Fit the logistic probe on head inputs ``features`` (N, D) with encoded labels ``y`` (0 … n_classes − 1).

    With two classes, scikit-learn's single logit ``z`` becomes the logits ``(−z/2, z/2)`` (the same softmax).
    """
    X = features.double().numpy()
    counts = np.bincount(y, minlength=n_classes)
    if counts.min() >= 2:
        search = make_tuned_head("logistic", n_per_class=int(counts.min()), random_state=random_state,
                                 max_folds=MAX_FOLDS).fit(X, y)
        pipeline, C, score = search.best_estimator_, float(search.best_params_["clf__C"]), float(search.best_score_)
    else:
        pipeline, C, score = make_head("logistic", random_state=random_state).fit(X, y), 1.0, float("nan")
    scaler, clf = pipeline.named_steps["scale"], pipeline.named_steps["clf"]
    coef = clf.coef_ / scaler.scale_
    intercept = clf.intercept_ - coef @ scaler.mean_
    if n_classes == 2:
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    return Probe(torch.as_tensor(coef, dtype=torch.float32), torch.as_tensor(intercept, dtype=torch.float32), C,
                 score)
