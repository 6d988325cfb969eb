"""The vectorised mixture fitter: agreement with iminuit, efficiency and coverage, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hpcmix.stats import (
    AnalyticTemplates,
    PhiStarTemplates,
    ZeroDensityWarning,
    fit_mixture,
    mixture_log_likelihood,
)

iminuit = pytest.importorskip("iminuit")

PHI = PhiStarTemplates(a=0.041)
BETA = AnalyticTemplates(stats.beta(3, 2).pdf, stats.beta(2, 3).pdf, (0.0, 1.0))  # limits [0, 1]


def _sample_phi(rng, n, is_a):
    """Accept-reject sample of phi* from c +- a cos x."""
    out = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        x = rng.uniform(0, 2 * np.pi, todo.size)
        s = np.where(is_a[todo], 1.0, -1.0)
        ok = rng.uniform(0, PHI.c + PHI.a, todo.size) < PHI.c + s * PHI.a * np.cos(x)
        out[todo[ok]] = x[ok]
        todo = todo[~ok]
    return out


def _sample_beta(rng, is_a):
    return np.where(is_a, rng.beta(3, 2, is_a.shape), rng.beta(2, 3, is_a.shape))


def _reference(p_a, p_h, limits):
    """One iminuit fit of -2 ln L with the positivity limits; tight tolerance."""
    def m2lnl(alpha):
        p = p_h + alpha * (p_a - p_h)
        return -2.0 * np.sum(np.log(np.maximum(p, 1e-300)))

    m = iminuit.Minuit(m2lnl, alpha=0.5)
    m.errordef = iminuit.Minuit.LEAST_SQUARES
    m.limits = [limits]
    m.tol = 1e-7
    m.strategy = 2
    m.migrad()
    return m, m2lnl


def _templates_and_sampler(which):
    """The phi* or the beta test templates, and a sampler (rng, is_a) -> x of is_a's shape."""
    if which == "phi":
        return PHI, lambda r, ia: _sample_phi(r, ia.size, ia.ravel()).reshape(ia.shape)
    return BETA, _sample_beta


def _random_toys(rng, templates, sampler, n_toys):
    """Toys of random N (with N = 1 and all-H / all-A toys among them), padded with a mask."""
    n = rng.integers(1, 200, n_toys)
    n[:50] = 1
    alpha = rng.uniform(0, 1, n_toys)
    alpha[50:100], alpha[100:150] = 0.0, 1.0  # all-H and all-A toys
    n_max = n.max()
    mask = np.arange(n_max)[None, :] < n[:, None]
    is_a = rng.uniform(size=mask.shape) < alpha[:, None]
    x = sampler(rng, is_a)
    p_a, p_h = templates.densities(x)
    return p_a, p_h, mask, n, alpha, is_a


@pytest.mark.parametrize("which", ["phi", "beta"])
def test_agrees_with_iminuit_on_random_toys(which):
    rng = np.random.default_rng(11 if which == "phi" else 12)
    templates, sampler = _templates_and_sampler(which)
    p_a, p_h, mask, n, alpha, is_a = _random_toys(rng, templates, sampler, 500)
    limits = templates.positivity_limits()
    fit = fit_mixture(p_a, p_h, mask=mask, alpha_true=alpha, alpha_limits=limits)
    assert fit.converged.all()
    # the toys must include the special cases the check promises
    assert (n == 1).sum() >= 50
    assert (is_a.sum(1)[n > 1] == n[n > 1]).any() and (is_a[n > 1].sum(1) == 0).any()
    assert fit.at_limit.sum() >= 50  # N = 1 toys (and beta all-A/all-H toys) peak on a limit
    ref = np.empty(n.size)
    for i in range(n.size):  # the reference: one iminuit fit per toy
        m, f = _reference(p_a[i, : n[i]], p_h[i, : n[i]], limits)
        ref[i] = m.values["alpha"]
        if i % 10 == 0 and not fit.at_limit[i]:
            # curvature error against a finite-difference second derivative of -2 ln L
            a0, h = fit.alpha_hat[i], 1e-4
            d2 = (f(a0 + h) - 2 * f(a0) + f(a0 - h)) / h**2
            assert fit.sigma_hat[i] == pytest.approx(np.sqrt(2 / d2), rel=1e-4)
            lr = f(alpha[i]) - f(fit.alpha_hat[i])
            assert fit.lr_stat[i] == pytest.approx(lr, rel=1e-6, abs=1e-8)
    np.testing.assert_allclose(fit.alpha_hat, ref, atol=1e-4, rtol=0)
    # at the positivity limit the fitter returns the limit itself
    np.testing.assert_allclose(fit.alpha_hat[fit.at_limit], np.clip(ref[fit.at_limit], *limits), atol=1e-4)


