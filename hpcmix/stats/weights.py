"""Per-event weights: their effective sample size, summary and the spread between networks (numpy only)."""

from __future__ import annotations

import numpy as np


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective number of events, (sum w)^2 / sum w^2: n for equal weights, less the more they vary."""
    w = np.asarray(weights, dtype=float).reshape(-1)
    total = (w * w).sum()
    return float(w.sum() ** 2 / total) if total > 0 else 0.0


def weight_summary(weights: np.ndarray) -> dict:
    """Mean, spread, range, quantiles and effective sample size of one set of weights."""
    w = np.asarray(weights, dtype=float).reshape(-1)
    q = np.quantile(w, [0.01, 0.5, 0.99])
    ess = effective_sample_size(w)
    return {"n": int(w.size), "mean": float(w.mean()), "mean_err": float(w.std(ddof=1) / np.sqrt(w.size)),
            "std": float(w.std(ddof=1)), "min": float(w.min()), "max": float(w.max()),
            "q01": float(q[0]), "median": float(q[1]), "q99": float(q[2]),
            "effective_sample_size": ess, "effective_fraction": ess / w.size}


def network_spread(weights: np.ndarray) -> dict:
    """The spread of M networks' weights per event (weights (n, M)): the relative standard deviation
    std_m(w) / mean_m(w), its median and 90 % quantile over events (0 for M = 1)."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2:
        raise ValueError(f"weights must be (n_events, n_networks), got shape {w.shape}")
    if w.shape[1] < 2:
        return {"networks": int(w.shape[1]), "relative_std_median": 0.0, "relative_std_q90": 0.0}
    rel = w.std(axis=1, ddof=1) / w.mean(axis=1)
    return {"networks": int(w.shape[1]), "relative_std_median": float(np.median(rel)),
            "relative_std_q90": float(np.quantile(rel, 0.9))}


def region_fractions(inside_source: np.ndarray, weights: np.ndarray, inside_target: np.ndarray) -> dict:
    """The share of events in a region: the source's, the reweighted source's and the target's (with
    binomial errors). Reweighting closes in the region when the last two agree."""
    inside_source = np.asarray(inside_source, dtype=bool)
    inside_target = np.asarray(inside_target, dtype=bool)
    w = np.asarray(weights, dtype=float)
    f_s, f_t = inside_source.mean(), inside_target.mean()
    f_w = w[inside_source].sum() / w.sum()
    ess = effective_sample_size(w)
    return {"source": float(f_s), "source_err": float(np.sqrt(f_s * (1 - f_s) / inside_source.size)),
            "reweighted_source": float(f_w), "reweighted_source_err": float(np.sqrt(f_w * (1 - f_w) / ess)),
            "target": float(f_t), "target_err": float(np.sqrt(f_t * (1 - f_t) / inside_target.size))}
