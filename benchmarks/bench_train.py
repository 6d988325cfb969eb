"""Training throughput (samples/s) of the paper's classifier on CPU.

    python benchmarks/bench_train.py [--events 40000] [--reps 3] [--json out.json]

The network is the paper's (25 -> 500 -> 1000 -> 100 -> softmax(2) with
batch norm and dropout, ``build_model`` with the default settings), trained
on random standardised inputs (throughput does not depend on the values).
Measured side by side, interleaved (A B C A B C ...) so that machine load
hits every configuration alike, after a warm-up epoch (tracing excluded).
Each configuration reports the median and the best of ``--reps`` one-epoch
fits (wall clock) and samples per CPU-second (process time, less sensitive to
other jobs on a shared machine):

- ``train@<default batch>``: the configured batch size (264, the reference's);
- ``train@1024``: the baseline.  Same model, same data, a 4x larger batch.
  The ratio default/1024 is what the default batch size costs in wall time
  per epoch on this machine: the figure that decides whether a larger batch
  (with a retuned learning rate) is worth it for the 4 M-event paper run;
- ``inference``: forward pass only (``predict_on_batch``, 65536 rows), the
  ceiling any training configuration could approach;
- ``ratio@<default batch>``: a likelihood-ratio network (the reweighting stage's and the ratio
  estimators', ``build_ratio_model`` with ``--ratio-loss``, one linear output, class-balanced
  per-event weights) at the default batch: its cost against the classifier's.

The device is pinned to the CPU (``CUDA_VISIBLE_DEVICES=""``) before
TensorFlow is imported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

PAPER_TRAIN_EVENTS = 4_000_000  # 80 % of the reference's 2.5 M + 2.5 M


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=40_000, help="training events per epoch")
    ap.add_argument("--features", type=int, default=25)
    ap.add_argument("--reps", type=int, default=3, help="timed epochs per configuration")
    ap.add_argument("--baseline-batch", type=int, default=1024)
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--ratio-loss", default="exponential", help="the likelihood-ratio network's loss")
    args = ap.parse_args(argv)

    import keras
    import tensorflow as tf

    from hpcmix.study import resolve_study
    from hpcmix.train.device import detect_device
    from hpcmix.train.losses import class_balanced_weights
    from hpcmix.train.model import build_model, build_ratio_model

    settings = resolve_study().classifier  # defaults < dask config; seed = the study seed
    keras.utils.set_random_seed(settings.seed)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.events, args.features)).astype(np.float32)
    y = rng.integers(0, 2, args.events).astype(np.int32)

    configs = {
        f"train@{settings.batch_size}": settings.batch_size,
        f"train@{args.baseline_batch}": args.baseline_batch,
    }
    models = {name: build_model(args.features, settings) for name in configs}
    infer_model = build_model(args.features, settings)
    ratio_name = f"ratio@{settings.batch_size}"
    ratio_model = build_ratio_model(args.features, settings, loss=args.ratio_loss)
    weights = class_balanced_weights(y).astype(np.float32)
    infer_bs = settings.predict_batch_size

    cpu_seconds: dict[str, float] = {}

    def timed(name: str, work) -> float:
        t0, c0 = time.perf_counter(), time.process_time()
        work()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        cpu_seconds[name] = cpu_seconds.get(name, 0.0) + cpu
        return args.events / wall

    def train_epoch(name: str) -> float:
        return timed(name, lambda: models[name].fit(
            x, y, batch_size=configs[name], epochs=1, shuffle=True, verbose=0))

    def ratio_epoch() -> float:
        return timed(ratio_name, lambda: ratio_model.fit(
            x, y, sample_weight=weights, batch_size=settings.batch_size, epochs=1, shuffle=True, verbose=0))

    def infer_pass() -> float:
        def work():
            for start in range(0, args.events, infer_bs):
                infer_model.predict_on_batch(x[start : start + infer_bs])
        return timed("inference", work)

    # warm-up: trace every function once
    for name in configs:
        train_epoch(name)
    ratio_epoch()
    infer_pass()
    infer_pass()

    cpu_seconds.clear()
    samples: dict[str, list[float]] = {name: [] for name in configs}
    samples["inference"] = []
    samples[ratio_name] = []
    for _ in range(args.reps):
        for name in configs:
            samples[name].append(train_epoch(name))
        samples[ratio_name].append(ratio_epoch())
        samples["inference"].append(infer_pass())

    med = {name: statistics.median(v) for name, v in samples.items()}
    best = {name: max(v) for name, v in samples.items()}
    per_cpu_s = {name: args.events * args.reps / cpu_seconds[name] for name in samples}
    default_name, base_name = list(configs)
    result = {
        "device": detect_device().label,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "events": args.events,
        "features": args.features,
        "reps": args.reps,
        "samples_per_second": {k: round(v) for k, v in med.items()},
        "best_samples_per_second": {k: round(v) for k, v in best.items()},
        "samples_per_cpu_second": {k: round(v) for k, v in per_cpu_s.items()},
        "all_samples_per_second": {k: [round(s) for s in v] for k, v in samples.items()},
        "ratio_default_over_baseline": med[default_name] / med[base_name],
        "ratio_default_over_baseline_best": best[default_name] / best[base_name],
        "ratio_default_over_baseline_cpu": per_cpu_s[default_name] / per_cpu_s[base_name],
        "ratio_default_over_inference": med[default_name] / med["inference"],
        "ratio_loss": args.ratio_loss,
        "ratio_network_over_classifier": med[ratio_name] / med[default_name],
        "ratio_network_over_classifier_cpu": per_cpu_s[ratio_name] / per_cpu_s[default_name],
        "paper_epoch_minutes_default": PAPER_TRAIN_EVENTS / med[default_name] / 60,
        "paper_epoch_minutes_baseline": PAPER_TRAIN_EVENTS / med[base_name] / 60,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
