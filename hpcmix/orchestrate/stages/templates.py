"""Templates stage: each estimator's component densities, and their values on every test-pool event.

phi_star: the analytic model c +- a cos(phi*), a fitted on the labelled train split (with more
than two components, each nuisance a first-order Fourier series fitted to its train events).
nn: KDEs of the network output on the template split (events the network did not train on),
one per component (the network separates the pair; every component gets a template of its output).
nn_multiclass / nn_pairwise (nuisance components only): per non-reference component k an output
y_k (s_k / (s_k + s_ref) of the K-class network, or P(k) of the k-vs-reference network), calibrated
into a density ratio by KDEs of y_k on the template split (hpcmix.stats.RatioComponents).
ratio (any K): per non-reference component the output u_k of its likelihood-ratio network, taken
as r_k = omega^-1(u_k) with no templates (hpcmix.stats.DirectRatioTemplates / DirectRatioComponents;
the template split gives only the normalisation, the positivity nodes and the bound's quadrature); ratio_calibrated:
r_k / (1 + r_k) calibrated by KDEs as the classifiers' outputs are (KDETemplates for two components).
The closure of every ratio on the test split goes into the record.
The folder holds ``templates.npz`` and ``test_pool.npz`` (versioned npz, hpcmix.store.artefacts).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

from ...study.model import (ESTIMATORS, LEARNED_RATIO_ESTIMATORS, NETWORK_ESTIMATORS, RATIO_ESTIMATORS, SMEARED, Study,
                             TemplateSettings)
from ...train.metrics import pair_score as _pair_score
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
    model: str | None                # model address (nn, nn_multiclass; nn_pairwise: the pair classifier)
    model_folder: str | None
    predict_batch_size: int = 65536
    # nn_pairwise: ((nuisance, model address, model folder), ...): each nuisance against the reference
    pairwise: tuple[tuple[str, str, str], ...] = ()
    # ratio / ratio_calibrated: ((component, model address, model folder), ...): each non-reference
    # component's likelihood-ratio network against the reference
    ratio_models: tuple[tuple[str, str, str], ...] = ()
    # templates.weights: ((component, weight name, reweighting address), ...): that component's
    # template events carry the weight stored in the event store at <component>/weights/<name>/<address>
    weights: tuple[tuple[str, str, str], ...] = ()
    # which reweighting network's weights (a column of the stored weights): 0, the nominal, unless
    # templates.weight_networks = all adds the items of the others (the network-choice systematic)
    weight_network: int = 0

    @property
    def inputs(self) -> dict:
        inputs = {"events": self.events, "model": self.model}
        if self.pairwise:
            inputs["pairwise_models"] = {k: a for k, a, _ in self.pairwise}
        if self.ratio_models:
            inputs["ratio_models"] = {k: a for k, a, _ in self.ratio_models}
        if self.weights:   # unweighted templates keep their addresses
            inputs["weights"] = {c: a for c, _, a in self.weights}
        if self.weight_network:   # the nominal network's templates keep their addresses
            inputs["weight_network"] = self.weight_network
        return inputs

    def slice(self) -> dict:
        return {"estimator": self.estimator, "smearing": self.smearing, "components": list(self.components),
                "templates": dict(self.settings)}


def estimator_settings(estimator: str, settings: TemplateSettings) -> dict:
    """The template settings an estimator uses (so a KDE setting never reruns the phi* templates)."""
    if estimator == "phi_star":
        return {}        # closed-form model: no template settings (positivity_grid is for analytic templates)
    if estimator == "ratio":
        return {}        # the networks' ratios are used as they are: no KDE
    if estimator in NETWORK_ESTIMATORS:
        # the weights enter the item's slice by their addresses (item), not by name
        return {f.name: getattr(settings, f.name) for f in fields(settings)
                if f.name not in ("positivity_grid", "weights", "weight_networks")}
    raise ValueError(f"unknown estimator {estimator!r}; allowed: {', '.join(ESTIMATORS)}")


def item(study: Study, *, estimator: str, smearing: str, events: str, model_address: str | None = None,
         model_folder: str | None = None, root: str | None = None, folder: str | None = None,
         pairwise: Sequence[tuple[str, str, str]] = (),
         ratio_models: Sequence[tuple[str, str, str]] = (),
         weights: Sequence[tuple[str, str, str]] = ()) -> Templates:
    """The templates item; the models (their addresses and folders) are inputs like the event store."""
    settings = estimator_settings(estimator, study.templates)
    components = study.fit_components   # the pair for two components: their addresses are unchanged
    slice_ = {"estimator": estimator, "smearing": smearing, "components": list(components), "templates": settings}
    t = Templates(estimator=estimator, smearing=smearing, components=components, settings=settings, folder="",
                  address="", events=events, model=model_address, model_folder=model_folder,
                  predict_batch_size=study.classifier.predict_batch_size, pairwise=tuple(pairwise),
                  ratio_models=tuple(ratio_models), weights=tuple(weights))
    addr = address(NAME, VERSION, slice_, t.inputs)
    return replace(t, folder=folder or os.path.join(root, addr), address=addr)


def plan(study: Study, *, events: str, models: Mapping[str, object], root: str,
         reweights: Mapping[str, object] | None = None) -> dict[tuple[str, str], Templates]:
    """One item per (estimator, smearing variant); ``models``: the train stage's Models by label;
    ``reweights``: the reweighting stage's items by weight name (for templates.weights)."""
    from .train import multiclass_label, pairwise_label, ratio_label

    weights = template_weights(study, reweights)

    def one(est, sm):
        m = {"nn": models.get(sm), "nn_pairwise": models.get(sm),
             "nn_multiclass": models.get(multiclass_label(sm))}.get(est)
        pairwise = ()
        if est == "nn_pairwise":
            pairwise = tuple((k, models[pairwise_label(k, sm)].address, models[pairwise_label(k, sm)].folder)
                             for k in study.nuisances)
        ratio_models = ()
        if est in LEARNED_RATIO_ESTIMATORS:
            ratio_models = tuple((k, models[ratio_label(k, sm)].address, models[ratio_label(k, sm)].folder)
                                 for k in study.fit_components[1:])
        return item(study, estimator=est, smearing=sm, events=events, root=root, pairwise=pairwise,
                    model_address=m.address if m else None, model_folder=m.folder if m else None,
                    ratio_models=ratio_models, weights=weights)

    return {(est, sm): one(est, sm) for est in study.toys.estimators for sm in study.smearing.variants}


