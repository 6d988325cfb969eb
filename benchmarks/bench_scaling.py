"""Generation scaling (1 vs 2 local workers) and Dask scheduler overhead per task.

    python benchmarks/bench_scaling.py --chunks 12 --chunk-size 300

Both runs generate the same chunks (same plan and seeds) into fresh stores.
Scheduler overhead is measured from Dask's task stream: per worker, the idle
gaps between one task's end and the next task's start, as a share of the
tasks' compute time (start-up before the first task and the tail after the
last are not scheduler overhead and are excluded).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from hpcmix.generate.run import plan_generation, run_generation
from hpcmix.orchestrate.executor import site_executor
from _study import generation_study, split_events  # benchmarks/_study.py (run as a script)


def run(n_workers: int, plan, path: str) -> tuple[float, float, float]:
    from distributed import get_task_stream

    executor = site_executor("local", cpu={"n_workers": n_workers, "dashboard_address": ":0"}, gpu=False)
    client = executor.pools.cpu.client
    try:
        client.wait_for_workers(n_workers)
        with get_task_stream(client) as ts:
            t0 = time.perf_counter()
            run_generation(plan, path, executor=executor, progress=False)
            wall = time.perf_counter() - t0
        gaps, compute = 0.0, 0.0
        by_worker: dict[str, list[tuple[float, float]]] = {}
        for rec in ts.data:
            for ss in rec["startstops"]:
                if ss["action"] == "compute":
                    by_worker.setdefault(rec["worker"], []).append((ss["start"], ss["stop"]))
        for spans in by_worker.values():
            spans.sort()
            compute += sum(b - a for a, b in spans)
            gaps += sum(max(0.0, spans[i + 1][0] - spans[i][1]) for i in range(len(spans) - 1))
        return wall, compute, gaps
    finally:
        executor.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=12)
    ap.add_argument("--chunk-size", type=int, default=300)
    ap.add_argument("--profile", default="fast")
    args = ap.parse_args()
    events = split_events(args.chunks * args.chunk_size, args.chunk_size)
    plan = plan_generation(generation_study("A", events, chunk_size=args.chunk_size, profile=args.profile, seed=3))
    assert plan.n_tasks == args.chunks
    with tempfile.TemporaryDirectory() as tmp:
        w1, c1, g1 = run(1, plan, f"{tmp}/one.zarr")
        w2, c2, g2 = run(2, plan, f"{tmp}/two.zarr")
    print(f"{args.chunks} chunks x {args.chunk_size} selected events, profile {args.profile}")
    print(f"1 worker : {w1:6.1f} s wall, {c1:6.1f} s in tasks, gaps between tasks {g1:.3f} s "
          f"({g1 / c1:.2%} of task time, {g1 / max(args.chunks - 1, 1) * 1e3:.1f} ms per task)")
    print(f"2 workers: {w2:6.1f} s wall, {c2:6.1f} s in tasks, gaps between tasks {g2:.3f} s "
          f"({g2 / c2:.2%} of task time)")
    print(f"speed-up 2 vs 1 workers: {w1 / w2:.2f}x (goal >= 1.8x); scheduler overhead goal < 1 %")


if __name__ == "__main__":
    main()
