"""Calibrated classifier density ratios as K-component templates (the multiclass and pairwise estimators).

A classifier trained to separate component k from a reference component gives an output y_k that
is monotonic in the density ratio p_k(x) / p_ref(x) (paper eq. 9-10; Cranmer, Pavez, Louppe,
arXiv:1506.02169): pairwise, y_k = P(k | x) of a binary k-vs-ref network; multiclass, y_k =
s_k / (s_k + s_ref) of one K-way softmax. Calibrating each y_k with 1-D densities of it on the
template split (events no network trained on) turns it into a ratio,

    r_k(x) = p_k(y_k(x)) / p_ref(y_k(x)),    r_ref = 1,

as carl (diana-hep/carl) calibrates its pairwise classifiers. The mixture p(x|f) = sum_k f_k p_k(x)
is then p_ref(x) sum_k f_k r_k(x): a per-event factor that no fraction changes, so the K-fraction
fitter takes the ratios as its "densities" unchanged.

The ``ratio`` estimator needs no calibration: its networks are trained with a likelihood-ratio loss
(hpcmix.train.losses), so their output u_k is omega(p_k / p_ref) already and r_k = omega^-1(u_k)
(``DirectRatioTemplates`` for two components, ``DirectRatioComponents`` for more). Its calibrated
variant (``ratio_calibrated``) feeds r_k / (1 + r_k) to the same KDE calibration as the classifiers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .components import ComponentTemplates, KDEComponents, _names
from .templates import FFT_FLOOR, MixtureTemplates, check_weights, limits_from_ratio_range

__all__ = ["RATIO_CLIP", "RATIO_METHODS", "DirectRatioComponents", "DirectRatioTemplates", "RatioComponents",
           "ratio_closure"]

#: ratios are clipped to [1 / RATIO_CLIP, RATIO_CLIP] (the fitter's first pass runs in float32); where
#: the reference KDE is zero it is floored at FFT_FLOOR x its maximum (its own round-off floor), so
#: each column keeps its own p_k there, and where p_k is zero the ratio is the lower clip
RATIO_CLIP = 1e12
#: how the per-component outputs were made (provenance; the calibration is the same for all):
#: binary classifiers, one K-class softmax, or likelihood-ratio-loss networks (ratio_calibrated)
RATIO_METHODS = ("pairwise", "multiclass", "likelihood_ratio")


class RatioComponents(ComponentTemplates):
    """K components as calibrated density ratios to the first (reference) component.

    ``values``: {component: (n_c, K - 1) classifier outputs y in [0, 1] on that component's template
    events}, in component order, the reference first; column j belongs to the j-th non-reference
    component. Each column gets a ``KDEComponents`` of y_j over all K components (the template
    settings of the nn estimator, ``kde``); the ratio uses its k and reference densities.

    ``densities(x)``: x (..., K - 1) outputs -> (..., K) ratios (reference column 1). The template
    events are also the nodes of ``support_nodes`` and ``quadrature``: pooled over the components
    (n_c events each), the weights 1 / sum_c n_c r_c(x_n) make sum_n w_n g(r(x_n)) a Monte Carlo
    estimate of the integral of g(p) for every g homogeneous of degree one in p, as the Fisher
    integrand (p_p - p_r)(p_q - p_r) / p is; the bound assumes the calibrated ratios are the truth.

    ``weights``: {component: one weight >= 0 per template event} (templates.weights, a reweighted
    component). Each calibration is then a weighted KDE of that component's outputs (the networks stay
    as trained: any output, calibrated, gives a normalised ratio of its own 1-D densities), events of
    weight 0 drop out of the nodes, and the quadrature weights become w_n / sum_c W_c r_c(x_n), W_c the
    sum of component c's weights (a node of component c stands for w_n / W_c of p_c).
    """

    kind = "ratio_components"
    support = (0.0, 1.0)

    def __init__(self, values: Mapping, *, method: str, weights: Mapping | None = None, **kde):
        names = _names(values)
        if method not in RATIO_METHODS:
            raise ValueError(f"method must be one of {list(RATIO_METHODS)}, got {method!r}")
        m = len(names) - 1
        arrays = []
        for c in names:
            arr = np.asarray(values[c], dtype=float)
            if arr.ndim != 2 or arr.shape[1] != m:
                raise ValueError(f"outputs of component {c!r} must have shape (n_events, {m}) (one column per "
                                 f"component but the reference {names[0]!r}), got {arr.shape}")
            arrays.append(arr)
        # weight-0 events are no part of a reweighted component: no node, no kernel
        arrays, node_weights = _positive(names, arrays, weights)
        y = dict(zip(names, arrays))
        bounds = np.cumsum([0] + [a.shape[0] for a in arrays])
        w = ({} if node_weights is None else
             {c: node_weights[a:b] for c, a, b in zip(names, bounds[:-1], bounds[1:]) if c in (weights or {})})
        self.components = names
        self.calibrations = {k: KDEComponents({c: y[c][:, j] for c in names}, weights=w or None, **kde)
                             for j, k in enumerate(names[1:])}
        settings = next(iter(self.calibrations.values())).settings   # the same for every output
        self.nodes = np.concatenate(arrays)
        self.node_counts = {c: int(y[c].shape[0]) for c in names}
        # per node: its event's weight (1 for an unweighted component); None when no component is weighted
        self.node_weights = node_weights
        self.settings = {**settings, "method": method, "reference": names[0], "ratio_clip": RATIO_CLIP}
        self._cache = {}

    @property
    def reference(self) -> str:
        return self.components[0]

    @property
    def method(self) -> str:
        return self.settings["method"]

    def ratio(self, component, y) -> np.ndarray:
        """r_k at outputs y_k (any shape) of component k's own classifier, clipped to [1/RATIO_CLIP, RATIO_CLIP]."""
        k = self.components[self.index(component)]
        if k == self.reference:
            return np.ones(np.shape(y))
        cal = self.calibrations[k]
        ref = cal.templates[self.reference]
        p_k, p_ref = cal.templates[k].pdf(y), ref.pdf(y)
        floor = FFT_FLOOR * float(np.max(ref.density))
        return np.clip(p_k / np.maximum(p_ref, floor), 1.0 / RATIO_CLIP, RATIO_CLIP)

    def densities(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        m = self.n_components - 1
        if x.ndim < 1 or x.shape[-1] != m:
            raise ValueError(f"ratio templates take the {m} classifier outputs per event as the last axis, "
                             f"got shape {x.shape}")
        cols = [np.ones(x.shape[:-1])] + [self.ratio(k, x[..., j]) for j, k in enumerate(self.components[1:])]
        return np.stack(cols, axis=-1)

    def _node_ratios(self) -> np.ndarray:
        # computed once: every cell's bound and every toy batch's support use the same nodes
        if "nodes" not in self._cache:
            self._cache["nodes"] = self.densities(self.nodes)
        return self._cache["nodes"]

    def support_nodes(self) -> np.ndarray:
        """The ratios at every template event: where the fitted mixture must stay >= 0."""
        return self._node_ratios()

    def quadrature(self):
        r = self._node_ratios()
        if self.node_weights is None:
            n = np.array([self.node_counts[c] for c in self.components], dtype=float)
            return r, 1.0 / (r @ n)
        bounds = np.cumsum([0] + [self.node_counts[c] for c in self.components])
        total = np.array([self.node_weights[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])])
        return r, self.node_weights / (r @ total)

    def closure(self, values: Mapping, weights: Mapping | None = None) -> dict:
        """On held-out events ({component: (n_c, K - 1) outputs}): per non-reference k, the mean of r_k
        over reference events and of 1 / r_k over k events (both 1 for a true ratio), with errors;
        ``weights`` ({component: per-event weights}): weighted means for a reweighted component."""
        weights = weights or {}
        ref = np.asarray(values[self.reference], dtype=float)
        return {k: ratio_closure(self.ratio(k, ref[:, j]), self.ratio(k, np.asarray(values[k], dtype=float)[:, j]),
                                 w_ref=weights.get(self.reference), w_k=weights.get(k))
                for j, k in enumerate(self.components[1:])}

    def tabulate(self, n_points: int = 512):
        """The first non-reference output (the pair's: alpha = 1 against alpha = 0): every component's density."""
        return self.calibrations[self.components[1]].tabulate(n_points)

    def info(self) -> dict:
        return {"method": self.method, "reference": self.reference, "support_nodes": int(self.nodes.shape[0]),
                "calibration": {k: cal.info() for k, cal in self.calibrations.items()}}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``nodes`` (n, K - 1), ``node_counts`` (K,), ``node_weights`` (n,) where a component is weighted,
        and each calibration's arrays as ``cal_<k>__<key>``."""
        out = {"nodes": self.nodes, "node_counts": np.array([self.node_counts[c] for c in self.components])}
        if self.node_weights is not None:
            out["node_weights"] = self.node_weights
        for k, cal in self.calibrations.items():
            out.update({f"cal_{k}__{key}": v for key, v in cal.to_arrays().items()})
        return out

    @classmethod
    def from_arrays(cls, arrays, *, components, settings) -> RatioComponents:
        names = _names(components)
        self = cls.__new__(cls)
        kde_settings = {k: v for k, v in settings.items() if k not in ("method", "reference", "ratio_clip")}
        self.components = names
        if settings.get("reference") != names[0] or settings.get("method") not in RATIO_METHODS:
            raise ValueError(f"settings reference {settings.get('reference')!r} / method {settings.get('method')!r} "
                             f"do not fit components {list(names)}")
        if settings.get("ratio_clip") != RATIO_CLIP:
            raise ValueError(f"the ratios were clipped at {settings.get('ratio_clip')!r}, this hpcmix clips at "
                             f"{RATIO_CLIP:g}")
        self.calibrations = {}
        for k in names[1:]:
            prefix = f"cal_{k}__"
            sub = {key[len(prefix):]: v for key, v in arrays.items() if key.startswith(prefix)}
            self.calibrations[k] = KDEComponents.from_arrays(sub, components=names, settings=kde_settings)
        self.nodes = np.asarray(arrays["nodes"], dtype=float)
        counts = np.asarray(arrays["node_counts"])
        if self.nodes.ndim != 2 or self.nodes.shape[1] != len(names) - 1 or counts.shape != (len(names),) \
                or int(counts.sum()) != self.nodes.shape[0]:
            raise ValueError(f"nodes {self.nodes.shape} and node_counts {counts.shape} do not fit {len(names)} components")
        self.node_counts = {c: int(n) for c, n in zip(names, counts)}
        self.node_weights = _node_weights(arrays, self.nodes.shape[0])
        self.settings = dict(settings)
        self._cache = {}
        return self


