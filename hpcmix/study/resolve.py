"""Resolve a study once, on the client: package defaults < dask config < job file < command line.

The four layers share one key layout (the package's ``hpcmix.yaml``); a later
layer's value wins, an explicit ``null`` included. Every field is checked where it
was given (the job file's errors name the job file, ``--set``'s name ``--set``)
and again once merged, before any cluster starts. Nothing downstream reads config.
"""

from __future__ import annotations

import copy
import json
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import yaml

from ..schema import ConfigError, Field, check_section, is_int, is_positive_number, is_str, optional
from .model import (ESTIMATORS, N_EVENTS_OF, RATIO_ESTIMATORS, SMEARED, SPLITS, TREATMENTS, WEIGHT_NETWORKS, AUCStudy, GenerateSettings, ParameterOfInterest,
                    RatioSettings,
                    SmearingSettings, Study, TemplateSettings, ToySettings, frozen_view)

COMMAND_LINE = "<command line>"


# -- the schema: one table per section, shared by every layer ------------------------------
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _distinct_list(item_ok):
    return lambda v: (isinstance(v, list) and len(v) > 0 and len(set(map(repr, v))) == len(v)
                      and all(item_ok(x) for x in v))


def _is_features(v: Any) -> bool:
    return is_str(v) or (isinstance(v, list) and len(v) > 0 and all(isinstance(x, str) for x in v))


def _is_events(v: Any) -> bool:
    return (isinstance(v, Mapping) and set(v) == set(SPLITS) and all(is_int(n, 1) for n in v.values()))


_is_mapping = lambda v: isinstance(v, Mapping)  # noqa: E731


def _losses() -> tuple[str, ...]:
    from ..train.losses import LOSSES

    return tuple(LOSSES)

