"""``hpcmix generate``: Pythia chunks mapped over Dask into the Zarr event store."""

from __future__ import annotations

import click

from .options import load_processes_file, parse_events, site_option

DEFAULT_STORE = "hpcmix-output/events.zarr"


@click.command()
@click.option("-p", "--process", "processes", multiple=True, default=None,
              help="Component(s) to generate: built-in H, A, or a process from --processes-file. "
                   "[default: hpcmix.components, H and A]")
@click.option("-n", "--events", default=None,
              help="Selected events per split: 'train=20000,template=20000,test=20000', or N for N in each "
                   "configured split. [default: hpcmix.generate.events]")
@click.option("--chunk-size", type=int, default=None, help="Selected events per task and Zarr chunk.")
@click.option("--profile", type=click.Choice(["full", "fast"]), default=None,
              help="Pythia profile: full simulation, or MPI and hadronisation off. [default: full]")
@click.option("--seed", type=int, default=None, help="Study seed; every random stream derives from it.")
@click.option("-o", "--output", default=DEFAULT_STORE, show_default=True, help="Event store path (.zarr).")
@click.option("-w", "--workers", type=int, default=None, help="Local Dask workers. [default: one per core]")
@click.option("--processes-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML file with a 'processes:' mapping defining more processes (e.g. a job file).")
@click.option("--overwrite", is_flag=True, help="Replace an existing store made with other settings.")
@site_option
@click.option("--progress/--no-progress", default=True, show_default=True)
def generate(processes, events, chunk_size, profile, seed, output, workers, processes_file, overwrite, site,
             progress):
    """Generate H/A -> tau tau events with Pythia into a Zarr event store.

    Rerunning with the same settings resumes: finished chunks are skipped.
    """
    from ..generate.run import plan_generation, run_generation
    from ..orchestrate.executor import site_executor
    from ..schema import ConfigError
    from ..store import EventStore, StoreMismatchError
    from ..study import SPLITS, resolve_study

    if workers is not None and workers <= 0:
        raise click.UsageError(f"--workers must be positive, got {workers}")
    gen = {"chunk_size": chunk_size, "profile": profile}
    if events:
        splits = parse_events(events, SPLITS)
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown or set(splits) != set(SPLITS):
            raise click.BadParameter(f"{events!r}: give every split of {list(SPLITS)} (or one N for all)",
                                     param_hint="--events")
        gen["events"] = splits
    over = {"generate": {k: v for k, v in gen.items() if v is not None}, "processes": load_processes_file(processes_file)}
    if seed is not None:
        over["seed"] = seed
    if processes:
        over["components"] = list(processes)
    try:
        # a store may hold one component; a study needs two only to mix them later
        study = resolve_study(overrides=over, mixture=False)
        plan = plan_generation(study)
    except (ConfigError, ValueError) as err:
        raise click.UsageError(str(err)) from None
    click.echo(f"{plan.n_tasks} generation tasks of {plan.layout.chunk_size} selected events "
               f"({', '.join(plan.layout.samples)}; profile {plan.layout.settings['profile']}) -> {output}")
    try:
        EventStore.create(output, plan.layout, overwrite=overwrite)  # refuse mismatches before any cluster starts
    except StoreMismatchError as err:
        raise click.UsageError(str(err)) from None
    cpu = {"dashboard_address": ":0", **({"n_workers": workers} if workers else {})}
    executor = site_executor(site, cpu=cpu, gpu=False) if site is None or site == "local" else site_executor(site)
    try:
        for line in executor.dashboard_lines():
            click.echo(line)
        report = run_generation(plan, output, executor=executor, overwrite=False, progress=progress)
    finally:
        executor.close()
    click.echo(report.format())