def _node_weights(arrays, n: int) -> np.ndarray | None:
    """The stored ``node_weights`` (one positive weight per node), or None for unweighted templates."""
    if "node_weights" not in arrays:
        return None
    w = np.asarray(arrays["node_weights"], dtype=float)
    if w.shape != (n,) or not np.all(w > 0):
        raise ValueError(f"node_weights {w.shape} must be one positive weight per node ({n})")
    return w


def _positive(names, values: list, weights: Mapping | None):
    """Per component its outputs without the weight-0 events, and the node weights (None if unweighted)."""
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"weights given for {unknown}, which are not components of {list(names)}")
    if not weights:
        return values, None
    out, w = [], []
    for c, v in zip(names, values):
        wc = np.ones(v.shape[0]) if c not in weights else check_weights(weights[c], v.shape[0],
                                                                        f"events of component {c!r}")
        out.append(v[wc > 0])
        w.append(wc[wc > 0])
    if min(v.shape[0] for v in out) < 2:
        raise ValueError("each component needs at least two template events of positive weight")
    return out, np.concatenate(w)


def _weighted_mean(v: np.ndarray, w: np.ndarray | None):
    """The mean over the first axis (the normalisations c); weighted: sum w v / sum w."""
    if w is None:
        return v.mean(axis=0)
    # numpy's own (pairwise) sum, not a BLAS product: the loaders compare the stored normalisation
    # exactly, and BLAS rounding depends on the thread count and the CPU
    return (w.reshape((-1,) + (1,) * (v.ndim - 1)) * v).sum(axis=0) / w.sum()


