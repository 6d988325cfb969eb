"""Results Dataset, Zarr round trip, the ds.mixture summary and table, the report and its CLI."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from hpcmix.results import (
    ResultsBuilder,
    gauss_fit_histogram,
    open_results,
    save_results,
)
from hpcmix.stats import (
    PhiStarTemplates,
    draw_toys,
    fit_mixture,
    mixture_log_likelihood,
    toy_seed,
)

PHI = PhiStarTemplates(a=0.041)


def _pool(rng, n, a):
    out, todo = np.empty(n), np.arange(n)
    while todo.size:
        x = rng.uniform(0, 2 * np.pi, todo.size)
        ok = rng.uniform(0, PHI.c + abs(a), todo.size) < PHI.c + a * np.cos(x)
        out[todo[ok]] = x[ok]
        todo = todo[~ok]
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A small phi* study: two 'methods' (the same templates), 2 alphas, 2 N, 2000 toys."""
    rng = np.random.default_rng(0)
    # pools large enough that shared pool fluctuations (reuse) stay below the test tolerances
    pool_a, pool_h = _pool(rng, 300_000, PHI.a), _pool(rng, 300_000, -PHI.a)
    dens_a, dens_h = PHI.densities(pool_a), PHI.densities(pool_h)
    b = ResultsBuilder(methods=["phi*", "NN"], smearings=["none"], alphas=[0.5, 0.9], n_events=[100, 500],
                       n_toys=2000, attrs={"study_seed": 0, "templates": {"a": PHI.a, "c": PHI.c}})
    for m in ("phi*", "NN"):
        b.add_templates(m, "none", PHI)
        for alpha in (0.5, 0.9):
            for n in (100, 500):
                for batch, off in enumerate((0, 1000)):
                    d = draw_toys(pool_a.size, pool_h.size, alpha=alpha, n_events=n, n_toys=1000,
                                  rng=toy_seed(0, m, "none", alpha, n, batch))
                    fit = fit_mixture(d.gather(dens_a[0], dens_h[0]), d.gather(dens_a[1], dens_h[1]),
                                      alpha_true=alpha, alpha_limits=PHI.positivity_limits())
                    b.add(m, "none", alpha, n, fit, offset=off, draw=d,
                          cramer_rao=PHI.cramer_rao_bound(alpha, n))
        d = draw_toys(pool_a.size, pool_h.size, alpha=0.7, n_events=100, n_toys=1, rng=toy_seed(0, m, "curve"))
        pa, ph = d.gather(dens_a[0], dens_h[0]), d.gather(dens_a[1], dens_h[1])
        grid = np.linspace(-0.5, 1.5, 201)
        ll = mixture_log_likelihood(pa, ph, grid)[0]
        b.add_curve(m, "none", grid, -2 * (ll - ll.max()), alpha=0.7, n_events=100)
    ds = b.to_dataset()
    path = tmp_path_factory.mktemp("res") / "results.zarr"
    save_results(ds, path)
    return ds, path


def test_dataset_layout_and_zarr_round_trip(study):
    ds, path = study
    assert ds["alpha_hat"].dims == ("method", "smearing", "alpha", "n_events", "toy")
    assert ds["alpha_hat"].shape == (2, 1, 2, 2, 2000)
    assert ds["alpha_hat"].attrs["units"] == "1" and ds["n_events"].attrs["units"] == "events"
    assert "hpcmix_version" in ds.attrs and ds.attrs["study_seed"] == 0
    assert bool(ds["pool_smaller_than_needed"].sel(n_events=500).all())  # 2000 x 500 > 600000
    assert "pool smaller" in ds.attrs["pool_reuse_note"]
    back = open_results(path)
    for v in ("alpha_hat", "sigma_hat", "lr_stat", "interval_lo", "interval_hi", "converged", "cramer_rao"):
        np.testing.assert_array_equal(back[v].values, ds[v].values)
    assert list(back["method"].values) == ["phi*", "NN"]
    assert back.attrs["templates"] == {"a": PHI.a, "c": PHI.c}


