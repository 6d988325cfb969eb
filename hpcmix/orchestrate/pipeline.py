"""``hpcmix run``: a resolved study, stage by stage, on one executor.

generate -> train -> templates -> toys -> aggregate -> report. Every stage output
lives at its address (orchestrate/record.py), so a rerun skips what is done and a
changed setting, or a bumped stage version, redoes only what depends on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import HpcmixError, TaskFailedError
from ..generate.run import GenerationPlan, plan_generation
from ..study.model import LEARNED_RATIO_ESTIMATORS, Study
from . import runlog, stages
from .lock import output_lock
from .record import StageRecord, is_done
from .stages import reweight as reweight_stage
from .stages import templates as templates_stage
from .stages import toys as toys_stage
from .stages import train as train_stage

RESULTS_VERSION = 1


@dataclass(frozen=True)
class StudyPlan:
    """Where every stage writes, derived from the resolved study alone (no cluster needed)."""

    study: Study
    generation: GenerationPlan
    events: str                                            # the event store (its name is its address)
    models: dict[str, train_stage.Model]                   # smearing -> the study's classifier
    auc_models: dict[str, train_stage.Model]               # "auc:<set>" -> AUC-study classifier
    templates: dict[tuple[str, str], templates_stage.Templates]   # (estimator, smearing) -> folder
    cells: tuple[toys_stage.Cell, ...]
    results: str
    report: str
    notes: tuple[str, ...] = ()                            # legal but wasteful settings (checks.py)
    reweights: dict[str, reweight_stage.Reweighting] = field(default_factory=dict)   # weight name -> item
    # templates.weight_networks = all: (estimator, smearing, network m >= 1) -> templates with network m's
    # weights, and the cells fitted on them (the network-choice systematic)
    network_templates: dict[tuple[str, str, int], templates_stage.Templates] = field(default_factory=dict)
    network_cells: tuple[toys_stage.Cell, ...] = ()

    @property
    def events_address(self) -> str:
        return self.generation.layout.fingerprint()

    @property
    def n_toy_tasks(self) -> int:
        return sum(len(c.batches) for c in self.cells + self.network_cells)

    @property
    def template_items(self) -> list[templates_stage.Templates]:
        """Every templates folder the study needs: the nominal ones, then the other networks' (each once)."""
        out = {t.address: t for t in self.templates.values()}
        out.update({t.address: t for t in self.network_templates.values() if t.address not in out})
        return list(out.values())

    def network_variants(self) -> dict[int, tuple[dict[tuple[str, str], str], list[toys_stage.Cell]]]:
        """{network m >= 1: ({(estimator, smearing): templates folder}, its cells)} for the aggregate."""
        ms = sorted({m for *_, m in self.network_templates})
        return {m: ({(e, s): t.folder for (e, s, mm), t in self.network_templates.items() if mm == m},
                    [c for c in self.network_cells if c.weight_network == m]) for m in ms}

    def addresses(self) -> dict[str, Any]:
        """Every output's address, by stage (what the rerun test compares)."""
        out = {"generate": self.events_address}
        if self.reweights:
            out["reweight"] = {k: r.address for k, r in self.reweights.items()}
        def cell_key(c, *extra):
            return "/".join([c.estimator, c.smearing, str(c.alpha), str(c.n_label),
                             *(f"{k}={f}" for k, f in c.fractions), *extra])

        out.update({"train": {k: m.address for k, m in {**self.models, **self.auc_models}.items()},
                    "templates": {"/".join(k): t.address for k, t in self.templates.items()},
                    "toys": {cell_key(c): c.address for c in self.cells}})
        if self.network_templates:
            # network m >= 1: the templates it moves (weighted ones; others are network 0's) and all its cells
            out["weight_networks"] = {
                "templates": {"/".join([*k[:2], str(k[2])]): t.address for k, t in self.network_templates.items()
                              if t.address != self.templates[k[:2]].address},
                "toys": {cell_key(c, f"network={c.weight_network}"): c.address for c in self.network_cells}}
        return {**out, "results": os.path.basename(self.results).removesuffix(".zarr")}

    def describe(self, site=None) -> str:
        """The plan, stage by stage, and its cost; ``site``: where it would run (its training rate)."""
        g, s = self.generation, self.study
        lines = [f"study {s.name!r} from {s.source} -> {s.output}",
                 f"  components: {', '.join(s.components)}; {s.poi.name} = fraction of {s.poi.fraction_of} "
                 f"among {' + '.join(s.poi.among)}"
                 + (f"; nuisances {', '.join(f'{k} at {list(v)}' for k, v in s.toys.fractions.items())}, "
                    f"fitted {', '.join(s.toys.treatments)}" if s.nuisances else ""),
                 f"  generate : {g.n_tasks} tasks, {len(g.layout.samples)} components x {g.layout.n_events} "
                 f"selected events ({', '.join(f'{k} {n * g.layout.chunk_size}' for k, n in g.layout.split_chunks)}), "
                 f"profile {g.layout.settings['profile']}",
                 *([f"  reweight : {'; '.join(map(_describe_reweighting, self.reweights.values()))}"]
                   if self.reweights else []),
                 f"  train    : {len(self.models)} classifier(s) ({', '.join(self.models) or 'none'}), "
                 f"{len(s.network_inputs)} inputs"
                 + (f"; AUC study: {len(self.auc_models)} more ({', '.join(self.auc_models)})"
                    if self.auc_models else ""),
                 f"  templates: {len(self.templates)} ({', '.join('/'.join(k) for k in self.templates)})",
                 f"  toys     : {len(self.cells) + len(self.network_cells)} cells x {s.toys.n_toys} toys in "
                 f"{self.n_toy_tasks} tasks",
                 *([f"  networks : templates and toys again with reweighting network(s) "
                    f"{', '.join(map(str, self.network_variants()))} (templates.weight_networks: all): "
                    f"{len(self.template_items) - len(self.templates)} more templates, {len(self.network_cells)} "
                    "more cells"] if self.network_templates else []),
                 f"  results  : {self.results}", f"  report   : {self.report}"]
        return "\n".join(lines + self.estimate(site).lines() + [f"  note     : {n}" for n in self.notes])

    def estimate(self, site=None) -> "Estimate":
        """Core-hours and store size from the measured rates in the study's ``estimates``; training from
        the rate of the pool it runs on (the site's gpu pool, else its cpu pool) where the site gives one."""
        g, est = self.generation, self.study.estimates
        n_selected = g.layout.n_events * len(g.layout.samples)
        settings = g.layout.settings
        gen = 0.0
        for p in g.layout.samples:
            # a process's own efficiency and rate where the estimates give them (backgrounds pass far less)
            own = (est.get("processes") or {}).get(p) or {}
            profile = settings["processes"][p].get("profile") or settings["profile"]
            rate = (own.get("tried_events_per_core_second") or {}).get(profile) \
                or est["tried_events_per_core_second"][profile]
            gen += g.layout.n_events / own.get("selection_efficiency", est["selection_efficiency"]) / rate
        start, stop = g.layout.split_ranges()["train"]
        models = list(self.models.values()) + list(self.auc_models.values())
        # (training samples over all epochs, batch size) per network
        fits = [(min(m.settings.max_epochs, int(est["training_epochs"])) * (stop - start) * len(m.components)
                 * (1 - m.settings.validation_fraction), m.settings.batch_size) for m in models]
        # reweighting: M networks on two samples' train splits, and two fresh networks on the template splits
        t_start, t_stop = g.layout.split_ranges()["template"]
        for r in self.reweights.values():
            epochs = min(r.settings.classifier.max_epochs, int(est["training_epochs"]))
            n = 2 * (len(r.networks) * (stop - start) + (2 * (t_stop - t_start) if r.settings.two_sample_test else 0))
            fits.append((epochs * n * (1 - r.settings.classifier.validation_fraction), r.settings.classifier.batch_size))
        train = sum(n for n, _ in fits) / est["training_samples_per_core_second"]
        # a cell with nuisances fits its toys once per treatment, with the K-fraction fitter (far slower
        # per event: K densities, the positivity support, profiled nuisances)
        cells = self.cells + self.network_cells
        two = sum(c.n_events for c in cells if not c.has_nuisances) / est["toy_events_per_core_second"]
        more = (sum(c.n_events * len(c.treatments) for c in cells if c.has_nuisances)
                / est["fraction_toy_events_per_core_second"])
        toys = self.study.toys.n_toys * (two + more)
        size = n_selected * est["store_bytes_per_event"]
        pool, rate, source = _training_rate(site, est)
        hours = None if rate is None else sum(n / rate(batch) for n, batch in fits) / 3600
        return Estimate(generate=gen / 3600, train=train / 3600, toys=toys / 3600, store_bytes=size,
                        train_pool=pool, train_pool_hours=hours, train_rate_source=source)


