"""``hpcmix run``: a study from a job file to a results table, stage by stage.

generate -> train -> templates -> toys -> aggregate -> report. Every stage's
output lives in a folder named by the hash of the settings that made it, so a
rerun skips what is done and a changed setting redoes only what depends on it.
"""

from __future__ import annotations

import os
import pickle
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..generate.run import plan_generation, run_generation
from ..physics.features import network_inputs
from ..physics.selection import SelectionCuts
from . import stages
from .completion import as_finished
from .jobs import Job, resolved_template_settings, settings_hash
from .lock import output_lock

SMEARED = {"none": False, "detector": True}


@dataclass(frozen=True)
class ToyCell:
    method: str
    smearing: str
    alpha: float
    n_events: int
    template_dir: str
    folder: str
    batches: tuple[int, ...]      # toys per batch


@dataclass(frozen=True)
class StudyPlan:
    """Where every stage writes, derived from the job alone (no cluster needed)."""

    job: Job
    generation: Any
    events: str
    models: dict[str, str]                         # smearing -> model folder
    templates: dict[tuple[str, str], str]          # (method, smearing) -> folder
    cells: tuple[ToyCell, ...]
    results: str
    report: str
    feature_names: tuple[str, ...]
    auc_models: dict[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)  # set -> (inputs, folder)

    @property
    def n_toy_tasks(self) -> int:
        return sum(len(c.batches) for c in self.cells)

    def describe(self) -> str:
        g = self.generation
        ev = g.layout.n_events
        lines = [f"study {self.job.name!r} from {self.job.source} -> {self.job.output}",
                 f"  generate : {g.n_tasks} tasks, {len(g.layout.samples)} samples x {ev} selected events "
                 f"({', '.join(f'{k} {n * g.layout.chunk_size}' for k, n in g.layout.split_chunks)}), "
                 f"profile {g.layout.settings['profile']}",
                 f"  train    : {len(self.models)} classifier(s) ({', '.join(self.models)}), "
                 f"{len(self.feature_names)} inputs"
                 + (f"; AUC study: {len(self.auc_models)} more ({', '.join(self.auc_models)})"
                    if self.auc_models else ""),
                 f"  templates: {len(self.templates)} ({', '.join('/'.join(k) for k in self.templates)})",
                 f"  toys     : {len(self.cells)} cells x {self.job.toys['n_toys']} toys in {self.n_toy_tasks} tasks",
                 f"  results  : {self.results}", f"  report   : {self.report}"]
        return "\n".join(lines + self.estimate().lines())

    def estimate(self) -> "Estimate":
        """Core-hours and store size from the measured rates in ``hpcmix.estimates``."""
        from .. import config

        g = self.generation
        n_selected = g.layout.n_events * len(g.layout.samples)
        rate = config.get("estimates.tried_events_per_core_second")[g.layout.settings["profile"]]
        gen = n_selected / config.get("estimates.selection_efficiency") / rate
        n_train = g.layout.split_ranges()["train"][1] - g.layout.split_ranges()["train"][0]
        epochs = min(int(self.job.classifier.get("max_epochs", config.get("train.max_epochs"))),
                     int(config.get("estimates.training_epochs")))
        train = (len(self.models) + len(self.auc_models)) * epochs * n_train * len(g.layout.samples) * 0.8 / config.get(
            "estimates.training_samples_per_core_second")
        toy_events = self.job.toys["n_toys"] * sum(c.n_events for c in self.cells)
        toys = toy_events / config.get("estimates.toy_events_per_core_second")
        size = n_selected * config.get("estimates.store_bytes_per_event")
        return Estimate(generate=gen / 3600, train=train / 3600, toys=toys / 3600, store_bytes=size)


