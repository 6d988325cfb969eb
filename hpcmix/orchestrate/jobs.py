"""Job files: a whole study (events, classifier, templates, toy grid) in one validated YAML file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Mapping

import yaml

from ..schema import ConfigError, Field, check_section, is_int, is_positive_number, is_str, optional

METHODS = ("phi_star", "nn")
SMEARING_VARIANTS = ("none", "detector")


def _is_split_events(v: Any) -> bool:
    return (isinstance(v, Mapping) and set(v) == {"train", "template", "test"}
            and all(is_int(n, 1) for n in v.values()))


def _is_subset_list(allowed):
    return lambda v: (isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v)
                      and all(x in allowed for x in v))


def _is_alpha_list(v: Any) -> bool:
    return (isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v)
            and all(isinstance(a, (int, float)) and not isinstance(a, bool) and 0 <= a <= 1 for a in v))


def _is_int_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v) and all(is_int(n, 1) for n in v)


def _is_features(v: Any) -> bool:
    return is_str(v) or (isinstance(v, list) and len(v) > 0 and all(isinstance(x, str) for x in v))


JOB_FIELDS = {
    "name": Field(is_str, "a non-empty string"),
    "description": Field(lambda v: isinstance(v, str), "a string", default=""),
    "output": Field(optional(is_str), "a folder path (default hpcmix-output/<name>)", default=None),
    "seed": Field(lambda v: is_int(v, 0), "an integer >= 0", default=20180401),
    "samples": Field(lambda v: isinstance(v, list) and len(v) == 2 and all(is_str(s) for s in v) and v[0] != v[1],
                     "two distinct process names: [alpha = 0 component, alpha = 1 component]", default=["H", "A"]),
    "processes": Field(lambda v: isinstance(v, Mapping), "a mapping of process definitions", default={}),
    "generate": Field(lambda v: isinstance(v, Mapping), "a mapping (profile, chunk_size, events)"),
    "selection": Field(lambda v: isinstance(v, Mapping), "a mapping of selection cuts (hpcmix.selection)",
                       default={}),
    "smearing": Field(_is_subset_list(SMEARING_VARIANTS), f"a non-empty list from {list(SMEARING_VARIANTS)}",
                      default=list(SMEARING_VARIANTS)),
    "features": Field(_is_features, "a named network-input set or a list of feature names", default="reference25"),
    "classifier": Field(lambda v: isinstance(v, Mapping), "a mapping of classifier settings", default={}),
    "templates": Field(lambda v: isinstance(v, Mapping), "a mapping of template settings", default={}),
    "toys": Field(lambda v: isinstance(v, Mapping), "a mapping (methods, alpha, n_events, n_toys, batch_size)"),
    "auc_study": Field(lambda v: v is None or isinstance(v, Mapping),
                       "a mapping (sets, smearing, classifier) or null", default=None),
}
AUC_STUDY_FIELDS = {
    "sets": Field(lambda v: isinstance(v, list) and len(v) > 0 and all(_is_features(x) for x in v),
                  "a non-empty list of network-input sets (names or lists of feature names)"),
    "smearing": Field(lambda v: v in SMEARING_VARIANTS, f"one of {list(SMEARING_VARIANTS)}", default="none"),
    "classifier": Field(lambda v: isinstance(v, Mapping), "a mapping of classifier settings", default={}),
}
GENERATE_FIELDS = {
    "profile": Field(lambda v: v in ("full", "fast"), "'full' or 'fast'", default="full"),
    "chunk_size": Field(lambda v: is_int(v, 1), "an integer >= 1 (selected events per task)", default=2000),
    "events": Field(_is_split_events, "a mapping train/template/test -> integer >= 1 (selected events per sample)"),
    "max_tries_factor": Field(lambda v: is_int(v, 1), "an integer >= 1", default=200),
}
TOYS_FIELDS = {
    "methods": Field(_is_subset_list(METHODS), f"a non-empty list from {list(METHODS)}", default=list(METHODS)),
    "alpha": Field(_is_alpha_list, "a non-empty list of distinct numbers in [0, 1]"),
    "n_events": Field(_is_int_list, "a non-empty list of distinct integers >= 1 (events per test set)"),
    "n_toys": Field(lambda v: is_int(v, 1), "an integer >= 1 (test sets per cell)"),
    "batch_size": Field(lambda v: is_int(v, 1), "an integer >= 1 (toys per task)", default=1000),
}

TEMPLATE_FIELDS = {
    "space": Field(lambda v: v in ("logit", "reflect"), "'logit' or 'reflect'", default=None),
    "bandwidth": Field(lambda v: v in ("scott", "silverman") or is_positive_number(v),
                       "'scott', 'silverman' or a number > 0 (estimation-space units)", default=None),
    "grid_size": Field(lambda v: is_int(v, 64), "an integer >= 64", default=None),
    "logit_clip": Field(lambda v: is_positive_number(v) and v < 0.5, "a number in (0, 0.5)", default=None),
    "adaptive": Field(lambda v: isinstance(v, bool), "true (Abramson adaptive kernels) or false", default=None),
    "positivity_quantile": Field(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 0.5,
                                 "a number in [0, 0.5)", default=None),
}


def resolved_template_settings(section: Mapping[str, Any]) -> dict[str, Any]:
    """Job-file template settings with the config defaults filled in (they address the stage output)."""
    from .. import config

    return {k: config.get(f"templates.{k}", section.get(k)) for k in TEMPLATE_FIELDS}


@dataclasses.dataclass(frozen=True)
class Job:
    """A validated study definition."""

    name: str
    source: str
    output: str
    seed: int
    samples: tuple[str, str]
    processes: Mapping[str, Any]
    generate: Mapping[str, Any]
    selection: Mapping[str, Any]
    smearing: tuple[str, ...]
    features: Any
    classifier: Mapping[str, Any]
    templates: Mapping[str, Any]
    toys: Mapping[str, Any]
    description: str = ""
    auc_study: Mapping[str, Any] | None = None

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source")
        return json.loads(json.dumps(d))


def settings_hash(*parts: Any) -> str:
    """Address of a stage's output: a hash of everything that made it."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_job(path: str | os.PathLike) -> Job:
    """Read and validate a job file; every error names the file, the field and what is allowed."""
    source = os.fspath(path)
    try:
        with open(source) as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such job file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    job = check_section(raw, JOB_FIELDS, source=source)
    gen = check_section(job["generate"], GENERATE_FIELDS, source=source, prefix="generate.")
    toys = check_section(job["toys"], TOYS_FIELDS, source=source, prefix="toys.")
    _check_classifier(job["classifier"], source)
    _check_selection(job["selection"], source)
    _check_templates(job["templates"], source)
    _check_processes_and_features(job, source)
    auc = None
    if job["auc_study"] is not None:
        auc = check_section(job["auc_study"], AUC_STUDY_FIELDS, source=source, prefix="auc_study.")
        _check_classifier({**job["classifier"], **auc["classifier"]}, source)
        from ..physics.features import network_inputs

        for feature_set in auc["sets"]:
            try:
                network_inputs(feature_set)
            except ValueError as err:
                raise ConfigError(f"{source}: field 'auc_study.sets': {err}") from None
    output = job["output"] or os.path.join("hpcmix-output", job["name"])
    return Job(name=job["name"], source=source, output=output, seed=job["seed"], samples=tuple(job["samples"]),
               processes=job["processes"], generate=gen, selection=job["selection"], smearing=tuple(job["smearing"]),
               features=job["features"], classifier=job["classifier"], templates=job["templates"], toys=toys,
               description=job["description"], auc_study=auc)


