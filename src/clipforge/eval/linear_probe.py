"""Linear probe: L2-regularized logistic regression on frozen features, C chosen on a validation split.

As in CLIP's appendix A.3 (scikit-learn, L-BFGS, L2) with the C search of CoOp's `lpclip`: a coarse sweep
over 1e-6 .. 1e6 (every two decades), then a binary search in log space around the best C, halving the step
each round. A candidate is judged on validation accuracy, ties broken by validation log-likelihood. Features
are L2-normalized first, so one C range suits every model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clipforge.errors import MissingExtraError
from clipforge.eval.frozen import FeatureSet

COARSE_EXPONENTS = tuple(range(-6, 7, 2))  # log10 C of the coarse sweep
SEARCH_STEPS = 7  # binary-search rounds: the last step is 2 / 2**7 decades
MAX_ITER = 1000


def _sklearn() -> Any:
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as err:
        raise MissingExtraError("scikit-learn", "adapt") from err
    return LogisticRegression


def _arrays(data: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    return F.normalize(data.features, dim=-1).numpy().astype(np.float64), data.labels.numpy()


def fit(train: FeatureSet, c: float, seed: int = 0) -> Any:
    """A fitted scikit-learn LogisticRegression (multinomial, L-BFGS, L2 strength 1/C)."""
    x, y = _arrays(train)
    model = _sklearn()(C=c, solver="lbfgs", max_iter=MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # L-BFGS may stop at max_iter on separable few-shot data
        model.fit(x, y)
    return model


def predict(model: Any, data: FeatureSet) -> np.ndarray:
    """Predicted class per row of `data`."""
    return np.asarray(model.predict(_arrays(data)[0]))


def score(model: Any, data: FeatureSet) -> tuple[float, float]:
    """(accuracy, mean log-likelihood of the true class) of a fitted model on `data`."""
    x, y = _arrays(data)
    probs = np.zeros((len(y), int(max(y.max(), model.classes_.max())) + 1))
    probs[:, model.classes_] = model.predict_proba(x)  # classes absent from a few-shot train set: p = 0
    likelihood = float(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
    return float((probs.argmax(axis=1) == y).mean()), likelihood


@dataclass(frozen=True)
class CSearch:
    """The chosen C and every (log10 C, val accuracy, val log-likelihood) the search evaluated."""

    c: float
    val_accuracy: float
    evaluated: tuple[tuple[float, float, float], ...]
    step: float  # the last binary-search step, in decades


def search_c(
    train: FeatureSet,
    val: FeatureSet,
    coarse: Sequence[int] = COARSE_EXPONENTS,
    steps: int = SEARCH_STEPS,
    seed: int = 0,
) -> CSearch:
    """Chooses C on `val` by the coarse sweep then the log-space binary search (module docstring)."""
    seen: dict[float, tuple[float, float]] = {}

    def judge(exponent: float) -> tuple[float, float]:
        if exponent not in seen:
            seen[exponent] = score(fit(train, 10.0**exponent, seed), val)
        return seen[exponent]

    best = max((float(e) for e in coarse), key=judge)
    step = (coarse[1] - coarse[0]) / 2 if len(coarse) > 1 else 1.0
    for _ in range(steps):
        best = max((best, best - step, best + step), key=judge)
        step /= 2
    evaluated = tuple((e, *seen[e]) for e in sorted(seen))
    return CSearch(10.0**best, seen[best][0], evaluated, step * 2)


def probe(train: FeatureSet, val: FeatureSet, test: FeatureSet, seed: int = 0) -> dict[str, Any]:
    """Searches C on `val`, fits on `train` and reports test accuracy and predictions."""
    search = search_c(train, val, seed=seed)
    model = fit(train, search.c, seed)
    predictions = predict(model, test)
    return {"accuracy": float((predictions == test.labels.numpy()).mean()), "C": search.c,
            "val_accuracy": search.val_accuracy, "predictions": torch.as_tensor(predictions)}
