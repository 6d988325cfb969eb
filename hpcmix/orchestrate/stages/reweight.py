"""Reweighting stage: networks that learn r = f_target / f_source between two samples of one process
outside a blinded region, and the weight r of every source event, written into the event store.

Per named weight (a job file's ``reweight:`` section, docs/stages/reweight.md):

1. M likelihood-ratio networks (seeds s, s + 1, ...) on the train split, source as label 0 and target
   as label 1, the events inside the blinded region left out: one task each on the training pool;
2. the weights of every source event (all splits), chunk by chunk on the CPU pool, into the store at
   ``<source>/weights/<name>/<weights address>`` (one column per network; network 0 is the nominal).
   A network trained on control-region events learns f_target(x | C) / f_source(x | C); the stored
   weight is that times P_target(C) / P_source(C) (the control-region shares of the train split), so
   it estimates the full ratio f_target / f_source and its mean over source events is 1;
3. one summary task on held-out events: the closure of r, the share of events in the blinded region
   before and after, the effective sample sizes, the spread between the networks and (``two_sample_test``)
   the weighted ROC AUC of fresh networks telling target from source, before and after reweighting,
   and per feature the histograms and chi2 / ndf of source, reweighted source and target.

The record (``done.json``, written last) holds the summary; a rerun with the weights complete in the
store skips the stage. The weights' address (their place in the store, what templates and toys
take) covers what the values depend on: the event store and the networks; the record's adds the
checks' settings (``two_sample_test``) and their version (``SUMMARY_VERSION``), so turning the checks
off or on, or a new check, recomputes no network and no weight.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ...errors import HpcmixError
from ...study.model import SMEARED, ReweightSettings, Study
from ...train.settings import ClassifierSettings
from ..executor import Task
from ..record import StageRecord, address, is_done

NAME = "reweight"
#: bump when what the stage computes changes (the training set, the weights, the summary)
VERSION = 1
#: bump when the summary's checks change (only the record's address moves: no network or weight is redone;
#: 2: per-feature histograms and chi2 / ndf in the control and blinded regions; 3: bins that ties
#: leave below FEATURE_MIN_PER_BIN merged into their neighbours)
SUMMARY_VERSION = 3
#: the fresh two-sample-test networks take the weight's seed plus this (never a reweighting network's)
TWO_SAMPLE_SEED_OFFSET = 1000
#: fewest training events per sample once the blinded region is removed
MIN_TRAINING_EVENTS = 10
#: the per-feature comparisons' bins hold at least this many target events
FEATURE_MIN_PER_BIN = 10


class ReweightError(HpcmixError, ValueError):
    """A reweighting that cannot run on this store's events (checked before any of its tasks)."""


def _network_slice(settings: ClassifierSettings) -> dict:
    out = settings.address_dict()
    out.pop("output_batch_norm")   # a ratio network's output u has no batch norm
    return out


@dataclass(frozen=True)
class Network:
    """One reweighting network: where it goes and what its address covers."""

    weight: str                       # the weight's name
    index: int                        # m: its column in the stored weights
    settings: ClassifierSettings      # the weight's classifier with seed + m
    folder: str
    address: str
    events: str                       # the event store's address


@dataclass(frozen=True)
class Reweighting:
    """One named weight: its networks, its record folder and address, and the weights' own address
    (their place in the store, what templates and toys take as input)."""

    settings: ReweightSettings
    networks: tuple[Network, ...]
    folder: str
    address: str                      # the record's: the weights' address and the checks' settings
    events: str                       # the event store's address
    weights_address: str = ""         # the stored weights': the event store and the networks

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def weight_inputs(self) -> dict:
        return {"events": self.events, "networks": [n.address for n in self.networks]}

    @property
    def inputs(self) -> dict:
        return {**self.weight_inputs, "weights": self.weights_address}

    def weight_slice(self) -> dict:
        return self.settings.settings_slice()

    def slice(self) -> dict:
        return {**self.weight_slice(), "two_sample_test": self.settings.two_sample_test,
                "summary_version": SUMMARY_VERSION}