def _check_classifier(section: Mapping[str, Any], source: str) -> None:
    from ..train.settings import ClassifierSettings

    known = [f.name for f in dataclasses.fields(ClassifierSettings)]
    for key in section:
        if key not in known:
            raise ConfigError(f"{source}: unknown field 'classifier.{key}'; allowed fields in classifier: "
                              f"{', '.join(known)}")
    try:
        ClassifierSettings.from_config(**section)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: classifier: {err}") from None


def _check_selection(section: Mapping[str, Any], source: str) -> None:
    from ..physics.selection import SelectionCuts

    try:
        SelectionCuts.from_config(**section)
    except ValueError as err:
        raise ConfigError(f"{source}: selection: {err}") from None


def _check_templates(section: Mapping[str, Any], source: str) -> None:
    check_section(section, TEMPLATE_FIELDS, source=source, prefix="templates.", require=False)


def _check_processes_and_features(job: Mapping[str, Any], source: str) -> None:
    from ..generate.processes import load_catalogue
    from ..physics.features import network_inputs

    try:
        catalogue = load_catalogue(job["processes"], source=source)
        for sample in job["samples"]:
            catalogue.get(sample)
    except ValueError as err:
        raise ConfigError(f"{source}: samples/processes: {err}") from None
    try:
        network_inputs(job["features"])
    except ValueError as err:
        raise ConfigError(f"{source}: field 'features': {err}") from None
