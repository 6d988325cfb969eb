"""Train the H-vs-A classifier (or a K-class one) from feature arrays; write and reload its artefacts.

``train_classifier(x, y, feature_names=..., out_dir=...)`` takes float32
features ``(n_events, n_features)`` and labels (0 = H, 1 = A; 0..K-1 for the
``class_names`` of a K-class network), holds out the
last ``validation_fraction`` of a seeded shuffle for validation, standardises
with statistics of the training part only, trains with ReduceLROnPlateau and
EarlyStopping (best weights restored), and writes to ``out_dir``:

- ``classifier.keras``: the Keras model (softmax over H, A);
- ``standardiser.json``: mean/std per feature and the feature names;
- ``history.json``: loss, accuracy, validation loss/accuracy and learning rate per epoch;
- ``metrics.json``: ROC AUC on held-out events, sizes, device, epochs, samples/s, settings;
- ``ratio.json`` (``loss`` given): the likelihood-ratio loss and its omega, for ``load_ratio_network``.

With ``loss`` (a pair of ``hpcmix.train.losses``) the network ends in one linear unit u(x) trained
on class-balanced (per-event weighted) samples so that u estimates omega(p_1 / p_0): a density-ratio
network instead of a classifier; its metrics add the closure of r = omega^-1(u) on held-out events.

``predict(out_dir, x)`` / ``load_classifier(out_dir).predict(x)`` give the
probability of A (class 1), in batches, from raw (unstandardised) features;
``Classifier.predict_proba(x)`` gives every class's (n_events, K).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import keras
import numpy as np

from .device import Device, check_gpu, detect_device
from .metrics import pair_score, roc_auc
from .model import build_model
from .settings import ClassifierSettings
from .split import split_indices
from .standardise import CHUNK_ROWS, Standardiser

log = logging.getLogger(__name__)

MODEL_FILE = "classifier.keras"
STANDARDISER_FILE = "standardiser.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
RATIO_FILE = "ratio.json"
RATIO_FORMAT = 1


@dataclass(frozen=True)
class TrainingResult:
    """What ``train_classifier`` wrote and measured."""

    out_dir: str
    model_path: str
    standardiser_path: str
    history_path: str
    metrics_path: str
    roc_auc: float  # on x_test/y_test when given, else on the validation events (K > 2: class 1 vs class 0)
    roc_auc_sample: str  # "test" or "validation"
    roc_auc_validation: float
    n_train: int
    n_val: int
    n_test: int
    device: str  # "GPU:0 (<name>)" or "CPU"
    epochs_run: int
    best_epoch: int  # 1-based epoch whose weights were kept (lowest val_loss)
    samples_per_second: float  # training samples per second, first epoch excluded when >1
    train_seconds: float
    # K > 2: {class k: ROC AUC of s_k / (s_k + s_0) between classes k and 0}, on the roc_auc_sample
    roc_auc_vs_first: dict | None = None
    # ratio networks: the likelihood-ratio loss, and the closure of r on the roc_auc_sample (both 1 if exact)
    loss: str | None = None
    closure: dict | None = None
    # what SLURM allocated and what the backend saw (train/device.py: check_gpu)
    gpu_check: dict | None = None


# ---------------------------------------------------------------------------
# callbacks
# ---------------------------------------------------------------------------
class EpochTimer(keras.callbacks.Callback):
    """Wall time of the training part of each epoch (validation excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._t0: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def _close(self) -> None:
        if self._t0 is not None:
            self.seconds.append(time.perf_counter() - self._t0)
            self._t0 = None

    def on_test_begin(self, logs=None):  # validation starts: the training part is over
        self._close()

    def on_epoch_end(self, epoch, logs=None):
        self._close()


def make_callbacks(settings: ClassifierSettings, *, verbose: int = 0) -> list[keras.callbacks.Callback]:
    """ReduceLROnPlateau and EarlyStopping on ``val_loss`` as ``settings`` says.

    The learning rate is multiplied by ``lr_factor`` after ``lr_patience``
    epochs without validation-loss improvement (floor ``lr_min``); training
    stops after ``early_stopping_patience`` such epochs and the weights of the
    best epoch are restored (also when ``max_epochs`` is reached first).
    """
    return [
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss",
            factor=settings.lr_factor,
            patience=settings.lr_patience,
            min_lr=settings.lr_min,
            verbose=verbose,
        ),
        keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=settings.early_stopping_patience,
            restore_best_weights=True,
            verbose=verbose,
        ),
        keras.callbacks.TerminateOnNaN(),
    ]


