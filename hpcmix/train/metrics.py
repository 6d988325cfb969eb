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


def weighted_roc_auc(y_true: np.ndarray, score: np.ndarray, weights: np.ndarray) -> float:
    """ROC AUC with per-event weights: sum of w_i w_j over (positive i, negative j) pairs with s_i > s_j
    (ties counting 1/2), over W_1 W_0. Equal weights give :func:`roc_auc`. O(n log n)."""
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if not (y.shape == s.shape == w.shape):
        raise ValueError(f"y_true, score and weights differ in length ({y.size}, {s.size}, {w.size})")
    if not np.all(np.isfinite(s)):
        raise ValueError("score holds non-finite values")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and >= 0")
    pos = y == 1
    w1, w0 = w[pos].sum(), w[~pos].sum()
    if not (w1 > 0 and w0 > 0):
        raise ValueError("ROC AUC needs both classes in y_true, with positive total weight")
    levels, group = np.unique(s, return_inverse=True)
    neg_at = np.bincount(group, weights=np.where(pos, 0.0, w), minlength=levels.size)
    pos_at = np.bincount(group, weights=np.where(pos, w, 0.0), minlength=levels.size)
    below = np.cumsum(neg_at) - neg_at            # negative weight at strictly lower scores
    return float((pos_at * (below + 0.5 * neg_at)).sum() / (w1 * w0))


def auc_error(auc: float, n_pos: float, n_neg: float) -> float:
    """Hanley and McNeil's standard error of an AUC from n_pos and n_neg events (effective sizes for
    weighted events); near 0.5 it is about sqrt((n_pos + n_neg + 1) / (12 n_pos n_neg))."""
    q1, q2 = auc / (2.0 - auc), 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


def pair_score(proba: np.ndarray, k: int, ref: int) -> np.ndarray:
    """s_k / (s_k + s_ref) of K-class probabilities (n, K), in float64.

    Monotonic in s_k / s_ref, which estimates the k-vs-ref density ratio (paper eq. 9-10):
    the multiclass network's output for component k against the reference.
    """
    proba = np.asarray(proba)
    num = proba[:, k].astype(np.float64)
    return num / np.maximum(num + proba[:, ref], np.finfo(np.float64).tiny)
