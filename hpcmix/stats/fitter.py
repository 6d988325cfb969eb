"""Vectorised unbinned maximum-likelihood fit of one mixture fraction over many toys at once.

p(x|alpha) = alpha p_A(x) + (1 - alpha) p_H(x). Per event only w = p_A/p_H - 1 matters:
ln L(alpha) = sum ln p_H + sum ln(1 + alpha w), which is concave in alpha, so a Newton
iteration kept inside a shrinking bracket (bisection when a step leaves it) converges
for every toy. All toys of a call iterate together on (n_toys, n_max) arrays; padding
(events beyond a toy's N) is masked out by setting w = 0, which adds nothing to ln L.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields

import numpy as np

__all__ = ["MixtureFit", "ZeroDensityWarning", "fit_mixture", "mixture_log_likelihood"]


class ZeroDensityWarning(UserWarning):
    """A template density was zero (or below the floor) at a test event; it was floored."""


@dataclass(frozen=True)
class MixtureFit:
    """Per-toy results of ``fit_mixture`` (all arrays of shape (n_toys,)).

    alpha_hat: ML estimate (on a limit when the likelihood peaks beyond it).
    sigma_hat: 1 / sqrt(-d2 lnL / dalpha2) at alpha_hat.
    interval_lo, interval_hi: where -2 ln L rises by 1 from its minimum, clipped at the limits.
    lr_stat: -2 ln(L(alpha_true) / L(alpha_hat)) (NaN without alpha_true; inf if alpha_true is impossible).
    converged: the iteration met its tolerance (False for flat or unbounded likelihoods).
    at_limit: alpha_hat sits on an alpha_limits bound. interval_clipped: an interval end does.
    """

    alpha_hat: np.ndarray
    sigma_hat: np.ndarray
    interval_lo: np.ndarray
    interval_hi: np.ndarray
    lr_stat: np.ndarray
    converged: np.ndarray
    at_limit: np.ndarray
    interval_clipped: np.ndarray
    n_events: np.ndarray
    n_iter: np.ndarray

    def __len__(self) -> int:
        return self.alpha_hat.shape[0]

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --------------------------------------------------------------------------- input handling


def _prepare(p_a, p_h, mask, density_floor, *, stacklevel=3):
    """Validate inputs and return (w, p_h floored, mask, n_events) as 2-D float arrays."""
    p_a = np.asarray(p_a, dtype=float)
    p_h = np.asarray(p_h, dtype=float)
    if p_a.shape != p_h.shape:
        raise ValueError(f"p_a and p_h must have the same shape (n_toys, n_max), got {p_a.shape} and {p_h.shape}")
    if p_a.ndim == 1:
        p_a, p_h = p_a[None, :], p_h[None, :]
        if mask is not None:
            mask = np.asarray(mask)[None, :]
    if p_a.ndim != 2:
        raise ValueError(f"p_a and p_h must be 1-D (one toy) or 2-D (n_toys, n_max), got ndim={p_a.ndim}")
    if p_a.shape[0] == 0:
        raise ValueError("no toys given: p_a has shape (0, ...)")
    if mask is None:
        mask = np.ones(p_a.shape, dtype=bool)
    else:
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise ValueError(f"mask must be boolean (True = real event), got dtype {mask.dtype}")
        if mask.shape != p_a.shape:
            raise ValueError(f"mask must have the shape of p_a {p_a.shape}, got {mask.shape}")
    n_events = mask.sum(axis=1)
    if np.any(n_events == 0):
        bad = np.flatnonzero(n_events == 0)
        raise ValueError(
            f"{bad.size} toy(s) have no events (e.g. toy {bad[0]}); every toy needs N >= 1 unmasked event"
        )
    # padded entries become p_a = p_h = 1: w = 0 there, so they add nothing to ln L
    p_a = np.where(mask, p_a, 1.0)
    p_h = np.where(mask, p_h, 1.0)
    if not (np.all(np.isfinite(p_a)) and np.all(np.isfinite(p_h))):
        raise ValueError("p_a / p_h contain NaN or inf at unmasked events; densities must be finite")
    if np.any(p_a < 0) or np.any(p_h < 0):
        raise ValueError("p_a / p_h contain negative densities; template densities must be >= 0")
    scale = max(float(p_a.max()), float(p_h.max()))
    floor = density_floor * scale
    low = (p_a < floor) | (p_h < floor)
    if np.any(low):
        warnings.warn(
            f"{int(low.sum())} event density value(s) below {floor:.3g} (zero template density where a "
            "test event falls); floored to keep the likelihood finite - check the template support",
            ZeroDensityWarning,
            stacklevel=stacklevel,
        )
        p_a = np.maximum(p_a, floor)
        p_h = np.maximum(p_h, floor)
    w = p_a / p_h - 1.0
    return w, p_h, mask, n_events


def _broadcast_rows(value, n: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    try:
        return np.broadcast_to(arr, (n,)).copy()
    except ValueError:
        raise ValueError(f"{name} must be a scalar or have one value per toy ({n}), got shape {arr.shape}") from None


# --------------------------------------------------------------------------- kernels
# Row sums go through a matrix-vector product with ones (BLAS), several times faster than
# ndarray.sum(axis=1) for short rows; per-event work reuses preallocated buffers.


class _Rows:
    """w of one block of toys plus scratch buffers; evaluates lnL and its derivatives per row."""

    def __init__(self, w):
        self.w = w
        self.ones = np.ones(w.shape[1])
        self.buf = np.empty_like(w)
        self.buf2 = np.empty_like(w)

    def take(self, keep):
        return _Rows(self.w[keep])

    def _u(self, alpha):
        t = np.multiply(self.w, alpha[:, None], out=self.buf)
        t += 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.divide(self.w, t, out=self.buf)  # u = w / (1 + alpha w)

    def score(self, alpha):
        """(d lnL/d alpha, -d2 lnL/d alpha2) per row."""
        u = self._u(alpha)
        return u @ self.ones, np.einsum("ij,ij->i", u, u)

    def moments(self, alpha):
        """(P1, P2, P3, P4, max|u|) with P_k = sum u^k: the Taylor coefficients of lnL at alpha."""
        u = self._u(alpha)
        u2 = np.multiply(u, u, out=self.buf2)
        p1, p2, p3, p4 = u @ self.ones, u2 @ self.ones, np.einsum("ij,ij->i", u2, u), np.einsum("ij,ij->i", u2, u2)
        return p1, p2, p3, p4, np.sqrt(np.max(u2, axis=1))

    def loglike(self, alpha):
        """sum_i ln(1 + alpha w_i) per row; -inf where an event density is <= 0."""
        t = np.multiply(self.w, alpha[:, None], out=self.buf)
        t += 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.log(t, out=self.buf) @ self.ones
        return np.where(np.isnan(out), -np.inf, out)

    def level(self, alpha, ref):
        """(lnL - ref, d lnL/d alpha) per row, for the interval crossings."""
        t = np.multiply(self.w, alpha[:, None], out=self.buf)
        t += 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.divide(self.w, t, out=self.buf2)
            out = np.log(t, out=self.buf) @ self.ones
        return np.where(np.isnan(out), -np.inf, out) - ref, u @ self.ones


def _newton_bracket(fun, rows, a, b, x0, positive_at_a, tol, max_iter):
    """Solve f(x) = 0 per row by Newton steps kept inside the bracket (a, b), bisecting otherwise.

    ``fun(rows, x, idx)`` returns (f, f') for the rows ``idx`` (positions in the block);
    f > 0 at a if ``positive_at_a`` else f < 0 at a, with the opposite sign at b.
    Only unconverged rows keep iterating (the working set shrinks).
    """
    x, a, b = x0.copy(), a.copy(), b.copy()
    n_iter = np.zeros(x.size, dtype=np.int64)
    done = np.zeros(x.size, dtype=bool)
    idx = np.arange(x.size)
    for it in range(1, max_iter + 1):
        xr = x[idx]
        f, fp = fun(rows, xr, idx)
        same = (f > 0) if positive_at_a else (f < 0)
        ar = np.where(same, xr, a[idx])
        br = np.where(same, b[idx], xr)
        with np.errstate(divide="ignore", invalid="ignore"):
            new = xr - f / fp
        inside = (new > np.minimum(ar, br)) & (new < np.maximum(ar, br))
        new = np.where(inside, new, 0.5 * (ar + br))
        conv = (np.abs(new - xr) <= tol * (1.0 + np.abs(xr))) | (np.abs(br - ar) <= tol) | (f == 0)
        new = np.where(f == 0, xr, new)
        x[idx], a[idx], b[idx] = new, ar, br
        n_iter[idx] = it
        done[idx[conv]] = True
        if conv.all():
            break
        if conv.any():
            keep = ~conv
            idx, rows = idx[keep], rows.take(keep)
    return x, done, n_iter


def _series_crossing(p2, p3, p4, sigma, side):
    """Start for the Delta(-2 lnL) = 1 crossing from lnL(a+d) - lnL(a) ~ -P2 d^2/2 + P3 d^3/3 - P4 d^4/4.

    A few scalar Newton steps per toy on this quartic (cheap: no per-event work); the exact
    iteration then only polishes. Falls back to the parabola where the quartic misbehaves.
    """
    d = side * sigma
    for _ in range(4):
        f = -p2 * d * d / 2 + p3 * d**3 / 3 - p4 * d**4 / 4 + 0.5
        fp = -p2 * d + p3 * d * d - p4 * d**3
        with np.errstate(divide="ignore", invalid="ignore"):
            d = d - f / fp
    ok = np.isfinite(d) & (d * side > 0) & (np.abs(d) < 3 * sigma)
    return np.where(ok, d, side * sigma)


def _fit_block(w, lim_lo, lim_hi, alpha_true, tol, max_iter):
    n = w.shape[0]
    rows = _Rows(w)
    with np.errstate(divide="ignore"):
        inv = -1.0 / w  # event density hits zero at alpha = -1/w
    # per-event domain: alpha > -1/w for w > 0, alpha < -1/w for w < 0
    dom_lo = np.where(w > 0, inv, -np.inf).max(axis=1)
    dom_hi = np.where(w < 0, inv, np.inf).min(axis=1)
    lo = np.maximum(lim_lo, dom_lo)
    hi = np.minimum(lim_hi, dom_hi)
    lo_is_limit = lim_lo > dom_lo  # bound from alpha_limits: lnL finite there
    hi_is_limit = lim_hi < dom_hi
    flat = ~np.any(w != 0, axis=1)
    valid = (lo < hi) & ~flat

    alpha_hat = np.full(n, np.nan)
    converged = np.zeros(n, dtype=bool)
    at_limit = np.zeros(n, dtype=bool)
    n_iter = np.zeros(n, dtype=np.int64)

    # the likelihood peaks on a bound when the score points out of the allowed range there
    fin_lo, fin_hi = np.isfinite(lo), np.isfinite(hi)
    s_lo = np.full(n, np.inf)
    s_hi = np.full(n, -np.inf)
    if np.any(lo_is_limit & fin_lo):
        s_lo = np.where(lo_is_limit & fin_lo, rows.score(np.where(fin_lo, lo, 0.0))[0], np.inf)
    if np.any(hi_is_limit & fin_hi):
        s_hi = np.where(hi_is_limit & fin_hi, rows.score(np.where(fin_hi, hi, 0.0))[0], -np.inf)
    # an infinite bound means no event limits alpha on that side: all w share one sign and
    # lnL rises without end towards it (unbounded; alpha_hat = -inf / +inf, not converged)
    unbounded_lo = valid & ~fin_lo
    unbounded_hi = valid & ~fin_hi
    on_lo = valid & fin_lo & (s_lo <= 0)
    on_hi = valid & fin_hi & ~on_lo & (s_hi >= 0)
    alpha_hat[on_lo], alpha_hat[on_hi] = lo[on_lo], hi[on_hi]
    edge = on_lo | on_hi
    converged[edge] = np.isfinite(alpha_hat[edge])
    at_limit[edge] = converged[edge]

    inner = valid & ~edge & ~unbounded_lo & ~unbounded_hi
    if inner.any():
        r = np.flatnonzero(inner)
        sub = rows if r.size == n else rows.take(r)
        a, b = lo[r], hi[r]
        x0 = np.where((a < 0.5) & (0.5 < b), 0.5, 0.5 * (a + b))

        def score_fun(rr, x, idx):
            s, h = rr.score(x)
            return s, -h

        x, done, it = _newton_bracket(score_fun, sub, a, b, x0, True, tol, max_iter)
        alpha_hat[r], converged[r], n_iter[r] = x, done, it

    finite = np.isfinite(alpha_hat)
    ah = np.where(finite, alpha_hat, 0.0)
    _, p2, p3, p4, _ = rows.moments(ah)
    with np.errstate(divide="ignore"):
        sigma_hat = np.where(finite, 1.0 / np.sqrt(p2), np.nan)
    l_hat = rows.loglike(ah)

    # Delta(-2 lnL) = 1 crossings: lnL(alpha) = lnL_hat - 1/2 on each side, clipped at the limits
    interval = []
    clipped = np.zeros(n, dtype=bool)
    for side, bound, is_limit in ((-1, lo, lo_is_limit), (+1, hi, hi_is_limit)):
        end = np.full(n, np.nan)
        fb = is_limit & np.isfinite(bound) & finite
        g_bound = np.full(n, -np.inf)
        if fb.any():
            g_bound = np.where(fb, rows.loglike(np.where(fb, bound, 0.0)) - l_hat + 0.5, -np.inf)
        clip = finite & (g_bound >= 0)
        end[clip] = bound[clip]
        clipped |= clip
        todo = finite & ~clip
        if todo.any():
            r = np.flatnonzero(todo)
            sub = rows if r.size == n else rows.take(r)
            a, b = bound[r], alpha_hat[r]  # lnL - ref < 0 at a, = 1/2 at b
            x0 = alpha_hat[r] + _series_crossing(p2[r], p3[r], p4[r], sigma_hat[r], side)
            x0 = np.where((x0 - a) * (x0 - b) < 0, x0, 0.5 * (a + b))
            ref = l_hat[r] - 0.5
            x, _, _ = _newton_bracket(lambda rr, xx, idx, ref=ref: rr.level(xx, ref[idx]), sub, a, b, x0,
                                      False, tol, max_iter)
            end[r] = x
        interval.append(end)

    lr = np.full(n, np.nan)
    if alpha_true is not None:
        lr = np.where(finite, 2.0 * (l_hat - rows.loglike(alpha_true)), np.nan)
        lr = np.where(finite, np.maximum(lr, 0.0), np.nan)  # rounding can give -1e-15 at alpha_hat
    # unbounded likelihoods: the supremum is at -inf / +inf
    alpha_hat[unbounded_lo] = -np.inf
    alpha_hat[unbounded_hi] = np.inf
    return dict(
        alpha_hat=alpha_hat, sigma_hat=sigma_hat, interval_lo=interval[0], interval_hi=interval[1],
        lr_stat=lr, converged=converged, at_limit=at_limit, interval_clipped=clipped, n_iter=n_iter,
    )


# --------------------------------------------------------------------------- public API


def fit_mixture(
    p_a,
    p_h,
    *,
    mask=None,
    alpha_true=None,
    alpha_limits=(-np.inf, np.inf),
    density_floor: float = 1e-12,
    tol: float = 1e-9,
    max_iter: int = 200,
    block_size: int = 1 << 16,
) -> MixtureFit:
    """Fit alpha in p = alpha p_A + (1 - alpha) p_H for every toy (row) at once.

    p_a, p_h: per-event template densities, shape (n_toys, n_max) (1-D: one toy), computed
    once per test event and gathered per toy. mask: True for real events (pads are False),
    so toys of different N batch together. alpha_true: scalar or per-toy truth for lr_stat.
    alpha_limits: (alpha_min, alpha_max), scalars or per toy; pass the templates'
    ``positivity_limits()`` for the paper's rule. Densities below ``density_floor`` times
    the largest one are floored (one ``ZeroDensityWarning``). Rows are processed in blocks
    of about ``block_size`` events to stay in cache.
    """
    w, _, mask, n_events = _prepare(p_a, p_h, mask, density_floor)
    n_toys, n_max = w.shape
    lim_lo = _broadcast_rows(alpha_limits[0], n_toys, "alpha_limits[0]")
    lim_hi = _broadcast_rows(alpha_limits[1], n_toys, "alpha_limits[1]")
    if np.any(np.isnan(lim_lo)) or np.any(np.isnan(lim_hi)) or np.any(lim_lo >= lim_hi):
        raise ValueError(f"alpha_limits must satisfy alpha_min < alpha_max, got {alpha_limits!r}")
    if alpha_true is not None:
        alpha_true = _broadcast_rows(alpha_true, n_toys, "alpha_true")
        if not np.all(np.isfinite(alpha_true)):
            raise ValueError("alpha_true must be finite")
    if not (tol > 0 and max_iter >= 1):
        raise ValueError("tol must be > 0 and max_iter >= 1")

    step = max(1, int(block_size) // max(n_max, 1))
    parts = []
    for s in range(0, n_toys, step):
        sl = slice(s, s + step)
        parts.append(_fit_block(w[sl], lim_lo[sl], lim_hi[sl],
                                None if alpha_true is None else alpha_true[sl], tol, max_iter))
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return MixtureFit(n_events=n_events, **out)


def mixture_log_likelihood(p_a, p_h, alpha, *, mask=None, density_floor: float = 1e-12) -> np.ndarray:
    """ln L(alpha) = sum_i ln(alpha p_A + (1 - alpha) p_H) per toy on a grid of alpha: shape (n_toys, n_alpha).

    -inf where some event density is negative. Use with ``MixtureFit`` for -2 Delta lnL curves.
    """
    w, p_h, mask, _ = _prepare(p_a, p_h, mask, density_floor)
    alpha = np.atleast_1d(np.asarray(alpha, dtype=float))
    base = np.where(mask, np.log(p_h), 0.0).sum(axis=1)
    out = np.empty((w.shape[0], alpha.size))
    rows = _Rows(w)
    for j, al in enumerate(alpha):  # loop over grid points, not toys
        out[:, j] = base + rows.loglike(np.full(w.shape[0], al))
    return out