TOP_FIELDS = {
    "name": Field(is_str, "a non-empty string", default=None),
    "description": Field(lambda v: isinstance(v, str), "a string", default=""),
    "output": Field(optional(is_str), "a folder path (default hpcmix-output/<name>)", default=None),
    "seed": Field(lambda v: is_int(v, 0) and v < 2**63, "an integer in [0, 2^63)", default=None),
    "components": Field(_distinct_list(is_str), "a list of distinct process names, at least two", default=None),
    "poi": Field(_is_mapping, "a mapping (name, fraction_of, among)", default=None),
    "processes": Field(_is_mapping, "a mapping of process definitions", default=None),
    "generate": Field(_is_mapping, "a mapping (profile, chunk_size, max_tries_factor, events)", default=None),
    "selection": Field(_is_mapping, "a mapping of selection cuts", default=None),
    "smearing": Field(_is_mapping, "a mapping (variants, charged_pion, neutral_pion) or a list of variants",
                      default=None),
    "features": Field(_is_mapping, "a mapping (network_inputs), a named input set or a list of feature names",
                      default=None),
    "classifier": Field(_is_mapping, "a mapping of classifier settings", default=None),
    "templates": Field(_is_mapping, "a mapping of template settings", default=None),
    "toys": Field(_is_mapping, "a mapping (estimators, alpha, n_events, n_toys, batch_size)", default=None),
    "auc_study": Field(lambda v: v is None or isinstance(v, Mapping), "a mapping (sets, smearing, classifier) or null",
                       default=None),
    "estimates": Field(_is_mapping, "a mapping of measured rates (hpcmix.yaml)", default=None),
    "ratio": Field(_is_mapping, "a mapping (loss, classifier)", default=None),
    "reweight": Field(lambda v: isinstance(v, Mapping) and all(is_str(k) and isinstance(s, Mapping)
                                                               for k, s in v.items()),
                      "a mapping weight name -> {source, target, blind, ...} (docs/stages/reweight.md)",
                      default=None),
}
POI_FIELDS = {
    "name": Field(is_str, "a non-empty string (the results' name for it)"),
    "fraction_of": Field(is_str, "a component name"),
    "among": Field(_distinct_list(is_str), "a list of two distinct component names"),
}
GENERATE_FIELDS = {
    "profile": Field(lambda v: v in ("full", "fast"), "'full' or 'fast'"),
    "chunk_size": Field(lambda v: is_int(v, 1), "an integer >= 1 (selected events per task)"),
    "max_tries_factor": Field(lambda v: is_int(v, 1), "an integer >= 1"),
    "events": Field(_is_events, "a mapping train/template/test -> integer >= 1 (selected events per component)"),
}
_PION_FIELDS = {
    "sigma_theta": Field(lambda v: _is_number(v) and v >= 0, "a number >= 0 (rad)"),
    "sigma_e_rel": Field(lambda v: _is_number(v) and v >= 0, "a number >= 0 (sigma_E / E)"),
}
SMEARING_FIELDS = {
    "variants": Field(_distinct_list(lambda v: v in SMEARED), f"a non-empty list from {list(SMEARED)}"),
    "charged_pion": Field(_is_mapping, "a mapping (sigma_theta, sigma_e_rel)"),
    "neutral_pion": Field(_is_mapping, "a mapping (sigma_theta, sigma_e_rel)"),
}
FEATURE_FIELDS = {"network_inputs": Field(_is_features, "a named input set or a list of feature names")}
TEMPLATE_FIELDS = {
    "space": Field(lambda v: v in ("logit", "reflect"), "'logit' or 'reflect'"),
    "bandwidth": Field(lambda v: v in ("scott", "silverman") or is_positive_number(v),
                       "'scott', 'silverman' or a number > 0 (estimation-space units)"),
    "adaptive": Field(lambda v: isinstance(v, bool), "true (Abramson adaptive kernels) or false"),
    "grid_size": Field(lambda v: is_int(v, 64), "an integer >= 64"),
    "logit_clip": Field(lambda v: is_positive_number(v) and v < 0.5, "a number in (0, 0.5)"),
    "positivity_grid": Field(lambda v: is_int(v, 101), "an integer >= 101"),
    "positivity_quantile": Field(lambda v: _is_number(v) and 0 <= v < 0.5, "a number in [0, 0.5)"),
    "weights": Field(lambda v: isinstance(v, Mapping) and all(is_str(k) and is_str(n) for k, n in v.items()),
                     "a mapping component -> weight name (a reweight: section whose source is that component)"),
    "weight_networks": Field(lambda v: v in WEIGHT_NETWORKS,
                             f"one of {list(WEIGHT_NETWORKS)} (all: templates and toys with every reweighting "
                             "network's weights, the network-choice systematic)"),
}
TOYS_FIELDS = {
    "estimators": Field(_distinct_list(lambda v: v in ESTIMATORS), f"a non-empty list from {list(ESTIMATORS)}"),
    "alpha": Field(_distinct_list(lambda v: _is_number(v) and 0 <= v <= 1),
                   "a non-empty list of distinct numbers in [0, 1]"),
    "n_events": Field(_distinct_list(lambda v: is_int(v, 1)),
                      "a non-empty list of distinct integers >= 1 (events per test set)"),
    "n_toys": Field(lambda v: is_int(v, 1), "an integer >= 1 (test sets per cell)"),
    "batch_size": Field(lambda v: is_int(v, 1), "an integer >= 1 (toys per task)"),
    "fractions": Field(lambda v: isinstance(v, Mapping) and all(
        is_str(k) and _distinct_list(lambda x: _is_number(x) and 0 <= x < 1)(f) for k, f in v.items()),
        "a mapping component -> list of distinct true fractions in [0, 1) (the nuisance-fraction grid)"),
    "treatments": Field(_distinct_list(lambda v: v in TREATMENTS),
                        f"a non-empty list from {list(TREATMENTS)} (how the fit treats nuisance fractions)"),
    "constraint_width": Field(lambda v: isinstance(v, Mapping) and all(is_str(k) for k in v),
                              "a mapping component -> Gaussian constraint width (a number > 0)"),
    "treatment_of": Field(lambda v: isinstance(v, Mapping) and all(is_str(k) and t in TREATMENTS for k, t in v.items()),
                          f"a mapping nuisance component -> one of {list(TREATMENTS)} (its treatment in every fit)"),
    "weights": Field(lambda v: isinstance(v, Mapping) and all(is_str(k) and is_str(n) for k, n in v.items()),
                     "a mapping component -> weight name (its test-pool events drawn in proportion to the weight)"),
    "n_events_of": Field(lambda v: v in N_EVENTS_OF,
                         f"one of {list(N_EVENTS_OF)} (all: N = n_events; signal: N = n_events / (1 - nuisance "
                         "fractions))"),
}
RATIO_FIELDS = {
    "loss": Field(lambda v: v in _losses(), f"one of the likelihood-ratio losses ({', '.join(_losses())})"),
    "classifier": Field(_is_mapping, "a mapping of classifier settings (overrides for the ratio networks)"),
}
_is_bound = lambda v: v is None or _is_number(v)  # noqa: E731
BLIND_FIELDS = {
    "feature": Field(is_str, "a stored feature name (hpcmix.physics.features.FEATURE_NAMES), e.g. m_vis"),
    "min": Field(_is_bound, "a number or null (no lower edge)", default=None),
    "max": Field(_is_bound, "a number or null (no upper edge)", default=None),
}
REWEIGHT_FIELDS = {
    "source": Field(is_str, "a process name (the sample that gets the weights)"),
    "target": Field(is_str, "a process name (the sample the source is reweighted to)"),
    "smearing": Field(lambda v: v in SMEARED, f"one of {list(SMEARED)} (the feature set the networks see)",
                      default="detector"),
    "inputs": Field(lambda v: v is None or _is_features(v),
                    "a named input set, a list of feature names, or null (the study's features.network_inputs)",
                    default=None),
    "loss": Field(lambda v: v in _losses(), f"one of the likelihood-ratio losses ({', '.join(_losses())})",
                  default="exponential"),
    "networks": Field(lambda v: is_int(v, 1), "an integer >= 1 (networks with seeds seed, seed + 1, ...: the "
                      "network-choice systematic)", default=1),
    "blind": Field(lambda v: v is None or isinstance(v, Mapping), "a mapping (feature, min, max) or null",
                   default=None),
    "classifier": Field(_is_mapping, "a mapping of classifier settings (overrides for these networks)", default={}),
    "different_processes": Field(lambda v: isinstance(v, bool), "true or false (source and target of different "
                                 "processes on purpose)", default=False),
    "two_sample_test": Field(lambda v: isinstance(v, bool), "true or false (fresh networks tell target from "
                             "source before and after reweighting)", default=True),
}
AUC_STUDY_FIELDS = {
    "sets": Field(lambda v: isinstance(v, list) and len(v) > 0 and all(_is_features(x) for x in v),
                  "a non-empty list of network-input sets (names or lists of feature names)"),
    "smearing": Field(lambda v: v in SMEARED, f"one of {list(SMEARED)}", default="none"),
    "classifier": Field(_is_mapping, "a mapping of classifier settings", default={}),
}
#: sections checked field by field (the others: classifier, selection, estimates, processes
#: are checked by the objects they build)
SECTIONS = {"poi": POI_FIELDS, "generate": GENERATE_FIELDS, "smearing": SMEARING_FIELDS,
            "features": FEATURE_FIELDS, "templates": TEMPLATE_FIELDS, "toys": TOYS_FIELDS, "ratio": RATIO_FIELDS}
