"""Benchmark: the reweighting stage's weight evaluation over a large store, on a local cluster against
one process, side by side.

    python benchmarks/bench_reweight.py [--events 1000000] [--chunk 10000] [--networks 1] [--workers 2]
                                        [--tf-threads N]

A store of ``--events`` source events with random features (the reference's 25 inputs among them)
is laid out and filled, a reweighting network of the paper's architecture is trained for one
epoch on 20,000 random events (the evaluation's speed does not depend on what it learnt), and the
stage's weight tasks (hpcmix.orchestrate.stages.reweight.weight_task: read one chunk's features,
evaluate every network, write the chunk's weights) run over every chunk twice: in this process
(the baseline: one task after another, TensorFlow with its own thread pool) and on a local Dask
cluster of ``--workers`` worker processes (one Dask thread each), as ``hpcmix run`` does. Both
are timed warm: TensorFlow imported and the networks loaded first (the time the workers take for
that is printed apart).
Printed: events per second of each and their ratio. ``--tf-threads N`` pins TensorFlow's thread
pools to N threads in this process and in the workers (TF_NUM_INTRAOP_THREADS, set before TensorFlow
loads; the workers inherit it): with 1, the baseline is one core and every worker one core.
docs/PERFORMANCE.md has the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

if "--tf-threads" in sys.argv:   # before TensorFlow loads, here and in the workers (they inherit it)
    _n = sys.argv[sys.argv.index("--tf-threads") + 1]
    os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = _n

import numpy as np  # noqa: E402


def build_store(path: str, n_events: int, chunk: int):
    from hpcmix.physics.features import FEATURE_NAMES
    from hpcmix.physics.selection import CUTFLOW_STEPS
    from hpcmix.store import EventStore, StoreLayout

    n_chunks = -(-n_events // chunk)
    layout = StoreLayout(samples=("H",), chunk_size=chunk, split_chunks=(("train", 1), ("template", 1),
                                                                          ("test", n_chunks - 2)),
                         feature_names=tuple(FEATURE_NAMES), cutflow_steps=CUTFLOW_STEPS,
                         settings={"benchmark": "bench_reweight", "events": n_events})
    store = EventStore.create(path, layout, overwrite=True)
    rng = np.random.default_rng(1)
    for c in range(layout.n_chunks):
        f = rng.standard_normal((chunk, len(FEATURE_NAMES))).astype(np.float32)
        arrays = {"truth_p4": np.zeros((chunk, 6, 4)), "truth_vertex": np.zeros((chunk, 2, 3)),
                  "features": f, "features_smeared": f}
        store.write_chunk("H", c, arrays, {"cutflow": dict.fromkeys(CUTFLOW_STEPS, chunk), "pythia_seed": c,
                                           "sigma_gen": 1.0, "sigma_err": 0.0, "seconds": 0.0})
    return store


def build_item(folder: str, networks: int, store_path: str):
    from hpcmix.orchestrate.stages.reweight import Network, Reweighting
    from hpcmix.physics.features import network_inputs
    from hpcmix.study.model import ReweightSettings
    from hpcmix.train.fit import train_classifier
    from hpcmix.train.settings import ClassifierSettings

    inputs = tuple(network_inputs("reference25"))
    settings = ClassifierSettings(max_epochs=1, seed=1)
    rng = np.random.default_rng(2)
    nets = []
    for m in range(networks):
        out = os.path.join(folder, f"net{m}")
        x = rng.standard_normal((20000, len(inputs))).astype(np.float32)
        y = (rng.random(20000) < 0.5).astype(np.int8)
        train_classifier(x, y, feature_names=list(inputs), out_dir=out, settings=settings.replace(seed=1 + m),
                         progress=False, class_names=("H", "H_alt"), loss="exponential")
        nets.append(Network(weight="bench", index=m, settings=settings, folder=out, address=f"net{m}",
                            events="bench"))
    w = ReweightSettings(name="bench", source="H", target="H_alt", smearing="detector", inputs=inputs,
                         loss="exponential", networks=networks, blind=None, classifier=settings)
    return Reweighting(settings=w, networks=tuple(nets), folder=folder, address="bench", events="bench")


def run(executor, item, store_path: str, label: str) -> float:
    from hpcmix.orchestrate.stages.reweight import provenance, weight_tasks
    from hpcmix.store import EventStore

    store = EventStore(store_path)
    address = f"bench-{label}"
    r = item.__class__(**{**item.__dict__, "address": address, "weights_address": address})
    store.create_weight("H", r.name, address, n_networks=len(r.networks), provenance=provenance(r, store_path, 1.0))
    tasks = weight_tasks([(r, store_path)])
    t0 = time.perf_counter()
    for _ in executor.run(tasks, stage="reweight", progress=False):
        pass
    seconds = time.perf_counter() - t0
    assert store.weight_done_chunks("H", r.name, address).all()
    return seconds


def warm(item) -> int:
    """Import TensorFlow and load the networks (what a worker's first chunk pays once)."""
    from hpcmix.orchestrate.stages.reweight import weights_of

    weights_of(item, np.zeros((1, len(item.settings.inputs)), dtype=np.float32))
    return os.getpid()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=10_000)
    ap.add_argument("--networks", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--folder", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--tf-threads", type=int, default=None, help="TensorFlow threads per process (default: its own)")
    args = ap.parse_args()
    from hpcmix.orchestrate.executor import InProcess, site_executor

    folder = args.folder or tempfile.mkdtemp(prefix="bench-reweight-")
    store_path = os.path.join(folder, "events.zarr")
    t0 = time.perf_counter()
    store = build_store(store_path, args.events, args.chunk)
    n = store.layout.n_events
    print(f"store: {n} events in {store.layout.n_chunks} chunks of {args.chunk} ({time.perf_counter() - t0:.0f} s)")
    item = build_item(folder, args.networks, store_path)
    warm(item)
    one = run(InProcess(), item, store_path, "inprocess")
    threads = f"TensorFlow threads {args.tf_threads}" if args.tf_threads else "TensorFlow's own threads"
    print(f"in this process ({threads}): {one:.1f} s, {n / one:,.0f} events/s ({args.networks} network(s))")
    ex = site_executor("local", cpu={"n_workers": args.workers, "threads_per_worker": 1, "dashboard_address": ":0"},
                       gpu=False)
    try:
        t0 = time.perf_counter()
        ex.pools.cpu.client.run(warm, item)   # every worker once, outside the timing
        print(f"workers warmed (TensorFlow imported, networks loaded) in {time.perf_counter() - t0:.1f} s")
        many = run(ex, item, store_path, "cluster")
    finally:
        ex.close()
    print(f"local cluster ({args.workers} workers): {many:.1f} s, {n / many:,.0f} events/s; "
          f"speed-up {one / many:.2f} x over one process")


if __name__ == "__main__":
    main()