# --------------------------------------------------------------------------- direct ratios (the ratio estimator)


def _loss(name):
    from ..train.losses import RATIO_CLIP as LOSS_CLIP, get_loss

    assert LOSS_CLIP == RATIO_CLIP   # one clip for calibrated and direct ratios
    return get_loss(name)


def _mean_and_error(v: np.ndarray, w: np.ndarray | None) -> tuple[float, float]:
    """The mean and its error; weighted: sum w v / sum w and sqrt(sum w^2 (v - mean)^2) / sum w, times
    sqrt(n / (n - 1)) for the n events of positive weight (unit weights: the unweighted error)."""
    if w is None:
        return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))
    w = np.asarray(w, dtype=float).reshape(-1)
    if w.shape != v.shape:
        raise ValueError(f"{w.size} weights for {v.size} events")
    mean = float((w * v).sum() / w.sum())
    n = int((w > 0).sum())
    if n < 2:
        return mean, float("nan")
    return mean, float(np.sqrt((w * w * (v - mean) ** 2).sum() * n / (n - 1)) / w.sum())


def ratio_closure(r_ref: np.ndarray, r_k: np.ndarray, *, w_ref=None, w_k=None) -> dict:
    """Mean of r over reference events and of 1 / r over component-k events, with errors (both 1 if r is
    true); ``w_ref`` / ``w_k``: the events' weights where that component is reweighted."""
    r_ref, r_k = np.asarray(r_ref, dtype=float), np.asarray(r_k, dtype=float)
    m_ref, e_ref = _mean_and_error(r_ref, w_ref)
    m_k, e_k = _mean_and_error(1.0 / r_k, w_k)
    return {"mean_r_on_reference": m_ref, "mean_r_on_reference_err": e_ref,
            "mean_inverse_r_on_component": m_k, "mean_inverse_r_on_component_err": e_k}


