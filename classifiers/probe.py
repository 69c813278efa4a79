"""The linear probe that starts LP-FT: a tuned logistic regression on the frozen head inputs, written into the head.

Kumar et al. (2022, "Fine-tuning can distort pretrained features") start fine-tuning from a linear probe instead of a
random head: a random head's large gradients distort the pretrained features before it is any good.  The probe here
is an L2 logistic regression (lbfgs) on the activations that enter the network's classifier, its penalty searched over
the ``logistic`` head's grid (Kornblith et al. 2019) by an inner stratified CV on the training images only; its
weights are the ``Linear`` head's, so the network computes the probe's exact logits.

Two choices differ from the ``logistic`` head, each measured on the course's photos with EfficientNet-Lite0 at 5
images per class (3 draws, 153 val images): the features are not standardised (the standard deviations of 10
images divide the near-constant units by almost nothing: logits up to ±2,600 and 0.71–0.90 accuracy, against ±8–11
and 0.92–0.94 on the raw activations, which a pretrained network already puts on one scale), and the penalty is
chosen by the CV log-loss rather than the accuracy, which ties across the grid on a handful of images and then keeps
the weakest penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from classifiers.blocks import MAX_ITER
from classifiers.heads import default_grid

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
    cv_log_loss : float
        Its inner-CV log-loss (NaN when too few images for an inner CV: C fixed at 1).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    C: float
    cv_log_loss: float

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
    model = LogisticRegression(max_iter=MAX_ITER, random_state=random_state)
    if counts.min() >= 2:
        cv = StratifiedKFold(n_splits=min(MAX_FOLDS, int(counts.min())), shuffle=True, random_state=random_state)
        grid = {"C": default_grid("logistic")["clf__C"]}
        search = GridSearchCV(model, grid, scoring="neg_log_loss", cv=cv, refit=True).fit(X, y)
        clf, C, loss = search.best_estimator_, float(search.best_params_["C"]), -float(search.best_score_)
    else:
        clf, C, loss = model.fit(X, y), 1.0, float("nan")
    coef, intercept = clf.coef_, clf.intercept_
    if n_classes == 2:
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    return Probe(torch.as_tensor(coef, dtype=torch.float32), torch.as_tensor(intercept, dtype=torch.float32), C,
                 loss)