def _training_rate(site, est) -> tuple[str | None, Any, str]:
    """(the pool the train stage runs on, samples / s as a function of the batch size or None, where the rate
    comes from). The pool's own ``training_samples_per_second`` first; else, for a gpu pool, the GPU rates
    in ``estimates.training_samples_per_gpu_second``, by batch size: the rate of the largest measured
    batch not above the network's (a larger batch trains faster on a GPU, so this errs slow); below the
    smallest measured batch, that batch's rate scaled down in proportion (a launch-bound GPU does one
    batch per step whatever its size)."""
    if site is None:
        return None, None, ""
    pool = "gpu" if site.gpu is not None else "cpu"
    own = getattr(site, pool).get("training_samples_per_second")
    if own:
        return pool, lambda batch: float(own), f"the {pool} pool's measured {own:,.0f} samples/s"
    by_batch = {int(b): float(r) for b, r in est.get("training_samples_per_gpu_second") or ()}
    if pool != "gpu" or not by_batch:
        return pool, None, ""

    def rate(batch: int) -> float:
        fit = [b for b in by_batch if b <= batch]
        if fit:
            return by_batch[max(fit)]
        return by_batch[min(by_batch)] * batch / min(by_batch)
    shown = ", ".join(f"{r:,.0f} at batch {b}" for b, r in sorted(by_batch.items()))
    return pool, rate, (f"hpcmix.estimates' GPU rates, {shown}; set gpu.training_samples_per_second "
                        "to your GPU's")