class DirectRatioTemplates(MixtureTemplates):
    """Two components from a likelihood-ratio network: p_A / p_H = r(u) = omega^-1(u) / c, no KDE.

    ``values``: {alpha = 0 component: u on its template events, alpha = 1 component: u on its}, that
    order. ``densities(u)`` is (r(u), 1): the likelihood of alpha needs p_A / p_H only (p_H(x) is a
    factor no alpha changes). The one constant c is the mean of omega^-1(u) over the alpha = 0
    template events, so that p_A = r p_H integrates to one: where the two components differ little,
    a normalisation error of the network's ratio as small as its chi^2 distance would move alpha_hat
    by order one (observed: 0.7 % in the mean of r over H events moved alpha_hat from 0.5 to 2.1 for
    the smeared study). The template events are the nodes of the positivity rule (the range
    of r over them) and of the Fisher information, a Monte Carlo integral over the pooled nodes with
    weights 1 / (n_H + n_A r): sum_n (r_n - 1)^2 / (1 + alpha (r_n - 1)) / (n_H + n_A r_n).

    ``weights``: {component: one weight >= 0 per template event} for a reweighted component, whose
    network must have trained on the same weights (the train stage does so under templates.weights):
    c is then the weighted mean over the alpha = 0 events, weight-0 events are no nodes, and the node
    weights are w_n / (W_H + W_A r_n), W the components' sums of weights.
    """

    kind = "direct_ratio"

    def __init__(self, values: Mapping, *, loss: str, weights: Mapping | None = None):
        names = _names(values)
        if len(names) != 2:
            raise ValueError(f"DirectRatioTemplates take two components, got {list(names)}; use DirectRatioComponents")
        u = [np.asarray(values[c], dtype=float).reshape(-1) for c in names]
        if min(v.size for v in u) < 2 or not all(np.isfinite(v).all() for v in u):
            raise ValueError("each component needs at least two finite network outputs")
        u, w = _positive(names, u, weights)
        pair = _loss(loss)
        norm = _weighted_mean(pair.ratio(u[0]), None if w is None else w[:u[0].size])
        self._setup(names, np.concatenate(u), {c: v.size for c, v in zip(names, u)},
                    {"loss": pair.name, "omega": pair.omega, "ratio_clip": RATIO_CLIP}, norm, w)

    def _setup(self, names, nodes, counts, settings, norm, node_weights=None):
        self.components, self.nodes, self.node_counts, self.settings = tuple(names), nodes, dict(counts), settings
        self.node_weights = node_weights
        self.pair = _loss(settings["loss"])
        self.norm = float(norm)
        if not (np.isfinite(self.norm) and self.norm > 0):
            raise ValueError(f"the network's ratios average {self.norm!r} over the reference events; retrain it")
        self.lo, self.hi = float(nodes.min()), float(nodes.max())
        self.r_nodes = self.ratio(nodes)

    def ratio(self, u) -> np.ndarray:
        """p_A / p_H at network outputs u: omega^-1(u) / c (see the class docstring)."""
        return np.clip(self.pair.ratio(u) / self.norm, 1.0 / RATIO_CLIP, RATIO_CLIP)

    @property
    def support(self) -> tuple[float, float]:
        return (self.lo, self.hi)

    def densities(self, x):
        r = self.ratio(x)
        return r, np.ones_like(r)

    @property
    def ratio_range(self) -> tuple[float, float]:
        return float(self.r_nodes.min()), float(self.r_nodes.max())

    def positivity_limits(self) -> tuple[float, float]:
        return limits_from_ratio_range(*self.ratio_range)

    def fisher_information(self, alpha) -> np.ndarray:
        n0, n1 = (self.node_counts[c] for c in self.components)
        r = self.r_nodes
        alpha = np.asarray(alpha, dtype=float)
        p = 1.0 + alpha[..., None] * (r - 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(p > 0, (r - 1.0) ** 2 / p, 0.0)
        if self.node_weights is None:
            return np.sum(term / (n0 + n1 * r), axis=-1)
        w = self.node_weights
        return np.sum(term * w / (w[:n0].sum() + w[n0:].sum() * r), axis=-1)

    def tabulate(self, n_points: int = 512):
        """(u, p_A(u), p_H(u)) as histograms of u on the template events (for the figures only)."""
        n0 = self.node_counts[self.components[0]]
        edges = np.linspace(self.lo, self.hi, min(int(n_points), 64) + 1)
        w = self.node_weights
        p_h = np.histogram(self.nodes[:n0], edges, density=True, weights=None if w is None else w[:n0])[0]
        p_a = np.histogram(self.nodes[n0:], edges, density=True, weights=None if w is None else w[n0:])[0]
        return 0.5 * (edges[1:] + edges[:-1]), p_a, p_h

    def closure(self, values: Mapping, weights: Mapping | None = None) -> dict:
        """{alpha = 1 component: mean r over held-out alpha = 0 events and mean 1 / r over its own}
        (weighted means for a component with ``weights``)."""
        zero, one = self.components
        weights = weights or {}
        return {one: ratio_closure(self.ratio(np.asarray(values[zero], dtype=float)),
                                 self.ratio(np.asarray(values[one], dtype=float)),
                                 w_ref=weights.get(zero), w_k=weights.get(one))}

    def info(self) -> dict:
        return {"loss": self.settings["loss"], "omega": self.settings["omega"], "support_nodes": int(self.nodes.size),
                "ratio_range": list(self.ratio_range), "normalisation": self.norm}

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"nodes": self.nodes, "node_counts": np.array([self.node_counts[c] for c in self.components]),
               "norm": np.asarray(self.norm)}
        if self.node_weights is not None:
            out["node_weights"] = self.node_weights
        return out

    @classmethod
    def from_arrays(cls, arrays, *, components, settings) -> DirectRatioTemplates:
        names = _names(components)
        if settings.get("ratio_clip") != RATIO_CLIP:
            raise ValueError(f"the ratios were clipped at {settings.get('ratio_clip')!r}, this hpcmix clips at "
                             f"{RATIO_CLIP:g}")
        nodes, counts = np.asarray(arrays["nodes"], dtype=float), np.asarray(arrays["node_counts"])
        if nodes.ndim != 1 or counts.shape != (2,) or int(counts.sum()) != nodes.size:
            raise ValueError(f"nodes {nodes.shape} and node_counts {counts.shape} do not fit two components")
        self = cls.__new__(cls)
        n0 = int(counts[0])
        w = _node_weights(arrays, nodes.shape[0])
        norm = _weighted_mean(_loss(settings["loss"]).ratio(nodes[:n0]), None if w is None else w[:n0])
        if norm != float(arrays["norm"]):
            raise ValueError(f"the stored normalisation {float(arrays['norm'])!r} is not the mean ratio {norm!r} of "
                             "its reference nodes")
        self._setup(names, nodes, dict(zip(names, map(int, counts))), dict(settings), norm, w)
        return self


