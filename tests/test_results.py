"""Results Dataset, Zarr round trip, the ds.mixture summary and table, the report and its CLI."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from hpcmix.results import (
    RESULTS_FORMAT,
    ResultsBuilder,
    ResultsFormatWarning,
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


def _pool(rng, n, a, c=PHI.c):
    """n phi* values drawn from c + a cos x on [0, 2 pi) (accept-reject)."""
    out, todo = np.empty(n), np.arange(n)
    while todo.size:
        x = rng.uniform(0, 2 * np.pi, todo.size)
        ok = rng.uniform(0, c + abs(a), todo.size) < c + a * np.cos(x)
        out[todo[ok]] = x[ok]
        todo = todo[~ok]
    return out


def synthetic_results(templates, *, alphas, n_events, n_toys, batch_size=None, pool_size, seed=0, attrs=None):
    """A real results Dataset without Pythia or TensorFlow: toys from synthetic phi* pools, fitted by hpcmix.

    ``templates``: {(estimator, smearing): PhiStarTemplates}; each distinct template pair gets
    its own A and H pools of ``pool_size`` events (drawn in order from ``seed``). Toys are
    drawn with ``draw_toys`` and the study's ``toy_seed`` and fitted with ``fit_mixture``, in
    batches of ``batch_size``; one likelihood curve per (estimator, smearing).
    """
    rng = np.random.default_rng(seed)
    batch_size = batch_size or n_toys
    pools = {}
    b = ResultsBuilder(estimators=list(dict.fromkeys(e for e, _ in templates)),
                       smearings=list(dict.fromkeys(s for _, s in templates)),
                       alphas=alphas, n_events=n_events, n_toys=n_toys, attrs=attrs)
    for (e, sm), t in templates.items():
        if (t.a, t.c) not in pools:
            pa, ph = _pool(rng, pool_size, t.a, t.c), _pool(rng, pool_size, -t.a, t.c)
            pools[(t.a, t.c)] = t.densities(pa), t.densities(ph)
        dens_a, dens_h = pools[(t.a, t.c)]
        b.add_templates(e, sm, t)
        for alpha in alphas:
            for n in n_events:
                for batch, off in enumerate(range(0, n_toys, batch_size)):
                    d = draw_toys(pool_size, pool_size, alpha=alpha, n_events=n, n_toys=min(batch_size, n_toys - off),
                                  rng=toy_seed(seed, e, sm, alpha, n, batch))
                    fit = fit_mixture(d.gather(dens_a[0], dens_h[0]), d.gather(dens_a[1], dens_h[1]),
                                      alpha_true=alpha, alpha_limits=t.positivity_limits())
                    b.add(e, sm, alpha, n, fit, offset=off, draw=d, cramer_rao=t.cramer_rao_bound(alpha, n))
        d = draw_toys(pool_size, pool_size, alpha=0.7, n_events=100, n_toys=1, rng=toy_seed(seed, e, f"{sm}-curve"))
        pa, ph = d.gather(dens_a[0], dens_h[0]), d.gather(dens_a[1], dens_h[1])
        grid = np.linspace(-0.5, 1.5, 201)
        ll = mixture_log_likelihood(pa, ph, grid)[0]
        b.add_curve(e, sm, grid, -2 * (ll - ll.max()), alpha=0.7, n_events=100)
    return b.to_dataset()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A small phi* study: two estimators (the same templates), 2 alphas, 2 N, 2000 toys."""
    # pools large enough that shared pool fluctuations (reuse) stay below the test tolerances
    ds = synthetic_results({("phi*", "none"): PHI, ("NN", "none"): PHI}, alphas=[0.5, 0.9], n_events=[100, 500],
                           n_toys=2000, batch_size=1000, pool_size=300_000,
                           attrs={"study_seed": 0, "templates": {"a": PHI.a, "c": PHI.c}})
    path = tmp_path_factory.mktemp("res") / "results.zarr"
    save_results(ds, path)
    return ds, path


def test_dataset_layout_and_zarr_round_trip(study):
    ds, path = study
    assert ds["alpha_hat"].dims == ("estimator", "smearing", "alpha", "n_events", "toy")
    assert ds.attrs["results_format"] == RESULTS_FORMAT == 2
    assert ds["alpha_hat"].shape == (2, 1, 2, 2, 2000)
    assert ds["alpha_hat"].attrs["units"] == "1" and ds["n_events"].attrs["units"] == "events"
    assert "hpcmix_version" in ds.attrs and ds.attrs["study_seed"] == 0
    assert bool(ds["pool_smaller_than_needed"].sel(n_events=500).all())  # 2000 x 500 > 600000
    assert "pool smaller" in ds.attrs["pool_reuse_note"]
    back = open_results(path)
    for v in ("alpha_hat", "sigma_hat", "lr_stat", "interval_lo", "interval_hi", "converged", "cramer_rao"):
        np.testing.assert_array_equal(back[v].values, ds[v].values)
    assert list(back["estimator"].values) == ["phi*", "NN"]
    assert back.attrs["results_format"] == 2
    assert back.attrs["templates"] == {"a": PHI.a, "c": PHI.c}


