"""Map generation chunks over a Dask client into the event store.

Everything is validated and the store laid out before any cluster work; each
task then generates one chunk, derives both feature sets from the same truth,
and writes its own region. Done chunks are skipped on a rerun.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..physics.selection import CUTFLOW_STEPS, SelectionCuts
from ..store import EventStore, StoreLayout
from .processes import Catalogue, load_catalogue
from .pythia_task import ChunkSpec, check_settings, generate_chunk
from .seeds import pythia_seeds, smearing_rng

#: bumped when what a generation task computes changes (it is part of the store's address)
GENERATION_VERSION = 1


@dataclass(frozen=True)
class GenerationPlan:
    """A validated request: the store layout and the chunk tasks that fill it."""

    layout: StoreLayout
    specs: tuple[ChunkSpec, ...]
    smearing: Mapping[str, float]
    seed: int

    @property
    def n_tasks(self) -> int:
        return len(self.specs)


def plan_generation(study) -> GenerationPlan:
    """Lay out the chunks of ``study``'s event store (a resolved :class:`hpcmix.study.Study`).

    Validation that needs Pythia (a setting it rejects) happens here, before any cluster starts.
    """
    from ..physics.features import FEATURE_NAMES

    chunk_size, profile, seed = study.generate.chunk_size, study.generate.profile, study.seed
    max_tries_factor = study.generate.max_tries_factor
    splits = dict(study.generate.events)
    samples = tuple(study.samples)   # the components, then any reweighting source or target
    from ..study.model import to_jsonable

    catalogue: Catalogue = load_catalogue(to_jsonable(study.processes))
    procs = [catalogue.get(s) for s in samples]  # unknown process -> ValueError here
    settings = {p.name: catalogue.pythia_settings(p, profile) for p in procs}
    for p in procs:
        check_settings(settings[p.name])  # names the setting Pythia rejects
    cuts = study.selection
    smear = study.smearing.widths()

    split_chunks = tuple((name, math.ceil(n / chunk_size)) for name, n in splits.items())
    layout = StoreLayout(
        samples=samples, chunk_size=chunk_size, split_chunks=split_chunks,
        feature_names=tuple(FEATURE_NAMES), cutflow_steps=CUTFLOW_STEPS,
        settings={
            "seed": seed, "profile": profile, "processes": {p.name: p.as_dict() for p in procs},
            "pythia_settings": {k: list(v) for k, v in settings.items()},
            "selection": cuts.as_dict(), "smearing": smear, "max_tries_factor": max_tries_factor,
            "pythia8mc": _pythia_version(), "generation_version": GENERATION_VERSION,
        },
    )
    seeds = pythia_seeds(seed, [(s, c) for s in samples for c in range(layout.n_chunks)])
    specs = tuple(
        ChunkSpec(sample=p.name, chunk=c, n_events=chunk_size, seed=seeds[(p.name, c)],
                  settings=settings[p.name], resonance=p.resonance, cuts=cuts, max_tries_factor=max_tries_factor,
                  tau_chains=p.tau_chains)
        for c in range(layout.n_chunks) for p in procs
    )
    return GenerationPlan(layout=layout, specs=specs, smearing=smear, seed=seed)


def _pythia_version() -> str:
    from importlib.metadata import version

    return version("pythia8mc")


def derive_arrays(p4: np.ndarray, vertex: np.ndarray, rng: np.random.Generator,
                  smearing: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Both feature sets from the same truth: unsmeared, and after smearing the pions."""
    from ..physics.features import compute_features
    from ..physics.smearing import smear_pions

    smeared = smear_pions(p4, rng, **smearing)
    return {
        "truth_p4": p4, "truth_vertex": vertex,
        "features": compute_features(p4, vertex),
        "features_smeared": compute_features(smeared, vertex),
    }