#: old job-file names still read, with their new place
RENAMED = {("samples",): ("components",), ("toys", "methods"): ("toys", "estimators")}


# -- layers ----------------------------------------------------------------------------------
def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in ``over`` (``None`` included) replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def normalise_layer(raw: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """One layer in the canonical layout: renamed keys moved, shorthands expanded, fields checked."""
    data = dict(raw)
    for old, new in RENAMED.items():
        holder = data if len(old) == 1 else data.get(old[0])
        if isinstance(holder, Mapping) and old[-1] in holder:
            holder = data if len(old) == 1 else dict(holder)
            if new[-1] in holder:
                raise ConfigError(f"{source}: '{'.'.join(old)}' is the old name of '{'.'.join(new)}'; give one of them")
            holder[new[-1]] = holder.pop(old[-1])
            if len(old) > 1:
                data[old[0]] = holder
    # shorthands a job file may use: `smearing: [none, detector]`, `features: reference25`
    if isinstance(data.get("smearing"), list):
        data["smearing"] = {"variants": data["smearing"]}
    if "features" in data and not isinstance(data["features"], Mapping):
        data["features"] = {"network_inputs": data["features"]}
    check_section(data, TOP_FIELDS, source=source, require=False)
    for name, fields in SECTIONS.items():
        if data.get(name) is not None:
            check_section(data[name], fields, source=source, prefix=f"{name}.", require=False)
    for pion in ("charged_pion", "neutral_pion"):
        section = (data.get("smearing") or {}).get(pion)
        if section is not None:
            check_section(section, _PION_FIELDS, source=source, prefix=f"smearing.{pion}.", require=False)
    if data.get("auc_study") is not None:
        check_section(data["auc_study"], AUC_STUDY_FIELDS, source=source, prefix="auc_study.", require=False)
    if data.get("classifier") is not None:
        _classifier(data["classifier"], source=source)
    if (data.get("ratio") or {}).get("classifier") is not None:
        from ..train.settings import ClassifierSettings

        _check_keys(data["ratio"]["classifier"], [f.name for f in dataclasses.fields(ClassifierSettings)],
                    source=source, prefix="ratio.classifier.")
        if "output_batch_norm" in data["ratio"]["classifier"]:
            raise ConfigError(f"{source}: ratio.classifier.output_batch_norm is not used: a ratio network's output "
                              "u is a free real number with no batch normalisation; remove it")
    if data.get("selection") is not None:
        _check_keys(data["selection"], _selection_keys(), source=source, prefix="selection.")
    for wname, section in (data.get("reweight") or {}).items():
        check_section(section, REWEIGHT_FIELDS, source=source, prefix=f"reweight.{wname}.", require=False)
        if section.get("blind") is not None:
            check_section(section["blind"], BLIND_FIELDS, source=source, prefix=f"reweight.{wname}.blind.",
                          require=False)
    return data


def parse_sets(pairs: Sequence[str], *, source: str = "--set") -> dict[str, Any]:
    """``("toys.n_toys=100", "classifier.hidden_layers=[64, 64]")`` -> a nested layer (values read as YAML)."""
    layer: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"{source}: {pair!r}: write SECTION.KEY=VALUE, e.g. toys.n_toys=100")
        key, text = (s.strip() for s in pair.split("=", 1))
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"{source}: {key!r} is not a dotted key such as toys.n_toys")
        node = layer
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: {key!r} sets a field inside {p!r}, which is also given a value")
        node[parts[-1]] = value
    return layer


