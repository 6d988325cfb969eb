"""Toys stage: pseudo-experiments drawn from a templates folder's test pool and fitted, batch by batch.

A cell is one (estimator, smearing, alpha, N), and with more than two components also one
point of the nuisance-fraction grid; its batches are ``batch-NNNNN.npz`` (hpcmix.store.artefacts)
in the cell's folder, so a rerun fits only missing batches. With nuisances every treatment
(fixed, floated, constrained) fits the same toys: the treatments differ only in the fit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ...study.model import Study
from ..executor import Task
from ..record import address
from .templates import Templates

NAME = "toys"
#: bump when what a toy batch computes changes (drawing, fitter)
VERSION = 1
#: bump when what ``fit_fractions`` returns changes: the cells with nuisances only, so that
#: two-component cells keep their addresses (2: interval ends no longer stall on a positivity vertex;
#: 3: nor alternate between two rows where two nuisances are free)
FRACTION_FIT_VERSION = 3


@dataclass(frozen=True)
class Cell:
    estimator: str
    smearing: str
    alpha: float
    n_events: int                 # N, the events of every test set of the cell
    template_dir: str
    folder: str
    batches: tuple[int, ...]      # toys per batch
    seed: int
    address: str = ""
    # K > 2 only: (component, true fraction) of each nuisance, the fit treatments, (component, width)
    fractions: tuple[tuple[str, float], ...] = ()
    treatments: tuple[str, ...] = ()
    widths: tuple[tuple[str, float], ...] = ()
    # toys.n_events_of = signal: the grid's n (expected events of the pair), N = n / (1 - sum of fractions)
    n_signal: int | None = None
    # toys.treatment_of: (component, treatment) of nuisances that every fit treats the same way
    treatment_of: tuple[tuple[str, str], ...] = ()
    # toys.weights: (component, weight name, reweighting address) of the pools drawn in proportion
    # to a stored weight, read from the event store at ``events_path``
    weights: tuple[tuple[str, str, str], ...] = ()
    events_path: str | None = None
    # the reweighting network of the weights (templates.weight_networks: all; 0 is the nominal)
    weight_network: int = 0

    def pool_weights(self, components: Sequence[str]) -> dict[str, "np.ndarray"]:
        """{component: the weight of each of its test-pool (test split) events} of the weighted pools."""
        if not self.weights:
            return {}
        from ...store import EventStore

        store = EventStore(self.events_path)
        return {c: store.weights(c, name, "test", address=addr, network=self.weight_network)
                for c, name, addr in self.weights if c in components}

    def fit_treatment(self, treatment: str, components: Sequence[str]) -> tuple[dict, dict]:
        """For one treatment of the cell: {component index: how the fit treats it} for every nuisance,
        and {component index: constraint width} of the constrained ones."""
        own, widths = dict(self.treatment_of), dict(self.widths)
        how = {components.index(k): own.get(k, treatment) for k, _ in self.fractions}
        return how, {i: widths[components[i]] for i, v in how.items() if v == "constrained"}

    @property
    def n_label(self) -> int:
        """The cell's value of the results dimension n_events: toys.n_events as the job file gave it."""
        return self.n_events if self.n_signal is None else self.n_signal

    @property
    def has_nuisances(self) -> bool:
        return bool(self.fractions)

    def true_fractions(self, components: Sequence[str]) -> dict[str, float]:
        """Every component's true fraction; ``components`` = (alpha = 0, alpha = 1, nuisances...)."""
        nuis = dict(self.fractions)
        signal = 1.0 - sum(nuis.values())
        return {components[0]: (1.0 - self.alpha) * signal, components[1]: self.alpha * signal,
                **{c: nuis[c] for c in components[2:]}}

    def batch_file(self, batch: int) -> str:
        return os.path.join(self.folder, f"batch-{batch:05d}.npz")

    def missing(self) -> list[int]:
        return [b for b in range(len(self.batches)) if not os.path.exists(self.batch_file(b))]


def cell(templates: Templates, *, alpha: float, n_events: int, batches: Sequence[int], seed: int, root: str,
         fractions: Sequence[tuple[str, float]] = (), treatments: Sequence[str] = (),
         widths: Mapping[str, float] | None = None, n_signal: int | None = None,
         treatment_of: Mapping[str, str] | None = None, weights: Sequence[tuple[str, str, str]] = (),
         events_path: str | None = None, weight_network: int = 0) -> Cell:
    """One cell; ``n_events`` is N, ``n_signal`` the grid's n when toys.n_events_of is signal;
    ``weights``: (component, weight name, reweighting address) of pools drawn in proportion to a weight,
    that of reweighting network ``weight_network``."""
    slice_ = {"alpha": float(alpha), "n_events": int(n_events), "batches": list(batches), "seed": int(seed)}
    if n_signal is not None:
        slice_["n_signal"] = int(n_signal)
    weights = tuple((str(c), str(n), str(a)) for c, n, a in weights)
    if weights:   # unweighted cells keep their addresses
        slice_["pool_weights"] = {c: a for c, _, a in weights}
        if weight_network:   # the nominal network's cells keep their addresses
            slice_["pool_weight_network"] = int(weight_network)
    fractions = tuple((str(c), float(f)) for c, f in fractions)
    own = tuple((str(c), str(v)) for c, v in (treatment_of or {}).items())
    constrained = "constrained" in treatments or "constrained" in dict(own).values()
    widths = tuple((c, float(w)) for c, w in (widths or {}).items() if constrained)
    if fractions:  # K > 2 only, so two-component cells keep their addresses
        slice_.update({"fractions": dict(fractions), "treatments": list(treatments),
                       "constraint_width": dict(widths), "fraction_fit": FRACTION_FIT_VERSION})
        if own:
            slice_["treatment_of"] = dict(own)
    addr = address(NAME, VERSION, slice_, {"templates": templates.address})
    return Cell(templates.estimator, templates.smearing, float(alpha), int(n_events), templates.folder,
                os.path.join(root, addr), tuple(batches), int(seed), addr, fractions,
                tuple(treatments) if fractions else (), widths, None if n_signal is None else int(n_signal),
                own if fractions else (), weights, events_path if weights else None,
                int(weight_network) if weights or templates.weight_network else 0)


