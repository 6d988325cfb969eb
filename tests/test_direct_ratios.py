"""The ratio estimator's templates: likelihood-ratio network outputs u = omega(r) used as density ratios
directly (hpcmix.stats.DirectRatioTemplates / DirectRatioComponents), on known 1-D Gaussians."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hpcmix.stats import AnalyticTemplates, DirectRatioComponents, DirectRatioTemplates, fit_fractions, fit_mixture
from hpcmix.stats.ratios import RATIO_CLIP
from hpcmix.store.artefacts import load_templates, save_templates

MU = {"H": 0.0, "A": 1.0, "Z": -1.5}   # p_k = N(mu_k, 1)


def log_ratio(x, k, ref="H"):
    """What an ideal exponential-loss network gives: u_k = log p_k / p_ref."""
    return stats.norm.logpdf(x, MU[k]) - stats.norm.logpdf(x, MU[ref])


def sample(n, seed, names=("H", "A")):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(MU[k], 1.0, n) for k in names}


@pytest.fixture(scope="module")
def pair():
    x = sample(20000, 1)
    return DirectRatioTemplates({k: log_ratio(v, "A") for k, v in x.items()}, loss="exponential")


def test_densities_are_the_ratio_and_one(pair):
    x = np.linspace(-2, 3, 11)
    r, one = pair.densities(log_ratio(x, "A"))
    np.testing.assert_array_equal(one, 1.0)
    # the normalisation is the Monte Carlo mean of the true ratio over H events: 1 within its error
    assert pair.norm == pytest.approx(1.0, abs=0.03)
    np.testing.assert_allclose(r, np.exp(x - 0.5) / pair.norm, rtol=1e-12)


def test_normalisation_absorbs_a_constant_offset_of_the_network(pair):
    """u + c is the same ratio up to e^c: dividing by the mean over reference events removes it."""
    x = sample(20000, 1)
    shifted = DirectRatioTemplates({k: log_ratio(v, "A") + 0.7 for k, v in x.items()}, loss="exponential")
    assert shifted.norm == pytest.approx(pair.norm * np.exp(0.7), rel=1e-12)
    u = log_ratio(np.linspace(-2, 3, 7), "A")
    np.testing.assert_allclose(shifted.ratio(u + 0.7), pair.ratio(u), rtol=1e-12)
    # and the mean of r over the reference template events is 1 by construction
    assert float(np.mean(shifted.ratio(log_ratio(x["H"], "A") + 0.7))) == pytest.approx(1.0, rel=1e-12)


def test_closure_on_held_out_events(pair):
    held = {k: log_ratio(v, "A") for k, v in sample(20000, 2).items()}
    c = pair.closure(held)["A"]
    assert abs(c["mean_r_on_reference"] - 1) < 4 * c["mean_r_on_reference_err"]
    assert abs(c["mean_inverse_r_on_component"] - 1) < 4 * c["mean_inverse_r_on_component_err"]
    # a network whose ratio is twice too steep (u = 2 log r) fails it
    steep = DirectRatioTemplates({k: 2 * v for k, v in held.items()}, loss="exponential")
    bad = steep.closure({k: 2 * v for k, v in sample(20000, 3).items()})["A"]
    assert bad["mean_inverse_r_on_component"] > 1.5


def test_fisher_information_matches_the_analytic_templates(pair):
    exact = AnalyticTemplates(lambda x: stats.norm.pdf(x, MU["A"]), lambda x: stats.norm.pdf(x, MU["H"]),
                              support=(-9.0, 10.0))
    alphas = np.array([0.1, 0.5, 0.7, 0.9])
    np.testing.assert_allclose(pair.fisher_information(alphas), exact.fisher_information(alphas), rtol=0.03)
    lo, hi = pair.positivity_limits()
    assert lo < 0.0 and hi > 1.0       # r runs over decades either way on 20000 + 20000 events


def test_fit_with_direct_ratios_is_unbiased(pair):
    rng = np.random.default_rng(5)
    n_toys, n, alpha = 400, 300, 0.7
    n_a = rng.binomial(n, alpha, n_toys)
    x = np.where(np.arange(n) < n_a[:, None], rng.normal(MU["A"], 1, (n_toys, n)), rng.normal(MU["H"], 1, (n_toys, n)))
    p_a, p_h = pair.densities(log_ratio(x, "A"))
    fit = fit_mixture(p_a, p_h, alpha_limits=pair.positivity_limits())
    ok = fit.converged
    assert ok.mean() > 0.95
    assert abs(fit.alpha_hat[ok].mean() - alpha) < 3 * fit.alpha_hat[ok].std() / np.sqrt(ok.sum()) + 0.01
    # the width is the Cramer-Rao bound's at this size (an efficient estimator)
    assert fit.alpha_hat[ok].std() == pytest.approx(float(pair.cramer_rao_bound(alpha, n)), rel=0.15)


def test_square_loss_ratios_are_the_output_itself():
    x = sample(5000, 4)
    t = DirectRatioTemplates({k: np.exp(log_ratio(v, "A")) for k, v in x.items()}, loss="square")
    u = np.exp(log_ratio(np.array([-1.0, 0.5, 2.0]), "A"))
    np.testing.assert_allclose(t.ratio(u), u / t.norm)
    assert t.info()["omega"] == "ratio"
    # a non-positive output is no ratio: it is clipped at the lower end, never negative
    assert t.ratio(np.array([-0.3]))[0] == pytest.approx(1.0 / RATIO_CLIP / t.norm, rel=1e-12, abs=0)


@pytest.fixture(scope="module")
def three():
    x = sample(6000, 6, names=("H", "A", "Z"))
    return DirectRatioComponents({c: np.stack([log_ratio(v, k) for k in ("A", "Z")], axis=-1) for c, v in x.items()},
                                 loss="kl")


def test_k_component_fit_with_direct_ratios(three):
    assert three.method == "likelihood_ratio" and set(three.norms) == {"A", "Z"}
    assert all(abs(c - 1) < 0.05 for c in three.norms.values())
    rng = np.random.default_rng(7)
    f = {"H": 0.3 * 0.8, "A": 0.7 * 0.8, "Z": 0.2}
    n_toys, n = 300, 300
    counts = rng.multinomial(n, list(f.values()), size=n_toys)
    x = np.stack([np.concatenate([rng.normal(MU[k], 1.0, c) for k, c in zip(f, row)]) for row in counts])
    u = np.stack([log_ratio(x, k) for k in ("A", "Z")], axis=-1)
    fit = fit_fractions(three.densities(u), num=[1], den=[0, 1], f_true=list(f.values()), treatment={2: "floated"},
                        support=three.support_nodes())
    ok = fit.converged & ~fit.flat
    assert ok.mean() > 0.95
    assert abs(fit.alpha_hat[ok].mean() - 0.7) < 3 * fit.alpha_hat[ok].std() / np.sqrt(ok.sum()) + 0.01
    held = {c: np.stack([log_ratio(v, k) for k in ("A", "Z")], axis=-1)
            for c, v in sample(6000, 8, names=("H", "A", "Z")).items()}
    for c in three.closure(held).values():
        assert abs(c["mean_r_on_reference"] - 1) < 4 * c["mean_r_on_reference_err"] + 0.02
        assert abs(c["mean_inverse_r_on_component"] - 1) < 4 * c["mean_inverse_r_on_component_err"] + 0.02


def test_round_trips_are_bit_identical(pair, three, tmp_path):
    save_templates(tmp_path / "two", pair, components=("H", "A"))
    back = load_templates(tmp_path / "two")
    assert isinstance(back, DirectRatioTemplates) and back.norm == pair.norm
    u = log_ratio(np.linspace(-4, 4, 101), "A")
    for p, q in zip(back.densities(u), pair.densities(u)):
        assert np.array_equal(p, q)
    assert back.positivity_limits() == pair.positivity_limits()
    assert np.array_equal(back.fisher_information(np.array([0.3, 0.7])), pair.fisher_information(np.array([0.3, 0.7])))
    save_templates(tmp_path / "three", three, components=("H", "A", "Z"))
    back3 = load_templates(tmp_path / "three")
    assert isinstance(back3, DirectRatioComponents) and back3.norms == three.norms
    assert back3.support == three.support == (float(three.nodes.min()), float(three.nodes.max()))
    # a stored normalisation that is not its nodes' mean ratio is refused
    with pytest.raises(ValueError, match="not the mean"):
        DirectRatioComponents.from_arrays({**three.to_arrays(), "norms": np.array([1.0, 5.0])},
                                          components=("H", "A", "Z"), settings=three.settings)
    y = np.stack([log_ratio(np.linspace(-4, 4, 101), k) for k in ("A", "Z")], axis=-1)
    assert np.array_equal(back3.densities(y), three.densities(y))
    assert np.array_equal(back3.support_nodes(), three.support_nodes())


def test_weighted_direct_ratios_are_those_of_repeated_events(tmp_path):
    """templates.weights with ratio: the normalisation, the Fisher information and the K-component
    quadrature of weighted template events equal those of the events repeated w times."""
    x = sample(3000, 11, ("H", "A", "Z"))
    w = np.random.default_rng(12).integers(0, 4, 3000)
    u2 = {k: log_ratio(v, "A") for k, v in x.items() if k != "Z"}
    weighted = DirectRatioTemplates(u2, loss="exponential", weights={"H": w})
    repeated = DirectRatioTemplates({**u2, "H": np.repeat(u2["H"], w)}, loss="exponential")
    assert weighted.norm == pytest.approx(repeated.norm, rel=1e-12)
    assert weighted.node_counts["H"] == int((w > 0).sum())
    a = np.array([0.2, 0.5, 0.8])
    np.testing.assert_allclose(weighted.fisher_information(a), repeated.fisher_information(a), rtol=1e-9)
    assert weighted.ratio_range == repeated.ratio_range
    c = weighted.closure(u2, {"H": w})["A"]
    rr = weighted.ratio(u2["H"])
    assert c["mean_r_on_reference"] == pytest.approx((w * rr).sum() / w.sum(), rel=1e-12)
    uk = {k: np.stack([log_ratio(v, j) for j in ("A", "Z")], axis=-1) for k, v in x.items()}
    wk = DirectRatioComponents(uk, loss="exponential", weights={"Z": w})
    rk = DirectRatioComponents({**uk, "Z": np.repeat(uk["Z"], w, axis=0)}, loss="exponential")
    # the reference (H) is unweighted: its normalisations do not move (up to round-off)
    assert wk.norms == pytest.approx(rk.norms, rel=1e-12)
    f = np.array([0.3 * 0.8, 0.7 * 0.8, 0.2])
    assert wk.cramer_rao(f, 100, num=["A"], den=["H", "A"], treatment={"Z": "floated"}).bound == pytest.approx(
        rk.cramer_rao(f, 100, num=["A"], den=["H", "A"], treatment={"Z": "floated"}).bound, rel=1e-9)
    ref = DirectRatioComponents(uk, loss="exponential", weights={"H": w})
    assert ref.norms["A"] == pytest.approx(
        DirectRatioComponents({**uk, "H": np.repeat(uk["H"], w, axis=0)}, loss="exponential").norms["A"], rel=1e-12)
    for t in (weighted, wk):
        save_templates(tmp_path / t.kind, t, components=t.components)
        back = load_templates(tmp_path / t.kind)
        assert np.array_equal(back.node_weights, t.node_weights) and back.to_arrays().keys() == t.to_arrays().keys()
    assert "node_weights" not in repeated.to_arrays() and "node_weights" not in rk.to_arrays()
    with pytest.raises(ValueError, match="two template events of positive weight"):
        DirectRatioTemplates(u2, loss="exponential", weights={"A": np.r_[1.0, np.zeros(2999)]})


def test_bad_input_is_named():
    good = np.zeros(5)
    with pytest.raises(ValueError, match="two components"):
        DirectRatioTemplates({"H": good, "A": good, "Z": good}, loss="exponential")
    with pytest.raises(ValueError, match="finite"):
        DirectRatioTemplates({"H": good, "A": np.r_[good, np.nan]}, loss="exponential")
    with pytest.raises(ValueError, match="unknown"):
        DirectRatioTemplates({"H": good, "A": good}, loss="hinge")
    with pytest.raises(ValueError, match=r"component 'A' must be finite, of shape \(n_events, 2\)"):
        DirectRatioComponents({"H": np.zeros((5, 2)), "A": np.zeros((5, 1)), "Z": np.zeros((5, 2))}, loss="kl")
    # a stored normalisation that is no mean of ratios
    t = DirectRatioTemplates({"H": good, "A": good + 1}, loss="exponential")
    with pytest.raises(ValueError, match="not the mean ratio"):
        DirectRatioTemplates.from_arrays({**t.to_arrays(), "norm": np.asarray(5.0)}, components=("H", "A"),
                                         settings=t.settings)
