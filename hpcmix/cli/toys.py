"""``hpcmix toys TEMPLATES_DIR ...``: fit pseudo-experiments and aggregate them into the results Dataset."""

from __future__ import annotations

import os
import time

import click

from .options import parse_number_list

METHOD_ORDER = ("phi_star", "nn")
SMEARING_ORDER = ("none", "detector")

#: without --workers, jobs up to this many fitted events (sum over cells of n_toys x n_events; about
#: 10 s at ~2 million events/s on one core) run in this process, where starting a cluster would cost
#: more than it saves; larger ones start a local Dask cluster with one worker per core
IN_PROCESS_MAX_EVENTS = 20_000_000


def _template_folder(path: str) -> tuple[str, str]:
    """(method, smearing) of a finished templates folder, from its done.json."""
    from ..orchestrate import stages

    if not os.path.isdir(path):
        raise click.BadParameter(f"{path!r} does not exist; build templates with 'hpcmix templates'",
                                 param_hint="TEMPLATES_DIR")
    missing = [f for f in (stages.DONE_FILE, stages.POOL_FILE, stages.TEMPLATES_FILE)
               if not os.path.exists(os.path.join(path, f))]
    if missing:
        raise click.BadParameter(f"{path!r} is not a finished templates folder (no {', '.join(missing)}); "
                                 "build it with 'hpcmix templates STORE --method ...'", param_hint="TEMPLATES_DIR")
    info = stages.read_done(path)
    if info.get("method") not in METHOD_ORDER or "smeared" not in info:
        raise click.BadParameter(f"{path!r}: its done.json names no templates method; is it a model folder? "
                                 "Pass folders written by 'hpcmix templates'", param_hint="TEMPLATES_DIR")
    return info["method"], info.get("smearing", "detector" if info["smeared"] else "none")


def _default_out(template_dirs) -> str:
    """Next to the ``templates/`` folder of 'hpcmix templates' (and 'hpcmix run'), else ./results.zarr."""
    parents = {os.path.dirname(os.path.abspath(d)) for d in template_dirs}
    if len(parents) == 1:
        parent = parents.pop()
        if os.path.basename(parent) == "templates":
            return os.path.join(os.path.dirname(parent), "results.zarr")
    return "results.zarr"


@click.command("toys")
@click.argument("template_dirs", nargs=-1, required=True, type=click.Path(file_okay=False), metavar="TEMPLATES_DIR...")
@click.option("--alpha", "alpha_text", default=None,
              help="True A fractions, comma-separated, each in [0, 1]. [default: hpcmix.toys.alphas]")
@click.option("--n-events", "n_text", default=None,
              help="Events per toy (test-set sizes N), comma-separated. [default: hpcmix.toys.n_events]")
@click.option("--n-toys", type=int, default=None, help="Toys per cell. [default: hpcmix.toys.n_toys]")
@click.option("--batch-size", type=int, default=None,
              help="Toys fitted together in one task. [default: hpcmix.toys.batch_size]")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Study seed. [default: hpcmix.seed]")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Results store (.zarr). [default: results.zarr next to the templates/ folder, else ./results.zarr]")
@click.option("-w", "--workers", type=int, default=None,
              help="Local Dask worker processes; 0 fits in this process. [default: in this process for up to "
                   f"{IN_PROCESS_MAX_EVENTS:,} fitted events, else one worker per core]")