def template_weights(study: Study, reweights: Mapping[str, object] | None) -> tuple[tuple[str, str, str], ...]:
    """templates.weights as ((component, weight name, reweighting address), ...): what weighted templates
    (and the ratio networks of weighted components) take; ``reweights``: the reweighting stage's items."""
    if study.templates.weights and reweights is None:
        raise ValueError("templates.weights names stored weights: give the reweighting stage's items (reweights=)")
    return tuple((c, name, reweights[name].weights_address) for c, name in study.templates.weights.items())


def with_weight_network(t: Templates, network: int, *, root: str, models: Mapping[str, object]) -> Templates:
    """The item of ``t`` whose weighted components carry reweighting network ``network``'s weights (``t``
    itself when no component is weighted: its templates do not depend on the network); its ratio
    networks are those trained with the same network's weights (``models``: the train stage's by label)."""
    from .train import ratio_label

    if not t.weights or network == t.weight_network:
        return t
    ratio_models = tuple((k, m.address, m.folder) for k, m in
                         ((k, models.get(ratio_label(k, t.smearing, network)) or models[ratio_label(k, t.smearing)])
                          for k, _, _ in t.ratio_models))
    t = replace(t, weight_network=int(network), ratio_models=ratio_models)
    addr = address(NAME, VERSION, t.slice(), t.inputs)
    return replace(t, folder=os.path.join(root, addr), address=addr)


def weight_network_count(study: Study) -> int:
    """How many reweighting networks templates.weight_networks = all runs through (1 for nominal: network 0)."""
    if study.templates.weight_networks != "all":
        return 1
    used = set(study.templates.weights.values()) | set(study.toys.weights.values())
    return max(w.networks for w in study.reweight if w.name in used)


def tasks(items: Sequence[Templates], store_path: str) -> list[Task]:
    return [Task(key=f"templates-{t.address}", fn=templates_task, args=(t, store_path)) for t in items]


