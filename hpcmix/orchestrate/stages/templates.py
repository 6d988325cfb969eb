"""Templates stage: each estimator's component densities, and their values on every test-pool event.

phi_star: the analytic model c +- a cos(phi*), a fitted on the labelled train split.
nn: KDEs of the network output on the template split (events the network did not train on).
The folder holds ``templates.npz`` and ``test_pool.npz`` (versioned npz, hpcmix.store.artefacts).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ...study.model import SMEARED, Study, TemplateSettings
from ..executor import Task
from ..record import StageRecord, address

NAME = "templates"
#: bump when what the templates compute changes (KDE, phi* fit, pool densities)
VERSION = 1
POOL_FILE = "test_pool.npz"
POOL_FORMAT = 1


@dataclass(frozen=True)
class Templates:
    """One (estimator, smearing variant) templates folder."""

    estimator: str
    smearing: str
    components: tuple[str, str]      # (alpha = 0, alpha = 1)
    settings: Mapping                # the template settings this estimator uses
    folder: str
    address: str
    events: str                      # event store address
    model: str | None                # model address (nn)
    model_folder: str | None
    predict_batch_size: int = 65536

    def slice(self) -> dict:
        return {"estimator": self.estimator, "smearing": self.smearing, "components": list(self.components),
                "templates": dict(self.settings)}


def estimator_settings(estimator: str, settings: TemplateSettings) -> dict:
    """The template settings an estimator uses (so a KDE setting never reruns the phi* templates)."""
    if estimator == "phi_star":
        return {}        # closed-form model: no template settings (positivity_grid is for analytic templates)
    if estimator == "nn":
        return {k: v for k, v in asdict(settings).items() if k != "positivity_grid"}
    raise ValueError(f"unknown estimator {estimator!r}; allowed: phi_star, nn")


def item(study: Study, *, estimator: str, smearing: str, events: str, model=None, root: str | None = None,
         folder: str | None = None) -> Templates:
    """The templates item; ``model`` is the train stage's Model (nn), its folder and address are inputs."""
    settings = estimator_settings(estimator, study.templates)
    inputs = {"events": events, "model": model.address if model is not None else None}
    slice_ = {"estimator": estimator, "smearing": smearing, "components": list(study.pair), "templates": settings}
    addr = address(NAME, VERSION, slice_, inputs)
    return Templates(estimator=estimator, smearing=smearing, components=study.pair, settings=settings,
                     folder=folder or os.path.join(root, addr), address=addr, events=events,
                     model=model.address if model is not None else None,
                     model_folder=model.folder if model is not None else None,
                     predict_batch_size=study.classifier.predict_batch_size)


def plan(study: Study, *, events: str, models: Mapping[str, object], root: str) -> dict[tuple[str, str], Templates]:
    return {(est, sm): item(study, estimator=est, smearing=sm, events=events,
                            model=models[sm] if est == "nn" else None, root=root)
            for est in study.toys.estimators for sm in study.smearing.variants}


def tasks(items: Sequence[Templates], store_path: str) -> list[Task]:
    return [Task(key=f"templates-{t.address}", fn=templates_task, args=(t, store_path)) for t in items]


def _values(store, t: Templates, split: str, clf=None) -> list[np.ndarray]:
    """Per-event values the estimator fits (phi*, or the network output), per component."""
    smeared = SMEARED[t.smearing]
    if t.estimator == "phi_star":
        return [store.features(c, split, smeared=smeared, names=["phi_star"])[:, 0].astype(float)
                for c in t.components]
    names = list(clf.feature_names)
    return [clf.predict(store.features(c, split, smeared=smeared, names=names)).astype(float) for c in t.components]


