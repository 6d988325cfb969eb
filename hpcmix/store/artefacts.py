"""Versioned stage artefacts as plain NumPy ``.npz`` files: templates, test pools and toy batches.

All files hold only numeric / boolean / string arrays (no pickled objects) and load with
numpy alone::

    import json, numpy as np
    with np.load("templates/nn-detector/templates.npz", allow_pickle=False) as f:
        meta = json.loads(f["meta"].item())
        arrays = {k: f[k] for k in f.files}

``meta`` is a 0-d unicode array holding a JSON object. Every file's meta has ``format`` (an
integer, raised whenever the layout changes incompatibly), ``kind``, ``components`` (the
mixture components by name, e.g. ``["H", "A"]``: for the two-component kinds the first is the
alpha = 0 component, the second the alpha = 1 one, p(x|alpha) = (1 - alpha) p_first + alpha
p_second; the K-component kinds list K >= 2 names, the order of their last array axis) and
``hpcmix_version``. Per-component arrays end in ``_<name>``.

templates.npz (``TEMPLATES_FORMAT`` = 1)
-----------------------------------------
meta: format, kind (``"phi_star"`` or ``"kde"``), components, ``densities`` ({name: array
name of its density}), ``grid_variable`` (what ``grid`` is: ``"phi_star"``, ``"logit(y)"`` or
``"y"``), ``settings`` (what made the templates), hpcmix_version.

Arrays of both kinds:

* ``grid`` (n,), ``density_<name>`` (n,): each component's density at the grid nodes, in
  the grid variable.
* ``support`` (2,): (lo, hi) of x. ``positivity_limits`` (2,): (alpha_min, alpha_max) keeping
  p(x|alpha) >= 0 (may be -inf / inf).

kind ``phi_star`` (x = phi* in [0, 2 pi)): the model is c - a cos x for the first (alpha = 0,
by default H) component and c + a cos x for the second (A). 0-d arrays ``a``, ``a_err``, ``c``, ``c_err``, ``n_events``
(labelled events the fit of a used); ``grid`` is 512 nodes on [0, 2 pi] for plots.

kind ``kde`` (x = network output y in [0, 1]): ``density_<name>`` is the density of
z = logit(clip(y, clip, 1 - clip)) (``grid_variable`` ``"logit(y)"``, settings ``space``
``"logit"``) or of z = y (``"y"``, space ``"reflect"``) on an equally spaced grid; hpcmix
interpolates linearly between nodes. So p(y) is::

    logit: np.interp(np.log(y / (1 - y)), grid, density) / (y (1 - y))  for clip <= y <= 1 - clip,
           mass_below / clip for y < clip, mass_above / clip for y > 1 - clip
           (clip = settings["logit_clip"]; 0 outside the grid)
    reflect: np.interp(y, grid, density)

Per component also ``cum_<name>`` (logit only: the cumulative distribution at the nodes),
``mass_below_<name>`` / ``mass_above_<name>`` (probability in [0, clip] and [1 - clip, 1]),
``bandwidth_<name>`` (pilot kernel width in z), ``n_events_<name>``, ``data_range_<name>``,
``factor_range_<name>`` (min, max adaptive width factor), ``pilot_geometric_mean_<name>``;
shared ``data_range`` and ``positivity_range`` (the y range the positivity rule used).
settings: space, bandwidth (rule or number), adaptive, grid_size, logit_clip,
positivity_quantile, adaptive_classes.

kind ``phi_star_components`` (K components, x = phi*; ``hpcmix.stats.PhiStarComponents``): meta
also has ``pair`` (the alpha = 0 and alpha = 1 components, also in settings). Arrays ``a``,
``a_err``, ``c`` (0-d: the pair's model c -+ a cos x, first component minus), ``coefficients``
and ``coefficient_errors`` (K, 2): (b_k, s_k) of p_k = (1 + b_k cos x + s_k sin x) / (2 pi) per
component (the pair's rows are its model written that way, (-+ 2 pi a, 0)), ``n_events`` (K,)
(training events per component); ``grid`` (512 nodes on [0, 2 pi]) and ``density_<name>`` for
plots; ``support``. settings: pair, fourier_order, support_nodes.

kind ``kde_components`` (K components, x = y; ``hpcmix.stats.KDEComponents``): the arrays of kind
``kde`` for each of the K components (``density_<name>``, ``cum_<name>``, ...), shared ``grid``,
``data_range``, ``positivity_range`` (of all K components' template events) and ``support``;
same settings. Neither K kind stores positivity limits: with K > 2 they depend on the nuisance
fractions (``fit_fractions`` gets them from ``support_nodes()``).

kind ``ratio_components`` (K components, x = the K - 1 classifier outputs per event;
``hpcmix.stats.RatioComponents``): ``nodes`` (n, K - 1, the template events' outputs, all
components pooled), ``node_counts`` (K,), and per non-reference component k the arrays of kind
``kde_components`` of its output's calibration as ``cal_<k>__<key>``; ``support``; with weighted
template events (templates.weights) also ``node_weights`` (n,), each node's event weight (1 for an
unweighted component; weight-0 events are no nodes). settings: the
KDE settings plus method (pairwise | multiclass | likelihood_ratio), reference, ratio_clip.

kind ``direct_ratio`` (two components, x = the output u of a likelihood-ratio network;
``hpcmix.stats.DirectRatioTemplates``) and ``direct_ratio_components`` (K components, x = the
K - 1 outputs; ``hpcmix.stats.DirectRatioComponents``): ``nodes`` (the template events' outputs,
all components pooled: (n,) or (n, K - 1)), ``node_counts``, ``support``, the normalisation of
the ratio(s) (``norm``, 0-d, or ``norms`` (K - 1,): weighted means where the reference is
weighted), ``node_weights`` as for ``ratio_components`` where weighted; ``direct_ratio`` also ``positivity_limits``. settings: loss, omega (log | ratio), ratio_clip (and reference for K). No
density tables: r = omega^-1(u) is the network's.

batch-NNNNN.npz (``TOY_BATCH_FORMAT`` = 1): one batch of fitted toys
--------------------------------------------------------------------
meta: format, kind ``"toy_batch"``, components, ``fit_fields`` (the per-toy array names),
``uses`` ({name: array name}), ``n_toys``, hpcmix_version. Arrays: the per-toy fit results
(n_toys,) ``alpha_hat``, ``sigma_hat``, ``interval_lo``, ``interval_hi``, ``lr_stat``,
``converged``, ``at_limit``, ``interval_clipped``, ``n_events``, ``n_iter`` (see
``hpcmix.stats.MixtureFit``); ``uses_<name>`` (pool size,): how many toys used each event of
that component's test pool; ``max_uses`` (0-d) and ``note`` (0-d string: the reuse summary).

test_pool.npz (``TEST_POOL_FORMAT`` = 1): a templates folder's test pool
---------------------------------------------------------------------
meta: format, kind ``"test_pool"``, components (two, or K for K-component templates),
hpcmix_version. Arrays: ``values_<c>`` (the estimator's variable for component c's test events)
and ``density_<d>_on_<c>`` (component d's template density at those events), for every pair
(d, c) of components.

fraction batch (``FRACTION_BATCH_FORMAT`` = 1): one batch of K-component toy fits
--------------------------------------------------------------------------------
meta: format, kind ``"fraction_batch"``, components (K), ``treatments`` (the nuisance
treatments fitted, e.g. ``["fixed", "floated", "constrained"]``), ``fit_fields`` (the
``hpcmix.stats.FractionFit`` fields), ``uses`` ({name: array name}), ``centres`` ({component:
array name}), ``n_toys``, hpcmix_version. Arrays: ``<treatment>__<field>`` for every treatment
and field, shape (n_toys,) except ``<treatment>__fractions`` (n_toys, K) and
``<treatment>__alpha_limits`` (n_toys, 2); ``uses_<name>``, ``max_uses``, ``note`` as in a toy
batch; ``centre_<component>`` (n_toys,): the per-toy constraint centres of the constrained
components (the same toys in every treatment).

Two-component files are unchanged by the K-component kinds (same kinds, formats and arrays).
Files are written atomically (a temporary name, then ``os.replace``). Readers refuse, with
``ArtefactFormatError``, the pickles older hpcmix versions wrote (``templates.pkl``,
``batch-*.pkl``), files of another format number, and missing or malformed meta.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from ..errors import HpcmixError

if TYPE_CHECKING:  # hpcmix.stats (scipy) is imported on first use: the event store does not need it
    from ..stats.fitter import MixtureFit
    from ..stats.fractions import FractionFit

__all__ = [
    "FRACTION_BATCH_FORMAT",
    "TEMPLATES_FILE",
    "TEMPLATES_FORMAT",
    "TEST_POOL_FILE",
    "TEST_POOL_FORMAT",
    "TOY_BATCH_FORMAT",
    "ArtefactFormatError",
    "FractionBatch",
    "PoolDensities",
    "PoolUses",
    "ToyBatch",
    "load_fraction_batch",
    "load_templates",
    "load_test_pool",
    "load_toy_batch",
    "read_meta",
    "save_fraction_batch",
    "save_templates",
    "save_test_pool",
    "save_toy_batch",
]

TEMPLATES_FORMAT = 1
TOY_BATCH_FORMAT = 1
TEST_POOL_FORMAT = 1
FRACTION_BATCH_FORMAT = 1
TEMPLATES_FILE = "templates.npz"
TEST_POOL_FILE = "test_pool.npz"
_OLD_TEMPLATES_FILE = "templates.pkl"
_PHI_STAR_TABLE_POINTS = 512
_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_RERUN = {"templates": "rerun the templates stage (e.g. `hpcmix templates ...` or `hpcmix run JOB`)",
          "toy_batch": "rerun the toys stage (e.g. `hpcmix toys ...` or `hpcmix run JOB`)",
          "test_pool": "rerun the templates stage (e.g. `hpcmix templates ...` or `hpcmix run JOB`)",
          "fraction_batch": "rerun the toys stage (e.g. `hpcmix toys ...` or `hpcmix run JOB`)"}
_FORMATS = {"templates": TEMPLATES_FORMAT, "toy_batch": TOY_BATCH_FORMAT, "test_pool": TEST_POOL_FORMAT,
            "fraction_batch": FRACTION_BATCH_FORMAT}
_KINDS = {"templates": ("phi_star", "kde", "direct_ratio", "phi_star_components", "kde_components", "ratio_components",
                        "direct_ratio_components"), "toy_batch": ("toy_batch",),
          "test_pool": ("test_pool",), "fraction_batch": ("fraction_batch",)}
_LABELS = {"templates": "templates", "toy_batch": "toy batch", "test_pool": "test pool",
           "fraction_batch": "fraction batch"}
# kinds that hold exactly two components (the alpha = 0 one first); all others hold K >= 2
_TWO_COMPONENT_KINDS = ("phi_star", "kde", "direct_ratio", "toy_batch")
_TREATMENT = re.compile(r"^[A-Za-z0-9]+(_[A-Za-z0-9]+)*$")  # no "__": it separates treatment and field


class ArtefactFormatError(HpcmixError, ValueError):
    """A stage artefact this hpcmix does not read: an old pickle, another format, or bad meta."""


@dataclass(frozen=True, eq=False)
class PoolUses:
    """How many toys of a batch used each test-pool event, per component (two: alpha = 0 first; or K)."""

    uses: dict[str, np.ndarray]
    max_uses: int

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(self.uses)

    @property
    def uses_h(self) -> np.ndarray:
        """Uses of the alpha = 0 component's pool events (p_H)."""
        return self.uses[self.components[0]]

    @property
    def uses_a(self) -> np.ndarray:
        """Uses of the alpha = 1 component's pool events (p_A)."""
        return self.uses[self.components[1]]


