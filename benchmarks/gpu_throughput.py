"""Training throughput of the study's network on this machine's accelerator (or CPU), per batch size.

    python benchmarks/gpu_throughput.py [--events 200000] [--epochs 3] [--batch 264 --batch 4096]
        [--precision float32 --precision mixed_bfloat16] [--steps-per-execution 1 --steps-per-execution 32]
        [--lr-scaling sqrt] [--json out.json]

The paper's network (``ClassifierSettings`` defaults) is trained with ``hpcmix.train.train_classifier``,
the code the train stage runs, on random inputs of the network's shape (25 features; the rate does not
depend on the values), for ``--epochs`` epochs per configuration. ``samples_per_second`` is what
``train_classifier`` measures: the training part of every epoch but the first (which compiles).
Any Keras backend: ``KERAS_BACKEND=jax`` on a machine with JAX and no TensorFlow.

The projected paper-size training time is 4 M training events (80 % of 2.5 M + 2.5 M) times 40
epochs (``estimates.training_epochs``, typical early stopping) or 100 (``max_epochs``) at each rate.
Put the measured rate of your GPU into your site's ``gpu.training_samples_per_second`` so that
``hpcmix run --dry-run`` estimates from it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

PAPER_TRAIN_EVENTS = 4_000_000
PAPER_EPOCHS = {"typical": 40, "max": 100}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000, help="events per configuration (20 %% validation)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per configuration; the first is not timed")
    ap.add_argument("--features", type=int, default=25)
    ap.add_argument("--batch", type=int, action="append", help="batch size (repeatable; default 264 and 4096)")
    ap.add_argument("--precision", action="append", help="float32 | mixed_float16 | mixed_bfloat16 (repeatable)")
    ap.add_argument("--steps-per-execution", type=int, action="append",
                    help="batches per compiled call (repeatable; default 1)")
    ap.add_argument("--lr-scaling", default="sqrt", help="learning-rate scaling of the larger batches")
    ap.add_argument("--hidden", default=None, help="hidden layers, e.g. 16,16 (default: the paper's)")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    if args.epochs < 2:
        ap.error("--epochs must be >= 2: the first epoch compiles and is not timed")

    import keras

    from hpcmix.train import train_classifier
    from hpcmix.train.device import detect_device
    from hpcmix.train.settings import ClassifierSettings

    base = ClassifierSettings(seed=1, max_epochs=args.epochs, early_stopping_patience=args.epochs,
                              lr_patience=args.epochs)
    if args.hidden:
        base = base.replace(hidden_layers=tuple(int(n) for n in args.hidden.split(",")))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.events, args.features)).astype(np.float32)
    y = rng.integers(0, 2, args.events).astype(np.int8)
    names = [f"x{i}" for i in range(args.features)]
    device = detect_device()
    rows = []
    for precision in args.precision or ["float32"]:
        for spe in args.steps_per_execution or [1]:
            for batch in args.batch or [base.batch_size, 4096]:
                s = base.replace(batch_size=batch, precision=precision, steps_per_execution=spe,
                                 lr_scaling="none" if batch == base.reference_batch_size else args.lr_scaling)
                with tempfile.TemporaryDirectory() as out:
                    r = train_classifier(x, y, feature_names=names, out_dir=out, settings=s, progress=False)
                rate = r.samples_per_second
                rows.append({"batch_size": batch, "precision": precision, "steps_per_execution": spe,
                             "learning_rate": s.effective_learning_rate, "samples_per_second": rate,
                             "device": r.device, "epochs": r.epochs_run,
                             "paper_hours": {k: PAPER_TRAIN_EVENTS * e / rate / 3600 for k, e in PAPER_EPOCHS.items()}})
                print(f"batch {batch:>6} {precision:<15} {spe:>3} steps/call {rate:>12,.0f} samples/s on {r.device}"
                      f"  paper run {rows[-1]['paper_hours']['typical']:.2f} h ({PAPER_EPOCHS['typical']} epochs)",
                      flush=True)
    result = {"backend": keras.backend.backend(), "keras": keras.__version__, "device": device.label,
              "machine": platform.machine(), "events": args.events, "epochs": args.epochs,
              "features": args.features, "hidden_layers": list(base.hidden_layers),
              "paper_train_events": PAPER_TRAIN_EVENTS, "paper_epochs": PAPER_EPOCHS, "configurations": rows}
    print("\n| batch | precision | steps per call | learning rate | samples/s | paper run, 40 epochs | 100 epochs |"
          "\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch_size']} | {r['precision']} | {r['steps_per_execution']} | {r['learning_rate']:.3g} | "
              f"{r['samples_per_second']:,.0f} | {r['paper_hours']['typical']:.2f} h | {r['paper_hours']['max']:.2f} h |")
    print(f"\n{result['device']}, Keras {result['keras']} on {result['backend']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