def _describe_reweighting(r) -> str:
    w = r.settings
    return (f"{w.name} ({w.source} -> {w.target}, {len(r.networks)} network(s), "
            f"blinded {w.blind.describe() if w.blind else 'nothing'})")


@dataclass(frozen=True)
class Estimate:
    """Rough cost of a study: core-hours per stage and the event store size."""

    generate: float
    train: float                      # core-hours on CPUs at hpcmix.estimates' rate
    toys: float
    store_bytes: float
    train_pool: str | None = None     # where the site trains ("gpu" or "cpu"), None without a site
    train_pool_hours: float | None = None   # wall hours of one worker there, from that pool's rate
    train_rate_source: str = ""

    def lines(self) -> list[str]:
        if self.train_pool_hours is not None:
            train = f"train {self.train_pool_hours:.2f} h on the {self.train_pool} pool ({self.train_rate_source})"
        else:
            train = f"train {self.train:.2f} core-h (CPU; a GPU is far faster)"
        return [f"  estimate : generate {self.generate:.2f} core-h, {train}, toys {self.toys:.3f} core-h; "
                f"event store ~{self.store_bytes / 1e9:.2f} GB "
                "(uncompressed; rates in hpcmix.estimates, docs/PERFORMANCE.md)"]


def plan_study(study: Study) -> StudyPlan:
    """Every stage's items and addresses, from the study alone; settings that cannot run
    together raise :class:`~hpcmix.orchestrate.checks.PlanError` here, before any cluster."""
    from .checks import check_plan, check_task_counts
    from .record import address

    check_task_counts(study)
    out = study.output
    generation = plan_generation(study)
    events_address = generation.layout.fingerprint()
    events = os.path.join(out, "events", f"{events_address}.zarr")
    reweights = reweight_stage.plan(study, events=events_address, root=os.path.join(out, "reweight"),
                                    model_root=os.path.join(out, "models"))
    every_model = train_stage.plan(study, events=events_address, root=os.path.join(out, "models"),
                                   reweights=reweights)
    models = {k: m for k, m in every_model.items() if not k.startswith("auc:")}
    auc_models = {k: m for k, m in every_model.items() if k.startswith("auc:")}
    templates = templates_stage.plan(study, events=events_address, models=models, root=os.path.join(out, "templates"),
                                     reweights=reweights)
    cells = toys_stage.plan(study, templates, root=os.path.join(out, "toys"), events_path=events,
                            reweights=reweights)
    network_templates, network_cells = {}, ()
    for m in range(1, templates_stage.weight_network_count(study)):
        tm = {k: templates_stage.with_weight_network(t, m, root=os.path.join(out, "templates"), models=models)
              for k, t in templates.items()}
        network_templates.update({(*k, m): t for k, t in tm.items()})
        network_cells += toys_stage.plan(study, tm, root=os.path.join(out, "toys"), events_path=events,
                                         reweights=reweights, weight_network=m)
    results = address("results", RESULTS_VERSION, {"poi": study.poi.name},
                      {c.address: c.address for c in cells + network_cells})
    plan = StudyPlan(study=study, generation=generation, events=events, models=models, auc_models=auc_models,
                     templates=templates, cells=cells, results=os.path.join(out, "results", f"{results}.zarr"),
                     report=os.path.join(out, "report"), reweights=reweights, network_templates=network_templates,
                     network_cells=network_cells)
    return dataclasses.replace(plan, notes=check_plan(plan))


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
    reweighting: dict[str, dict] = field(default_factory=dict)            # weight name -> reweight record


