"""``hpcmix status OUTPUT``: where a run stands, from the files on disk alone (no cluster started)."""

from __future__ import annotations

import json
import os

import click

from .options import set_option


@click.command("status")
@click.argument("target", type=click.Path())
@set_option
@click.option("--all", "every", is_flag=True, help="List every planned item, not only those not done.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON (for scripts and monitors).")
def status(target: str, sets, every: bool, as_json: bool) -> None:
    """Where the run in TARGET stands: per stage done / partial / missing, the event chunks and toy
    batches done out of planned, the addresses, and how the last run ended (its error, or killed).

    TARGET is an output folder (the job's ``output:``), whose run log holds the plan, or a job file,
    whose own plan is checked against its output folder (--set as for hpcmix run). Reads files only:
    safe while a run is going, on any machine that sees the folder.
    """
    from ..orchestrate.status import output_status

    if not os.path.exists(target):
        raise click.BadParameter(f"{target!r} does not exist; give an hpcmix output folder or a job file",
                                 param_hint="TARGET")
    if os.path.isdir(target):
        if sets:
            raise click.UsageError("--set changes a job's settings: give the job file, not its output folder")
        st = output_status(target)
    else:
        from ..orchestrate.pipeline import plan_study
        from ..orchestrate.runlog import plan_manifest
        from ..study import load_study

        study = load_study(target, sets=sets)
        st = output_status(study.output, manifest=plan_manifest(plan_study(study)), plan_from=f"job file {target}")
    click.echo(json.dumps(st.to_json(), indent=2) if as_json else st.format(every=every))
