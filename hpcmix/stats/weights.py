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


def equal_population_edges(x: np.ndarray, *, bins: int = 20, min_per_bin: int = 10) -> np.ndarray:
    """Bin edges holding about equal numbers of the events ``x`` (at most ``bins`` bins, each with at
    least ``min_per_bin`` of them): the binning of a shape comparison, fine where the events are."""
    x = np.asarray(x, dtype=float).reshape(-1)
    if x.size < 2 * min_per_bin:
        raise ValueError(f"{x.size} events cannot fill two bins of at least {min_per_bin}; compare larger samples")
    n = max(2, min(bins, x.size // min_per_bin))
    edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, n + 1)))
    if edges.size < 3:   # a feature with one or two values: one bin per value
        edges = np.unique(np.concatenate([np.unique(x), [x.max() + 1.0]]))
    # ties (a value many events share) can leave a bin with fewer than min_per_bin events: merge such
    # bins into the next one, and a short last bin into the one before (a loop over <= bins bins)
    counts = binned(x, edges)[0]
    keep, held = [edges[0]], 0.0
    for i, c in enumerate(counts[:-1]):
        held += c
        if held >= min_per_bin:
            keep.append(edges[i + 1])
            held = 0.0
    if held + counts[-1] < min_per_bin and len(keep) > 1:
        keep.pop()
    return np.asarray(keep + [edges[-1]])


def binned(x: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per bin, the sum of the weights and of their squares (events beyond the edges go to the end bins)."""
    x = np.asarray(x, dtype=float).reshape(-1)
    w = np.ones(x.size) if weights is None else np.asarray(weights, dtype=float).reshape(-1)
    if w.size != x.size:
        raise ValueError(f"{w.size} weights for {x.size} events")
    i = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(i, w, len(edges) - 1), np.bincount(i, w * w, len(edges) - 1)


def shape_chi2(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> dict:
    """chi2 / ndf between the shapes of two binned samples, each (sum w, sum w^2) per bin (``binned``).

    Each is normalised to unit area, p_i = s_i / S with variance sum w^2_i / S^2 (events with weight 1
    give the Poisson n_i / N^2); chi2 = sum_i (p_a - p_b)^2 / (var_a + var_b) over the bins either
    fills, ndf = bins - 1 for the shared normalisation. For samples of one density chi2 / ndf is about 1."""
    (sa, va), (sb, vb) = ((np.asarray(s, float), np.asarray(v, float)) for s, v in (a, b))
    if sa.sum() <= 0 or sb.sum() <= 0:
        raise ValueError("a sample with no (positive) weight has no shape to compare")
    pa, pb = sa / sa.sum(), sb / sb.sum()
    var = va / sa.sum() ** 2 + vb / sb.sum() ** 2
    used = var > 0
    chi2 = float(((pa - pb)[used] ** 2 / var[used]).sum())
    ndf = int(used.sum()) - 1
    from scipy.stats import chi2 as chi2_dist

    return {"chi2": chi2, "ndf": ndf, "chi2_per_ndf": chi2 / ndf if ndf > 0 else float("nan"),
            "p_value": float(chi2_dist.sf(chi2, ndf)) if ndf > 0 else float("nan")}


def feature_comparison(x_source: np.ndarray, weights: np.ndarray, x_target: np.ndarray, *, bins: int = 20,
                       min_per_bin: int = 10) -> dict:
    """One feature of source (weighted by ``weights``) against target: the histograms on the target's
    equal-population bins, and chi2 / ndf before (unweighted) and after reweighting."""
    edges = equal_population_edges(x_target, bins=bins, min_per_bin=min_per_bin)
    before, after, target = binned(x_source, edges), binned(x_source, edges, weights), binned(x_target, edges)
    return {"edges": edges.tolist(), "source": before[0].tolist(), "reweighted": after[0].tolist(),
            "reweighted_w2": after[1].tolist(), "target": target[0].tolist(),
            "before": shape_chi2(before, target), "after": shape_chi2(after, target)}
