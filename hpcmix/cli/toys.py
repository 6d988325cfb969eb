"""``hpcmix toys TEMPLATES_DIR ...``: fit pseudo-experiments and aggregate them into the results Dataset."""

from __future__ import annotations

import os
import time

import click

from ..study.model import ESTIMATORS as METHOD_ORDER  # the results' estimator order
from .options import parse_number_list, site_option

SMEARING_ORDER = ("none", "detector")

#: without --workers, jobs up to this many fitted events (sum over cells of n_toys x n_events; about
#: 10 s at ~2 million events/s on one core) run in this process, where starting a cluster would cost
#: more than it saves; larger ones start a local Dask cluster with one worker per core
IN_PROCESS_MAX_EVENTS = 20_000_000


def _template_folder(path: str):
    """The templates item of a finished templates folder, from its record."""
    from ..orchestrate.record import RecordError, StageRecord
    from ..orchestrate.stages.templates import Templates
    from ..store.artefacts import TEMPLATES_FILE, TEST_POOL_FILE

    if not os.path.isdir(path):
        raise click.BadParameter(f"{path!r} does not exist; build templates with 'hpcmix templates'",
                                 param_hint="TEMPLATES_DIR")
    try:
        rec = StageRecord.read(path)
    except RecordError as err:
        raise click.BadParameter(f"{err}; build it with 'hpcmix templates STORE --method ...'",
                                 param_hint="TEMPLATES_DIR") from None
    if rec.stage != "templates":
        raise click.BadParameter(f"{path!r} holds a {rec.stage!r} output, not templates; is it a model folder? "
                                 "Pass folders written by 'hpcmix templates'", param_hint="TEMPLATES_DIR")
    missing = [f for f in (TEST_POOL_FILE, TEMPLATES_FILE) if not os.path.exists(os.path.join(path, f))]
    if missing:
        raise click.BadParameter(f"{path!r} is not a finished templates folder (no {', '.join(missing)}); "
                                 "build it with 'hpcmix templates STORE --method ...'", param_hint="TEMPLATES_DIR")
    st = rec.settings
    return Templates(estimator=st["estimator"], smearing=st["smearing"], components=tuple(st["components"]),
                     settings=st["templates"], folder=path, address=rec.address, events=rec.inputs.get("events"),
                     model=rec.inputs.get("model"), model_folder=rec.paths.get("model"))


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
              help="True A fractions, comma-separated, each in [0, 1]. [default: hpcmix.toys.alpha]")
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
@site_option
@click.option("--progress/--no-progress", default=True, show_default=True)
def toys(template_dirs, alpha_text, n_text, n_toys, batch_size, seed, out, workers, site, progress):
    """Fit toys for every TEMPLATES_DIR (from 'hpcmix templates' or 'hpcmix run') and every (alpha, N).

    Estimator and smearing of each folder come from its done.json. Toy batches are kept in
    toys/<address>/ next to the results, so a rerun skips finished batches. Writes the results
    Dataset (dims estimator, smearing, alpha, n_events, toy) and prints the Table 1 layout.
    With --site the batches run on that site's CPU pool.
    """
    from ..orchestrate.pipeline import run_toys
    from ..orchestrate.stages import toys as toys_stage
    from ..results.aggregate import aggregate_toys
    from ..schema import ConfigError
    from ..study import resolve_study

    # -- validate everything before any cluster starts
    over = {"toys": {}}
    if alpha_text is not None:
        over["toys"]["alpha"] = parse_number_list(alpha_text, float, "--alpha", minimum=0.0, maximum=1.0,
                                                  what="0.5,0.7,0.9")
    if n_text is not None:
        over["toys"]["n_events"] = parse_number_list(n_text, int, "--n-events", minimum=1, what="20,100,500")
    for key, value, hint in (("n_toys", n_toys, "--n-toys"), ("batch_size", batch_size, "--batch-size")):
        if value is not None:
            if value < 1:
                raise click.BadParameter(f"{value}: give at least 1 toy per {'cell' if key == 'n_toys' else 'batch'}",
                                         param_hint=hint)
            over["toys"][key] = value
    if seed is not None:
        over["seed"] = seed
    try:
        study = resolve_study(overrides=over)
    except ConfigError as err:
        raise click.UsageError(str(err)) from None
    alphas, n_events = list(study.toys.alpha), list(study.toys.n_events)
    n_toys, seed = study.toys.n_toys, study.seed
    if workers is not None and workers < 0:
        raise click.BadParameter(f"{workers}: give 0 (this process) or a number of workers", param_hint="--workers")
    folders, items = {}, {}
    for d in template_dirs:
        item = _template_folder(d)
        if len(item.components) > 2:
            raise click.BadParameter(
                f"{d!r} holds templates of {len(item.components)} components ({', '.join(item.components)}); their "
                "nuisance-fraction grid and fit treatments come from a job file: run them with `hpcmix run JOB` "
                "(toys.fractions, toys.treatments)", param_hint="TEMPLATES_DIR")
        key = (item.estimator, item.smearing)
        if key in folders:
            raise click.BadParameter(f"{folders[key]!r} and {d!r} are both {key[0]} templates with smearing "
                                     f"{key[1]}; pass one folder per (method, smearing)", param_hint="TEMPLATES_DIR")
        folders[key], items[key] = d, item
    folders = {k: folders[k] for k in sorted(folders, key=lambda k: (METHOD_ORDER.index(k[0]),
                                                                     SMEARING_ORDER.index(k[1])))}
    out = out or _default_out(template_dirs)
    if os.path.islink(out):
        raise click.BadParameter(f"{out!r} is a link (hpcmix run's newest results); choose another --out",
                                 param_hint="--out")
    if os.path.exists(out) and not os.path.exists(os.path.join(out, "zarr.json")):
        raise click.BadParameter(f"{out!r} exists and is not a Zarr store; choose another --out", param_hint="--out")

    # -- the cells, and their batches still to fit
    toy_root = os.path.join(os.path.dirname(os.path.abspath(out)), "toys")
    cells = [toys_stage.cell(items[k], alpha=a, n_events=n, batches=study.toys.batch_sizes, seed=seed, root=toy_root)
             for k in folders for a in alphas for n in n_events]
    _check_pools(cells, items, folders)
    tasks = [(c, b, c.batches[b]) for c in cells for b in c.missing()]
    work = sum(n * c.n_events for c, _, n in tasks)
    if workers is None and site is None:
        workers = 0 if work <= IN_PROCESS_MAX_EVENTS else None   # None: one local worker per core

    if site is not None:
        where = f"on site {site!r}"
    else:
        where = "in this process" if workers == 0 else \
            f"on a local Dask cluster ({workers or 'one per core'} worker{'s' if workers != 1 else ''})"
    click.echo(f"{len(cells)} cells ({len(folders)} templates x {len(alphas)} alpha x {len(n_events)} N) x "
               f"{n_toys} toys: {len(tasks)} batch(es) to fit"
               + (f", {sum(len(c.batches) for c in cells) - len(tasks)} already done" if len(tasks) < sum(
                   len(c.batches) for c in cells) else "") + (f", {where}" if tasks else ""))
    t0 = time.perf_counter()
    if tasks:
        executor = _executor(site, workers)
        try:
            for line in executor.dashboard_lines():
                click.echo(line)
            run_toys(cells, executor, progress=progress)
        finally:
            executor.close()
    t_fit = time.perf_counter() - t0

    # -- aggregate (the same code as 'hpcmix run')
    t0 = time.perf_counter()
    attrs = {"study": "hpcmix toys", "templates": {"/".join(k): os.path.abspath(v) for k, v in folders.items()},
             "toy_batches": toy_root, "seed": seed}
    stores = {i.events for i in items.values()} - {None}
    if len(stores) == 1:
        attrs["event_store_fingerprint"] = stores.pop()
    ds, _ = aggregate_toys(folders, cells, alphas=alphas, n_events=n_events, n_toys=n_toys, seed=seed, path=out,
                           attrs=attrs)
    t_agg = time.perf_counter() - t0
    click.echo("")
    click.echo(ds.mixture.table())
    if bool(ds["pool_smaller_than_needed"].any()):
        click.echo(f"\nnote: {ds.attrs['pool_reuse_note']}; generate a larger test split for independent toys")
    click.echo(f"\nresults: {out}  (xarray.open_zarr(..., consolidated=False)); fits {t_fit:.1f} s, "
               f"aggregation {t_agg:.1f} s")
    click.echo(f"next   : hpcmix report {out}")


