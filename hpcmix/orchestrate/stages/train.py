"""Train stage: the classifiers of the network estimators (and of the AUC study) on the train split.

Per smearing variant: the paper's H-vs-A network (``nn``, and the pair classifier of ``nn_pairwise``:
one model, one address), one binary network per nuisance against the reference component
(``nn_pairwise``), one K-class network (``nn_multiclass``), and for ``ratio`` / ``ratio_calibrated``
one likelihood-ratio network per component but the reference (its density ratio to the reference,
trained with ``ratio.loss``; both estimators share them). Each is one task on the training pool.
A ratio network whose components templates.weights reweights trains on their weighted events, so
that its output is the ratio of the densities the weighted templates describe.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ...study.model import LEARNED_RATIO_ESTIMATORS, SMEARED, Study
from ...train.settings import ClassifierSettings
from ..executor import Task
from ..record import StageRecord, address

NAME = "train"
#: bump when what training computes changes (network, schedule, data order)
VERSION = 1


@dataclass(frozen=True)
class Model:
    """One classifier to train: where it goes and what its address covers."""

    label: str                       # the smearing variant, "auc:<input set>", "multiclass:<smearing>",
                                     # "pairwise:<component>:<smearing>" or "ratio:<component>:<smearing>"
    smearing: str
    inputs: tuple[str, ...]
    settings: ClassifierSettings
    components: tuple[str, ...]      # the class of each label: (label 0, label 1, ...)
    folder: str
    address: str
    events: str                      # the event store's address
    loss: str | None = None          # a likelihood-ratio loss: a ratio network (output u ~ omega(p_1 / p_0))
    # a ratio network of a component templates.weights reweights trains on its weighted events:
    # ((component, weight name, reweighting address), ...), with reweighting network weight_network's
    # weights (0, the nominal; templates.weight_networks = all adds one network per other one)
    weights: tuple[tuple[str, str, str], ...] = ()
    weight_network: int = 0

    def slice(self) -> dict:
        out = {"smearing": self.smearing, "network_inputs": list(self.inputs), "classifier": self.settings.address_dict(),
               "components": list(self.components)}
        if self.loss is not None:   # classifiers keep their addresses
            out["loss"] = self.loss
            out["classifier"].pop("output_batch_norm")   # a ratio network's output u has no batch norm
        return out

    @property
    def inputs_addresses(self) -> dict:
        """What the model trains on: the event store, and the weights of its weighted components."""
        out = {"events": self.events}
        if self.weights:   # unweighted networks keep their addresses
            out["weights"] = {c: a for c, _, a in self.weights}
        if self.weight_network:   # the nominal reweighting network's keep theirs
            out["weight_network"] = self.weight_network
        return out


def model(study: Study, *, label: str, smearing: str, inputs: Sequence[str], settings: ClassifierSettings,
          events: str, root: str | None = None, folder: str | None = None,
          components: Sequence[str] | None = None, loss: str | None = None,
          weights: Sequence[tuple[str, str, str]] = (), weight_network: int = 0) -> Model:
    """The item for one classifier (of ``components``, default the pair), or with ``loss`` one ratio network
    (``weights``: its weighted components, with reweighting network ``weight_network``'s weights); its
    folder is ``root/<address>`` unless given."""
    m = Model(label=label, smearing=smearing, inputs=tuple(inputs), settings=settings,
              components=tuple(components or study.pair), folder="", address="", events=events, loss=loss,
              weights=tuple(weights), weight_network=int(weight_network))
    addr = address(NAME, VERSION, m.slice(), m.inputs_addresses)
    return Model(**{**m.__dict__, "address": addr, "folder": folder or os.path.join(root, addr)})


def pairwise_label(component: str, smearing: str) -> str:
    return f"pairwise:{component}:{smearing}"


def ratio_label(component: str, smearing: str, weight_network: int = 0) -> str:
    """``ratio:<k>:<smearing>``; trained with reweighting network m >= 1's weights: ``...:network<m>``."""
    return f"ratio:{component}:{smearing}" + (f":network{weight_network}" if weight_network else "")


def multiclass_label(smearing: str) -> str:
    return f"multiclass:{smearing}"


def plan(study: Study, *, events: str, root: str, reweights: Mapping[str, object] | None = None) -> dict[str, Model]:
    """The network estimators' classifiers per smearing variant (see the module) plus the AUC study's;
    ``reweights``: the reweighting stage's items by weight name (for templates.weights)."""
    from .templates import template_weights, weight_network_count

    models = {}
    # the ratio networks model the densities the templates are of: weighted where templates.weights says,
    # once per reweighting network under templates.weight_networks = all (the network-choice systematic)
    weighted = {item[0]: item for item in template_weights(study, reweights)}
    n_networks = weight_network_count(study)
    est = set(study.toys.estimators)
    for sm in study.smearing.variants:
        def one(label, components=None):
            models[label] = model(study, label=label, smearing=sm, inputs=study.network_inputs,
                                  settings=study.classifier, events=events, root=root, components=components)
        if est & {"nn", "nn_pairwise"}:
            one(sm)
        if "nn_pairwise" in est:
            for k in study.nuisances:   # k against the reference (the alpha = 0 component), label 1 = k
                one(pairwise_label(k, sm), (study.pair[0], k))
        if "nn_multiclass" in est:
            one(multiclass_label(sm), study.fit_components)
        if est & set(LEARNED_RATIO_ESTIMATORS):
            for k in study.fit_components[1:]:   # r_k = p_k / p_ref, label 1 = k, label 0 the reference
                w = [weighted[c] for c in (study.fit_components[0], k) if c in weighted]
                for net in range(n_networks if w else 1):
                    models[ratio_label(k, sm, net)] = model(
                        study, label=ratio_label(k, sm, net), smearing=sm, inputs=study.network_inputs,
                        settings=study.ratio.classifier, events=events, root=root,
                        components=(study.fit_components[0], k), loss=study.ratio.loss, weights=w,
                        weight_network=net)
    if study.auc_study is not None:
        a = study.auc_study
        for label, inputs in a.sets:
            models[f"auc:{label}"] = model(study, label=f"auc:{label}", smearing=a.smearing, inputs=inputs,
                                           settings=a.classifier, events=events, root=root)
    return models


def tasks(models: Sequence[Model], store_path: str, *, progress: bool = False) -> list[Task]:
    return [Task(key=f"train-{m.address}", fn=train_task, args=(m, store_path), kwargs={"progress": progress},
                 pool="training") for m in models]


def labelled_features(store, components: Sequence[str], split: str, *, smeared: bool,
                      names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Features of the components of one split, stacked, labelled by position (0: first component, 1, ...)."""
    xs = [store.features(s, split, smeared=smeared, names=names) for s in components]
    for c, x in zip(components, xs):
        bad = [n for n, ok in zip(names, np.isfinite(x).all(axis=0)) if not ok]
        if bad:
            raise ValueError(f"component {c!r} ({split} split, {'smeared' if smeared else 'unsmeared'} features) has "
                             f"non-finite values in network input(s) {bad}: this process does not provide them; "
                             "choose features.network_inputs without them")
    y = np.concatenate([np.full(len(x), k, dtype=np.int8) for k, x in enumerate(xs)])
    return np.concatenate(xs), y


def _weighted_parts(store, m: Model, split: str) -> list[np.ndarray]:
    """The stored weights (network ``m.weight_network``) of ``m``'s weighted components' events in ``split``."""
    return [store.weights(c, name, split, address=a, network=m.weight_network) for c, name, a in m.weights]


def _event_weights(store, m: Model, split: str, parts: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """One weight per event of ``labelled_features`` (1 for the events of an unweighted component);
    ``parts``: the weighted components' weights in ``split`` when already read."""
    parts = dict(zip((c for c, _, _ in m.weights), parts if parts is not None else _weighted_parts(store, m, split)))
    start, stop = store.layout.split_ranges()[split]   # every component has the split's events
    return np.concatenate([parts.get(c, np.ones(stop - start)) for c in m.components])


def train_task(m: Model, store_path: str, *, progress: bool = False) -> dict:
    """Train on the train split, measure the ROC AUC on the test split, write the record; returns it."""
    from ...store import EventStore
    from ...train.fit import train_classifier
    from ..slurm import slurm_job_gres, worker_info

    store = EventStore(store_path)
    smeared = SMEARED[m.smearing]
    x, y = labelled_features(store, m.components, "train", smeared=smeared, names=m.inputs)
    x_test, y_test = labelled_features(store, m.components, "test", smeared=smeared, names=m.inputs)
    parts = _weighted_parts(store, m, "train") if m.weights else []
    w, w_test = (_event_weights(store, m, "train", parts), _event_weights(store, m, "test")) if m.weights else (None, None)
    result = train_classifier(x, y, feature_names=list(m.inputs), out_dir=m.folder, settings=m.settings,
                              x_test=x_test, y_test=y_test, progress=progress, class_names=m.components, loss=m.loss,
                              weights=w, test_weights=w_test)
    info = {k: getattr(result, k) for k in ("roc_auc", "roc_auc_sample", "n_train", "n_val", "n_test", "device",
                                            "epochs_run", "best_epoch", "samples_per_second", "train_seconds",
                                            "gpu_check")}
    if result.roc_auc_vs_first is not None:
        info["roc_auc_vs_first"] = result.roc_auc_vs_first
    if m.loss is not None:   # held-out test events: the mean of r over reference events and of 1 / r over k's
        info.update(loss=m.loss, closure={m.components[1]: result.closure})
    if m.weights:   # what the weighted components trained on (weighted means in the closure)
        from ...stats.weights import effective_sample_size

        info["weights"] = {c: {"name": name, "address": a, "network": m.weight_network, "split": "train",
                               "n_events": int(v.size), "effective_sample_size": effective_sample_size(v)}
                           for (c, name, a), v in zip(m.weights, parts)}
    info["worker"] = worker_info()
    if info["worker"]["slurm_job_id"]:
        # what SLURM itself says this job holds (scontrol), not what we asked for
        info["slurm_gres"] = {k: v for k, v in slurm_job_gres().items() if k != "raw"}
    rec = StageRecord(stage=NAME, address=m.address, version=VERSION, settings=m.slice(), inputs=m.inputs_addresses,
                      paths={"events": os.path.abspath(store_path)}, info=info)
    return rec.write(m.folder).to_json()
