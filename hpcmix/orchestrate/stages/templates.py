"""Templates stage: each estimator's component densities, and their values on every test-pool event.

phi_star: the analytic model c +- a cos(phi*), a fitted on the labelled train split (with more
than two components, each nuisance a first-order Fourier series fitted to its train events).
nn: KDEs of the network output on the template split (events the network did not train on),
one per component (the network separates the pair; every component gets a template of its output).
The folder holds ``templates.npz`` and ``test_pool.npz`` (versioned npz, hpcmix.store.artefacts).
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Templates:
    """One (estimator, smearing variant) templates folder."""

    estimator: str
    smearing: str
    components: tuple[str, ...]      # (alpha = 0, alpha = 1, nuisances...)
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


def item(study: Study, *, estimator: str, smearing: str, events: str, model_address: str | None = None,
         model_folder: str | None = None, root: str | None = None, folder: str | None = None) -> Templates:
    """The templates item; the model (nn: its address and folder) is an input like the event store."""
    settings = estimator_settings(estimator, study.templates)
    components = study.fit_components   # the pair for two components: their addresses are unchanged
    slice_ = {"estimator": estimator, "smearing": smearing, "components": list(components), "templates": settings}
    addr = address(NAME, VERSION, slice_, {"events": events, "model": model_address})
    return Templates(estimator=estimator, smearing=smearing, components=components, settings=settings,
                     folder=folder or os.path.join(root, addr), address=addr, events=events, model=model_address,
                     model_folder=model_folder, predict_batch_size=study.classifier.predict_batch_size)


def plan(study: Study, *, events: str, models: Mapping[str, object], root: str) -> dict[tuple[str, str], Templates]:
    """One item per (estimator, smearing variant); ``models``: the train stage's Model per variant."""
    def one(est, sm):
        m = models[sm] if est == "nn" else None
        return item(study, estimator=est, smearing=sm, events=events, root=root,
                    model_address=m.address if m else None, model_folder=m.folder if m else None)

    return {(est, sm): one(est, sm) for est in study.toys.estimators for sm in study.smearing.variants}


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
    from ...stats.components import KDEComponents, fit_phi_star_components
    from ...stats.templates import KDETemplates, fit_phi_star_templates

    many = len(t.components) > 2
    if t.estimator == "phi_star":
        values = _values(store, t, "train")
        if many:
            return fit_phi_star_components(dict(zip(t.components, values)), pair=t.components[:2]), None
        v0, v1 = values
        return fit_phi_star_templates(np.concatenate([v0, v1]),
                                      np.r_[np.zeros(v0.size, bool), np.ones(v1.size, bool)]), None
    from ...train.fit import load_classifier

    clf = load_classifier(t.model_folder, batch_size=t.predict_batch_size)
    values = _values(store, t, "template", clf)
    s = dict(t.settings)
    s["clip"] = s.pop("logit_clip")
    if many:
        return KDEComponents(dict(zip(t.components, values)), **s), clf
    v0, v1 = values
    return KDETemplates(np.concatenate([v0, v1]), np.r_[np.zeros(v0.size, bool), np.ones(v1.size, bool)], **s), clf


def templates_task(t: Templates, store_path: str) -> dict:
    """Build one folder's templates, evaluate them on the test pool, write the record last."""
    from ...store import EventStore
    from ...store.artefacts import save_templates, save_test_pool

    store = EventStore(store_path)
    os.makedirs(t.folder, exist_ok=True)
    templates, clf = build(store, t)
    test = _values(store, t, "test", clf)
    save_test_pool(t.folder, templates, dict(zip(t.components, test)))
    save_templates(t.folder, templates, components=t.components)
    if len(t.components) > 2:
        # the limits of alpha depend on the nuisance fractions: the fit takes the support nodes
        info = {**templates.info(), "support_nodes": int(templates.support_nodes().shape[0])}
    else:
        if t.estimator == "phi_star":
            info = {"a": templates.a, "a_err": templates.a_err, "c": templates.c}
        else:
            info = {"bandwidths": list(templates.bandwidths), "space": templates.space}
        lo, hi = templates.positivity_limits()
        info["positivity_limits"] = [float(lo), float(hi)]
    info["pool_sizes"] = {c: int(v.size) for c, v in zip(t.components, test)}
    paths = {"events": os.path.abspath(store_path)}
    if t.model_folder:
        paths["model"] = os.path.abspath(t.model_folder)
    rec = StageRecord(stage=NAME, address=t.address, version=VERSION, settings=t.slice(),
                      inputs={"events": t.events, "model": t.model}, paths=paths, info=info)
    return rec.write(t.folder).to_json()
