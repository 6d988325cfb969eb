"""Templates: the phi* fit, positivity limits, Fisher information, and the network-output KDE."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, special, stats

from hpcmix.stats import (
    AnalyticTemplates,
    KDETemplate,
    KDETemplates,
    PhiStarTemplates,
    cramer_rao_bound,
    fit_phi_star_templates,
)


def _sample_phi(rng, a, is_a):
    c = 1 / (2 * np.pi)
    out = np.empty(is_a.size)
    todo = np.arange(is_a.size)
    while todo.size:
        x = rng.uniform(0, 2 * np.pi, todo.size)
        ok = rng.uniform(0, c + a, todo.size) < c + np.where(is_a[todo], a, -a) * np.cos(x)
        out[todo[ok]] = x[ok]
        todo = todo[~ok]
    return out


def test_phi_star_fit_recovers_a_with_correct_error():
    rng = np.random.default_rng(1)
    fits = []
    for _ in range(100):
        is_a = rng.uniform(size=20_000) < 0.5
        fits.append(fit_phi_star_templates(_sample_phi(rng, 0.041, is_a), is_a))
    a = np.array([f.a for f in fits])
    err = np.array([f.a_err for f in fits])
    pull = (a - 0.041) / err
    assert abs(pull.mean()) < 0.35  # 100 fits: error of the mean pull 0.1
    assert pull.std(ddof=1) == pytest.approx(1.0, abs=0.2)
    assert fits[0].c == pytest.approx(0.159, abs=5e-4) and fits[0].c == 1 / (2 * np.pi)
    big = fit_phi_star_templates(_sample_phi(rng, 0.041, np.arange(400_000) % 2 == 0), np.arange(400_000) % 2 == 0)
    assert big.a == pytest.approx(0.041, abs=4 * big.a_err)


def test_phi_star_fit_bad_input():
    with pytest.raises(ValueError, match="one length"):
        fit_phi_star_templates(np.zeros(3), np.zeros(4, bool))
    with pytest.raises(ValueError, match="no events"):
        fit_phi_star_templates(np.zeros(0), np.zeros(0, bool))


def test_phi_star_positivity_limits_and_fisher_information():
    t = PhiStarTemplates(a=0.041)
    lo, hi = t.positivity_limits()
    assert (lo, hi) == pytest.approx(((0.041 - t.c) / 0.082, (0.041 + t.c) / 0.082))
    x = np.linspace(0, 2 * np.pi, 10001)
    assert t.pdf(x, hi).min() == pytest.approx(0.0, abs=1e-12) and t.pdf(x, hi + 1e-3).min() < 0
    assert t.pdf(x, lo).min() == pytest.approx(0.0, abs=1e-12) and t.pdf(x, lo - 1e-3).min() < 0
    # generic ratio rule gives the same limits
    from hpcmix.stats.templates import limits_from_ratio_range

    assert limits_from_ratio_range(*t.ratio_range) == pytest.approx((lo, hi))
    # PHYSICS.md: I(1/2) = 4 pi a^2 / c = 0.133 and sigma >= 0.274 at N = 100 (exact at alpha = 1/2)
    assert t.fisher_information(0.5) == pytest.approx(4 * np.pi * 0.041**2 / t.c, rel=1e-12)
    assert t.fisher_information(0.5) == pytest.approx(0.133, abs=5e-4)
    assert cramer_rao_bound(t, 0.5, 100) == pytest.approx(0.274, abs=1e-3)
    # closed form against quadrature at other alphas (there it exceeds 4 pi a^2 / c)
    for alpha in (0.0, 0.7, 0.9, 2.0):
        num = integrate.quad(lambda v: (2 * t.a * np.cos(v)) ** 2 / t.pdf(v, alpha), 0, 2 * np.pi)[0]
        assert t.fisher_information(alpha) == pytest.approx(num, rel=1e-9)
    assert t.fisher_information(0.9) > t.fisher_information(0.5)


def test_analytic_templates_limits_and_information():
    t = AnalyticTemplates(lambda y: 0.5 + y, lambda y: 1.5 - y)  # ratio in [1/3, 3]
    assert t.positivity_limits() == pytest.approx((-0.5, 1.5))
    assert t.fisher_information(0.5) == pytest.approx(1 / 3, rel=1e-8)
    with pytest.raises(ValueError, match="hi > lo"):
        AnalyticTemplates(np.ones_like, np.ones_like, (1, 0))


@pytest.fixture(scope="module")
def nn_like():
    """Network-output-like samples: densities diverging at 0 (H) and 1 (A); information in the tails."""
    rng = np.random.default_rng(7)
    n = 100_000
    ya, yh = rng.beta(2.5, 0.6, n), rng.beta(0.6, 2.5, n)
    return ya, yh


def _integral(tpl):
    z = np.linspace(-30, 30, 600_001)  # nodes dense in logit space reach both boundaries
    y = special.expit(z)
    return np.trapezoid(tpl.pdf(y), y)


@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("space", ["logit", "reflect"])
def test_kde_integrates_to_one(nn_like, space, adaptive):
    ya, yh = nn_like
    t = KDETemplates(np.r_[ya, yh], np.r_[np.ones(ya.size, bool), np.zeros(yh.size, bool)], space=space,
                     adaptive=adaptive)
    assert t.adaptive is adaptive
    for tpl in (t.template_a, t.template_h):
        assert _integral(tpl) == pytest.approx(1.0, abs=1e-4)
        assert tpl.cdf(0.0) == pytest.approx(0.0, abs=1e-12) and tpl.cdf(1.0) == pytest.approx(1.0, abs=1e-9)
        # FFT round-off is cut: never negative, and exactly zero far from the events (not +-1e-17 noise)
        d = tpl.pdf_grid()
        assert d.min() >= 0 and (space == "reflect" or (d[:10] == 0).all() and (d[-10:] == 0).all())


@pytest.mark.parametrize("adaptive", [True, False])
def test_logit_kde_matches_fine_histogram_including_edge_bins(nn_like, adaptive):
    for data in nn_like:
        tpl = KDETemplate(data, adaptive=adaptive)  # logit space, Silverman (pilot) bandwidth
        edges = np.linspace(0, 1, 101)
        counts, _ = np.histogram(data, edges)
        expected = np.diff(tpl.cdf(edges)) * data.size  # KDE integrated over each bin
        pull = (counts - expected) / np.sqrt(expected)
        assert abs(pull[0]) < 3 and abs(pull[-1]) < 3  # the tails carry the information
        assert (pull**2).sum() < 100 + 4 * np.sqrt(200)  # chi2 with 100 bins
        # bin-averaged pdf equals the bin content (pdf and cdf agree)
        mid = np.linspace(edges[50], edges[51], 201)
        assert np.trapezoid(tpl.pdf(mid), mid) * data.size == pytest.approx(expected[50], rel=1e-3)


def test_reflection_is_biased_at_a_divergent_boundary(nn_like):
    """Why logit is the default: reflection flattens densities that diverge at 0 or 1."""
    data = nn_like[1]
    tpl = KDETemplate(data, space="reflect")
    counts = np.histogram(data, np.linspace(0, 1, 101))[0]
    expected = np.diff(tpl.cdf(np.linspace(0, 1, 101))) * data.size
    assert abs((counts[0] - expected[0]) / np.sqrt(expected[0])) > 5


def test_kde_templates_information_limits_and_settings(nn_like):
    ya, yh = nn_like
    y, is_a = np.r_[ya, yh], np.r_[np.ones(ya.size, bool), np.zeros(yh.size, bool)]
    t = KDETemplates(y, is_a)
    truth = AnalyticTemplates(stats.beta(2.5, 0.6).pdf, stats.beta(0.6, 2.5).pdf)
    assert t.fisher_information(0.5) == pytest.approx(float(truth.fisher_information(0.5)), rel=0.03)
    lo, hi = t.positivity_limits()
    assert lo <= 0 and hi >= 1  # the ratio spans (almost) 0 .. inf for these densities
    # an explicit bandwidth is used as given (logit units)
    t2 = KDETemplates(y, is_a, bandwidth=0.3, grid_size=2048)
    assert t2.bandwidths == (0.3, 0.3) and t2.grid.size == 2048
    # non-overlapping-ratio templates give wide limits
    rng = np.random.default_rng(0)
    yy = rng.uniform(size=50_000)
    lab = rng.uniform(size=yy.size) < 0.5
    # fixed kernels, strict rule over the whole range: the outermost events belong to one class
    # only and the other class's density there is its outermost kernel's Gaussian tail
    assert KDETemplates(yy, lab, adaptive=False).positivity_limits() == pytest.approx((0.0, 1.0), abs=1e-3)
    # adaptive kernels widen in the sparse tails: both classes stay populated, limits leave [0, 1]
    alo, ahi = KDETemplates(yy, lab).positivity_limits()
    assert alo < -0.02 and ahi > 1.2
    wlo, whi = KDETemplates(yy, lab, positivity_quantile=1e-3).positivity_limits()
    assert wlo < -0.5 and whi > 1.5  # identical classes: limits far outside [0, 1]


def test_adaptive_kde_class_binning_matches_the_exact_sum():
    """The FFT in 32 bandwidth classes against the direct sum of per-event Gaussians."""
    from hpcmix.stats.templates import _abramson_factors, _linear_binning, _smooth

    rng = np.random.default_rng(3)
    y = special.expit(rng.normal(0.5, 1.3, 4000))
    tpl = KDETemplate(y, adaptive=True)
    z, grid, h = tpl.transform(y), tpl.grid, tpl.bandwidth
    dz = grid[1] - grid[0]
    lam, _ = _abramson_factors(z, grid, _smooth(_linear_binning(z, grid[0], dz, grid.size), h / dz, False))
    assert lam.min() >= 0.2 and lam.max() <= 5.0 and tpl.factor_range == (lam.min(), lam.max())
    assert lam.max() > 3 * lam.min()  # really adaptive: wide kernels in the tails
    g = grid[::16]
    hi = h * lam
    exact = (np.exp(-0.5 * ((g[:, None] - z) / hi) ** 2) / hi).sum(axis=1) / (z.size * np.sqrt(2 * np.pi))
    dens = tpl.pdf_grid()[::16]
    # statistical error of a KDE with kernel width h_eff: sqrt(f / (n 2 sqrt(pi) h_eff)), h_eff >= 0.2 h
    stat = np.sqrt(exact / (z.size * 2 * np.sqrt(np.pi) * 5 * h))
    sel = exact > 1e-3 * exact.max()
    assert np.abs(dens - exact).max() < 1e-3 * exact.max()
    assert np.all(np.abs(dens - exact)[sel] < 0.1 * stat[sel])


MU = 1.0  # logit-normal classes: logit(y) ~ N(+MU, 1) for A, N(-MU, 1) for H: ln(p_A/p_H) = 2 MU logit(y)


@pytest.mark.parametrize(
    "adaptive",
    [True, pytest.param(False, marks=pytest.mark.xfail(
        strict=True, reason="fixed kernels: where one class has no events its density is a Gaussian tail "
                            "or zero, so ln(p_A/p_H) runs to -inf / +inf"))])
def test_adaptive_kde_log_ratio_in_the_tails(adaptive):
    rng = np.random.default_rng(11)
    n = 4000
    z = np.r_[rng.normal(MU, 1, n), rng.normal(-MU, 1, n)]
    y, is_a = special.expit(z), np.arange(2 * n) < n
    t = KDETemplates(y, is_a, adaptive=adaptive)
    # finite everywhere on the range of the template events
    zz = np.linspace(z.min(), z.max(), 20001)
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.log(t.p_a(special.expit(zz)) / t.p_h(special.expit(zz)))
    assert np.all(np.isfinite(lr))
    # between the 0.1 % and 2 % quantiles on each side the error stays bounded (the fixed KDE: inf or > 10)
    for q in ((0.001, 0.02), (0.98, 0.999)):
        zq = np.linspace(*np.quantile(z, q), 200)
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.abs(np.log(t.p_a(special.expit(zq)) / t.p_h(special.expit(zq))) - 2 * MU * zq)
        assert np.all(err < 6.0)
        # wide tail kernels flatten the log ratio (by ~40 % here), they do not break it
        assert err.mean() < 0.6 * np.abs(2 * MU * zq).mean()


def _two_component(rng, size, is_a, frac=0.8, mu=1.5):
    """A: logit(y) ~ 0.8 N(+1.5, 1) + 0.2 N(-1.5, 1); H mirrored. p_A/p_H lies in (1/4, 4)."""
    sign = np.where(rng.uniform(size=size) < frac, 1.0, -1.0) * (1.0 if is_a else -1.0)
    return special.expit(rng.normal(sign * mu, 1.0, size))


def test_mixture_fit_with_adaptive_templates_is_unbiased_at_alpha_0p9():
    """Toys of N = 100 from the true densities, templates from 4,000 events per class.

    The true ratio lies in (1/4, 4), so the true limits are [-1/3, 4/3]; alpha = 0.9 is ~4 sigma
    inside. The mean runs over 20 independent template sets so its error includes the template
    statistics (a single set shifts all its toys together).
    """
    from hpcmix.stats import fit_mixture
    from hpcmix.stats.toys import draw_toys

    means, limits = [], []
    for k in range(20):
        rng = np.random.default_rng(1000 + k)
        y = np.r_[_two_component(rng, 4000, True), _two_component(rng, 4000, False)]
        t = KDETemplates(y, np.arange(8000) < 4000)
        lo, hi = t.positivity_limits()
        limits.append((lo, hi))
        pool_a, pool_h = _two_component(rng, 25_000, True), _two_component(rng, 5_000, False)
        draw = draw_toys(pool_a.size, pool_h.size, alpha=0.9, n_events=100, n_toys=250, rng=rng)
        (pa_a, ph_a), (pa_h, ph_h) = t.densities(pool_a), t.densities(pool_h)
        fit = fit_mixture(draw.gather(pa_a, pa_h), draw.gather(ph_a, ph_h), alpha_true=0.9, alpha_limits=(lo, hi))
        assert fit.converged.all()
        means.append(fit.alpha_hat.mean())
    limits = np.array(limits)
    assert np.all(limits[:, 0] < -0.1) and np.all(limits[:, 1] > 1.1)  # wider than [0, 1]
    assert np.all(limits[:, 0] > -1 / 3 - 0.15) and np.all(limits[:, 1] < 4 / 3 + 0.15)  # near the truth
    means = np.array(means)
    err = means.std(ddof=1) / np.sqrt(means.size)
    assert abs(means.mean() - 0.9) < 3 * err


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(y=[0.1, 1.2, 0.3], is_a=[True, False, True]), "inside \\[0, 1\\]"),
        (dict(y=[0.1, 0.2], is_a=[True, True]), "both classes"),
        (dict(y=[0.1, 0.2, 0.3], is_a=[True, False]), "one length"),
        (dict(y=[0.1, 0.2, 0.3, 0.4], is_a=[True, False, True, False], bandwidth="wide"), "scott"),
        (dict(y=[0.1, 0.2, 0.3, 0.4], is_a=[True, False, True, False], bandwidth=-1.0), "positive"),
        (dict(y=[0.1, 0.2, 0.3, 0.4], is_a=[True, False, True, False], space="log"), "logit"),
    ],
)
def test_kde_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KDETemplates(**kwargs)


def test_defaults_are_the_package_defaults_and_no_global_settings_are_read():
    """hpcmix.stats takes settings as arguments; its defaults equal hpcmix.yaml's ``templates:``."""
    import os

    import dask.config
    import yaml

    import hpcmix
    from hpcmix.stats import templates as tm

    with open(os.path.join(os.path.dirname(hpcmix.__file__), "hpcmix.yaml")) as f:
        pkg = yaml.safe_load(f)["hpcmix"]["templates"]
    assert (tm.DEFAULT_SPACE, tm.DEFAULT_BANDWIDTH, tm.DEFAULT_ADAPTIVE, tm.DEFAULT_GRID_SIZE, tm.DEFAULT_LOGIT_CLIP,
            tm.DEFAULT_POSITIVITY_GRID, tm.DEFAULT_POSITIVITY_QUANTILE) == (
        pkg["space"], pkg["bandwidth"], pkg["adaptive"], pkg["grid_size"], pkg["logit_clip"],
        pkg["positivity_grid"], pkg["positivity_quantile"])
    rng = np.random.default_rng(4)
    y, is_a = rng.uniform(size=400), np.arange(400) < 200
    with dask.config.set({"hpcmix.templates.space": "reflect", "hpcmix.templates.grid_size": 64,
                          "hpcmix.templates.adaptive": False, "hpcmix.templates.positivity_grid": 5}):
        t = KDETemplates(y, is_a)
        assert (t.space, t.grid.size, t.adaptive) == ("logit", 8192, True)
        assert AnalyticTemplates(np.ones_like, np.ones_like).n_grid == 20001
    assert t.settings == {"space": "logit", "bandwidth": "silverman", "adaptive": True, "grid_size": 8192,
                          "logit_clip": 1e-7, "positivity_quantile": 0.0, "adaptive_classes": 32}


@pytest.mark.parametrize("name", ["space", "bandwidth", "adaptive", "grid_size", "clip", "positivity_quantile",
                                  "adaptive_classes"])
def test_unset_settings_are_refused_not_defaulted(name):
    """None (an unset option) is an error: the caller decides the value, nothing falls back to config."""
    y, is_a = np.linspace(0.1, 0.9, 20), np.arange(20) < 10
    with pytest.raises(TypeError, match=f"{name}=None"):
        KDETemplates(y, is_a, **{name: None})
    if name != "positivity_quantile":
        with pytest.raises(TypeError, match=f"{name}=None"):
            KDETemplate(y, **{name: None})
    with pytest.raises(TypeError, match="n_grid=None"):
        AnalyticTemplates(np.ones_like, np.ones_like, n_grid=None)