@dataclass(frozen=True, eq=False)
class ToyBatch:
    """One stored batch of toys: the fit results, the pool reuse counts and the reuse note."""

    fit: MixtureFit
    draw: PoolUses
    note: str


@dataclass(frozen=True, eq=False)
class FractionBatch:
    """One stored batch of K-component toy fits: per treatment, the fit results; the pool reuse counts,
    the reuse note and the per-toy constraint centres ({component: (n_toys,)})."""

    fits: dict[str, FractionFit]
    draw: PoolUses
    note: str
    centres: dict[str, np.ndarray]

    @property
    def components(self) -> tuple[str, ...]:
        return self.draw.components

    @property
    def n_toys(self) -> int:
        return len(next(iter(self.fits.values())))


@dataclass(frozen=True, eq=False)
class PoolDensities:
    """A test pool: per component, its events' values and every component's density at them."""

    components: tuple[str, ...]                      # (alpha = 0, alpha = 1), or the K components
    values: Mapping[str, np.ndarray]                 # component -> its test events' values
    density: Mapping[tuple[str, str], np.ndarray]    # (density of, events of) -> values

    def size(self, component: str) -> int:
        """Test events of ``component`` (ratio templates store K - 1 values per event)."""
        return int(self.values[component].shape[0])


# --------------------------------------------------------------------------- writing