# ---------------------------------------------------------------------------
# input checks and the split
# ---------------------------------------------------------------------------
def _check_inputs(x, y, feature_names, class_names=("H", "A"), what: str = "training set"
                  ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if not hasattr(x, "shape") or len(x.shape) != 2:
        raise ValueError(f"x must be a 2-d array (n_events, n_features), got {getattr(x, 'shape', x)!r}")
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} events but y has {y.shape[0]} labels")
    x = np.asarray(x)
    names = tuple(str(n) for n in feature_names)
    if len(names) != x.shape[1]:
        raise ValueError(f"x has {x.shape[1]} features but {len(names)} feature names were given")
    labels = np.unique(y)
    K = len(class_names)
    classes = [f"{k} ({c})" for k, c in enumerate(class_names)]
    if not np.all(np.isin(labels, np.arange(K))):
        raise ValueError(f"labels must be {' or '.join(classes)}, got {labels[:10]}")
    if labels.size < K:
        raise ValueError(f"the {what} must hold events of every class, {' and '.join(classes)}; "
                         f"got labels {labels.tolist()}")
    return x, y.astype(np.int32), names


def _aucs(y, proba) -> tuple[float, dict | None]:
    """ROC AUC of class 1 vs 0 (P(1) for two classes, s_1 / (s_1 + s_0) for K, u for a ratio network),
    and of every class vs 0."""
    K = proba.shape[1]
    if K == 1:
        return roc_auc(y, proba[:, 0]), None
    if K == 2:
        return roc_auc(y, proba[:, 1]), None
    per = {}
    for k in range(1, K):
        keep = (y == 0) | (y == k)
        per[k] = roc_auc((y[keep] == k).astype(np.int8), pair_score(proba[keep], k, 0))
    return per[1], per


