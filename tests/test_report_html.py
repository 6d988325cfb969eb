"""The report's one-page ``index.html``: self-contained, every table, figure and cell, rendered by Chromium."""

from __future__ import annotations

import base64
import html
import os
from html.parser import HTMLParser

import numpy as np
import pytest
from click.testing import CliRunner
from test_results import PHI, synthetic_results

from hpcmix.results import save_results
from hpcmix.results.html import markdown_to_html, write_index
from hpcmix.results.report import write_report


class _Page(HTMLParser):
    """Tags and attributes of a page, and its table cells' text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.cells, self._cell = [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("td", "th"):
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    ds = synthetic_results({("phi*", "none"): PHI, ("NN", "none"): PHI}, alphas=[0.5, 0.9], n_events=[100, 400],
                           n_toys=300, pool_size=20_000,
                           attrs={"study": "html-test", "job": '{"name": "html-test", "seed": 3}',
                                  "addresses": {"generate": "abc123", "toys": {"phi*": "def456"}}})
    out = tmp_path_factory.mktemp("report")
    table, figures = write_report(ds, out, extra_tables=[("auc_study", "| inputs | AUC |\n|---|---|\n| phi_star | 0.61 |")],
                                  notes=["a note from the run"])
    return ds, out, table, figures


def _cell_texts(ds) -> list[str]:
    """Table 1's cells as the report prints them: 'mean ± Gaussian-fit width', two decimals."""
    s = ds.mixture.summary()
    return [f"{float(c['mean']):.2f} ± {float(c['gauss_sigma']):.2f}"
            for c in (s.sel(estimator=e, smearing="none", alpha=a, n_events=n)
                      for e in ("phi*", "NN") for a in (0.5, 0.9) for n in (100, 400))]


def test_index_holds_every_table_figure_and_cell(report):
    ds, out, table, figures = report
    page = _Page((out / "index.html").read_text(encoding="utf-8"))
    # Table 1's cells, each a table cell of the page
    assert set(_cell_texts(ds)) <= set(page.cells)
    assert "0.61" in page.cells and (out / "auc_study.md").read_text().startswith("| inputs | AUC |")
    assert "phi_star | 0.61" in table
    # every figure embedded, byte for byte, and nothing fetched from elsewhere
    imgs = [a["src"] for t, a in page.tags if t == "img"]
    assert len(imgs) == len(figures) == 8   # 2 templates, 2 x 2 alpha_hat, lr_stat, curves
    for src, path in zip(imgs, figures):
        assert src.startswith("data:image/png;base64,")
        with open(path, "rb") as f:
            assert base64.b64decode(src.split(",", 1)[1]) == f.read()
    assert not [t for t, a in page.tags if t in ("script", "link", "iframe")]
    assert not [a for _, a in page.tags for k, v in a.items() if k in ("src", "href") and not v.startswith("data:")]
    # the per-cell summary: one row per cell with the same numbers as ds.mixture.summary()
    s = ds.mixture.summary()
    assert f"{float(s['coverage'].sel(estimator='NN', smearing='none', alpha=0.9, n_events=400)):.4g}" in page.cells
    n_rows = sum(1 for t, a in page.tags if t == "tr")
    assert n_rows >= 8 + 1   # 8 cells and a header in the summary alone
    # provenance and notes
    text = (out / "index.html").read_text(encoding="utf-8")
    assert ds.attrs["hpcmix_version"] in page.cells and "def456" in text and "&quot;seed&quot;: 3" in text
    assert html.escape(ds.attrs["pool_reuse_note"]) in text and "a note from the run" in text


