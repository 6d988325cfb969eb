"""``hpcmix generate``: Pythia chunks mapped over Dask into the Zarr event store."""

from __future__ import annotations

import click

from .. import config
from .options import load_processes_file, parse_events


@click.command()
@click.option("-p", "--process", "processes", multiple=True, default=("H", "A"), show_default=True,
              help="Sample(s) to generate: built-in H, A, or a process from --processes-file.")
@click.option("-n", "--events", default=None,
              help="Selected events per split: 'train=20000,template=20000,test=20000', or N for N in each "
                   "configured split. [default: hpcmix.generate.splits]")
@click.option("--chunk-size", type=int, default=None, help="Selected events per task and Zarr chunk.")
@click.option("--profile", type=click.Choice(["full", "fast"]), default=None,
              help="Pythia profile: full simulation, or MPI and hadronisation off. [default: full]")
@click.option("--seed", type=int, default=None, help="Study seed; every random stream derives from it.")
@click.option("-o", "--output", default=None, help="Event store path (.zarr). [default: hpcmix.store.path]")
@click.option("-w", "--workers", type=int, default=None, help="Local Dask workers. [default: one per core]")
@click.option("--processes-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML file with a 'processes:' mapping defining more processes (e.g. a job file).")
@click.option("--overwrite", is_flag=True, help="Replace an existing store made with other settings.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def generate(processes, events, chunk_size, profile, seed, output, workers, processes_file, overwrite, progress):
    """Generate H/A -> tau tau events with Pythia into a Zarr event store.

    Rerunning with the same settings resumes: finished chunks are skipped.
    """
    from ..generate.run import plan_generation, run_generation
    from ..store import StoreMismatchError

    splits = parse_events(events, config.get("generate.splits")) if events else None
    output = config.get("store.path", output)
    try:
        plan = plan_generation(samples=processes, splits=splits, chunk_size=chunk_size, profile=profile,
                               seed=seed, processes=load_processes_file(processes_file))
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    click.echo(f"{plan.n_tasks} generation tasks of {plan.layout.chunk_size} selected events "
               f"({', '.join(plan.layout.samples)}; profile {plan.layout.settings['profile']}) -> {output}")
    client = None
    if workers is not None:
        if workers <= 0:
            raise click.UsageError(f"--workers must be positive, got {workers}")
    try:
        from ..store import EventStore

        EventStore.create(output, plan.layout, overwrite=overwrite)  # refuse mismatches before any cluster starts
        if workers is not None:
            from ..orchestrate.local import local_client

            client = local_client(workers)
        if client is not None:
            click.echo(f"Dask dashboard: {client.dashboard_link}")
        report = run_generation(plan, output, client=client, overwrite=False, progress=progress)
    except StoreMismatchError as err:
        raise click.UsageError(str(err)) from None
    finally:
        if client is not None:
            cluster = client.cluster
            client.close()
            cluster.close()
    click.echo(report.format())