def read_job_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw mapping of a job file; errors name the file."""
    source = os.fspath(path)
    try:
        with open(source) as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such job file") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a folder, not a job file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a job file is a mapping of fields (name, generate, toys, ...), "
                          f"got {type(raw).__name__}")
    if "name" not in raw:
        raise ConfigError(f"{source}: missing required field 'name' (a non-empty string)")
    return raw


# -- the resolved study ----------------------------------------------------------------------
def resolve_study(job: Mapping[str, Any] | None = None, *, source: str = COMMAND_LINE,
                  sets: Sequence[str] = (), overrides: Mapping[str, Any] | None = None,
                  base: Mapping[str, Any] | None = None, mixture: bool = True) -> Study:
    """The study from every layer: ``base`` (default: package defaults + dask config) < ``job`` <
    ``overrides`` (a nested mapping, e.g. from CLI options) < ``sets`` (``--set KEY=VALUE``).

    ``mixture=False`` (``hpcmix generate``) allows a single component and a parameter of
    interest not among the components: an event store need not be a mixture.
    """
    from .. import config

    tree = dict(base) if base is not None else config.tree()
    tree = normalise_layer(tree, source="hpcmix config (package defaults < dask config)")
    layers = [(job or {}, source), (overrides or {}, "command-line options"), (parse_sets(sets), "--set")]
    for layer, where in layers:
        tree = merge(tree, normalise_layer(layer, source=where))
    where = f"settings resolved from defaults, dask config, {source} and the command line"
    return build_study(tree, source=source, where=where, mixture=mixture)


def load_study(path: str | os.PathLike, *, sets: Sequence[str] = (),
               overrides: Mapping[str, Any] | None = None) -> Study:
    """Read, validate and resolve a job file (with optional command-line layers)."""
    return resolve_study(read_job_file(path), source=os.fspath(path), sets=sets, overrides=overrides)


def build_study(tree: Mapping[str, Any], *, source: str, where: str, mixture: bool = True) -> Study:
    """Check the merged tree as a whole and freeze it into a :class:`Study`."""
    from ..generate.processes import load_catalogue
    from ..physics.features import network_inputs
    from ..physics.selection import SelectionCuts

    t = {k: tree.get(k) for k in TOP_FIELDS}
    for name, fields in SECTIONS.items():
        t[name] = check_section(t[name] or {}, fields, source=where, prefix=f"{name}.")
    for pion in ("charged_pion", "neutral_pion"):
        check_section(t["smearing"][pion], _PION_FIELDS, source=where, prefix=f"smearing.{pion}.")
    name = t["name"] or "hpcmix"
    components = tuple(t["components"])
    # component names key artefact arrays (density_<d>_on_<c>) and results variables
    bad = [c for c in components if not re.fullmatch(r"[A-Za-z0-9_]+", c)]
    if bad:
        raise ConfigError(f"{where}: component name(s) {bad} may hold only letters, digits and underscores "
                          "(they name arrays in the stored artefacts); rename the process")
    try:
        catalogue = load_catalogue(t["processes"] or {}, source=source)
        for c in components:
            catalogue.get(c)
    except ValueError as err:
        raise ConfigError(f"{source}: components/processes: {err}") from None
    if mixture:
        if len(components) < 2:
            raise ConfigError(f"{where}: 'components' needs at least two processes to mix, got {list(components)}")
        poi = _poi(t["poi"], components, where=where)
        nuisance = _nuisance_settings(t["toys"], components, poi, where=where)
    else:
        nuisance = {}
        poi = ParameterOfInterest(name=t["poi"]["name"], fraction_of=components[-1], among=components)
    try:
        inputs = tuple(network_inputs(t["features"]["network_inputs"]))
    except ValueError as err:
        raise ConfigError(f"{where}: field 'features.network_inputs': {err}") from None
    _check_keys(t["selection"], _selection_keys(), source=where, prefix="selection.")
    try:
        cuts = SelectionCuts(**t["selection"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: selection: {err}") from None
    seed = int(t["seed"])
    # a null classifier seed means the study seed
    own_seed = t["classifier"].get("seed")
    classifier = _classifier({**t["classifier"], "seed": seed if own_seed is None else own_seed}, source=where)
    g, sm, tp, ty = t["generate"], t["smearing"], t["templates"], t["toys"]
    auc = _auc_study(t["auc_study"], t["classifier"], seed, where=where)
    # the ratio networks: the study's classifier with ratio.classifier's overrides (seed included)
    ratio_net = {**t["classifier"], **t["ratio"]["classifier"]}
    if ratio_net.get("seed") is None:
        ratio_net["seed"] = seed
    ratio = RatioSettings(loss=t["ratio"]["loss"], classifier=_classifier(ratio_net, source=f"{where} (ratio.classifier)"))
    reweight = tuple(_reweight(n, sec, catalogue=catalogue, classifier=t["classifier"], seed=seed, inputs=inputs,
                               cuts=cuts, where=where) for n, sec in (t["reweight"] or {}).items())
    seen = {}
    for w in reweight:
        key = json.dumps(w.settings_slice(), sort_keys=True)
        if key in seen:
            raise ConfigError(f"{where}: 'reweight.{w.name}' has the same settings as 'reweight.{seen[key]}', so "
                              "they would be the same weights; give one of them, or make them differ")
        seen[key] = w.name
    for section in ("templates", "toys"):
        _check_weight_uses(section, t[section]["weights"], components, reweight, where=where)
    if tp["weight_networks"] == "all":
        # by name: templates and toys may weight one component with two different weights
        _check_weight_networks(set(tp["weights"].values()) | set(ty["weights"].values()), reweight, where=where)
    return Study(
        name=name, description=t["description"] or "", source=source,
        output=t["output"] or os.path.join("hpcmix-output", name), seed=seed, components=components, poi=poi,
        processes=frozen_view(t["processes"] or {}),
        generate=GenerateSettings(profile=g["profile"], chunk_size=int(g["chunk_size"]),
                                  max_tries_factor=int(g["max_tries_factor"]),
                                  events=frozen_view({k: int(g["events"][k]) for k in SPLITS})),
        selection=cuts,
        smearing=SmearingSettings(variants=tuple(sm["variants"]),
                                  charged_pion=frozen_view({k: float(v) for k, v in sm["charged_pion"].items()}),
                                  neutral_pion=frozen_view({k: float(v) for k, v in sm["neutral_pion"].items()})),
        network_inputs=inputs, classifier=classifier,
        templates=TemplateSettings(**{k: tp[k] for k in TEMPLATE_FIELDS if k != "weights"},
                                   weights=frozen_view(dict(tp["weights"]))),
        toys=ToySettings(estimators=tuple(ty["estimators"]), alpha=tuple(float(a) for a in ty["alpha"]),
                         n_events=tuple(int(n) for n in ty["n_events"]), n_toys=int(ty["n_toys"]),
                         batch_size=int(ty["batch_size"]), weights=frozen_view(dict(ty["weights"])), **nuisance),
        auc_study=auc, estimates=frozen_view(_estimates(t["estimates"] or {}, where=where)), ratio=ratio,
        reweight=reweight,
    )


def _estimates(est: Mapping[str, Any], *, where: str) -> Mapping[str, Any]:
    """The measured rates; the GPU rates are [batch size, samples / s] pairs (a list, so that a layer
    replaces the whole table rather than merging into the package's)."""
    gpu = est.get("training_samples_per_gpu_second")
    if gpu is not None and not (isinstance(gpu, list) and gpu and all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], int) and not isinstance(p[0], bool)
            and p[0] >= 1 and _is_number(p[1]) and p[1] > 0 for p in gpu)):
        raise ConfigError(f"{where}: estimates.training_samples_per_gpu_second must be a list of "
                          f"[batch size, samples per second] pairs such as [[264, 94500], [4096, 1610000]], "
                          f"got {gpu!r}")
    return est


