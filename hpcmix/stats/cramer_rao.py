"""Fisher information of the one-parameter mixture and the Cramer-Rao bound on alpha.

For p(x|alpha) = alpha p_A(x) + (1 - alpha) p_H(x) one event carries
I(alpha) = integral (p_A - p_H)^2 / p(x|alpha) dx, and no unbiased estimator
from N events does better than sigma_alpha = 1 / sqrt(N I(alpha)).

With K components p(x|f) = sum_k f_k p_k(x) and free fractions theta (the free components but a
reference r, f_r = 1 - sum of the others), one event carries the matrix
I_pq = integral (p_p - p_r)(p_q - p_r) / p(x|f) dx; a Gaussian constraint of width w on a
fraction adds 1/w^2 to its diagonal of the N-event information N I, and the bound on
alpha = sum_num f / sum_den f is sqrt(g^T (N I + C)^-1 g), g = d alpha / d theta.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "FractionBound",
    "cramer_rao_bound",
    "fisher_information",
    "fisher_information_on_grid",
    "fraction_cramer_rao_bound",
    "fraction_fisher_information_on_grid",
]


def fisher_information_on_grid(p_a, p_h, x, alpha, *, weights=None) -> np.ndarray:
    """I(alpha) by trapezoid quadrature of densities tabulated at nodes ``x``.

    ``alpha`` may be an array (result has its shape). Nodes where the mixture
    density is zero contribute nothing (no events fall there). ``weights``
    replaces the trapezoid weights when given (e.g. for discrete boundary bins).
    """
    p_a = np.asarray(p_a, dtype=float)
    p_h = np.asarray(p_h, dtype=float)
    if weights is None:
        x = np.asarray(x, dtype=float)
        dx = np.diff(x)
        weights = np.zeros_like(x)
        weights[:-1] += dx / 2
        weights[1:] += dx / 2
    weights = np.asarray(weights, dtype=float)
    alpha = np.asarray(alpha, dtype=float)
    d = p_a - p_h
    p = p_h + alpha[..., None] * d
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(p > 0, d * d / p, 0.0)
    return np.sum(term * weights, axis=-1)


def fisher_information(templates, alpha) -> np.ndarray:
    """Per-event Fisher information I(alpha) of a template pair (any ``MixtureTemplates``)."""
    return templates.fisher_information(alpha)


def cramer_rao_bound(templates, alpha, n_events) -> np.ndarray:
    """Cramer-Rao bound 1 / sqrt(N I(alpha)) on the standard deviation of alpha_hat (broadcasts)."""
    info = np.asarray(templates.fisher_information(alpha), dtype=float)
    n_events = np.asarray(n_events, dtype=float)
    if np.any(n_events < 1):
        raise ValueError(f"n_events must be >= 1 for a Cramer-Rao bound, got {n_events!r}")
    with np.errstate(divide="ignore"):
        return 1.0 / np.sqrt(n_events * info)


# --------------------------------------------------------------------------- K components


def _quadrature_weights(x, n_nodes, weights):
    if weights is not None:
        weights = np.asarray(weights, dtype=float)
        if weights.shape != (n_nodes,):
            raise ValueError(f"weights must have one value per node ({n_nodes}), got shape {weights.shape}")
        return weights
    if x is None:
        raise ValueError("give the nodes x (trapezoid weights) or the quadrature weights")
    x = np.asarray(x, dtype=float)
    if x.shape != (n_nodes,):
        raise ValueError(f"x must have one value per node ({n_nodes}), got shape {x.shape}")
    dx = np.diff(x)
    w = np.zeros(n_nodes)
    w[:-1] += dx / 2
    w[1:] += dx / 2
    return w


def fraction_fisher_information_on_grid(densities, x, f, *, free, reference, weights=None) -> np.ndarray:
    """Per-event Fisher matrix of the free fractions, by quadrature of densities tabulated at nodes ``x``.

    densities: (n_nodes, K), the component densities at the nodes; f: the fractions, (K,) or
    (..., K) (one matrix per cell); free: the components whose fractions are parameters, reference:
    the component that takes up 1 - their sum (the remaining components are held fixed).
    I_pq = integral (p_free_p - p_ref)(p_free_q - p_ref) / p(x|f) dx, shape (..., P, P).
    Trapezoid weights on ``x`` unless ``weights`` (any quadrature rule) are given; nodes where the
    mixture density is zero contribute nothing.
    """
    d = np.asarray(densities, dtype=float)
    if d.ndim != 2:
        raise ValueError(f"densities must have shape (n_nodes, K), got {d.shape}")
    n_nodes, K = d.shape
    free = np.atleast_1d(np.asarray(free, dtype=np.int64))
    if reference in set(free.tolist()) or np.any((free < 0) | (free >= K)) or not 0 <= reference < K:
        raise ValueError(f"free = {free.tolist()} and reference = {reference} must be distinct components "
                         f"of 0..{K - 1}")
    w = _quadrature_weights(x, n_nodes, weights)
    f = np.asarray(f, dtype=float)
    if f.shape[-1] != K:
        raise ValueError(f"f must end in K = {K} fractions, got shape {f.shape}")
    p = f @ d.T  # (..., n_nodes)
    e = d[:, free] - d[:, [reference]]  # (n_nodes, P)
    with np.errstate(divide="ignore", invalid="ignore"):
        wp = np.where(p > 0, w / p, 0.0)
    return np.einsum("...n,np,nq->...pq", wp, e, e)


#: eigenvalues below this fraction of the largest count as zero: the fractions along them are not identified
_SINGULAR = 1e-10


def _quadratic_form_inverse(info, g) -> np.ndarray:
    """g^T info^-1 g per cell, +inf where g has a part along a direction the information does not fix.

    With more free fractions than the templates have independent shapes (e.g. two first-order
    Fourier backgrounds beside the phi* pair: four densities in the span of 1, cos, sin) the
    information matrix is singular; a plain solve would return round-off noise, even negative.
    """
    lam, vec = np.linalg.eigh(info)
    proj = np.einsum("...pq,...p->...q", vec, g)          # g in the eigenbasis
    null = lam <= _SINGULAR * np.maximum(lam[..., -1:], 0.0)
    blind = np.any(null & (np.abs(proj) > 1e-9 * np.linalg.norm(g, axis=-1, keepdims=True)), axis=-1)
    with np.errstate(divide="ignore"):
        q = np.sum(np.where(null, 0.0, proj * proj / np.where(null, 1.0, lam)), axis=-1)
    return np.where(blind, np.inf, q)


@dataclass(frozen=True)
class FractionBound:
    """Cramer-Rao bounds on the standard deviation of alpha_hat (arrays over the cells).

    bound: every free fraction profiled (constraint widths included); nuisance_fixed[k]: the same
    with nuisance k fixed (bound - nuisance_fixed[k] is what floating it costs); all_fixed: every
    nuisance fixed (only the den fractions free).
    """

    bound: np.ndarray
    nuisance_fixed: dict
    all_fixed: np.ndarray


def fraction_cramer_rao_bound(densities, x, f, n_events, *, num, den, treatment=None, widths=None,
                              weights=None) -> FractionBound:
    """Cramer-Rao bound on alpha = sum_num f / sum_den f with nuisances, for densities on a 1-D grid.

    The arguments mirror ``fit_fractions``: treatment {k: "fixed" | "floated" | "constrained"} for
    the components outside den, widths {k: width} for the constrained ones (scalars or per cell).
    f: true fractions (K,) or (..., K); n_events broadcasts against f.shape[:-1].
    sigma_alpha >= sqrt(g^T (N I + C)^-1 g), I the per-event Fisher matrix of the free fractions
    (``fraction_fisher_information_on_grid``), C = diag(1 / width^2) on the constrained ones,
    g = d alpha / d theta = [k in num] / S + alpha [k nuisance] / S (S = sum_den f).
    """
    d = np.asarray(densities, dtype=float)
    K = d.shape[-1]
    num = sorted(int(k) for k in np.atleast_1d(num))
    den = sorted(int(k) for k in np.atleast_1d(den))
    if d.ndim != 2 or K < 2:
        raise ValueError(f"densities must have shape (n_nodes, K) with K >= 2 components, got {d.shape}")
    if any(not 0 <= k < K for k in (*num, *den)):
        raise ValueError(f"num = {num} and den = {den} must be component indices in 0..{K - 1}")
    if len(den) < 2 or not set(num) < set(den):
        raise ValueError(f"num = {num} must be a non-empty proper subset of den = {den} (>= 2 components)")
    treatment = dict(treatment or {})
    others = [k for k in range(K) if k not in den]
    if sorted(treatment) != others or any(v not in ("fixed", "floated", "constrained") for v in treatment.values()):
        raise ValueError(f"treatment must give 'fixed', 'floated' or 'constrained' for each of {others}, "
                         f"got {treatment}")
    widths = dict(widths or {})
    cons = [k for k in others if treatment[k] == "constrained"]
    if sorted(widths) != cons:
        raise ValueError(f"widths must be given for exactly the constrained components {cons}, got {sorted(widths)}")
    f = np.asarray(f, dtype=float)
    cell = f.shape[:-1]
    n_events = np.broadcast_to(np.asarray(n_events, dtype=float), cell)
    if np.any(n_events < 1):
        raise ValueError(f"n_events must be >= 1 for a Cramer-Rao bound, got {n_events!r}")
    wid = {k: np.broadcast_to(np.asarray(widths[k], dtype=float), cell) for k in cons}
    if any(np.any(~(v > 0)) for v in wid.values()):
        raise ValueError("constraint widths must be > 0")
    rd = [k for k in den if k not in num][-1]
    nuis = [k for k in others if treatment[k] != "fixed"]
    s = f[..., den].sum(axis=-1)
    alpha = f[..., num].sum(axis=-1) / s

    def bound(fixed_extra):
        free = [k for k in sorted(set(den) | set(nuis)) if k != rd and k not in fixed_extra]
        info = fraction_fisher_information_on_grid(d, x, f, free=free, reference=rd, weights=weights)
        info = info * n_events[..., None, None]
        for p, k in enumerate(free):
            if k in wid:
                info[..., p, p] += 1.0 / wid[k] ** 2
        g = np.stack([np.where(k in num, 1.0 / s, 0.0) + np.where(k in nuis, alpha / s, 0.0) for k in free], axis=-1)
        return _quadratic_form_inverse(info, g) ** 0.5

    return FractionBound(bound=bound(()), nuisance_fixed={k: bound((k,)) for k in nuis}, all_fixed=bound(tuple(nuis)))
