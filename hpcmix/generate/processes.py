"""Processes are data: where the tau pair comes from plus Pythia settings, loaded from YAML.

Built-ins live in ``hpcmix/processes.yaml``; a job file may define more under a
``processes:`` key with the same fields, without touching Python. The taus come
either from one hard-process ``resonance`` (H, A, gamma*/Z: its two daughters)
or along two ``tau_chains`` (ttbar: t -> W+ -> tau+ and tbar -> W- -> tau-).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

_BUILTIN_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "processes.yaml")
_PROCESS_FIELDS = {"description", "resonance", "tau_chains", "profile", "settings"}
#: a variant is another process with some Pythia settings changed (a tune, alpha_s, a PDF set):
#: it takes everything else from the process it is a variant of (the reweighting stage's same process)
_VARIANT_FIELDS = {"description", "variant_of", "settings"}


@dataclass(frozen=True)
class Process:
    """A named sample: where its tau pair comes from and its Pythia settings.

    ``resonance``: PDG id of a hard-process particle whose two daughters are the taus.
    ``tau_chains``: two PDG-id chains instead, one per tau: the first id is found in the hard
    process, each next id among the daughters of the last copy of the one before, and the tau
    among the daughters of the chain's end. ``profile``: a Pythia profile this process always
    uses, whatever the study's ``generate.profile`` (ttbar needs hadronisation for its lepton veto).
    """

    name: str
    resonance: int | None
    settings: tuple[str, ...]
    description: str = ""
    tau_chains: tuple[tuple[int, ...], ...] | None = None
    profile: str | None = None
    variant_of: str | None = None   # the process this one is a variant of (its settings come after that one's)
    root: str | None = None         # a variant's first non-variant ancestor (not stored: variant_of says it)

    @property
    def physics_process(self) -> str:
        """The process this sample is of: itself, or the one it is a variant of (followed to the root)."""
        return self.root or self.name

    def as_dict(self) -> dict[str, Any]:
        # fields at their defaults stay out, so the stores of resonance processes keep their addresses
        d = {"name": self.name, "resonance": self.resonance, "settings": list(self.settings),
             "description": self.description}
        if self.tau_chains is not None:
            d["tau_chains"] = [list(c) for c in self.tau_chains]
        if self.profile is not None:
            d["profile"] = self.profile
        if self.variant_of is not None:
            d["variant_of"] = self.variant_of
        return d


@dataclass(frozen=True)
class Catalogue:
    """Processes plus the settings every process and each Pythia profile add."""

    processes: Mapping[str, Process]
    common: tuple[str, ...]
    profiles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def get(self, name: str) -> Process:
        try:
            return self.processes[name]
        except KeyError:
            raise ValueError(
                f"unknown process {name!r}; known processes: {', '.join(sorted(self.processes))}. "
                "Define new ones under 'processes:' in a job file."
            ) from None

    def profile_of(self, process: str | Process, profile: str) -> str:
        """The profile ``process`` generates with: its own when it names one, else the study's."""
        proc = process if isinstance(process, Process) else self.get(process)
        return proc.profile or profile

    def pythia_settings(self, process: str | Process, profile: str) -> tuple[str, ...]:
        """All settings for one process and (study) profile, in the order they are read."""
        proc = process if isinstance(process, Process) else self.get(process)
        profile = self.profile_of(proc, profile)
        if profile not in self.profiles:
            raise ValueError(f"unknown Pythia profile {profile!r}; allowed: {', '.join(self.profiles)}")
        return self.common + self.profiles[profile] + proc.settings


def _parse_variant(name: str, spec: Mapping[str, Any], base: Process | None, source: str) -> Process:
    """A ``variant_of`` process: the base's tau origin and profile, the base's settings then its own."""
    unknown = set(spec) - _VARIANT_FIELDS
    if unknown:
        raise ValueError(f"{source}: process {name!r} is a variant_of {spec['variant_of']!r}, which fixes where its "
                         f"taus come from and its profile: remove {sorted(unknown)} (allowed: "
                         f"{sorted(_VARIANT_FIELDS)}; the variant's settings are read after the base's)")
    if base is None:
        raise ValueError(f"{source}: process {name!r} is a variant_of {spec['variant_of']!r}, which is not a "
                         "process defined before it (a built-in or one listed above it)")
    settings = spec.get("settings", [])
    if not isinstance(settings, list) or not all(isinstance(s, str) for s in settings) or not settings:
        raise ValueError(f"{source}: process {name!r}: a variant's settings must be a non-empty list of Pythia "
                         "setting strings (what differs from its base, e.g. 'SpaceShower:alphaSvalue = 0.125')")
    return Process(name=str(name), resonance=base.resonance, settings=base.settings + tuple(settings),
                   description=str(spec.get("description", f"{base.name} with {'; '.join(settings)}")),
                   tau_chains=base.tau_chains, profile=base.profile, variant_of=base.name,
                   root=base.physics_process)