def _check_weight_uses(section: str, uses: Mapping[str, str], components, reweight, *, where: str) -> None:
    """templates.weights / toys.weights: each a component of the study and a weight of its own sample
    (every estimator's templates take weights)."""
    by_name = {w.name: w for w in reweight}
    for component, name in uses.items():
        field_ = f"'{section}.weights.{component}'"
        if component not in components:
            raise ConfigError(f"{where}: {field_} names {component!r}, which is not a component of the study; "
                              f"components: {list(components)}")
        if name not in by_name:
            raise ConfigError(f"{where}: {field_} asks for weight {name!r}, which no reweight: section makes; "
                              f"weights of this study: {sorted(by_name) or 'none (add a reweight: section)'}")
        if by_name[name].source != component:
            raise ConfigError(f"{where}: {field_} asks for weight {name!r}, which weights the events of "
                              f"{by_name[name].source!r}, not of {component!r}; use a weight whose source is "
                              f"{component!r}")


def _check_weight_networks(uses: set[str], reweight, *, where: str) -> None:
    """templates.weight_networks = all: the weights used have two or more networks, the same number."""
    if not uses:
        raise ConfigError(f"{where}: 'templates.weight_networks: all' repeats the templates and toys with every "
                          "reweighting network's weights, but neither templates.weights nor toys.weights names a "
                          "weight; name one, or drop weight_networks")
    counts = {w.name: w.networks for w in reweight if w.name in uses}
    if len(set(counts.values())) != 1 or min(counts.values()) < 2:
        raise ConfigError(f"{where}: 'templates.weight_networks: all' needs the weights it varies to have the same "
                          f"number of networks, two or more; reweight.<name>.networks: {counts}")


