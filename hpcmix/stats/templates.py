"""Template densities p_A(x), p_H(x) for the mixture fit, with their positivity limits on alpha.

* ``PhiStarTemplates``: the analytic phi* model p_A = c + a cos x, p_H = c - a cos x on [0, 2 pi).
* ``KDETemplates``: grid FFT kernel density estimates of the network output y in [0, 1],
  estimated in logit space (default) or with reflection at 0 and 1, with Abramson adaptive
  kernels (default, as RooKeysPdf) or one fixed bandwidth.
* ``AnalyticTemplates``: any two callables on an interval (tests, toy models).

The positivity rule (PHYSICS.md section 6): alpha is free except that
p(x|alpha) = p_H + alpha (p_A - p_H) must stay >= 0 on the template support.
With r = p_A / p_H that needs 1 + alpha (r - 1) >= 0 everywhere, so only the
range (r_min, r_max) of the ratio matters:
alpha_max = 1 / (1 - r_min) (if r_min < 1), alpha_min = 1 / (1 - r_max) (if r_max > 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import integrate, signal, special

from .cramer_rao import fisher_information_on_grid

__all__ = [
    "ADAPTIVE_CLASSES",
    "DEFAULT_ADAPTIVE",
    "DEFAULT_BANDWIDTH",
    "DEFAULT_GRID_SIZE",
    "DEFAULT_LOGIT_CLIP",
    "DEFAULT_POSITIVITY_GRID",
    "DEFAULT_POSITIVITY_QUANTILE",
    "DEFAULT_SPACE",
    "AnalyticTemplates",
    "KDETemplate",
    "KDETemplates",
    "MixtureTemplates",
    "PhiStarTemplates",
    "Template",
    "fit_phi_star_templates",
    "limits_from_ratio_range",
]

TWO_PI = 2.0 * np.pi

# Defaults of the template settings, equal to the package defaults in hpcmix.yaml (``templates:``).
# This module reads no global settings: callers pass a study's settings as keyword arguments.
DEFAULT_SPACE = "logit"            # logit | reflect
DEFAULT_BANDWIDTH = "silverman"    # a positive number (estimation-space units), scott or silverman
DEFAULT_ADAPTIVE = True            # Abramson adaptive kernels; False: one fixed bandwidth
DEFAULT_GRID_SIZE = 8192           # FFT grid nodes
DEFAULT_LOGIT_CLIP = 1e-7          # y is clipped to [clip, 1 - clip] before the logit
DEFAULT_POSITIVITY_GRID = 20001    # nodes for the positivity limits of AnalyticTemplates
DEFAULT_POSITIVITY_QUANTILE = 0.0  # KDE: apply p >= 0 between these quantiles of the template events


def _given(name: str, value):
    """``value``, refusing None: a setting left unset must not silently become a default here."""
    if value is None:
        raise TypeError(f"{name}=None: pass a value, or omit the argument for the package default "
                        "(hpcmix.stats reads no global settings)")
    return value


def limits_from_ratio_range(r_min: float, r_max: float) -> tuple[float, float]:
    """Positivity limits (alpha_min, alpha_max) from the range of p_A / p_H on the support."""
    alpha_max = 1.0 / (1.0 - r_min) if r_min < 1.0 else np.inf
    if r_max > 1.0:
        alpha_min = 0.0 if np.isinf(r_max) else 1.0 / (1.0 - r_max)
    else:
        alpha_min = -np.inf
    return float(alpha_min), float(alpha_max)


def _ratio_range(p_a: np.ndarray, p_h: np.ndarray) -> tuple[float, float]:
    """min and max of p_A / p_H over nodes where either density is positive (p_H = 0 -> inf)."""
    keep = (p_a > 0) | (p_h > 0)
    if not np.any(keep):
        raise ValueError("templates are zero on the whole support; cannot form positivity limits")
    with np.errstate(divide="ignore"):
        r = p_a[keep] / p_h[keep]
    return float(r.min()), float(r.max())


class Template:
    """One normalised density on a support (lo, hi): vectorised ``pdf`` and ``cdf``."""

    lo: float
    hi: float

    @property
    def support(self) -> tuple[float, float]:
        return (self.lo, self.hi)

    def pdf(self, x) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def cdf(self, x) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, x) -> np.ndarray:
        return self.pdf(x)


class MixtureTemplates:
    """A pair of templates p_A, p_H on a common support, with the positivity rule and I(alpha)."""

    template_a: Template
    template_h: Template

    @property
    def support(self) -> tuple[float, float]:
        return self.template_a.support

    def p_a(self, x) -> np.ndarray:
        return self.template_a.pdf(x)

    def p_h(self, x) -> np.ndarray:
        return self.template_h.pdf(x)

    def densities(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(p_A(x), p_H(x)): compute once per test event, then fit any number of toys."""
        return self.p_a(x), self.p_h(x)

    def pdf(self, x, alpha) -> np.ndarray:
        """Mixture density alpha p_A + (1 - alpha) p_H."""
        p_a, p_h = self.densities(x)
        return p_h + alpha * (p_a - p_h)

    @property
    def ratio_range(self) -> tuple[float, float]:
        """(min, max) of p_A / p_H on the support: all the positivity rule needs."""
        raise NotImplementedError  # pragma: no cover

    def positivity_limits(self) -> tuple[float, float]:
        """(alpha_min, alpha_max) keeping p(x|alpha) >= 0 on the whole support."""
        return limits_from_ratio_range(*self.ratio_range)

    def fisher_information(self, alpha) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover

    def cramer_rao_bound(self, alpha, n_events) -> np.ndarray:
        """1 / sqrt(N I(alpha)), the smallest possible spread of alpha_hat."""
        from .cramer_rao import cramer_rao_bound

        return cramer_rao_bound(self, alpha, n_events)

    def tabulate(self, n_points: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, p_A(x), p_H(x)) on ``n_points`` nodes of the support, for plots and storage."""
        lo, hi = self.support
        x = np.linspace(lo, hi, n_points)
        return (x, *self.densities(x))


# --------------------------------------------------------------------------- phi*


class _CosineTemplate(Template):
    def __init__(self, a: float, c: float):
        self.a, self.c, self.lo, self.hi = float(a), float(c), 0.0, TWO_PI

    def pdf(self, x):
        return self.c + self.a * np.cos(np.asarray(x, dtype=float))

    def cdf(self, x):
        x = np.clip(np.asarray(x, dtype=float), 0.0, TWO_PI)
        return self.c * x + self.a * np.sin(x)


@dataclass(frozen=True)
class PhiStarTemplates(MixtureTemplates):
    """phi* templates p_A = c + a cos x, p_H = c - a cos x on [0, 2 pi) (paper: a = 0.041, c = 0.159).

    c is fixed by normalisation to 1 / (2 pi) = 0.1592 (the paper's 0.159); ``c_err`` is 0.
    """

    a: float
    a_err: float = 0.0
    c: float = 1.0 / TWO_PI
    c_err: float = 0.0
    n_events: int = 0
    template_a: Template = field(init=False, repr=False, compare=False)
    template_h: Template = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not abs(self.a) < self.c:
            raise ValueError(f"need |a| < c for positive templates, got a={self.a}, c={self.c}")
        object.__setattr__(self, "template_a", _CosineTemplate(self.a, self.c))
        object.__setattr__(self, "template_h", _CosineTemplate(-self.a, self.c))

    @property
    def ratio_range(self):
        lo, hi = (self.c - abs(self.a)) / (self.c + abs(self.a)), (self.c + abs(self.a)) / (self.c - abs(self.a))
        return (lo, hi)

    def positivity_limits(self):
        # c + (2 alpha - 1) a cos x >= 0 for all x  <=>  alpha in [(a - c)/2a, (a + c)/2a]
        a = abs(self.a)
        if a == 0:
            return (-np.inf, np.inf)
        return ((a - self.c) / (2 * a), (a + self.c) / (2 * a))

    def fisher_information(self, alpha):
        """Closed form: with b = (2 alpha - 1) a and s = sqrt(1 - b^2/c^2), I = 8 pi a^2 / (c s (1 + s)).

        At alpha = 1/2 (b = 0) this is PHYSICS.md's 4 pi a^2 / c exactly; elsewhere it is larger.
        """
        alpha = np.asarray(alpha, dtype=float)
        b = (2 * alpha - 1) * self.a
        with np.errstate(invalid="ignore"):
            s = np.sqrt(1.0 - (b / self.c) ** 2)
        out = 8 * np.pi * self.a**2 / (self.c * s * (1 + s))
        return np.where(np.abs(b) < self.c, out, np.inf)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """a, a_err, c, c_err, n_events as 0-d arrays; ``from_arrays`` rebuilds these templates exactly."""
        return {"a": np.asarray(self.a, dtype=float), "a_err": np.asarray(self.a_err, dtype=float),
                "c": np.asarray(self.c, dtype=float), "c_err": np.asarray(self.c_err, dtype=float),
                "n_events": np.asarray(self.n_events, dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays) -> PhiStarTemplates:
        """The templates ``to_arrays`` returned (any mapping with its keys)."""
        return cls(a=float(arrays["a"]), a_err=float(arrays["a_err"]), c=float(arrays["c"]),
                   c_err=float(arrays["c_err"]), n_events=int(arrays["n_events"]))


def fit_phi_star_templates(phi_star, is_a, *, tol: float = 1e-12, max_iter: int = 100,
                           weights=None) -> PhiStarTemplates:
    """Unbinned ML fit of a to labelled phi* values (c = 1/2pi by normalisation); error from curvature.

    Each event has density c + s a cos(phi*) with s = +1 for A, -1 for H, so
    ln L = sum ln(1 + 2 pi a t_i) + const with t_i = s_i cos(phi*_i): concave in a.
    ``weights`` (per event): the weighted likelihood sum w_i ln(1 + a t_i), its error the sandwich
    sqrt(sum w^2 u^2) / sum w u^2 (the curvature error for unit weights).
    """
    phi_star = np.asarray(phi_star, dtype=float)
    is_a = np.asarray(is_a, dtype=bool)
    if phi_star.shape != is_a.shape or phi_star.ndim != 1:
        raise ValueError(f"phi_star and is_a must be 1-D of one length, got {phi_star.shape} and {is_a.shape}")
    weights = check_weights(weights, phi_star.size, "phi* events")
    if phi_star.size == 0:
        raise ValueError("no events to fit the phi* templates to")
    if not np.all(np.isfinite(phi_star)):
        raise ValueError("phi_star contains NaN or inf")
    c = 1.0 / TWO_PI
    t = np.where(is_a, 1.0, -1.0) * np.cos(phi_star) * TWO_PI  # ln L = sum ln(1 + a t)
    # moment estimate E[s cos] = pi a as the start; then safeguarded Newton inside |a| < c
    a_lim = c * (1 - 1e-12)
    w = np.ones_like(t) if weights is None else weights
    mean_t = np.mean(t) if weights is None else (w * t).sum() / w.sum()
    a = float(np.clip(mean_t / (TWO_PI * np.pi), -0.5 * c, 0.5 * c))
    lo, hi = -a_lim, a_lim
    for _ in range(max_iter):
        u = t / (1 + a * t)
        g, h = (u.sum(), -(u * u).sum()) if weights is None else ((w * u).sum(), -(w * u * u).sum())
        if g > 0:
            lo = a
        else:
            hi = a
        step = -g / h if h < 0 else 0.0
        new = a + step
        if not lo < new < hi:
            new = 0.5 * (lo + hi)
        if abs(new - a) < tol:
            a = new
            break
        a = new
    u = t / (1 + a * t)
    if weights is None:
        a_err = 1.0 / np.sqrt((u * u).sum())
    else:
        a_err = np.sqrt((w * w * u * u).sum()) / (w * u * u).sum()
    return PhiStarTemplates(a=float(a), a_err=float(a_err), c=c, n_events=int(phi_star.size))


# --------------------------------------------------------------------------- KDE


def check_weights(weights, n: int, what: str = "events") -> np.ndarray | None:
    """Per-event weights as float64 (None stays None): one per event, finite, >= 0, some positive."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=float).reshape(-1)
    if w.size != n:
        raise ValueError(f"{w.size} weights for {n} {what}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError(f"weights of the {what} must be finite and >= 0, and not all zero")
    return w


def weighted_quantile(x: np.ndarray, weights: np.ndarray, q) -> np.ndarray:
    """Quantiles of weighted values: the inverse of the weighted empirical CDF at the midpoints of the
    sorted events' weights (equal weights give numpy's 'linear' quantiles up to the end points)."""
    order = np.argsort(x, kind="stable")
    xs, ws = np.asarray(x, dtype=float)[order], np.asarray(weights, dtype=float)[order]
    cdf = (np.cumsum(ws) - 0.5 * ws) / ws.sum()
    return np.interp(q, cdf, xs)


def _bandwidth(z: np.ndarray, bandwidth, weights: np.ndarray | None = None) -> float:
    """Kernel width in the estimation space: a positive number, or the 'scott'/'silverman' rule
    (with weights: the weighted spread and Kish's effective number of events)."""
    if isinstance(bandwidth, str):
        if weights is None:
            n = z.size
            sd = float(np.std(z, ddof=1)) if n > 1 else 0.0
        else:
            w = weights
            n = float(w.sum() ** 2 / (w * w).sum())
            mean = float((w * z).sum() / w.sum())
            var = float((w * (z - mean) ** 2).sum() / w.sum())
            sd = float(np.sqrt(var * n / (n - 1))) if n > 1 else 0.0
        if bandwidth == "scott":
            h = 1.059 * sd * n ** (-0.2)
        elif bandwidth == "silverman":
            q75, q25 = (np.percentile(z, [75, 25]) if weights is None
                        else weighted_quantile(z, weights, [0.75, 0.25]))
            spread = min(sd, (q75 - q25) / 1.349) if q75 > q25 else sd
            h = 0.9 * spread * n ** (-0.2)
        else:
            raise ValueError(f"bandwidth must be a positive number, 'scott' or 'silverman', got {bandwidth!r}")
        if not h > 0:
            raise ValueError("cannot derive a bandwidth from identical values; pass bandwidth=<number>")
        return float(h)
    h = float(bandwidth)
    if not h > 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth!r}")
    return h


def _to_estimation_space(y, space: str, clip: float) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if space == "reflect":
        return y
    return special.logit(np.clip(y, clip, 1.0 - clip))


def _linear_binning(z: np.ndarray, g0: float, dz: float, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Share each point (its weight) between its two neighbouring grid nodes (second-order accurate binning)."""
    pos = (z - g0) / dz
    i = np.clip(np.floor(pos).astype(np.int64), 0, n - 2)
    frac = np.clip(pos - i, 0.0, 1.0)
    lo, hi = 1.0 - frac, frac
    if weights is not None:
        lo, hi = lo * weights, hi * weights
    return np.bincount(i, lo, minlength=n) + np.bincount(i + 1, hi, minlength=n)


# FFT convolution leaves round-off of ~1e-15 x the largest value everywhere (measured: up to
# 8e-16 relative, negative at ~15 % of the nodes far from the data). Values below this fraction
# of each convolution's maximum are set to zero: noise is not density, and a ratio of two noise
# floors (or of a density and a noise floor) means nothing.
FFT_FLOOR = 1e-12

# Adaptive (Abramson) kernels: per-event factor lambda_i = sqrt(g / f_pilot(z_i)) clipped to this
# range (in units of the fixed bandwidth h), and the number of geometric bandwidth classes.
ADAPTIVE_FACTOR_RANGE = (0.2, 5.0)
ADAPTIVE_CLASSES = 32


def _smooth(counts: np.ndarray, h_nodes: float, reflect: bool) -> np.ndarray:
    """Convolve node counts with a Gaussian of width ``h_nodes`` grid steps by FFT.

    Negative values and round-off below ``FFT_FLOOR`` x the maximum are set to zero.
    """
    half = int(min(np.ceil(6 * h_nodes), 4 * counts.size))
    k = np.arange(-half, half + 1, dtype=float)
    kernel = np.exp(-0.5 * (k / h_nodes) ** 2)
    kernel /= kernel.sum()
    if reflect:
        # mirror images of the data about both edges (nodes sit at cell centres, so 'symmetric')
        pad = min(half, counts.size)
        ext = np.pad(counts, pad, mode="symmetric")
        out = signal.fftconvolve(ext, kernel, mode="same")[pad:-pad]
    else:
        out = signal.fftconvolve(counts, kernel, mode="same")
    top = out.max(initial=0.0)
    out[out < FFT_FLOOR * top] = 0.0
    return out


def _abramson_factors(z: np.ndarray, grid: np.ndarray, pilot: np.ndarray,
                      factor_range=None, weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Abramson's square-root law: lambda_i = sqrt(g / f(z_i)), g the geometric mean of f at the events.

    ``pilot`` is the fixed-bandwidth estimate at the grid nodes (any normalisation: it cancels).
    Returns (lambda clipped to ``factor_range``, g / max(f)). The pilot is positive at every event
    (its own kernel is there), so the logarithm is finite.
    """
    f = np.interp(z, grid, pilot)
    f = np.maximum(f, FFT_FLOOR * pilot.max())
    log_f = np.log(f)
    log_g = float(log_f.mean() if weights is None else (weights * log_f).sum() / weights.sum())
    lam = np.clip(np.exp(0.5 * (log_g - log_f)), *(factor_range or ADAPTIVE_FACTOR_RANGE))
    return lam, float(np.exp(log_g) / pilot.max())


def _adaptive_smooth(z: np.ndarray, lam: np.ndarray, h_nodes: float, g0: float, dz: float, n: int,
                     reflect: bool, n_classes: int = ADAPTIVE_CLASSES, weights: np.ndarray | None = None) -> np.ndarray:
    """Sum over events of Gaussians of width lam_i h (grid steps), by FFT in bandwidth classes.

    The classes are ``n_classes`` widths spaced geometrically over [min lam, max lam]. Each event
    is shared between the two classes around its width with weights that keep its kernel variance
    exact (w l_{k+1}^2 + (1 - w) l_k^2 = lam^2); the remaining shape error is a fourth cumulant of
    at most (3/4)(r^2 - 1)^2 lam^4 h^4 (r = ratio of neighbouring widths: 1.11 for 32 classes over
    a factor 25, i.e. 0.04 in units of the kernel variance squared), a fourth-order smoothing term
    far below the KDE's own h^2 bias and its statistical error. Each class is then linearly binned
    onto the grid (like the fixed KDE) and convolved with its own kernel.
    """
    llo, lhi = np.log(lam.min()), np.log(lam.max())
    pos = (z - g0) / dz
    i = np.clip(np.floor(pos).astype(np.int64), 0, n - 2)
    frac = np.clip(pos - i, 0.0, 1.0)
    ev = np.ones_like(frac) if weights is None else weights
    if lhi - llo < 1e-12 or n_classes < 2:
        counts = np.bincount(i, ev * (1.0 - frac), minlength=n) + np.bincount(i + 1, ev * frac, minlength=n)
        return _smooth(counts, h_nodes * float(np.exp(0.5 * (llo + lhi))), reflect)
    widths = np.exp(np.linspace(llo, lhi, n_classes))
    t = (np.log(lam) - llo) / (lhi - llo) * (n_classes - 1)
    k = np.clip(np.floor(t).astype(np.int64), 0, n_classes - 2)
    w2 = widths**2
    w = np.clip((lam**2 - w2[k]) / (w2[k + 1] - w2[k]), 0.0, 1.0)
    idx = k * n + i
    size = n_classes * n
    if weights is None:
        counts = (np.bincount(idx, (1.0 - w) * (1.0 - frac), minlength=size)
                  + np.bincount(idx + 1, (1.0 - w) * frac, minlength=size)
                  + np.bincount(idx + n, w * (1.0 - frac), minlength=size)
                  + np.bincount(idx + n + 1, w * frac, minlength=size)).reshape(n_classes, n)
    else:
        counts = (np.bincount(idx, ev * (1.0 - w) * (1.0 - frac), minlength=size)
                  + np.bincount(idx + 1, ev * (1.0 - w) * frac, minlength=size)
                  + np.bincount(idx + n, ev * w * (1.0 - frac), minlength=size)
                  + np.bincount(idx + n + 1, ev * w * frac, minlength=size)).reshape(n_classes, n)
    out = np.zeros(n)
    for c in range(n_classes):
        if counts[c].any():
            out += _smooth(counts[c], h_nodes * widths[c], reflect)
    return out


class KDETemplate(Template):
    """Gaussian KDE of y in [0, 1] built once on an FFT grid and interpolated.

    ``adaptive=True`` (default): Abramson's adaptive KDE (as RooKeysPdf,
    rho = 1, no mirroring). The fixed-bandwidth KDE is the pilot f; event i gets the width
    h_i = h lambda_i with lambda_i = sqrt(g / f(z_i)), g the geometric mean of f at the events,
    lambda clipped to ``ADAPTIVE_FACTOR_RANGE`` = [0.2, 5]: kernels narrow in the core and widen
    (up to 5 h) in sparse tails, so the estimate follows the tails instead of dropping to the
    Gaussian tail of the outermost kernel. The sum is done by FFT in ``adaptive_classes``
    bandwidth classes (see ``_adaptive_smooth``). ``adaptive=False``: the fixed-h KDE.

    ``space='logit'``: estimate the density of z = logit(y) (no boundary in z; the
    Jacobian 1/(y(1-y)) lets it follow densities that diverge at 0 or 1). y is clipped to
    [clip, 1 - clip]; the KDE mass beyond the clip points is spread uniformly over
    [0, clip] and [1 - clip, 1], so the density integrates to one on [0, 1].
    ``space='reflect'``: estimate in y with the data mirrored about 0 and 1.
    Use ``KDETemplates`` to build the A/H pair on one grid.

    ``weights`` (per event, >= 0): a weighted KDE, each kernel carrying its event's weight (events of
    weight 0 are left out); the bandwidth rules take the weighted spread and Kish's effective number
    of events, the Abramson pilot the weighted geometric mean. ``n_events`` counts the events used.
    """

    def __init__(self, y, *, bandwidth=DEFAULT_BANDWIDTH, grid_size: int = DEFAULT_GRID_SIZE,
                 space: str = DEFAULT_SPACE, clip: float = DEFAULT_LOGIT_CLIP, grid=None,
                 adaptive: bool = DEFAULT_ADAPTIVE, adaptive_classes: int = ADAPTIVE_CLASSES, weights=None):
        y = np.asarray(y, dtype=float).ravel()
        weights = check_weights(weights, y.size, "KDE template events")
        if weights is not None:
            y, weights = y[weights > 0], weights[weights > 0]
        if y.size < 2:
            raise ValueError(f"need at least 2 values for a KDE template, got {y.size}")
        if not np.all(np.isfinite(y)) or y.min() < 0 or y.max() > 1:
            raise ValueError("KDE template values must be finite and inside [0, 1] (network outputs)")
        self.space = _given("space", space)
        if self.space not in ("logit", "reflect"):
            raise ValueError(f"space must be 'logit' or 'reflect', got {self.space!r}")
        self.clip = float(_given("clip", clip))
        self.adaptive = bool(_given("adaptive", adaptive))
        n_classes = int(_given("adaptive_classes", adaptive_classes))
        if n_classes < 1:
            raise ValueError(f"adaptive_classes must be >= 1, got {adaptive_classes!r}")
        grid_size = int(_given("grid_size", grid_size))
        if grid_size < 16:
            raise ValueError(f"grid_size must be >= 16, got {grid_size}")
        self.lo, self.hi = 0.0, 1.0
        self.n_events = y.size
        self.data_range = (float(y.min()), float(y.max()))
        z = self.transform(y)
        self.bandwidth = _bandwidth(z, _given("bandwidth", bandwidth), weights)
        if grid is None:
            grid = self.default_grid(z, self.bandwidth, grid_size, self.space, adaptive=self.adaptive)
        self.grid = np.asarray(grid, dtype=float)
        dz = self.grid[1] - self.grid[0]
        reflect = self.space == "reflect"
        counts = _linear_binning(z, self.grid[0], dz, self.grid.size, weights)
        dens = _smooth(counts, self.bandwidth / dz, reflect=reflect)
        # (min, max) of the per-event kernel widths in units of the bandwidth; g / max(pilot)
        self.factor_range, self.pilot_geometric_mean = (1.0, 1.0), 1.0
        if self.adaptive:
            lam, self.pilot_geometric_mean = _abramson_factors(z, self.grid, dens, weights=weights)
            self.factor_range = (float(lam.min()), float(lam.max()))
            dens = _adaptive_smooth(z, lam, self.bandwidth / dz, self.grid[0], dz, self.grid.size, reflect,
                                    n_classes, weights)
        if self.space == "logit":
            # mass beyond the clip points goes to the two end bins [0, clip] and [1 - clip, 1]
            z_lo, z_hi = special.logit(self.clip), special.logit(1.0 - self.clip)
            cum = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]))]) * dz
            total = cum[-1]
            below = np.interp(z_lo, self.grid, cum) if self.grid[0] < z_lo else 0.0
            above = total - np.interp(z_hi, self.grid, cum) if self.grid[-1] > z_hi else 0.0
            self.density = dens / total  # density of z, trapezoid-normalised
            self.mass_below, self.mass_above = below / total, above / total
            self.cum = cum / total
        else:
            self.density = dens / (dens.sum() * dz)  # midpoint rule on cell centres
            self.mass_below = self.mass_above = 0.0
            self.cum = None

    ARRAY_KEYS = ("density", "cum", "mass_below", "mass_above", "bandwidth", "n_events", "data_range",
                  "factor_range", "pilot_geometric_mean")

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The estimate as plain arrays, without its grid (``from_arrays`` takes it separately).

        density: density of z at the grid nodes; cum (logit space only): its cumulative
        distribution there, from mass_below at the first clip point; mass_below / mass_above:
        probability in [0, clip] and [1 - clip, 1] (0 for reflect); the rest is provenance.
        """
        out = {"density": self.density, "mass_below": np.asarray(self.mass_below, dtype=float),
               "mass_above": np.asarray(self.mass_above, dtype=float),
               "bandwidth": np.asarray(self.bandwidth, dtype=float),
               "n_events": np.asarray(self.n_events, dtype=np.int64),
               "data_range": np.asarray(self.data_range, dtype=float),
               "factor_range": np.asarray(self.factor_range, dtype=float),
               "pilot_geometric_mean": np.asarray(self.pilot_geometric_mean, dtype=float)}
        if self.cum is not None:
            out["cum"] = self.cum
        return out

    @classmethod
    def from_arrays(cls, arrays, *, grid, space: str, clip: float, adaptive: bool) -> KDETemplate:
        """The template ``to_arrays`` described, on ``grid``, without re-running the KDE."""
        if space not in ("logit", "reflect"):
            raise ValueError(f"space must be 'logit' or 'reflect', got {space!r}")
        self = cls.__new__(cls)
        self.space, self.clip, self.adaptive = space, float(clip), bool(adaptive)
        self.lo, self.hi = 0.0, 1.0
        self.grid = np.asarray(grid, dtype=float)
        self.density = np.asarray(arrays["density"], dtype=float)
        if self.density.shape != self.grid.shape:
            raise ValueError(f"density has shape {self.density.shape}, the grid {self.grid.shape}")
        self.cum = np.asarray(arrays["cum"], dtype=float) if space == "logit" else None
        if self.cum is not None and self.cum.shape != self.grid.shape:
            raise ValueError(f"cum has shape {self.cum.shape}, the grid {self.grid.shape}")
        self.mass_below, self.mass_above = float(arrays["mass_below"]), float(arrays["mass_above"])
        self.bandwidth = float(arrays["bandwidth"])
        self.n_events = int(arrays["n_events"])
        self.data_range = tuple(float(v) for v in arrays["data_range"])
        self.factor_range = tuple(float(v) for v in arrays["factor_range"])
        self.pilot_geometric_mean = float(arrays["pilot_geometric_mean"])
        return self

    @staticmethod
    def default_grid(z, h, grid_size, space, adaptive=False) -> np.ndarray:
        """Cell centres of [0, 1] (reflect), or the data range in z plus 7 widest kernel widths."""
        if space == "reflect":
            dy = 1.0 / grid_size
            return (np.arange(grid_size) + 0.5) * dy
        margin = 7 * h * (ADAPTIVE_FACTOR_RANGE[1] if adaptive else 1.0)
        return np.linspace(z.min() - margin, z.max() + margin, grid_size)

    def transform(self, y) -> np.ndarray:
        """Map y to the estimation space (logit of the clipped y, or y itself)."""
        return _to_estimation_space(y, self.space, self.clip)

    def pdf_grid(self) -> np.ndarray:
        """Density in the estimation space at the grid nodes."""
        return self.density

    def pdf(self, y) -> np.ndarray:
        y = np.asarray(y, dtype=float)
        if self.space == "reflect":
            out = np.interp(y, self.grid, self.density)
            return np.where((y >= 0) & (y <= 1), out, 0.0)
        yc = np.clip(y, self.clip, 1.0 - self.clip)
        out = np.interp(special.logit(yc), self.grid, self.density, left=0.0, right=0.0) / (yc * (1.0 - yc))
        out = np.where(y < self.clip, self.mass_below / self.clip, out)
        out = np.where(y > 1.0 - self.clip, self.mass_above / self.clip, out)
        return np.where((y >= 0) & (y <= 1), out, 0.0)

    def cdf(self, y) -> np.ndarray:
        y = np.asarray(y, dtype=float)
        if self.space == "reflect":
            dz = self.grid[1] - self.grid[0]
            edges = np.concatenate([[0.0], self.grid + 0.5 * dz])
            cum = np.concatenate([[0.0], np.cumsum(self.density) * dz])
            return np.interp(y, edges, cum)
        yc = np.clip(y, self.clip, 1.0 - self.clip)
        inner = np.interp(special.logit(yc), self.grid, self.cum, left=0.0, right=1.0)
        # inner runs from mass_below to 1 - mass_above between the clip points
        out = np.where(y < self.clip, self.mass_below * np.clip(y, 0, None) / self.clip, inner)
        out = np.where(y > 1.0 - self.clip, 1.0 - self.mass_above * (1.0 - np.clip(y, None, 1.0)) / self.clip, out)
        return out


def kde_options(*, bandwidth, grid_size, space, clip, positivity_quantile, adaptive, adaptive_classes):
    """Checked KDE options: (the ``KDETemplate`` keyword arguments, the settings in job-file names).

    The settings (space, bandwidth, adaptive, grid_size, logit_clip, positivity_quantile,
    adaptive_classes) are the templates' provenance and what their stored form is rebuilt from.
    """
    q = float(_given("positivity_quantile", positivity_quantile))
    if not 0.0 <= q < 0.5:
        raise ValueError(f"positivity_quantile must be in [0, 0.5), got {q}")
    space = _given("space", space)
    if space not in ("logit", "reflect"):
        raise ValueError(f"space must be 'logit' or 'reflect', got {space!r}")
    opts = dict(grid_size=int(_given("grid_size", grid_size)), space=space, clip=float(_given("clip", clip)),
                adaptive=bool(_given("adaptive", adaptive)),
                adaptive_classes=int(_given("adaptive_classes", adaptive_classes)))
    bandwidth = _given("bandwidth", bandwidth)
    settings = {"space": space, "bandwidth": bandwidth if isinstance(bandwidth, str) else float(bandwidth),
                "adaptive": opts["adaptive"], "grid_size": opts["grid_size"], "logit_clip": opts["clip"],
                "positivity_quantile": q, "adaptive_classes": opts["adaptive_classes"]}
    return opts, settings


class KDETemplates(MixtureTemplates):
    """p_A(y), p_H(y) as KDEs of labelled network outputs on one shared grid.

    Bandwidths (a number applies to both classes; rules are applied per class) are in the
    estimation space (logit units by default); with ``adaptive`` (default) they are the pilot
    bandwidths h that Abramson's factors multiply, per class (see ``KDETemplate``).

    Positivity limits: the ratio p_A/p_H is taken over the range spanned by the template events
    (``positivity_range``: the grid nodes inside it, its two ends by interpolation, and in logit
    space the end bins [0, clip], [1 - clip, 1] when events reach them). Between nodes the pdf
    interpolates linearly, so the ratio there lies between the node ratios and this is the exact
    range of the ratio of the interpolated densities. Beyond the events the ratio is the ratio of
    the outermost kernels' Gaussian tails (to 0 or inf: no information) and is not used. In the
    tails of the events the two behave differently: with fixed kernels the class without events
    there falls to its outermost kernel's Gaussian tail (or to 0 below ``FFT_FLOOR``), the ratio
    runs to 0 and inf and the limits are pinned to [0, 1]; adaptive kernels widen in the sparse
    tails, both densities stay populated where the classes overlap and the limits lie outside
    [0, 1] (they stay at [0, 1] only where one class really has no events nearby).
    ``positivity_quantile`` > 0 applies the rule only between those quantiles of the template
    events. The fitter still keeps p >= 0 at every test event (its per-event domain), whatever
    the limits.
    """

    def __init__(self, y, is_a, *, bandwidth=DEFAULT_BANDWIDTH, grid_size: int = DEFAULT_GRID_SIZE,
                 space: str = DEFAULT_SPACE, clip: float = DEFAULT_LOGIT_CLIP,
                 positivity_quantile: float = DEFAULT_POSITIVITY_QUANTILE, adaptive: bool = DEFAULT_ADAPTIVE,
                 adaptive_classes: int = ADAPTIVE_CLASSES, weights=None):
        y = np.asarray(y, dtype=float).ravel()
        is_a = np.asarray(is_a, dtype=bool).ravel()
        if y.shape != is_a.shape:
            raise ValueError(f"y and is_a must have one length, got {y.shape} and {is_a.shape}")
        # per-event weights (a weighted KDE per class; see KDETemplate): events of weight 0 drop out
        weights = check_weights(weights, y.size, "KDE template events")
        if weights is not None:
            y, is_a, weights = y[weights > 0], is_a[weights > 0], weights[weights > 0]
        if not np.all(np.isfinite(y)) or y.min() < 0 or y.max() > 1:
            raise ValueError("KDE template values must be finite and inside [0, 1] (network outputs)")
        opts, settings = kde_options(bandwidth=bandwidth, grid_size=grid_size, space=space, clip=clip,
                                     positivity_quantile=positivity_quantile, adaptive=adaptive,
                                     adaptive_classes=adaptive_classes)
        if is_a.all() or not is_a.any():
            raise ValueError("KDE templates need labelled events of both classes (is_a True and False)")
        space, clip, adaptive, grid_size = opts["space"], opts["clip"], opts["adaptive"], opts["grid_size"]
        bandwidth, q = settings["bandwidth"], settings["positivity_quantile"]
        z = _to_estimation_space(y, space, clip)
        part = (lambda m: None) if weights is None else (lambda m: weights[m])  # noqa: E731
        h = [_bandwidth(z[m], bandwidth, part(m)) for m in (is_a, ~is_a)]
        grid = KDETemplate.default_grid(z, max(h), grid_size, space, adaptive=adaptive)
        self.template_a = KDETemplate(y[is_a], bandwidth=h[0], grid=grid, weights=part(is_a), **opts)
        self.template_h = KDETemplate(y[~is_a], bandwidth=h[1], grid=grid, weights=part(~is_a), **opts)
        self.space, self.clip, self.grid, self.adaptive = space, clip, grid, adaptive
        self.bandwidths = (h[0], h[1])
        self.data_range = (float(y.min()), float(y.max()))
        # the positivity rule is applied between these quantiles of the template events
        # (0: the full range they span, the paper's rule; > 0 ignores sparse outer tails)
        self.positivity_quantile = q
        if q > 0:
            quant = np.quantile(y, [q, 1.0 - q]) if weights is None else weighted_quantile(y, weights, [q, 1.0 - q])
            self.positivity_range = tuple(float(v) for v in quant)
        else:
            self.positivity_range = self.data_range
        self.settings = settings

    def to_arrays(self, names=("h", "a")) -> dict[str, np.ndarray]:
        """Plain arrays that ``from_arrays`` rebuilds these templates from, bit for bit.

        Shared: grid, data_range, positivity_range; each template's ``KDETemplate.to_arrays``
        entries as ``<key>_<name>``, ``names`` = (name of p_H, name of p_A).
        """
        out = {"grid": self.grid, "data_range": np.asarray(self.data_range, dtype=float),
               "positivity_range": np.asarray(self.positivity_range, dtype=float)}
        for name, tpl in zip(names, (self.template_h, self.template_a)):
            out.update({f"{k}_{name}": v for k, v in tpl.to_arrays().items()})
        return out

    @classmethod
    def from_arrays(cls, arrays, settings, names=("h", "a")) -> KDETemplates:
        """The templates ``to_arrays(names)`` returned; ``settings`` as ``KDETemplates.settings``
        (space, logit_clip, adaptive and positivity_quantile are used, the rest kept as provenance).
        """
        self = cls.__new__(cls)
        space, clip, adaptive = settings["space"], float(settings["logit_clip"]), bool(settings["adaptive"])
        grid = np.asarray(arrays["grid"], dtype=float)
        pair = []
        for n in names:
            sub = {k: arrays[f"{k}_{n}"] for k in KDETemplate.ARRAY_KEYS if f"{k}_{n}" in arrays}
            try:
                pair.append(KDETemplate.from_arrays(sub, grid=grid, space=space, clip=clip, adaptive=adaptive))
            except KeyError as err:
                raise KeyError(f"{err.args[0]}_{n}") from None
        self.template_h, self.template_a = pair
        self.space, self.clip, self.grid, self.adaptive = space, clip, grid, adaptive
        self.bandwidths = (self.template_a.bandwidth, self.template_h.bandwidth)
        self.data_range = tuple(float(v) for v in arrays["data_range"])
        self.positivity_quantile = float(settings["positivity_quantile"])
        self.positivity_range = tuple(float(v) for v in arrays["positivity_range"])
        self.settings = dict(settings)
        return self

    @property
    def support(self):
        return (0.0, 1.0)

    def _grid_densities(self):
        return self.template_a.density, self.template_h.density

    @property
    def ratio_range(self):
        """(min, max) of p_A / p_H over ``positivity_range`` (see the class docstring)."""
        y_lo, y_hi = self.positivity_range
        za, zb = self.template_a.transform(np.asarray([y_lo, y_hi]))
        inside = (self.grid > za) & (self.grid < zb)
        p_a, p_h = self._grid_densities()
        ends = np.array([za, zb])
        pa = [p_a[inside], np.interp(ends, self.grid, p_a)]
        ph = [p_h[inside], np.interp(ends, self.grid, p_h)]
        if self.space == "logit":
            # uniform end bins (the Jacobian cancels in the ratio), where template events reach them
            ta, th = self.template_a, self.template_h
            if y_lo < self.clip:
                pa.append([ta.mass_below]), ph.append([th.mass_below])
            if y_hi > 1.0 - self.clip:
                pa.append([ta.mass_above]), ph.append([th.mass_above])
        return _ratio_range(np.concatenate(pa), np.concatenate(ph))

    def fisher_information(self, alpha):
        # the Jacobian cancels in (p_A - p_H)^2 / p, so integrate in the estimation space
        p_a, p_h = self._grid_densities()
        if self.space == "reflect":
            w = np.full(self.grid.size, self.grid[1] - self.grid[0])
            return fisher_information_on_grid(p_a, p_h, self.grid, alpha, weights=w)
        ta, th = self.template_a, self.template_h
        info = fisher_information_on_grid(p_a, p_h, self.grid, alpha)
        ends = fisher_information_on_grid(
            np.array([ta.mass_below, ta.mass_above]), np.array([th.mass_below, th.mass_above]),
            None, alpha, weights=np.ones(2))
        return info + ends

    def tabulate(self, n_points: int = 512):
        # nodes uniform in logit space show the tails; fall back to uniform y for reflect
        if self.space == "logit":
            lo, hi = self.template_a.transform(np.asarray(self.data_range))
            x = special.expit(np.linspace(lo, hi, n_points))
        else:
            x = np.linspace(0.0, 1.0, n_points)
        return (x, *self.densities(x))


# --------------------------------------------------------------------------- analytic


class _FunctionTemplate(Template):
    def __init__(self, f, lo, hi):
        self.f, self.lo, self.hi = f, float(lo), float(hi)

    def pdf(self, x):
        x = np.asarray(x, dtype=float)
        inside = (x >= self.lo) & (x <= self.hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.asarray(self.f(np.clip(x, self.lo, self.hi)), dtype=float)
        return np.where(inside, np.nan_to_num(out, nan=0.0, posinf=0.0), 0.0)

    def cdf(self, x):
        x = np.atleast_1d(np.asarray(x, dtype=float))
        out = [integrate.quad(self.pdf, self.lo, min(max(v, self.lo), self.hi), limit=200)[0] for v in x.ravel()]
        return np.asarray(out).reshape(x.shape)


class AnalyticTemplates(MixtureTemplates):
    """Two normalised callables p_A, p_H on [lo, hi] (e.g. scipy.stats.beta(...).pdf) as templates.

    Positivity limits and I(alpha) are evaluated on ``n_grid`` nodes (I by adaptive quadrature).
    """

    def __init__(self, pdf_a, pdf_h, support=(0.0, 1.0), *, n_grid: int = DEFAULT_POSITIVITY_GRID):
        lo, hi = map(float, support)
        if not hi > lo:
            raise ValueError(f"support must be (lo, hi) with hi > lo, got {support!r}")
        self.template_a = _FunctionTemplate(pdf_a, lo, hi)
        self.template_h = _FunctionTemplate(pdf_h, lo, hi)
        self.n_grid = int(_given("n_grid", n_grid))

    @property
    def support(self):
        return (self.template_a.lo, self.template_a.hi)

    @property
    def ratio_range(self):
        x = np.linspace(*self.support, self.n_grid)
        return _ratio_range(*self.densities(x))

    def fisher_information(self, alpha):
        alpha = np.asarray(alpha, dtype=float)
        lo, hi = self.support

        def one(al):
            def f(x):
                pa, ph = self.p_a(x), self.p_h(x)
                p = ph + al * (pa - ph)
                return (pa - ph) ** 2 / p if p > 0 else 0.0

            return integrate.quad(f, lo, hi, limit=500, epsabs=1e-12, epsrel=1e-10)[0]

        return np.vectorize(one, otypes=[float])(alpha)