def test_intervals_match_minos():
    rng = np.random.default_rng(5)
    is_a = rng.uniform(size=(40, 100)) < 0.7
    x = _sample_phi(rng, is_a.size, is_a.ravel()).reshape(is_a.shape)
    p_a, p_h = PHI.densities(x)
    limits = PHI.positivity_limits()
    fit = fit_mixture(p_a, p_h, alpha_limits=limits, alpha_true=0.7)
    for i in range(40):
        m, _ = _reference(p_a[i], p_h[i], limits)
        m.minos()
        me = m.merrors["alpha"]
        lo = max(m.values["alpha"] + me.lower, limits[0])
        hi = min(m.values["alpha"] + me.upper, limits[1])
        assert fit.interval_lo[i] == pytest.approx(lo, abs=2e-4)
        assert fit.interval_hi[i] == pytest.approx(hi, abs=2e-4)
    # the interval ends are exactly where -2 Delta lnL = 1
    ll = mixture_log_likelihood(p_a[:5], p_h[:5], [0.0])  # shape check only
    assert ll.shape == (5, 1)
    for i in range(5):
        l_hat = mixture_log_likelihood(p_a[i], p_h[i], fit.alpha_hat[i])[0, 0]
        for end in (fit.interval_lo[i], fit.interval_hi[i]):
            if not fit.interval_clipped[i]:
                val = mixture_log_likelihood(p_a[i], p_h[i], end)[0, 0]
                assert -2 * (val - l_hat) == pytest.approx(1.0, abs=1e-6)


def test_efficiency_and_coverage_on_beta_templates():
    """At N = 500 the spread of alpha_hat sits on the Cramer-Rao bound and Delta = 1 intervals cover 68.3 %."""
    rng = np.random.default_rng(2024)
    n_events, n_toys, alpha = 500, 20_000, 0.5
    bound = float(BETA.cramer_rao_bound(alpha, n_events))
    assert BETA.fisher_information(alpha) == pytest.approx(0.8, rel=1e-6)  # analytic value
    a_hat, covered, lr = [], [], []
    for _ in range(4):  # batches keep memory modest
        is_a = rng.uniform(size=(n_toys // 4, n_events)) < alpha
        p_a, p_h = BETA.densities(_sample_beta(rng, is_a))
        fit = fit_mixture(p_a, p_h, alpha_true=alpha, alpha_limits=BETA.positivity_limits())
        assert fit.converged.all()
        a_hat.append(fit.alpha_hat)
        covered.append((fit.interval_lo <= alpha) & (alpha <= fit.interval_hi))
        lr.append(fit.lr_stat)
    a_hat, covered, lr = map(np.concatenate, (a_hat, covered, lr))
    # statistical error of the std itself: 1/sqrt(2 n_toys) = 0.5 %, well inside 3 %
    assert a_hat.std(ddof=1) == pytest.approx(bound, rel=0.03)
    # binomial error of the coverage: 0.33 %, well inside 1.5 %
    assert abs(covered.mean() - 0.6827) < 0.015
    assert stats.kstest(lr, stats.chi2(1).cdf).pvalue > 1e-3
    assert abs(a_hat.mean() - alpha) < 3 * bound / np.sqrt(a_hat.size) + 1e-3


def test_padding_equals_separate_fits():
    rng = np.random.default_rng(3)
    x = _sample_phi(rng, 300, rng.uniform(size=300) < 0.6)
    p_a, p_h = PHI.densities(x)
    sizes = [1, 20, 100, 179]
    mask = np.zeros((4, 179), bool)
    pa2, ph2 = np.zeros((4, 179)), np.zeros((4, 179))
    start = 0
    for i, k in enumerate(sizes):
        mask[i, :k] = True
        pa2[i, :k], ph2[i, :k] = p_a[start : start + k], p_h[start : start + k]
        start += k
    batched = fit_mixture(pa2, ph2, mask=mask, alpha_limits=PHI.positivity_limits())
    start = 0
    for i, k in enumerate(sizes):
        one = fit_mixture(p_a[start : start + k], p_h[start : start + k], alpha_limits=PHI.positivity_limits())
        assert batched.alpha_hat[i] == pytest.approx(one.alpha_hat[0], abs=1e-9)
        assert batched.n_events[i] == k
        start += k


def test_unbounded_and_flat_likelihoods_are_flagged():
    # all events favour A and no limit: lnL rises for ever
    fit = fit_mixture(np.array([[2.0, 3.0]]), np.array([[1.0, 1.0]]))
    assert fit.alpha_hat[0] == np.inf and not fit.converged[0]
    # with the limit the fit sits on it
    fit = fit_mixture(np.array([[2.0, 3.0]]), np.array([[1.0, 1.0]]), alpha_limits=(-1, 1.5))
    assert fit.alpha_hat[0] == 1.5 and fit.at_limit[0] and fit.converged[0] and fit.interval_clipped[0]
    fit = fit_mixture(np.ones((1, 3)), np.ones((1, 3)), alpha_limits=(0, 1))
    assert not fit.converged[0]


def test_zero_density_gives_finite_result_and_one_warning():
    p_a = np.array([[0.0, 1.2, 0.8, 1.5], [1.0, 0.9, 0.5, 1.3]])
    p_h = np.array([[1.0, 0.8, 1.2, 0.0], [0.0, 0.0, 1.0, 0.7]])
    with pytest.warns(ZeroDensityWarning, match="floored") as rec:
        fit = fit_mixture(p_a, p_h, alpha_true=0.5)
    assert len(rec) == 1
    assert np.all(np.isfinite(fit.alpha_hat)) and np.all(np.isfinite(fit.sigma_hat))
    assert np.all(np.isfinite(fit.lr_stat)) and fit.converged.all()
    assert np.all(np.isfinite(fit.interval_lo)) and np.all(np.isfinite(fit.interval_hi))
    assert issubclass(ZeroDensityWarning, UserWarning)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(p_a=np.ones((3, 4)), p_h=np.ones((3, 5))), "same shape"),
        (dict(p_a=np.ones((2, 3)), p_h=np.ones((2, 3)), mask=np.ones((2, 4), bool)), "mask must have the shape"),
        (dict(p_a=np.ones((2, 3)), p_h=np.ones((2, 3)), mask=np.array([[1, 1, 0], [0, 0, 0]], bool)),
         "no events"),
        (dict(p_a=np.ones((0, 3)), p_h=np.ones((0, 3))), "no toys"),
        (dict(p_a=np.full((1, 2), np.nan), p_h=np.ones((1, 2))), "NaN or inf"),
        (dict(p_a=-np.ones((1, 2)), p_h=np.ones((1, 2))), "negative"),
        (dict(p_a=np.ones((1, 2)), p_h=np.ones((1, 2)), alpha_limits=(1.0, 0.0)), "alpha_min < alpha_max"),
        (dict(p_a=np.ones((2, 2)), p_h=np.ones((2, 2)), alpha_true=[0.1, 0.2, 0.3]), "one value per toy"),
        (dict(p_a=np.ones((1, 2, 2)), p_h=np.ones((1, 2, 2))), "1-D"),
    ],
)
def test_bad_input_raises_clear_errors(kwargs, match):
    p_a, p_h = kwargs.pop("p_a"), kwargs.pop("p_h")
    with pytest.raises(ValueError, match=match):
        fit_mixture(p_a, p_h, **kwargs)