def _reweight(name: str, section: Mapping[str, Any], *, catalogue, classifier: Mapping[str, Any], seed: int,
              inputs: tuple[str, ...], cuts, where: str):
    """One named weight, checked against the processes and the selection (before any cluster work)."""
    from ..physics.features import FEATURE_NAMES, network_inputs
    from .model import BlindedRegion, ReweightSettings

    prefix = f"reweight.{name}"
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ConfigError(f"{where}: weight name {name!r} ({prefix}) may hold only letters, digits and underscores "
                          "(it names an array in the event store)")
    s = check_section(section, REWEIGHT_FIELDS, source=where, prefix=f"{prefix}.")
    procs = {}
    for role in ("source", "target"):
        try:
            procs[role] = catalogue.get(s[role])
        except ValueError as err:
            raise ConfigError(f"{where}: field '{prefix}.{role}': {err}") from None
    if s["source"] == s["target"]:
        raise ConfigError(f"{where}: '{prefix}' reweights {s['source']!r} to itself; give a target of another "
                          "configuration (a process with variant_of, e.g. other shower settings)")
    a, b = procs["source"].physics_process, procs["target"].physics_process
    if a != b and not s["different_processes"]:
        raise ConfigError(
            f"{where}: '{prefix}' reweights {s['source']!r} (process {a}) to {s['target']!r} (process {b}): "
            "reweighting corrects one process's simulation, so source and target are normally two configurations "
            f"of one process (define the target with 'variant_of: {a}'); if the two processes differ on purpose, "
            f"set {prefix}.different_processes: true")
    try:
        net_inputs = inputs if s["inputs"] is None else tuple(network_inputs(s["inputs"]))
    except ValueError as err:
        raise ConfigError(f"{where}: field '{prefix}.inputs': {err}") from None
    blind = None
    if s["blind"] is not None:
        b_ = check_section(s["blind"], BLIND_FIELDS, source=where, prefix=f"{prefix}.blind.")
        if b_["feature"] not in FEATURE_NAMES:
            raise ConfigError(f"{where}: field '{prefix}.blind.feature' is {b_['feature']!r}, not a stored feature; "
                              f"choose one of {list(FEATURE_NAMES)}")
        if b_["min"] is None and b_["max"] is None:
            raise ConfigError(f"{where}: '{prefix}.blind' has neither min nor max, so it would blind every event; "
                              "give the region's edges")
        if b_["min"] is not None and b_["max"] is not None and not b_["min"] < b_["max"]:
            raise ConfigError(f"{where}: '{prefix}.blind' has min {b_['min']} >= max {b_['max']}: an empty region; "
                              "give min < max")
        blind = BlindedRegion(feature=b_["feature"], min=None if b_["min"] is None else float(b_["min"]),
                              max=None if b_["max"] is None else float(b_["max"]))
        if blind.feature == "m_vis" and s["smearing"] == "none":
            # the selection's m_vis window is on these very values: a region covering it removes every event
            lo, hi = cuts.m_vis_min, cuts.m_vis_max
            # the selection keeps lo <= m_vis < hi
            if (blind.min is None or blind.min <= lo) and (blind.max is None or (hi is not None and blind.max >= hi)):
                raise ConfigError(f"{where}: '{prefix}.blind' ({blind.describe()}) covers the whole selected m_vis "
                                  f"range [{lo:g}, {'inf' if hi is None else f'{hi:g}'}) GeV, so it removes every "
                                  "training event; blind a narrower window")
    net = {**classifier, **s["classifier"]}
    if "output_batch_norm" in s["classifier"]:
        raise ConfigError(f"{where}: {prefix}.classifier.output_batch_norm is not used: a ratio network's output "
                          "u is a free real number with no batch normalisation; remove it")
    if net.get("seed") is None:
        net["seed"] = seed
    return ReweightSettings(name=name, source=s["source"], target=s["target"], smearing=s["smearing"],
                            inputs=net_inputs, loss=s["loss"], networks=int(s["networks"]), blind=blind,
                            classifier=_classifier(net, source=f"{where} ({prefix}.classifier)"),
                            different_processes=bool(s["different_processes"]),
                            two_sample_test=bool(s["two_sample_test"]))


