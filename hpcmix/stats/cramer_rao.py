"""Fisher information of the one-parameter mixture and the Cramer-Rao bound on alpha.

For p(x|alpha) = alpha p_A(x) + (1 - alpha) p_H(x) one event carries
I(alpha) = integral (p_A - p_H)^2 / p(x|alpha) dx, and no unbiased estimator
from N events does better than sigma_alpha = 1 / sqrt(N I(alpha)).
"""

from __future__ import annotations

import numpy as np

__all__ = ["cramer_rao_bound", "fisher_information", "fisher_information_on_grid"]


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