def _check_pools(cells, items, folders) -> None:
    """Every toy fits in its folder's test pools (no event twice in one toy), before any fit."""
    from ..orchestrate.checks import toy_pool_problems
    from ..orchestrate.record import StageRecord

    problems = []
    for key, item in items.items():
        pools = StageRecord.read(folders[key], stage="templates").info.get("pool_sizes")
        if not pools:
            continue  # written before pool sizes were recorded: the toys stage still checks
        mine = [c for c in cells if c.template_dir == folders[key]]
        zero, one = item.components
        found, _ = toy_pool_problems(mine, pools, zero=zero, one=one, test_field=f"test pools of {folders[key]}")
        problems += found
    if problems:
        raise click.UsageError("the toys do not fit in the test pools:\n  - " + "\n  - ".join(problems)
                               + "\n(--n-events and --alpha choose the cells; 'hpcmix generate' makes larger "
                               "test splits)")


def _executor(site, workers):
    """This process (workers 0), a local cluster of ``workers`` (None: one per core), or a site's pools."""
    from ..orchestrate.executor import InProcess, site_executor

    if site is not None:
        return site_executor(site)
    if workers == 0:
        return InProcess()
    return site_executor("local", cpu={"dashboard_address": ":0", **({"n_workers": workers} if workers else {})},
                         gpu=False)
