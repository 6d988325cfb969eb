"""Classifier figures of merit, in numpy/scipy only (no scikit-learn)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve, from ranks (Mann-Whitney U).

    ``AUC = (R_1 - n_1 (n_1 + 1) / 2) / (n_1 n_0)`` with ``R_1`` the sum of the
    ranks of the positive (``y_true == 1``) scores among all scores.  Tied
    scores get their average rank, so a positive-negative tie counts 1/2, as
    in the pairwise definition ``P(s_1 > s_0) + P(s_1 = s_0) / 2``.
    O(n log n) time.
    """
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"y_true and score differ in length ({y.size} vs {s.size})")
    if not np.all(np.isfinite(s)):
        raise ValueError("score holds non-finite values")
    labels = np.unique(y)
    if not np.all(np.isin(labels, (0, 1))):
        raise ValueError(f"y_true must hold 0/1 labels, got {labels[:10]}")
    pos = y == 1
    n1 = int(pos.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        raise ValueError("ROC AUC needs both classes in y_true")
    ranks = rankdata(s, method="average")
    r1 = ranks[pos].sum()
    return float((r1 - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def pair_score(proba: np.ndarray, k: int, ref: int) -> np.ndarray:
    """s_k / (s_k + s_ref) of K-class probabilities (n, K), in float64.

    Monotonic in s_k / s_ref, which estimates the k-vs-ref density ratio (paper eq. 9-10):
    the multiclass network's output for component k against the reference.
    """
    proba = np.asarray(proba)
    num = proba[:, k].astype(np.float64)
    return num / np.maximum(num + proba[:, ref], np.finfo(np.float64).tiny)