#: the stages ``run_study(..., until=)`` can stop after
STOP_AFTER = ("reweight",)


def run_study(study: Study, *, site=None, executor=None, progress: bool = True,
              echo: Callable[[str], None] = print, until: str | None = None) -> StudyOutcome:
    """Run every stage that is not done yet on ``executor`` (default: the pools of ``site``);
    ``until="reweight"`` stops after the reweighting stage (``hpcmix reweight``)."""
    if until is not None and until not in STOP_AFTER:
        raise ValueError(f"until must be one of {list(STOP_AFTER)} or None, got {until!r}")
    if until == "reweight" and not study.reweight:
        raise ReweightPlanError(f"{study.source}: the job has no reweight: section, so there is no reweighting "
                                "stage to run; add one (docs/stages/reweight.md) or use hpcmix run")
    from ..store import EventStore
    from .executor import site_executor

    plan = plan_study(study)
    check_disk_space(plan)
    command = f"hpcmix {'reweight' if until == 'reweight' else 'run'} {study.source}"
    with output_lock(study.output, what=command):
        # the plan, and later how the run ended, for 'hpcmix status' (orchestrate/runlog.py)
        log = runlog.start(plan, command=command, until=until)
        try:
            # refuse a store made with other settings before any cluster starts
            EventStore.create(plan.events, plan.generation.layout)
            own = executor is None
            if own:
                executor = site_executor(site)
            try:
                echo(executor.describe())
                for line in executor.dashboard_lines():
                    echo(line)
                outcome = _run_stages(plan, executor, progress, echo, until=until)
            finally:
                if own:
                    executor.close()
        except BaseException as err:
            runlog.end(log, err)
            raise
        runlog.end(log)
        return outcome


class ReweightPlanError(HpcmixError, ValueError):
    """``hpcmix reweight`` on a job without a reweight: section."""


class InsufficientDiskError(HpcmixError, RuntimeError):
    """The output folder's file system cannot hold the planned event store."""


def check_disk_space(plan: StudyPlan, *, margin: float = 1.2) -> None:
    """Refuse before any work when the planned (uncompressed) store would not fit."""
    import shutil

    from ..store import EventStore

    folder = plan.study.output
    while not os.path.exists(folder):
        folder = os.path.dirname(os.path.abspath(folder))
    try:  # what an existing store already holds does not need new space
        done = EventStore(plan.events).done_chunks(plan.study.components[0]).mean()
    except (FileNotFoundError, ValueError):
        done = 0.0
    need = plan.estimate().store_bytes * (1 - done) * margin
    free = shutil.disk_usage(folder).free
    if need > free:
        raise InsufficientDiskError(
            f"the event store of {plan.study.name!r} needs about {need / 1e9:.1f} GB (uncompressed estimate, "
            f"with a {margin - 1:.0%} margin) but {folder!r} has {free / 1e9:.1f} GB free; free space, "
            "choose another 'output:' or generate fewer events")


def run_train(models, store_path: str, executor, *, progress: bool, echo) -> dict[str, dict]:
    """The train stage: every model not yet at its address; returns {label: record} of all of them."""
    todo = [m for m in models if not is_done(m.folder, m.address)]
    if todo and not executor.has_gpu_pool and not executor.runs_here:
        echo("train: this site has no GPU pool; training on the CPU pool")
    by_key = {f"train-{m.address}": m for m in todo}
    # per-epoch lines only where they reach the user's terminal (a worker's go to its log)
    for key, rec in executor.run(train_stage.tasks(todo, store_path, progress=progress and executor.runs_here),
                                 stage="train", progress=progress):
        info = rec["info"]
        echo(f"train [{by_key[key].label}]: ROC AUC {info['roc_auc']:.4f} on {info['n_test']} test events, "
             f"{info['epochs_run']} epochs, device {info['device']}, SLURM job {info['worker'].get('slurm_job_id')}")
    return {m.label: StageRecord.read(m.folder, stage="train").to_json() for m in models}


