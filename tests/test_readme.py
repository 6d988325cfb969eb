"""README.md's Python snippets run against a tiny but real results store, so README cannot drift from the code."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from hpcmix.results import save_results
from hpcmix.stats import PhiStarTemplates
from test_results import synthetic_results

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
STORE = os.path.join("hpcmix-output", "quickstart", "results.zarr")  # the path the snippets open
ALPHAS, N_EVENTS, N_TOYS = (0.5, 0.7, 0.9), (20, 100), 60


def readme_snippets() -> list[str]:
    with open(README) as f:
        return re.findall(r"^```python\n(.*?)^```", f.read(), flags=re.M | re.S)


@pytest.fixture(scope="module")
def quickstart_results():
    """The quickstart's dimensions (phi_star / nn x none / detector), from synthetic phi* pools: no Pythia, no TF."""
    templates = {("phi_star", "none"): PhiStarTemplates(a=0.041), ("phi_star", "detector"): PhiStarTemplates(a=0.025),
                 ("nn", "none"): PhiStarTemplates(a=0.07), ("nn", "detector"): PhiStarTemplates(a=0.05)}
    return synthetic_results(templates, alphas=ALPHAS, n_events=N_EVENTS, n_toys=N_TOYS, pool_size=20_000, seed=7)


@pytest.fixture
def in_study_folder(quickstart_results, tmp_path, monkeypatch):
    save_results(quickstart_results, tmp_path / STORE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(code: str, namespace: dict) -> list[tuple[str, object]]:
    """Execute ``code`` statement by statement; return (source, value) of each expression statement."""
    values = []
    for node in ast.parse(code).body:
        src = ast.get_source_segment(code, node)
        if isinstance(node, ast.Expr):
            values.append((src, eval(compile(ast.Expression(node.value), "README.md", "eval"), namespace)))
        else:
            exec(compile(ast.Module([node], type_ignores=[]), "README.md", "exec"), namespace)
    return values


def test_readme_has_the_xarray_snippet():
    snippets = readme_snippets()
    assert snippets, "no ```python block in README.md"
    text = "\n".join(snippets)
    assert 'ds.alpha_hat.sel(estimator="nn", smearing="none", alpha=0.7, n_events=100)' in text
    assert '"method"' not in text and "method=" not in text


def test_readme_snippets_run(quickstart_results, in_study_folder, capsys):
    namespace = {"__name__": "__readme__"}
    values = []
    for code in readme_snippets():
        values += _run(code, namespace)
    printed = capsys.readouterr().out

    # the toys of one cell
    cell = next(v for src, v in values if ".alpha_hat.sel(" in src)
    assert isinstance(cell, xr.DataArray) and cell.dims == ("toy",) and cell.shape == (N_TOYS,)
    np.testing.assert_array_equal(
        cell.values, quickstart_results.alpha_hat.sel(estimator="nn", smearing="none", alpha=0.7, n_events=100).values)
    assert np.isfinite(cell.values).all()

    summary = namespace["summary"]
    assert "n_events" in summary.gauss_sigma.indexes
    assert summary.gauss_sigma.indexes["n_events"].tolist() == list(N_EVENTS)
    assert summary.gauss_sigma.dims == ("estimator", "smearing", "alpha", "n_events")
    assert np.isfinite(summary.gauss_sigma.values).all()

    table = next(v for src, v in values if "to_pandas()" in src)
    assert isinstance(table, pd.DataFrame) and table.shape == (2, len(ALPHAS))
    assert table.index.name == "estimator" and table.index.tolist() == ["phi_star", "nn"]
    assert table.columns.name == "alpha"

    assert "| method, smearing | alpha = 0.5 | alpha = 0.7 | alpha = 0.9 |" in printed
    assert "| nn, detector |" in printed and f"{N_TOYS} test sets of N = 100" in printed


def test_readme_snippets_run_in_a_fresh_interpreter(in_study_folder):
    """On their own, as a user runs them: ``import hpcmix`` alone must register ``ds.mixture``."""
    code = "\n".join(readme_snippets())
    res = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True,
                         cwd=in_study_folder, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{N_TOYS} test sets of N = 20" in res.stdout