def generation_task(store_path: str, spec: ChunkSpec, study_seed: int, smearing: Mapping[str, float]) -> dict:
    """The Dask task: generate one chunk, derive features, write its region, mark it done."""
    truth = generate_chunk(spec)
    t0 = time.perf_counter()
    arrays = derive_arrays(truth.p4, truth.vertex, smearing_rng(study_seed, spec.sample, spec.chunk), smearing)
    EventStore(store_path).write_chunk(spec.sample, spec.chunk, arrays, {
        "cutflow": truth.cutflow, "pythia_seed": spec.seed, "sigma_gen": truth.sigma_gen_mb,
        "sigma_err": truth.sigma_err_mb, "seconds": truth.seconds + (time.perf_counter() - t0),
    })
    return {"sample": spec.sample, "chunk": spec.chunk, "cutflow": truth.cutflow,
            "seconds": truth.seconds + (time.perf_counter() - t0), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}


@dataclass(frozen=True)
class GenerationReport:
    """What a generation run did: per-sample cut flows and cross sections, and its speed."""

    store: str
    cutflow: Mapping[str, Mapping[str, int]]
    cross_section_mb: Mapping[str, tuple[float, float]]
    chunks_run: int
    chunks_skipped: int
    wall_seconds: float
    task_seconds: float
    events_tried: int = 0
    events_selected: int = 0
    slurm_jobs: tuple[str, ...] = ()      # SLURM jobs whose workers ran the tasks (empty off SLURM)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tried_per_task_second(self) -> float:
        return self.events_tried / self.task_seconds if self.task_seconds else float("nan")

    def format(self) -> str:
        lines = [f"event store: {self.store}",
                 f"chunks generated: {self.chunks_run}, already done: {self.chunks_skipped}"]
        for sample, flow in self.cutflow.items():
            tried = flow.get("tried", 0) or 1
            lines.append(f"cut flow {sample}:")
            lines += [f"  {step:<12} {n:>10d}  {n / tried:7.1%}" for step, n in flow.items()]
            sig, err = self.cross_section_mb[sample]
            lines.append(f"  cross section before selection: {sig * 1e9:.4g} +- {err * 1e9:.2g} pb")
        if self.chunks_run:
            lines.append(f"rate this run: {self.events_tried / self.wall_seconds:.1f} events tried/s wall, "
                         f"{self.tried_per_task_second:.1f} events tried/s per core "
                         f"({self.events_selected / self.wall_seconds:.1f} selected/s wall)")
        return "\n".join(lines)


def run_generation(plan: GenerationPlan, store_path: str, *, executor, overwrite: bool = False,
                   progress: bool = True) -> GenerationReport:
    """Create (or resume) the store and generate its missing chunks with ``executor``.

    ``executor`` is anything with hpcmix's executor ``map`` (``hpcmix.orchestrate.executor``:
    in this process, a local cluster or a site's CPU pool); generation imports no cluster code.
    """
    store = EventStore.create(store_path, plan.layout, overwrite=overwrite)
    done = {s: store.done_chunks(s, verify=True) for s in plan.layout.samples}
    todo = [spec for spec in plan.specs if not done[spec.sample][spec.chunk]]
    t0 = time.perf_counter()
    results = []
    if todo:
        keys = [f"generate-{s.sample}-{s.chunk}-{plan.layout.fingerprint()}" for s in todo]
        calls = [(store.path, spec, plan.seed, dict(plan.smearing)) for spec in todo]
        results = [res for _, res in executor.map(generation_task, calls, keys=keys, stage="generate",
                                                  progress=progress, unit="ev", per_task=plan.layout.chunk_size)]
    wall = time.perf_counter() - t0
    return GenerationReport(
        store=store.path,
        cutflow={s: store.cutflow(s) for s in plan.layout.samples},
        cross_section_mb={s: store.cross_section(s) for s in plan.layout.samples},
        chunks_run=len(results), chunks_skipped=len(plan.specs) - len(todo), wall_seconds=wall,
        task_seconds=sum(r["seconds"] for r in results),
        events_tried=sum(r["cutflow"]["tried"] for r in results),
        events_selected=sum(r["cutflow"][CUTFLOW_STEPS[-1]] for r in results),
        slurm_jobs=tuple(sorted({r["slurm_job_id"] for r in results if r.get("slurm_job_id")})),
    )