def run_reweight(items, store_path: str, executor, *, progress: bool, echo) -> dict[str, dict]:
    """The reweighting stage: for each weight not complete, its networks, its weights chunk by chunk into
    the store, then its summary; returns {name: record} of all of them."""
    from ..store import EventStore

    store = EventStore(store_path)
    todo = [r for r in items if not reweight_stage.is_complete(r, store)]
    # on the client, before any of the weights' tasks: refuses a region with too few training events
    factors = {r.name: reweight_stage.control_region(store, r).factor(r.settings) for r in todo}
    pairs = [(r, store_path) for r in todo]
    for _ in executor.run(reweight_stage.training_tasks(pairs), stage="reweight", progress=progress):
        pass
    for r in todo:
        store.create_weight(r.settings.source, r.name, r.weights_address, n_networks=len(r.networks),
                            provenance=reweight_stage.provenance(r, store_path, factors[r.name]))
    for _ in executor.run(reweight_stage.weight_tasks(pairs, factors), stage="reweight", progress=progress,
                          unit="chunk"):
        pass
    for _ in executor.run(reweight_stage.summary_tasks(pairs, factors), stage="reweight", progress=progress):
        pass
    records = {r.name: StageRecord.read(r.folder, stage=reweight_stage.NAME).to_json() for r in items}
    for name, rec in records.items():
        echo(reweight_stage.describe_record(rec))
    return records


def run_templates(items, store_path: str, executor, *, progress: bool) -> dict[str, dict]:
    todo = [t for t in items if not is_done(t.folder, t.address)]
    for _ in executor.run(templates_stage.tasks(todo, store_path), stage="templates", progress=progress):
        pass
    return {t.address: StageRecord.read(t.folder, stage="templates").to_json() for t in items}


def run_toys(cells, executor, *, progress: bool) -> tuple[int, tuple[str, ...]]:
    """Fit every missing batch; returns (batches already done, SLURM jobs that ran the new ones)."""
    tasks = toys_stage.tasks(cells)
    done = sum(len(c.batches) for c in cells) - len(tasks)
    jobs = {job for _, (_, job) in executor.run(tasks, stage="toys", progress=progress)}
    return done, tuple(sorted(j for j in jobs if j))


def _reweight_report(plan: StudyPlan, reweighting: dict) -> tuple[str, list[str]]:
    """The report of a run stopped after the reweighting stage: ``reweighting.md``, its per-feature
    figures and ``index.html`` with both (there are no results yet)."""
    from ..results.aggregate import reweight_table
    from ..results.html import write_index
    from ..results.report import reweighting_figures

    os.makedirs(plan.report, exist_ok=True)
    text = reweight_table(reweighting)
    with open(os.path.join(plan.report, "reweighting.md"), "w") as f:
        f.write(text + "\n")
    figures = reweighting_figures(reweighting, plan.report)
    write_index(plan.report, title=f"{plan.study.name}: reweighting", tables=[("Reweighting", text)],
                figures=figures, attrs={"study": plan.study.name, "job": plan.study.to_json(), "events": plan.events,
                                        "event_store_fingerprint": plan.events_address,
                                        "addresses": {"generate": plan.events_address,
                                                      "reweight": {k: r.address for k, r in plan.reweights.items()}},
                                        "stage_versions": stages.VERSIONS})
    return text, figures


