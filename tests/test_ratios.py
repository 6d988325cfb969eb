"""Calibrated classifier density ratios (the nn_multiclass / nn_pairwise templates) on a known 1-D model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from hpcmix.stats import RatioComponents, fit_fractions
from hpcmix.stats.ratios import RATIO_CLIP
from hpcmix.store.artefacts import load_templates, save_templates
from hpcmix.train.metrics import pair_score

NAMES = ("H", "A", "Z")
MU = {"H": 0.0, "A": 1.0, "Z": -1.5}   # p_k = N(mu_k, 1) in a hidden variable x


def outputs(x):
    """What ideal pairwise classifiers give: y_k = P(k | x, k or H) = sigmoid(log p_k / p_H), columns A, Z."""
    return np.stack([special.expit(stats.norm.logpdf(x, MU[k]) - stats.norm.logpdf(x, MU["H"])) for k in NAMES[1:]],
                    axis=-1)


def sample(n, seed):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(MU[k], 1.0, n) for k in NAMES}


@pytest.fixture(scope="module")
def ratios():
    x = sample(4000, 1)
    return RatioComponents({k: outputs(v) for k, v in x.items()}, method="pairwise")


def test_calibrated_ratios_match_the_true_ratio_in_the_bulk(ratios):
    for j, k in enumerate(NAMES[1:], start=1):
        # between the two means and half a sigma beyond: the KDE noise there is below 15 %
        x = np.linspace(min(MU[k], 0.0) - 0.5, max(MU[k], 0.0) + 0.5, 26)
        y = np.full((x.size, 2), 0.5)
        y[:, j - 1] = outputs(x)[:, j - 1]
        r = ratios.densities(y)
        assert r.shape == (26, 3) and np.all(r[:, 0] == 1.0)
        true = stats.norm.pdf(x, MU[k]) / stats.norm.pdf(x, MU["H"])
        np.testing.assert_allclose(r[:, j], true, rtol=0.15)


def test_closure_on_held_out_events_is_one(ratios):
    held = {k: outputs(v) for k, v in sample(4000, 2).items()}
    closure = ratios.closure(held)
    assert set(closure) == {"A", "Z"}
    for k, c in closure.items():
        # E_H[r_k] = 1 and E_k[1 / r_k] = 1 for a true ratio
        assert abs(c["mean_r_on_reference"] - 1) < 4 * c["mean_r_on_reference_err"] + 0.03
        assert abs(c["mean_inverse_r_on_component"] - 1) < 4 * c["mean_inverse_r_on_component_err"] + 0.03
    # a miscalibrated ratio fails it: r_A scaled by 2 doubles E_H[r_A]
    bad = RatioComponents.__new__(RatioComponents)
    bad.__dict__.update(ratios.__dict__)
    bad.ratio = lambda k, y: 2.0 * RatioComponents.ratio(ratios, k, y)
    assert bad.closure(held)["A"]["mean_r_on_reference"] > 1.8


def test_monte_carlo_fisher_information_matches_the_integral(ratios):
    """The quadrature over template events reproduces the Cramer-Rao bound of the true densities."""
    f = np.array([0.3 * 0.7, 0.7 * 0.7, 0.3])
    grid = np.linspace(-9, 9, 4001)
    dens = np.stack([stats.norm.pdf(grid, MU[k]) for k in NAMES], axis=-1)
    from hpcmix.stats import fraction_cramer_rao_bound

    exact = fraction_cramer_rao_bound(dens, grid, f, 100, num=[1], den=[0, 1], treatment={2: "floated"}).bound
    got = ratios.cramer_rao(f, 100, num=["A"], den=["H", "A"], treatment={"Z": "floated"}).bound
    assert got == pytest.approx(float(exact), rel=0.05)
    fixed = ratios.cramer_rao(f, 100, num=["A"], den=["H", "A"], treatment={"Z": "fixed"}).bound
    assert fixed < got    # floating the nuisance costs precision


def test_fit_with_ratios_is_unbiased(ratios):
    rng = np.random.default_rng(5)
    f = {"H": 0.3 * 0.8, "A": 0.7 * 0.8, "Z": 0.2}
    n_toys, n = 400, 300
    counts = rng.multinomial(n, [f[k] for k in NAMES], size=n_toys)
    x = np.stack([np.concatenate([rng.normal(MU[k], 1.0, c) for k, c in zip(NAMES, row)]) for row in counts])
    fit = fit_fractions(ratios.densities(outputs(x)), num=[1], den=[0, 1], f_true=[f[k] for k in NAMES],
                        treatment={2: "floated"}, support=ratios.support_nodes())
    ok = fit.converged & ~fit.flat
    assert ok.mean() > 0.95
    assert abs(fit.alpha_hat[ok].mean() - 0.7) < 3 * fit.alpha_hat[ok].std() / np.sqrt(ok.sum()) + 0.01
    assert abs(fit.fractions[ok, 2].mean() - 0.2) < 0.02


def test_round_trip_is_bit_identical(ratios, tmp_path):
    save_templates(tmp_path, ratios, components=NAMES)
    back = load_templates(tmp_path)
    assert isinstance(back, RatioComponents) and back.components == NAMES and back.method == "pairwise"
    y = outputs(np.linspace(-4, 4, 101))
    assert np.array_equal(back.densities(y), ratios.densities(y))
    assert np.array_equal(back.support_nodes(), ratios.support_nodes())
    x, d = back.tabulate(64)
    assert d.shape == (64, 3)


def test_ratios_where_a_density_vanishes(ratios):
    cal = ratios.calibrations["A"]
    y = np.array([1e-15, 0.5, 1.0 - 1e-15])
    p_a, p_h = cal.templates["A"].pdf(y), cal.templates["H"].pdf(y)
    r = ratios.ratio("A", y)
    # inside: the plain ratio
    assert r[1] == pytest.approx(p_a[1] / p_h[1])
    # where the reference density is zero the ratio is p_k over the reference's floor: large, finite,
    # and where p_k is zero too it is the lower clip (no event may take over the mixture there)
    far = np.array([1.0 - 1e-300, 1e-300])
    pk, pr = cal.templates["A"].pdf(far), cal.templates["H"].pdf(far)
    rf = ratios.ratio("A", far)
    assert np.isfinite(rf).all() and (rf <= RATIO_CLIP).all()
    for v, a_, h_ in zip(rf, pk, pr):
        if h_ == 0 and a_ == 0:
            assert v == 1.0 / RATIO_CLIP
        elif h_ == 0:
            assert v > 1e6
    assert np.any(pr == 0), "the test needs a point where the reference KDE vanishes"


def test_weighted_ratios_are_the_ratios_of_repeated_events(tmp_path):
    """templates.weights for nn_multiclass / nn_pairwise: weighted calibrations and quadrature equal
    those of the events repeated as often as their (integer) weights, and survive a round trip."""
    x = sample(1500, 3)
    y = {k: outputs(v) for k, v in x.items()}
    w = np.random.default_rng(4).integers(0, 4, y["Z"].shape[0])
    weighted = RatioComponents(y, method="pairwise", weights={"Z": w}, bandwidth=0.2)
    repeated = RatioComponents({**y, "Z": np.repeat(y["Z"], w, axis=0)}, method="pairwise", bandwidth=0.2)
    probe = outputs(np.linspace(-3, 3, 61))
    np.testing.assert_allclose(weighted.densities(probe), repeated.densities(probe), rtol=1e-9, atol=1e-12)
    # weight-0 events are no nodes; the quadrature sums of any g agree (a repeated node counts w times)
    assert weighted.nodes.shape[0] == 2 * 1500 + int((w > 0).sum())
    np.testing.assert_allclose(np.unique(weighted.nodes, axis=0), np.unique(repeated.nodes, axis=0), rtol=0)
    (rw, qw), (rr, qr) = weighted.quadrature(), repeated.quadrature()
    for g in (lambda r: r[:, 1], lambda r: (r[:, 1] - 1) * (r[:, 2] - 1) / r.sum(axis=1)):
        assert (qw * g(rw)).sum() == pytest.approx((qr * g(rr)).sum(), rel=1e-9)
    f = np.array([0.3 * 0.8, 0.7 * 0.8, 0.2])
    assert weighted.cramer_rao(f, 100, num=["A"], den=["H", "A"], treatment={"Z": "floated"}).bound == pytest.approx(
        repeated.cramer_rao(f, 100, num=["A"], den=["H", "A"], treatment={"Z": "floated"}).bound, rel=1e-9)
    save_templates(tmp_path, weighted, components=NAMES)
    back = load_templates(tmp_path)
    assert np.array_equal(back.quadrature()[1], qw) and np.array_equal(back.densities(probe), weighted.densities(probe))
    # the unweighted templates store no node weights: their files and quadrature are as before
    assert "node_weights" not in repeated.to_arrays() and "node_weights" in weighted.to_arrays()
    # unit weights are no weights: the closure and its errors are the unweighted ones
    from hpcmix.stats.ratios import ratio_closure

    r0, r1 = rw[:100, 1], rw[-100:, 1]
    assert ratio_closure(r0, r1, w_ref=np.ones(100), w_k=np.ones(100)) == pytest.approx(ratio_closure(r0, r1), rel=1e-12)
    with pytest.raises(ValueError, match="weights given for \\['W'\\]"):
        RatioComponents(y, method="pairwise", weights={"W": w})
    with pytest.raises(ValueError, match="3 weights for 1500 events"):
        RatioComponents(y, method="pairwise", weights={"Z": w[:3]})


def test_weights_that_move_a_component_move_its_calibrated_ratio():
    """Z events of N(-1.5, 1) weighted by N(-1, 1) / N(-1.5, 1): the calibrated r_Z is the target's
    ratio to H (the network output stays monotonic in x, so calibration still gives the exact ratio),
    and the weighted closure on held-out events is one."""
    def to_target(v):
        return stats.norm.pdf(v, -1.0) / stats.norm.pdf(v, MU["Z"])

    x = sample(6000, 8)
    y = {k: outputs(v) for k, v in x.items()}
    ratios = RatioComponents(y, method="pairwise", weights={"Z": to_target(x["Z"])})
    grid = np.linspace(-1.5, 0.5, 21)
    probe = np.full((grid.size, 2), 0.5)
    probe[:, 1] = outputs(grid)[:, 1]
    true = stats.norm.pdf(grid, -1.0) / stats.norm.pdf(grid, 0.0)
    np.testing.assert_allclose(ratios.densities(probe)[:, 2], true, rtol=0.15)
    plain = RatioComponents(y, method="pairwise").densities(probe)[:, 2]
    # the nominal Z's ratio is another one: exp(-x / 2 - 5 / 8) times the target's, 1 only near x = -1.25
    assert np.all(np.abs(plain / true - 1)[grid >= -0.5] > 0.25)
    held = sample(6000, 9)
    c = ratios.closure({k: outputs(v) for k, v in held.items()}, {"Z": to_target(held["Z"])})["Z"]
    assert abs(c["mean_r_on_reference"] - 1) < 4 * c["mean_r_on_reference_err"] + 0.03
    assert abs(c["mean_inverse_r_on_component"] - 1) < 4 * c["mean_inverse_r_on_component_err"] + 0.03
    unweighted = ratios.closure({k: outputs(v) for k, v in held.items()})["Z"]
    assert abs(unweighted["mean_inverse_r_on_component"] - 1) > 0.1   # the nominal Z events do not close


def test_the_weighted_closure_error_is_the_spread_of_weighted_means():
    """ratio_closure's weighted error, sqrt(n / (n - 1) sum w^2 (v - mean)^2) / sum w, against the spread
    of the weighted mean over 3000 replicas of 200 events (skewed values, gamma-distributed weights)."""
    from hpcmix.stats.ratios import ratio_closure

    rng = np.random.default_rng(21)
    v, w = rng.exponential(1.0, (3000, 200)), rng.gamma(1.5, 1.0, (3000, 200))
    got = [ratio_closure(v[i], np.ones(200), w_ref=w[i]) for i in range(v.shape[0])]
    means = np.array([g["mean_r_on_reference"] for g in got])
    errors = np.array([g["mean_r_on_reference_err"] for g in got])
    assert errors.mean() == pytest.approx(means.std(ddof=1), rel=0.04)
    assert ratio_closure(v[0], np.ones(200), w_ref=np.r_[1.0, np.zeros(199)])["mean_r_on_reference"] == v[0, 0]


def test_bad_outputs_are_named():
    good = np.full((5, 2), 0.5)
    with pytest.raises(ValueError, match=r"component 'A' must have shape \(n_events, 2\)"):
        RatioComponents({"H": good, "A": np.full((5, 1), 0.5), "Z": good}, method="pairwise")
    with pytest.raises(ValueError, match="method must be one of"):
        RatioComponents({"H": good, "A": good, "Z": good}, method="softmax")
    with pytest.raises(ValueError, match="inside \\[0, 1\\]"):
        RatioComponents({"H": good, "A": good + 1, "Z": good}, method="pairwise")


def test_pair_score_is_the_two_class_probability():
    proba = np.array([[0.2, 0.6, 0.2], [0.5, 0.0, 0.5]], dtype=np.float32)
    np.testing.assert_allclose(pair_score(proba, 1, 0), [0.75, 0.0])
    np.testing.assert_allclose(pair_score(proba, 2, 0), [0.5, 0.5])


def test_pair_ratio_fits_as_the_nn_kde_templates_do():
    """With the nuisance fixed at zero, r_A = p_A / p_H of the A output is the nn estimator's likelihood."""
    from hpcmix.stats import KDEComponents

    x = sample(3000, 3)
    y = {k: outputs(v) for k, v in x.items()}
    ratios = RatioComponents(y, method="pairwise")
    kde = KDEComponents({k: v[:, 0] for k, v in y.items()})
    rng = np.random.default_rng(9)
    xs = np.where(rng.random((200, 80)) < 0.7, rng.normal(MU["A"], 1, (200, 80)), rng.normal(MU["H"], 1, (200, 80)))
    f = [0.3, 0.7, 0.0]
    common = dict(num=[1], den=[0, 1], f_true=f, treatment={2: "fixed"})
    a = fit_fractions(ratios.densities(outputs(xs)), support=ratios.support_nodes(), **common)
    b = fit_fractions(kde.densities(outputs(xs)[..., 0]), support=kde.support_nodes(), **common)
    inside = ~a.at_limit & ~b.at_limit & a.converged & b.converged
    assert inside.mean() > 0.8
    np.testing.assert_allclose(a.alpha_hat[inside], b.alpha_hat[inside], atol=1e-6)