@dataclass(frozen=True)
class Estimate:
    """Rough cost of a study: core-hours per stage and the event store size."""

    generate: float
    train: float
    toys: float
    store_bytes: float

    def lines(self) -> list[str]:
        return [f"  estimate : generate {self.generate:.2f} core-h, train {self.train:.2f} core-h (CPU; a GPU "
                f"is far faster), toys {self.toys:.3f} core-h; event store ~{self.store_bytes / 1e9:.2f} GB "
                "(uncompressed; rates in hpcmix.estimates, docs/PERFORMANCE.md)"]


def plan_study(job: Job) -> StudyPlan:
    gen = job.generate
    generation = plan_generation(samples=job.samples, splits=dict(gen["events"]), chunk_size=gen["chunk_size"],
                                 profile=gen["profile"], seed=job.seed, processes=job.processes,
                                 max_tries_factor=gen["max_tries_factor"],
                                 cuts=SelectionCuts.from_config(**job.selection))
    out = job.output
    events_fp = generation.layout.fingerprint()
    events = os.path.join(out, "events", f"{events_fp}.zarr")
    names = network_inputs(job.features)
    methods = job.toys["methods"]
    models = {}
    if "nn" in methods:
        for sm in job.smearing:
            h = settings_hash("model", events_fp, sm, names, dict(job.classifier), job.seed)
            models[sm] = os.path.join(out, "models", h)
    templates = {}
    template_settings = resolved_template_settings(job.templates)
    for method in methods:
        for sm in job.smearing:
            upstream = os.path.basename(models[sm]) if method == "nn" else None
            h = settings_hash("templates", events_fp, method, sm, upstream, template_settings)
            templates[(method, sm)] = os.path.join(out, "templates", h)
    n_toys, batch = job.toys["n_toys"], job.toys["batch_size"]
    sizes = tuple([batch] * (n_toys // batch) + ([n_toys % batch] if n_toys % batch else []))
    cells = []
    for (method, sm), tdir in templates.items():
        for alpha in job.toys["alpha"]:
            for n in job.toys["n_events"]:
                h = settings_hash("toys", os.path.basename(tdir), float(alpha), int(n), sizes, job.seed)
                cells.append(ToyCell(method, sm, float(alpha), int(n), tdir, os.path.join(out, "toys", h), sizes))
    results_hash = settings_hash("results", [c.folder for c in cells])
    auc_models = {}
    if job.auc_study:
        study = job.auc_study
        for feature_set in study["sets"]:
            inputs = network_inputs(feature_set)
            label = feature_set if isinstance(feature_set, str) else "+".join(inputs)
            h = settings_hash("model", events_fp, study["smearing"], inputs,
                              {**job.classifier, **study["classifier"]}, job.seed)
            auc_models[label] = (tuple(inputs), os.path.join(out, "models", h))
    return StudyPlan(job=job, generation=generation, events=events, models=models, templates=templates,
                     cells=tuple(cells), results=os.path.join(out, "results", f"{results_hash}.zarr"),
                     report=os.path.join(out, "report"), feature_names=tuple(names), auc_models=auc_models)


@dataclass
class StudyOutcome:
    plan: StudyPlan
    results_path: str
    table: str
    figures: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    slurm_jobs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # stage -> SLURM jobs that ran it
    training: dict[str, dict] = field(default_factory=dict)               # smearing -> train stage record


def run_study(job: Job, *, site=None, progress: bool = True, echo: Callable[[str], None] = print,
              pools=None) -> StudyOutcome:
    """Run every stage that is not done yet; return the results and report locations."""
    from ..store import EventStore
    from .cluster import make_clusters

    plan = plan_study(job)
    check_disk_space(plan)
    with output_lock(job.output, what=f"hpcmix run {job.source}"):
        # refuse a store made with other settings before any cluster starts
        EventStore.create(plan.events, plan.generation.layout)
        own = pools is None
        if own:
            pools = make_clusters(site)
        try:
            echo(pools.describe())
            for p in pools.pools():
                if p.dashboard_link:
                    echo(f"Dask dashboard ({p.name} pool): {p.dashboard_link}")
            return _run_stages(plan, pools, progress, echo)
        finally:
            if own:
                pools.close()


class InsufficientDiskError(RuntimeError):
    """The output folder's file system cannot hold the planned event store."""


def check_disk_space(plan: StudyPlan, *, margin: float = 1.2) -> None:
    """Refuse before any work when the planned (uncompressed) store would not fit."""
    import shutil

    from ..store import EventStore

    folder = plan.job.output
    while not os.path.exists(folder):
        folder = os.path.dirname(os.path.abspath(folder))
    try:  # what an existing store already holds does not need new space
        done = EventStore(plan.events).done_chunks(plan.job.samples[0]).mean()
    except (FileNotFoundError, ValueError):
        done = 0.0
    need = plan.estimate().store_bytes * (1 - done) * margin
    free = shutil.disk_usage(folder).free
    if need > free:
        raise InsufficientDiskError(
            f"the event store of {plan.job.name!r} needs about {need / 1e9:.1f} GB (uncompressed estimate, "
            f"with a {margin - 1:.0%} margin) but {folder!r} has {free / 1e9:.1f} GB free; free space, "
            "choose another 'output:' or generate fewer events")


def _run_stages(plan: StudyPlan, pools, progress: bool, echo) -> StudyOutcome:
    job, seconds, skipped, notes, slurm_jobs = plan.job, {}, {}, [], {}

    t0 = time.perf_counter()
    report = run_generation(plan.generation, plan.events, client=pools.cpu.client, progress=progress)
    seconds["generate"], skipped["generate"] = time.perf_counter() - t0, report.chunks_skipped
    slurm_jobs["generate"] = report.slurm_jobs
    echo(report.format())

    t0 = time.perf_counter()
    # the study's classifiers, plus the feature-set AUC study's (same stage, same pool)
    wanted = {sm: (SMEARED[sm], plan.feature_names, dict(job.classifier), d) for sm, d in plan.models.items()}
    if job.auc_study:
        over = {**job.classifier, **job.auc_study["classifier"]}
        wanted.update({f"auc:{label}": (SMEARED[job.auc_study["smearing"]], inputs, over, d)
                       for label, (inputs, d) in plan.auc_models.items()})
    todo = {k: w for k, w in wanted.items() if not stages.is_done(w[3])}
    skipped["train"] = len(wanted) - len(todo)
    if todo:
        pool = pools.training
        if pools.gpu is None:
            echo("train: this site has no GPU pool; training on the CPU pool")
        futures = {k: pool.client.submit(stages.train_task, plan.events, job.samples, smeared, inputs, over,
                                         job.seed, d, pure=False, key=f"train-{os.path.basename(d)}")
                   for k, (smeared, inputs, over, d) in todo.items()}
        for k, info in as_finished(futures, "train", progress=progress):
            echo(f"train [{k}]: ROC AUC {info['roc_auc']:.4f} on {info['n_test']} test events, "
                 f"{info['epochs_run']} epochs, device {info['device']}, "
                 f"SLURM job {info['worker'].get('slurm_job_id')}")
    seconds["train"] = time.perf_counter() - t0
    auc_table = _auc_table(plan)

    t0 = time.perf_counter()
    todo = {k: d for k, d in plan.templates.items() if not stages.is_done(d)}
    skipped["templates"] = len(plan.templates) - len(todo)
    futures = {k: pools.cpu.client.submit(stages.templates_task, plan.events, job.samples, SMEARED[k[1]], k[0],
                                          plan.models.get(k[1]), resolved_template_settings(job.templates), d, pure=False,
                                          key=f"templates-{os.path.basename(d)}")
               for k, d in todo.items()}
    for _ in as_finished(futures, "templates", progress=progress):
        pass
    seconds["templates"] = time.perf_counter() - t0
    for (method, sm), d in plan.templates.items():
        info = stages.read_done(d)
        if method == "phi_star":
            echo(f"templates [phi_star/{sm}]: a = {info['a']:.4f} +- {info['a_err']:.4f}, c = {info['c']:.4f}")

    t0 = time.perf_counter()
    tasks, done_batches = [], 0
    for cell in plan.cells:
        for b, n in enumerate(cell.batches):
            if os.path.exists(_batch_file(cell, b)):
                done_batches += 1
            else:
                tasks.append((cell, b, n))
    skipped["toys"] = done_batches
    futures = {(cell, b): pools.cpu.client.submit(_toys_and_save, cell, b, n, job.seed, pure=False,
                                                  key=f"toys-{os.path.basename(cell.folder)}-{b}")
               for cell, b, n in tasks}
    toy_jobs = set()
    for _, (_, job_id) in as_finished(futures, "toys", progress=progress):
        toy_jobs.add(job_id)
    slurm_jobs["toys"] = tuple(sorted(j for j in toy_jobs if j))
    seconds["toys"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ds, templates = _aggregate(plan)
    seconds["aggregate"] = time.perf_counter() - t0
    if bool(ds["pool_smaller_than_needed"].any()):
        notes.append(f"{ds.attrs['pool_reuse_note']} (test pools of {_pool_sizes(plan)} events); "
                     "enlarge generate.events.test for independent toys")

    from ..results.report import write_report

    t0 = time.perf_counter()
    table, figures = write_report(ds, plan.report, templates=templates)
    if auc_table:
        with open(os.path.join(plan.report, "auc_study.md"), "w") as f:
            f.write(auc_table + "\n")
        table = table + "\n\n" + auc_table
    seconds["report"] = time.perf_counter() - t0
    training = {sm: stages.read_done(d) for sm, d in plan.models.items()}
    slurm_jobs["train"] = tuple(sorted({t["worker"]["slurm_job_id"] for t in training.values()
                                        if t["worker"].get("slurm_job_id")}))
    return StudyOutcome(plan=plan, results_path=_link_results(plan), table=table, figures=list(figures),
                        seconds=seconds, skipped=skipped, notes=notes, slurm_jobs=slurm_jobs, training=training)


def _auc_table(plan: StudyPlan) -> str:
    """ROC AUC per network-input set (the paper's feature-subset study), from the training records."""
    if not plan.auc_models:
        return ""
    study = plan.job.auc_study
    lines = [f"ROC AUC per network-input set (smearing: {study['smearing']}; test split)",
             "| inputs | n inputs | ROC AUC | epochs |", "|---|---|---|---|"]
    for label, (inputs, d) in plan.auc_models.items():
        info = stages.read_done(d)
        lines.append(f"| {label} | {len(inputs)} | {info['roc_auc']:.4f} | {info['epochs_run']} |")
    return "\n".join(lines)


def _pool_sizes(plan: StudyPlan) -> str:
    start, stop = plan.generation.layout.split_ranges()["test"]
    return " + ".join(f"{stop - start} {s}" for s in plan.job.samples)


def _batch_file(cell: ToyCell, batch: int) -> str:
    return os.path.join(cell.folder, f"batch-{batch:05d}.pkl")


def _toys_and_save(cell: ToyCell, batch: int, n_toys: int, seed: int) -> tuple[str, str | None]:
    """Toy task plus an atomic write of its result, so a rerun skips finished batches."""
    out = stages.toys_task(cell.template_dir, cell.method, cell.smearing, cell.alpha, cell.n_events, n_toys,
                           batch, seed)
    os.makedirs(cell.folder, exist_ok=True)
    path = _batch_file(cell, batch)
    with open(path + ".tmp", "wb") as f:
        pickle.dump(out, f)
    os.replace(path + ".tmp", path)
    return path, os.environ.get("SLURM_JOB_ID")


def _aggregate(plan: StudyPlan):
    """Collect every toy batch into the results Dataset (Zarr) with templates and one example curve."""
    job = plan.job
    return aggregate_toys(plan.templates, plan.cells, methods=job.toys["methods"], smearings=job.smearing,
                          alphas=job.toys["alpha"], n_events=job.toys["n_events"], n_toys=job.toys["n_toys"],
                          seed=job.seed, path=plan.results,
                          attrs={"study": job.name, "job": job.to_json(), "events": plan.events,
                                 "event_store_fingerprint": plan.generation.layout.fingerprint(),
                                 "models": plan.models,
                                 "templates": {"/".join(k): v for k, v in plan.templates.items()}})


def aggregate_toys(template_dirs, cells, *, methods, smearings, alphas, n_events, n_toys: int, seed: int, path,
                   attrs=None):
    """Collect the toy batches of ``cells`` into the results Dataset, saved at ``path`` (Zarr).

    ``template_dirs``: {(method, smearing): templates folder}; ``cells``: ToyCells whose batch
    files are all written. Adds the templates and one example likelihood curve per templates
    folder. Shared by ``hpcmix run`` and ``hpcmix toys``; returns (the Dataset reopened from
    ``path``, {(method, smearing): templates}).
    """
    from ..results.dataset import ResultsBuilder, save_results
    from ..stats.fitter import mixture_log_likelihood

    builder = ResultsBuilder(methods=methods, smearings=smearings, alphas=alphas, n_events=n_events,
                             n_toys=n_toys, attrs=attrs)
    templates = {}
    for (method, sm), d in template_dirs.items():
        t = stages.load_templates(d)
        templates[(method, sm)] = t
        builder.add_templates(method, sm, t)
    for cell in cells:
        t = templates[(cell.method, cell.smearing)]
        bound = float(np.asarray(t.cramer_rao_bound(cell.alpha, cell.n_events)))
        offset = 0
        for b, n in enumerate(cell.batches):
            with open(_batch_file(cell, b), "rb") as f:
                out = pickle.load(f)
            builder.add(cell.method, cell.smearing, cell.alpha, cell.n_events, out["fit"], offset=offset,
                        draw=out["draw"], cramer_rao=bound)
            offset += n
    # Fig. 6: -2 Delta lnL of one test set (the first toy of the middle cell), per method and smearing
    alpha_grid = np.linspace(-0.5, 1.5, 401)
    mid_alpha = alphas[len(alphas) // 2]
    mid_n = n_events[len(n_events) // 2]
    for (method, sm), d in template_dirs.items():
        pool = np.load(os.path.join(d, stages.POOL_FILE))
        from ..stats.toys import draw_toys, toy_seed

        draw = draw_toys(pool["pa_a"].size, pool["pa_h"].size, alpha=mid_alpha, n_events=mid_n, n_toys=1,
                         rng=toy_seed(seed, "example", "curve", mid_alpha, mid_n, 0))
        lo, hi = stages.read_done(d)["positivity_limits"]
        grid = alpha_grid[(alpha_grid >= lo) & (alpha_grid <= hi)]
        lnl = mixture_log_likelihood(draw.gather(pool["pa_a"], pool["pa_h"]),
                                     draw.gather(pool["ph_a"], pool["ph_h"]), grid)[0]
        builder.add_curve(method, sm, grid, -2 * (lnl - lnl.max()), alpha=mid_alpha, n_events=mid_n)
    ds = builder.to_dataset()
    save_results(ds, path)
    from ..results.dataset import open_results

    return open_results(path), templates


def _link_results(plan: StudyPlan) -> str:
    """``<output>/results.zarr`` points at the newest results."""
    link = os.path.join(plan.job.output, "results.zarr")
    target = os.path.relpath(plan.results, plan.job.output)
    if os.path.islink(link) or os.path.exists(link):
        if os.path.islink(link) and os.readlink(link) == target:
            return link
        os.remove(link) if os.path.islink(link) else None
    if not os.path.exists(link):
        os.symlink(target, link)
    return link