# --------------------------------------------------------------------------- fast path vs robust path


def _robust(p_a, p_h, mask, limits, alpha_true, tol=1e-12):
    """The bracketed-Newton path alone (no fast path), as the reference for the fast one."""
    from hpcmix.stats.fitter import _fit_block

    w = np.where(mask, p_a, 1.0) / np.where(mask, p_h, 1.0) - 1.0
    n = w.shape[0]
    return _fit_block(w, np.full(n, limits[0]), np.full(n, limits[1]), alpha_true, tol, 200)


@pytest.mark.parametrize("which", ["phi", "beta"])
def test_fast_path_agrees_with_robust_path(which):
    """Toys certified by the series fast path (n_iter == 2) and toys redone by the robust path agree
    with the robust path alone, in every output."""
    rng = np.random.default_rng(31 if which == "phi" else 32)
    templates, sampler = _templates_and_sampler(which)
    p_a, p_h, mask, _, alpha, _ = _random_toys(rng, templates, sampler, 2000)
    limits = templates.positivity_limits()
    fit = fit_mixture(p_a, p_h, mask=mask, alpha_true=alpha, alpha_limits=limits)
    ref = _robust(p_a, p_h, mask, limits, alpha)
    fast = fit.n_iter == 2
    assert fast.sum() > 500 and (~fast).sum() >= 50  # both paths are exercised
    assert not fit.at_limit[fast].any() and fit.converged[fast].all()
    for key in ("converged", "at_limit", "interval_clipped"):
        np.testing.assert_array_equal(getattr(fit, key), ref[key], err_msg=key)
    for key in ("alpha_hat", "interval_lo", "interval_hi"):
        np.testing.assert_allclose(getattr(fit, key), ref[key], rtol=0, atol=1e-8, err_msg=key)
    np.testing.assert_allclose(fit.sigma_hat, ref["sigma_hat"], rtol=1e-6)
    np.testing.assert_allclose(fit.lr_stat, ref["lr_stat"], rtol=1e-7, atol=1e-9)