def _values(store, t: Templates, split: str, clf=None) -> list[np.ndarray]:
    """Per-event values the estimator fits, per component: phi*, the network output, or (ratio
    estimators) the K - 1 outputs y_k, one column per non-reference component."""
    smeared = SMEARED[t.smearing]
    if t.estimator == "phi_star":
        return [store.features(c, split, smeared=smeared, names=["phi_star"])[:, 0].astype(float)
                for c in t.components]
    if t.estimator == "nn":
        names = list(clf.feature_names)
        return [clf.predict(store.features(c, split, smeared=smeared, names=names)).astype(float)
                for c in t.components]
    names = _common_inputs(clf)
    out = []
    for c in t.components:
        x = store.features(c, split, smeared=smeared, names=names)
        if t.estimator in LEARNED_RATIO_ESTIMATORS:
            # u_k of every network (ratio), or r_k / (1 + r_k) for the KDE calibration (ratio_calibrated)
            cols = [clf[k].output(x).astype(float) for k in t.components[1:]]
            if t.estimator == "ratio_calibrated":
                cols = [clf[k].pair.score(u) for k, u in zip(t.components[1:], cols)]
            out.append(cols[0] if len(t.components) == 2 else np.stack(cols, axis=-1))
        elif t.estimator == "nn_multiclass":
            proba = clf.predict_proba(x)
            out.append(np.stack([_pair_score(proba, k, 0) for k in range(1, len(t.components))], axis=-1))
        else:   # nn_pairwise: clf is {component: classifier of it against the reference}
            out.append(np.stack([clf[k].predict(x).astype(float) for k in t.components[1:]], axis=-1))
    return out


def _common_inputs(clf) -> list[str]:
    """The network inputs of a classifier, or of all the pairwise ones (the train stage gives them the same)."""
    if not isinstance(clf, Mapping):
        return list(clf.feature_names)
    names = {tuple(c.feature_names) for c in clf.values()}
    if len(names) != 1:
        raise ValueError(f"the pairwise classifiers were trained on different inputs {sorted(names)}; retrain them")
    return list(names.pop())


def _classifiers(t: Templates):
    from ...train.fit import load_classifier, load_ratio_network

    if t.estimator in LEARNED_RATIO_ESTIMATORS:
        nets = {k: load_ratio_network(folder, batch_size=t.predict_batch_size) for k, _, folder in t.ratio_models}
        if len({n.loss for n in nets.values()}) != 1:
            raise ValueError(f"the ratio networks of {t.folder} were trained with different losses "
                             f"{sorted({n.loss for n in nets.values()})}; retrain them")
        return nets

    if t.estimator == "nn_pairwise":
        clf = {t.components[1]: load_classifier(t.model_folder, batch_size=t.predict_batch_size)}
        clf.update({k: load_classifier(folder, batch_size=t.predict_batch_size) for k, _, folder in t.pairwise})
        return clf
    clf = load_classifier(t.model_folder, batch_size=t.predict_batch_size)
    if t.estimator == "nn_multiclass" and clf.n_classes != len(t.components):
        raise ValueError(f"the multiclass network in {t.model_folder} has {clf.n_classes} outputs for "
                         f"{len(t.components)} components; retrain it")
    return clf


def phi_star_split(t: Templates) -> str:
    """The split the phi* templates are fitted on: train, or template when some component is weighted."""
    return "template" if t.weights else "train"


def event_weights(store, t: Templates, split: str) -> dict[str, np.ndarray]:
    """{component: its events' weights in ``split``} for the weighted components (templates.weights)."""
    return {c: store.weights(c, name, split, address=addr, network=t.weight_network) for c, name, addr in t.weights}


def _pair_weights(w: Mapping[str, np.ndarray], components, values) -> np.ndarray | None:
    """Per-event weights of two components' concatenated events (1 for an unweighted one), or None."""
    if not w:
        return None
    return np.concatenate([w.get(c, np.ones(v.shape[0])) for c, v in zip(components, values)])


def build(store, t: Templates):
    """The templates object and the classifier (nn) for ``t``."""
    from ...stats.components import KDEComponents, fit_phi_star_components
    from ...stats.templates import KDETemplates, fit_phi_star_templates

    many = len(t.components) > 2
    if t.estimator == "phi_star":
        # fitted on the train split; with weights on the template split, since the reweighting networks
        # trained on the train split and their weights there are fitted to it
        split = phi_star_split(t)
        values = _values(store, t, split)
        w = event_weights(store, t, split)
        if many:
            return fit_phi_star_components(dict(zip(t.components, values)), pair=t.components[:2],
                                           weights=w or None), None
        v0, v1 = values
        return fit_phi_star_templates(np.concatenate([v0, v1]), np.r_[np.zeros(v0.size, bool), np.ones(v1.size, bool)],
                                      weights=_pair_weights(w, t.components, values)), None
    clf = _classifiers(t)
    values = _values(store, t, "template", clf)
    w = event_weights(store, t, "template")
    if t.estimator == "ratio":
        # weighted: the networks trained on the same components' weights (train stage), c_k weighted
        from ...stats.ratios import DirectRatioComponents, DirectRatioTemplates

        loss = next(iter(clf.values())).loss
        cls = DirectRatioComponents if many else DirectRatioTemplates
        return cls(dict(zip(t.components, values)), loss=loss, weights=w or None), clf
    s = dict(t.settings)
    s["clip"] = s.pop("logit_clip")
    if t.estimator in RATIO_ESTIMATORS or (many and t.estimator == "ratio_calibrated"):
        from ...stats.ratios import RatioComponents

        method = {"nn_multiclass": "multiclass", "nn_pairwise": "pairwise"}.get(t.estimator, "likelihood_ratio")
        return RatioComponents(dict(zip(t.components, values)), method=method, weights=w or None, **s), clf
    if many:
        return KDEComponents(dict(zip(t.components, values)), weights=w or None, **s), clf
    v0, v1 = values
    return KDETemplates(np.concatenate([v0, v1]), np.r_[np.zeros(v0.size, bool), np.ones(v1.size, bool)],
                        weights=_pair_weights(w, t.components, values), **s), clf