def _network_item(w: ReweightSettings, m: int, *, events: str, root: str) -> Network:
    settings = w.classifier.replace(seed=w.classifier.seed + m)
    slice_ = {k: v for k, v in w.settings_slice().items() if k != "networks"}
    slice_["classifier"] = _network_slice(settings)
    addr = address(f"{NAME}_network", VERSION, slice_, {"events": events})
    return Network(weight=w.name, index=m, settings=settings, folder=os.path.join(root, addr), address=addr,
                   events=events)


def plan(study: Study, *, events: str, root: str, model_root: str) -> dict[str, Reweighting]:
    """One item per named weight; its networks go under ``model_root`` beside the classifiers."""
    out = {}
    for w in study.reweight:
        nets = tuple(_network_item(w, m, events=events, root=model_root) for m in range(w.networks))
        item = Reweighting(settings=w, networks=nets, folder="", address="", events=events)
        item = replace(item, weights_address=address(f"{NAME}_weights", VERSION, item.weight_slice(),
                                                     item.weight_inputs))
        addr = address(NAME, VERSION, item.slice(), item.inputs)
        out[w.name] = replace(item, folder=os.path.join(root, addr), address=addr)
    return out


def is_complete(r: Reweighting, store) -> bool:
    """The record is written and every chunk of the weights is in the store."""
    return is_done(r.folder, r.address) and bool(
        store.weight_done_chunks(r.settings.source, r.name, r.weights_address).all())


