"""Templates for K >= 2 named mixture components, for ``fit_fractions`` and its Cramer-Rao bound.

p(x|f) = sum_k f_k p_k(x): every class here gives the K component densities p_k as the last axis
of an array, in the order of ``components``, plus what the K-fraction fit and bound need:

* ``support_nodes()``: the (n_nodes, K) densities at the nodes where the mixture must stay >= 0
  (``fit_fractions(..., support=...)``; the paper's positivity rule generalised, PHYSICS.md s. 6);
* ``quadrature()``: (densities, weights) of a rule for integrals over the template variable
  (``fraction_cramer_rao_bound(densities, None, f, N, ..., weights=weights)``).

Two implementations:

* ``PhiStarComponents``: phi* in [0, 2 pi). The two components of the parameter of interest (the
  "pair", alpha = 0 component first) keep the paper's model c -+ a cos phi* with c = 1 / (2 pi)
  from the joint fit ``fit_phi_star_templates`` (so they equal ``PhiStarTemplates`` exactly); every
  other component is a first-order Fourier series (1 + b cos phi* + s sin phi*) / (2 pi).
* ``KDEComponents``: network output y in [0, 1], one ``KDETemplate`` per component on one shared
  FFT grid, built as ``KDETemplates`` builds its pair (so for two components the densities equal
  ``KDETemplates``').

K = 2 studies keep using ``PhiStarTemplates`` / ``KDETemplates``; these classes add the K > 2 case
without changing them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import special

from .cramer_rao import FractionBound, _quadrature_weights, fraction_cramer_rao_bound
from .templates import (
    ADAPTIVE_CLASSES,
    DEFAULT_ADAPTIVE,
    DEFAULT_BANDWIDTH,
    DEFAULT_GRID_SIZE,
    DEFAULT_LOGIT_CLIP,
    DEFAULT_POSITIVITY_QUANTILE,
    DEFAULT_SPACE,
    TWO_PI,
    KDETemplate,
    PhiStarTemplates,
    _bandwidth,
    check_weights,
    weighted_quantile,
    kde_options,
    _to_estimation_space,
    fit_phi_star_templates,
)

__all__ = [
    "PHI_STAR_SUPPORT_NODES",
    "ComponentTemplates",
    "KDEComponents",
    "PhiStarComponents",
    "fit_phi_star_components",
]

# Positivity / quadrature nodes of the phi* components: the densities are trigonometric polynomials
# of order 1, so a uniform periodic grid of this many nodes is far more than enough, and the
# periodic trapezoid rule on it is exact for every integrand of order < 2047.
PHI_STAR_SUPPORT_NODES = 2048


def _names(components, what: str = "components") -> tuple[str, ...]:
    names = tuple(components)
    if len(names) < 2 or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{what} must be at least two distinct non-empty names, got {list(names)!r}")
    return names


class ComponentTemplates:
    """K named component densities on one template variable (the common interface).

    ``components``: the order of the last axis of every array; ``kind``: a short name of the model
    (the stored artefact's meta kind); ``settings``: JSON-able provenance (what made them).
    """

    kind: str = ""
    components: tuple[str, ...] = ()
    settings: dict
    support: tuple[float, float] = (0.0, 1.0)

    @property
    def n_components(self) -> int:
        return len(self.components)

    def index(self, component) -> int:
        """Position of ``component`` (a name, or an integer index) in ``components``."""
        if isinstance(component, (int, np.integer)) and not isinstance(component, bool):
            k = int(component)
            if not 0 <= k < len(self.components):
                raise ValueError(f"component index {k} out of range for {list(self.components)}")
            return k
        try:
            return self.components.index(component)
        except ValueError:
            raise ValueError(f"unknown component {component!r}; the components are {list(self.components)}") from None

    def _indices(self, value) -> list[int]:
        if isinstance(value, (str, int, np.integer)):
            value = [value]
        return [self.index(k) for k in value]

    def _fractions(self, f) -> np.ndarray:
        """f as an array ending in K (a mapping {component: fraction} is put in component order)."""
        if isinstance(f, Mapping):
            if set(f) != set(self.components):
                raise ValueError(f"fractions must be given for exactly {list(self.components)}, got {list(f)}")
            f = np.stack([np.asarray(f[c], dtype=float) for c in self.components], axis=-1)
        f = np.asarray(f, dtype=float)
        if f.ndim == 0 or f.shape[-1] != self.n_components:
            raise ValueError(f"fractions must end in K = {self.n_components}, got shape {f.shape}")
        return f

    # -- the interface -------------------------------------------------------------------------

    def densities(self, x) -> np.ndarray:  # pragma: no cover - interface
        """Each component's normalised density at x: shape ``np.shape(x) + (K,)``."""
        raise NotImplementedError

    def support_nodes(self) -> np.ndarray:  # pragma: no cover - interface
        """(n_nodes, K) densities where the mixture must stay >= 0 (a positive factor per node is free)."""
        raise NotImplementedError

    def quadrature(self) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - interface
        """(densities (n_nodes, K), weights (n_nodes,)): sum_n w_n g(p(x_n)) ~ integral of g."""
        raise NotImplementedError

    def tabulate(self, n_points: int = 512) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        """(x (n_points,), densities (n_points, K)) on the support, for plots."""
        raise NotImplementedError

    def info(self) -> dict:  # pragma: no cover - interface
        """JSON-able numbers for the stage record."""
        raise NotImplementedError

    def to_arrays(self) -> dict[str, np.ndarray]:  # pragma: no cover - interface
        """Plain arrays that ``from_arrays`` rebuilds these templates from, bit for bit."""
        raise NotImplementedError

    @classmethod
    def from_arrays(cls, arrays, *, components, settings):  # pragma: no cover - interface
        raise NotImplementedError

    # -- built on the interface ----------------------------------------------------------------

    def mixture(self, x, f) -> np.ndarray:
        """Mixture density sum_k f_k p_k(x) (f: (K,) or a mapping; broadcasting over x)."""
        return self.densities(x) @ self._fractions(f)

    def cramer_rao(self, f, n_events, *, num, den, treatment=None, widths=None) -> FractionBound:
        """Cramer-Rao bound on alpha = sum_num f / sum_den f (``fraction_cramer_rao_bound`` on ``quadrature()``).

        Components (in num, den and the keys of treatment / widths) by name or index; f: the true
        fractions, (K,), (..., K) or a mapping {component: fraction}.
        """
        dens, w = self.quadrature()
        treatment = {self.index(k): v for k, v in (treatment or {}).items()}
        widths = {self.index(k): v for k, v in (widths or {}).items()}
        return fraction_cramer_rao_bound(dens, None, self._fractions(f), n_events, num=self._indices(num),
                                         den=self._indices(den), treatment=treatment, widths=widths, weights=w)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(components={list(self.components)})"


# --------------------------------------------------------------------------- phi*


class PhiStarComponents(ComponentTemplates):
    """phi* templates for K components on [0, 2 pi).

    ``pair`` = (alpha = 0 name, alpha = 1 name), e.g. ("H", "A"): the paper's model
    p = c - a cos phi* (first) and c + a cos phi* (second), c = 1 / (2 pi), evaluated with the same
    arithmetic as ``PhiStarTemplates`` (identical numbers). Every other component k:
    p_k = (1 + b_k cos phi* + s_k sin phi*) / (2 pi) with ``coefficients[k] = (b_k, s_k)``; a CP-mixed
    state's phase shift shows up as s_k, a Z background is nearly flat (b, s ~ 0).
    ``n_events``: {component: training events} for every component; its key order is the component
    order unless ``components`` is given. ``coefficient_errors``: {component: (b_err, s_err)}
    (provenance; 0 when not given).
    """

    kind = "phi_star_components"
    support = (0.0, TWO_PI)

    def __init__(self, pair, a: float, a_err: float, coefficients: Mapping, n_events: Mapping, *,
                 components=None, coefficient_errors: Mapping | None = None):
        names = _names(n_events if components is None else components)
        pair = tuple(pair)
        if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(names):
            raise ValueError(f"pair must be two distinct components of {list(names)}, got {list(pair)!r}")
        others = [c for c in names if c not in pair]
        if set(coefficients) != set(others):
            raise ValueError(f"coefficients must be given for exactly the components outside the pair, "
                             f"{others}, got {list(coefficients)}")
        if set(n_events) != set(names):
            raise ValueError(f"n_events must be given for every component of {list(names)}, got {list(n_events)}")
        errors = coefficient_errors or {}
        if not set(errors) <= set(others):
            raise ValueError(f"coefficient_errors must be keyed by components outside the pair, got {list(errors)}")
        self.components, self.pair = names, pair
        self.n_events = {c: int(n_events[c]) for c in names}
        # the pair: PhiStarTemplates checks |a| < c (positive templates)
        self._pair = PhiStarTemplates(a=float(a), a_err=float(a_err), c=1.0 / TWO_PI,
                                      n_events=self.n_events[pair[0]] + self.n_events[pair[1]])
        self.a, self.a_err, self.c = self._pair.a, self._pair.a_err, self._pair.c
        self.coefficients, self.coefficient_errors = {}, {}
        for c in others:
            b, s = (float(v) for v in coefficients[c])
            if not (np.isfinite(b) and np.isfinite(s)) or b * b + s * s >= 1.0:
                raise ValueError(f"phi* template of component {c!r} is not positive on [0, 2 pi): "
                                 f"b^2 + s^2 = {b * b + s * s:.4g} >= 1 (b = {b:.4g}, s = {s:.4g})")
            self.coefficients[c] = (b, s)
            self.coefficient_errors[c] = tuple(float(v) for v in errors.get(c, (0.0, 0.0)))
        self._i_pair = (names.index(pair[0]), names.index(pair[1]))
        self._i_other = np.array([names.index(c) for c in others], dtype=np.int64)
        self._b = np.array([self.coefficients[c][0] for c in others], dtype=float)
        self._s = np.array([self.coefficients[c][1] for c in others], dtype=float)
        self.settings = {"pair": list(pair), "fourier_order": 1, "support_nodes": PHI_STAR_SUPPORT_NODES}

    def pair_templates(self) -> PhiStarTemplates:
        """The equivalent two-component ``PhiStarTemplates`` of the pair (K = 2 bounds and figures)."""
        return self._pair

    def densities(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        cos = np.cos(x)
        out = np.empty(x.shape + (len(self.components),))
        # the pair exactly as PhiStarTemplates: p_first = c + (-a) cos x, p_second = c + a cos x
        out[..., self._i_pair[0]] = self.c + (-self.a) * cos
        out[..., self._i_pair[1]] = self.c + self.a * cos
        if self._i_other.size:
            sin = np.sin(x)[..., None]
            out[..., self._i_other] = (1.0 + cos[..., None] * self._b + sin * self._s) / TWO_PI
        return out

    @staticmethod
    def _nodes() -> np.ndarray:
        return TWO_PI * np.arange(PHI_STAR_SUPPORT_NODES) / PHI_STAR_SUPPORT_NODES

    def support_nodes(self) -> np.ndarray:
        """The densities at 2048 uniform nodes of [0, 2 pi) (order-1 trigonometric polynomials)."""
        return self.densities(self._nodes())

    def quadrature(self):
        """The same nodes with the periodic trapezoid weights 2 pi / 2048."""
        return self.support_nodes(), np.full(PHI_STAR_SUPPORT_NODES, TWO_PI / PHI_STAR_SUPPORT_NODES)

    def tabulate(self, n_points: int = 512):
        x = np.linspace(0.0, TWO_PI, n_points)
        return x, self.densities(x)

    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        """(b_k, s_k) and their errors for every component; the pair as (-+ 2 pi a, 0)."""
        coef, err = np.zeros((len(self.components), 2)), np.zeros((len(self.components), 2))
        for sign, i in zip((-1.0, 1.0), self._i_pair):
            coef[i] = (sign * TWO_PI * self.a, 0.0)
            err[i] = (TWO_PI * self.a_err, 0.0)
        for c in self.coefficients:
            i = self.components.index(c)
            coef[i], err[i] = self.coefficients[c], self.coefficient_errors[c]
        return coef, err

    def info(self) -> dict:
        """a, a_err, c of the pair and (b, s, errors, training events) of every component."""
        coef, err = self._table()
        return {"pair": list(self.pair), "a": self.a, "a_err": self.a_err, "c": self.c,
                "coefficients": {c: {"b": float(coef[i, 0]), "s": float(coef[i, 1]), "b_err": float(err[i, 0]),
                                     "s_err": float(err[i, 1])} for i, c in enumerate(self.components)},
                "n_events": dict(self.n_events)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """a, a_err, c (0-d); coefficients and coefficient_errors (K, 2): (b_k, s_k) per component
        (the pair's rows are its model written the same way, (-+ 2 pi a, 0)); n_events (K,)."""
        coef, err = self._table()
        return {"a": np.asarray(self.a, dtype=float), "a_err": np.asarray(self.a_err, dtype=float),
                "c": np.asarray(self.c, dtype=float), "coefficients": coef, "coefficient_errors": err,
                "n_events": np.array([self.n_events[c] for c in self.components], dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays, *, components, settings) -> PhiStarComponents:
        """The templates ``to_arrays`` returned; ``settings["pair"]`` names the pair."""
        names = _names(components)
        K = len(names)
        coef = np.asarray(arrays["coefficients"], dtype=float)
        err = np.asarray(arrays["coefficient_errors"], dtype=float)
        n_events = np.asarray(arrays["n_events"])
        if coef.shape != (K, 2) or err.shape != (K, 2) or n_events.shape != (K,):
            raise ValueError(f"coefficients, coefficient_errors must have shape ({K}, 2) and n_events ({K},), got "
                             f"{coef.shape}, {err.shape}, {n_events.shape}")
        if float(arrays["c"]) != 1.0 / TWO_PI:
            raise ValueError(f"c = {float(arrays['c'])} is not 1 / (2 pi)")
        pair = tuple(settings["pair"])
        others = [c for c in names if c not in pair]
        self = cls(pair, float(arrays["a"]), float(arrays["a_err"]),
                   {c: tuple(coef[names.index(c)]) for c in others},
                   {c: int(n) for c, n in zip(names, n_events)}, components=names,
                   coefficient_errors={c: tuple(err[names.index(c)]) for c in others})
        self.settings = dict(settings)
        return self


def fit_phi_star_components(values: Mapping, *, pair, weights: Mapping | None = None) -> PhiStarComponents:
    """phi* templates from each component's training events ({name: 1-D phi* values}, in component order).

    The pair (alpha = 0 name, alpha = 1 name) is fitted jointly by ``fit_phi_star_templates`` on
    its events concatenated first-then-second (is_a False then True, as the templates stage does),
    so ``pair_templates()`` equals that fit exactly. Every other component k gets the unbiased moment
    estimates b_k = 2 mean(cos phi*), s_k = 2 mean(sin phi*) (E[cos] = b/2, E[sin] = s/2 under
    (1 + b cos + s sin) / 2pi) with errors 2 std / sqrt(n); it needs >= 2 events.
    ``weights`` ({component: per-event weights}): the weighted fit of the pair and weighted means
    (their errors sqrt(sum w^2 (x - mean)^2) / sum w).
    """
    names = _names(values)
    pair = tuple(pair)
    if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(names):
        raise ValueError(f"pair must be two distinct components of {list(names)}, got {list(pair)!r}")
    v = {}
    for c in names:
        arr = np.asarray(values[c], dtype=float)
        if arr.ndim != 1:
            raise ValueError(f"phi* values of component {c!r} must be 1-D, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"phi* values of component {c!r} contain NaN or inf")
        need = 1 if c in pair else 2
        if arr.size < need:
            raise ValueError(f"component {c!r} has {arr.size} phi* event(s); need at least {need}")
        v[c] = arr
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"weights given for {unknown}, which are not components of {list(names)}")
    w = {c: check_weights(weights[c], v[c].size, f"phi* events of component {c!r}") for c in weights}
    v0, v1 = v[pair[0]], v[pair[1]]
    pair_w = None
    if set(w) & set(pair):
        pair_w = np.concatenate([w.get(c, np.ones(v[c].size)) for c in pair])
    fit = fit_phi_star_templates(np.concatenate([v0, v1]), np.r_[np.zeros(v0.size, bool), np.ones(v1.size, bool)],
                                 weights=pair_w)
    coefficients, errors = {}, {}
    for c in names:
        if c in pair:
            continue
        cs = np.stack([np.cos(v[c]), np.sin(v[c])])  # (2, n)
        if c not in w:
            coefficients[c] = tuple(2.0 * cs.mean(axis=1))
            errors[c] = tuple(2.0 * cs.std(axis=1, ddof=1) / np.sqrt(v[c].size))
            continue
        wc = w[c] / w[c].sum()
        mean = cs @ wc
        # the weighted mean's error sqrt(sum w^2 (x - mean)^2) / sum w (Kish's n_eff would assume
        # weights independent of x)
        coefficients[c] = tuple(2.0 * mean)
        errors[c] = tuple(2.0 * np.sqrt(((cs - mean[:, None]) ** 2) @ (wc * wc)))
    return PhiStarComponents(pair, fit.a, fit.a_err, coefficients, {c: v[c].size for c in names},
                             components=names, coefficient_errors=errors)


# --------------------------------------------------------------------------- KDE


class KDEComponents(ComponentTemplates):
    """KDE templates of the network output y in [0, 1] for K components on one shared grid.

    One ``KDETemplate`` per component (settings as ``KDETemplates``: a bandwidth rule is applied per
    component). The grid is built exactly as ``KDETemplates.__init__`` builds it: ``default_grid`` on
    all events' estimation-space values with the largest per-component bandwidth. For the two
    components of a ``KDETemplates(y, is_a)`` pair, {first: y[~is_a], second: y[is_a]} gives
    bit-identical densities: the grid (min / max) and the positivity range (quantiles) do not
    depend on the order of the events, but the bandwidth rule (std, percentiles) and the binning
    sum over each component's events in their order, so each component's events must be in the
    order ``KDETemplates`` sees them (a boolean mask keeps the order; how the components are
    grouped or ordered does not matter).

    ``positivity_range``: the y range of all template events (or its ``positivity_quantile``
    quantiles), as ``KDETemplates``.
    """

    kind = "kde_components"
    support = (0.0, 1.0)

    def __init__(self, values: Mapping, *, bandwidth=DEFAULT_BANDWIDTH, grid_size: int = DEFAULT_GRID_SIZE,
                 space: str = DEFAULT_SPACE, clip: float = DEFAULT_LOGIT_CLIP,
                 positivity_quantile: float = DEFAULT_POSITIVITY_QUANTILE, adaptive: bool = DEFAULT_ADAPTIVE,
                 adaptive_classes: int = ADAPTIVE_CLASSES, weights: Mapping | None = None):
        names = _names(values)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ValueError(f"weights given for {unknown}, which are not components of {list(names)}")
        y, w = {}, {}
        for c in names:
            arr = np.asarray(values[c], dtype=float).ravel()
            if c in weights:   # a weighted KDE of this component (KDETemplate); weight-0 events drop out
                w[c] = check_weights(weights[c], arr.size, f"events of component {c!r}")
                arr, w[c] = arr[w[c] > 0], w[c][w[c] > 0]
            if arr.size < 2:
                raise ValueError(f"component {c!r} has {arr.size} event(s); a KDE template needs at least 2")
            if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
                raise ValueError(f"KDE template values of component {c!r} must be finite and inside [0, 1] "
                                 "(network outputs)")
            y[c] = arr
        opts, settings = kde_options(bandwidth=bandwidth, grid_size=grid_size, space=space, clip=clip,
                                     positivity_quantile=positivity_quantile, adaptive=adaptive,
                                     adaptive_classes=adaptive_classes)
        space, clip, adaptive, grid_size = opts["space"], opts["clip"], opts["adaptive"], opts["grid_size"]
        bandwidth, q = settings["bandwidth"], settings["positivity_quantile"]
        z = {c: _to_estimation_space(y[c], space, clip) for c in names}
        h = {}
        for c in names:
            try:
                h[c] = _bandwidth(z[c], bandwidth, w.get(c))
            except ValueError as err:
                raise ValueError(f"component {c!r}: {err}") from None
        # the shared grid, as KDETemplates: all events, the widest bandwidth (order-independent)
        grid = KDETemplate.default_grid(np.concatenate([z[c] for c in names]), max(h.values()), grid_size, space,
                                        adaptive=adaptive)
        self.templates = {c: KDETemplate(y[c], bandwidth=h[c], grid=grid, weights=w.get(c), **opts) for c in names}
        y_all = np.concatenate([y[c] for c in names])
        self.components = names
        self.space, self.clip, self.grid, self.adaptive = space, clip, grid, adaptive
        self.data_range = (float(y_all.min()), float(y_all.max()))
        self.positivity_quantile = q
        if q > 0 and w:
            w_all = np.concatenate([w.get(c, np.ones(y[c].size)) for c in names])
            self.positivity_range = tuple(float(v) for v in weighted_quantile(y_all, w_all, [q, 1.0 - q]))
        else:
            self.positivity_range = (tuple(float(v) for v in np.quantile(y_all, [q, 1.0 - q])) if q > 0
                                     else self.data_range)
        self.settings = settings

    @property
    def bandwidths(self) -> dict[str, float]:
        """Per component: the (pilot) kernel width in the estimation space."""
        return {c: t.bandwidth for c, t in self.templates.items()}

    def _columns(self, key: str) -> np.ndarray:
        return np.stack([getattr(self.templates[c], key) for c in self.components], axis=-1)

    def densities(self, x) -> np.ndarray:
        # one vectorised KDETemplate.pdf per component (a loop over K, not over events)
        return np.stack([self.templates[c].pdf(x) for c in self.components], axis=-1)

    def support_nodes(self) -> np.ndarray:
        """As ``KDETemplates.ratio_range``: the grid nodes inside ``positivity_range``, its two ends
        interpolated, and in logit space the end bins [0, clip] / [1 - clip, 1] (their masses; the
        Jacobian is a common factor per node) where template events reach them. Rows are in the
        estimation space (a positive factor per node, which positivity ignores)."""
        y_lo, y_hi = self.positivity_range
        za, zb = _to_estimation_space(np.asarray([y_lo, y_hi]), self.space, self.clip)
        inside = (self.grid > za) & (self.grid < zb)
        dens = self._columns("density")
        ends = np.stack([np.interp([za, zb], self.grid, dens[:, k]) for k in range(dens.shape[1])], axis=-1)
        rows = [dens[inside], ends]
        if self.space == "logit":
            if y_lo < self.clip:
                rows.append(self._columns("mass_below")[None])
            if y_hi > 1.0 - self.clip:
                rows.append(self._columns("mass_above")[None])
        return np.concatenate(rows)

    def quadrature(self):
        """As ``KDETemplates.fisher_information``: the grid in the estimation space (the Jacobian cancels
        in (p_p - p_r)(p_q - p_r) / p), trapezoid weights, plus the two end-bin masses with weight 1
        (logit); reflect: midpoint weights dz on the cell centres."""
        dens = self._columns("density")
        if self.space == "reflect":
            return dens, np.full(self.grid.size, self.grid[1] - self.grid[0])
        w = _quadrature_weights(self.grid, self.grid.size, None)  # trapezoid
        ends = np.stack([self._columns("mass_below"), self._columns("mass_above")])
        return np.concatenate([dens, ends]), np.concatenate([w, np.ones(2)])

    def tabulate(self, n_points: int = 512):
        # nodes uniform in logit space over the events' range show the tails (as KDETemplates)
        if self.space == "logit":
            lo, hi = _to_estimation_space(np.asarray(self.data_range), self.space, self.clip)
            x = special.expit(np.linspace(lo, hi, n_points))
        else:
            x = np.linspace(0.0, 1.0, n_points)
        return x, self.densities(x)

    def info(self) -> dict:
        """Space, per-component bandwidths, adaptive width-factor ranges and training events."""
        return {"space": self.space, "adaptive": self.adaptive, "bandwidths": self.bandwidths,
                "factor_range": {c: list(t.factor_range) for c, t in self.templates.items()},
                "n_events": {c: int(t.n_events) for c, t in self.templates.items()},
                "positivity_range": list(self.positivity_range)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Shared grid, data_range, positivity_range; each component's ``KDETemplate.to_arrays``
        entries as ``<key>_<component>`` (the layout of ``KDETemplates.to_arrays``)."""
        out = {"grid": self.grid, "data_range": np.asarray(self.data_range, dtype=float),
               "positivity_range": np.asarray(self.positivity_range, dtype=float)}
        for c in self.components:
            out.update({f"{k}_{c}": v for k, v in self.templates[c].to_arrays().items()})
        return out

    @classmethod
    def from_arrays(cls, arrays, *, components, settings) -> KDEComponents:
        """The templates ``to_arrays`` returned; ``settings`` as ``KDEComponents.settings`` (space,
        logit_clip, adaptive and positivity_quantile are used, the rest kept as provenance)."""
        names = _names(components)
        self = cls.__new__(cls)
        space, clip, adaptive = settings["space"], float(settings["logit_clip"]), bool(settings["adaptive"])
        grid = np.asarray(arrays["grid"], dtype=float)
        self.templates = {}
        for c in names:
            sub = {k: arrays[f"{k}_{c}"] for k in KDETemplate.ARRAY_KEYS if f"{k}_{c}" in arrays}
            try:
                self.templates[c] = KDETemplate.from_arrays(sub, grid=grid, space=space, clip=clip, adaptive=adaptive)
            except KeyError as err:
                raise KeyError(f"{err.args[0]}_{c}") from None
        self.components = names
        self.space, self.clip, self.grid, self.adaptive = space, clip, grid, adaptive
        self.data_range = tuple(float(v) for v in arrays["data_range"])
        self.positivity_quantile = float(settings["positivity_quantile"])
        self.positivity_range = tuple(float(v) for v in arrays["positivity_range"])
        if len(self.data_range) != 2 or len(self.positivity_range) != 2:
            raise ValueError("data_range and positivity_range must hold two values")
        self.settings = dict(settings)
        return self