class DirectRatioComponents(RatioComponents):
    """K components from K - 1 likelihood-ratio networks (k against the reference): r_k = omega^-1(u_k).

    ``values``: {component: (n_c, K - 1) outputs u on its template events}, reference first, as for
    ``RatioComponents``; the nodes, the positivity support, the quadrature and the closure are that
    class's, the ratios need no calibration, only each its normalisation (``DirectRatioTemplates``):
    r_k = omega^-1(u_k) / c_k, c_k the mean of omega^-1(u_k) over the reference's template events.
    ``weights`` as for ``DirectRatioTemplates`` (networks trained on the same weights): weighted
    c_k, and the node weights of ``RatioComponents``.
    """

    kind = "direct_ratio_components"

    def __init__(self, values: Mapping, *, loss: str, weights: Mapping | None = None):
        names = _names(values)
        m = len(names) - 1
        y = []
        for c in names:
            arr = np.asarray(values[c], dtype=float)
            if arr.ndim != 2 or arr.shape[1] != m or not np.isfinite(arr).all():
                raise ValueError(f"outputs of component {c!r} must be finite, of shape (n_events, {m}) (one column "
                                 f"per component but the reference {names[0]!r}), got {arr.shape}")
            y.append(arr)
        y, w = _positive(names, y, weights)
        pair = _loss(loss)
        self.components = names
        self.calibrations = {}
        self.nodes = np.concatenate(y)
        self.node_counts = {c: int(v.shape[0]) for c, v in zip(names, y)}
        self.node_weights = w
        self.settings = {"loss": pair.name, "omega": pair.omega, "reference": names[0], "ratio_clip": RATIO_CLIP}
        self.pair = pair
        self._set_norms(_weighted_mean(pair.ratio(y[0]), None if w is None else w[:y[0].shape[0]]))

    def _set_norms(self, norms):
        norms = np.asarray(norms, dtype=float).reshape(-1)
        if norms.shape != (self.n_components - 1,) or not np.all(np.isfinite(norms) & (norms > 0)):
            raise ValueError(f"the networks' ratios average {norms.tolist()} over the reference events; retrain them")
        self.norms = dict(zip(self.components[1:], norms.tolist()))
        self._cache = {}

    @property
    def method(self) -> str:
        return "likelihood_ratio"

    @property
    def support(self) -> tuple[float, float]:
        """The range of the outputs u over the template events (u is any real number, not a probability)."""
        return float(self.nodes.min()), float(self.nodes.max())

    def ratio(self, component, y) -> np.ndarray:
        k = self.components[self.index(component)]
        if k == self.reference:
            return np.ones(np.shape(y))
        return np.clip(self.pair.ratio(y) / self.norms[k], 1.0 / RATIO_CLIP, RATIO_CLIP)

    def tabulate(self, n_points: int = 512):
        """Histograms of the first network's output u_1 on every component's template events (figures only)."""
        u, w = self.nodes[:, 0], self.node_weights
        edges = np.linspace(u.min(), u.max(), min(int(n_points), 64) + 1)
        bounds = np.cumsum([0] + [self.node_counts[c] for c in self.components])
        dens = np.stack([np.histogram(u[a:b], edges, density=True, weights=None if w is None else w[a:b])[0]
                         for a, b in zip(bounds[:-1], bounds[1:])], axis=-1)
        return 0.5 * (edges[1:] + edges[:-1]), dens

    def info(self) -> dict:
        return {"loss": self.settings["loss"], "omega": self.settings["omega"], "reference": self.reference,
                "support_nodes": int(self.nodes.shape[0]), "normalisation": dict(self.norms)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"nodes": self.nodes, "node_counts": np.array([self.node_counts[c] for c in self.components]),
               "norms": np.array([self.norms[k] for k in self.components[1:]])}
        if self.node_weights is not None:
            out["node_weights"] = self.node_weights
        return out

    @classmethod
    def from_arrays(cls, arrays, *, components, settings) -> DirectRatioComponents:
        names = _names(components)
        if settings.get("reference") != names[0]:
            raise ValueError(f"settings reference {settings.get('reference')!r} does not fit components {list(names)}")
        if settings.get("ratio_clip") != RATIO_CLIP:
            raise ValueError(f"the ratios were clipped at {settings.get('ratio_clip')!r}, this hpcmix clips at "
                             f"{RATIO_CLIP:g}")
        nodes, counts = np.asarray(arrays["nodes"], dtype=float), np.asarray(arrays["node_counts"])
        if nodes.ndim != 2 or nodes.shape[1] != len(names) - 1 or counts.shape != (len(names),) \
                or int(counts.sum()) != nodes.shape[0]:
            raise ValueError(f"nodes {nodes.shape} and node_counts {counts.shape} do not fit {len(names)} components")
        self = cls.__new__(cls)
        self.components, self.calibrations, self.nodes = names, {}, nodes
        self.node_weights = w = _node_weights(arrays, nodes.shape[0])
        self.node_counts = {c: int(n) for c, n in zip(names, counts)}
        self.settings, self.pair = dict(settings), _loss(settings["loss"])
        n0 = self.node_counts[names[0]]
        norms = _weighted_mean(self.pair.ratio(nodes[:n0]), None if w is None else w[:n0])
        if not np.array_equal(norms, np.asarray(arrays["norms"], dtype=float)):
            raise ValueError(f"the stored normalisations {np.asarray(arrays['norms']).tolist()} are not the mean "
                             f"ratios {norms.tolist()} of their reference nodes")
        self._set_norms(norms)
        return self