def _fit_fields() -> tuple[str, ...]:
    from ..stats.fitter import MixtureFit

    return tuple(f.name for f in fields(MixtureFit))


def _components(components, two: bool = True) -> tuple[str, ...]:
    """The component names, checked: exactly two (``two``; alpha = 0 first) or at least two, distinct,
    of letters, digits and underscores."""
    names = tuple(components)
    ok = len(names) == 2 if two else len(names) >= 2
    if not ok or len(set(names)) != len(names) or not all(isinstance(n, str) and _NAME.match(n) for n in names):
        if two:
            raise ValueError(f"components must be two distinct names of letters, digits and underscores "
                             f"(alpha = 0 component first), got {components!r}")
        raise ValueError(f"components must be at least two distinct names of letters, digits and underscores, "
                         f"got {components!r}")
    return names


def _fraction_fit_fields() -> tuple[str, ...]:
    from ..stats.fractions import FractionFit

    return tuple(f.name for f in fields(FractionFit))


def _meta(kind: str, fmt: int, components, **more) -> np.ndarray:
    meta = {"format": fmt, "kind": kind, "components": list(components), **more, "hpcmix_version": __version__}
    return np.array(json.dumps(meta, allow_nan=False, sort_keys=False))


def _write_npz(path: str, arrays: Mapping[str, np.ndarray]) -> str:
    """Write ``arrays`` to ``path`` via a temporary file in the same folder and os.replace."""
    path = os.fspath(path)
    for k, v in arrays.items():
        if np.asarray(v).dtype.hasobject:
            raise TypeError(f"array {k!r} holds Python objects; artefacts hold plain arrays only")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def save_templates(folder, templates, *, components=None) -> str:
    """Write ``templates`` to ``folder/templates.npz``; returns its path.

    PhiStarTemplates or KDETemplates: ``components`` = (name of p_H, name of p_A), i.e. the alpha = 0
    component first (default ("H", "A")). A ``ComponentTemplates`` (PhiStarComponents,
    KDEComponents) stores its own K components; ``components``, if given, must equal them.
    """
    from ..stats.components import ComponentTemplates
    from ..stats.ratios import DirectRatioTemplates
    from ..stats.templates import KDETemplates, PhiStarTemplates

    if isinstance(templates, ComponentTemplates):
        return _save_component_templates(folder, templates, components)
    names = _components(("H", "A") if components is None else components)
    if isinstance(templates, PhiStarTemplates):
        kind, grid_variable, settings = "phi_star", "phi_star", {}
        arrays = templates.to_arrays()
        grid = np.linspace(*templates.support, _PHI_STAR_TABLE_POINTS)
        p_a, p_h = templates.densities(grid)
        arrays.update({"grid": grid, f"density_{names[0]}": p_h, f"density_{names[1]}": p_a})
    elif isinstance(templates, KDETemplates):
        kind, settings = "kde", dict(templates.settings)
        grid_variable = "logit(y)" if templates.space == "logit" else "y"
        arrays = templates.to_arrays(names)
    elif isinstance(templates, DirectRatioTemplates):
        if tuple(templates.components) != names:
            raise ValueError(f"components {list(names)} differ from the templates' components "
                             f"{list(templates.components)}")
        kind, settings, grid_variable = templates.kind, dict(templates.settings), "network output u"
        arrays = templates.to_arrays()
    else:
        raise TypeError(f"cannot store {type(templates).__name__}: save_templates takes PhiStarTemplates, "
                        "KDETemplates or DirectRatioTemplates, or PhiStarComponents / KDEComponents / RatioComponents / DirectRatioComponents")
    arrays["support"] = np.asarray(templates.support, dtype=float)
    arrays["positivity_limits"] = np.asarray(templates.positivity_limits(), dtype=float)
    arrays["meta"] = _meta(kind, TEMPLATES_FORMAT, names, densities={n: f"density_{n}" for n in names},
                           grid_variable=grid_variable, settings=settings)
    os.makedirs(folder, exist_ok=True)
    return _write_npz(os.path.join(folder, TEMPLATES_FILE), arrays)


