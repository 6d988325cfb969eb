"""``hpcmix report RESULTS``: print the Table 1 layout of a results store and write the figures."""

from __future__ import annotations

import os

import click


@click.command("report")
@click.argument("results", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="folder for the report (default: RESULTS next to it, suffix _report)")
@click.option("--width", type=click.Choice(["gauss_sigma", "std"]), default="gauss_sigma", show_default=True,
              help="spread shown after the mean: Gaussian-fit width (paper) or standard deviation")
def report(results: str, out: str | None, width: str) -> None:
    """Print the table in the layout of the paper's Table 1 and write the figures, the tables and one
    self-contained index.html (tables, figures, per-cell summary, provenance) for RESULTS (a Zarr store)."""
    from ..results import open_results
    from ..results.report import write_report

    ds = open_results(results)
    out = out or os.path.splitext(os.path.normpath(results))[0] + "_report"
    table, paths = write_report(ds, out, width=width)
    click.echo(table)
    note = ds.attrs.get("pool_reuse_note")
    if note:
        click.echo(f"\nnote: {note}")
    click.echo(f"\n{len(paths)} figures written to {out}; all in one page: {os.path.join(out, 'index.html')}")
