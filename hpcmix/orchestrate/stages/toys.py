"""Toys stage: pseudo-experiments drawn from a templates folder's test pool and fitted, batch by batch.

A cell is one (estimator, smearing, alpha, N); its batches are ``batch-NNNNN.npz``
(hpcmix.store.artefacts) in the cell's folder, so a rerun fits only missing batches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from ...study.model import Study
from ..executor import Task
from ..record import address
from .templates import Templates

NAME = "toys"
#: bump when what a toy batch computes changes (drawing, fitter)
VERSION = 1


@dataclass(frozen=True)
class Cell:
    estimator: str
    smearing: str
    alpha: float
    n_events: int
    template_dir: str
    folder: str
    batches: tuple[int, ...]      # toys per batch
    seed: int
    address: str = ""

    def batch_file(self, batch: int) -> str:
        return os.path.join(self.folder, f"batch-{batch:05d}.npz")

    def missing(self) -> list[int]:
        return [b for b in range(len(self.batches)) if not os.path.exists(self.batch_file(b))]


def cell(templates: Templates, *, alpha: float, n_events: int, batches: Sequence[int], seed: int, root: str) -> Cell:
    slice_ = {"alpha": float(alpha), "n_events": int(n_events), "batches": list(batches), "seed": int(seed)}
    addr = address(NAME, VERSION, slice_, {"templates": templates.address})
    return Cell(templates.estimator, templates.smearing, float(alpha), int(n_events), templates.folder,
                os.path.join(root, addr), tuple(batches), int(seed), addr)


def plan(study: Study, templates: dict, *, root: str) -> tuple[Cell, ...]:
    return tuple(cell(t, alpha=a, n_events=n, batches=study.toys.batch_sizes, seed=study.seed, root=root)
                 for t in templates.values() for a in study.toys.alpha for n in study.toys.n_events)


def tasks(cells: Sequence[Cell]) -> list[Task]:
    return [Task(key=f"toys-{c.address}-{b}", fn=toys_task, args=(c, b)) for c in cells for b in c.missing()]


def toys_task(c: Cell, batch: int) -> tuple[str, str | None]:
    """Draw and fit one batch of one cell; write it atomically; return (path, SLURM job)."""
    from ...stats.fitter import fit_mixture
    from ...stats.toys import draw_toys, toy_seed
    from ...store.artefacts import load_test_pool, save_toy_batch
    from ..record import StageRecord

    pool = load_test_pool(c.template_dir)
    zero, one = pool.components
    limits = tuple(StageRecord.read(c.template_dir, stage="templates").info["positivity_limits"])
    # seeded by the estimator's name: the streams do not depend on where a cell sits in the grid
    rng = toy_seed(c.seed, c.estimator, c.smearing, c.alpha, c.n_events, batch)
    draw = draw_toys(pool.size(one), pool.size(zero), alpha=c.alpha, n_events=c.n_events,
                     n_toys=c.batches[batch], rng=rng)
    fit = fit_mixture(draw.gather(pool.density[(one, one)], pool.density[(one, zero)]),
                      draw.gather(pool.density[(zero, one)], pool.density[(zero, zero)]),
                      alpha_true=c.alpha, alpha_limits=limits)
    os.makedirs(c.folder, exist_ok=True)
    path = save_toy_batch(c.batch_file(batch), fit, uses={zero: draw.uses_h, one: draw.uses_a},
                          max_uses=draw.max_uses, note=draw.note())
    return path, os.environ.get("SLURM_JOB_ID")
