"""Processes are data: a resonance id plus Pythia settings, loaded from YAML.

Built-ins live in ``hpcmix/processes.yaml``; a job file may define more under a
``processes:`` key with the same fields, without touching Python.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

_BUILTIN_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "processes.yaml")
_PROCESS_FIELDS = {"description", "resonance", "settings"}


@dataclass(frozen=True)
class Process:
    """A named sample: the resonance that decays to the tau pair and its Pythia settings."""

    name: str
    resonance: int
    settings: tuple[str, ...]
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "resonance": self.resonance, "settings": list(self.settings),
                "description": self.description}


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

    def pythia_settings(self, process: str | Process, profile: str) -> tuple[str, ...]:
        """All settings for one process and profile, in the order they are read."""
        proc = process if isinstance(process, Process) else self.get(process)
        if profile not in self.profiles:
            raise ValueError(f"unknown Pythia profile {profile!r}; allowed: {', '.join(self.profiles)}")
        return self.common + self.profiles[profile] + proc.settings


def _parse_process(name: str, spec: Any, source: str) -> Process:
    if not isinstance(spec, Mapping):
        raise ValueError(f"{source}: process {name!r} must be a mapping with fields {sorted(_PROCESS_FIELDS)}")
    unknown = set(spec) - _PROCESS_FIELDS
    if unknown:
        raise ValueError(f"{source}: process {name!r} has unknown field(s) {sorted(unknown)}; "
                         f"allowed: {sorted(_PROCESS_FIELDS)}")
    for key in ("resonance", "settings"):
        if key not in spec:
            raise ValueError(f"{source}: process {name!r} is missing required field {key!r}")
    if not isinstance(spec["resonance"], int) or isinstance(spec["resonance"], bool):
        raise ValueError(f"{source}: process {name!r}: resonance must be an integer PDG id, got {spec['resonance']!r}")
    settings = spec["settings"]
    if not isinstance(settings, list) or not all(isinstance(s, str) for s in settings):
        raise ValueError(f"{source}: process {name!r}: settings must be a list of Pythia setting strings")
    return Process(name=str(name), resonance=spec["resonance"], settings=tuple(settings),
                   description=str(spec.get("description", "")))


def load_catalogue(extra: Mapping[str, Any] | None = None, *, source: str = "job file") -> Catalogue:
    """Built-in processes, updated with ``extra`` (a job file's ``processes:`` mapping)."""
    with open(_BUILTIN_FILE) as f:
        raw = yaml.safe_load(f)
    processes = {n: _parse_process(n, s, _BUILTIN_FILE) for n, s in raw["processes"].items()}
    for name, spec in (extra or {}).items():
        processes[name] = _parse_process(name, spec, source)
    profiles = {k: tuple(v) for k, v in raw["profiles"].items()}
    return Catalogue(processes=processes, common=tuple(raw["common"]), profiles=profiles)
