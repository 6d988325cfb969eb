"""Vectorised unbinned ML fit of K mixture fractions with a ratio of fractions as parameter of interest.

Model: p(x|f) = sum_k f_k p_k(x), sum_k f_k = 1. Per event only the K component densities
(or density ratios p_k / p_ref: a common per-event factor drops out) enter,
ln L(f) = sum_i ln(sum_k f_k p_ik), which is concave in f. The parameter of interest is
alpha = sum_{k in num} f_k / sum_{k in den} f_k; each component outside ``den`` is a nuisance,
fixed at its true fraction, floated, or constrained by a Gaussian penalty (ln L stays concave).

Coordinates (``_Spec``). theta: the free fractions except one reference component r_d of
den \\ num, so f is affine in theta and every fit in theta is a concave problem; fixing alpha
is the linear constraint A(theta) - alpha S(theta) = 0 (A = sum_num f, S = sum_den f).
(alpha, phi): phi = theta without the reference r_n of num, whose fraction becomes
alpha S - (the other num fractions); per event m = base + sum_p phi_p E_p + alpha S y, and at
fixed alpha ln L is concave in phi (the profile).

Positivity: support @ f >= 0 at every support node (reduced to the extreme rays of the cone
the node vectors span: the constraint is linear, so those are all that bind) and S >= 0
(alpha needs a non-negative den total). Without ``support`` only the toys' own events must keep
a positive density, and the fractions are otherwise unbounded. The positivity limits of alpha
come from two linear programs (Charnes-Cooper) per distinct set of fixed fractions; they are
infinite when S -> 0 lets alpha run off (a floated nuisance whose template is positive where
the den components' mixture is not).

Paths. One free parameter (K = 2, or all nuisances fixed and two den components): the 1-D
problem of ``fit_mixture``, called as is (K = 2 gives its numbers bit for bit). Otherwise, per
block of toys, all toys together:
* best fit: plain Newton steps in theta (``_free_newton``), the first two passes in float32; the
  toys it cannot finish inside the domain (a step cut, a row reached) go to damped Newton with an
  active set of constraint rows (``_solve``). Both first run without the support rows; ln L is
  concave, so an optimum that satisfies them is the constrained one, and only the toys whose
  optimum violates a row are refitted with all rows (the rows are checked by a block screen,
  ``_Theta.support_min``, which refines only the blocks whose bound is not positive);
* toys whose best fit is strictly inside the positivity region: the interval ends by Newton on
  (ln L(alpha, phi) = ln L_hat - 1/2, d ln L / d phi = 0) and the LR statistic by Newton in phi,
  all three points per toy in the same passes over the events (``_fast_profile``): a first Newton step
  from the quadratic approximation on a quartic model of ln L about the best fit (its third- and
  fourth-order sums come from the best fit's first float64 pass, ``_Phi.model``), then one pass in
  float32 and, mostly the last, one in float64; accepted where the result is strictly inside the region;
* the other toys (a constraint binds, clipped intervals, N = 1, flat directions): the nested path
  (``_robust_crossing``), bracketed Newton on the profile in u = atan(alpha), every profile point
  a constrained Newton solve in theta with the alpha constraint as an equality row of its KKT
  system (which also brings a start that is off that slice onto it).
Working sets shrink as toys converge; the per-event passes run chunk by chunk (cache). A Newton
step whose bound on the relative change of every event density, eta, gives an error eta |step|
below tol is taken without a confirming pass. With an infinite positivity limit the profile is
tried at |alpha| = _FAR = 1e3 (S ~ 1e-3 of the num fractions): still above the crossing there,
the end is reported as +-inf (clipped); further out, theta cannot resolve S.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, fields

import numpy as np

from .fitter import ZeroDensityWarning, fit_mixture
from .templates import limits_from_ratio_range

__all__ = ["FractionFit", "fit_fractions", "fraction_log_likelihood"]

TREATMENTS = ("fixed", "floated", "constrained")

_CACHE_EVENTS = 1 << 16  # events per chunk of toys in the per-event passes (cache blocking: ~2x)
_RIDGE = 1e-12  # relative ridge on the Newton matrix: keeps flat directions from blowing up a step
_FLAT_RTOL = 1e-10  # smallest / largest eigenvalue of the Hessian below this: a flat direction
_HUGE = 1e12  # |fraction| beyond this: the likelihood is unbounded (no support to stop it)
_MODEL_MAX_P = 4  # the profile's quartic start (n P^4 sums) only up to this many free fractions
_FAR = 1e3  # an infinite positivity limit is tried here (S ~ 1e-3 A): a profile still above the crossing gives +-inf


@dataclass(frozen=True)
class FractionFit:
    """Per-toy results of ``fit_fractions`` (arrays of shape (n_toys,), fractions (n_toys, K)).

    alpha_hat: ML estimate of alpha = sum_num f / sum_den f (NaN where the best fit has no den
    component, S = 0: alpha is then not identified and ``flat`` is set).
    fractions: all K fitted fractions (fixed ones at their true values); they sum to 1.
    sigma_hat: profiled error of alpha, sqrt(grad(alpha)^T H^-1 grad(alpha)) with H = -Hessian of
    ln L (penalties included) in the free fractions at the best fit; inf where H is singular.
    interval_lo, interval_hi: where -2 Delta ln L_profile = 1 (nuisances profiled), clipped at the
    positivity limits of alpha (``alpha_limits``; then ``interval_clipped``; +-inf, clipped, if the
    limit is infinite and the profile is still above the crossing at |alpha| = 1e3).
    lr_stat: -2 ln(L_profile(alpha_true) / L_hat) (inf if alpha_true is
    outside the positivity limits). converged: the best fit met its tolerance. at_limit: a
    positivity constraint (or S >= 0) binds at the best fit. flat: the Hessian is singular there
    (a combination of fractions the data cannot fix: identical templates, fewer events than free
    fractions, or S = 0). n_iter: Newton iterations of the best fit. alpha_limits (n_toys, 2):
    the range of alpha allowed by positivity.
    """

    alpha_hat: np.ndarray
    fractions: np.ndarray
    sigma_hat: np.ndarray
    interval_lo: np.ndarray
    interval_hi: np.ndarray
    interval_clipped: np.ndarray
    lr_stat: np.ndarray
    converged: np.ndarray
    at_limit: np.ndarray
    flat: np.ndarray
    n_events: np.ndarray
    n_iter: np.ndarray
    alpha_limits: np.ndarray

    def __len__(self) -> int:
        return self.alpha_hat.shape[0]

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --------------------------------------------------------------------------- problem specification


def _as_index(value, K: int, name: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(value))
    if arr.ndim != 1 or arr.size == 0 or not (np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be a non-empty list of integer component indices, got {value!r}")
    if arr.min() < 0 or arr.max() >= K:
        raise ValueError(f"{name} = {arr.tolist()} has indices out of range for K = {K} components (0..{K - 1})")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"{name} = {arr.tolist()} names a component twice")
    return np.sort(arr).astype(np.int64)


def _per_toy(value, n: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    try:
        return np.broadcast_to(arr, (n,)).copy()
    except ValueError:
        raise ValueError(f"{name} must be a scalar or have one value per toy ({n}), got shape {arr.shape}") from None


@dataclass
class _Spec:
    """Index bookkeeping of one problem (see the module docstring for the coordinates)."""

    K: int
    num: np.ndarray
    den: np.ndarray
    fixed: np.ndarray  # components fixed at their true fractions
    nuis: np.ndarray  # floated and constrained components
    cons: np.ndarray  # constrained components
    rn: int  # reference of num (replaced by alpha in phi coordinates)
    rd: int  # reference of den \ num (eliminated by sum f = 1)
    free: np.ndarray  # components of theta, in order
    f_true: np.ndarray  # (n, K)
    t: np.ndarray  # (n, n_fixed) fixed fractions
    R: np.ndarray  # (n,) 1 - sum of fixed fractions = sum of the free ones
    alpha_true: np.ndarray
    width: np.ndarray  # (n, n_cons)
    centre: np.ndarray  # (n, n_cons)

    @property
    def P(self) -> int:
        return self.free.size

    def pos(self, comps) -> np.ndarray:
        """Positions of components in theta."""
        return np.searchsorted(self.free, np.asarray(comps, dtype=np.int64))

    @property
    def pos_num(self):
        return self.pos(self.num)

    @property
    def pos_nuis(self):
        return self.pos(self.nuis)

    @property
    def pos_cons(self):
        return self.pos(self.cons)

    @property
    def pos_rn(self) -> int:
        return int(self.pos([self.rn])[0])

    def fractions(self, theta, R=None, t=None) -> np.ndarray:
        """All K fractions from theta (n, P)."""
        R = self.R if R is None else R
        t = self.t if t is None else t
        f = np.zeros((theta.shape[0], self.K))
        f[:, self.free] = theta
        f[:, self.fixed] = t
        f[:, self.rd] = R - theta.sum(axis=1)
        return f

    def alpha_of(self, theta, R) -> tuple[np.ndarray, np.ndarray]:
        """(alpha, S) at theta."""
        a = theta[:, self.pos_num].sum(axis=1)
        s = R - theta[:, self.pos_nuis].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return a / s, s

    def h(self, alpha) -> np.ndarray:
        """Gradient in theta of A - alpha S (the alpha constraint is h . theta - alpha R = 0)."""
        out = np.zeros((alpha.size, self.P))
        out[:, self.pos_num] = 1.0
        out[:, self.pos_nuis] = alpha[:, None]
        return out

    def alpha_grad(self, theta, R) -> np.ndarray:
        """d alpha / d theta (delta method)."""
        alpha, s = self.alpha_of(theta, R)
        out = np.zeros_like(theta)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, self.pos_num] = (1.0 / s)[:, None]
            out[:, self.pos_nuis] = (alpha / s)[:, None]
        return out


def _build_spec(K, n, num, den, f_true, treatment, widths, centres) -> _Spec:
    num = _as_index(num, K, "num")
    den = _as_index(den, K, "den")
    if den.size < 2:
        raise ValueError(f"den = {den.tolist()} must name at least 2 components (alpha = num / den)")
    if not np.isin(num, den).all():
        raise ValueError(f"num = {num.tolist()} must be a subset of den = {den.tolist()}")
    if num.size == den.size:
        raise ValueError(f"num = den = {den.tolist()} makes alpha = 1; num must leave out a component of den")
    treatment = {} if treatment is None else dict(treatment)
    for k, v in treatment.items():
        if not isinstance(k, (int, np.integer)) or not 0 <= k < K:
            raise ValueError(f"treatment key {k!r} is not a component index (0..{K - 1})")
        if k in den:
            raise ValueError(f"component {k} is in den = {den.tolist()}: its fraction is free; "
                             "give treatments only for components outside den")
        if v not in TREATMENTS:
            raise ValueError(f"unknown treatment {v!r} for component {k}; use one of {TREATMENTS}")
    others = [k for k in range(K) if k not in den]
    missing = [k for k in others if k not in treatment]
    if missing:
        raise ValueError(f"component(s) {missing} are outside den and need a treatment "
                         f"(one of {TREATMENTS}) in treatment={{k: ...}}")
    fixed = np.array([k for k in others if treatment[k] == "fixed"], dtype=np.int64)
    nuis = np.array([k for k in others if treatment[k] != "fixed"], dtype=np.int64)
    cons = np.array([k for k in others if treatment[k] == "constrained"], dtype=np.int64)

    widths = {} if widths is None else dict(widths)
    centres = {} if centres is None else dict(centres)
    for name, given in (("widths", widths), ("centres", centres)):
        extra = [k for k in given if k not in cons]
        if extra:
            raise ValueError(f"{name} given for component(s) {extra}, which are not constrained")
    no_width = [int(k) for k in cons if k not in widths]
    if no_width:
        raise ValueError(f"constrained component(s) {no_width} need a width: widths={{k: width}}")

    ft = np.asarray(f_true, dtype=float)
    if ft.shape == (K,):
        ft = np.broadcast_to(ft, (n, K)).copy()
    if ft.shape != (n, K):
        raise ValueError(f"f_true must have shape (K,) = ({K},) or (n_toys, K) = ({n}, {K}), got {np.shape(f_true)}")
    if not np.all(np.isfinite(ft)) or ft.min() < 0:
        raise ValueError("f_true must be finite and >= 0 (the true fractions of the toys' mixture)")
    sums = ft.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > 1e-9):
        raise ValueError(f"f_true must sum to 1 per toy, got sums in [{sums.min():.12g}, {sums.max():.12g}]")
    s_true = ft[:, den].sum(axis=1)
    if np.any(s_true <= 0):
        raise ValueError("the true nuisance fractions sum to >= 1 (f_true of the den components is 0): "
                         "this leaves no room for the signal, alpha is undefined")

    width = np.column_stack([_per_toy(widths[k], n, f"widths[{k}]") for k in cons]) if cons.size else np.zeros((n, 0))
    if not np.all(np.isfinite(width)) or np.any(width <= 0):
        raise ValueError("constraint widths must be finite and > 0")
    centre = (np.column_stack([_per_toy(centres[k], n, f"centres[{k}]") if k in centres else ft[:, k]
                               for k in cons]) if cons.size else np.zeros((n, 0)))
    if not np.all(np.isfinite(centre)):
        raise ValueError("constraint centres must be finite")

    dnum = np.setdiff1d(den, num)
    rn, rd = int(num[-1]), int(dnum[-1])
    free = np.sort(np.concatenate([den[den != rd], nuis])).astype(np.int64)
    t = ft[:, fixed]
    R = 1.0 - t.sum(axis=1)
    alpha_true = ft[:, num].sum(axis=1) / s_true
    return _Spec(K=K, num=num, den=den, fixed=fixed, nuis=nuis, cons=cons, rn=rn, rd=rd, free=free, f_true=ft,
                 t=t, R=R, alpha_true=alpha_true, width=width, centre=centre)


def _validate_densities(densities, mask):
    """(densities (n, N, K), mask or None, n_events)."""
    d = np.asarray(densities, dtype=float)
    if d.ndim == 2:
        d = d[None]
        if mask is not None:
            mask = np.asarray(mask)[None]
    if d.ndim != 3:
        raise ValueError(f"densities must have shape (n_toys, n_max, K) (or (n_max, K) for one toy), got {d.shape}")
    n, n_max, K = d.shape
    if n == 0:
        raise ValueError("no toys given: densities has shape (0, ...)")
    if K < 2:
        raise ValueError(f"need K >= 2 components (densities[..., k]), got K = {K}")
    if mask is None:
        n_events = np.full(n, n_max, dtype=np.int64)
    else:
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise ValueError(f"mask must be boolean (True = real event), got dtype {mask.dtype}")
        if mask.shape != (n, n_max):
            raise ValueError(f"mask must have shape (n_toys, n_max) = {(n, n_max)}, got {mask.shape}")
        n_events = mask.sum(axis=1)
    if np.any(n_events == 0):
        bad = np.flatnonzero(n_events == 0)
        raise ValueError(f"{bad.size} toy(s) have no events (e.g. toy {bad[0]}); every toy needs N >= 1 unmasked event")
    if mask is not None and n_events.min() == n_max:
        mask = None
    if mask is None:  # whole-array reductions (contiguous: one fast pass each); NaN propagates
        lo, hi = d.min(), d.max()
    else:
        lo, hi = _event_extremes(d, mask)
        lo, hi = lo.min(), hi.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("densities contain NaN or inf at unmasked events; densities must be finite")
    if lo < 0:
        raise ValueError("densities contain negative values; component densities (or ratios) must be >= 0")
    return d, mask, n_events, (float(lo), float(hi))


def _event_extremes(d, mask):
    """Per-event (smallest, largest) component density (0 at pads), elementwise over the K slices
    (a reduction along the short last axis is slow)."""
    dmax = d[..., 0].copy()
    dmin = d[..., 0].copy()
    for k in range(1, d.shape[2]):
        np.maximum(dmax, d[..., k], out=dmax)
        np.minimum(dmin, d[..., k], out=dmin)
    if mask is not None:
        dmax, dmin = np.where(mask, dmax, 0.0), np.where(mask, dmin, 0.0)
    return dmin, dmax


_SUPPORT_CACHE: dict = {}  # digest of the support -> pruned rows (a study fits many batches with one support)
_LIMITS_CACHE: dict = {}  # (digest, problem, fixed fractions) -> positivity limits of alpha
_ROWS_CACHE: dict = {}  # the support rows in theta of the last problem


def _digest(arr) -> str:
    import hashlib

    return hashlib.sha1(np.ascontiguousarray(arr).view(np.uint8)).hexdigest() + str(arr.shape)


def _prepare_support(support, K):
    """(support rows reduced to the extreme rays of their cone, each normalised to sum 1, digest), or (None, None)."""
    if support is None:
        return None, None
    s = np.asarray(support, dtype=float)
    if s.ndim != 2 or s.shape[1] != K:
        raise ValueError(f"support must have shape (n_nodes, K) = (n_nodes, {K}), got {s.shape}")
    if not np.all(np.isfinite(s)) or (s.size and s.min() < 0):
        raise ValueError("support must be finite and >= 0 (component densities at the support nodes)")
    key = _digest(s)
    if key not in _SUPPORT_CACHE:
        if len(_SUPPORT_CACHE) >= 8:
            _SUPPORT_CACHE.clear()
        _SUPPORT_CACHE[key] = _prune_support(s)
    return _SUPPORT_CACHE[key], key


def _prune_support(s):
    """Rows with some density, normalised to sum 1, deduplicated, reduced to the extreme rays."""
    tot = s.sum(axis=1)
    s = s[tot > 0] / tot[tot > 0, None]
    if s.shape[0] == 0:
        raise ValueError("support has no node where any component density is > 0")
    _, first = np.unique(s, axis=0, return_index=True)
    return _extreme_rays(s[np.sort(first)])  # keeps the nodes' order (neighbours alike: see _Theta.support_min)


def _extreme_rays(s):
    """Vertices of the convex hull of normalised rows (in their affine span); all rows if that fails."""
    if s.shape[0] <= s.shape[1] + 1:
        return s
    c = s.mean(axis=0)
    _, sv, vt = np.linalg.svd(s - c, full_matrices=False)
    rank = int(np.sum(sv > 1e-12 * max(sv[0], 1e-300)))
    if rank == 0:
        return s[:1]
    z = (s - c) @ vt[:rank].T
    if rank == 1:
        return s[[int(np.argmin(z[:, 0])), int(np.argmax(z[:, 0]))]]
    try:
        from scipy.spatial import ConvexHull

        hull = ConvexHull(z)
        return s[np.sort(hull.vertices)]
    except Exception:  # qhull refuses (degenerate input): keep every row, still correct
        return s


def _alpha_limits_lp(sup, spec: _Spec, t_row, R):
    """(alpha_min, alpha_max) over {f: sup f >= 0, sum f = 1, fixed f = t, S > 0}: Charnes-Cooper LPs.

    y = f / S, z = 1 / S turn max (a.f / b.f) into the LP max a.y s.t. sup y >= 0, b.y = 1,
    sum y = z, y_fixed = t z, z >= 0; an unbounded LP gives an infinite limit.
    """
    from scipy.optimize import linprog

    K = spec.K
    a = np.zeros(K + 1)
    a[spec.num] = 1.0
    b = np.zeros(K + 1)
    b[spec.den] = 1.0
    a_eq = [b, np.r_[np.ones(K), -1.0]]
    b_eq = [1.0, 0.0]
    for j, k in enumerate(spec.fixed):
        row = np.zeros(K + 1)
        row[k], row[K] = 1.0, -t_row[j]
        a_eq.append(row)
        b_eq.append(0.0)
    a_ub = -np.hstack([sup, np.zeros((sup.shape[0], 1))])
    bounds = [(None, None)] * K + [(0, None)]
    out = []
    for sign in (1.0, -1.0):  # minimise alpha, then maximise it
        res = linprog(sign * a, A_ub=a_ub, b_ub=np.zeros(sup.shape[0]), A_eq=np.array(a_eq), b_eq=b_eq,
                      bounds=bounds, method="highs")
        if res.status == 3:
            out.append(-sign * np.inf)
        elif res.status == 0:
            out.append(float(a @ res.x))
        else:  # infeasible cannot happen for valid true fractions; be safe
            out.append(-sign * np.inf)
    return out[0], out[1]


# --------------------------------------------------------------------------- per-event arrays


def _solve_small(a, b):
    """Batched solve of a x = b (a (n, k, k), b (n, k)); closed form for k <= 2, never raises."""
    k = a.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if k == 0:
            return np.zeros_like(b)
        if k == 1:
            return b / a[:, 0, :]
        if k == 2:
            det = a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]
            x0 = (a[:, 1, 1] * b[:, 0] - a[:, 0, 1] * b[:, 1]) / det
            x1 = (a[:, 0, 0] * b[:, 1] - a[:, 1, 0] * b[:, 0]) / det
            return np.column_stack([x0, x1])
        good = np.all(np.isfinite(a), axis=(1, 2)) & np.all(np.isfinite(b), axis=1)
        out = np.full_like(b, np.nan)
        if good.any():
            try:
                out[good] = np.linalg.solve(a[good], b[good][..., None])[..., 0]
            except np.linalg.LinAlgError:  # an exactly singular matrix somewhere: one by one
                for i in np.flatnonzero(good):
                    out[i] = np.linalg.lstsq(a[i], b[i], rcond=None)[0]
        return out


def _rmax(a, initial=-np.inf):
    """a.max(axis=1, initial=initial) for a short second axis, column by column (numpy's reduction along
    a short last axis is ~30x slower than elementwise maxima)."""
    out = np.full(a.shape[0], initial, dtype=float)
    for c in range(a.shape[1]):
        np.maximum(out, a[:, c], out=out)
    return out


def _rmin(a, initial=np.inf):
    """a.min(axis=1, initial=initial), column by column (see ``_rmax``)."""
    out = np.full(a.shape[0], initial, dtype=float)
    for c in range(a.shape[1]):
        np.minimum(out, a[:, c], out=out)
    return out


def _rfinite(a):
    """np.all(np.isfinite(a), axis=1), column by column (see ``_rmax``)."""
    out = np.ones(a.shape[0], bool)
    for c in range(a.shape[1]):
        out &= np.isfinite(a[:, c])
    return out


def _rsum(a):
    """a.sum(axis=1), column by column (see ``_rmax``)."""
    out = np.zeros(a.shape[0])
    for c in range(a.shape[1]):
        out += a[:, c]
    return out


_BLOCK = 64  # neighbouring support rows screened together by _Theta.support_min
_blocks_cache: dict = {}


def _support_blocks(sup):
    """(representative rows, per-block max |change| of s_rd, of s_fixed (B, n_fixed) and of G) for screening."""
    key = id(sup[0])
    hit = _blocks_cache.get(key)
    if hit is not None and hit[0] is sup[0]:
        return hit[1]
    g, srd, sfix = sup
    m = g.shape[0]
    starts = np.arange(0, m, _BLOCK)
    rep = starts.copy()
    blk = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, m]))
    d_rd = np.zeros(starts.size)
    d_fix = np.zeros((starts.size, sfix.shape[1]))
    d_g = np.zeros(starts.size)
    np.maximum.at(d_rd, blk, np.abs(srd - srd[rep][blk]))
    if sfix.shape[1]:
        np.maximum.at(d_fix, blk, np.abs(sfix - sfix[rep][blk]))
    np.maximum.at(d_g, blk, np.abs(g - g[rep][blk]).max(axis=1, initial=0.0))
    # the rows block by block (the last block padded with its last row): (B, _BLOCK) per column
    rows = np.minimum(starts[:, None] + np.arange(_BLOCK)[None, :], m - 1)
    blocks = ([np.ascontiguousarray(g[rows, p]) for p in range(g.shape[1])], srd[rows],
              [np.ascontiguousarray(sfix[rows, f]) for f in range(sfix.shape[1])])
    out = (rep, d_rd, d_fix, d_g * (1 + 1e-12) + 1e-15, blocks)
    _blocks_cache.clear()
    _blocks_cache[key] = (sup[0], out)
    return out


class _Theta:
    """The toys of one block (or a subset) in theta: m_i = base_i + sum_p theta_p cols_pi, with their constraint rows.

    Rows: value_j = c_j + G_j . theta >= 0, the support nodes (c_j = R s_j,rd + t . s_j,fixed per toy,
    computed when needed: n_toys x n_nodes would not fit in memory) and, with floated nuisances,
    S = R - sum of their fractions >= 0. ``no_support()`` drops the support rows: the concave fit
    without them that satisfies them is the constrained optimum, so most toys never need them.
    """

    def __init__(self, spec: _Spec, base, cols, R, t, sup, centre, iw2, with_support=True, low=None):
        self.spec, self.base, self.cols, self.R, self.t = spec, base, cols, R, t
        self.low = low  # float32 copies (base, cols) for the first Newton passes, or None
        self.sup = sup  # (G (M, P), s_rd (M,), s_fixed (M, n_fixed)) or None
        self.centre, self.iw2 = centre, iw2
        self.with_support = with_support and sup is not None
        self.ones = np.ones(base.shape[1])
        g = []
        if self.with_support:
            g.append(sup[0])
        if spec.nuis.size:
            gs = np.zeros((1, spec.P))
            gs[0, spec.pos_nuis] = -1.0
            g.append(gs)
        self.rows_g = np.vstack(g) if g else np.zeros((0, spec.P))

    def take(self, idx) -> _Theta:
        return _Theta(self.spec, self.base[idx], self.cols[:, idx], self.R[idx], self.t[idx], self.sup,
                      self.centre[idx], self.iw2[idx], self.with_support)

    def no_support(self) -> _Theta:
        return _Theta(self.spec, self.base, self.cols, self.R, self.t, self.sup, self.centre, self.iw2, False,
                      self.low)

    def rows(self, theta, idx=None):
        """Values of the rows at theta, (n, n_rows)."""
        R, t = (self.R, self.t) if idx is None else (self.R[idx], self.t[idx])
        out = []
        with np.errstate(invalid="ignore", over="ignore"):
            if self.with_support:
                g, srd, sfix = self.sup
                c = R[:, None] * srd[None, :]
                if sfix.shape[1]:
                    c += t @ sfix.T
                out.append(c + theta @ g.T)
            if self.spec.nuis.size:
                out.append((R - _rsum(theta[:, self.spec.pos_nuis]))[:, None])
        return np.hstack(out) if out else np.zeros((theta.shape[0], 0))

    def support_min(self, theta, chunk_elems=1 << 22, idx=None):
        """min over the support rows per toy, or a positive lower bound of it (inf without support).

        Screening (exact as a sign test): one representative row per block of _BLOCK neighbouring
        rows, and per block the largest change of c and G from its representative, bound every
        row of the block; toys whose bound is not positive get all rows, in chunks (memory).
        """
        n = theta.shape[0]
        if self.sup is None:
            return np.full(n, np.inf)
        g, srd, sfix = self.sup
        rep, d_rd, d_fix, d_g, (gb, srdb, sfixb) = _support_blocks(self.sup)
        R, t = (self.R, self.t) if idx is None else (self.R[idx], self.t[idx])  # idx: the toy of each theta
        fin = _rfinite(theta)
        th = np.where(fin[:, None], theta, 0.0)
        with np.errstate(invalid="ignore", over="ignore"):
            # bound = R s_rd + t.s_fix + theta.G - (|R| d_rd + |t|.d_fix + |theta|_1 d_G): one small matmul
            # (blocks, toys): the minimum over blocks is then elementwise along the long axis (fast)
            x = np.vstack([th.T, R, np.abs(R), _rsum(np.abs(th)), t.T, np.abs(t).T])
            mat = np.hstack([g[rep], srd[rep, None], -d_rd[:, None], -d_g[:, None], sfix[rep], -d_fix])
            bound = mat @ x
            out = np.min(bound, axis=0, initial=np.inf)
            # the (toy, block) pairs whose bound is not positive: all rows of just those blocks
            tf = np.flatnonzero(~(out > 0) & fin)
            if tf.size:
                bf = bound[:, tf].T
                out[tf] = np.where(bf > 0, bf, np.inf).min(axis=1, initial=np.inf)
                ti, bi = np.nonzero(~(bf > 0))
                ti = tf[ti]
                step = max(1, chunk_elems // (_BLOCK * max(g.shape[1], 1)))
                for s0 in range(0, ti.size, step):
                    tc, bc = ti[s0 : s0 + step], bi[s0 : s0 + step]
                    v = R[tc, None] * srdb[bc]  # (pairs, _BLOCK): the rows of each pair's block
                    for p, gp in enumerate(gb):
                        v += th[tc, p, None] * gp[bc]
                    for f, sf in enumerate(sfixb):
                        v += t[tc, f, None] * sf[bc]
                    np.minimum.at(out, tc, v.min(axis=1))
        return np.where(fin, out, -np.inf)


    def density(self, theta, idx=None):
        base, cols = (self.base, self.cols) if idx is None else (self.base[idx], self.cols[:, idx])
        m = base + theta[:, 0, None] * cols[0] if cols.shape[0] else base.copy()
        for p in range(1, cols.shape[0]):
            m += theta[:, p, None] * cols[p]
        return m, cols

    def evaluate(self, theta, idx=None, *, need_hess=True, low=False, third=None):
        """(ln L, gradient, -Hessian) at theta for the toys (idx: a subset); ln L = -inf off the domain.

        ``low``: in float32 where the copies exist (about half the time; good to ~1e-6 relative, for the
        first Newton steps only). ``third``: arrays (n, P, P, P) and (n, P, P, P, P) that receive the third- and
        fourth-order sums T = sum_i u_i u_i u_i, Q = sum_i u_i u_i u_i u_i (u_i = cols_i / m_i: about theta,
        ln L = sum ln(1 + delta.u_i) has the terms T[delta^3] / 3 - Q[delta^4] / 4), for the quartic model that
        starts the profile (``_Phi.model``)."""
        n, P = theta.shape
        N = self.base.shape[1]
        ell, g = np.empty(n), np.empty((n, P))
        j = np.empty((n, P, P)) if need_hess else None
        if third is not None:  # index multisets p <= q <= r (<= w), each sum from two pair products u_p u_q
            trip = [(p, q, r) for p in range(P) for q in range(p, P) for r in range(q, P)]
            quad = [(p, q, r, w) for p, q, r in trip for w in range(r, P)]
        b_all, c_all, ones, th_c = self.base, self.cols, self.ones, theta
        if low and self.low is not None:
            (b_all, c_all), ones, th_c = self.low, self.ones.astype(np.float32), theta.astype(np.float32)
        step = max(1, _CACHE_EVENTS // max(N, 1))  # toys per chunk: the per-event work stays in cache
        for s0 in range(0, n, step):
            sl = slice(s0, min(n, s0 + step))
            src = sl if idx is None else idx[sl]
            base, cols = b_all[src], c_all[:, src]
            m = base + th_c[sl, 0, None] * cols[0] if P else base.copy()
            for p in range(1, P):
                m += th_c[sl, p, None] * cols[p]
            # off the domain (some m <= 0) the gradient and Hessian are garbage; ell = -inf marks it
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                ell[sl] = np.log(m) @ ones
                r = np.divide(1.0, m, out=m)
                u = [cols[p] * r for p in range(P)]
                for p in range(P):
                    g[sl, p] = u[p] @ ones
                if need_hess:
                    for p in range(P):
                        for q in range(p, P):
                            j[sl, p, q] = j[sl, q, p] = np.einsum("ij,ij->i", u[p], u[q])
                if third is not None:  # in float32 (they only shape the profile's first Newton step)
                    uf = [a_.astype(np.float32) for a_ in u]
                    pair = {}
                    for p in range(P):
                        for q in range(p, P):
                            pair[p, q] = uf[p] * uf[q]
                    t3_, t4_ = third
                    for p, q, r in trip:
                        v_ = np.einsum("ij,ij->i", pair[p, q], uf[r])
                        for perm in set(itertools.permutations((p, q, r))):
                            t3_[(sl,) + perm] = v_
                    for p, q, r, w_ in quad:
                        v_ = np.einsum("ij,ij->i", pair[p, q], pair[r, w_])
                        for perm in set(itertools.permutations((p, q, r, w_))):
                            t4_[(sl,) + perm] = v_
        ell = np.where(np.isfinite(ell), ell, -np.inf)
        pc = self.spec.pos_cons
        if pc.size:
            c, iw2 = (self.centre, self.iw2) if idx is None else (self.centre[idx], self.iw2[idx])
            dev = theta[:, pc] - c
            ell = ell - 0.5 * np.sum(dev * dev * iw2, axis=1)
            g[:, pc] -= dev * iw2
            if need_hess:
                j[:, pc, pc] += iw2
        return ell, g, j


# --------------------------------------------------------------------------- constrained Newton in theta


def _kkt_step(j, g, a_rows, active, resid):
    """Newton step of the equality-constrained quadratic model; returns (step, multipliers).

    Maximise g.d - d.J.d/2 subject to a_s . d = resid_s for the active slots s. Solved as the
    quasi-definite system [[J + ridge, A^T], [A, -D]] [d; -lambda] = [g; resid], D = eps on
    active slots (copes with dependent rows) and 1 on empty ones (their multiplier is 0).
    lambda >= 0 on an active inequality means it holds the maximum back.
    """
    n, P = g.shape
    s = a_rows.shape[1]
    # ridge relative to the Hessian's scale, floored (no information at all: J = 0, one event of a fixed component)
    scale = np.maximum(np.trace(j, axis1=1, axis2=2) / max(P, 1), 1e-6)
    mat = np.zeros((n, P + s, P + s))
    mat[:, :P, :P] = j + (_RIDGE * scale)[:, None, None] * np.eye(P)
    a = np.where(active[..., None], a_rows, 0.0)
    mat[:, :P, P:] = a.transpose(0, 2, 1)
    mat[:, P:, :P] = a
    idx = np.arange(s)
    mat[:, P + idx, P + idx] = np.where(active, -_RIDGE / (1.0 + scale[:, None]), -1.0)
    rhs = np.concatenate([g, np.where(active, resid, 0.0)], axis=1)
    sol = _solve_small(mat, rhs)
    return sol[:, :P], -sol[:, P:]


def _solve(ts: _Theta, theta, W, alpha=None, *, tol, max_iter, hess_rtol=None, start=None):
    """Maximise ln L over theta (penalties included) subject to the rows (>= 0) for every toy of ``ts``.

    Damped Newton with an active set (W: row index per slot, -1 empty): steps are cut by a ratio
    test on the rows (the blocking row joins W) and halved while an event density would be <= 0
    or (on the slice) ln L would not rise; a row whose multiplier turns negative leaves W; off the
    slice with W full and the step blocked at once, the blocking row swaps in (see below). With
    ``alpha`` the constraint A - alpha S = 0 is an extra equality row: a start off that slice is
    moved onto it by the first full step (steps before only need to stay inside the domain).
    ``hess_rtol``: the returned Hessian must be good to this (it is taken at the last evaluated point).
    ``start``: (ln L, gradient, -Hessian) at theta, if the caller has them.
    Returns dict(theta, W, ell, g, j, mult, nu, converged, n_iter); ``mult`` per slot.
    """
    spec = ts.spec
    n, P = theta.shape
    eq = alpha is not None
    n_sup = P - 1 if eq else P
    theta = theta.copy()
    W = W[:, :n_sup].copy() if W.shape[1] >= n_sup else np.hstack([W, -np.ones((n, n_sup - W.shape[1]), int)])
    ell, g, j = ts.evaluate(theta) if start is None else (a.copy() for a in start)
    out = dict(theta=theta, W=W, ell=ell, g=g, j=j, mult=np.zeros((n, n_sup)), nu=np.zeros(n),
               converged=np.zeros(n, bool), n_iter=np.zeros(n, np.int64))
    if not np.all(np.isfinite(ell)):
        raise AssertionError("_solve needs a start inside the domain")  # callers guarantee it
    # working set: idx (with its per-event arrays in sub) and, within it, the toys still iterating (live);
    # converged toys ride along until fewer than half are live (copying the event arrays costs a pass)
    idx = np.arange(n)
    sub = ts
    live = np.ones(n, bool)
    swaps = np.zeros(n, np.int64)  # row swaps in a row without a move, per toy
    entered = -np.ones(n, np.int64)  # the slot the last swap filled (it may not leave at the next one)
    rows_g = ts.rows_g
    for it in range(1, max_iter + 1):
        th, w_ = theta[idx], W[idx]
        vals = sub.rows(th)
        act = w_ >= 0
        a_rows = rows_g[np.where(act, w_, 0)] if rows_g.shape[0] else np.zeros((idx.size, n_sup, P))
        resid = (-np.take_along_axis(vals, np.where(act, w_, 0), axis=1) if rows_g.shape[0]
                 else np.zeros((idx.size, n_sup)))
        if eq:
            al = alpha[idx]
            # the row of A - alpha S = 0, divided by max(1, |alpha|) (far slices, alpha -> inf: S -> 0)
            eq_scale = np.maximum(1.0, np.abs(al))
            h = spec.h(al) / eq_scale[:, None]
            a_rows = np.concatenate([a_rows, h[:, None]], axis=1)
            act = np.concatenate([act, np.ones((idx.size, 1), bool)], axis=1)
            r_eq = -(np.einsum("np,np->n", h, th) - al * sub.R / eq_scale)
            resid = np.concatenate([resid, r_eq[:, None]], axis=1)
        step, lam = _kkt_step(j[idx], g[idx], a_rows, act, resid)
        mult = lam[:, :n_sup]
        out["mult"][idx[live]] = mult[live]
        if eq:
            out["nu"][idx[live]] = (lam[:, -1] / eq_scale)[live]  # the multiplier of A - alpha S itself
        on_slice = np.ones(idx.size, bool) if not eq else np.abs(r_eq) <= tol
        # converged: a tolerance-size step, or (flat directions, where the ridge-limited step is rounding
        # noise) a Newton decrement step.J.step below tol^2 times the Hessian's scale
        jd = j[idx]
        dec = np.einsum("np,npq,nq->n", step, jd, step)
        jscale = np.trace(jd, axis1=1, axis2=2) / max(P, 1)
        # the last step needs no confirming pass when the error it leaves, O(eta |step|) (eta below), is below tol
        eta = np.einsum("np,np->n", np.abs(step), np.sqrt(np.abs(np.einsum("npp->np", jd))))
        size = np.abs(step).max(axis=1, initial=0.0)
        scale_th = 1.0 + np.abs(th).max(axis=1, initial=0.0)
        small = (size <= tol * scale_th) | (
            on_slice & (size <= 1e-3 * scale_th) & (eta < (0.1 if hess_rtol is None else 0.5 * hess_rtol))
            & (eta * size <= 0.1 * tol * scale_th)) | (
            (dec <= tol * tol * jscale) & on_slice)
        gmax = np.abs(g[idx]).max(axis=1, initial=0.0)
        neg = np.where(act[:, :n_sup], mult, np.inf)
        mu_ok = neg.min(axis=1, initial=np.inf) >= -1e-8 * (1.0 + gmax)
        # max_i |d m_i / m_i| along the step is at most sum_p |step_p| max_i |u_ip| <= sum_p |step_p| sqrt(J_pp):
        # below 1/2 the last step needs no pass (quadratic model); a tolerance-size step that could
        # still empty an event density means the iterate hugs the domain's edge: the slice (or the
        # problem) has no interior point, and the solve fails
        edge = small & ~(eta < 0.5) & live
        conv = small & on_slice & mu_ok & np.all(np.isfinite(step), axis=1) & ~edge & live
        drop = small & on_slice & ~mu_ok & ~edge & live
        # off the slice and stuck: the active rows keep the slice out of reach; release one
        # (the most negative multiplier's); with none left the slice has no point in the domain
        stuck = small & ~on_slice & ~edge & live
        has_w = (w_ >= 0).any(axis=1)
        edge |= stuck & ~has_w
        drop |= stuck & has_w
        if drop.any():  # leave the most negative multiplier's row
            r_ = np.flatnonzero(drop)
            s_ = np.argmin(np.where(w_[r_] >= 0, neg[r_], np.inf), axis=1)
            w_[r_, s_] = -1
        # ratio test on the rows outside W along the step
        if rows_g.shape[0]:
            dv = step @ rows_g.T
            inact = np.ones(vals.shape, bool)
            for s_ in range(n_sup):
                r_ = np.flatnonzero(w_[:, s_] >= 0)
                inact[r_, w_[r_, s_]] = False
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                ratio = np.where(inact & (dv < 0), np.maximum(vals, 0.0) / -dv, np.inf)
            jmin = np.argmin(ratio, axis=1)
            tmax = ratio[np.arange(idx.size), jmin]
        else:
            jmin = np.zeros(idx.size, np.int64)
            tmax = np.full(idx.size, np.inf)
        tau = np.where(drop | ~live, 0.0, np.minimum(1.0, tmax))
        blocked = ~drop & ~conv & (tmax < 1.0) & live
        slope = np.einsum("np,np->n", g[idx], step)
        curv = dec
        new = th + tau[:, None] * step
        ell_new, g_new, j_new = ell[idx].copy(), g[idx].copy(), j[idx].copy()
        # the converged toys take their last (tiny) step on the quadratic model, without a pass
        ell_new[conv] += tau[conv] * slope[conv] - 0.5 * tau[conv] ** 2 * curv[conv]
        # trial points; halve tau while an event density is <= 0 or, on the slice, ln L does not rise
        todo = np.flatnonzero((tau > 0) & ~conv)
        first = True
        for _ in range(60):
            if todo.size == 0:
                break
            if todo.size >= 0.5 * idx.size:  # evaluating the whole working set beats copying most of it
                e_, g_, j_ = (a[todo] for a in sub.evaluate(new))
            else:
                e_, g_, j_ = sub.evaluate(new[todo], todo)
            tiny = tau[todo] * np.abs(step[todo]).max(axis=1) <= 1e-15 * (1 + np.abs(th[todo]).max(axis=1))
            rise = e_ >= ell[idx[todo]] + 1e-4 * tau[todo] * slope[todo]
            ok = np.isfinite(e_) & (~on_slice[todo] | rise | tiny)
            good = todo[ok]
            ell_new[good], g_new[good], j_new[good] = e_[ok], g_[ok], j_[ok]
            bad = todo[~ok]
            cut = np.full(bad.size, 0.5)
            if first:  # a step that leaves the event domain: cut it to 0.9 of the way to the first zero density
                off = ~np.isfinite(e_[~ok])
                if off.any():
                    rb = bad[off]
                    m0, cols = sub.density(th[rb], rb)
                    dm = np.einsum("pnk,np->nk", cols, step[rb])
                    with np.errstate(divide="ignore", invalid="ignore"):
                        t_ev = np.where(dm < 0, m0 / -dm, np.inf).min(axis=1)
                    cut[off] = np.clip(0.9 * t_ev / tau[rb], 1e-12, 0.5)
                first = False
            tau[bad] *= cut
            blocked[bad] = False
            new[bad] = th[bad] + tau[bad, None] * step[bad]
            todo = bad
        if todo.size:  # no acceptable step: stay
            tau[todo] = 0.0
            new[todo] = th[todo]
        full = ~(w_ < 0).any(axis=1)
        add = blocked & ~full  # the blocking row joins W (also at tau = 0: already on it)
        if add.any():
            r_ = np.flatnonzero(add)
            slot = np.argmax(w_[r_] < 0, axis=1)
            w_[r_, slot] = jmin[r_]
        # W full, off the slice, and the step blocked at once: the iterate sits on a vertex of the domain
        # whose active face leads away from the slice. The blocking row takes the place of the active row
        # with the smallest multiplier, except the row the previous swap brought in (else two slots
        # swap the same pair of rows back and forth and the other faces are never tried). With the
        # vertex's faces tried (2 (slots + 1) swaps in a row without a move) the slice misses the
        # domain, and the solve fails
        moved = tau * size > tol * scale_th
        swap = blocked & full & ~on_slice & ~moved
        swaps[idx[moved]] = 0
        if swap.any():
            r_ = np.flatnonzero(swap)
            cand = np.where(w_[r_] >= 0, mult[r_], np.inf)
            last = entered[idx[r_]]
            again = np.flatnonzero((last >= 0) & (swaps[idx[r_]] > 0) & (n_sup > 1))
            cand[again, last[again]] = np.inf
            slot = np.argmin(cand, axis=1)
            w_[r_, slot] = jmin[r_]
            entered[idx[r_]] = slot
            swaps[idx[r_]] += 1
        missed = swap & (swaps[idx] > 2 * (n_sup + 1))
        li = idx[live]
        theta[li], W[li] = new[live], w_[live]
        ell[li], g[li], j[li] = ell_new[live], g_new[live], j_new[live]
        out["n_iter"][li] = it
        out["converged"][idx[conv]] = True
        huge = np.abs(new).max(axis=1, initial=0.0) > _HUGE
        live &= ~conv & ~huge & ~edge & ~missed
        if not live.any():
            break
        if live.sum() < 0.5 * idx.size:
            idx, sub, live = idx[live], sub.take(np.flatnonzero(live)), np.ones(int(live.sum()), bool)
    out.update(theta=theta, W=W, ell=ell, g=g, j=j)
    return out


def _free_newton(ts: _Theta, theta, start, *, tol, max_iter, hess_rtol, start_low=False):
    """Fast path of the best fit: full Newton steps without rows, step cuts or an active set.

    The same steps, convergence test and final quadratic-model update as ``_solve`` on a toy whose
    iterates stay inside the domain with ln L rising; a toy that would need a cut, a row, or ends
    with a row <= 0 is marked failed (``ok`` False) and left to ``_solve``. Returns (res, ok), res
    as ``_solve``'s (valid where ok) plus T: the third- and fourth-order sums of the first float64 pass
    (``_Theta.evaluate``), or None for P > _MODEL_MAX_P.
    """
    n, P = theta.shape
    theta = theta.copy()
    ell, g, j = (a.copy() for a in start)
    ok = np.zeros(n, bool)
    n_iter = np.zeros(n, np.int64)
    live = np.isfinite(ell)
    eye = np.eye(P)
    prev_low = start_low  # the gradient and Hessian in hand come from a float32 pass
    t3 = (np.zeros((n, P, P, P)), np.zeros((n, P, P, P, P))) if P <= _MODEL_MAX_P else None
    t3_done = t3 is None  # third/fourth-order sums from the first float64 pass (the profile's quartic start)
    for it in range(1, max_iter + 1):
        li = np.flatnonzero(live)
        if li.size == 0:
            break
        every = li.size == n  # all toys live (the first passes): views, no gathers
        th, jd, gd = (theta, j, g) if every else (theta[li], j[li], g[li])
        jscale = np.trace(jd, axis1=1, axis2=2) / max(P, 1)
        step = _solve_small(jd + (_RIDGE * np.maximum(jscale, 1e-6))[:, None, None] * eye, gd)
        dec = np.einsum("np,npq,nq->n", step, jd, step)
        eta = np.einsum("np,np->n", np.abs(step), np.sqrt(np.abs(np.einsum("npp->np", jd))))
        size = _rmax(np.abs(step), 0.0)
        scale_th = 1.0 + _rmax(np.abs(th), 0.0)
        small = ((size <= tol * scale_th) | ((size <= 1e-3 * scale_th) & (eta < 0.5 * hess_rtol)
                                              & (eta * size <= 0.1 * tol * scale_th)) | (dec <= tol * tol * jscale))
        finite = _rfinite(step)
        if prev_low:  # gradient and Hessian from a float32 pass: one more (float64) step
            small[:] = False
        conv = small & (eta < 0.5) & finite
        slope = np.einsum("np,np->n", gd, step)
        new = th + step
        c = li[conv]
        theta[c], ell[c], ok[c], n_iter[c] = new[conv], ell[c] + slope[conv] - 0.5 * dec[conv], True, it
        go = ~small & finite & (_rmax(np.abs(new), 0.0) <= _HUGE)
        live[li[~go]] = False
        tr = np.flatnonzero(go)
        if tr.size == 0:
            continue
        ti = li[tr]
        low = it == 1 and ts.low is not None  # the first step's pass in float32 (the next steps correct it)
        was_low, prev_low = prev_low, low
        buf = None
        if not low and not t3_done:
            t3_done = True
            nb = n if ti.size >= 0.5 * n else ti.size
            buf = (np.zeros((nb, P, P, P)), np.zeros((nb, P, P, P, P)))
        if ti.size == n:  # every toy steps: no gathers
            e_, g_, j_ = ts.evaluate(new, low=low, third=buf)
        elif ti.size >= 0.5 * n:  # evaluating the whole set beats gathering most of it
            full = theta.copy()
            full[ti] = new[tr]
            e_, g_, j_ = (a[ti] for a in ts.evaluate(full, low=low, third=buf))
            if buf is not None:  # every toy's sums (a toy that does not take this step fails, or is done): as they are
                t3, buf = buf, None
        else:
            e_, g_, j_ = ts.evaluate(new[tr], ti, low=low, third=buf)
        tiny = size[tr] <= 1e-15 * scale_th[tr]
        # ln L in float32 (this pass, or the last one) is good to ~1e-6 |ln L|: the rise test allows for it
        slack = 1e-5 * (1.0 + np.abs(ell[ti])) if (low or was_low) else 0.0
        acc = np.isfinite(e_) & ((e_ >= ell[ti] + 1e-4 * slope[tr] - slack) | tiny)
        if ti.size == n and acc.all():  # every toy takes its step: the new arrays replace the old ones
            theta, ell, g, j = new, e_, g_, j_
            n_iter[:] = it
            if buf is not None:
                t3 = buf
            continue
        a_ = ti[acc]
        theta[a_], ell[a_], g[a_], j[a_], n_iter[a_] = new[tr[acc]], e_[acc], g_[acc], j_[acc], it
        if buf is not None:
            t3[0][a_], t3[1][a_] = buf[0][acc], buf[1][acc]
        live[ti[~acc]] = False
    oi = np.flatnonzero(ok)
    if oi.size:
        inside = _rmin(ts.rows(theta[oi], oi)) > 0
        ok[oi[~inside]] = False
    res = dict(theta=theta, W=-np.ones((n, P), int), ell=ell, g=g, j=j, converged=ok.copy(), n_iter=n_iter, T=t3)
    return res, ok


# --------------------------------------------------------------------------- profile in (alpha, phi)


class _Phi:
    """The same toys in (alpha, phi): m = base + sum_p phi_p E_p + alpha S y, S = R - sum_(nuisances) phi.

    Built from the theta arrays (y = the column of r_n; num columns minus y). At fixed alpha,
    ln L is concave in phi; d m/d alpha = S y, d m/d phi_p = E_p - alpha kappa_p y (kappa: nuisance).
    """

    def __init__(self, spec: _Spec, th: _Theta):
        prn = spec.pos_rn
        self.spec, self.base, self.R = spec, th.base, th.R
        self.keep = np.array([p for p in range(spec.P) if p != prn], dtype=np.int64)
        num_other = np.isin(self.keep, spec.pos_num)
        self.kappa = np.isin(self.keep, spec.pos_nuis)
        self.numo = num_other
        self.y = th.cols[prn]
        self.E = [th.cols[p] - self.y if o else th.cols[p] for p, o in zip(self.keep, num_other)]
        self.pen = np.searchsorted(self.keep, spec.pos_cons)
        self.centre, self.iw2 = th.centre, th.iw2
        self.ones = th.ones
        self.th = th
        self.low = None  # float32 (base, y, E) for the first Newton pass, where the theta set has them
        if th.low is not None:
            b32, c32 = th.low
            y32 = c32[prn]
            self.low = (b32, y32, [c32[p] - y32 if o else c32[p] for p, o in zip(self.keep, num_other)])

    def theta(self, alpha, phi, idx=None):
        s = (self.R if idx is None else self.R[idx]) - _rsum(phi[:, self.kappa])
        theta = np.empty((alpha.size, self.spec.P))
        theta[:, self.keep] = phi
        theta[:, self.spec.pos_rn] = alpha * s - _rsum(phi[:, self.numo])
        return theta

    def phi(self, theta):
        return theta[:, self.keep]

    def jacobian(self, alpha, theta):
        """D = d theta / d(alpha, phi), shape (n, P, 1 + n_phi)."""
        n, P = theta.shape
        s = self.R - theta[:, self.spec.pos_nuis].sum(axis=1)
        d = np.zeros((n, P, P))
        prn = self.spec.pos_rn
        d[:, prn, 0] = s
        for c, p in enumerate(self.keep):
            d[:, p, 1 + c] = 1.0
            d[:, prn, 1 + c] = -alpha * self.kappa[c] - self.numo[c]
        return d

    def model(self, alpha, phi, theta_hat, ell_hat, j, t3, t4):
        """``evaluate``'s output (with_alpha, G points per toy) from the quartic model of ln L about the best fit.

        ln L(theta_hat + delta) ~ ln L_hat - J[delta^2] / 2 + T[delta^3] / 3 - Q[delta^4] / 4 (the series of
        sum_i ln(1 + delta.u_i); the gradient at the best fit is 0 to its tolerance; J: -Hessian with the
        penalties, T and Q: ``_Theta.evaluate``'s third- and fourth-order sums), taken to (alpha, phi) by the
        chain rule (theta_rn = alpha S - sum_numo phi: its only second derivative is d2 theta_rn / d alpha
        d phi_p = -kappa_p). No pass over the events; for a first Newton step only. ``alpha`` (G, n), ``phi``
        (G, n, k); the results come flattened as ``evaluate``'s."""
        spec = self.spec
        P, prn, k = spec.P, spec.pos_rn, self.keep.size
        zero = np.zeros_like(alpha)
        s = self.R[None, :] - sum((phi[..., c] for c in range(k) if self.kappa[c]), zero)
        th = [None] * P
        for c, p in enumerate(self.keep):
            th[p] = phi[..., c]
        th[prn] = alpha * s - sum((phi[..., c] for c in range(k) if self.numo[c]), zero)
        dl = [th[p] - theta_hat[None, :, p] for p in range(P)]
        # the model's gradient g and Hessian h (component loops on (G, n) arrays: P is small); per pair p <= q
        # td = T[delta]_pq, qdd = Q[delta^2]_pq, then g = (-J + td - qdd) delta, h = -J + 2 td - 3 qdd
        g = [zero.copy() for _ in range(P)]
        h = [[None] * P for _ in range(P)]
        ell = ell_hat[None, :] + zero
        for p in range(P):
            for q in range(p, P):
                jq = j[None, :, p, q]
                td = sum(t3[None, :, p, q, r] * dl[r] for r in range(P))
                qdd = sum(t4[None, :, p, q, r, w] * dl[r] * dl[w] for r in range(P) for w in range(P))
                h[p][q] = h[q][p] = 2.0 * td - 3.0 * qdd - jq
                for a_, b_ in ((p, q), (q, p)) if p != q else ((p, q),):
                    g[a_] += (td - qdd - jq) * dl[b_]
                    # ln L - ln L_hat = sum_ab delta_a (-J / 2 + td / 3 - qdd / 4)_ab delta_b
                    ell += (td / 3.0 - 0.25 * qdd - 0.5 * jq) * dl[a_] * dl[b_]
        kap = self.kappa.astype(float)
        b = [-alpha * kap[c] - float(self.numo[c]) for c in range(k)]
        ga = g[prn] * s
        haa = s * s * h[prn][prn]
        gp, hap, hpp = (np.empty(alpha.shape + (k,)), np.empty(alpha.shape + (k,)), np.empty(alpha.shape + (k, k)))
        for c, p in enumerate(self.keep):
            gp[..., c] = g[p] + b[c] * g[prn]
            hap[..., c] = s * (h[prn][p] + b[c] * h[prn][prn]) - kap[c] * g[prn]
            for e, q in enumerate(self.keep):
                hpp[..., c, e] = h[p][q] + b[c] * h[prn][q] + b[e] * h[p][prn] + b[c] * b[e] * h[prn][prn]

        def flat(a):
            return np.broadcast_to(a, alpha.shape + a.shape[2:]).reshape((alpha.size,) + a.shape[2:])

        return {"ell": flat(ell), "s": flat(s), "ga": flat(ga), "haa": flat(haa), "hap": flat(hap), "gp": flat(gp),
                "hpp": flat(hpp)}

    def evaluate(self, alpha, phi, idx=None, *, with_alpha=True, low=False):
        """ln L, d/d alpha, d/d phi, d2/d alpha2, d2/d alpha d phi, d2/d phi2 (second derivatives, not negated).

        ``alpha`` (G, n) and ``phi`` (G, n, k) with idx None: G points per toy (e.g. both interval ends
        and the LR point), evaluated chunk by chunk with each chunk's event arrays read once for all G;
        the results come flattened, point g of toy i at g n + i. ``low``: the per-event sums in float32
        (where the copies exist; for a first Newton step only).
        """
        R = self.R if idx is None else self.R[idx]
        if alpha.ndim == 2:
            n_g = alpha.shape[0]
            alpha, phi = alpha.reshape(-1), phi.reshape(alpha.size, phi.shape[2])
            s = np.tile(R, n_g) - _rsum(phi[:, self.kappa])
        else:
            n_g = 1
            s = R - _rsum(phi[:, self.kappa])
        n_t = R.size
        n, k = alpha.size, len(self.E)
        a_s = alpha * s
        b_all, y_all, e_all, ones, a_c, p_c = self.base, self.y, self.E, self.ones, a_s, phi
        if low and self.low is not None:
            (b_all, y_all, e_all), ones = self.low, self.ones.astype(np.float32)
            a_c, p_c = a_s.astype(np.float32), phi.astype(np.float32)
        ell, sv, svv = np.empty(n), np.empty(n), np.empty(n)
        sw, svw, sww = np.empty((n, k)), np.empty((n, k)), np.empty((n, k, k))
        step = max(1, _CACHE_EVENTS // max(self.base.shape[1], 1))
        for s0 in range(0, n_t, step):  # per-event sums, chunk by chunk (cache)
            sl = slice(s0, min(n_t, s0 + step))
            src = sl if idx is None else idx[sl]
            y, E, base = y_all[src], [e[src] for e in e_all], b_all[src]
            for gi in range(n_g):
                pt = slice(gi * n_t + sl.start, gi * n_t + sl.stop)
                m = base + a_c[pt, None] * y
                for p in range(k):
                    m += p_c[pt, p, None] * E[p]
                with np.errstate(divide="ignore", invalid="ignore"):
                    ell[pt] = np.log(m) @ ones
                    r = np.divide(1.0, m, out=m)
                if not np.all(np.isfinite(ell[pt])):  # off the domain: derivatives are garbage (ell = -inf marks it)
                    r[~np.isfinite(r) | (r < 0)] = 0.0
                v = y * r
                w = [e * r for e in E]
                sv[pt] = v @ ones
                svv[pt] = np.einsum("ij,ij->i", v, v)
                for p in range(k):
                    sw[pt, p] = w[p] @ ones
                    svw[pt, p] = np.einsum("ij,ij->i", v, w[p])
                    for q in range(p, k):
                        sww[pt, p, q] = sww[pt, q, p] = np.einsum("ij,ij->i", w[p], w[q])
        if n_g > 1:
            idx = np.tile(np.arange(n_t) if idx is None else idx, n_g)
        ell = np.where(np.isfinite(ell), ell, -np.inf)
        sel = (lambda a: a) if idx is None else (lambda a: a[idx])
        kap = self.kappa.astype(float)
        ak = alpha[:, None] * kap[None, :]  # alpha kappa_p
        out = {"ell": ell, "s": s}
        if with_alpha:
            out["ga"] = s * sv
            out["haa"] = -s * s * svv
            suv = svw - ak * svv[:, None]  # sum v u_p
            out["hap"] = -s[:, None] * suv - kap[None, :] * sv[:, None]
        gp = sw - ak * sv[:, None]
        # sum u_p u_q with u_p = w_p - alpha kappa_p v
        hpp = -(sww - ak[:, :, None] * svw[:, None, :] - ak[:, None, :] * svw[:, :, None]
                + (ak[:, :, None] * ak[:, None, :]) * svv[:, None, None])
        if self.pen.size:
            c, iw2 = sel(self.centre), sel(self.iw2)
            dev = phi[:, self.pen] - c
            out["ell"] = ell - 0.5 * np.sum(dev * dev * iw2, axis=1)
            gp[:, self.pen] -= dev * iw2
            hpp[:, self.pen, self.pen] -= iw2
        out["gp"], out["hpp"] = gp, hpp
        return out


def _fast_profile(ph: _Phi, alpha_hat, theta_hat, ell_hat, q, lim, alpha_at, *, tol, max_iter=10, use=None,
                  quartic=None):
    """Both interval ends and ln L_profile(alpha_at) by Newton from the quadratic approximation, all toys together.

    Three points per toy, evaluated in the same passes over the events (``_Phi.evaluate`` with G = 3):
    the ends (side -1, +1) by Newton on (ln L(alpha, phi) = ln L_hat - 1/2, d ln L / d phi = 0) from
    (alpha_hat + side sigma, phi on the tangent of the profile), and the profile at alpha_at (NaN: not
    wanted) by Newton in phi from the tangent. A point is accepted only if every iterate stays inside the
    domain (events, S > 0, the rows of ``ph.th`` > 0; the ends also beyond alpha_hat and before ``lim``
    (n, 2)) and the step falls below tol: such a point is the maximum over phi of the concave slice (no
    constraint binds), i.e. the profile crossing or value. Returns (value (3, n), ok (3, n), theta (3, n, P)):
    the lower end, the upper end, and ln L_profile(alpha_at). ``use``: the toys to solve (default all).
    ``quartic``: (J, T, Q) in theta per toy (``_Phi.model``): the first Newton step then comes from the quartic
    model of ln L about the best fit instead of a pass over the events (T = Q = 0: the quadratic model, whose
    step is 0; those toys take one pass more).
    """
    n = alpha_hat.size
    k = ph.keep.size
    tang = -_solve_small(q[:, 1:, 1:], q[:, 1:, 0]) if k else np.zeros((n, 0))
    # sigma^2 = (q^-1)_00 = 1 / (q_00 - q_0p q_pp^-1 q_p0)
    sigma = 1.0 / np.sqrt(q[:, 0, 0] + np.einsum("np,np->n", q[:, 0, 1:], tang))
    phi_hat = ph.phi(theta_hat)
    want = np.isfinite(alpha_at)
    at = np.where(want, alpha_at, alpha_hat)
    side = np.repeat([-1.0, 1.0, 0.0], n)
    cross = side != 0
    alpha = np.concatenate([alpha_hat - sigma, alpha_hat + sigma, at])
    phi = np.concatenate([phi_hat - sigma[:, None] * tang, phi_hat + sigma[:, None] * tang,
                          phi_hat + (at - alpha_hat)[:, None] * tang])
    toy, grp = np.tile(np.arange(n), 3), np.repeat(np.arange(3), n)
    a_hat, ref = alpha_hat[toy], (ell_hat - 0.5)[toy]
    bound = np.concatenate([lim[:, 0], lim[:, 1], np.zeros(n)])
    val = np.full(3 * n, np.nan)
    ok = np.zeros(3 * n, bool)
    th_end = np.full((3 * n, ph.spec.P), np.nan)
    use = np.ones(n, bool) if use is None else use  # toys not in use ride along, never live
    live = np.concatenate([use, use, want & use])
    whole = np.ones(3, bool)  # per point group: all its toys evaluated (finished ones ride along) until < half live
    for it in range(max_iter):
        # with the quartic start (pass 0 from the model, ~1e-3 sigma), pass 1 in float32 and pass 2, the first in
        # float64, starts ~1e-6 sigma from the solution and accepts nearly every point; without it, pass 0 in
        # float32. Nothing is accepted on a float32 or model pass (their steps are corrected by the next ones).
        low = (it <= 1 if quartic is not None else it == 0) and ph.low is not None
        model = it == 0 and quartic is not None
        whole &= live.reshape(3, n).sum(axis=1) >= 0.5 * n
        gw = np.flatnonzero(whole)
        rest = np.flatnonzero(live & ~whole[grp])  # the live points of the other groups, gathered
        pi = np.concatenate([np.flatnonzero(whole[grp]), rest])
        parts = []
        if model:  # all points (those not live ride along)
            pi = np.arange(3 * n)
            parts.append(ph.model(alpha.reshape(3, n), phi.reshape(3, n, k), theta_hat, ell_hat, *quartic))
        elif gw.size:
            parts.append(ph.evaluate(alpha.reshape(3, n)[gw], phi.reshape(3, n, k)[gw], low=low))
        if rest.size and not model:
            parts.append(ph.evaluate(alpha[rest], phi[rest], toy[rest], low=low))
        ev = parts[0] if len(parts) == 1 else {key: np.concatenate([p_[key] for p_ in parts]) for key in parts[0]}
        cr = cross[pi]
        d = np.zeros((pi.size, k + 1))
        ci = np.flatnonzero(cr)
        if ci.size:  # the ends: (d ln L / d phi, ln L - ref) = 0 in (alpha, phi)
            jac = np.zeros((ci.size, k + 1, k + 1))
            jac[:, :k, 0] = ev["hap"][ci]
            jac[:, :k, 1:] = ev["hpp"][ci]
            jac[:, k, 0] = ev["ga"][ci]
            jac[:, k, 1:] = ev["gp"][ci]
            rhs = -np.concatenate([ev["gp"][ci], (ev["ell"][ci] - ref[pi[ci]])[:, None]], axis=1)
            d[ci] = _solve_small(jac, rhs)
        fi = np.flatnonzero(~cr)
        if fi.size and k:  # the profile point: d ln L / d phi = 0 at fixed alpha
            d[fi, 1:] = -_solve_small(ev["hpp"][fi], ev["gp"][fi])
        a_new, p_new = alpha[pi] + d[:, 0], phi[pi] + d[:, 1:]
        with np.errstate(invalid="ignore", over="ignore"):
            th = ph.theta(a_new, p_new, toy[pi])
        rows = ph.th.rows(th, toy[pi])
        sd = side[pi]
        with np.errstate(invalid="ignore"):
            feasible = (np.isfinite(ev["ell"]) & (ev["s"] > 0) & _rfinite(d)
                        & (_rmin(rows) > 0)
                        & (~cr | ((sd * (a_new - a_hat[pi]) > 0) & (sd * (a_new - bound[pi]) < 0))))
            # eta bounds max_i |d m_i / m_i| over the step; the error the step leaves is O(eta |step|)
            eta = np.abs(d[:, 0]) * np.sqrt(np.abs(ev["haa"])) + np.einsum(
                "np,np->n", np.abs(d[:, 1:]), np.sqrt(np.abs(np.einsum("npp->np", ev["hpp"]))))
            size = np.maximum(np.abs(d[:, 0]) / (1 + np.abs(a_new)),
                              _rmax(np.abs(d[:, 1:]), 0.0) / (1 + _rmax(np.abs(p_new), 0.0)))
            small = ((size <= tol) | ((size <= 1e-3) & (eta < 0.1) & (eta * size <= 0.1 * tol))) & (not (low or model))
        lv = live[pi]
        alpha[pi[lv]], phi[pi[lv]] = a_new[lv], p_new[lv]
        fin = feasible & small & lv
        # the ends: the new alpha; the profile value: the last (tiny) step on the quadratic model, + g.d / 2
        val[pi[fin]] = np.where(cr[fin], a_new[fin],
                                ev["ell"][fin] + 0.5 * np.einsum("np,np->n", ev["gp"][fin], d[fin, 1:]))
        ok[pi[fin]] = True
        th_end[pi[fin]] = th[fin]
        live[pi] = lv & feasible & ~small
        if not live.any():
            break
    return val.reshape(3, n), ok.reshape(3, n), th_end.reshape(3, n, -1)


# --------------------------------------------------------------------------- nested (robust) profile path


def _robust_crossing(ts: _Theta, side, alpha_hat, theta_hat, ell_hat, sigma, lim, *, tol, max_iter, max_outer=100):
    """Interval ends by bracketed Newton on ln L_profile = ln L_hat - 1/2, in u = atan(alpha).

    Each profile point is a constrained solve in theta (``_solve`` with the alpha row), warm
    started from the previous one; its slope is d ln L_profile / d alpha = -nu S (envelope
    theorem, nu the multiplier of A - alpha S = 0). Working in u keeps the iteration smooth
    where the profile flattens as |alpha| -> inf (the slices tend to S = 0). The bracket runs
    from alpha_hat to the positivity limit ``lim``, which is tried once before any bisection
    towards it: if the profile there is still above the crossing, the end is the limit (clipped;
    an infinite limit is tried at |alpha| = _FAR and gives +-inf). A failed solve (a slice
    without a point in the domain) counts as below the crossing. Returns (end, clipped).
    """
    spec = ts.spec
    n = alpha_hat.size
    ref = ell_hat - 0.5
    end = np.full(n, np.nan)
    clipped = np.zeros(n, bool)
    fin_lim = np.isfinite(lim)
    lim0 = np.where(fin_lim, lim, 0.0)
    done = fin_lim & (np.abs(alpha_hat - lim0) <= tol * (1 + np.abs(lim0)))
    end[done], clipped[done] = lim[done], True
    u_lim = np.arctan(lim)  # +-pi/2 for an infinite limit
    x_in, x_out = np.arctan(alpha_hat), u_lim.copy()
    th_cur = theta_hat.copy()
    with np.errstate(invalid="ignore"):
        u0 = np.arctan(alpha_hat + side * sigma)
        first = np.isfinite(sigma) & (sigma > 0) & (side * (u0 - u_lim) < 0)
    target = np.where(first, u0, u_lim)  # no curvature (flat): try the limit first
    lim_tried = np.zeros(n, bool)
    for _ in range(max_outer):
        ia = np.flatnonzero(~done)
        if ia.size == 0:
            break
        ut = target[ia]
        at_lim = ut == u_lim[ia]
        a_t = np.where(at_lim, np.where(fin_lim[ia], lim0[ia], side * _FAR), np.tan(ut))
        # warm start off the new slice: empty active set (the ratio test re-finds the rows that bind)
        res = _solve(ts.take(ia), th_cur[ia], -np.ones((ia.size, spec.P), int), a_t, tol=tol, max_iter=max_iter)
        ok = res["converged"] & np.isfinite(res["ell"])
        ell_t = np.where(ok, res["ell"], -np.inf)
        _, s_t = spec.alpha_of(res["theta"], ts.R[ia])
        slope = np.where(ok, -res["nu"] * s_t * (1.0 + a_t * a_t), np.nan)  # d ln L_profile / d u
        inside = ell_t >= ref[ia]
        lim_tried[ia] |= at_lim
        clip = inside & at_lim
        end[ia[clip]] = np.where(fin_lim[ia[clip]], lim[ia[clip]], side * np.inf)
        clipped[ia[clip]], done[ia[clip]] = True, True
        x_in[ia] = np.where(inside, ut, x_in[ia])
        x_out[ia] = np.where(~inside, ut, x_out[ia])
        th_cur[ia[ok]] = res["theta"][ok]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            u_new = ut + (ref[ia] - ell_t) / slope
            good = ok & np.isfinite(u_new) & (side * slope < 0)
            jac = 1.0 + a_t * a_t  # d alpha / d u
            conv = good & (jac * np.abs(u_new - ut) <= tol * (1 + np.abs(a_t))) & ~clip
        lo_b, hi_b = np.minimum(x_in[ia], x_out[ia]), np.maximum(x_in[ia], x_out[ia])
        mid = 0.5 * (lo_b + hi_b)
        with np.errstate(over="ignore", invalid="ignore"):
            narrow = ((1.0 + np.tan(mid) ** 2) * (hi_b - lo_b) <= tol * (1 + np.abs(np.tan(mid)))) & ~clip & ~conv
        end[ia[conv]] = np.tan(u_new[conv])
        end[ia[narrow]] = np.tan(mid[narrow])
        done[ia[conv | narrow]] = True
        # next targets: Newton inside the bracket, else the limit (once), else bisection in u
        inb = good & (u_new > lo_b) & (u_new < hi_b)
        try_lim = ~inb & ~lim_tried[ia] & (x_out[ia] == u_lim[ia])
        target[ia] = np.where(inb, u_new, np.where(try_lim, u_lim[ia], mid))
    return end, clipped


# --------------------------------------------------------------------------- one block of toys


def _theta_set(spec: _Spec, d, mask, sup, floor, with_low=False):
    """_Theta for the toys of d (n, N, K); pads contribute nothing (base 1, columns 0). ``with_low``: with float32
    copies of the per-event arrays (the first Newton passes)."""
    n, N, K = d.shape
    if floor is not None:
        low = np.max(d, axis=2) < floor  # no component has density here: floored (warned by the caller)
        if low.any():
            d = np.where(low[..., None], floor, d)
    base = np.empty((n, N))
    cols = np.empty((spec.P, n, N))
    # float32 copies written while each chunk is in cache (with a mask: after the pads are set)
    low32 = (np.empty((n, N), np.float32), np.empty((spec.P, n, N), np.float32)) if with_low and mask is None else None
    step = max(1, (1 << 14) // max(N, 1))  # toys per chunk: the strided reads of d hit the cache
    for s0 in range(0, n, step):
        sl = slice(s0, min(n, s0 + step))
        dc = d[sl]
        dr = dc[..., spec.rd]
        np.multiply(spec.R[sl, None], dr, out=base[sl])
        if spec.fixed.size:
            base[sl] += np.einsum("tnk,tk->tn", dc[..., spec.fixed], spec.t[sl])
        if low32 is not None:
            low32[0][sl] = base[sl]
        for p, k in enumerate(spec.free):
            np.subtract(dc[..., k], dr, out=cols[p, sl])
            if low32 is not None:
                low32[1][p, sl] = cols[p, sl]
    if mask is not None:
        base = np.where(mask, base, 1.0)
        cols *= mask[None]
        if with_low:
            low32 = (base.astype(np.float32), cols.astype(np.float32))
    rows = None
    if sup is not None:  # the rows in theta; kept with the (cached) support, so their screening blocks are reused
        key = (id(sup), tuple(spec.free), spec.rd, tuple(spec.fixed))
        hit = _ROWS_CACHE.get(key)
        if hit is None or hit[0] is not sup:
            _ROWS_CACHE.clear()
            hit = _ROWS_CACHE[key] = (sup, (sup[:, spec.free] - sup[:, [spec.rd]], sup[:, spec.rd].copy(),
                                            sup[:, spec.fixed]))
        rows = hit[1]
    return _Theta(spec, base, cols, spec.R, spec.t, rows, spec.centre, 1.0 / spec.width**2, low=low32)


def _fit_block(spec: _Spec, d, mask, sup, limits, floor, tol, max_iter, low=False):
    n = d.shape[0]
    ts = _theta_set(spec, d, mask, sup, floor, low)
    P = spec.P
    # start: the true fractions pulled 5 % towards equal shares of the free ones (strictly inside)
    n_free = spec.P + 1
    f_eq = np.zeros((n, spec.K))
    f_eq[:, np.r_[spec.free, spec.rd]] = (spec.R / n_free)[:, None]
    f_eq[:, spec.fixed] = spec.t
    theta0 = (0.95 * spec.f_true + 0.05 * f_eq)[:, spec.free]
    ev0 = ts.evaluate(theta0, low=True)  # float32 where available: only the fast path's first step uses it
    bad = np.flatnonzero(~np.isfinite(ev0[0]))
    if bad.size:
        theta0[bad] = f_eq[bad][:, spec.free]
        for a, b in zip(ev0, ts.evaluate(theta0[bad], bad)):
            a[bad] = b
    impossible = ~np.isfinite(ev0[0])  # every event density 0 whatever the free fractions
    res = dict(theta=np.full((n, P), np.nan), W=-np.ones((n, P), int), ell=np.full(n, -np.inf),
               g=np.zeros((n, P)), j=np.zeros((n, P, P)), converged=np.zeros(n, bool), n_iter=np.zeros(n, np.int64))
    model = P <= _MODEL_MAX_P
    t3 = (np.zeros((n, P, P, P)), np.zeros((n, P, P, P, P))) if model else None  # 3rd/4th-order sums (0: none)

    def fit(tset, rows_idx, fast=False):
        sub = tset if rows_idx.size == n else tset.take(rows_idx)
        st = [a[rows_idx] for a in ev0]
        if fast:  # plain Newton first; the toys it cannot finish go through the active-set solve
            r, ok = _free_newton(sub, theta0[rows_idx], st, tol=tol, max_iter=max_iter, hess_rtol=1e-6,
                                 start_low=ts.low is not None)
            for key in res:
                res[key][rows_idx[ok]] = r[key][ok]
            if model:
                t3[0][rows_idx[ok]], t3[1][rows_idx[ok]] = r["T"][0][ok], r["T"][1][ok]
            if ok.all():
                return
            rest = np.flatnonzero(~ok)
            sub, rows_idx = sub.take(rest), rows_idx[rest]
            st = [a[rest] for a in st]  # the start of the toys left (replaced below when it was float32)
        if ts.low is not None:  # the start in float64
            st = list(sub.evaluate(theta0[rows_idx]))
        r = _solve(sub, theta0[rows_idx], -np.ones((rows_idx.size, P), int), tol=tol, max_iter=max_iter,
                   hess_rtol=1e-6, start=st)
        for key in res:
            res[key][rows_idx] = r[key]
        if model:
            t3[0][rows_idx], t3[1][rows_idx] = 0.0, 0.0

    todo = np.flatnonzero(~impossible)
    if todo.size and ts.sup is not None:
        # first without the support rows (cheap); toys whose optimum violates one are refitted with all
        fit(ts.no_support(), todo, fast=True)
        smin = ts.support_min(res["theta"]) if todo.size == n else ts.take(todo).support_min(res["theta"][todo])
        viol = ~res["converged"][todo] | ~(smin >= 0)
        smin_hat = np.full(n, -np.inf)
        smin_hat[todo] = smin
        n_first = res["n_iter"][todo].copy()
        todo = todo[viol]
        if todo.size:
            fit(ts, todo)
            res["n_iter"][todo] += n_first[viol]
            smin_hat[todo] = -np.inf  # refitted with the rows: W tells whether they bind
    elif todo.size:
        fit(ts, todo, fast=True)
        smin_hat = np.full(n, np.inf)
    else:
        smin_hat = np.full(n, -np.inf)
    theta, W, ell, j = res["theta"], res["W"], res["ell"], res["j"]
    converged = res["converged"]
    alpha, s = spec.alpha_of(theta, spec.R)
    no_signal = converged & (s <= 1e-12 * spec.R)
    alpha = np.where(no_signal | ~converged & ~np.isfinite(alpha), np.nan, alpha)
    jf = np.where(np.isfinite(j), j, 0.0)
    if P == 2:  # closed form: largest eigenvalue, and the smallest as det / largest (no cancellation)
        tr2, dif2 = 0.5 * (jf[:, 0, 0] + jf[:, 1, 1]), 0.5 * (jf[:, 0, 0] - jf[:, 1, 1])
        off = 0.5 * (jf[:, 0, 1] + jf[:, 1, 0])
        ev_hi = tr2 + np.hypot(dif2, off)
        det = jf[:, 0, 0] * jf[:, 1, 1] - off * off
        ev_lo = np.where(ev_hi > 0, det / np.where(ev_hi > 0, ev_hi, 1.0), tr2 - np.hypot(dif2, off))
    else:
        ev = np.linalg.eigvalsh(jf)
        ev_lo, ev_hi = ev[:, 0], ev[:, -1]
    flat = (ev_lo <= _FLAT_RTOL * np.maximum(ev_hi, 1e-300)) | no_signal
    # sigma^2 = g^T J^-1 g (delta method; inf on flat toys, where J has no inverse)
    ga = spec.alpha_grad(np.where(np.isfinite(theta), theta, 0.0), spec.R)
    jf[flat] = np.eye(P)
    sigma = np.sqrt(np.einsum("np,np->n", ga, _solve_small(jf, ga)))
    sigma = np.where(flat, np.inf, sigma)
    sigma = np.where(np.isfinite(alpha), sigma, np.nan)
    at_limit = converged & (W >= 0).any(axis=1)
    lim_lo, lim_hi = limits[:, 0], limits[:, 1]

    lo = np.full(n, np.nan)
    hi = np.full(n, np.nan)
    clipped = np.zeros(n, bool)
    lr = np.full(n, np.nan)
    at = spec.alpha_true
    outside = (at < lim_lo) | (at > lim_hi)
    # no signal at the best fit: every slice holds it, the profile is flat at ln L_hat
    lo[no_signal], hi[no_signal], clipped[no_signal], lr[no_signal] = lim_lo[no_signal], lim_hi[no_signal], True, 0.0
    good = converged & ~no_signal & np.isfinite(alpha)
    # fast path: best fit strictly inside every constraint, non-singular Hessian
    th0 = np.where(np.isfinite(theta), theta, 0.0)
    margin = np.minimum(smin_hat, ts.no_support().rows(th0).min(axis=1, initial=np.inf))
    inner = good & ~at_limit & ~flat & (margin > 0) & np.isfinite(sigma)
    todo_lo, todo_hi, todo_lr = good.copy(), good.copy(), good & ~outside
    lr[good & outside] = np.inf
    if inner.any():
        # all toys of the block ride along (their event arrays are not copied); only the inner ones are live
        fi = np.flatnonzero(inner) if inner.sum() < 0.5 * n else np.arange(n)
        use = inner[fi]
        sub = ts if fi.size == n else ts.take(fi)
        ph = _Phi(spec, sub.no_support())  # support rows are checked at the results only
        a_f = np.where(use, alpha[fi], 0.0)
        th_f = th0[fi]
        dj = ph.jacobian(a_f, th_f)
        j_f = np.where(use[:, None, None], j[fi], np.eye(P))
        q = np.matmul(dj.transpose(0, 2, 1), np.matmul(j_f, dj))
        q[~use] = np.eye(P)
        lim_f = np.where(use[:, None], limits[fi], 0.0)
        a_at = np.where(use & todo_lr[fi], at[fi], np.nan)
        val, ok, th_e = _fast_profile(ph, a_f, th_f, np.where(use, ell[fi], 0.0), q, lim_f, a_at, tol=tol,
                                      use=use, quartic=None if not model else (
                                          j_f, *(t_[fi] if use.all() else np.where(
                                              use.reshape((-1,) + (1,) * (t_.ndim - 1)), t_[fi], 0.0) for t_ in t3)))
        ok &= (sub.support_min(np.where(ok[..., None], th_e, th_f[None]).reshape(-1, P), idx=np.tile(
            np.arange(fi.size), 3)) > 0).reshape(3, -1)
        for g_, out, todo in ((0, lo, todo_lo), (1, hi, todo_hi)):
            out[fi[ok[g_]]] = val[g_][ok[g_]]
            todo[fi[ok[g_]]] = False
        fl = fi[ok[2]]
        lr[fl] = np.maximum(2.0 * (ell[fl] - val[2][ok[2]]), 0.0)
        todo_lr[fl] = False
    # nested path for the rest
    for side, out, todo, lim in ((-1, lo, todo_lo, lim_lo), (1, hi, todo_hi, lim_hi)):
        if todo.any():
            ri = np.flatnonzero(todo)
            sub = ts.take(ri)
            e, c = _robust_crossing(sub, side, alpha[ri], theta[ri], ell[ri], sigma[ri], lim[ri], tol=tol,
                                    max_iter=max_iter)
            out[ri], clipped[ri] = e, clipped[ri] | c
    if todo_lr.any():
        ri = np.flatnonzero(todo_lr)
        sub = ts.take(ri)
        # start on the slice: the true fractions where they lie inside the domain, else the best fit
        th_true = spec.f_true[ri][:, spec.free]
        e_true = sub.evaluate(th_true, need_hess=False)[0]
        start = np.where(np.isfinite(e_true)[:, None], th_true, theta[ri])
        r = _solve(sub, start, -np.ones_like(W[ri]), at[ri], tol=tol, max_iter=max_iter)
        okr = r["converged"] & np.isfinite(r["ell"])
        lr[ri] = np.where(okr, np.maximum(2.0 * (ell[ri] - r["ell"]), 0.0), np.nan)
    fr = spec.fractions(theta)
    return dict(alpha_hat=alpha, fractions=fr, sigma_hat=sigma, interval_lo=lo, interval_hi=hi,
                interval_clipped=clipped, lr_stat=lr, converged=converged, at_limit=at_limit, flat=flat,
                n_iter=res["n_iter"])


# --------------------------------------------------------------------------- one free parameter


def _fit_one_parameter(d, mask, spec: _Spec, support_raw, n_events, density_floor, tol, max_iter) -> FractionFit:
    """alpha alone is free: m = R (alpha p_a + (1 - alpha) p_h) with p_a = p_rn + c, p_h = p_rd + c,
    c = sum_fixed (t_k / R) p_k; the constant R drops out, so this is ``fit_mixture``'s problem."""
    rn, rd = spec.rn, spec.rd
    n = d.shape[0]
    if spec.fixed.size:
        c = spec.t / spec.R[:, None]
        extra = np.einsum("tnk,tk->tn", d[..., spec.fixed], c)
        p_a, p_h = d[..., rn] + extra, d[..., rd] + extra
    else:
        c = np.zeros((n, 0))
        p_a, p_h = d[..., rn], d[..., rd]
    lim_lo, lim_hi = np.full(n, -np.inf), np.full(n, np.inf)
    if support_raw is not None:
        # the ratio range over the nodes, as the templates' positivity_limits() (same arithmetic)
        rows, inv = np.unique(c, axis=0, return_inverse=True)
        for u, cu in enumerate(rows):
            sa = support_raw[:, rn] + support_raw[:, spec.fixed] @ cu if cu.size else support_raw[:, rn]
            sh = support_raw[:, rd] + support_raw[:, spec.fixed] @ cu if cu.size else support_raw[:, rd]
            keep = (sa > 0) | (sh > 0)
            if not keep.any():
                raise ValueError("support has no node where the fitted components have density > 0")
            with np.errstate(divide="ignore"):
                r = sa[keep] / sh[keep]
            lo, hi = limits_from_ratio_range(float(r.min()), float(r.max()))
            sel = inv.ravel() == u
            lim_lo[sel], lim_hi[sel] = lo, hi
    limits = (lim_lo, lim_hi) if support_raw is not None else (-np.inf, np.inf)
    fit = fit_mixture(p_a, p_h, mask=mask, alpha_true=spec.alpha_true, alpha_limits=limits,
                      density_floor=density_floor, tol=tol, max_iter=max_iter)
    f = np.zeros((n, spec.K))
    with np.errstate(invalid="ignore"):
        f[:, rn] = fit.alpha_hat * spec.R
        f[:, rd] = (1.0 - fit.alpha_hat) * spec.R
    f[:, spec.fixed] = spec.t
    return FractionFit(alpha_hat=fit.alpha_hat, fractions=f, sigma_hat=fit.sigma_hat, interval_lo=fit.interval_lo,
                       interval_hi=fit.interval_hi, interval_clipped=fit.interval_clipped, lr_stat=fit.lr_stat,
                       converged=fit.converged, at_limit=fit.at_limit, flat=np.isnan(fit.alpha_hat),
                       n_events=n_events, n_iter=fit.n_iter, alpha_limits=np.column_stack([lim_lo, lim_hi]))


# --------------------------------------------------------------------------- public API


def fit_fractions(
    densities,
    *,
    num,
    den,
    f_true,
    treatment=None,
    widths=None,
    centres=None,
    support=None,
    mask=None,
    density_floor: float = 1e-12,
    tol: float = 1e-9,
    max_iter: int = 200,
    block_size: int = 1 << 20,
    _force_multi: bool = False,
) -> FractionFit:
    """Fit the K fractions of p = sum_k f_k p_k and alpha = sum_num f / sum_den f for every toy at once.

    densities: per-event component densities (or ratios p_k / p_ref), shape (n_toys, n_max, K)
    ((n_max, K): one toy); mask: True for real events (pads False). num, den: component indices,
    num a proper subset of den (flagship: num=[A], den=[A, H]). f_true: true fractions, (K,) or
    (n_toys, K), summing to 1: the values of fixed nuisances, the default constraint centres, and
    alpha_true for ``lr_stat``. treatment: {k: "fixed" | "floated" | "constrained"} for every
    component outside den; widths: {k: width} (scalar or per toy) of the constrained ones, whose
    penalty is -(f_k - centre_k)^2 / (2 width^2); centres: {k: centre} (default the true fraction;
    draw it per toy around the truth in toy studies, or the constraint acts as exact knowledge).
    support: (n_nodes, K) component densities at the template support (grid nodes, or the template
    events' ratio vectors); positivity requires support @ f >= 0. Without it only the toys' own
    events must keep a positive density and the fractions are otherwise unbounded. Events where
    every density is below ``density_floor`` x the largest are floored (one ZeroDensityWarning).
    ``block_size``: events per block of toys (memory). Results are good to ``tol``.
    With one free parameter the problem is ``fit_mixture``'s and is solved by it (its flooring
    rule then applies: each density is floored); ``_force_multi`` (tests) takes the K-fraction path.
    """
    d, mask, n_events, ext = _validate_densities(densities, mask)
    n, n_max, K = d.shape
    spec = _build_spec(K, n, num, den, f_true, treatment, widths, centres)
    if not (tol > 0 and max_iter >= 1):
        raise ValueError("tol must be > 0 and max_iter >= 1")
    try:
        floor_ok = not isinstance(density_floor, (bool, np.bool_)) and bool(np.isfinite(float(density_floor))
                                                                            and float(density_floor) >= 0)
    except (TypeError, ValueError):
        floor_ok = False
    if not floor_ok:
        raise ValueError(f"density_floor must be a finite number >= 0 (a fraction of the largest density; "
                         f"the default is 1e-12), got {density_floor!r}")
    density_floor = float(density_floor)
    sup, sup_key = _prepare_support(support, K)
    if spec.P == 1 and not _force_multi:
        support_raw = None if support is None else np.asarray(support, dtype=float)
        return _fit_one_parameter(d, mask, spec, support_raw, n_events, density_floor, tol, max_iter)

    # positivity limits of alpha: one LP pair per distinct set of fixed fractions
    limits = np.tile([-np.inf, np.inf], (n, 1))
    if sup is not None:
        key = np.column_stack([spec.t, spec.R])
        if np.all(key == key[0]):  # one set of fixed fractions (the common case): no sort
            rows, inv = key[:1], np.zeros(n, np.int64)
        else:
            rows, inv = np.unique(key, axis=0, return_inverse=True)
        for u, row in enumerate(rows):
            lkey = (sup_key, tuple(spec.num), tuple(spec.den), tuple(spec.fixed), tuple(row))
            lim = _LIMITS_CACHE.get(lkey)  # one lookup: another thread may clear the cache in between
            if lim is None:
                if len(_LIMITS_CACHE) >= 256:
                    _LIMITS_CACHE.clear()
                lim = _LIMITS_CACHE[lkey] = _alpha_limits_lp(sup, spec, row[:-1], row[-1])
            limits[inv.ravel() == u] = lim

    floor = density_floor * ext[1]
    n_low = 0
    if ext[0] < floor:  # some density is below the floor: count the events where every one is
        cand = np.flatnonzero(d.reshape(-1, K)[:, 0] < floor)  # every density low: the first is
        dc = d.reshape(-1, K)[cand]
        low_c = dc.max(axis=1) < floor
        if mask is not None:
            low_c &= mask.reshape(-1)[cand]
        n_low = int(low_c.sum())
    if n_low:
        warnings.warn(f"{n_low} event(s) where every component density is below {floor:.3g}; floored to keep "
                      "the likelihood finite - check the template support", ZeroDensityWarning, stacklevel=2)
    block = max(1, int(block_size) // max(n_max, 1))
    # float32 for the first Newton passes where every event density is safely inside its range
    low = bool(ext[1] < 1e30 and density_floor * ext[1] > 1e-30)
    parts = []
    for s0 in range(0, n, block):
        sl = slice(s0, min(n, s0 + block))
        sub_spec = _Spec(**{f.name: (getattr(spec, f.name)[sl] if f.name in _PER_TOY else getattr(spec, f.name))
                            for f in fields(spec)})
        # non-finite intermediates are handled explicitly (ln L = -inf off the domain, failed solves)
        with np.errstate(all="ignore"):
            parts.append(_fit_block(sub_spec, d[sl], None if mask is None else mask[sl], sup, limits[sl],
                                    floor if n_low else None, tol, max_iter, low))
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return FractionFit(n_events=n_events, alpha_limits=limits, **out)


_PER_TOY = ("f_true", "t", "R", "alpha_true", "width", "centre")


def fraction_log_likelihood(densities, fractions, *, mask=None) -> np.ndarray:
    """ln L = sum_i ln(sum_k f_k p_ik) per toy at the given fractions ((K,) or (n_toys, K)); -inf off the domain."""
    d, mask, _, _ = _validate_densities(densities, mask)
    f = np.broadcast_to(np.asarray(fractions, dtype=float), (d.shape[0], d.shape[2]))
    m = np.einsum("tnk,tk->tn", d, f)
    if mask is not None:
        m = np.where(mask, m, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(m).sum(axis=1)
    return np.where(np.isnan(out), -np.inf, out)