# -- the events ------------------------------------------------------------------------------
def labelled(store, w: ReweightSettings, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source (label 0) and target (label 1) events of one split: features, labels, inside the blinded region."""
    smeared = SMEARED[w.smearing]
    xs, ys, inside = [], [], []
    for label, sample in enumerate((w.source, w.target)):
        x = store.features(sample, split, smeared=smeared, names=w.inputs)
        xs.append(x)
        ys.append(np.full(len(x), label, dtype=np.int8))
        inside.append(blinded(store, w, sample, split))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(inside)


def blinded(store, w: ReweightSettings, sample: str, split: str) -> np.ndarray:
    """True for the events of one split inside the blinded region (all False without one)."""
    if w.blind is None:
        start, stop = store.layout.split_ranges()[split]
        return np.zeros(stop - start, dtype=bool)
    return w.blind.mask(store.features(sample, split, smeared=SMEARED[w.smearing], names=[w.blind.feature])[:, 0])


@dataclass(frozen=True)
class ControlRegion:
    """The train split outside the blinded region, per sample: what the networks learn from."""

    events: Mapping[str, int]        # training events left per sample
    shares: Mapping[str, float]      # P(C): the share of the sample's train split they are

    def factor(self, w: ReweightSettings) -> float:
        """P_target(C) / P_source(C): what turns the networks' f_t(x | C) / f_s(x | C) into f_t(x) / f_s(x)
        (1 without a blinded region)."""
        return self.shares[w.target] / self.shares[w.source]


def control_region(store, r: Reweighting) -> ControlRegion:
    """The control region of one weight's train split; refuses one with too few events (on the client,
    before any of the weight's tasks). Computed once per run and passed to the tasks."""
    w = r.settings
    outside = {s: ~blinded(store, w, s, "train") for s in (w.source, w.target)}
    left = {s: int(v.sum()) for s, v in outside.items()}
    short = {s: n for s, n in left.items() if n < MIN_TRAINING_EVENTS}
    if short:
        start, stop = store.layout.split_ranges()["train"]
        where = (f"the blinded region ({w.blind.describe()}, {w.smearing} features) leaves" if w.blind
                 else "the train split has")
        raise ReweightError(
            f"reweight.{w.name}: {where} {', '.join(f'{n} of {stop - start} {s}' for s, n in short.items())} "
            f"training event(s) (at least {MIN_TRAINING_EVENTS} per sample are needed)"
            + (": blind a narrower window, or check the feature's units" if w.blind else
               ": raise generate.events.train"))
    return ControlRegion(events=left, shares={s: float(v.mean()) for s, v in outside.items()})


# -- tasks -----------------------------------------------------------------------------------
def training_tasks(items: Sequence[tuple[Reweighting, str]]) -> list[Task]:
    # weights that differ only in their number of networks share the first ones: train each once
    todo = {n.address: Task(key=f"reweight-network-{n.address}", fn=network_task, args=(n, r.settings, store_path),
                            pool="training")
            for r, store_path in items for n in r.networks if not is_done(n.folder, n.address)}
    return list(todo.values())


def weight_tasks(items: Sequence[tuple[Reweighting, str]], factors: Mapping[str, float]) -> list[Task]:
    """One task per chunk of the source sample whose weights are not yet in the store; ``factors``:
    each weight's control-region factor by name (``ControlRegion.factor``)."""
    from ...store import EventStore

    tasks = []
    for r, store_path in items:
        done = EventStore(store_path).weight_done_chunks(r.settings.source, r.name, r.weights_address)
        tasks += [Task(key=f"reweight-weights-{r.name}-{r.weights_address}-{c}", fn=weight_task,
                       args=(r, store_path, int(c), factors[r.name])) for c in np.flatnonzero(~done)]
    return tasks


def summary_tasks(items: Sequence[tuple[Reweighting, str]], factors: Mapping[str, float]) -> list[Task]:
    return [Task(key=f"reweight-summary-{r.name}-{r.address}", fn=summary_task,
                 args=(r, store_path, factors[r.name]), pool="training")
            for r, store_path in items]


@functools.lru_cache(maxsize=2)
def _labelled_once(store_path: str, events: str, w: ReweightSettings, split: str):
    """``labelled``, kept per worker process: the M networks of a weight that train on one worker read
    their events once (keyed by the store's address too, so a regenerated store is read afresh)."""
    from ...store import EventStore

    return labelled(EventStore(store_path), w, split)


def network_task(n: Network, w: ReweightSettings, store_path: str) -> dict:
    """Train one reweighting network outside the blinded region; its test AUC and closure on held-out
    control-region events go into its record."""
    from ...train.fit import train_classifier
    from ..slurm import worker_info

    x, y, inside = _labelled_once(store_path, n.events, w, "train")
    x_test, y_test, inside_test = _labelled_once(store_path, n.events, w, "test")
    result = train_classifier(x[~inside], y[~inside], feature_names=list(w.inputs), out_dir=n.folder,
                              settings=n.settings, x_test=x_test[~inside_test], y_test=y_test[~inside_test],
                              progress=False, class_names=(w.source, w.target), loss=w.loss)
    info = {k: getattr(result, k) for k in ("roc_auc", "n_train", "n_val", "n_test", "device", "epochs_run",
                                            "best_epoch", "samples_per_second", "train_seconds", "closure",
                                            "gpu_check")}
    info.update(loss=w.loss, blinded_train_events=int(inside.sum()), worker=worker_info())
    slice_ = {k: v for k, v in w.settings_slice().items() if k != "networks"}
    slice_["classifier"] = _network_slice(n.settings)
    rec = StageRecord(stage=f"{NAME}_network", address=n.address, version=VERSION, settings=slice_,
                      inputs={"events": n.events},
                      paths={"events": os.path.abspath(store_path)}, info=info)
    return rec.write(n.folder).to_json()


@functools.lru_cache(maxsize=4)
def _networks(folders: tuple[str, ...], batch_size: int):
    """The loaded networks, kept per worker process across the chunks it evaluates."""
    from ...train.fit import load_ratio_network

    return tuple(load_ratio_network(f, batch_size=batch_size) for f in folders)


def weights_of(r: Reweighting, x: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """The weights at raw features x, (n_events, M) float64: omega^-1 of each network's output, times
    ``factor`` (``control_factor``: the control-region shares' ratio)."""
    nets = _networks(tuple(n.folder for n in r.networks), r.settings.classifier.predict_batch_size)
    return np.stack([net.ratio(x) for net in nets], axis=1) * factor


def weight_task(r: Reweighting, store_path: str, chunk: int, factor: float) -> int:
    """Evaluate every network on one chunk of the source sample and write its weights."""
    from ...store import EventStore

    store = EventStore(store_path)
    w = r.settings
    x = store.chunk_features(w.source, chunk, smeared=SMEARED[w.smearing], names=w.inputs)
    store.write_weight_chunk(w.source, r.name, r.weights_address, chunk, weights_of(r, x, factor))
    return chunk


def provenance(r: Reweighting, store_path: str, factor: float) -> dict:
    """What the stored weights were made from (the store variable's attrs)."""
    w = r.settings
    return {"stage": NAME, "stage_version": VERSION, "address": r.weights_address, "record": r.address,
            "control_factor": float(factor), "source": w.source, "target": w.target,
            "loss": w.loss, "smearing": w.smearing, "inputs": list(w.inputs),
            "blind": None if w.blind is None else {"feature": w.blind.feature, "min": w.blind.min, "max": w.blind.max},
            "networks": [{"address": n.address, "folder": os.path.abspath(n.folder), "seed": n.settings.seed}
                         for n in r.networks],
            "events": r.events, "events_path": os.path.abspath(store_path)}


def two_sample_test(store, w: ReweightSettings, folder: str, weights: Mapping[str, np.ndarray]) -> dict:
    """Fresh networks (cross-entropy, seed + TWO_SAMPLE_SEED_OFFSET) trained on the template split to tell
    target from source, the source weighted by each of ``weights`` ({label: source template-split weights,
    test-split weights}); their weighted ROC AUC on the test split, in the control and blinded regions.
    0.5 means the (reweighted) source cannot be told from the target."""
    from ...train.fit import load_ratio_network, train_classifier
    from ...train.metrics import auc_error, weighted_roc_auc
    from ...stats.weights import effective_sample_size

    x, y, _ = labelled(store, w, "template")
    x_test, y_test, inside = labelled(store, w, "test")
    settings = w.classifier.replace(seed=w.classifier.seed + TWO_SAMPLE_SEED_OFFSET)
    out = {}
    for label, (w_template, w_test) in weights.items():
        sub = os.path.join(folder, "two_sample", label)
        train_classifier(x, y, feature_names=list(w.inputs), out_dir=sub, settings=settings, progress=False,
                         class_names=(w.source, w.target), loss="cross_entropy",
                         weights=np.where(y == 0, np.resize(w_template, y.size), 1.0))
        score = load_ratio_network(sub).output(x_test).astype(float)
        ev = np.ones(y_test.size)
        ev[y_test == 0] = w_test
        res = {}
        for region, keep in (("control", ~inside), ("blinded", inside)):
            yy, ss, ww = y_test[keep], score[keep], ev[keep]
            if (yy == 0).sum() < 2 or (yy == 1).sum() < 2:
                continue
            auc = weighted_roc_auc(yy, ss, ww)
            n0, n1 = effective_sample_size(ww[yy == 0]), effective_sample_size(ww[yy == 1])
            res[region] = {"auc": auc, "auc_err": auc_error(auc, n1, n0), "n_source_effective": n0,
                           "n_target": int((yy == 1).sum())}
        out[label] = res
    return out


def _feature_checks(store, w: ReweightSettings, weights, inside_s, inside_t) -> dict:
    """{feature: {region: histograms and chi2 / ndf before and after}} on the test split, for the networks'
    inputs and the blinded feature; regions control and blinded (all without a blinded region), each
    binned on the target's equal-population bins. A region with too few target events is left out."""
    from ...stats.weights import feature_comparison

    names = list(dict.fromkeys([*w.inputs, *([w.blind.feature] if w.blind else [])]))
    smeared = SMEARED[w.smearing]
    xs = store.features(w.source, "test", smeared=smeared, names=names)
    xt = store.features(w.target, "test", smeared=smeared, names=names)
    regions = ({"control": (~inside_s, ~inside_t), "blinded": (inside_s, inside_t)} if w.blind is not None
               else {"all": (np.ones(len(xs), bool), np.ones(len(xt), bool))})
    out = {}
    for j, name in enumerate(names):
        out[name] = {region: feature_comparison(xs[s, j], weights[s], xt[t, j], min_per_bin=FEATURE_MIN_PER_BIN)
                     for region, (s, t) in regions.items()
                     if t.sum() >= 2 * FEATURE_MIN_PER_BIN and s.sum() >= 2 * FEATURE_MIN_PER_BIN}
    return out


def summary_task(r: Reweighting, store_path: str, factor: float) -> dict:
    """The held-out checks of one weight (see the module); writes the record last."""
    from ...stats.ratios import ratio_closure
    from ...store import EventStore
    from ...stats.weights import network_spread, region_fractions, weight_summary

    store = EventStore(store_path)
    w = r.settings
    smeared = SMEARED[w.smearing]
    every = {split: store.weights(w.source, r.name, split, address=r.weights_address, network=None)
             for split in store.layout.split_ranges()}
    test = every["test"]
    x_target = store.features(w.target, "test", smeared=smeared, names=w.inputs)
    r_target = weights_of(r, x_target, factor)
    inside_s, inside_t = blinded(store, w, w.source, "test"), blinded(store, w, w.target, "test")
    info = {
        "name": r.name, "source": w.source, "target": w.target, "loss": w.loss,
        "blind": w.blind.describe() if w.blind else None, "control_factor": float(factor),
        # held-out events: the mean of w over source events and of 1 / w over target events (both 1 if
        # exact); with a blinded region this tests the extrapolation into it as well
        "closure": ratio_closure(test[:, 0], r_target[:, 0]),
        "closure_by_network": [ratio_closure(test[:, m], r_target[:, m]) for m in range(test.shape[1])],
        "weights": {split: weight_summary(v[:, 0]) for split, v in every.items()},
        "network_spread": network_spread(test),
    }
    if w.blind is not None:
        info["blinded_fraction"] = region_fractions(inside_s, test[:, 0], inside_t)
        # in the control region the networks' own ratio (w / factor) closes to 1 if they learnt it
        info["control_closure"] = ratio_closure(test[~inside_s, 0] / factor, r_target[~inside_t, 0] / factor)
    info["features"] = _feature_checks(store, w, test[:, 0], inside_s, inside_t)
    if w.two_sample_test:
        info["two_sample"] = two_sample_test(store, w, r.folder, {
            "before": (np.ones(every["template"].shape[0]), np.ones(test.shape[0])),
            "after": (every["template"][:, 0], test[:, 0])})
    info["store_variable"] = f"{w.source}/weights/{r.name}/{r.weights_address}"
    nets = {n.address: StageRecord.read(n.folder, stage=f"{NAME}_network").info for n in r.networks}
    info["networks"] = [{"address": a, "roc_auc": i["roc_auc"], "closure": i["closure"], "epochs_run": i["epochs_run"]}
                        for a, i in nets.items()]
    rec = StageRecord(stage=NAME, address=r.address, version=VERSION, settings=r.slice(), inputs=r.inputs,
                      paths={"events": os.path.abspath(store_path),
                             "networks": [os.path.abspath(n.folder) for n in r.networks]}, info=info)
    return rec.write(r.folder).to_json()


def describe_record(rec: Mapping) -> str:
    """One line per weight for the terminal: closure, effective size, the two-sample AUC before -> after."""
    i = rec["info"]
    c = i["closure"]
    line = (f"reweight [{i['name']}]: {i['source']} -> {i['target']}, {len(i['networks'])} network(s), "
            f"<r> on {i['source']} {c['mean_r_on_reference']:.3f} +- {c['mean_r_on_reference_err']:.3f}, "
            f"effective size {i['weights']['test']['effective_fraction']:.0%} of {i['source']}'s events")
    ts = i.get("two_sample", {})
    if "control" in ts.get("before", {}) and "control" in ts.get("after", {}):
        b, a = ts["before"]["control"], ts["after"]["control"]
        line += (f", two-sample AUC {b['auc']:.3f} +- {b['auc_err']:.3f} -> {a['auc']:.3f} +- {a['auc_err']:.3f}"
                 " (control region)")
    return line
