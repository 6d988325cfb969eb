"""``hpcmix run``: a whole study from a job file, on a local Dask cluster or a SLURM site."""

from __future__ import annotations

import time

import click

from .options import job_options


@click.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@job_options
def run(job_file, site, sets, dry_run, progress):
    """Run a study: generate -> train -> templates -> toys -> aggregate -> report.

    Finished stages are skipped on a rerun; a changed setting redoes only the
    stages that depend on it.
    """
    from ..orchestrate.pipeline import plan_study, run_study
    from ..orchestrate.sites import load_site
    from ..errors import HpcmixError
    from ..study import load_study

    t0 = time.perf_counter()
    try:
        study = load_study(job_file, sets=sets)
        plan = plan_study(study)
        site_cfg = load_site(site)
    except HpcmixError as err:  # settings a user can fix; anything else is a bug and keeps its traceback
        raise click.UsageError(str(err)) from None
    click.echo(plan.describe(site_cfg))
    if dry_run:
        return
    # the project's own errors (a store made with other settings, a locked output, a full
    # disk) become one message with exit 2 in HpcmixGroup; anything else names its stage
    outcome = run_study(study, site=site_cfg, progress=progress, echo=click.echo)
    click.echo("")
    click.echo(outcome.table)
    for note in outcome.notes:
        click.echo(f"note: {note}")
    click.echo(f"results: {outcome.results_path}  (xarray.open_zarr(..., consolidated=False))")
    click.echo(f"report : {outcome.plan.report}/index.html (all on one page: the tables, "
               f"{len(outcome.figures)} figures, the per-cell summary, provenance)")
    stages = ", ".join(f"{k} {v:.0f}s" for k, v in outcome.seconds.items())
    skipped = ", ".join(f"{k} {v}" for k, v in outcome.skipped.items() if v)
    click.echo(f"wall time {time.perf_counter() - t0:.0f}s ({stages})" + (f"; already done: {skipped}" if skipped else ""))
