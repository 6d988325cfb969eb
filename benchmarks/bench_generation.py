"""Generation task against a bare ``pythia.next()`` loop with the same settings and seed.

Both runs see the identical event sequence (same seed), so the difference is
exactly what hpcmix adds: following the taus, the selection, features,
smearing and writing the chunk to Zarr. Runs alternate (bare, task, bare, ...)
so machine noise hits both alike.

    python benchmarks/bench_generation.py --profile fast --events 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from hpcmix.generate.pythia_task import make_pythia
from hpcmix.generate.run import generation_task, plan_generation
from hpcmix.store import EventStore
from hpcmix.study import resolve_study


def bare_loop(settings, seed: int, n_tries: int) -> float:
    t0 = time.perf_counter()
    pythia = make_pythia(settings, seed)
    for _ in range(n_tries):
        pythia.next()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=["full", "fast"], default="fast")
    ap.add_argument("--events", type=int, default=2000, help="selected events per task")
    ap.add_argument("--sample", default="A")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    # one chunk per split; only the first (train) chunk is timed
    study = resolve_study(overrides={"components": [args.sample], "seed": 1, "generate": {
        "events": {"train": args.events, "template": args.events, "test": args.events},
        "chunk_size": args.events, "profile": args.profile}}, mixture=False)
    plan = plan_generation(study)
    spec = plan.specs[0]
    with tempfile.TemporaryDirectory() as tmp:
        store = f"{tmp}/bench.zarr"
        EventStore.create(store, plan.layout)
        bare, task, tries = [], [], 0
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = generation_task(store, spec, plan.seed, plan.smearing)
            task.append(time.perf_counter() - t0)
            tries = result["cutflow"]["tried"]
            bare.append(bare_loop(spec.settings, spec.seed, tries))
    t_bare, t_task = statistics.median(bare), statistics.median(task)
    print(f"profile={args.profile} sample={args.sample} selected={args.events} tried={tries} repeat={args.repeat}")
    print(f"bare next() loop : {t_bare:7.2f} s  {tries / t_bare:7.1f} events tried/s  (runs: {_fmt(bare)})")
    print(f"generation task  : {t_task:7.2f} s  {tries / t_task:7.1f} events tried/s  (runs: {_fmt(task)})")
    print(f"task / bare rate : {t_bare / t_task:.3f}  (goal >= 0.85)")


def _fmt(xs):
    return ", ".join(f"{x:.2f}" for x in xs)


if __name__ == "__main__":
    main()
