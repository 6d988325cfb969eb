"""The resolved study: one frozen object holding every setting every stage uses.

Built only by :func:`hpcmix.study.resolve_study` (defaults < dask config < job
file < command line); stages receive it, or the slice they need, as arguments.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..physics.selection import SelectionCuts
from ..train.settings import ClassifierSettings

#: smearing variant name -> whether features are taken after detector smearing
SMEARED = MappingProxyType({"none": False, "detector": True})
ESTIMATORS = ("phi_star", "nn", "nn_multiclass", "nn_pairwise", "ratio", "ratio_calibrated")
#: estimators built from several classifiers' density ratios: they need nuisance components
RATIO_ESTIMATORS = ("nn_multiclass", "nn_pairwise")
#: estimators whose networks are trained with a likelihood-ratio loss (one per component but the
#: reference, any K): ``ratio`` fits r = omega^-1(u) directly, ``ratio_calibrated`` after 1-D KDEs
LEARNED_RATIO_ESTIMATORS = ("ratio", "ratio_calibrated")
#: estimators that use a trained network
NETWORK_ESTIMATORS = ("nn",) + RATIO_ESTIMATORS + LEARNED_RATIO_ESTIMATORS
SPLITS = ("train", "template", "test")


def frozen_view(value: Any) -> Any:
    """Read-only view of nested JSON-like data (dicts -> MappingProxyType, lists -> tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: frozen_view(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(frozen_view(v) for v in value)
    return value


def to_jsonable(value: Any) -> Any:
    """Plain JSON data (dicts, lists, numbers, strings) from settings objects."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_dict"):
            return to_jsonable(value.to_dict())
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class ParameterOfInterest:
    """``name`` = f(fraction_of) / sum of f(among): the fraction of one component among some."""

    name: str
    fraction_of: str
    among: tuple[str, ...]

    @property
    def other(self) -> tuple[str, ...]:
        """The components in ``among`` besides ``fraction_of``."""
        return tuple(c for c in self.among if c != self.fraction_of)


@dataclass(frozen=True)
class GenerateSettings:
    profile: str                       # full | fast
    chunk_size: int                    # selected events per task
    max_tries_factor: int
    events: Mapping[str, int]          # split -> selected events per component


@dataclass(frozen=True)
class SmearingSettings:
    variants: tuple[str, ...]          # feature sets studied: none, detector
    charged_pion: Mapping[str, float]  # sigma_theta (rad), sigma_e_rel
    neutral_pion: Mapping[str, float]

    def widths(self) -> dict[str, float]:
        """The keyword arguments of :func:`hpcmix.physics.smearing.smear_pions`."""
        return {f"{kind}_{what}": float(getattr(self, f"{kind}_pion")[what])
                for kind in ("charged", "neutral") for what in ("sigma_theta", "sigma_e_rel")}


@dataclass(frozen=True)
class TemplateSettings:
    space: str
    bandwidth: str | float
    adaptive: bool
    grid_size: int
    logit_clip: float
    positivity_grid: int
    positivity_quantile: float
    # component -> the name of a reweight: weight its template events carry (a weighted KDE / phi* fit)
    weights: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # nominal: the weights of network 0; all: also templates and toys with each other network's weights
    weight_networks: str = "nominal"


#: templates.weight_networks: network 0 only, or every reweighting network (the network-choice systematic)
WEIGHT_NETWORKS = ("nominal", "all")
#: how a nuisance fraction (a component outside the parameter of interest) enters the fit
TREATMENTS = ("fixed", "floated", "constrained")
#: what toys.n_events counts: every event of a test set, or the expected events of the pair
N_EVENTS_OF = ("all", "signal")


@dataclass(frozen=True)
class ToySettings:
    estimators: tuple[str, ...]
    alpha: tuple[float, ...]
    n_events: tuple[int, ...]
    n_toys: int
    batch_size: int
    # K > 2 only (empty for two components): the true fraction grid of each nuisance component,
    # how the fit treats the nuisances, and the Gaussian constraint widths
    fractions: Mapping[str, tuple[float, ...]] = field(default_factory=lambda: MappingProxyType({}))
    treatments: tuple[str, ...] = ()
    constraint_width: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    # "all": a test set has n_events events; "signal": n_events of the poi.among components expected
    n_events_of: str = "all"
    # nuisances that every fit treats one way, whatever the treatment (e.g. ttbar fixed: known well)
    treatment_of: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # component -> the name of a reweight: weight; its test-pool events are drawn with probability
    # proportional to it (with replacement), so the toys follow the reweighted distribution
    weights: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def total_events(self, n_events: int, fractions: Mapping[str, float]) -> int:
        """Events N of a test set at one grid point (``n_events_of``: signal scales n by 1 / (1 - sum f))."""
        if self.n_events_of == "all":
            return int(n_events)
        return int(round(n_events / (1.0 - sum(fractions.values()))))

    @property
    def fraction_points(self) -> tuple[tuple[tuple[str, float], ...], ...]:
        """Every point of the nuisance-fraction grid (the product over components), as ((name, f), ...)."""
        names = tuple(self.fractions)
        return tuple(tuple(zip(names, values)) for values in itertools.product(*self.fractions.values()))

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Toys per task: full batches and one remainder."""
        n, b = self.n_toys, self.batch_size
        return tuple([b] * (n // b) + ([n % b] if n % b else []))


@dataclass(frozen=True)
class AUCStudy:
    """The paper's feature-subset study: one classifier per network-input set."""

    sets: tuple[tuple[str, tuple[str, ...]], ...]   # (label, network inputs)
    smearing: str
    classifier: ClassifierSettings


@dataclass(frozen=True)
class RatioSettings:
    """The likelihood-ratio networks of the ratio estimators (hpcmix.train.losses)."""

    loss: str                          # a pair of hpcmix.train.losses.LOSSES
    classifier: ClassifierSettings     # the study's classifier with ratio.classifier's overrides


@dataclass(frozen=True)
class BlindedRegion:
    """Events with ``min <= feature < max`` (either edge may be open) are left out of training."""

    feature: str
    min: float | None = None
    max: float | None = None

    def mask(self, values):
        """True for the events inside the region (values: the feature's column)."""
        import numpy as np

        inside = np.ones(np.shape(values), dtype=bool)
        if self.min is not None:
            inside &= values >= self.min
        if self.max is not None:
            inside &= values < self.max
        return inside

    def describe(self) -> str:
        lo = "" if self.min is None else f"{self.min:g} <= "
        hi = "" if self.max is None else f" < {self.max:g}"
        return f"{lo}{self.feature}{hi}"


@dataclass(frozen=True)
class ReweightSettings:
    """One named weight: networks learning r = f_target / f_source between two samples of one process."""

    name: str                          # the weight's name in the event store (and in templates/toys)
    source: str                        # the sample that gets the weights
    target: str                        # the sample it is made to look like
    smearing: str                      # the feature set of the networks' inputs and of the blinded cut
    inputs: tuple[str, ...]            # the networks' inputs
    loss: str                          # a pair of hpcmix.train.losses.LOSSES
    networks: int                      # M networks (seeds classifier.seed + m): the network-choice systematic
    blind: BlindedRegion | None        # events left out of training (their weights are still evaluated)
    classifier: ClassifierSettings     # the study's classifier with reweight.<name>.classifier's overrides
    different_processes: bool = False  # source and target of different processes, on purpose
    two_sample_test: bool = True       # train fresh networks to tell target from source, before and after

    def settings_slice(self) -> dict:
        """What the weights depend on (not their name: renaming a weight does not recompute it)."""
        return {"source": self.source, "target": self.target, "smearing": self.smearing,
                "inputs": list(self.inputs), "loss": self.loss, "networks": self.networks,
                "blind": None if self.blind is None else dataclasses.asdict(self.blind)}


@dataclass(frozen=True)
class Study:
    """Every setting of a study, fully resolved; what a stage computes depends on nothing else."""

    name: str
    description: str
    source: str                        # the job file, or "<command line>"
    output: str
    seed: int
    components: tuple[str, ...]
    poi: ParameterOfInterest
    processes: Mapping[str, Any]       # job-defined process definitions
    generate: GenerateSettings
    selection: SelectionCuts
    smearing: SmearingSettings
    network_inputs: tuple[str, ...]
    classifier: ClassifierSettings
    templates: TemplateSettings
    toys: ToySettings
    auc_study: AUCStudy | None
    estimates: Mapping[str, Any]
    ratio: RatioSettings | None = None   # None: the package defaults (resolve_study fills it in)
    reweight: tuple[ReweightSettings, ...] = ()   # named weights, in job-file order

    @property
    def samples(self) -> tuple[str, ...]:
        """The event store's samples: the components, then the reweighting samples that are not components."""
        extra = [s for w in self.reweight for s in (w.source, w.target) if s not in self.components]
        return self.components + tuple(dict.fromkeys(extra))

    @property
    def pair(self) -> tuple[str, str]:
        """(alpha = 0 component, alpha = 1 component): the two components of the parameter of interest."""
        return (self.poi.other[0], self.poi.fraction_of)

    @property
    def nuisances(self) -> tuple[str, ...]:
        """The components outside the parameter of interest (their fractions are nuisances), in study order."""
        return tuple(c for c in self.components if c not in self.poi.among)

    @property
    def fit_components(self) -> tuple[str, ...]:
        """The order of components in templates, test pools and fits: the pair, then the nuisances."""
        return (*self.pair, *self.nuisances)

    def to_json(self) -> dict[str, Any]:
        d = to_jsonable(self)
        d.pop("source")
        return json.loads(json.dumps(d))

    def replace(self, **changes: Any) -> "Study":
        return dataclasses.replace(self, **changes)


__all__ = ["AUCStudy", "BlindedRegion", "ReweightSettings", "ESTIMATORS", "N_EVENTS_OF", "LEARNED_RATIO_ESTIMATORS", "NETWORK_ESTIMATORS", "RATIO_ESTIMATORS", "RatioSettings", "GenerateSettings", "ParameterOfInterest", "SMEARED", "SPLITS",
           "SmearingSettings", "Study", "TREATMENTS", "TemplateSettings", "ToySettings", "frozen_view", "to_jsonable"]
