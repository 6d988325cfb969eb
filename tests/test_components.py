"""Templates for K components (hpcmix.stats.components) and their artefacts: the pair equals the
two-component classes, the Fourier coefficients, quadrature, positivity nodes and Cramer-Rao
bound are right, and templates, K x K test pools and fraction batches round trip bit for bit
while two-component files stay exactly as they were."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from hpcmix import __version__
from hpcmix.stats import (
    FractionFit,
    KDEComponents,
    KDETemplates,
    PhiStarComponents,
    PhiStarTemplates,
    draw_mixture_toys,
    draw_toys,
    fit_fractions,
    fit_mixture,
    fit_phi_star_components,
    fit_phi_star_templates,
    toy_seed,
)
from hpcmix.store import (
    ArtefactFormatError,
    FractionBatch,
    PoolUses,
    load_fraction_batch,
    load_templates,
    load_test_pool,
    load_toy_batch,
    save_fraction_batch,
    save_templates,
    save_test_pool,
    save_toy_batch,
)
from hpcmix.store.artefacts import TEMPLATES_FILE, TEST_POOL_FILE, read_meta
from scipy import special

TWO_PI = 2 * np.pi
BETAS = {"H": (0.6, 2.5), "A": (2.5, 0.6), "Z": (1.5, 1.5)}  # network-output-like, diverging at 0 / 1


def _sample_fourier(rng, b, s, n):
    """phi* values from (1 + b cos x + s sin x) / (2 pi) by vectorised rejection."""
    out = np.empty(0)
    top = 1 + np.hypot(b, s)
    while out.size < n:
        x = rng.uniform(0, TWO_PI, 2 * n)
        keep = rng.uniform(0, top, x.size) < 1 + b * np.cos(x) + s * np.sin(x)
        out = np.r_[out, x[keep]]
    return out[:n]


def _phi_values(rng, n=3000):
    a = 0.041 * TWO_PI  # the paper's a, as b = 2 pi a
    return {"H": _sample_fourier(rng, -a, 0.0, n), "A": _sample_fourier(rng, a, 0.0, n),
            "Z": _sample_fourier(rng, 0.05, 0.2, n)}


def _load(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _rewrite(path, meta=None, drop=(), **extra):
    arrays = {k: v for k, v in _load(path).items() if k not in drop}
    if isinstance(meta, dict):
        arrays["meta"] = np.array(json.dumps(meta))
    arrays.update(extra)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.fixture(scope="module")
def kde3():
    rng = np.random.default_rng(11)
    values = {c: rng.beta(*ab, 3000) for c, ab in BETAS.items()}
    return KDEComponents(values, grid_size=2048)


@pytest.fixture(scope="module")
def phi3():
    return fit_phi_star_components(_phi_values(np.random.default_rng(4)), pair=("H", "A"))


# --------------------------------------------------------------------------- phi*


def test_phi_star_pair_equals_phi_star_templates(phi3):
    rng = np.random.default_rng(4)
    v = _phi_values(rng)  # the same events as the fixture
    ref = fit_phi_star_templates(np.r_[v["H"], v["A"]], np.r_[np.zeros(v["H"].size, bool), np.ones(v["A"].size, bool)])
    assert phi3.pair_templates() == ref and isinstance(phi3.pair_templates(), PhiStarTemplates)
    assert phi3.components == ("H", "A", "Z") and phi3.kind == "phi_star_components"
    x = np.r_[rng.uniform(0, TWO_PI, 4000), 0.0, np.pi, TWO_PI]
    d = phi3.densities(x)
    assert d.shape == (x.size, 3)
    assert np.array_equal(d[:, 0], ref.p_h(x)) and np.array_equal(d[:, 1], ref.p_a(x))  # bit for bit
    assert phi3.densities(x[:4000].reshape(2, -1)).shape == (2, 2000, 3)
    # the pair in another position of the component order, and K = 2
    swapped = fit_phi_star_components({"Z": v["Z"], "A": v["A"], "H": v["H"]}, pair=("H", "A"))
    assert np.array_equal(swapped.densities(x)[:, [2, 1, 0]], d)
    two = fit_phi_star_components({"H": v["H"], "A": v["A"]}, pair=("H", "A"))
    assert np.array_equal(two.densities(x), d[:, :2])
    # K = 2 bound by quadrature equals the closed form
    for alpha in (0.1, 0.5, 0.9):
        b = two.cramer_rao([1 - alpha, alpha], 100, num="A", den=["H", "A"]).bound
        np.testing.assert_allclose(b, ref.cramer_rao_bound(alpha, 100), rtol=1e-12)
    info = phi3.info()
    assert info["a"] == ref.a and info["pair"] == ["H", "A"] and info["n_events"] == {"H": 3000, "A": 3000, "Z": 3000}
    assert info["coefficients"]["A"]["b"] == TWO_PI * ref.a and info["coefficients"]["H"]["b"] == -TWO_PI * ref.a
    json.dumps(info, allow_nan=False)


def test_fourier_coefficients_recover_b_and_s():
    rng = np.random.default_rng(21)
    b, s, n = 0.3, -0.25, 200_000
    v = {"H": rng.uniform(0, TWO_PI, 500), "A": rng.uniform(0, TWO_PI, 500), "X": _sample_fourier(rng, b, s, n)}
    t = fit_phi_star_components(v, pair=("H", "A"))
    (bh, sh), (be, se) = t.coefficients["X"], t.coefficient_errors["X"]
    assert abs(bh - b) < 4 * be and abs(sh - s) < 4 * se
    # Var(2 cos) = 2 - b^2 under this density: the quoted errors are the real spread
    np.testing.assert_allclose([be, se], np.sqrt([(2 - b * b) / n, (2 - s * s) / n]), rtol=0.02)
    x = np.linspace(0, TWO_PI, 7)
    np.testing.assert_allclose(t.densities(x)[:, 2], (1 + bh * np.cos(x) + sh * np.sin(x)) / TWO_PI, rtol=1e-14)


def test_phi_star_bad_input():
    rng = np.random.default_rng(0)
    v = {"H": rng.uniform(0, TWO_PI, 50), "A": rng.uniform(0, TWO_PI, 50)}
    with pytest.raises(ValueError, match="'spike' is not positive"):  # b ~ 2: a spike at 0
        fit_phi_star_components({**v, "spike": rng.normal(0, 1e-3, 100)}, pair=("H", "A"))
    with pytest.raises(ValueError, match="component 'Z' has 1"):
        fit_phi_star_components({**v, "Z": np.array([1.0])}, pair=("H", "A"))
    with pytest.raises(ValueError, match="pair must be two distinct components"):
        fit_phi_star_components({**v, "Z": v["H"]}, pair=("H", "W"))
    with pytest.raises(ValueError, match="'Z' contain NaN"):
        fit_phi_star_components({**v, "Z": np.array([1.0, np.nan])}, pair=("H", "A"))
    with pytest.raises(ValueError, match="'Z' is not positive"):
        PhiStarComponents(("H", "A"), 0.04, 0.0, {"Z": (0.8, 0.6)}, {"H": 1, "A": 1, "Z": 2})
    with pytest.raises(ValueError, match="need \\|a\\| < c"):
        PhiStarComponents(("H", "A"), 0.2, 0.0, {}, {"H": 1, "A": 1})


# --------------------------------------------------------------------------- KDE


def _kde_inputs(rng, n=2500):
    y = np.r_[rng.beta(0.6, 2.5, n), rng.beta(2.5, 0.6, n + 300)]
    is_a = np.r_[np.zeros(n, bool), np.ones(n + 300, bool)]
    perm = rng.permutation(y.size)  # classes interleaved, as a real template sample
    return y[perm], is_a[perm]


@pytest.mark.parametrize("space, adaptive, q, clip", [("logit", True, 0.0, 1e-7), ("logit", False, 0.01, 1e-7),
                                                      ("logit", True, 0.0, 1e-3),  # events in the end bins
                                                      ("reflect", True, 0.0, 1e-7), ("reflect", False, 0.0, 1e-7)])
def test_kde_pair_equals_kde_templates(space, adaptive, q, clip):
    """Bit-identical when each component's events keep KDETemplates' order (y[~is_a], y[is_a]);
    the grouping / order of the components does not matter, the order of events within one does
    (only at round-off: the bandwidth rule and the binning sum in event order)."""
    rng = np.random.default_rng(7)
    y, is_a = _kde_inputs(rng)
    kw = dict(space=space, adaptive=adaptive, grid_size=2048, positivity_quantile=q, clip=clip)
    t = KDETemplates(y, is_a, **kw)
    c = KDEComponents({"H": y[~is_a], "A": y[is_a]}, **kw)
    x = np.r_[rng.uniform(size=3000), y[:500], [0.0, 1.0, 1e-9, 1e-7, 1 - 1e-7, 1 - 3e-8, -0.1, 1.1]]
    p_a, p_h = t.densities(x)
    d = c.densities(x)
    assert np.array_equal(d[:, 0], p_h) and np.array_equal(d[:, 1], p_a)
    np.testing.assert_allclose(d, np.stack([p_h, p_a], axis=-1), rtol=1e-12, atol=0)
    assert np.array_equal(c.grid, t.grid) and c.positivity_range == t.positivity_range
    assert c.bandwidths == {"H": t.bandwidths[1], "A": t.bandwidths[0]} and c.settings == t.settings
    assert all(np.array_equal(u, v) for u, v in zip(c.tabulate(300)[1].T, t.tabulate(300)[:0:-1]))
    swapped = KDEComponents({"A": y[is_a], "H": y[~is_a]}, **kw)
    assert np.array_equal(swapped.densities(x)[:, ::-1], d)
    # positivity nodes: inside the range, its two ends, and the end bins the events reach
    sn = c.support_nodes()
    za, zb = t.template_a.transform(np.asarray(t.positivity_range))
    tt = (t.template_h, t.template_a)
    bins = [[u.mass_below for u in tt]] * (t.positivity_range[0] < clip) + \
        [[u.mass_above for u in tt]] * (t.positivity_range[1] > 1 - clip) if space == "logit" else []
    assert sn.shape == (np.sum((t.grid > za) & (t.grid < zb)) + 2 + len(bins), 2)
    assert np.array_equal(sn[sn.shape[0] - len(bins):], np.reshape(bins, (-1, 2)))
    assert len(bins) == 2 or clip != 1e-3
    # they give KDETemplates' limits exactly (fit_fractions, K = 2 path)
    dens = c.densities(y[(y > 0.2) & (y < 0.8)][:200])[None]  # both densities well above 0 there
    fit = fit_fractions(dens, num=[1], den=[0, 1], f_true=[0.4, 0.6], support=c.support_nodes())
    assert tuple(fit.alpha_limits[0]) == t.positivity_limits()
    # the K = 2 bound by quadrature() is KDETemplates' bound
    for alpha in (0.2, 0.9):
        b = c.cramer_rao([1 - alpha, alpha], 250, num=1, den=[0, 1]).bound
        np.testing.assert_allclose(b, t.cramer_rao_bound(alpha, 250), rtol=1e-12)
    # events of one component in another order: equal to round-off only
    shuffled = KDEComponents({"H": rng.permutation(y[~is_a]), "A": y[is_a]}, **kw)
    np.testing.assert_allclose(shuffled.densities(x), d, rtol=1e-9, atol=1e-12 * d.max())


def test_quadrature_integrates_the_densities(phi3, kde3):
    dens, w = phi3.quadrature()
    assert dens.shape == (2048, 3) and np.array_equal(dens, phi3.support_nodes())
    np.testing.assert_allclose(w @ dens, 1.0, rtol=0, atol=1e-13)
    rng = np.random.default_rng(2)
    values = {c: rng.beta(*ab, 2000) for c, ab in BETAS.items()}
    reflect = KDEComponents(values, space="reflect", grid_size=1024)
    dens, w = reflect.quadrature()
    np.testing.assert_allclose(w @ dens, 1.0, rtol=0, atol=1e-12)
    # logit: as KDETemplates.fisher_information, the whole grid plus the two end bins, so the sum
    # is 1 + the end-bin masses (the grid's tails beyond the clip points are the end bins' mass)
    dens, w = kde3.quadrature()
    below = np.array([kde3.templates[c].mass_below for c in kde3.components])
    above = np.array([kde3.templates[c].mass_above for c in kde3.components])
    assert dens.shape == (kde3.grid.size + 2, 3) and np.array_equal(dens[-2:], np.stack([below, above]))
    np.testing.assert_allclose(w @ dens, 1.0 + below + above, rtol=0, atol=1e-12)
    assert np.all(below + above < 1e-3) and below[0] > 0 and above[1] > 0


def test_support_nodes_keep_every_fitted_mixture_positive(kde3):
    """K = 3: fits on the support never make the mixture negative at a tabulate() node; without it they do."""
    rng = np.random.default_rng(3)
    pool = {c: rng.beta(*ab, 5000) for c, ab in BETAS.items()}
    f = np.array([0.05, 0.9, 0.05])                      # close to a positivity limit
    n_toys, n = 200, 40
    counts = rng.multinomial(n, f, size=n_toys)
    comp = np.stack([np.repeat(np.arange(3), k) for k in counts])
    y = np.empty((n_toys, n))
    for k, c in enumerate(kde3.components):
        y[comp == k] = rng.choice(pool[c], int((comp == k).sum()))
    dens = kde3.densities(y)
    x, tab = kde3.tabulate()
    assert tab.shape == (512, 3) and np.all(np.diff(x) > 0)
    fit = fit_fractions(dens, num=[1], den=[0, 1], f_true=f, treatment={2: "floated"}, support=kde3.support_nodes())
    assert fit.at_limit.sum() > 20 and fit.converged.all()
    mix = tab @ fit.fractions.T
    assert np.all(mix >= -1e-9 * tab.max(axis=1)[:, None])
    free = fit_fractions(dens, num=[1], den=[0, 1], f_true=f, treatment={2: "floated"})
    assert (tab @ free.fractions.T).min() < -1e-3 * tab.max()  # the test can fail


def _direct_bound(t, f, n_events, widths=None):
    """sigma(alpha) for H, A, Z (Z floated or constrained) from a fine-grid integral of p(y) = densities(y)."""
    z_lo, z_hi = special.logit(t.clip), special.logit(1 - t.clip)
    z = np.linspace(max(z_lo, t.grid[0]), min(z_hi, t.grid[-1]), 300_001)
    y = special.expit(z)
    p = t.densities(y) * (y * (1 - y))[:, None]          # dy = y (1 - y) dz
    w = np.full(z.size, z[1] - z[0])
    w[[0, -1]] /= 2
    # [0, clip] and [1 - clip, 1]: p = mass / clip, so integral of (dp)^2 / p dy = (d mass)^2 / mass
    masses = [[getattr(t.templates[c], m) for c in t.components] for m in ("mass_below", "mass_above")]
    p = np.vstack([p, masses])
    w = np.r_[w, 1.0, 1.0]
    e = p[:, [1, 2]] - p[:, [0]]                          # free f_A, f_Z; f_H = 1 - f_A - f_Z
    m = p @ f
    info = n_events * np.einsum("n,np,nq->pq", np.divide(w, m, out=np.zeros_like(w), where=m > 0), e, e)
    if widths is not None:
        info[1, 1] += 1 / widths**2
    s = f[0] + f[1]
    g = np.array([1 / s, f[1] / s / s])                   # d alpha / d (f_A, f_Z), alpha = f_A / (f_A + f_H)
    return np.sqrt(g @ np.linalg.solve(info, g))


def test_cramer_rao_matches_a_direct_integral(kde3):
    f = np.array([0.3, 0.5, 0.2])
    b = kde3.cramer_rao(f, 500, num="A", den=["H", "A"], treatment={"Z": "floated"})
    np.testing.assert_allclose(b.bound, _direct_bound(kde3, f, 500), rtol=1e-3)
    c = kde3.cramer_rao({"H": 0.3, "A": 0.5, "Z": 0.2}, 500, num=["A"], den=[0, 1], treatment={2: "constrained"},
                        widths={"Z": 0.02})
    np.testing.assert_allclose(c.bound, _direct_bound(kde3, f, 500, widths=0.02), rtol=1e-3)
    assert b.all_fixed < c.bound < b.bound and np.isclose(b.nuisance_fixed[2], b.all_fixed)
    cells = kde3.cramer_rao(np.stack([f, [0.2, 0.6, 0.2]]), [500, 1000], num="A", den=["H", "A"],
                            treatment={"Z": "fixed"})
    assert cells.bound.shape == (2,)
    with pytest.raises(ValueError, match="unknown component 'W'"):
        kde3.cramer_rao(f, 500, num="W", den=["H", "A"], treatment={"Z": "fixed"})


def test_kde_bad_input():
    rng = np.random.default_rng(0)
    ok = {"H": rng.uniform(size=50), "A": rng.uniform(size=50)}
    with pytest.raises(ValueError, match="component 'Z' has 1 event"):
        KDEComponents({**ok, "Z": [0.5]})
    with pytest.raises(ValueError, match="'Z' must be finite and inside \\[0, 1\\]"):
        KDEComponents({**ok, "Z": [0.5, 1.2]})
    with pytest.raises(ValueError, match="'Z' must be finite"):
        KDEComponents({**ok, "Z": [0.5, np.nan]})
    with pytest.raises(ValueError, match="component 'Z': cannot derive a bandwidth"):
        KDEComponents({**ok, "Z": [0.5, 0.5, 0.5]})
    with pytest.raises(ValueError, match="at least two distinct"):
        KDEComponents({"H": ok["H"]})
    with pytest.raises(ValueError, match="positivity_quantile"):
        KDEComponents(ok, positivity_quantile=0.5)
    with pytest.raises(TypeError, match="space=None"):
        KDEComponents(ok, space=None)


# --------------------------------------------------------------------------- template artefacts


def _assert_same_components(t, u, x):
    assert type(u) is type(t) and u.components == t.components and u.settings == t.settings
    d, e = t.densities(x), u.densities(x)
    assert d.dtype == e.dtype and np.array_equal(d, e)
    assert np.array_equal(u.support_nodes(), t.support_nodes())
    assert all(np.array_equal(a, b) for a, b in zip(u.quadrature(), t.quadrature()))
    assert all(np.array_equal(a, b) for a, b in zip(u.tabulate(100), t.tabulate(100)))
    assert u.info() == t.info()
    ta, ua = t.to_arrays(), u.to_arrays()
    assert ta.keys() == ua.keys() and all(np.array_equal(ta[k], ua[k]) for k in ta)


def test_phi_star_components_round_trip(tmp_path, phi3):
    save_templates(tmp_path, phi3)
    u = load_templates(tmp_path)
    x = np.random.default_rng(1).uniform(0, TWO_PI, 3000)
    _assert_same_components(phi3, u, x)
    assert u.pair == ("H", "A") and u.pair_templates() == phi3.pair_templates()
    assert u.coefficients == phi3.coefficients and u.coefficient_errors == phi3.coefficient_errors
    f = _load(tmp_path / TEMPLATES_FILE)                  # numpy alone
    meta = json.loads(f["meta"].item())
    assert meta["kind"] == "phi_star_components" and meta["format"] == 1 and meta["pair"] == ["H", "A"]
    assert meta["components"] == ["H", "A", "Z"] and meta["settings"]["pair"] == ["H", "A"]
    assert meta["densities"] == {c: f"density_{c}" for c in "HAZ"} and meta["grid_variable"] == "phi_star"
    b, s = f["coefficients"][2]
    np.testing.assert_allclose(f["density_Z"], (1 + b * np.cos(f["grid"]) + s * np.sin(f["grid"])) / TWO_PI, rtol=1e-14)
    np.testing.assert_allclose(f["density_A"], f["c"] + f["a"] * np.cos(f["grid"]), rtol=1e-15)
    assert f["n_events"].tolist() == [3000, 3000, 3000] and "positivity_limits" not in f
    with pytest.raises(ValueError, match="differ from the templates' components"):
        save_templates(tmp_path / "x", phi3, components=("H", "A"))


@pytest.mark.parametrize("space, adaptive", [("logit", True), ("reflect", False)])
def test_kde_components_round_trip(tmp_path, space, adaptive):
    rng = np.random.default_rng(8)
    values = {"even": rng.beta(0.6, 2.5, 1500), "odd_1": rng.beta(2.5, 0.6, 1500), "Z": rng.beta(2, 2, 1000)}
    t = KDEComponents(values, space=space, adaptive=adaptive, grid_size=1024, bandwidth=0.2 if space == "logit"
                      else "scott", positivity_quantile=0.001, adaptive_classes=8)
    save_templates(tmp_path, t)
    u = load_templates(tmp_path)
    x = np.r_[rng.uniform(size=3000), [0.0, 1.0, 1e-9, 1e-7, 1 - 1e-8, -0.1, 1.1]]
    _assert_same_components(t, u, x)
    assert u.bandwidths == t.bandwidths and u.positivity_range == t.positivity_range and u.space == space
    for c in values:
        assert np.array_equal(u.templates[c].cdf(x), t.templates[c].cdf(x))
    f = _load(tmp_path / TEMPLATES_FILE)
    meta = json.loads(f["meta"].item())
    assert meta["kind"] == "kde_components" and meta["components"] == ["even", "odd_1", "Z"]
    assert meta["grid_variable"] == {"logit": "logit(y)", "reflect": "y"}[space] and meta["settings"] == t.settings
    assert np.array_equal(f["density_odd_1"], t.templates["odd_1"].density) and "bandwidth_Z" in f


def test_k_component_test_pool_round_trip(tmp_path, kde3):
    rng = np.random.default_rng(5)
    values = {c: rng.beta(*ab, 300 + 50 * k) for k, (c, ab) in enumerate(BETAS.items())}
    save_test_pool(tmp_path, kde3, values)
    pool = load_test_pool(tmp_path)
    assert pool.components == ("H", "A", "Z") and [pool.size(c) for c in "HAZ"] == [300, 350, 400]
    assert len(pool.density) == 9
    for c, v in values.items():
        assert np.array_equal(pool.values[c], v)
        d = kde3.densities(v)
        for k, name in enumerate(kde3.components):
            assert np.array_equal(pool.density[(name, c)], d[:, k])
    # what the toys stage gathers from it
    draw = draw_mixture_toys({c: pool.size(c) for c in "HAZ"}, {"H": 0.3, "A": 0.5, "Z": 0.2}, n_events=20,
                             n_toys=5, rng=np.random.default_rng(0))
    dens = draw.gather_densities(pool.density, kde3.components)
    assert dens.shape == (5, 20, 3) and np.all(dens > 0)
    with pytest.raises(ValueError, match="in that order"):
        save_test_pool(tmp_path, kde3, {"A": values["A"], "H": values["H"], "Z": values["Z"]})
    with pytest.raises(ValueError, match="in that order"):
        save_test_pool(tmp_path, kde3, {"H": values["H"], "A": values["A"]})
    _rewrite(tmp_path / TEST_POOL_FILE, drop=("density_Z_on_A",))
    with pytest.raises(ArtefactFormatError, match="density_Z_on_A"):
        load_test_pool(tmp_path)


# --------------------------------------------------------------------------- fraction batches


@pytest.fixture(scope="module")
def fraction_fits(phi3):
    """Real K = 3 fits of one set of toys with the nuisance Z fixed, floated and constrained."""
    rng = np.random.default_rng(13)
    pools = _phi_values(rng, n=400)
    f = {"H": 0.3, "A": 0.5, "Z": 0.2}
    draw = draw_mixture_toys({c: v.size for c, v in pools.items()}, f, n_events=60, n_toys=25, rng=rng)
    density = {(d, c): phi3.densities(pools[c])[:, k] for k, d in enumerate(phi3.components) for c in pools}
    dens = draw.gather_densities(density, phi3.components)
    centres = {2: 0.2 + 0.05 * rng.standard_normal(25)}
    common = dict(num=[1], den=[0, 1], f_true=[0.3, 0.5, 0.2], support=phi3.support_nodes())
    fits = {"fixed": fit_fractions(dens, treatment={2: "fixed"}, **common),
            "floated": fit_fractions(dens, treatment={2: "floated"}, **common),
            "constrained": fit_fractions(dens, treatment={2: "constrained"}, widths={2: 0.05}, centres=centres,
                                         **common)}
    return fits, draw, centres


def test_fraction_batch_round_trip(tmp_path, fraction_fits):
    fits, draw, centres = fraction_fits
    path = save_fraction_batch(tmp_path / "batch-00000.npz", fits, components=("H", "A", "Z"), uses=draw.uses,
                               max_uses=draw.max_uses, note=draw.note(), centres=centres)
    assert os.listdir(tmp_path) == ["batch-00000.npz"]
    back = load_fraction_batch(path)
    assert isinstance(back, FractionBatch) and list(back.fits) == ["fixed", "floated", "constrained"]
    assert back.components == ("H", "A", "Z") and back.n_toys == 25
    for t, fit in fits.items():
        assert isinstance(back.fits[t], FractionFit)
        for fld in dataclasses.fields(FractionFit):
            a, b = getattr(fit, fld.name), getattr(back.fits[t], fld.name)
            assert a.dtype == b.dtype and a.shape == b.shape, (t, fld.name)
            assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), (t, fld.name)
    assert back.fits["floated"].fractions.shape == (25, 3) and back.fits["fixed"].alpha_limits.shape == (25, 2)
    assert isinstance(back.draw, PoolUses) and back.draw.max_uses == draw.max_uses and back.note == draw.note()
    assert all(np.array_equal(back.draw.uses[c], draw.uses[c]) for c in "HAZ")
    assert list(back.centres) == ["Z"] and np.array_equal(back.centres["Z"], centres[2])
    meta = read_meta(path)
    assert meta["kind"] == "fraction_batch" and meta["format"] == 1 and meta["n_toys"] == 25
    assert meta["treatments"] == ["fixed", "floated", "constrained"] and meta["components"] == ["H", "A", "Z"]
    assert meta["fit_fields"] == [f.name for f in dataclasses.fields(FractionFit)]
    assert meta["centres"] == {"Z": "centre_Z"} and meta["uses"] == {c: f"uses_{c}" for c in "HAZ"}
    f = _load(path)
    assert {"floated__alpha_hat", "constrained__fractions", "centre_Z", "uses_Z"} <= set(f)
    # no centres: an empty mapping back
    save_fraction_batch(tmp_path / "b.npz", {"floated": fits["floated"]}, components=("H", "A", "Z"),
                        uses=draw.uses, max_uses=draw.max_uses, note="")
    assert load_fraction_batch(tmp_path / "b.npz").centres == {}


def test_save_fraction_batch_checks_its_input(tmp_path, fraction_fits):
    fits, draw, centres = fraction_fits
    kw = dict(components=("H", "A", "Z"), uses=draw.uses, max_uses=draw.max_uses, note="")
    p = tmp_path / "batch.npz"
    with pytest.raises(ValueError, match="end in .npz"):
        save_fraction_batch(tmp_path / "batch.pkl", fits, **kw)
    with pytest.raises(ValueError, match="do not have the shapes"):  # another n_toys
        short = dataclasses.replace(fits["fixed"], **{k: v[:3] for k, v in fits["fixed"].as_dict().items()})
        save_fraction_batch(p, {"floated": fits["floated"], "fixed": short}, **kw)
    with pytest.raises(ValueError, match="do not have the shapes"):  # fractions of another K
        save_fraction_batch(p, fits, **{**kw, "components": ("H", "A"), "uses": {"H": 1, "A": 1}})
    with pytest.raises(ValueError, match="single underscores"):
        save_fraction_batch(p, {"a__b": fits["fixed"]}, **kw)
    with pytest.raises(ValueError, match="uses must be given"):
        save_fraction_batch(p, fits, **{**kw, "uses": {"H": draw.uses["H"]}})
    with pytest.raises(ValueError, match="one value per toy"):
        save_fraction_batch(p, fits, **kw, centres={"Z": np.zeros(3)})
    with pytest.raises(ValueError, match="no component"):
        save_fraction_batch(p, fits, **kw, centres={"W": np.zeros(25)})
    with pytest.raises(ValueError, match="at least two distinct names"):
        save_fraction_batch(p, fits, **{**kw, "components": ("H",), "uses": {"H": 1}})
    with pytest.raises(TypeError, match="not a FractionFit"):
        save_fraction_batch(p, {"fixed": object()}, **kw)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- refusals


def test_k_component_files_with_bad_meta_or_arrays_are_refused(tmp_path, phi3, kde3, fraction_fits):
    path = save_templates(tmp_path / "phi", phi3)
    meta = read_meta(path)
    for bad, match in [({**meta, "components": ["H"]}, "malformed meta components"),
                       ({**meta, "components": "HAZ"}, "malformed meta components"),
                       ({**meta, "components": ["H", "A", "A"]}, "malformed meta components"),
                       ({k: v for k, v in meta.items() if k != "pair"}, "'pair' missing"),
                       ({**meta, "pair": ["A", "H"]}, "malformed phi_star_components templates"),
                       ({k: v for k, v in meta.items() if k != "settings"}, "'settings' missing"),
                       ({**meta, "components": ["H", "A", "Z", "W"]}, "malformed phi_star_components"),
                       ({**meta, "kind": "kde_components"}, "'space' missing for kde_components"),
                       ({**meta, "kind": "phi_star"}, "malformed meta components"),  # three names, a pair kind
                       ({**meta, "format": 2}, "templates format 2.*newer")]:
        save_templates(tmp_path / "phi", phi3)
        _rewrite(path, bad)
        with pytest.raises(ArtefactFormatError, match=match):
            load_templates(tmp_path / "phi")
    save_templates(tmp_path / "phi", phi3)
    _rewrite(path, drop=("coefficients",))
    with pytest.raises(ArtefactFormatError, match="'coefficients' missing for phi_star_components"):
        load_templates(tmp_path / "phi")
    path = save_templates(tmp_path / "kde", kde3)
    _rewrite(path, drop=("cum_Z",))
    with pytest.raises(ArtefactFormatError, match="'cum_Z' missing for kde_components"):
        load_templates(tmp_path / "kde")
    save_templates(tmp_path / "kde", kde3)
    _rewrite(path, density_Z=np.zeros(3))
    with pytest.raises(ArtefactFormatError, match="malformed kde_components templates"):
        load_templates(tmp_path / "kde")
    # fraction batches: wrong kind both ways, format, missing and misshapen arrays
    fits, draw, centres = fraction_fits
    bpath = save_fraction_batch(tmp_path / "batch-00000.npz", fits, components=("H", "A", "Z"), uses=draw.uses,
                                max_uses=draw.max_uses, note="", centres=centres)
    with pytest.raises(ArtefactFormatError, match="kind 'fraction_batch' is not a templates file"):
        load_templates(bpath)
    with pytest.raises(ArtefactFormatError, match="kind 'fraction_batch' is not a toy batch file"):
        load_toy_batch(bpath)
    with pytest.raises(ArtefactFormatError, match="kind 'kde_components' is not a fraction batch file"):
        load_fraction_batch(path)
    bmeta = read_meta(bpath)
    for kwargs, match in [(dict(meta={**bmeta, "format": 2}), "fraction batch format 2.*newer"),
                          (dict(meta={**bmeta, "format": 0}), "fraction batch format 0.*older hpcmix; rerun the toys"),
                          (dict(meta={**bmeta, "treatments": "fixed"}), "malformed meta"),
                          (dict(meta={**bmeta, "centres": {"W": "centre_W"}}), "malformed meta"),
                          (dict(drop=("floated__lr_stat", "centre_Z")),
                           r"arrays \['floated__lr_stat', 'centre_Z'\] missing for a fraction batch"),
                          (dict(fixed__fractions=np.zeros((25, 2))), r"malformed fraction batch \(arrays \['fixed__fr"),
                          (dict(centre_Z=np.zeros(24)), "malformed fraction batch"),
                          (dict(note=np.zeros(1)), "malformed fraction batch")]:
        save_fraction_batch(bpath, fits, components=("H", "A", "Z"), uses=draw.uses, max_uses=draw.max_uses, note="",
                            centres=centres)
        _rewrite(bpath, **kwargs)
        with pytest.raises(ArtefactFormatError, match=match):
            load_fraction_batch(bpath)


# --------------------------------------------------------------------------- two-component files unchanged


def _old_templates_arrays(t, names):
    """What save_templates wrote for a pair before the K kinds existed (its code path, spelled out)."""
    if isinstance(t, PhiStarTemplates):
        kind, gv, settings = "phi_star", "phi_star", {}
        arrays = t.to_arrays()
        grid = np.linspace(*t.support, 512)
        p_a, p_h = t.densities(grid)
        arrays.update({"grid": grid, f"density_{names[0]}": p_h, f"density_{names[1]}": p_a})
    else:
        kind, settings, gv = "kde", dict(t.settings), "logit(y)" if t.space == "logit" else "y"
        arrays = t.to_arrays(names)
    arrays["support"] = np.asarray(t.support, dtype=float)
    arrays["positivity_limits"] = np.asarray(t.positivity_limits(), dtype=float)
    meta = {"format": 1, "kind": kind, "components": list(names), "densities": {n: f"density_{n}" for n in names},
            "grid_variable": gv, "settings": settings, "hpcmix_version": __version__}
    arrays["meta"] = np.array(json.dumps(meta, allow_nan=False))
    return arrays


def _assert_same_arrays(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.asarray(a[k]).dtype == b[k].dtype and np.array_equal(a[k], b[k], equal_nan=b[k].dtype.kind == "f"), k


def test_two_component_files_are_unchanged(tmp_path):
    rng = np.random.default_rng(5)
    y, is_a = _kde_inputs(rng, n=1500)
    for i, (t, names) in enumerate([(KDETemplates(y, is_a, grid_size=512), ("H", "A")),
                                    (KDETemplates(y, is_a, space="reflect", grid_size=256), ("even", "odd_1")),
                                    (PhiStarTemplates(a=0.041), ("H", "A"))]):
        kw = {} if names == ("H", "A") else {"components": names}
        _assert_same_arrays(_old_templates_arrays(t, names), _load(save_templates(tmp_path / str(i), t, **kw)))
        values = {names[0]: y[:300], names[1]: y[-200:]}
        save_test_pool(tmp_path / str(i), t, values)
        old = {"meta": np.array(json.dumps({"format": 1, "kind": "test_pool", "components": list(names),
                                            "hpcmix_version": __version__}))}
        for c, v in values.items():
            p_a, p_h = t.densities(v)
            old.update({f"values_{c}": v, f"density_{names[1]}_on_{c}": p_a, f"density_{names[0]}_on_{c}": p_h})
        _assert_same_arrays(old, _load(tmp_path / str(i) / TEST_POOL_FILE))
        assert type(load_templates(tmp_path / str(i))) is type(t)
    # a toy batch: its arrays and meta exactly as the two-component layout
    t = PhiStarTemplates(a=0.041)
    x_a, x_h = rng.uniform(0, TWO_PI, 300), rng.uniform(0, TWO_PI, 300)
    draw = draw_toys(300, 300, alpha=0.7, n_events=30, n_toys=10, rng=toy_seed(1, "phi_star", "none"))
    (pa_a, ph_a), (pa_h, ph_h) = t.densities(x_a), t.densities(x_h)
    fit = fit_mixture(draw.gather(pa_a, pa_h), draw.gather(ph_a, ph_h), alpha_true=0.7,
                      alpha_limits=t.positivity_limits())
    path = save_toy_batch(tmp_path / "batch-00000.npz", fit, uses={"H": draw.uses_h, "A": draw.uses_a},
                          max_uses=draw.max_uses, note="n")
    fields = [f.name for f in dataclasses.fields(fit)]
    old = {k: np.asarray(getattr(fit, k)) for k in fields}
    old.update({"uses_H": draw.uses_h, "uses_A": draw.uses_a, "max_uses": np.asarray(draw.max_uses, dtype=np.int64),
                "note": np.array("n")})
    old["meta"] = np.array(json.dumps({"format": 1, "kind": "toy_batch", "components": ["H", "A"],
                                       "fit_fields": fields, "uses": {"H": "uses_H", "A": "uses_A"}, "n_toys": 10,
                                       "hpcmix_version": __version__}))
    _assert_same_arrays(old, _load(path))
    back = load_toy_batch(path)
    assert back.draw.components == ("H", "A") and np.array_equal(back.draw.uses_a, draw.uses_a)
    # the pair kinds still hold exactly two names
    with pytest.raises(ValueError, match="two distinct names"):
        save_templates(tmp_path / "x", t, components=("H", "A", "Z"))
    save_templates(tmp_path / "y", t)
    _rewrite(tmp_path / "y" / TEMPLATES_FILE, {**read_meta(tmp_path / "y" / TEMPLATES_FILE),
                                               "components": ["H", "A", "Z"]})
    with pytest.raises(ArtefactFormatError, match="malformed meta components"):
        load_templates(tmp_path / "y")


def test_bound_is_infinite_where_the_templates_cannot_fix_the_fractions():
    """Two first-order Fourier backgrounds beside the phi* pair: four densities in the span of
    1, cos, sin, so three free fractions are not identified (the bound is +inf, not round-off)."""
    t = PhiStarComponents(("H", "A"), 0.04, 0.001, {"Z": (0.03, -0.07), "tt": (0.12, 0.25)},
                          {"H": 100, "A": 100, "Z": 100, "tt": 100}, components=("H", "A", "Z", "tt"))
    f = [0.21, 0.49, 0.2, 0.1]
    floated = t.cramer_rao(f, 100, num=["A"], den=["H", "A"], treatment={"Z": "floated", "tt": "floated"})
    assert floated.bound == np.inf
    # with one background fixed, three densities remain free in a three-dimensional span: finite
    assert np.isfinite(floated.nuisance_fixed[2]) and np.isfinite(floated.nuisance_fixed[3])
    assert np.isfinite(floated.all_fixed) and floated.all_fixed < floated.nuisance_fixed[2]