def _parse_process(name: str, spec: Any, source: str, known: Mapping[str, Process] | None = None) -> Process:
    if isinstance(spec, Mapping) and "variant_of" in spec:
        return _parse_variant(name, spec, (known or {}).get(spec["variant_of"]), source)
    if not isinstance(spec, Mapping):
        raise ValueError(f"{source}: process {name!r} must be a mapping with fields {sorted(_PROCESS_FIELDS)}")
    unknown = set(spec) - _PROCESS_FIELDS
    if unknown:
        raise ValueError(f"{source}: process {name!r} has unknown field(s) {sorted(unknown)}; "
                         f"allowed: {sorted(_PROCESS_FIELDS)} (or variant_of and settings, for a variant)")
    if "settings" not in spec:
        raise ValueError(f"{source}: process {name!r} is missing required field 'settings'")
    if (spec.get("resonance") is not None) == (spec.get("tau_chains") is not None):
        raise ValueError(f"{source}: process {name!r} needs exactly one of 'resonance' (the PDG id whose two "
                         "daughters are the taus) and 'tau_chains' (two PDG-id chains, one per tau, e.g. "
                         "[[6, 24], [-6, -24]] for t -> W -> tau)")
    resonance = spec.get("resonance")
    if resonance is not None and (not _is_pdg(resonance)):
        raise ValueError(f"{source}: process {name!r}: resonance must be a nonzero integer PDG id, got {resonance!r}")
    chains = spec.get("tau_chains")
    if chains is not None:
        if (not isinstance(chains, list) or len(chains) != 2
                or not all(isinstance(c, list) and c and all(_is_pdg(i) for i in c) for c in chains)):
            raise ValueError(f"{source}: process {name!r}: tau_chains must be two non-empty lists of nonzero "
                             f"integer PDG ids (one chain per tau), got {chains!r}")
        chains = tuple(tuple(c) for c in chains)
        if chains[0] == chains[1] or (chains[0][0] > 0) == (chains[1][0] > 0):
            raise ValueError(f"{source}: process {name!r}: the two tau_chains must start from particles of opposite "
                             f"sign (one tau+, one tau-, as [[6, 24], [-6, -24]]), got {[list(c) for c in chains]}")
    profile = spec.get("profile")
    if profile is not None and not isinstance(profile, str):
        raise ValueError(f"{source}: process {name!r}: profile must be a profile name, got {profile!r}")
    settings = spec["settings"]
    if not isinstance(settings, list) or not all(isinstance(s, str) for s in settings):
        raise ValueError(f"{source}: process {name!r}: settings must be a list of Pythia setting strings")
    return Process(name=str(name), resonance=resonance, settings=tuple(settings),
                   description=str(spec.get("description", "")), tau_chains=chains, profile=profile)


def _is_pdg(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value != 0


def load_catalogue(extra: Mapping[str, Any] | None = None, *, source: str = "job file") -> Catalogue:
    """Built-in processes, updated with ``extra`` (a job file's ``processes:`` mapping)."""
    with open(_BUILTIN_FILE) as f:
        raw = yaml.safe_load(f)
    processes = {n: _parse_process(n, s, _BUILTIN_FILE) for n, s in raw["processes"].items()}
    for name, spec in (extra or {}).items():
        processes[name] = _parse_process(name, spec, source, processes)
    profiles = {k: tuple(v) for k, v in raw["profiles"].items()}
    for p in processes.values():
        if p.profile is not None and p.profile not in profiles:
            raise ValueError(f"process {p.name!r}: unknown profile {p.profile!r}; allowed: {', '.join(profiles)}")
    return Catalogue(processes=processes, common=tuple(raw["common"]), profiles=profiles)