def test_summary_against_direct_computation(study):
    ds, _ = study
    s = ds.mixture.summary()
    cell = dict(method="phi*", smearing="none", alpha=0.5, n_events=500)
    x = ds["alpha_hat"].sel({**cell}).values
    c = s.sel({**cell})
    assert float(c["mean"]) == pytest.approx(x.mean()) and float(c["std"]) == pytest.approx(x.std(ddof=1))
    # efficient estimator: width on the Cramer-Rao bound (2000 toys: 1.6 % statistical error)
    assert float(c["cramer_rao"]) == pytest.approx(1 / np.sqrt(500 * 4 * np.pi * PHI.a**2 / PHI.c))
    assert float(c["efficiency"]) == pytest.approx(1.0, abs=0.07)
    assert float(c["gauss_sigma"]) == pytest.approx(float(c["std"]), rel=0.05)
    assert float(c["pull_mean"]) == pytest.approx(0, abs=0.1) and float(c["pull_width"]) == pytest.approx(1, abs=0.06)
    assert float(c["coverage"]) == pytest.approx(0.683, abs=0.035)
    assert float(c["coverage_err"]) == pytest.approx(np.sqrt(0.683 * 0.317 / 2000), rel=0.05)
    assert float(c["ks_pvalue"]) > 1e-3
    assert float(c["converged_fraction"]) == 1.0


def test_gaussian_histogram_fit():
    rng = np.random.default_rng(1)
    mu, sig, mu_err, sig_err = gauss_fit_histogram(rng.normal(0.3, 0.2, 20_000))
    assert mu == pytest.approx(0.3, abs=4 * mu_err) and sig == pytest.approx(0.2, abs=4 * sig_err)
    assert mu_err == pytest.approx(0.2 / np.sqrt(20_000), rel=0.1)
    assert sig_err == pytest.approx(0.2 / np.sqrt(40_000), rel=0.15)
    # a non-Gaussian tail does not drag the fitted core width the way the std moves
    x = np.r_[rng.normal(0, 1, 20_000), rng.uniform(-8, 8, 400)]
    assert gauss_fit_histogram(x)[1] < x.std()


def test_ks_pvalue_detects_a_wrong_distribution(study):
    ds, _ = study
    bad = ds.copy(deep=True)
    bad["lr_stat"].values[:] = stats.chi2(2).rvs(size=bad["lr_stat"].shape, random_state=3)
    assert float(bad.mixture.summary()["ks_pvalue"].max()) < 1e-6


def test_table_layout(study):
    ds, _ = study
    text = ds.mixture.table(n_events=100)
    lines = text.splitlines()
    assert lines[1] == "| method, smearing | alpha = 0.5 | alpha = 0.9 |"
    assert lines[3].startswith("| phi*, none | 0.") and "±" in lines[3]
    assert "2000 test sets of N = 100" in lines[0]
    s = ds.mixture.summary().sel({"method": "phi*", "smearing": "none", "n_events": 100, "alpha": 0.5})
    assert f"{float(s['mean']):.2f} ± {float(s['gauss_sigma']):.2f}" in lines[3]
    assert len(ds.mixture.table().split("\n\n")) == 2  # one block per N
    with pytest.raises(ValueError, match="n_events=7"):
        ds.mixture.table(n_events=7)


def test_report_cli_prints_table_and_writes_figures(study, tmp_path):
    from hpcmix.cli.report import report

    _, path = study
    out = tmp_path / "figs"
    res = CliRunner().invoke(report, [str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "| method, smearing | alpha = 0.5 | alpha = 0.9 |" in res.output
    assert "pool smaller" in res.output
    names = {p.name for p in out.iterdir()}
    assert {"lr_stat_chi2.png", "likelihood_curves.png", "table1.md", "templates_phistar_none.png",
            "alpha_hat_phistar_none_N100.png"} <= names
    assert all((out / n).stat().st_size > 1000 for n in names if n.endswith(".png"))


def test_builder_errors():
    b = ResultsBuilder(methods=["a"], smearings=["none"], alphas=[0.5], n_events=[10], n_toys=5)
    fit = fit_mixture(np.ones((6, 3)) * 1.1, np.ones((6, 3)), alpha_limits=(0, 1))
    with pytest.raises(ValueError, match="do not fit"):
        b.add("a", "none", 0.5, 10, fit)
    with pytest.raises(ValueError, match="alpha=0.7"):
        b.add("a", "none", 0.7, 10, fit)
    with pytest.raises(ValueError, match="unique"):
        ResultsBuilder(methods=["a", "a"], smearings=["none"], alphas=[0.5], n_events=[10], n_toys=5)