def test_summary_against_direct_computation(study):
    ds, _ = study
    s = ds.mixture.summary()
    cell = dict(estimator="phi*", smearing="none", alpha=0.5, n_events=500)
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
    s = ds.mixture.summary().sel(estimator="phi*", smearing="none", n_events=100, alpha=0.5)
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
    b = ResultsBuilder(estimators=["a"], smearings=["none"], alphas=[0.5], n_events=[10], n_toys=5)
    fit = fit_mixture(np.ones((6, 3)) * 1.1, np.ones((6, 3)), alpha_limits=(0, 1))
    with pytest.raises(ValueError, match="do not fit"):
        b.add("a", "none", 0.5, 10, fit)
    with pytest.raises(ValueError, match="alpha=0.7"):
        b.add("a", "none", 0.7, 10, fit)
    with pytest.raises(ValueError, match="unique"):
        ResultsBuilder(estimators=["a", "a"], smearings=["none"], alphas=[0.5], n_events=[10], n_toys=5)


def test_sel_by_estimator_keyword(study):
    """The dimension no longer shadows .sel's own ``method`` keyword: ds.sel(estimator=...) selects."""
    ds, _ = study
    one = ds.sel(estimator="NN")
    assert "estimator" not in one["alpha_hat"].dims and one["alpha_hat"].shape == (1, 2, 2, 2000)
    np.testing.assert_array_equal(one["alpha_hat"].values, ds["alpha_hat"].values[1])
    assert ds.alpha_hat.sel(estimator="phi*", smearing="none", alpha=0.9, n_events=100).shape == (2000,)


def _write_format_1(ds, path):
    """The store as hpcmix wrote it before results format 2: dimension 'method', no format attr."""
    old = ds.rename({"estimator": "method"})
    del old.attrs["results_format"]
    old.attrs["estimator"] = old.attrs.pop("fit")
    old.to_zarr(str(path), mode="w", consolidated=False)


def test_open_results_upgrades_a_format_1_store(study, tmp_path):
    ds, _ = study
    path = tmp_path / "old.zarr"
    _write_format_1(ds, path)
    with pytest.warns(ResultsFormatWarning, match="renamed from 'method' to 'estimator'.*format 2") as rec:
        back = open_results(path)
    assert len(rec) == 1 and "ds.sel(estimator=...) now works" in str(rec[0].message)
    assert issubclass(ResultsFormatWarning, UserWarning)
    assert back["alpha_hat"].dims == ds["alpha_hat"].dims and "method" not in back.dims
    assert back["template_x"].dims == ("estimator", "smearing", "template_point")
    assert list(back["estimator"].values) == ["phi*", "NN"] and back.attrs["results_format"] == 2
    assert back.attrs["fit"] == ds.attrs["fit"]
    np.testing.assert_array_equal(back.alpha_hat.sel(estimator="NN").values, ds.alpha_hat.sel(estimator="NN").values)
    assert back.mixture.table(n_events=100) == ds.mixture.table(n_events=100)
    # saved again it is a format-2 store and opens without a warning
    save_results(back, tmp_path / "new.zarr")
    assert open_results(tmp_path / "new.zarr").attrs["results_format"] == 2


def test_open_results_refuses_a_newer_format(study, tmp_path):
    ds, _ = study
    newer = ds.copy()
    newer.attrs = {**ds.attrs, "results_format": RESULTS_FORMAT + 1}
    save_results(newer, tmp_path / "newer.zarr")
    with pytest.raises(ValueError, match="newer than this hpcmix reads"):
        open_results(tmp_path / "newer.zarr")


def test_import_hpcmix_registers_the_accessor_without_heavy_imports():
    import subprocess
    import sys

    code = ("import sys, xarray as xr, hpcmix; xr.Dataset().mixture; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'scipy', 'matplotlib', 'pythia8') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_report_on_a_folder_without_results_says_what_to_pass(tmp_path):
    import zarr
    from click.testing import CliRunner

    from hpcmix.cli import cli
    from hpcmix.results import NotResultsError, open_results

    empty = tmp_path / "empty"
    empty.mkdir()
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    for path, why in ((empty, "is not a Zarr store of hpcmix results"), (tmp_path / "other.zarr", "no alpha_hat")):
        with pytest.raises(NotResultsError, match=why):
            open_results(path)
        r = CliRunner().invoke(cli, ["report", str(path)])
        assert r.exit_code == 2 and why in r.output and "Traceback" not in r.output
