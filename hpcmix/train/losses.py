"""Likelihood-ratio losses: train a network u(x) whose optimum is a known function of r = f_1 / f_0.

For samples of two densities f_0 (label 0, the reference) and f_1 (label 1), the loss

    J(u) = E_0[phi(u(x))] + E_1[psi(u(x))]

is minimised pointwise where f_0 phi'(u) + f_1 psi'(u) = 0, i.e. at u = omega(r(x)) for the pair's
omega (Moustakides and Basioti, arXiv:1911.00405; the ATLAS H -> Za reweighting of the second seed
paper uses such a loss). The expectations are per sample: each class is weighted to the same total
(``class_balanced_weights``), so neither the class sizes nor the event weights' scale move the
optimum, and per-event weights w enter as E_c[w g(u)] / E_c[w].

========================= ============== ======================== ========================
name                      omega(r)       phi(u) (on f_0 events)   psi(u) (on f_1 events)
========================= ============== ======================== ========================
``exponential``           log r          exp(u / 2)               exp(-u / 2)
``kl``                    log r          exp(u)                   -u
``cross_entropy``         log r          log(1 + e^u)             log(1 + e^-u)
``square``                r              u^2 / 2                  -u
========================= ============== ======================== ========================

``cross_entropy`` is binary cross-entropy on the logit u, the classifier of Cranmer, Pavez and
Louppe (arXiv:1506.02169) read as a ratio; ``kl`` is the Nguyen-Wainwright-Jordan bound on the
Kullback-Leibler divergence; ``square`` fits r itself (least-squares importance fitting), so its
u can go negative where r is small and is floored there.

Each loss is given twice, in numpy (``phi``/``psi``: tests, evaluation) and in ``keras.ops``
(``RatioLoss``: training); ``tests/test_losses.py`` checks that the two agree and that the
numpy pair's pointwise minimiser is omega(r).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

__all__ = ["LOSSES", "RATIO_CLIP", "LikelihoodRatioLoss", "class_balanced_weights", "get_loss"]

#: estimated ratios are kept in [1 / RATIO_CLIP, RATIO_CLIP] (as the calibrated ratios of hpcmix.stats.ratios)
RATIO_CLIP = 1e12
_LOG_CLIP = float(np.log(RATIO_CLIP))


@dataclass(frozen=True)
class LikelihoodRatioLoss:
    """One (phi, psi) pair and the omega its optimum estimates ("log": u = log r; "ratio": u = r)."""

    name: str
    omega: str
    phi: Callable[[np.ndarray], np.ndarray]
    psi: Callable[[np.ndarray], np.ndarray]
    doc: str

    def omega_of(self, r) -> np.ndarray:
        """omega(r): the loss's pointwise optimum for a true ratio r > 0."""
        r = np.asarray(r, dtype=float)
        return np.log(r) if self.omega == "log" else r

    def ratio(self, u) -> np.ndarray:
        """r from the network output u (omega's inverse), clipped to [1 / RATIO_CLIP, RATIO_CLIP]."""
        u = np.asarray(u, dtype=float)
        if self.omega == "log":
            return np.exp(np.clip(u, -_LOG_CLIP, _LOG_CLIP))
        return np.clip(u, 1.0 / RATIO_CLIP, RATIO_CLIP)

    def score(self, u) -> np.ndarray:
        """r / (1 + r) in [0, 1]: monotonic in u, the classifier-like output the calibrated variant uses."""
        u = np.asarray(u, dtype=float)
        if self.omega == "log":
            return special.expit(np.clip(u, -_LOG_CLIP, _LOG_CLIP))   # sigmoid(u) = r / (1 + r)
        r = self.ratio(u)
        return r / (1.0 + r)

    def risk(self, u, y, weights=None) -> float:
        """J(u) on labelled events (y: 0 for f_0, 1 for f_1), class-balanced as in training (halved)."""
        u, y = np.asarray(u, dtype=float).reshape(-1), np.asarray(y).reshape(-1)
        w = class_balanced_weights(y, weights)
        return float(np.mean(w * np.where(y == 1, self.psi(u), self.phi(u))))

    def keras(self):
        """The Keras loss for this pair (imports Keras)."""
        from ._keras_losses import RatioLoss

        return RatioLoss(self.name)


def _softplus(u):
    return np.logaddexp(0.0, u)


LOSSES = {
    "exponential": LikelihoodRatioLoss("exponential", "log", lambda u: np.exp(u / 2.0), lambda u: np.exp(-u / 2.0),
                                       "phi = exp(u/2), psi = exp(-u/2); u -> log r"),
    "kl": LikelihoodRatioLoss("kl", "log", np.exp, lambda u: -np.asarray(u, dtype=float),
                              "phi = exp(u), psi = -u; u -> log r"),
    "cross_entropy": LikelihoodRatioLoss("cross_entropy", "log", _softplus, lambda u: _softplus(-np.asarray(u)),
                                         "phi = log(1 + e^u), psi = log(1 + e^-u); u -> log r"),
    "square": LikelihoodRatioLoss("square", "ratio", lambda u: np.asarray(u, dtype=float) ** 2 / 2.0,
                                  lambda u: -np.asarray(u, dtype=float), "phi = u^2/2, psi = -u; u -> r"),
}


def get_loss(name: str) -> LikelihoodRatioLoss:
    """The loss called ``name``; a ValueError lists the others."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown likelihood-ratio loss {name!r}; choose one of {', '.join(LOSSES)}") from None


def class_balanced_weights(y, weights=None) -> np.ndarray:
    """Per-event weights scaled so that each class sums to n / 2 (n events in all).

    The batch mean of w (1 - y) phi + w y psi is then (E_0[phi] + E_1[psi]) / 2: the sample
    expectations of J, whatever the class sizes. ``weights`` (per event, >= 0) default to 1.
    """
    y = np.asarray(y).reshape(-1)
    w = np.ones(y.shape, dtype=float) if weights is None else np.asarray(weights, dtype=float).reshape(-1)
    if w.shape != y.shape:
        raise ValueError(f"{w.size} weights for {y.size} events")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("event weights must be finite and >= 0")
    out = np.empty_like(w)
    for c in (0, 1):
        sel = y == c
        total = w[sel].sum()
        if not total > 0:
            raise ValueError(f"class {c} has no events (or only zero weights): a likelihood-ratio loss needs "
                             "both samples")
        out[sel] = w[sel] * (y.size / 2.0) / total
    return out
