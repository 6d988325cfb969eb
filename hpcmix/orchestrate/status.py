"""Where a run stands, from what is on disk alone (no cluster, no lock taken): ``hpcmix status``.

The plan comes from the run log (orchestrate/runlog.py) or, given a job file, from the job; each
planned item is then looked up at its address: a finished record (``done.json``), the event
store's done chunks, the stored weights' done chunks, the toy batches written. An output folder
without a run log (made by the stage subcommands) is listed from its records alone, without
the planned totals. Safe to run while a run writes: every file it reads is written atomically.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import HpcmixError
from . import runlog
from .lock import LOCK_FILE, holder
from .record import is_done

#: the stages in the order they run, with what each counts
STAGES = {"generate": "chunks", "reweight": "parts", "train": "models", "templates": "folders",
          "toys": "batches", "results": "stores", "report": "reports"}


class StatusError(HpcmixError, ValueError):
    """The folder is no hpcmix output folder."""


@dataclass(frozen=True)
class ItemStatus:
    """One planned output: how much of it is on disk (``total`` None: not known without a run log)."""

    label: str
    path: str                     # relative to the output folder
    address: str
    done: int
    total: int | None
    detail: str = ""
    finished: bool = False        # without a plan: a record says the item is finished

    @property
    def state(self) -> str:
        if self.total is None:    # no plan: parts found, but not how many were planned
            return "done" if self.finished else ("found" if self.done else "missing")
        if self.done >= self.total:
            return "done"
        return "partial" if self.done else "missing"


@dataclass(frozen=True)
class StageStatus:
    name: str
    items: tuple[ItemStatus, ...]

    @property
    def state(self) -> str:
        states = {i.state for i in self.items}
        if states <= {"done"}:
            return "done"
        return "missing" if states == {"missing"} else "partial"

    @property
    def unit(self) -> str:
        return STAGES[self.name]

    def summary(self) -> str:
        """What is done out of what was planned, in the stage's own parts."""
        done, totals = sum(i.done for i in self.items), [i.total for i in self.items]
        if None in totals:   # no plan: what was found, not what was planned
            if self.name == "toys":
                return f"{done} batches in {len(self.items)} cells (how many were planned is unknown)"
            return f"{sum(i.state == 'done' for i in self.items)}/{len(self.items)} found finished"
        line = f"{done}/{sum(totals)} {self.unit}"
        if self.name in ("toys", "reweight") and len(self.items) > 1:
            line += f" ({sum(i.state == 'done' for i in self.items)}/{len(self.items)} " \
                    f"{'cells' if self.name == 'toys' else 'weights'} complete)"
        return line