def _poi(section: Mapping[str, Any], components: tuple[str, ...], *, where: str) -> ParameterOfInterest:
    poi = ParameterOfInterest(name=section["name"], fraction_of=section["fraction_of"],
                              among=tuple(section["among"]))
    unknown = [c for c in (poi.fraction_of, *poi.among) if c not in components]
    if unknown:
        raise ConfigError(f"{where}: the parameter of interest names component(s) {sorted(set(unknown))} that the "
                          f"study does not have; components: {list(components)} (set 'poi.fraction_of' and "
                          "'poi.among' to components of the study)")
    if poi.fraction_of not in poi.among:
        raise ConfigError(f"{where}: 'poi.fraction_of' ({poi.fraction_of}) must be one of 'poi.among' "
                          f"{list(poi.among)}")
    if len(poi.among) != 2:
        raise ConfigError(f"{where}: 'poi.among' must name two components (the parameter of interest is the "
                          f"fraction of one among two; the other components are nuisances), got {list(poi.among)}")
    return poi


def _nuisance_settings(toys: Mapping[str, Any], components: tuple[str, ...], poi: ParameterOfInterest, *,
                       where: str) -> dict[str, Any]:
    """toys.fractions / treatments / constraint_width, checked against the components (K > 2 only)."""
    nuisances = [c for c in components if c not in poi.among]
    grid = dict(toys.get("fractions") or {})
    widths = dict(toys.get("constraint_width") or {})
    unknown = sorted(set(grid) - set(components))
    if unknown:
        raise ConfigError(f"{where}: 'toys.fractions' names component(s) {unknown} that the study does not have; "
                          f"components: {list(components)}")
    inside = sorted(set(grid) & set(poi.among))
    if inside:
        raise ConfigError(f"{where}: 'toys.fractions' gives {inside}, but the components of the parameter of "
                          f"interest ({list(poi.among)}) share what the nuisances leave (by toys.alpha); give "
                          f"fractions only for {nuisances or 'the nuisance components (this study has none)'}")
    own = dict(toys.get("treatment_of") or {})
    bad_own = sorted(set(own) - set(nuisances))
    if bad_own:
        raise ConfigError(f"{where}: 'toys.treatment_of' names {bad_own}, which are not nuisance components of "
                          f"the study; nuisances: {nuisances}")
    bad_widths = sorted(set(widths) - set(nuisances))
    if bad_widths:
        raise ConfigError(f"{where}: 'toys.constraint_width' names {bad_widths}, which are not nuisance "
                          f"components of the study; nuisances: {nuisances}")
    ratio = [e for e in toys.get("estimators") or () if e in RATIO_ESTIMATORS]
    if not nuisances:
        if ratio:
            raise ConfigError(f"{where}: estimator(s) {ratio} fit density ratios of the nuisance components to the "
                              f"reference; this study has only {list(components)} (for two components they are "
                              "the nn estimator): add background components or use nn")
        if toys.get("n_events_of", "all") != "all":
            raise ConfigError(f"{where}: 'toys.n_events_of: signal' scales N by the nuisance fractions; this study "
                              "has no nuisance components (use all)")
        return {}
    missing = [c for c in nuisances if c not in grid]
    if missing:
        raise ConfigError(f"{where}: component(s) {missing} are outside the parameter of interest "
                          f"({poi.name} = fraction of {poi.fraction_of} among {list(poi.among)}), so their true "
                          f"fractions are a grid of the study: give toys.fractions.{missing[0]}, e.g. [0.0, 0.2, 0.5]")
    grid = {c: tuple(float(v) for v in grid[c]) for c in nuisances}
    for c, values in grid.items():
        # results cells match grid values to 1e-8 (np.isclose): keep them well apart
        if len(values) > 1 and np.diff(np.sort(values)).min() < 1e-6:
            raise ConfigError(f"{where}: 'toys.fractions.{c}' = {list(values)} has values closer than 1e-6; "
                              "give distinct fractions")
    clash = [c for c in nuisances if c.startswith("hat_")]
    if clash:
        raise ConfigError(f"{where}: nuisance component name(s) {clash} start with 'hat_', which would make the "
                          "results dimension fraction_<name> collide with the fitted-fraction variables "
                          "fraction_hat_<component>; rename the process")
    worst = sum(max(v) for v in grid.values())
    if worst >= 1:
        raise ConfigError(f"{where}: 'toys.fractions' {grid} leave no room for the signal: at the grid point "
                          f"{ {c: max(v) for c, v in grid.items()} } the nuisance fractions sum to {worst:g} >= 1; "
                          f"keep their largest values summing below 1")
    treatments = tuple(toys.get("treatments") or ("fixed", "floated"))
    if len(treatments) > 1 and set(own) == set(nuisances):
        raise ConfigError(f"{where}: 'toys.treatment_of' {own} pins every nuisance, so the treatments "
                          f"{list(treatments)} would fit the same way; give one treatment, or leave a nuisance "
                          "out of treatment_of")
    if "constrained" in treatments or "constrained" in own.values():
        need = [c for c in nuisances if c not in widths
                and own.get(c, "constrained" if "constrained" in treatments else None) == "constrained"]
        if need:
            raise ConfigError(f"{where}: 'toys.treatments' (or toys.treatment_of) makes {need[0]} constrained, so it "
                              f"needs a constraint width: give toys.constraint_width.{need[0]} (e.g. 0.05, the error "
                              "a control region would give)")
    for c, w in widths.items():
        if not (_is_number(w) and w > 0 and w < float("inf")):
            raise ConfigError(f"{where}: field 'toys.constraint_width.{c}' has value {w!r}; expected a number > 0 "
                              "(the width of the Gaussian constraint on the fraction)")
    return {"fractions": frozen_view(grid), "treatments": treatments,
            "constraint_width": frozen_view({c: float(widths[c]) for c in nuisances if c in widths}),
            "n_events_of": toys.get("n_events_of", "all"), "treatment_of": frozen_view(own)}