def _save_component_templates(folder, templates, components) -> str:
    """``save_templates`` for K-component templates (kinds phi_star_components, kde_components, ratio_components)."""
    from ..stats.components import KDEComponents, PhiStarComponents
    from ..stats.ratios import RatioComponents

    names = _components(templates.components, two=False)
    if components is not None and tuple(components) != names:
        raise ValueError(f"components {list(components)!r} differ from the templates' components {list(names)}")
    more = {}
    if isinstance(templates, PhiStarComponents):
        grid_variable = "phi_star"
        arrays = templates.to_arrays()
        grid = np.linspace(*templates.support, _PHI_STAR_TABLE_POINTS)
        dens = templates.densities(grid)
        arrays["grid"] = grid
        arrays.update({f"density_{n}": dens[:, k] for k, n in enumerate(names)})
        more["pair"] = list(templates.pair)
    elif isinstance(templates, KDEComponents):
        grid_variable = "logit(y)" if templates.space == "logit" else "y"
        arrays = templates.to_arrays()
    elif isinstance(templates, RatioComponents):
        grid_variable = "network outputs u" if templates.kind == "direct_ratio_components" else "classifier outputs"
        arrays = templates.to_arrays()
    else:
        raise TypeError(f"cannot store {type(templates).__name__}: save_templates takes PhiStarComponents, "
                        "KDEComponents or RatioComponents among the K-component templates")
    arrays["support"] = np.asarray(templates.support, dtype=float)
    arrays["meta"] = _meta(templates.kind, TEMPLATES_FORMAT, names, densities={n: f"density_{n}" for n in names},
                           grid_variable=grid_variable, settings=dict(templates.settings), **more)
    os.makedirs(folder, exist_ok=True)
    return _write_npz(os.path.join(folder, TEMPLATES_FILE), arrays)