def _closure(pair, u, y, w=None) -> dict:
    """Mean of r over class-0 events and of 1 / r over class-1 events, with errors: both 1 for a true ratio
    (weighted means with per-event weights ``w``)."""
    from ..stats.ratios import ratio_closure

    r = pair.ratio(u)
    if w is None:
        return ratio_closure(r[y == 0], r[y == 1])
    return ratio_closure(r[y == 0], r[y == 1], w_ref=w[y == 0], w_k=w[y == 1])


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------
def train_classifier(
    x: np.ndarray,
    y: np.ndarray,
    *,
    feature_names: Sequence[str],
    out_dir: str | os.PathLike,
    settings: ClassifierSettings,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    progress: bool = True,
    class_names: Sequence[str] = ("H", "A"),
    loss: str | None = None,
    weights: np.ndarray | None = None,
    test_weights: np.ndarray | None = None,
) -> TrainingResult:
    """Train the classifier on ``x`` (n_events, n_features), labels ``y`` (0 = H, 1 = A).

    ``class_names``: one name per label (len K >= 2: a K-way softmax); the default is the paper's pair.
    ``loss``: a likelihood-ratio loss name (two classes): train a ratio network u ~ omega(p_1 / p_0)
    instead, on ``weights`` (per event, default 1) balanced so each class weighs the same; its closure
    on the test events is weighted by ``test_weights`` when given.

    ``settings`` is the study's (``Study.classifier``, seed filled in).  The ROC
    AUC in ``metrics.json`` is computed on ``x_test``/``y_test`` when given
    (held-out events never seen in training), else on the validation events
    (held out from the gradient updates but used to pick the best epoch).
    ``progress`` prints one line per epoch and the device line.
    """
    if settings.seed is None:
        raise ValueError("settings.seed is None: give the classifier a seed (a study fills in its own), "
                         "e.g. settings.replace(seed=1)")
    class_names = tuple(str(c) for c in class_names)
    if len(class_names) < 2 or len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names must be at least two distinct names, got {list(class_names)}")
    pair = None
    if loss is not None:
        from .losses import get_loss

        pair = get_loss(loss)
        if len(class_names) != 2:
            raise ValueError(f"a likelihood-ratio loss compares two samples, got classes {list(class_names)}")
    x, y, names = _check_inputs(x, y, feature_names, class_names)
    if (weights is not None or test_weights is not None) and pair is None:
        raise ValueError("event weights are used by the likelihood-ratio losses only; give loss=... or no weights")
    if test_weights is not None and x_test is None:
        raise ValueError("test_weights weight the test events: give x_test and y_test too")
    wt = None if test_weights is None else np.asarray(test_weights, dtype=float).reshape(-1)
    if wt is not None and wt.shape != np.shape(y_test):
        raise ValueError(f"{wt.size} test weights for {np.size(y_test)} test events")
    if (x_test is None) != (y_test is None):
        raise ValueError("give both x_test and y_test, or neither")
    # on a SLURM GPU job, stop (or warn) before training on the CPU a GPU was allocated for
    device = detect_device()
    gpu_check = check_gpu(device)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)

    keras.utils.set_random_seed(settings.seed)
    _say(progress, f"hpcmix.train: training on {device.label} (keras backend {device.backend})")

    # split, then standardise the two parts into fresh float32 arrays
    train_idx, val_idx = split_indices(x.shape[0], settings.validation_fraction, settings.seed)
    x_train = x[train_idx].astype(np.float32, copy=False)  # fancy indexing copies
    y_train = y[train_idx]
    x_val = x[val_idx].astype(np.float32, copy=False)
    y_val = y[val_idx]
    if not np.all(np.isfinite(x_val)):
        raise ValueError("non-finite values in the features")
    standardiser = Standardiser.fit(x_train, names)
    standardiser.transform(x_train, out=x_train)
    standardiser.transform(x_val, out=x_val)

    fit_weights = {}
    if pair is not None:
        from .losses import class_balanced_weights
        from .model import build_ratio_model

        w = None if weights is None else np.asarray(weights, dtype=float).reshape(-1)
        if w is not None and w.shape != y.shape:
            raise ValueError(f"{w.size} weights for {y.size} events")
        w_train = class_balanced_weights(y_train, None if w is None else w[train_idx]).astype(np.float32)
        w_val = class_balanced_weights(y_val, None if w is None else w[val_idx]).astype(np.float32)
        fit_weights = {"sample_weight": w_train}
        validation = (x_val, y_val, w_val)
        model = build_ratio_model(len(names), settings, loss=pair.name)
    else:
        validation = (x_val, y_val)
        model = build_model(len(names), settings, n_classes=len(class_names))
    timer = EpochTimer()
    callbacks = make_callbacks(settings, verbose=1 if progress else 0) + [timer]
    t0 = time.perf_counter()
    with device.scope():
        history = model.fit(
            x_train,
            y_train,
            batch_size=settings.batch_size,
            epochs=settings.max_epochs,
            validation_data=validation,
            shuffle=True,
            **fit_weights,
            callbacks=callbacks,
            verbose=2 if progress else 0,
        )
    train_seconds = time.perf_counter() - t0
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    epochs_run = len(hist.get("loss", []))
    val_loss = hist.get("val_loss", [])
    best_epoch = int(np.nanargmin(val_loss)) + 1 if val_loss else epochs_run
    epoch_seconds = timer.seconds[:epochs_run]
    timed = epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds
    samples_per_second = float(len(y_train) * len(timed) / sum(timed)) if timed else float("nan")

    with device.scope():
        p_val = _predict_standardised(model, x_val, settings.predict_batch_size)
    auc_val, per_val = _aucs(y_val, p_val)
    n_test = 0
    if x_test is not None:
        x_test, y_test, _ = _check_inputs(x_test, y_test, names, class_names, "test set")
        n_test = int(len(y_test))
        with device.scope():
            p_test = _predict_raw(model, standardiser, x_test, settings.predict_batch_size)
        (auc, per), auc_sample = _aucs(y_test, p_test), "test"
    else:
        auc, per, auc_sample = auc_val, per_val, "validation"
    # on the roc_auc_sample, as the AUC
    if pair is None:
        closure = None
    elif n_test:
        closure = _closure(pair, p_test[:, 0], y_test, wt)
    else:   # the events' own weights (not the class-balanced ones of the loss)
        closure = _closure(pair, p_val[:, 0], y_val, None if weights is None else w[val_idx])
    _say(
        progress,
        f"hpcmix.train: {epochs_run} epochs (best {best_epoch}) on {device.label}, "
        f"{samples_per_second:,.0f} samples/s, ROC AUC {auc:.4f} ({auc_sample})",
    )

    model_path = os.path.join(out_dir, MODEL_FILE)
    model.save(model_path)
    standardiser_path = standardiser.save(os.path.join(out_dir, STANDARDISER_FILE))
    history_path = _write_json(
        os.path.join(out_dir, HISTORY_FILE),
        {"epochs": list(range(1, epochs_run + 1)), "epoch_train_seconds": epoch_seconds, **hist},
    )
    result_fields = dict(
        roc_auc=float(auc),
        roc_auc_sample=auc_sample,
        roc_auc_validation=float(auc_val),
        n_train=int(len(y_train)),
        n_val=int(len(y_val)),
        n_test=n_test,
        device=device.label,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        samples_per_second=samples_per_second,
        train_seconds=float(train_seconds),
        roc_auc_vs_first=None if per is None else {class_names[k]: float(v) for k, v in per.items()},
        loss=None if pair is None else pair.name,
        closure=closure,
        gpu_check=gpu_check,
    )
    if pair is not None:
        _write_json(os.path.join(out_dir, RATIO_FILE), {"format": RATIO_FORMAT, "loss": pair.name,
                                                         "omega": pair.omega, "class_names": list(class_names)})
    metrics_path = _write_json(
        os.path.join(out_dir, METRICS_FILE),
        {
            **result_fields,
            "n_train_by_class": {c: int((y_train == k).sum()) for k, c in enumerate(class_names)},
            "class_names": list(class_names),
            "feature_names": list(names),
            "constant_features": list(standardiser.constant),
            "settings": settings.to_dict(),
            "effective_learning_rate": settings.effective_learning_rate,
            "keras_backend": device.backend,
            "versions": _versions(),
        },
    )
    return TrainingResult(
        out_dir=out_dir,
        model_path=model_path,
        standardiser_path=standardiser_path,
        history_path=history_path,
        metrics_path=metrics_path,
        **result_fields,
    )


