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
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .components import ComponentTemplates, KDEComponents, _names
from .templates import FFT_FLOOR

__all__ = ["RATIO_CLIP", "RATIO_METHODS", "RatioComponents"]

#: ratios are clipped to [1 / RATIO_CLIP, RATIO_CLIP] (the fitter's first pass runs in float32); where
#: the reference KDE is zero it is floored at FFT_FLOOR x its maximum (its own round-off floor), so
#: each column keeps its own p_k there, and where p_k is zero the ratio is the lower clip
RATIO_CLIP = 1e12
#: how the per-component outputs were made (provenance; the calibration is the same for both)
RATIO_METHODS = ("pairwise", "multiclass")


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
    """

    kind = "ratio_components"
    support = (0.0, 1.0)

    def __init__(self, values: Mapping, *, method: str, **kde):
        names = _names(values)
        if method not in RATIO_METHODS:
            raise ValueError(f"method must be one of {list(RATIO_METHODS)}, got {method!r}")
        m = len(names) - 1
        y = {}
        for c in names:
            arr = np.asarray(values[c], dtype=float)
            if arr.ndim != 2 or arr.shape[1] != m:
                raise ValueError(f"outputs of component {c!r} must have shape (n_events, {m}) (one column per "
                                 f"component but the reference {names[0]!r}), got {arr.shape}")
            y[c] = arr
        self.components = names
        self.calibrations = {k: KDEComponents({c: y[c][:, j] for c in names}, **kde)
                             for j, k in enumerate(names[1:])}
        settings = next(iter(self.calibrations.values())).settings   # the same for every output
        self.nodes = np.concatenate([y[c] for c in names])
        self.node_counts = {c: int(y[c].shape[0]) for c in names}
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
        n = np.array([self.node_counts[c] for c in self.components], dtype=float)
        return r, 1.0 / (r @ n)

    def closure(self, values: Mapping) -> dict:
        """On held-out events ({component: (n_c, K - 1) outputs}): per non-reference k, the mean of r_k
        over reference events and of 1 / r_k over k events (both 1 for a true ratio), with errors."""
        ref = np.asarray(values[self.reference], dtype=float)
        out = {}
        for j, k in enumerate(self.components[1:]):
            r_ref = self.ratio(k, ref[:, j])
            inv_k = 1.0 / self.ratio(k, np.asarray(values[k], dtype=float)[:, j])
            out[k] = {"mean_r_on_reference": float(r_ref.mean()),
                      "mean_r_on_reference_err": float(r_ref.std(ddof=1) / np.sqrt(r_ref.size)),
                      "mean_inverse_r_on_component": float(inv_k.mean()),
                      "mean_inverse_r_on_component_err": float(inv_k.std(ddof=1) / np.sqrt(inv_k.size))}
        return out

    def tabulate(self, n_points: int = 512):
        """The first non-reference output (the pair's: alpha = 1 against alpha = 0): every component's density."""
        return self.calibrations[self.components[1]].tabulate(n_points)

    def info(self) -> dict:
        return {"method": self.method, "reference": self.reference, "support_nodes": int(self.nodes.shape[0]),
                "calibration": {k: cal.info() for k, cal in self.calibrations.items()}}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``nodes`` (n, K - 1), ``node_counts`` (K,), and each calibration's arrays as ``cal_<k>__<key>``."""
        out = {"nodes": self.nodes, "node_counts": np.array([self.node_counts[c] for c in self.components])}
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
        self.settings = dict(settings)
        self._cache = {}
        return self