def _run_stages(plan: StudyPlan, executor, progress: bool, echo, *, until: str | None = None) -> StudyOutcome:
    from ..generate.run import run_generation
    from ..results.aggregate import aggregate_toys, auc_table, network_table, reweight_table
    from ..results.report import reweighting_figures, write_report

    study, seconds, skipped, notes, slurm_jobs = plan.study, {}, {}, [], {}

    with _stage("generate", seconds):
        report = run_generation(plan.generation, plan.events, executor=executor, progress=progress)
    skipped["generate"], slurm_jobs["generate"] = report.chunks_skipped, report.slurm_jobs
    echo(report.format())

    reweights = list(plan.reweights.values())
    if reweights:
        from ..store import EventStore

        store = EventStore(plan.events)
        skipped["reweight"] = sum(reweight_stage.is_complete(r, store) for r in reweights)
        with _stage("reweight", seconds):
            reweighting = run_reweight(reweights, plan.events, executor, progress=progress, echo=echo)
    else:
        reweighting = {}
    if until == "reweight":
        text, figures = _reweight_report(plan, reweighting)
        return StudyOutcome(plan=plan, results_path="", table=text, figures=figures, seconds=seconds,
                            skipped=skipped, slurm_jobs=slurm_jobs, reweighting=reweighting)

    every = [*plan.models.values(), *plan.auc_models.values()]
    skipped["train"] = sum(is_done(m.folder, m.address) for m in every)
    with _stage("train", seconds):
        records = run_train(every, plan.events, executor, progress=progress, echo=echo)

    items = plan.template_items
    skipped["templates"] = sum(is_done(t.folder, t.address) for t in items)
    with _stage("templates", seconds):
        trecords = run_templates(items, plan.events, executor, progress=progress)
    for (est, sm), t in plan.templates.items():
        info = trecords[t.address]["info"]
        if est == "phi_star" and "a" in info:
            echo(f"templates [phi_star/{sm}]: a = {info['a']:.4f} +- {info['a_err']:.4f}, c = {info['c']:.4f}")

    with _stage("toys", seconds):
        skipped["toys"], slurm_jobs["toys"] = run_toys(plan.cells + plan.network_cells, executor, progress=progress)

    with _stage("aggregate", seconds):
        attrs = {"study": study.name, "job": study.to_json(), "events": plan.events,
                 "event_store_fingerprint": plan.events_address, "addresses": plan.addresses(),
                 "stage_versions": stages.VERSIONS, "poi": study.poi.name, "components": list(study.components),
                 "models": {k: m.folder for k, m in plan.models.items()},
                 "templates": {"/".join(k): t.folder for k, t in plan.templates.items()}}
        ds, templates = aggregate_toys({k: t.folder for k, t in plan.templates.items()}, plan.cells,
                                       alphas=list(study.toys.alpha), n_events=list(study.toys.n_events),
                                       n_toys=study.toys.n_toys, seed=study.seed, path=plan.results, attrs=attrs,
                                       nuisances=dict(study.toys.fractions), treatments=study.toys.treatments,
                                       networks=plan.network_variants())
    if bool(ds["pool_smaller_than_needed"].any()):
        start, stop = plan.generation.layout.split_ranges()["test"]
        pools = " + ".join(f"{stop - start} {c}" for c in study.components)
        notes.append(f"{ds.attrs['pool_reuse_note']} (test pools of {pools} events); "
                     "enlarge generate.events.test for independent toys")

    with _stage("report", seconds):
        auc = auc_table({k.removeprefix("auc:"): records[k] for k in plan.auc_models},
                        smearing=study.auc_study.smearing if study.auc_study else "none")
        # the network table for studies with several networks per variant (nuisances, ratio networks)
        several = study.nuisances or set(study.toys.estimators) & set(LEARNED_RATIO_ESTIMATORS)
        networks = network_table({k: records[k] for k in plan.models}, trecords) if several else ""
        rw_text = reweight_table(reweighting) if reweighting else ""
        rw_figures = reweighting_figures(reweighting, plan.report) if reweighting else []
        table, figures = write_report(ds, plan.report, templates=templates, extra_figures=rw_figures, notes=notes,
                                      extra_tables=[("auc_study", auc), ("networks", networks),
                                                    ("reweighting", rw_text)])
    training = {k: records[k] for k in plan.models}
    slurm_jobs["train"] = tuple(sorted({r["info"]["worker"]["slurm_job_id"] for r in training.values()
                                        if r["info"]["worker"].get("slurm_job_id")}))
    return StudyOutcome(plan=plan, results_path=_link_results(plan), table=table, figures=list(figures),
                        seconds=seconds, skipped=skipped, notes=notes, slurm_jobs=slurm_jobs, training=training,
                        reweighting=reweighting)


@contextlib.contextmanager
def _stage(name: str, seconds: dict[str, float]):
    """Time one stage; an unexpected error on the client side says which stage it came from."""
    t0 = time.perf_counter()
    try:
        yield
    except (HpcmixError, TaskFailedError):
        raise
    except Exception as err:
        raise TaskFailedError(name, None, err) from err
    seconds[name] = time.perf_counter() - t0


def _link_results(plan: StudyPlan) -> str:
    """``<output>/results.zarr`` points at the newest results."""
    link = os.path.join(plan.study.output, "results.zarr")
    target = os.path.relpath(plan.results, plan.study.output)
    if os.path.islink(link) or os.path.exists(link):
        if os.path.islink(link) and os.readlink(link) == target:
            return link
        os.remove(link) if os.path.islink(link) else None
    if not os.path.exists(link):
        os.symlink(target, link)
    return link