def _kde_closure(templates, test, weights) -> dict:
    """The closure of p_1 / p_0 of two KDE templates at the test events, clipped as every ratio is
    (weighted means for a weighted component: ``weights`` as ``event_weights``)."""
    from ...stats.ratios import RATIO_CLIP, ratio_closure

    def r(v):
        p1, p0 = templates.densities(v)
        with np.errstate(divide="ignore", invalid="ignore"):
            # a vanishing reference density: the upper clip; both vanishing: the lower one (as RatioComponents)
            out = np.where(p0 > 0, p1 / p0, np.where(p1 > 0, RATIO_CLIP, 1.0 / RATIO_CLIP))
        return np.clip(out, 1.0 / RATIO_CLIP, RATIO_CLIP)

    return ratio_closure(r(test[0]), r(test[1]), w_ref=weights[0], w_k=weights[1])


def templates_task(t: Templates, store_path: str) -> dict:
    """Build one folder's templates, evaluate them on the test pool, write the record last."""
    from ...store import EventStore
    from ...store.artefacts import save_templates, save_test_pool

    store = EventStore(store_path)
    os.makedirs(t.folder, exist_ok=True)
    templates, clf = build(store, t)
    test = _values(store, t, "test", clf)
    # the closure of a weighted component's ratio is a weighted mean over its held-out events
    w_test = event_weights(store, t, "test")
    save_test_pool(t.folder, templates, dict(zip(t.components, test)))
    save_templates(t.folder, templates, components=t.components)
    if len(t.components) > 2:
        # the limits of alpha depend on the nuisance fractions: the fit takes the support nodes
        info = {**templates.info(), "support_nodes": int(templates.support_nodes().shape[0])}
        if t.estimator in RATIO_ESTIMATORS + LEARNED_RATIO_ESTIMATORS:
            # held-out events: the mean of r_k over reference events and of 1 / r_k over k events are 1
            info["closure"] = templates.closure(dict(zip(t.components, test)), w_test)
    else:
        if t.estimator == "phi_star":
            info = {"a": templates.a, "a_err": templates.a_err, "c": templates.c}
        elif t.estimator == "ratio":
            info = templates.info()
        else:
            info = {"bandwidths": list(templates.bandwidths), "space": templates.space}
        if t.estimator == "ratio":
            info["closure"] = templates.closure(dict(zip(t.components, test)), w_test)
        elif t.estimator == "ratio_calibrated":
            info["closure"] = {t.components[1]: _kde_closure(templates, test, [w_test.get(c) for c in t.components])}
        lo, hi = templates.positivity_limits()
        info["positivity_limits"] = [float(lo), float(hi)]
    info["pool_sizes"] = {c: int(v.size) for c, v in zip(t.components, test)}
    if t.weights:   # what the weighted components' templates were built from
        from ...stats.weights import effective_sample_size

        split = phi_star_split(t) if t.estimator == "phi_star" else "template"
        info["weights"] = {c: {"name": name, "address": addr, "network": t.weight_network, "split": split,
                               "n_events": int(v.size), "effective_sample_size": effective_sample_size(v)}
                           for (c, name, addr), v in zip(t.weights, event_weights(store, t, split).values())}
    paths = {"events": os.path.abspath(store_path)}
    if t.model_folder:
        paths["model"] = os.path.abspath(t.model_folder)
    if t.pairwise:
        paths["pairwise_models"] = {k: os.path.abspath(folder) for k, _, folder in t.pairwise}
    if t.ratio_models:
        paths["ratio_models"] = {k: os.path.abspath(folder) for k, _, folder in t.ratio_models}
    rec = StageRecord(stage=NAME, address=t.address, version=VERSION, settings=t.slice(),
                      inputs=t.inputs, paths=paths, info=info)
    return rec.write(t.folder).to_json()