# ---------------------------------------------------------------------------
# prediction
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Classifier:
    """A trained model with its standardiser: ``predict(x)`` is P(A) from raw features."""

    model: keras.Model
    standardiser: Standardiser
    batch_size: int = 65536

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.standardiser.names

    @property
    def n_classes(self) -> int:
        return int(self.model.outputs[0].shape[-1])

    def predict_proba(self, x: np.ndarray, *, feature_names: Sequence[str] | None = None) -> np.ndarray:
        """Every class's probability (float32, shape (n_events, K)) for raw features ``x``."""
        self.standardiser.check_names(feature_names)
        if not hasattr(x, "shape") or len(x.shape) != 2:
            raise ValueError(f"x must be a 2-d array (n_events, n_features), got {getattr(x, 'shape', x)!r}")
        return _predict_raw(self.model, self.standardiser, x, self.batch_size)

    def predict(self, x: np.ndarray, *, feature_names: Sequence[str] | None = None) -> np.ndarray:
        """Probability of A (class 1; float32, shape (n_events,)) for raw features ``x``."""
        return self.predict_proba(x, feature_names=feature_names)[:, 1]


@dataclass(frozen=True)
class RatioNetwork:
    """A trained likelihood-ratio network: ``output(x)`` is u ~ omega(r), ``ratio(x)`` is r = p_1 / p_0."""

    model: keras.Model
    standardiser: Standardiser
    loss: str
    class_names: tuple[str, str]
    batch_size: int = 65536

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.standardiser.names

    @property
    def pair(self):
        from .losses import get_loss

        return get_loss(self.loss)

    def output(self, x: np.ndarray, *, feature_names: Sequence[str] | None = None) -> np.ndarray:
        """u(x) (float32, shape (n_events,)) for raw features ``x``."""
        self.standardiser.check_names(feature_names)
        if not hasattr(x, "shape") or len(x.shape) != 2:
            raise ValueError(f"x must be a 2-d array (n_events, n_features), got {getattr(x, 'shape', x)!r}")
        return _predict_raw(self.model, self.standardiser, x, self.batch_size)[:, 0]

    def ratio(self, x: np.ndarray, *, feature_names: Sequence[str] | None = None) -> np.ndarray:
        """r(x) = omega^-1(u(x)), clipped to [1 / RATIO_CLIP, RATIO_CLIP] (float64)."""
        return self.pair.ratio(self.output(x, feature_names=feature_names))