def plan(study: Study, templates: dict, *, root: str, events_path: str | None = None,
         reweights: Mapping[str, object] | None = None, weight_network: int = 0) -> tuple[Cell, ...]:
    """Every cell; ``reweights`` (the reweighting stage's items by name) and ``events_path`` (the
    event store) for toys.weights; ``weight_network``: whose weights the weighted pools carry."""
    t = study.toys
    points = t.fraction_points if study.nuisances else ((),)
    signal = t.n_events_of == "signal"
    weights = tuple((c, name, reweights[name].weights_address) for c, name in t.weights.items())
    return tuple(cell(tp, alpha=a, n_events=t.total_events(n, dict(point)), batches=t.batch_sizes, seed=study.seed,
                      root=root, fractions=point, treatments=t.treatments, widths=t.constraint_width,
                      n_signal=n if signal else None, treatment_of=t.treatment_of, weights=weights,
                      events_path=events_path, weight_network=weight_network)
                 for tp in templates.values() for point in points for a in t.alpha for n in t.n_events)


def tasks(cells: Sequence[Cell]) -> list[Task]:
    return [Task(key=f"toys-{c.address}-{b}", fn=fraction_toys_task if c.has_nuisances else toys_task, args=(c, b))
            for c in cells for b in c.missing()]


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
    w = c.pool_weights((zero, one))
    draw = draw_toys(pool.size(one), pool.size(zero), alpha=c.alpha, n_events=c.n_events,
                     n_toys=c.batches[batch], rng=rng, weights_a=w.get(one), weights_h=w.get(zero))
    fit = fit_mixture(draw.gather(pool.density[(one, one)], pool.density[(one, zero)]),
                      draw.gather(pool.density[(zero, one)], pool.density[(zero, zero)]),
                      alpha_true=c.alpha, alpha_limits=limits)
    os.makedirs(c.folder, exist_ok=True)
    path = save_toy_batch(c.batch_file(batch), fit, uses={zero: draw.uses_h, one: draw.uses_a},
                          max_uses=draw.max_uses, note=draw.note())
    return path, os.environ.get("SLURM_JOB_ID")


def draw_order(components: Sequence[str]) -> tuple[str, ...]:
    """The order toys draw components in: alpha = 1 first, as the two-component draw (hpcmix.stats.toys)."""
    return (components[1], components[0], *components[2:])


def fraction_toys_task(c: Cell, batch: int) -> tuple[str, str | None]:
    """One batch of a cell with nuisance components: draw once, fit with every treatment, write atomically."""
    import numpy as np

    from ...stats.fractions import fit_fractions
    from ...stats.toys import draw_mixture_toys, toy_seed
    from ...store.artefacts import load_templates, load_test_pool, save_fraction_batch

    pool = load_test_pool(c.template_dir)
    comps = pool.components                      # (alpha = 0, alpha = 1, nuisances...)
    support = load_templates(c.template_dir).support_nodes()
    truth = c.true_fractions(comps)
    n_toys = c.batches[batch]
    rng = toy_seed(c.seed, c.estimator, c.smearing, c.alpha, c.n_events, batch, fractions=dict(c.fractions))
    draw = draw_mixture_toys({k: pool.size(k) for k in comps}, {k: truth[k] for k in draw_order(comps)},
                             n_events=c.n_events, n_toys=n_toys, rng=rng, weights=c.pool_weights(comps) or None)
    densities = draw.gather_densities(pool.density, comps)
    f_true = np.array([truth[k] for k in comps])
    widths = dict(c.widths)
    # a constraint is an auxiliary measurement: its centre scatters around the truth from toy to toy,
    # or the constrained fit would be handed the true fraction
    centres = {k: truth[k] + widths[k] * rng.standard_normal(n_toys) for k in widths}
    fits = {}
    for treatment in c.treatments:
        how, w = c.fit_treatment(treatment, comps)
        fits[treatment] = fit_fractions(
            densities, num=[1], den=[0, 1], f_true=f_true, treatment=how, widths=w or None,
            centres={i: centres[comps[i]] for i in w} or None, support=support)
    os.makedirs(c.folder, exist_ok=True)
    path = save_fraction_batch(c.batch_file(batch), fits, components=comps, uses={k: draw.uses[k] for k in comps},
                               max_uses=draw.max_uses, note=draw.note(), centres=centres)
    return path, os.environ.get("SLURM_JOB_ID")
