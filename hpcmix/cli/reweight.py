"""``hpcmix reweight``: the reweighting stage of a job file alone (generation first where needed)."""

from __future__ import annotations

import time

import click

from .options import job_options


@click.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@job_options
def reweight(job_file, site, sets, dry_run, progress):
    """Learn a job's named weights: generate -> reweight, and the checks in report/reweighting.md.

    The same stage as in ``hpcmix run`` (same addresses: a later run skips it);
    train, templates and toys are left for ``hpcmix run``.
    """
    from ..errors import HpcmixError
    from ..orchestrate.pipeline import plan_study, run_study
    from ..orchestrate.sites import load_site
    from ..study import load_study

    t0 = time.perf_counter()
    try:
        study = load_study(job_file, sets=sets)
        plan = plan_study(study)
        site_cfg = load_site(site)
    except HpcmixError as err:
        raise click.UsageError(str(err)) from None
    if not study.reweight:
        raise click.UsageError(f"{job_file}: the job has no reweight: section, so there is nothing to reweight; "
                               "add one (docs/stages/reweight.md), or run the study with hpcmix run")
    click.echo(plan.describe(site_cfg))
    if dry_run:
        return
    outcome = run_study(study, site=site_cfg, progress=progress, echo=click.echo, until="reweight")
    click.echo("")
    click.echo(outcome.table)
    for name, rec in outcome.reweighting.items():
        w = plan.reweights[name]
        click.echo(f"weights [{name}]: EventStore({plan.events!r}).weights({w.settings.source!r}, {name!r})")
    click.echo(f"report : {plan.report} (reweighting.md, {len(outcome.figures)} figures)")
    stages = ", ".join(f"{k} {v:.0f}s" for k, v in outcome.seconds.items())
    skipped = ", ".join(f"{k} {v}" for k, v in outcome.skipped.items() if v)
    click.echo(f"wall time {time.perf_counter() - t0:.0f}s ({stages})" + (f"; already done: {skipped}" if skipped else ""))
