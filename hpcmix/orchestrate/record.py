"""A stage's address and its ``done.json``: one typed, versioned record, written last.

An address is the hash of (stage name, the stage's algorithm version, the slice of
the resolved settings the stage uses, the addresses of its inputs). A stage bumps
its version when what it computes changes, so an upgrade never reuses stale
outputs; a changed setting reruns exactly the stages whose slice holds it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import HpcmixError
from ..study.model import to_jsonable

DONE_FILE = "done.json"
#: version of the done.json layout itself (not of what a stage computes)
RECORD_FORMAT = 1


class RecordError(HpcmixError, ValueError):
    """A folder's done.json is missing, unreadable, or written by an incompatible hpcmix."""


def address(stage: str, version: int, settings: Any, inputs: Mapping[str, str] | None = None) -> str:
    """The 12-hex-digit address of a stage output (see the module docstring)."""
    blob = json.dumps([stage, int(version), to_jsonable(settings), dict(inputs or {})], sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _hpcmix_version() -> str:
    from .. import __version__

    return __version__


@dataclass(frozen=True)
class StageRecord:
    """What made a stage output and what it found: written by ``hpcmix run`` and the subcommands alike."""

    stage: str
    address: str
    version: int                               # the stage's algorithm version
    settings: Mapping[str, Any]                # the settings slice the address covers
    inputs: Mapping[str, str] = field(default_factory=dict)   # input name -> address
    info: Mapping[str, Any] = field(default_factory=dict)     # what the stage measured (AUC, limits, ...)
    paths: Mapping[str, str] = field(default_factory=dict)    # input name -> where it was read from
    hpcmix_version: str = field(default_factory=_hpcmix_version)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    format: int = RECORD_FORMAT

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(to_jsonable({
            "format": self.format, "stage": self.stage, "address": self.address, "version": self.version,
            "settings": self.settings, "inputs": self.inputs, "paths": self.paths, "info": self.info,
            "hpcmix_version": self.hpcmix_version, "created": self.created}), default=str))

    def write(self, folder: str) -> "StageRecord":
        """Write ``folder/done.json`` atomically (rename), so a crash never leaves half a record."""
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, DONE_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(self.to_json(), f, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(folder, DONE_FILE))
        return self

    @classmethod
    def read(cls, folder: str, *, stage: str | None = None) -> "StageRecord":
        path = os.path.join(folder, DONE_FILE)
        try:
            with open(path) as f:
                d = json.load(f)
        except FileNotFoundError:
            raise RecordError(f"{folder!r} holds no finished stage output (no {DONE_FILE})") from None
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}: not valid JSON ({err}); delete the folder and rerun its stage") from None
        if not isinstance(d, dict) or "format" not in d or "stage" not in d:
            raise RecordError(f"{folder!r} was written by an older hpcmix (its {DONE_FILE} has no record format); "
                              f"rerun that stage{' (' + stage + ')' if stage else ''} to rebuild it")
        if d["format"] != RECORD_FORMAT:
            raise RecordError(f"{path}: record format {d['format']}, this hpcmix reads format {RECORD_FORMAT}; "
                              "rerun that stage with this hpcmix")
        if stage is not None and d["stage"] != stage:
            raise RecordError(f"{folder!r} holds a {d['stage']!r} output, not a {stage!r} one")
        return cls(stage=d["stage"], address=d["address"], version=d["version"], settings=d["settings"],
                   inputs=d["inputs"], info=d["info"], paths=d.get("paths", {}),
                   hpcmix_version=d["hpcmix_version"], created=d["created"])


def is_done(folder: str, address_: str | None = None) -> bool:
    """True when ``folder`` holds a finished output (with ``address_``: of exactly that address)."""
    try:
        rec = StageRecord.read(folder)
    except RecordError:
        return False
    return address_ is None or rec.address == address_
