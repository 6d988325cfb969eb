"""Train stage: one classifier per smearing variant (and per AUC-study input set) on the train split."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...study.model import SMEARED, Study
from ...train.settings import ClassifierSettings
from ..executor import Task
from ..record import StageRecord, address

NAME = "train"
#: bump when what training computes changes (network, schedule, data order)
VERSION = 1


@dataclass(frozen=True)
class Model:
    """One classifier to train: where it goes and what its address covers."""

    label: str                       # the smearing variant, or "auc:<input set>"
    smearing: str
    inputs: tuple[str, ...]
    settings: ClassifierSettings
    components: tuple[str, str]      # (label 0, label 1)
    folder: str
    address: str
    events: str                      # the event store's address

    def slice(self) -> dict:
        return {"smearing": self.smearing, "network_inputs": list(self.inputs), "classifier": self.settings.to_dict(),
                "components": list(self.components)}


def model(study: Study, *, label: str, smearing: str, inputs: Sequence[str], settings: ClassifierSettings,
          events: str, root: str | None = None, folder: str | None = None) -> Model:
    """The item for one classifier; its folder is ``root/<address>`` unless given."""
    m = Model(label=label, smearing=smearing, inputs=tuple(inputs), settings=settings, components=study.pair,
              folder="", address="", events=events)
    addr = address(NAME, VERSION, m.slice(), {"events": events})
    return Model(**{**m.__dict__, "address": addr, "folder": folder or os.path.join(root, addr)})


def plan(study: Study, *, events: str, root: str) -> dict[str, Model]:
    """The study's classifiers (one per smearing variant when the NN estimator is used) plus the AUC study's."""
    models = {}
    if "nn" in study.toys.estimators:
        for sm in study.smearing.variants:
            models[sm] = model(study, label=sm, smearing=sm, inputs=study.network_inputs,
                               settings=study.classifier, events=events, root=root)
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
    """Features of both components of one split, stacked, with labels 0 (first component) and 1 (second)."""
    xs = [store.features(s, split, smeared=smeared, names=names) for s in components]
    y = np.concatenate([np.full(len(x), k, dtype=np.int8) for k, x in enumerate(xs)])
    return np.concatenate(xs), y


def train_task(m: Model, store_path: str, *, progress: bool = False) -> dict:
    """Train on the train split, measure the ROC AUC on the test split, write the record; returns it."""
    from ...store import EventStore
    from ...train.fit import train_classifier
    from ..slurm import slurm_job_gres, worker_info

    store = EventStore(store_path)
    smeared = SMEARED[m.smearing]
    x, y = labelled_features(store, m.components, "train", smeared=smeared, names=m.inputs)
    x_test, y_test = labelled_features(store, m.components, "test", smeared=smeared, names=m.inputs)
    result = train_classifier(x, y, feature_names=list(m.inputs), out_dir=m.folder, settings=m.settings,
                              x_test=x_test, y_test=y_test, progress=progress)
    info = {k: getattr(result, k) for k in ("roc_auc", "roc_auc_sample", "n_train", "n_val", "n_test", "device",
                                            "epochs_run", "best_epoch", "samples_per_second", "train_seconds")}
    info["worker"] = worker_info()
    if info["worker"]["slurm_job_id"]:
        # what SLURM itself says this job holds (scontrol), not what we asked for
        info["slurm_gres"] = {k: v for k, v in slurm_job_gres().items() if k != "raw"}
    rec = StageRecord(stage=NAME, address=m.address, version=VERSION, settings=m.slice(), inputs={"events": m.events},
                      paths={"events": os.path.abspath(store_path)}, info=info)
    return rec.write(m.folder).to_json()