@dataclass(frozen=True)
class OutputStatus:
    """An output folder's stages, and what its run log says of the run that wrote it."""

    folder: str
    stages: tuple[StageStatus, ...]
    run: Mapping[str, Any] | None = None          # the run log, less its plan
    live: Mapping[str, Any] | None = None         # who holds the output lock now
    plan_from: str = "run log"                    # "run log", a job file, or "records" (no plan)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def run_state(self) -> str:
        """The run log's state; a ``running`` run whose lock no one holds ``stopped`` (killed)."""
        if self.run is None:
            return "unknown"
        if self.run["state"] == "running" and self.live is None:
            return "stopped"
        return self.run["state"]

    def to_json(self) -> dict[str, Any]:
        return {"folder": self.folder, "plan_from": self.plan_from, "run_state": self.run_state, "run": self.run,
                "live": self.live, "notes": list(self.notes),
                "stages": {s.name: {"state": s.state, "summary": s.summary(),
                                    "items": [{"label": i.label, "state": i.state, "done": i.done, "total": i.total,
                                               "path": i.path, "address": i.address, "detail": i.detail}
                                              for i in s.items]} for s in self.stages}}

    def format(self, *, every: bool = False, limit: int = 20) -> str:
        """The status as text: the run, one line per stage, then the items not done (``every``: all)."""
        lines = [f"output {self.folder}"]
        r = self.run
        if r is not None:
            when = f"started {r['started']}" + (f", ended {r['ended']}" if r.get("ended") else "")
            lines.append(f"run    : {self.run_state} ({r['command']}; pid {r['pid']} on {r['host']}, {when})")
            if self.run_state == "stopped":
                lines.append("         the run ended without saying how (killed: SIGKILL, out of memory, a walltime "
                             "or a lost node); run it again to resume: finished outputs are kept")
            if self.run_state == "running" and self.live.get("pid") != r.get("pid"):
                lines.append(f"         the output lock is held by {self.live.get('what')} (pid {self.live.get('pid')})")
            if r.get("error"):
                e = r["error"]
                where = f" in {e['where']}" if e.get("where") else ""
                lines.append(f"error  : {e['type']}{where}: " + (e["message"].splitlines() or [""])[0])
        elif self.live is not None:
            lines.append(f"run    : running ({self.live.get('what')}; pid {self.live.get('pid')} on "
                         f"{self.live.get('host')}, started {self.live.get('started')})")
        lines.append(f"plan   : from the {self.plan_from}" if self.plan_from != "records"
                     else "plan   : none (no run log: made by stage subcommands?); the records found are listed")
        lines += [f"note   : {n}" for n in self.notes]
        if not self.stages:
            return "\n".join(lines)
        width = max(len(s.name) for s in self.stages)
        lines.append("")
        for s in self.stages:
            one = s.items[0] if len(s.items) == 1 else None
            where = f"  {one.path}" if one is not None else ""
            lines.append(f"{s.name:<{width}}  {s.state:<7}  {s.summary()}{where}")
        shown = [(s, i) for s in self.stages for i in s.items if every or i.state != "done"]
        if shown:
            lines.append("")
            lines.append("items" + ("" if every else " not done") + " (stage, state, parts, address, label):")
            for s, i in shown[:limit]:
                parts = f"{i.done}/{i.total}" if i.total is not None else f"{i.done}"
                extra = f"  [{i.detail}]" if i.detail and i.detail != "finished" else ""
                lines.append(f"  {s.name:<{width}}  {i.state:<7}  {parts:>9}  {i.address:<12}  {i.label}{extra}")
            if len(shown) > limit:
                lines.append(f"  ... and {len(shown) - limit} more (--json lists them all)")
        return "\n".join(lines)


def output_status(folder: str, *, manifest: Mapping[str, list] | None = None, plan_from: str | None = None
                  ) -> OutputStatus:
    """The status of ``folder`` against ``manifest`` (runlog.plan_manifest of a job's plan), else against
    the plan in its run log, else from the records it holds."""
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        if manifest is None:
            raise StatusError(f"{folder!r} is not a folder; give an hpcmix output folder (a job's output:) or a "
                              "job file")
        log, live = None, None
    else:
        log, live = runlog.read(folder), holder(folder)
    notes = []
    if manifest is None and log is not None:
        manifest, plan_from = log["plan"], "run log"
    elif manifest is not None and log is not None and log["plan"] != manifest:
        notes.append(f"the last run there ({log['command']}) planned other outputs than this job (other settings)")
    run = None if log is None else {k: v for k, v in log.items() if k != "plan"}
    if manifest is None:
        manifest, plan_from = _found(folder), "records"
    stages = tuple(StageStatus(name, tuple(_item(folder, name, it) for it in manifest[name]))
                   for name in STAGES if manifest.get(name))
    if not os.path.isdir(folder):
        notes.append("the output folder does not exist yet: nothing has run")
    elif not stages or (log is None and not any(e != LOCK_FILE for e in os.listdir(folder))):
        notes.append("the output folder is empty: no hpcmix run has written here yet")
    return OutputStatus(folder=folder, stages=stages, run=run, live=live, plan_from=plan_from, notes=tuple(notes))


# -- what is on disk of one item ---------------------------------------------------------------
def _item(folder: str, stage: str, it: Mapping[str, Any]) -> ItemStatus:
    path = os.path.join(folder, it["path"])
    if it.get("found"):   # no plan: a folder is finished by its done.json, whatever its address
        ok = is_done(path)
        return ItemStatus(label=it["label"], path=it["path"], address=it["address"], done=int(ok), total=None,
                          detail="" if ok else "no done.json yet", finished=ok)
    done, total, detail = {"generate": _events, "reweight": _reweight, "toys": _toys, "results": _results,
                           "report": _report}.get(stage, _record)(path, it, folder)
    return ItemStatus(label=it["label"], path=it["path"], address=it.get("address", ""), done=done, total=total,
                      detail=detail, finished=total is not None and done >= total)