@click.option("--progress/--no-progress", default=True, show_default=True)
def toys(template_dirs, alpha_text, n_text, n_toys, batch_size, seed, out, workers, progress):
    """Fit toys for every TEMPLATES_DIR (from 'hpcmix templates' or 'hpcmix run') and every (alpha, N).

    Method and smearing of each folder come from its done.json. Toy batches are kept in
    toys/<hash>/ next to the results, so a rerun skips finished batches. Writes the results
    Dataset (dims method, smearing, alpha, n_events, toy) and prints the Table 1 layout.
    """
    from .. import config
    from ..orchestrate import pipeline
    from ..orchestrate.jobs import settings_hash
    from ..orchestrate.stages import read_done

    # -- validate everything before any cluster starts
    alphas = parse_number_list(alpha_text, float, "--alpha", minimum=0.0, maximum=1.0, what="0.5,0.7,0.9") \
        if alpha_text is not None else [float(a) for a in config.get("toys.alphas")]
    n_events = parse_number_list(n_text, int, "--n-events", minimum=1, what="20,100,500") \
        if n_text is not None else [int(n) for n in config.get("toys.n_events")]
    n_toys = int(config.get("toys.n_toys", n_toys))
    batch_size = int(config.get("toys.batch_size", batch_size))
    seed = int(config.get("seed", seed))
    if n_toys < 1:
        raise click.BadParameter(f"{n_toys}: give at least 1 toy per cell", param_hint="--n-toys")
    if batch_size < 1:
        raise click.BadParameter(f"{batch_size}: give at least 1 toy per batch", param_hint="--batch-size")
    if workers is not None and workers < 0:
        raise click.BadParameter(f"{workers}: give 0 (this process) or a number of workers", param_hint="--workers")
    folders = {}
    for d in template_dirs:
        key = _template_folder(d)
        if key in folders:
            raise click.BadParameter(f"{folders[key]!r} and {d!r} are both {key[0]} templates with smearing "
                                     f"{key[1]}; pass one folder per (method, smearing)", param_hint="TEMPLATES_DIR")
        folders[key] = d
    folders = {k: folders[k] for k in sorted(folders, key=lambda k: (METHOD_ORDER.index(k[0]),
                                                                     SMEARING_ORDER.index(k[1])))}
    out = out or _default_out(template_dirs)
    if os.path.islink(out):
        raise click.BadParameter(f"{out!r} is a link (hpcmix run's newest results); choose another --out",
                                 param_hint="--out")
    if os.path.exists(out) and not os.path.exists(os.path.join(out, "zarr.json")):
        raise click.BadParameter(f"{out!r} exists and is not a Zarr store; choose another --out", param_hint="--out")

    # -- the cells, and their batches still to fit
    sizes = tuple([batch_size] * (n_toys // batch_size) + ([n_toys % batch_size] if n_toys % batch_size else []))
    toy_root = os.path.join(os.path.dirname(os.path.abspath(out)), "toys")
    cells = []
    for (method, sm), tdir in folders.items():
        # the address covers the templates' record (a rebuilt folder gets new batches)
        upstream = (os.path.abspath(tdir), read_done(tdir))
        for alpha in alphas:
            for n in n_events:
                h = settings_hash("toys", upstream, float(alpha), int(n), sizes, seed)
                cells.append(pipeline.ToyCell(method, sm, float(alpha), int(n), tdir, os.path.join(toy_root, h),
                                              sizes))
    tasks = [(c, b, n) for c in cells for b, n in enumerate(c.batches)
             if not os.path.exists(pipeline._batch_file(c, b))]
    work = sum(n * c.n_events for c, _, n in tasks)
    if workers is None:
        workers = 0 if work <= IN_PROCESS_MAX_EVENTS else None   # None: one local worker per core

    where = "in this process" if workers == 0 else \
        f"on a local Dask cluster ({workers or 'one per core'} worker{'s' if workers != 1 else ''})"
    click.echo(f"{len(cells)} cells ({len(folders)} templates x {len(alphas)} alpha x {len(n_events)} N) x "
               f"{n_toys} toys: {len(tasks)} batch(es) to fit"
               + (f", {sum(len(c.batches) for c in cells) - len(tasks)} already done" if len(tasks) < sum(
                   len(c.batches) for c in cells) else "") + (f", {where}" if tasks else ""))
    t0 = time.perf_counter()
    if tasks:
        if workers == 0:
            _fit_here(tasks, seed, progress)
        else:
            _fit_on_cluster(tasks, seed, workers, progress)
    t_fit = time.perf_counter() - t0

    # -- aggregate (the same code as 'hpcmix run')
    t0 = time.perf_counter()
    attrs = {"study": "hpcmix toys", "templates": {"/".join(k): os.path.abspath(v) for k, v in folders.items()},
             "toy_batches": toy_root, "seed": seed}
    stores = {read_done(d).get("store") for d in folders.values()} - {None}
    if len(stores) == 1:
        attrs["events"] = stores.pop()
    ds, _ = pipeline.aggregate_toys(folders, cells, methods=sorted({m for m, _ in folders}, key=METHOD_ORDER.index),
                                    smearings=sorted({s for _, s in folders}, key=SMEARING_ORDER.index),
                                    alphas=alphas, n_events=n_events, n_toys=n_toys, seed=seed, path=out, attrs=attrs)
    t_agg = time.perf_counter() - t0
    click.echo("")
    click.echo(ds.mixture.table())
    if bool(ds["pool_smaller_than_needed"].any()):
        click.echo(f"\nnote: {ds.attrs['pool_reuse_note']}; generate a larger test split for independent toys")
    click.echo(f"\nresults: {out}  (xarray.open_zarr(..., consolidated=False)); fits {t_fit:.1f} s, "
               f"aggregation {t_agg:.1f} s")
    click.echo(f"next   : hpcmix report {out}")


def _fit_here(tasks, seed: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    from ..orchestrate.pipeline import _toys_and_save

    for cell, b, n in tqdm(tasks, desc="toys", unit="batch", disable=not progress):
        _toys_and_save(cell, b, n, seed)


def _fit_on_cluster(tasks, seed: int, workers: int | None, progress: bool) -> None:
    from ..orchestrate.cluster import make_clusters
    from ..orchestrate.completion import as_finished
    from ..orchestrate.pipeline import _toys_and_save

    cpu = {"dashboard_address": ":0"}
    if workers:
        cpu["n_workers"] = workers
    with make_clusters("local", cpu=cpu, gpu=False) as pools:
        click.echo(f"Dask dashboard: {pools.cpu.dashboard_link}")
        client = pools.cpu.client
        futures = {(cell, b): client.submit(_toys_and_save, cell, b, n, seed, pure=False,
                                            key=f"toys-{os.path.basename(cell.folder)}-{b}")
                   for cell, b, n in tasks}
        for _ in as_finished(futures, "toys", progress=progress):
            pass