def test_markdown_tables_are_escaped_and_the_separator_dropped():
    out = markdown_to_html("# Heading <b>\n| a | <i>b</i> |\n|---|:---:|\n| 1 & 2 | 3 |\nafter the table")
    assert "<h3>Heading &lt;b&gt;</h3>" in out
    assert "<th>&lt;i&gt;b&lt;/i&gt;</th>" in out and "<td>1 &amp; 2</td><td>3</td>" in out
    assert "---" not in out and "<p>after the table</p>" in out
    page = _Page(out)
    assert page.cells == ["a", "<i>b</i>", "1 & 2", "3"]
    # only the line under the header is the separator: a data row of dashes stays
    assert _Page(markdown_to_html("| a | b |\n|---|---|\n| - | - |")).cells == ["a", "b", "-", "-"]


def test_summary_numbers_print_as_a_physicist_reads_them():
    import xarray as xr

    from hpcmix.results.html import summary_to_html

    s = xr.Dataset({"n_toys": ("alpha", [10000.0, 20000.0], {"long_name": "toys", "units": "1"}),
                    "ks_pvalue": ("alpha", [np.inf, 0.012345], {"long_name": "KS p"}),
                    "mean": ("alpha", [np.nan, 0.5], {})}, coords={"alpha": [0.5, 0.9]})
    page = _Page(summary_to_html(s))
    assert page.cells[:4] == ["alpha", "n_toys", "ks_pvalue", "mean"]
    assert page.cells[4:] == ["0.5", "10000", "inf", "nan", "0.9", "20000", "0.01235", "0.5"]
    text = summary_to_html(s)
    assert "<dd>toys [1]</dd>" in text and "<dd>KS p</dd>" in text


def test_write_index_replaces_the_page_and_makes_the_folder(tmp_path):
    path = write_index(tmp_path / "new" / "report", title="t", tables=[("one", "| x |\n|---|\n| 1 |")])
    with open(path) as f:
        assert os.path.basename(path) == "index.html" and "<td>1</td>" in f.read()
    write_index(tmp_path / "new" / "report", title="t", tables=[("one", "| x |\n|---|\n| 2 |")])
    with open(path) as f:
        text = f.read()
    assert "<td>2</td>" in text and "<td>1</td>" not in text
    assert os.listdir(tmp_path / "new" / "report") == ["index.html"]   # no temporary file left


def test_report_cli_writes_the_page(report, tmp_path):
    from hpcmix.cli import cli

    ds = report[0]
    save_results(ds, tmp_path / "results.zarr")
    r = CliRunner().invoke(cli, ["report", str(tmp_path / "results.zarr")])
    assert r.exit_code == 0, r.output
    page = tmp_path / "results_report" / "index.html"
    assert f"all in one page: {page}" in r.output
    assert set(_cell_texts(ds)) <= set(_Page(page.read_text(encoding="utf-8")).cells)


@pytest.mark.browser
def test_chromium_renders_the_report(report, browser, tmp_path):
    """Headless Chromium draws the page: not blank, the figures drawn (the page's own style is grey, so
    coloured pixels come from the embedded PNGs), and Table 1's numbers in the rendered DOM."""
    ds, out, _, _ = report
    shot = browser.screenshot(out / "index.html", tmp_path / "shot.png")
    assert shot.shape[:2] == (2400, 1280)
    ink = (shot < 200).any(axis=-1).mean()
    coloured = (shot.max(axis=-1).astype(int) - shot.min(axis=-1) > 80).sum()
    assert ink > 0.02, f"screenshot nearly blank ({ink:.3%} of pixels drawn)"
    assert coloured > 2000, f"only {coloured} coloured pixels: the figures did not render"
    dom = _Page(browser.dom(out / "index.html"))
    assert set(_cell_texts(ds)) <= set(dom.cells)
    # and a page without figures renders without colour: the check above sees the figures, not the page
    plain = write_index(tmp_path / "plain", title="t", tables=[("t", "| x |\n|---|\n| 1 |")], notes=["n"])
    shot = browser.screenshot(plain, tmp_path / "plain.png", height=600)
    assert (shot.max(axis=-1).astype(int) - shot.min(axis=-1) > 80).sum() == 0
    assert np.isin(["1"], _Page(browser.dom(plain)).cells).all()