def build(store, t: Templates):
    """The templates object and the classifier (nn) for ``t``."""
    from ...stats.templates import KDETemplates, fit_phi_star_templates

    if t.estimator == "phi_star":
        v0, v1 = _values(store, t, "train")
        return fit_phi_star_templates(np.concatenate([v0, v1]),
                                      np.r_[np.zeros(v0.size, bool), np.ones(v1.size, bool)]), None
    from ...train.fit import load_classifier

    clf = load_classifier(t.model_folder, batch_size=t.predict_batch_size)
    v0, v1 = _values(store, t, "template", clf)
    s = dict(t.settings)
    s["clip"] = s.pop("logit_clip")
    return KDETemplates(np.concatenate([v0, v1]), np.r_[np.zeros(v0.size, bool), np.ones(v1.size, bool)], **s), clf


def save_pool(folder: str, components: Sequence[str], values: Sequence[np.ndarray], templates) -> str:
    """``test_pool.npz``: each component's test events and both densities at them, by component name.

    ``values_<c>``: the estimator's variable for component c's pool events;
    ``density_<d>_on_<c>``: component d's template density at those events.
    """
    arrays = {}
    for c, v in zip(components, values):
        p1, p0 = templates.densities(v)      # densities() returns (p_alpha=1, p_alpha=0)
        arrays[f"values_{c}"] = v
        arrays[f"density_{components[1]}_on_{c}"] = p1
        arrays[f"density_{components[0]}_on_{c}"] = p0
    meta = {"format": POOL_FORMAT, "kind": "test_pool", "components": list(components)}
    arrays["meta"] = np.array(json.dumps(meta))
    path = os.path.join(folder, POOL_FILE)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Pool:
    """A test pool read back: per component, its events' values and both template densities."""

    components: tuple[str, str]
    values: Mapping[str, np.ndarray]
    density: Mapping[tuple[str, str], np.ndarray]   # (density of, events of) -> values

    def size(self, component: str) -> int:
        return int(self.values[component].size)


def load_pool(folder: str) -> Pool:
    from ...store.artefacts import ArtefactFormatError

    path = os.path.join(folder, POOL_FILE)
    with np.load(path, allow_pickle=False) as f:
        if "meta" not in f.files:
            raise ArtefactFormatError(f"{path}: a test pool from an older hpcmix (no meta); rerun the templates stage")
        meta = json.loads(f["meta"].item())
        if meta.get("format") != POOL_FORMAT:
            raise ArtefactFormatError(f"{path}: test-pool format {meta.get('format')}, this hpcmix reads "
                                      f"{POOL_FORMAT}; rerun the templates stage")
        comps = tuple(meta["components"])
        values = {c: f[f"values_{c}"] for c in comps}
        density = {(d, c): f[f"density_{d}_on_{c}"] for d in comps for c in comps}
    return Pool(components=comps, values=values, density=density)


def templates_task(t: Templates, store_path: str) -> dict:
    """Build one folder's templates, evaluate them on the test pool, write the record last."""
    from ...store import EventStore
    from ...store.artefacts import save_templates

    store = EventStore(store_path)
    os.makedirs(t.folder, exist_ok=True)
    templates, clf = build(store, t)
    if t.estimator == "phi_star":
        info = {"a": templates.a, "a_err": templates.a_err, "c": templates.c}
    else:
        info = {"bandwidths": list(templates.bandwidths), "space": templates.space}
    test = _values(store, t, "test", clf)
    save_pool(t.folder, t.components, test, templates)
    save_templates(t.folder, templates, components=t.components)
    lo, hi = templates.positivity_limits()
    info.update({"positivity_limits": [float(lo), float(hi)],
                 "pool_sizes": {c: int(v.size) for c, v in zip(t.components, test)}})
    paths = {"events": os.path.abspath(store_path)}
    if t.model_folder:
        paths["model"] = os.path.abspath(t.model_folder)
    rec = StageRecord(stage=NAME, address=t.address, version=VERSION, settings=t.slice(),
                      inputs={"events": t.events, "model": t.model}, paths=paths, info=info)
    return rec.write(t.folder).to_json()