def load_ratio_network(model_dir: str | os.PathLike, *, batch_size: int | None = None) -> RatioNetwork:
    """Load a network ``train_classifier(..., loss=...)`` wrote (``ratio.json`` names its loss)."""
    model_dir = os.fspath(model_dir)
    path = os.path.join(model_dir, RATIO_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{model_dir} holds no likelihood-ratio network (no {RATIO_FILE}): it is a classifier; "
                         "load it with load_classifier")
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != RATIO_FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r}, this hpcmix reads {RATIO_FORMAT}; retrain the network")
    # prediction only: no optimizer or loss object is needed
    model = keras.saving.load_model(os.path.join(model_dir, MODEL_FILE), compile=False)
    standardiser = Standardiser.load(os.path.join(model_dir, STANDARDISER_FILE))
    return RatioNetwork(model=model, standardiser=standardiser, loss=str(meta["loss"]),
                        class_names=tuple(meta["class_names"]),
                        batch_size=int(batch_size or ClassifierSettings().predict_batch_size))


def load_classifier(model_dir: str | os.PathLike, *, batch_size: int | None = None) -> Classifier:
    """Load ``classifier.keras`` and ``standardiser.json`` from ``model_dir``."""
    model_dir = os.fspath(model_dir)
    if os.path.exists(os.path.join(model_dir, RATIO_FILE)):
        raise ValueError(f"{model_dir} holds a likelihood-ratio network, not a classifier: load it with "
                         "load_ratio_network")
    model = keras.saving.load_model(os.path.join(model_dir, MODEL_FILE))
    standardiser = Standardiser.load(os.path.join(model_dir, STANDARDISER_FILE))
    if batch_size is None:
        batch_size = ClassifierSettings().predict_batch_size
    return Classifier(model=model, standardiser=standardiser, batch_size=int(batch_size))


def predict(
    model_dir: str | os.PathLike,
    x: np.ndarray,
    *,
    feature_names: Sequence[str] | None = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """Probability of A for raw features ``x``, from the artefacts in ``model_dir``.

    Loads the model each call: to predict several arrays, keep
    ``load_classifier(model_dir)`` and call its ``predict``.
    """
    return load_classifier(model_dir, batch_size=batch_size).predict(x, feature_names=feature_names)


def _predict_standardised(model: keras.Model, z: np.ndarray, batch_size: int) -> np.ndarray:
    """(n_events, K) class probabilities of standardised features."""
    out = np.empty((z.shape[0], int(model.outputs[0].shape[-1])), dtype=np.float32)
    for start in range(0, z.shape[0], batch_size):
        chunk = z[start : start + batch_size]
        p = model.predict_on_batch(chunk)
        out[start : start + len(chunk)] = np.asarray(p)
    return out


def _predict_raw(model: keras.Model, standardiser: Standardiser, x, batch_size: int) -> np.ndarray:
    """Standardise ``x`` in row blocks (bounded memory) and predict each block: (n_events, K)."""
    n = x.shape[0]
    out = np.empty((n, int(model.outputs[0].shape[-1])), dtype=np.float32)
    block = max(batch_size, CHUNK_ROWS)
    for start in range(0, n, block):
        z = standardiser.transform(np.asarray(x[start : start + block]))
        out[start : start + len(z)] = _predict_standardised(model, z, batch_size)
    return out


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _say(progress: bool, message: str) -> None:
    log.info(message)
    if progress:
        print(message, file=sys.stderr, flush=True)


def _write_json(path: str, obj) -> str:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, allow_nan=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def _versions() -> dict[str, str]:
    v = {"keras": keras.__version__, "numpy": np.__version__}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        v["tensorflow"] = tf.__version__
    return v


__all__ = [
    "Classifier",
    "Device",
    "RatioNetwork",
    "EpochTimer",
    "TrainingResult",
    "load_classifier",
    "load_ratio_network",
    "make_callbacks",
    "predict",
    "split_indices",
    "train_classifier",
]