def _record(path: str, it, folder) -> tuple[int, int | None, str]:
    """A folder finished by its done.json of the planned address."""
    return int(is_done(path, it["address"])), 1, ""


def _open_store(path: str):
    from ..store import EventStore

    try:
        return EventStore(path)
    except (FileNotFoundError, ValueError):   # not made yet, or interrupted while laid out
        return None


def _events(path: str, it, folder) -> tuple[int, int | None, str]:
    store = _open_store(path)
    if store is None:
        n = it.get("chunks")
        return 0, None if n is None else n * len(it.get("samples", [1])), "no event store"
    per = {s: int(store.done_chunks(s).sum()) for s in store.layout.samples}
    detail = ", ".join(f"{s} {n}/{store.layout.n_chunks}" for s, n in per.items())
    return sum(per.values()), store.layout.n_chunks * len(per), detail


def _reweight(path: str, it, folder) -> tuple[int, int | None, str]:
    """A weight's parts: its networks, its weight chunks in the store, its record."""
    nets = sum(is_done(os.path.join(folder, n["path"]), n["address"]) for n in it["networks"])
    store = _open_store(os.path.join(folder, it["events_path"]))
    chunks = 0
    if store is not None:
        try:
            chunks = int(store.weight_done_chunks(it["source"], it["label"], it["weights_address"]).sum())
        except (KeyError, FileNotFoundError, ValueError):   # the weights are not laid out yet
            chunks = 0
    record = int(is_done(path, it["address"]))
    n = len(it["networks"])
    return (nets + chunks + record, n + it["chunks"] + 1,
            f"networks {nets}/{n}, weight chunks {chunks}/{it['chunks']}, record {'written' if record else 'missing'}")


def _toys(path: str, it, folder) -> tuple[int, int | None, str]:
    return len(glob.glob(os.path.join(path, "batch-[0-9][0-9][0-9][0-9][0-9].npz"))), it.get("batches"), ""


def _results(path: str, it, folder) -> tuple[int, int | None, str]:
    return int(os.path.exists(os.path.join(path, "zarr.json"))), 1, ""


def _report(path: str, it, folder) -> tuple[int, int | None, str]:
    return int(os.path.exists(os.path.join(path, "table1.md"))), 1, ""


# -- a folder without a plan --------------------------------------------------------------------
def _found(folder: str) -> dict[str, list[dict[str, Any]]]:
    """A manifest of what ``folder`` holds, without totals; refuses a folder hpcmix did not write."""
    found: dict[str, list[dict[str, Any]]] = {}

    def listed(sub: str, pattern: str = "*") -> list[str]:
        return sorted(p for p in glob.glob(os.path.join(folder, sub, pattern)) if os.path.isdir(p))

    def rel(p: str) -> str:
        return os.path.relpath(p, folder)

    stores = [p for p in listed("events", "*.zarr") if _open_store(p) is not None]
    if stores:
        found["generate"] = [{"label": "events", "path": rel(p), "address": os.path.basename(p)[:-5]} for p in stores]
    # (the reweighting networks are records under models/ like the classifiers)
    for stage, sub in (("reweight", "reweight"), ("train", "models"), ("templates", "templates")):
        items = [{"label": os.path.basename(p), "path": rel(p), "address": os.path.basename(p), "found": True}
                 for p in listed(sub)]
        if items:
            found[stage] = items
    cells = [{"label": os.path.basename(p), "path": rel(p), "address": os.path.basename(p)} for p in listed("toys")]
    if cells:
        found["toys"] = cells
    results = [p for p in listed("results", "*.zarr") if os.path.exists(os.path.join(p, "zarr.json"))]
    if results:
        found["results"] = [{"label": "results", "path": rel(p), "address": os.path.basename(p)[:-5]} for p in results]
    if os.path.exists(os.path.join(folder, "report", "table1.md")):
        found["report"] = [{"label": "report", "path": "report", "address": ""}]
    if not found:
        entries = [e for e in os.listdir(folder) if e != LOCK_FILE]
        if entries:
            shown = ", ".join(sorted(entries)[:8]) + (", ..." if len(entries) > 8 else "")
            raise StatusError(
                f"{folder!r} is not an hpcmix output folder: it has no {runlog.RUN_LOG} and no stage outputs "
                f"(events/*.zarr, models/, templates/, toys/, results/), only {shown}. Give the folder a job's "
                "'output:' names, or the job file itself")
    return found
