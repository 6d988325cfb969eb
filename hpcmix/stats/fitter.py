"""Vectorised unbinned maximum-likelihood fit of one mixture fraction over many toys at once.

p(x|alpha) = alpha p_A(x) + (1 - alpha) p_H(x). Per event only w = p_A/p_H - 1 matters:
ln L(alpha) = sum ln p_H + sum ln(1 + alpha w), which is concave in alpha, so a Newton
iteration kept inside a shrinking bracket (bisection when a step leaves it) converges
for every toy. All toys of a call iterate together on (n_toys, n_max) arrays; padding
(events beyond a toy's N) is masked out by setting w = 0, which adds nothing to ln L.

Most toys never need that iteration: a fast path (see "fast path" below) gets alpha_hat,
sigma_hat, the interval and the LR statistic from three passes over the events, using power
series of ln L with certified error bounds; the toys whose bounds fail (N = 1, peaks on a
limit, very skewed likelihoods) are redone by the bracketed iteration.
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
    n_iter: 2 for toys certified by the fast path (two expansion points), plus the exact
    iterations where its crossings needed polishing; otherwise the robust path's Newton
    iterations for alpha_hat.
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


def _validate_shapes(p_a, p_h, mask):
    """Check shapes and the mask; return (p_a, p_h, n_events) as 2-D float arrays, pads set to 1."""
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
        n_events = np.full(p_a.shape[0], p_a.shape[1], dtype=np.int64)
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
    if mask is not None and n_events.min() < p_a.shape[1]:
        # padded entries become p_a = p_h = 1: w = 0 there, so they add nothing to ln L
        p_a = np.where(mask, p_a, 1.0)
        p_h = np.where(mask, p_h, 1.0)
    return p_a, p_h, n_events


def _floor(ext, density_floor) -> float:
    """The smallest density kept: relative to the largest one, and never zero.

    When every density is zero (a template that vanishes on the whole test pool) the
    smallest normal float is the floor, so each ratio is 1 and ln L is flat, not NaN.
    """
    return max(density_floor * max(ext[1], ext[3]), np.finfo(float).tiny)


def _values_clean(ext, density_floor) -> bool:
    """ext = (min p_a, max p_a, min p_h, max p_h): finite, non-negative and above the floor."""
    return bool(np.all(np.isfinite(ext)) and min(ext[0], ext[2]) >= _floor(ext, density_floor))


def _check_values(p_a, p_h, density_floor, *, stacklevel=2):
    """Raise on NaN / inf / negative densities; floor tiny ones (one ZeroDensityWarning)."""
    ext = np.array([p_a.min(), p_a.max(), p_h.min(), p_h.max()])  # NaN and inf propagate
    if not np.all(np.isfinite(ext)):
        raise ValueError("p_a / p_h contain NaN or inf at unmasked events; densities must be finite")
    if ext[0] < 0 or ext[2] < 0:
        raise ValueError("p_a / p_h contain negative densities; template densities must be >= 0")
    floor = _floor(ext, density_floor)
    if ext[0] < floor or ext[2] < floor:
        low = (p_a < floor) | (p_h < floor)
        warnings.warn(
            f"{int(low.sum())} event density value(s) below {floor:.3g} (zero template density where a "
            "test event falls); floored to keep the likelihood finite - check the template support",
            ZeroDensityWarning,
            stacklevel=stacklevel + 1,
        )
        p_a = np.maximum(p_a, floor)
        p_h = np.maximum(p_h, floor)
    return p_a, p_h


def _prepare(p_a, p_h, mask, density_floor, *, stacklevel=2):
    """Validate inputs and return (w, p_h floored, n_events) as 2-D float arrays."""
    p_a, p_h, n_events = _validate_shapes(p_a, p_h, mask)
    p_a, p_h = _check_values(p_a, p_h, density_floor, stacklevel=stacklevel + 1)
    w = p_a / p_h
    w -= 1.0
    return w, p_h, n_events


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


# --------------------------------------------------------------------------- fast path
# The robust iteration above spends ~5 exact passes over the events on alpha_hat and ~3, with
# logarithms, on each interval end. The fast path makes three passes, and certifies every
# result with an error bound; toys whose bound fails (N = 1, a peak on or near a limit, very
# skewed likelihoods, ...) are redone by the robust path, so every result agrees with it to
# ``tol`` whichever path a toy takes.
#
# Events are stored transposed, (n_max, toys), so per-toy scalars broadcast along the
# contiguous axis and per-toy sums are column reductions. With u_i = w_i / (1 + a w_i) at an
# expansion point a and the power sums S_k = sum_i u_i^k,
#     D(d)  = lnL(a + d) - lnL(a) = sum_i ln(1 + d u_i) = sum_k (-1)^(k+1) S_k d^k / k,
#     D'(d) = lnL'(a + d)         = sum_i u_i / (1 + d u_i) = sum_k (-d)^k S_(k+1),
# convergent for |d| max|u| < 1; after K terms the remainder of D' is at most
# |d|^K max|u| S_K / (1 - |d| max|u|) (K even, so S_K = sum |u|^K).
#   pass 1 (forms w, checks the densities): S_1, S_2 at a0 = 0.5; a Newton step gives a1.
#   pass 2: S_1..S_8 at a1, u kept: alpha_hat = a1 + delta with D'(delta) = 0 on the series,
#           certified by the remainder bound; sigma_hat; series starts for both crossings.
#   pass 3: exact prod_i (1 + d u_i) = L(a1 + d) / L(a1) at both crossing starts and at
#           alpha_true (a product per toy instead of N logarithms); one Newton correction
#           with the series slope finishes each crossing, again with a certified error bound.

_CHUNK_EVENTS = 1 << 20  # events per chunk of toys whose per-toy algebra runs together
_K = 8  # power sums in pass 2 (even)
_SIGMA_RTOL = 1e-6  # certified relative accuracy of the curvature behind sigma_hat
_PROD_SAFE = 600.0  # bound on sum |ln z| that keeps the running product far from over/underflow


def _horner(coef, d, deriv=False):
    """p(d) (and p'(d)) for p(d) = sum_k coef[k] d^k; coef (K, n), d (..., n)."""
    p = coef[-1] * np.ones_like(d)
    dp = np.zeros_like(p) if deriv else None
    for c in coef[-2::-1]:
        if deriv:
            dp *= d
            dp += p
        p *= d
        p += c
    return (p, dp) if deriv else p


def _poly_solve(coef, target, d, n_it):
    """Newton for sum_k coef[k] d^k = target, from d."""
    for _ in range(n_it):
        p, dp = _horner(coef, d, deriv=True)
        p -= target
        p /= dp
        d = d - p
    return d


def _u_range(wmax, wmin, a):
    """max |w / (1 + a w)| over a toy's events (u increases with w)."""
    return np.maximum(np.abs(wmax / (1.0 + a * wmax)), np.abs(wmin / (1.0 + a * wmin)))


def _fast_chunk(p_a, p_h, buf, n_ev, lim_lo, lim_hi, alpha_true, tol, block, ext):
    """Fast path for the toys (rows) of p_a, p_h: (results dict, ok mask), or None.

    buf (n_max, n) holds w, then u at a1 (transposed). ext (min p_a, max p_a, min p_h, max p_h),
    with bounds for p_a from p_h and w, is updated in place; None is returned (nothing fitted)
    when the densities are not finite and positive, for the caller's checks. Toys with ok
    False must be redone.
    """
    n_max, n = buf.shape
    tu = np.empty((n_max, min(n, block)))
    t2 = np.empty_like(tu)
    tr = np.empty((min(n, block), n_max))
    s = np.empty((_K, n))
    wmax, wmin = np.empty(n), np.empty(n)
    blocks = [(slice(j, min(j + block, n)), min(block, n - j)) for j in range(0, n, block)]

    # pass 1: w (transposed), the density checks, S_1 and S_2 at a0 = 0.5 (toys where 0.5 is
    # outside the domain get junk here and go to the robust path)
    for c, m in blocks:
        ph, r = p_h[c], tr[:m]
        ext[2], ext[3] = min(ext[2], ph.min()), max(ext[3], ph.max())
        np.divide(p_a[c], ph, out=r)
        w, q = buf[:, c], tu[:, :m]
        np.subtract(r.T, 1.0, out=w)
        np.maximum.reduce(w, axis=0, out=wmax[c])
        np.minimum.reduce(w, axis=0, out=wmin[c])
        np.add(w, 2.0, out=q)
        np.divide(w, q, out=q)  # q = w / (2 + w) = u(0.5) / 2
        np.add.reduce(q, axis=0, out=s[0, c])
        np.einsum("ij,ij->j", q, q, out=s[1, c])
    # p_a = p_h (1 + w): the extremes of p_h and w bound those of p_a
    ext[0] = min(ext[0], ext[2] * (1.0 + wmin.min()))
    ext[1] = max(ext[1], ext[3] * (1.0 + max(wmax.max(), 0.0)))
    if not (np.all(np.isfinite(ext)) and ext[0] > 0 and ext[2] > 0):
        return None
    dom_lo = np.where(wmax > 0, -1.0 / np.where(wmax > 0, wmax, 1.0), -np.inf)
    dom_hi = np.where(wmin < 0, -1.0 / np.where(wmin < 0, wmin, -1.0), np.inf)
    lo, hi = np.maximum(lim_lo, dom_lo), np.minimum(lim_hi, dom_hi)
    a0 = 0.5
    a1 = a0 + 0.5 * s[0] / s[1]  # Newton step: S_1(a0) / S_2(a0) with u = 2 q
    ok = (lo < a0) & (a0 < hi) & (wmax > wmin) & (lo < a1) & (a1 < hi)
    a1 = np.where(ok, a1, 0.0)  # 0 is inside every domain

    # pass 2: S_1..S_8 at a1; u = w / (1 + a1 w) replaces w in buf
    for c, m in blocks:
        w, t, u2 = buf[:, c], tu[:, :m], t2[:, :m]
        np.multiply(w, a1[c], out=t)
        t += 1.0
        u = np.divide(w, t, out=w)
        np.add.reduce(u, axis=0, out=s[0, c])
        np.multiply(u, u, out=u2)
        np.add.reduce(u2, axis=0, out=s[1, c])
        np.einsum("ij,ij->j", u2, u, out=s[2, c])
        u4 = np.multiply(u2, u2, out=t)
        np.add.reduce(u4, axis=0, out=s[3, c])
        np.einsum("ij,ij->j", u4, u, out=s[4, c])
        np.einsum("ij,ij->j", u4, u2, out=s[5, c])
        u3 = np.multiply(u2, u, out=u2)
        np.einsum("ij,ij->j", u4, u3, out=s[6, c])
        np.einsum("ij,ij->j", u4, u4, out=s[7, c])
    m1 = _u_range(wmax, wmin, a1)
    g = s.copy()
    g[1::2] *= -1.0  # D'(d) = sum_k g[k] d^k + R
    h = np.vstack([np.zeros((1, n)), g / np.arange(1, _K + 1)[:, None]])  # D(d) = sum_k h[k] d^k + ...
    # alpha_hat = a1 + delta with D'(delta) = 0: Newton from S1/S2 (|delta| is ~1e-3 here)
    delta = s[0] / s[1]
    for _ in range(2):
        p, dp = _horner(g, delta, deriv=True)
        delta -= p / dp
    p, dp = _horner(g, delta, deriv=True)
    md = np.abs(delta) * m1
    rem = np.abs(delta) ** _K * m1 * s[_K - 1] / (1.0 - md)
    err = 2.0 * (rem + np.abs(p)) * (1.0 + md) ** 2 / s[1]
    alpha_hat = a1 + delta
    ok &= (md < 0.5) & (err <= tol * (1.0 + np.abs(alpha_hat)))
    ok &= (lim_lo + err < alpha_hat) & (alpha_hat < lim_hi - err)
    curv = -dp  # -lnL''(alpha_hat) = sum u^2 / (1 + delta u)^2, to 1e-6 relative (sigma_hat: 5e-7)
    sigma_hat = 1.0 / np.sqrt(np.where(curv > 0, curv, np.nan))
    curv_rem = _K * np.abs(delta) ** (_K - 1) * m1 * s[_K - 1] / (1.0 - md) ** 2
    ok &= np.isfinite(sigma_hat) & (curv_rem <= _SIGMA_RTOL * curv)
    c0 = _horner(h, delta)  # lnL(alpha_hat) - lnL(a1)

    # crossing starts: D(d) = c0 - 1/2 on each side, on the series, from the cubic estimate
    # x = x0 (1 + S3 x0^3 / 3), x0 = -+sigma_hat, around alpha_hat
    x0 = np.vstack([-sigma_hat, sigma_hat])
    d2 = np.where(ok, delta + x0 * (1.0 + s[2] * x0**3 / 3.0), 0.0)
    d2 = _poly_solve(h, c0 - 0.5, d2, 2)
    mdx = np.abs(d2) * m1
    spread = np.sqrt(n_ev * s[1])  # >= sum |u|
    ok &= ((mdx < 0.75) & (np.abs(d2) * spread / (1.0 - mdx) < _PROD_SAFE)).all(axis=0)
    dd = np.where(ok, d2, 0.0)
    if alpha_true is not None:
        dt = alpha_true - a1
        mdt = np.abs(dt) * m1
        impossible = (alpha_true <= dom_lo) | (alpha_true >= dom_hi)
        lr_prod = ~impossible & (mdt < 0.9) & (np.abs(dt) * spread / (1.0 - mdt) < _PROD_SAFE)
        dd = np.vstack([dd, np.where(lr_prod, dt, 0.0)[None]])

    # pass 3: exact L(a1 + d) / L(a1) as products
    prods = np.empty(dd.shape)
    for c, m in blocks:
        u, z = buf[:, c], tu[:, :m]
        for i in range(dd.shape[0]):
            np.multiply(u, dd[i, c], out=z)
            z += 1.0
            np.multiply.reduce(z, axis=0, out=prods[i, c])
    logp = np.log(prods)
    slope = _horner(g, dd[:2])
    step = (c0 - 0.5 - logp[:2]) / slope
    mdi = (np.abs(dd[:2]) + np.abs(step)) * m1
    eps = np.abs(dd[:2]) ** _K * m1 * s[_K - 1] / (1.0 - mdi) / np.abs(slope)
    k2 = s[1] / (1.0 - mdi) ** 2 / (2.0 * np.abs(slope))
    e = 2.0 * (eps + k2 * np.abs(step)) * np.abs(step)
    ends = a1 + dd[:2] + step
    good = np.isfinite(ends) & (mdi < 0.9) & (e <= tol * (1.0 + np.abs(ends)))
    good &= (np.vstack([lim_lo, alpha_hat]) < ends) & (ends < np.vstack([alpha_hat, lim_hi]))
    n_iter = np.full(n, 2, dtype=np.int64)
    fix = ok & ~good.all(axis=0)
    if fix.any():  # alpha_hat certified but a crossing is not: exact iteration on these toys only
        idx = np.flatnonzero(fix)
        ok[idx], ends[:, idx], it = _polish_crossings(p_a[idx] / p_h[idx] - 1.0, alpha_hat[idx], lo[idx],
                                                      hi[idx], lim_lo[idx], lim_hi[idx], ends[:, idx], tol)
        n_iter[idx] += it
    lr = np.full(n, np.nan)
    if alpha_true is not None:
        lr = np.where(lr_prod, np.maximum(2.0 * (c0 - logp[2]), 0.0), np.where(impossible, np.inf, np.nan))
        slow = np.flatnonzero(ok & ~lr_prod & ~impossible)
        if slow.size:  # alpha_true far out: logarithms, on these toys only
            rows = _Rows(p_a[slow] / p_h[slow] - 1.0)
            lr[slow] = np.maximum(2.0 * (rows.loglike(alpha_hat[slow]) - rows.loglike(alpha_true[slow])), 0.0)
    res = {
        "alpha_hat": alpha_hat, "sigma_hat": sigma_hat, "interval_lo": ends[0], "interval_hi": ends[1],
        "lr_stat": lr, "converged": np.ones(n, dtype=bool), "at_limit": np.zeros(n, dtype=bool),
        "interval_clipped": np.zeros(n, dtype=bool), "n_iter": n_iter,
    }
    return res, ok


def _polish_crossings(w, alpha_hat, lo, hi, lim_lo, lim_hi, ends, tol):
    """Exact bracketed Newton for both Delta(-2 lnL) = 1 crossings of a few toys, from ``ends``.

    Returns (ok, ends, iterations); toys whose crossing is clipped at a limit are not ok (the
    robust path handles them).
    """
    rows = _Rows(w)
    ref = rows.loglike(alpha_hat) - 0.5
    ok = np.ones(alpha_hat.size, dtype=bool)
    iters = np.zeros(alpha_hat.size, dtype=np.int64)
    for side, bound, lim in ((0, lo, lim_lo), (1, hi, lim_hi)):
        if np.isfinite(lim).any():  # a limit inside the domain: the crossing may be beyond it
            at = np.where(np.isfinite(bound), bound, alpha_hat)
            ok &= ~((bound == lim) & (rows.loglike(at) - ref >= 0))
        x0 = ends[side]
        x0 = np.where((x0 - bound) * (x0 - alpha_hat) < 0, x0, 0.5 * (bound + alpha_hat))
        x0 = np.where(np.isfinite(x0), x0, alpha_hat - 1.0 if side == 0 else alpha_hat + 1.0)
        x, done, it = _newton_bracket(lambda rr, xx, i: rr.level(xx, ref[i]), rows, bound, alpha_hat, x0,
                                      False, tol, 200)
        ends[side] = x
        ok &= done & np.isfinite(x)
        iters += it
    return ok, ends, iters


def _fit_all(p_a, p_h, n_events, lim_lo, lim_hi, alpha_true, tol, max_iter, block_size, density_floor,
             checked=False):
    """Fast path chunk by chunk, robust path for the toys it leaves.

    Returns None (unless ``checked``: the densities already went through _check_values) when
    the densities need the full checks: not finite, negative, or below the floor.
    """
    n_toys, n_max = p_a.shape
    block = max(1, int(block_size) // n_max)  # toys per cache block
    chunk = max(block, _CHUNK_EVENTS // n_max)  # toys whose per-toy algebra is vectorised together
    buf = np.empty((n_max, min(chunk, n_toys)))
    ext = [np.inf, -np.inf, np.inf, -np.inf]
    out = {}
    for s in range(0, n_toys, chunk):
        sl = slice(s, min(s + chunk, n_toys))
        n = sl.stop - sl.start
        at = None if alpha_true is None else alpha_true[sl]
        with np.errstate(all="ignore"):  # non-finite intermediates only send toys to the robust path
            got = _fast_chunk(p_a[sl], p_h[sl], buf[:, :n], n_events[sl], lim_lo[sl], lim_hi[sl], at, tol,
                              block, ext)
        if not checked and (got is None or not _values_clean(ext, density_floor)):
            return None
        res, ok = got if got is not None else (None, np.zeros(n, dtype=bool))
        bad = np.flatnonzero(~ok)
        if res is None:
            res = {}
        for r in range(0, bad.size, block):
            rb = bad[r : r + block]
            w = p_a[sl][rb] / p_h[sl][rb]
            w -= 1.0
            rob = _fit_block(w, lim_lo[sl][rb], lim_hi[sl][rb], None if at is None else at[rb], tol, max_iter)
            for k, v in rob.items():
                res.setdefault(k, np.empty(n, dtype=v.dtype))[rb] = v
        for k, v in res.items():
            out.setdefault(k, []).append(v)
    return {k: np.concatenate(v) if len(v) > 1 else v[0] for k, v in out.items()}


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
    block_size: int = 1 << 15,
) -> MixtureFit:
    """Fit alpha in p = alpha p_A + (1 - alpha) p_H for every toy (row) at once.

    p_a, p_h: per-event template densities, shape (n_toys, n_max) (1-D: one toy), computed
    once per test event and gathered per toy. mask: True for real events (pads are False),
    so toys of different N batch together. alpha_true: scalar or per-toy truth for lr_stat.
    alpha_limits: (alpha_min, alpha_max), scalars or per toy; pass the templates'
    ``positivity_limits()`` for the paper's rule. Densities below ``density_floor`` times
    the largest one are floored (one ``ZeroDensityWarning``). Rows are processed in blocks
    of about ``block_size`` events to stay in cache. Every toy's results are good to ``tol``
    (alpha_hat, interval ends; sigma_hat to 1e-6 relative), whichever path computed it.
    """
    p_a, p_h, n_events = _validate_shapes(p_a, p_h, mask)
    n_toys = p_a.shape[0]
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
    args = (n_events, lim_lo, lim_hi, alpha_true, tol, max_iter, block_size, density_floor)
    # the density checks ride along the first pass; only when they fail (bad or zero
    # densities) are the full checks run (raising, or flooring with a warning) and the fit redone
    out = _fit_all(p_a, p_h, *args)
    if out is None:
        p_a, p_h = _check_values(p_a, p_h, density_floor)
        out = _fit_all(p_a, p_h, *args, checked=True)
    return MixtureFit(n_events=n_events, **out)


def mixture_log_likelihood(p_a, p_h, alpha, *, mask=None, density_floor: float = 1e-12) -> np.ndarray:
    """ln L(alpha) = sum_i ln(alpha p_A + (1 - alpha) p_H) per toy on a grid of alpha: shape (n_toys, n_alpha).

    -inf where some event density is negative. Use with ``MixtureFit`` for -2 Delta lnL curves.
    """
    w, p_h, _ = _prepare(p_a, p_h, mask, density_floor)
    alpha = np.atleast_1d(np.asarray(alpha, dtype=float))
    base = np.log(p_h).sum(axis=1)  # pads have p_h = 1
    out = np.empty((w.shape[0], alpha.size))
    rows = _Rows(w)
    for j, al in enumerate(alpha):  # loop over grid points, not toys
        out[:, j] = base + rows.loglike(np.full(w.shape[0], al))
    return out