def save_toy_batch(path, fit: MixtureFit, *, uses: Mapping[str, np.ndarray], max_uses: int, note: str) -> str:
    """Write one batch of fitted toys to ``path`` (``batch-NNNNN.npz``); returns the path.

    ``uses``: {component name: uses per pool event}, the alpha = 0 component first
    (e.g. ``{"H": draw.uses_h, "A": draw.uses_a}``).
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"toy batch files end in .npz, got {path!r}")
    names = _components(list(uses))
    fit_fields = _fit_fields()
    arrays = {k: np.asarray(getattr(fit, k)) for k in fit_fields}
    n_toys = arrays["alpha_hat"].shape[0]
    bad = [k for k, v in arrays.items() if v.shape != (n_toys,)]
    if bad:
        raise ValueError(f"fit arrays {bad} do not have the shape ({n_toys},) of alpha_hat")
    arrays.update({f"uses_{n}": np.asarray(uses[n]) for n in names})
    arrays["max_uses"] = np.asarray(int(max_uses), dtype=np.int64)
    arrays["note"] = np.array(str(note))
    arrays["meta"] = _meta("toy_batch", TOY_BATCH_FORMAT, names, fit_fields=list(fit_fields),
                           uses={n: f"uses_{n}" for n in names}, n_toys=int(n_toys))
    return _write_npz(path, arrays)


def save_test_pool(folder, templates, values: Mapping[str, np.ndarray]) -> str:
    """Write ``folder/test_pool.npz``: each component's test events and every component's density at them.

    ``values``: {component: the estimator's variable for its test events}: for a template pair the
    alpha = 0 component first; for K-component templates (``ComponentTemplates``) their components,
    in their order.
    """
    from ..stats.components import ComponentTemplates

    if isinstance(templates, ComponentTemplates):
        names = _components(list(values), two=False)
        if names != tuple(templates.components):
            raise ValueError(f"values must be given for the templates' components {list(templates.components)} "
                             f"in that order, got {list(names)}")
    else:
        names = _components(list(values))
    arrays = {}
    for c in names:
        v = np.asarray(values[c], dtype=float)
        if isinstance(templates, ComponentTemplates):
            dens = templates.densities(v)     # (n, K), last axis in component order
            arrays[f"values_{c}"] = v
            arrays.update({f"density_{d}_on_{c}": dens[..., k] for k, d in enumerate(names)})
        else:
            p1, p0 = templates.densities(v)      # densities() returns (p_alpha=1, p_alpha=0)
            arrays.update({f"values_{c}": v, f"density_{names[1]}_on_{c}": p1, f"density_{names[0]}_on_{c}": p0})
    arrays["meta"] = _meta("test_pool", TEST_POOL_FORMAT, names)
    os.makedirs(folder, exist_ok=True)
    return _write_npz(os.path.join(folder, TEST_POOL_FILE), arrays)


def save_fraction_batch(path, fits: Mapping[str, FractionFit], *, components, uses: Mapping[str, np.ndarray],
                        max_uses: int, note: str, centres: Mapping | None = None) -> str:
    """Write one batch of K-component toy fits to ``path`` (``.npz``); returns the path.

    ``fits``: {nuisance treatment ("fixed", "floated", "constrained"): FractionFit}, all of the same
    toys (one n_toys); ``components``: the K names (the order of ``fractions``' last axis);
    ``uses``: {component: uses per pool event} for every component; ``centres``: {component (name or
    index): per-toy constraint centre} of the constrained components.
    """
    from ..stats.fractions import FractionFit

    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"fraction batch files end in .npz, got {path!r}")
    names = _components(components, two=False)
    K = len(names)
    if not fits:
        raise ValueError("a fraction batch needs at least one treatment's fits")
    bad = [t for t in fits if not (isinstance(t, str) and _TREATMENT.match(t))]
    if bad:
        raise ValueError(f"treatments must be names of letters, digits and single underscores, got {bad!r}")
    if set(uses) != set(names):
        raise ValueError(f"uses must be given for exactly the components {list(names)}, got {list(uses)}")
    fit_fields = _fraction_fit_fields()
    arrays, n_toys = {}, None
    for t, fit in fits.items():
        if not isinstance(fit, FractionFit):
            raise TypeError(f"fits[{t!r}] is a {type(fit).__name__}, not a FractionFit")
        here = {k: np.asarray(getattr(fit, k)) for k in fit_fields}
        n_toys = here["alpha_hat"].shape[0] if n_toys is None else n_toys
        shapes = _fraction_shapes(n_toys, K)
        wrong = [k for k, v in here.items() if v.shape != shapes.get(k, (n_toys,))]
        if wrong:
            raise ValueError(f"fits[{t!r}] arrays {wrong} do not have the shapes of {n_toys} toys and K = {K} "
                             f"components ((n_toys,), fractions (n_toys, K), alpha_limits (n_toys, 2))")
        arrays.update({f"{t}__{k}": v for k, v in here.items()})
    cen = {}
    for k, v in (centres or {}).items():
        c = names[k] if isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 0 <= k < K else k
        if c not in names:
            raise ValueError(f"centres key {k!r} is no component of {list(names)}")
        v = np.asarray(v, dtype=float)
        if v.shape != (n_toys,):
            raise ValueError(f"centres[{k!r}] must have one value per toy ({n_toys},), got shape {v.shape}")
        cen[c] = v
    arrays.update({f"uses_{n}": np.asarray(uses[n]) for n in names})
    arrays.update({f"centre_{c}": v for c, v in cen.items()})
    arrays["max_uses"] = np.asarray(int(max_uses), dtype=np.int64)
    arrays["note"] = np.array(str(note))
    arrays["meta"] = _meta("fraction_batch", FRACTION_BATCH_FORMAT, names, treatments=list(fits),
                           fit_fields=list(fit_fields), uses={n: f"uses_{n}" for n in names},
                           centres={c: f"centre_{c}" for c in cen}, n_toys=int(n_toys))
    return _write_npz(path, arrays)


def _fraction_shapes(n_toys: int, K: int) -> dict[str, tuple[int, ...]]:
    """The FractionFit fields whose shape is not (n_toys,)."""
    return {"fractions": (n_toys, K), "alpha_limits": (n_toys, 2)}


# --------------------------------------------------------------------------- reading


def _old_pickle(path: str, what: str) -> ArtefactFormatError:
    return ArtefactFormatError(f"{path} was made by an older hpcmix: pickles are not read any more; "
                               f"{_RERUN[what]}")


def _read(path: str, what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) of an artefact of ``what`` ('templates' or 'toy_batch'), checked."""
    arrays = _load_npz(path, f"; {_RERUN[what]}")
    meta = _parse_meta(path, arrays.pop("meta", None), what)
    return meta, arrays


def _load_npz(path: str, hint: str = "") -> dict[str, np.ndarray]:
    """Every array of the .npz at ``path``, read without unpickling anything."""
    try:
        f = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as err:
        raise ArtefactFormatError(f"{path} is not a readable hpcmix .npz artefact ({err}){hint}") from err
    if not isinstance(f, np.lib.npyio.NpzFile):  # a plain .npy gives one array
        raise ArtefactFormatError(f"{path} is not an .npz archive{hint}")
    try:
        with f:
            return {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError) as err:  # e.g. an object array inside
        raise ArtefactFormatError(f"{path} is not a readable hpcmix .npz artefact ({err}){hint}") from err


def _parse_meta(path: str, raw, what: str) -> dict:
    if raw is None:
        raise ArtefactFormatError(f"{path} has no meta entry, so it is no hpcmix artefact; {_RERUN[what]}")
    if raw.shape != () or raw.dtype.kind != "U":
        raise ArtefactFormatError(f"{path}: malformed meta (need a 0-d string array of JSON, got dtype "
                                  f"{raw.dtype} shape {raw.shape}); {_RERUN[what]}")
    try:
        meta = json.loads(raw.item())
    except json.JSONDecodeError as err:
        raise ArtefactFormatError(f"{path}: malformed meta, not JSON ({err}); {_RERUN[what]}") from err
    if not isinstance(meta, dict) or not isinstance(meta.get("format"), int) or isinstance(meta["format"], bool):
        raise ArtefactFormatError(f"{path}: malformed meta, no integer 'format'; {_RERUN[what]}")
    label = _LABELS[what]
    kinds = _KINDS[what]
    wrong_kind = ArtefactFormatError(f"{path}: meta kind {meta.get('kind')!r} is not a {label} file "
                                     f"(expected {' or '.join(kinds)})")
    if any(meta.get("kind") in k for w, k in _KINDS.items() if w != what):
        raise wrong_kind  # another stage's artefact, whatever its format number
    want = _FORMATS[what]
    if meta["format"] != want:
        if meta["format"] > want:
            hint = "it was made by a newer hpcmix; upgrade hpcmix to read it"
        else:
            hint = f"it was made by an older hpcmix; {_RERUN[what]}"
        raise ArtefactFormatError(f"{path} has {label} format {meta['format']}, but hpcmix {__version__} "
                                  f"reads {label} format {want}: {hint}")
    if meta.get("kind") not in kinds:
        raise wrong_kind
    try:
        if not isinstance(meta.get("components", []), list):
            raise ValueError(f"components must be a JSON list of names, got {meta['components']!r}")
        meta["components"] = _components(meta.get("components", ()), two=meta["kind"] in _TWO_COMPONENT_KINDS)
    except (TypeError, ValueError) as err:
        raise ArtefactFormatError(f"{path}: malformed meta components ({err}); {_RERUN[what]}") from None
    return meta


def read_meta(path) -> dict:
    """The meta of any hpcmix .npz artefact, parsed from JSON (not checked against this hpcmix)."""
    raw = _load_npz(os.fspath(path)).get("meta")
    if raw is None or raw.shape != () or raw.dtype.kind != "U":
        raise ArtefactFormatError(f"{path} has no meta entry (a 0-d string array), so it is no hpcmix artefact")
    try:
        return json.loads(raw.item())
    except json.JSONDecodeError as err:
        raise ArtefactFormatError(f"{path}: malformed meta, not JSON ({err})") from err


def load_templates(folder):
    """The templates ``save_templates`` wrote to ``folder`` (or to the .npz file ``folder``).

    Returns a PhiStarTemplates or KDETemplates equal in every density, limit and bound to the
    saved object. Raises ArtefactFormatError for a folder with only an old ``templates.pkl``.
    """
    folder = os.fspath(folder)
    if folder.endswith(".pkl"):
        raise _old_pickle(folder, "templates")
    path = folder if folder.endswith(".npz") else os.path.join(folder, TEMPLATES_FILE)
    if not os.path.exists(path):
        old = os.path.join(os.path.dirname(path), _OLD_TEMPLATES_FILE)
        if os.path.exists(old):
            raise _old_pickle(old, "templates")
        raise FileNotFoundError(f"no {TEMPLATES_FILE} in {os.path.dirname(path) or '.'}: run the templates stage")
    from ..stats.components import KDEComponents, PhiStarComponents
    from ..stats.templates import KDETemplates, PhiStarTemplates

    meta, arrays = _read(path, "templates")
    if meta["kind"] in ("phi_star_components", "kde_components", "ratio_components", "direct_ratio_components"):
        return _load_component_templates(path, meta, arrays, PhiStarComponents, KDEComponents)
    h, a = meta["components"]
    try:
        if meta["kind"] == "phi_star":
            return PhiStarTemplates.from_arrays(arrays)
        settings = meta.get("settings")
        if not isinstance(settings, dict):
            raise KeyError("settings")
        if meta["kind"] == "direct_ratio":
            from ..stats.ratios import DirectRatioTemplates

            return DirectRatioTemplates.from_arrays(arrays, components=(h, a), settings=settings)
        return KDETemplates.from_arrays(arrays, settings, names=(h, a))
    except KeyError as err:
        raise ArtefactFormatError(f"{path}: {err.args[0]!r} missing for {meta['kind']} templates "
                                  f"(format {meta['format']}); {_RERUN['templates']}") from None
    except (TypeError, ValueError) as err:
        raise ArtefactFormatError(f"{path}: malformed {meta['kind']} templates ({err}); "
                                  f"{_RERUN['templates']}") from None


def _load_component_templates(path, meta, arrays, phi_cls, kde_cls):
    """``load_templates`` for kinds phi_star_components and kde_components."""
    kind = meta["kind"]
    try:
        settings = meta.get("settings")
        if not isinstance(settings, dict):
            raise KeyError("settings")
        if kind == "phi_star_components":
            if "pair" not in meta:
                raise KeyError("pair")
            if list(meta["pair"]) != list(settings.get("pair", ())):
                raise ValueError(f"meta pair {meta['pair']!r} differs from settings pair {settings.get('pair')!r}")
            return phi_cls.from_arrays(arrays, components=meta["components"], settings=settings)
        if kind in ("ratio_components", "direct_ratio_components"):
            from ..stats.ratios import DirectRatioComponents, RatioComponents

            cls = RatioComponents if kind == "ratio_components" else DirectRatioComponents
            return cls.from_arrays(arrays, components=meta["components"], settings=settings)
        return kde_cls.from_arrays(arrays, components=meta["components"], settings=settings)
    except KeyError as err:
        raise ArtefactFormatError(f"{path}: {err.args[0]!r} missing for {kind} templates "
                                  f"(format {meta['format']}); {_RERUN['templates']}") from None
    except (TypeError, ValueError) as err:
        raise ArtefactFormatError(f"{path}: malformed {kind} templates ({err}); {_RERUN['templates']}") from None


def load_toy_batch(path) -> ToyBatch:
    """The batch ``save_toy_batch`` wrote: ``.fit`` (MixtureFit), ``.draw`` (PoolUses), ``.note``.

    Raises ArtefactFormatError for an old ``batch-*.pkl`` (also when ``path`` names the .npz and
    only the .pkl of that batch exists).
    """
    path = os.fspath(path)
    if path.endswith(".pkl"):
        raise _old_pickle(path, "toy_batch")
    if not os.path.exists(path) and path.endswith(".npz") and os.path.exists(path[:-4] + ".pkl"):
        raise _old_pickle(path[:-4] + ".pkl", "toy_batch")
    from ..stats.fitter import MixtureFit

    meta, arrays = _read(path, "toy_batch")
    names = meta["components"]
    fit_fields = _fit_fields()
    need = [*fit_fields, *(f"uses_{n}" for n in names), "max_uses", "note"]
    missing = [k for k in need if k not in arrays]
    if missing:
        raise ArtefactFormatError(f"{path}: arrays {missing} missing for a toy batch (format {meta['format']}); "
                                  f"{_RERUN['toy_batch']}")
    n_toys = arrays["alpha_hat"].shape
    if len(n_toys) != 1 or any(arrays[k].shape != n_toys for k in fit_fields) or arrays["note"].dtype.kind != "U":
        raise ArtefactFormatError(f"{path}: malformed toy batch (per-toy arrays of unequal shapes or no "
                                  f"string note); {_RERUN['toy_batch']}")
    fit = MixtureFit(**{k: arrays[k] for k in fit_fields})
    draw = PoolUses(uses={n: arrays[f"uses_{n}"] for n in names}, max_uses=int(arrays["max_uses"]))
    return ToyBatch(fit=fit, draw=draw, note=str(arrays["note"].item()))


def load_test_pool(folder) -> PoolDensities:
    """The test pool ``save_test_pool`` wrote to ``folder`` (two or K components)."""
    path = os.path.join(os.fspath(folder), TEST_POOL_FILE)
    meta, arrays = _read(path, "test_pool")
    names = meta["components"]
    try:
        values = {c: arrays[f"values_{c}"] for c in names}
        density = {(d, c): arrays[f"density_{d}_on_{c}"] for d in names for c in names}
    except KeyError as err:
        raise ArtefactFormatError(f"{path}: array {err.args[0]!r} missing (format {meta['format']}); "
                                  f"{_RERUN['test_pool']}") from None
    return PoolDensities(components=names, values=values, density=density)


def load_fraction_batch(path) -> FractionBatch:
    """The batch ``save_fraction_batch`` wrote: ``.fits`` ({treatment: FractionFit}), ``.draw``
    (PoolUses of the K components), ``.note``, ``.centres`` ({component: per-toy centre})."""
    path = os.fspath(path)
    from ..stats.fractions import FractionFit

    meta, arrays = _read(path, "fraction_batch")
    names = meta["components"]
    treatments, centres = meta.get("treatments"), meta.get("centres", {})
    if (not isinstance(treatments, list) or not treatments
            or not all(isinstance(t, str) and _TREATMENT.match(t) for t in treatments)
            or len(set(treatments)) != len(treatments)
            or not isinstance(centres, dict) or not set(centres) <= set(names)
            or not isinstance(meta.get("n_toys"), int)):
        raise ArtefactFormatError(f"{path}: malformed meta (treatments, centres or n_toys); "
                                  f"{_RERUN['fraction_batch']}")
    fit_fields = _fraction_fit_fields()
    need = [*(f"{t}__{k}" for t in treatments for k in fit_fields), *(f"uses_{n}" for n in names),
            *(f"centre_{c}" for c in centres), "max_uses", "note"]
    missing = [k for k in need if k not in arrays]
    if missing:
        raise ArtefactFormatError(f"{path}: arrays {missing} missing for a fraction batch (format {meta['format']}); "
                                  f"{_RERUN['fraction_batch']}")
    n_toys, K = meta["n_toys"], len(names)
    shapes = _fraction_shapes(n_toys, K)
    wrong = [f"{t}__{k}" for t in treatments for k in fit_fields
             if arrays[f"{t}__{k}"].shape != shapes.get(k, (n_toys,))]
    wrong += [f"centre_{c}" for c in centres if arrays[f"centre_{c}"].shape != (n_toys,)]
    if wrong or arrays["note"].dtype.kind != "U" or arrays["max_uses"].shape != ():
        raise ArtefactFormatError(f"{path}: malformed fraction batch (arrays {wrong} not of the shapes of "
                                  f"{n_toys} toys and K = {K} components, or no string note); "
                                  f"{_RERUN['fraction_batch']}")
    fits = {t: FractionFit(**{k: arrays[f"{t}__{k}"] for k in fit_fields}) for t in treatments}
    draw = PoolUses(uses={n: arrays[f"uses_{n}"] for n in names}, max_uses=int(arrays["max_uses"]))
    return FractionBatch(fits=fits, draw=draw, note=str(arrays["note"].item()),
                         centres={c: arrays[f"centre_{c}"] for c in centres})
