"""The run log ``<output>/hpcmix-run.json``: what ``hpcmix run`` planned, and how the run ended.

The client writes it once it holds the output lock, before any task: the command, and the plan as
every item's folder (relative to the output folder, so the folder can move), address and parts
(event chunks, weight chunks, toy batches). It writes it again when the run ends: ``finished``,
``failed`` (with the error) or ``interrupted`` (Ctrl-C). A run killed outright (SIGKILL, out of
memory, a walltime) leaves ``running`` behind; ``hpcmix status`` tells that from a live run by the
output lock, which the kernel drops when its holder dies (orchestrate/lock.py).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from typing import Any

from ..errors import HpcmixError, TaskFailedError

RUN_LOG = "hpcmix-run.json"
#: version of the run log's layout
RUN_LOG_FORMAT = 1
#: what a run log says of its run
RUN_STATES = ("running", "finished", "failed", "interrupted")


class RunLogError(HpcmixError, ValueError):
    """A run log that cannot be read: not JSON, or of another format."""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def plan_manifest(plan, *, until: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """{stage: [item, ...]} of a StudyPlan: each item's label, folder (relative to the output folder),
    address and, where a stage writes in parts, how many (``until="reweight"``: no stage after it)."""
    out = plan.study.output

    def rel(path: str) -> str:
        return os.path.relpath(path, out)

    layout = plan.generation.layout
    stages: dict[str, list[dict[str, Any]]] = {"generate": [{
        "label": "events", "path": rel(plan.events), "address": plan.events_address,
        "samples": list(layout.samples), "chunks": layout.n_chunks}]}
    if plan.reweights:
        stages["reweight"] = [{
            "label": name, "path": rel(r.folder), "address": r.address, "source": r.settings.source,
            "weights_address": r.weights_address, "chunks": layout.n_chunks, "events_path": rel(plan.events),
            "networks": [{"path": rel(n.folder), "address": n.address} for n in r.networks]}
            for name, r in plan.reweights.items()]
    if until == "reweight":
        return stages
    models = {**plan.models, **plan.auc_models}
    stages["train"] = [{"label": m.label, "path": rel(m.folder), "address": m.address} for m in models.values()]
    templates, seen = [], set()
    named = [("/".join(k), t) for k, t in plan.templates.items()]
    named += [(f"{e}/{s}/network={m}", t) for (e, s, m), t in plan.network_templates.items()]
    for label, t in named:   # a template no weight moves is network 0's: listed once
        if t.address not in seen:
            seen.add(t.address)
            templates.append({"label": label, "path": rel(t.folder), "address": t.address})
    stages["templates"] = templates
    cells, seen = [], set()
    for c in plan.cells + plan.network_cells:
        if c.address not in seen:
            seen.add(c.address)
            cells.append({"label": cell_label(c), "path": rel(c.folder), "address": c.address,
                          "batches": len(c.batches), "toys": int(sum(c.batches))})
    stages["toys"] = cells
    stages["results"] = [{"label": "results", "path": rel(plan.results),
                          "address": os.path.basename(plan.results).removesuffix(".zarr")}]
    stages["report"] = [{"label": "report", "path": rel(plan.report)}]
    return stages


def cell_label(c) -> str:
    """A toy cell by what varies between cells: estimator/smearing/alpha/n[/nuisance=f...][/network=m]."""
    return "/".join([c.estimator, c.smearing, str(c.alpha), str(c.n_label), *(f"{k}={f}" for k, f in c.fractions),
                     *([f"network={c.weight_network}"] if c.weight_network else [])])


def start(plan, *, command: str, until: str | None = None) -> str:
    """Write the run log of a run that starts now (the output lock held); return its path."""
    s = plan.study
    path = os.path.join(s.output, RUN_LOG)
    from .. import __version__

    _write(path, {"format": RUN_LOG_FORMAT, "state": "running", "command": command, "study": s.name,
                  "job": s.source, "host": socket.gethostname(), "pid": os.getpid(), "started": _now(),
                  "ended": None, "hpcmix_version": __version__, "error": None,
                  "plan": plan_manifest(plan, until=until)})
    return path


def end(path: str, error: BaseException | None = None) -> None:
    """Say how the run ended: ``finished`` (``error`` None), ``interrupted`` (Ctrl-C) or ``failed``."""
    try:
        log = read(os.path.dirname(path))
    except RunLogError:   # replaced by hand mid-run: the run's own error must not be masked by it
        return
    if log is None:
        return
    if error is None:
        log.update(state="finished", error=None)
    elif isinstance(error, KeyboardInterrupt):
        log.update(state="interrupted", error={"type": "KeyboardInterrupt", "message": "interrupted (Ctrl-C)",
                                               "where": None})
    else:
        cause, where = error, None
        if isinstance(error, TaskFailedError):
            cause, where = error.error, error.where
        # the first lines say what went wrong; the whole traceback is in the file the CLI names
        message = str(cause).strip()
        log.update(state="failed", error={"type": type(cause).__name__, "where": where,
                                          "message": message[:4000] + (" [...]" if len(message) > 4000 else "")})
    log["ended"] = _now()
    _write(path, log)


def read(folder: str) -> dict[str, Any] | None:
    """The run log of an output folder, or None when it has none."""
    path = os.path.join(folder, RUN_LOG)
    try:
        with open(path) as f:
            log = json.load(f)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunLogError(f"{path}: not valid JSON ({err}); it is rewritten by the next 'hpcmix run'") from None
    if not isinstance(log, dict) or log.get("format") != RUN_LOG_FORMAT or log.get("state") not in RUN_STATES:
        raise RunLogError(f"{path}: not a run log of format {RUN_LOG_FORMAT} (written by another hpcmix?); it is "
                          "rewritten by the next 'hpcmix run'")
    return log


def _write(path: str, log: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(log, f, indent=2, default=str)
    os.replace(tmp, path)   # atomic: a reader sees the old log or the new one