def _selection_keys() -> tuple[str, ...]:
    from ..physics.selection import SelectionCuts

    return tuple(f.name for f in dataclasses.fields(SelectionCuts))


def _check_keys(section: Any, known: Sequence[str], *, source: str, prefix: str) -> None:
    if not isinstance(section, Mapping):
        raise ConfigError(f"{source}: '{prefix.rstrip('.')}' must be a mapping, got {type(section).__name__}")
    for key in section:
        if key not in known:
            raise ConfigError(f"{source}: unknown field '{prefix}{key}'; allowed fields in "
                              f"{prefix.rstrip('.')}: {', '.join(known)}")


def _classifier(section: Mapping[str, Any], *, source: str):
    """ClassifierSettings from a section (a partial layer is checked on top of the paper's values)."""
    from ..train.settings import ClassifierSettings

    known = [f.name for f in dataclasses.fields(ClassifierSettings)]
    _check_keys(section, known, source=source, prefix="classifier.")
    try:
        return ClassifierSettings(**dict(section))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: classifier: {err}") from None


def _auc_study(section: Mapping[str, Any] | None, classifier: Mapping[str, Any], seed: int, *,
               where: str) -> AUCStudy | None:
    from ..physics.features import network_inputs

    if section is None:
        return None
    s = check_section(section, AUC_STUDY_FIELDS, source=where, prefix="auc_study.")
    merged = {**classifier, **s["classifier"]}
    if merged.get("seed") is None:
        merged["seed"] = seed
    settings = _classifier(merged, source=where)
    sets = []
    for spec in s["sets"]:
        try:
            inputs = tuple(network_inputs(spec))
        except ValueError as err:
            raise ConfigError(f"{where}: field 'auc_study.sets': {err}") from None
        sets.append((spec if isinstance(spec, str) else "+".join(inputs), inputs))
    return AUCStudy(sets=tuple(sets), smearing=s["smearing"], classifier=settings)