def test_fast_path_blocks_chunks_and_tolerance(monkeypatch):
    """Results do not depend on the cache blocks or the chunking; a looser tol still meets it."""
    from hpcmix.stats import fitter

    rng = np.random.default_rng(8)
    is_a = rng.uniform(size=(700, 60)) < 0.6
    p_a, p_h = PHI.densities(_sample_phi(rng, is_a.size, is_a.ravel()).reshape(is_a.shape))
    limits = PHI.positivity_limits()
    one = fit_mixture(p_a, p_h, alpha_true=0.6, alpha_limits=limits)
    monkeypatch.setattr(fitter, "_CHUNK_EVENTS", 5000)  # several chunks of ~83 toys, blocks of 16
    many = fit_mixture(p_a, p_h, alpha_true=0.6, alpha_limits=limits, block_size=1000)
    for key, v in one.as_dict().items():
        np.testing.assert_allclose(getattr(many, key), v, rtol=0, atol=1e-9, err_msg=key)
    loose = fit_mixture(p_a, p_h, alpha_true=0.6, alpha_limits=limits, tol=1e-5)
    assert np.abs(loose.alpha_hat - one.alpha_hat).max() < 1e-5 * 3
    assert np.abs(loose.interval_hi - one.interval_hi).max() < 1e-5 * 3


def test_lr_far_from_alpha_hat_and_crossing_polish():
    """alpha_true far from alpha_hat takes the logarithm path for the LR statistic; crossings whose
    certification fails are polished by the exact iteration."""
    from hpcmix.stats.fitter import _polish_crossings

    rng = np.random.default_rng(9)
    is_a = rng.uniform(size=(50, 100)) < 0.7
    p_a, p_h = PHI.densities(_sample_phi(rng, is_a.size, is_a.ravel()).reshape(is_a.shape))
    limits = PHI.positivity_limits()
    truth = np.where(np.arange(50) % 2 == 0, -1.3, 0.7)  # far outside the typical interval
    fit = fit_mixture(p_a, p_h, alpha_true=truth, alpha_limits=limits)
    ll_hat = mixture_log_likelihood(p_a, p_h, 0.0)  # base only; compare per toy below
    for i in range(50):
        l_hat = mixture_log_likelihood(p_a[i], p_h[i], fit.alpha_hat[i])[0, 0]
        l_true = mixture_log_likelihood(p_a[i], p_h[i], truth[i])[0, 0]
        assert fit.lr_stat[i] == pytest.approx(2 * (l_hat - l_true), rel=1e-9, abs=1e-9)
    assert ll_hat.shape == (50, 1)
    # the polish alone, from deliberately poor starts, lands on the exact crossings
    w = p_a[:10] / p_h[:10] - 1.0
    lo = np.full(10, limits[0])
    hi = np.full(10, limits[1])
    starts = np.vstack([fit.interval_lo[:10] - 0.05, fit.interval_hi[:10] + 0.05])
    ok, ends, it = _polish_crossings(w, fit.alpha_hat[:10], lo, hi, lo, hi, starts, 1e-12)
    assert ok.all() and (it > 2).all()
    np.testing.assert_allclose(ends[0], fit.interval_lo[:10], atol=1e-8)
    np.testing.assert_allclose(ends[1], fit.interval_hi[:10], atol=1e-8)


def test_density_checks_ride_along_and_redo_after_flooring():
    """A density of exactly zero deep inside a large batch is found by the first pass: one warning,
    and the whole fit is redone on floored densities (same result as flooring up front)."""
    rng = np.random.default_rng(10)
    is_a = rng.uniform(size=(300, 80)) < 0.5
    p_a, p_h = PHI.densities(_sample_phi(rng, is_a.size, is_a.ravel()).reshape(is_a.shape))
    p_a[250, 7] = 0.0
    with pytest.warns(ZeroDensityWarning, match="1 event density"):
        fit = fit_mixture(p_a, p_h, alpha_true=0.5)
    floor = 1e-12 * max(p_a.max(), p_h.max())
    ref = fit_mixture(np.maximum(p_a, floor), p_h, alpha_true=0.5)
    np.testing.assert_array_equal(fit.alpha_hat, ref.alpha_hat)
    assert np.isfinite(fit.alpha_hat).all() and fit.converged.all()
    with pytest.raises(ValueError, match="NaN or inf"):
        p_h[299, 79] = np.inf
        fit_mixture(p_a, p_h)


def test_densities_zero_at_every_event_give_a_flagged_flat_fit_not_nan_warnings():
    """A template vanishing on the whole test pool (the job fuzzer's finding: a tiny fixed KDE
    bandwidth): one ZeroDensityWarning, no 0/0, and every toy flagged as not converged."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.warns(ZeroDensityWarning, match="12 event density value"):
            fit = fit_mixture(np.zeros((3, 4)), np.zeros((3, 4)), alpha_true=0.5, alpha_limits=(-1.0, 2.0))
    assert not fit.converged.any() and np.isnan(fit.alpha_hat).all()
