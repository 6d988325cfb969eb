"""Plan-time checks of settings that couple fields, so no stage finds them hours later.

Each field is checked alone when the study is resolved (hpcmix.study.resolve); what is
checked here needs several fields at once, or the plan itself (chunk-rounded split sizes,
the toys' seeds). :func:`check_plan` raises one :class:`PlanError` listing every problem,
each naming its fields, their values and what would work, and returns notes on legal but
wasteful combinations for the plan's description.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..schema import ConfigError
from ..study.model import NETWORK_ESTIMATORS

if TYPE_CHECKING:
    from .pipeline import StudyPlan
    from .stages.toys import Cell
    from .stages.train import Model

__all__ = ["MAX_TASKS_PER_STAGE", "MIN_KDE_EVENTS", "PlanError", "check_plan", "check_task_counts",
           "toy_pool_problems", "training_split_problems"]

#: tasks one stage may hand the scheduler: Dask keeps ~1 kB and ~1 ms of scheduler time per
#: task, so far more tasks cost more than they compute (and planning them costs memory)
MAX_TASKS_PER_STAGE = 200_000
#: toys whose composition the pool check draws exactly; beyond, a binomial tail bound
EXACT_TOYS_MAX = 2_000_000

#: a KDE template needs two values to have a width (hpcmix.stats.templates.KDETemplate)
MIN_KDE_EVENTS = 2
#: training/validation parts larger than this cannot hold one class alone (p < 2^-63)
EXACT_SPLIT_ABOVE = 64
#: a toy task above this many bytes of per-event arrays gets a note (toys.batch_size)
TOY_TASK_NOTE_BYTES = 2 * 2**30
#: bytes per fitted event in a toy task: densities, weights and the fitter's buffers (float64)
TOY_BYTES_PER_EVENT = 8 * 6


class PlanError(ConfigError):
    """The settings are valid one by one but cannot run together."""


def check_task_counts(study) -> None:
    """Refuse task counts the scheduler cannot carry, before the plan lays out every task."""
    from .stages.templates import weight_network_count

    problems = []
    g, t = study.generate, study.toys
    chunks = len(study.components) * sum(math.ceil(n / g.chunk_size) for n in g.events.values())
    if chunks > MAX_TASKS_PER_STAGE:
        problems.append(f"generate.events ({dict(g.events)}) in chunks of generate.chunk_size = {g.chunk_size} "
                        f"make {chunks:,} generation tasks, more than the {MAX_TASKS_PER_STAGE:,} a stage may "
                        "schedule: raise generate.chunk_size")
    # templates.weight_networks = all repeats every cell once per further reweighting network
    networks = weight_network_count(study)
    n_cells = (len(t.estimators) * len(study.smearing.variants) * len(t.alpha) * len(t.n_events)
               * (len(t.fraction_points) if study.nuisances else 1) * networks)
    toy_tasks = n_cells * math.ceil(t.n_toys / t.batch_size)
    if toy_tasks > MAX_TASKS_PER_STAGE:
        each = f" (the cells of all {networks} reweighting networks)" if networks > 1 else ""
        problems.append(f"toys.n_toys = {t.n_toys} in batches of toys.batch_size = {t.batch_size} over "
                        f"{n_cells} cells{each} make {toy_tasks:,} toy tasks, more "
                        f"than the {MAX_TASKS_PER_STAGE:,} a stage may schedule: raise toys.batch_size")
    if problems:
        raise PlanError(f"{study.source}: the settings cannot run together:\n  - " + "\n  - ".join(problems))


def check_plan(plan: StudyPlan) -> tuple[str, ...]:
    """Raise :class:`PlanError` naming every problem of ``plan``; return its notes (may be empty)."""
    study, layout = plan.study, plan.generation.layout
    sizes = {split: stop - start for split, (start, stop) in layout.split_ranges().items()}
    problems: list[str] = []
    notes: list[str] = []

    chunk = layout.chunk_size
    rounded = [f"{split} {study.generate.events[split]} -> {sizes[split]}" for split in sizes
               if sizes[split] != study.generate.events[split]]
    if rounded:
        notes.append(f"generate.events are filled in whole chunks of generate.chunk_size = {chunk}: "
                     f"{', '.join(rounded)} events per component")

    for label, m in {**plan.models, **plan.auc_models}.items():
        field = ("auc_study.classifier.{}" if label.startswith("auc:")
                 else "ratio.classifier.{}" if m.loss is not None else "classifier.{}")
        p, n = training_split_problems(m, sizes["train"], field=field)
        problems += p
        notes += n

    kde = sorted({k[0] for k in plan.templates if k[0] in NETWORK_ESTIMATORS and k[0] != "ratio"})   # ratio: no KDE
    if kde and sizes["template"] < MIN_KDE_EVENTS:
        problems.append(f"generate.events.template = {study.generate.events['template']} gives "
                        f"{sizes['template']} template event(s) per component, but the KDE templates need at "
                        f"least {MIN_KDE_EVENTS} ({', '.join(kde)}): raise generate.events.template")

    pools = {c: sizes["test"] for c in study.components}
    p, n = toy_pool_problems(plan.cells, pools, zero=study.pair[0], one=study.pair[1], nuisances=study.nuisances,
                             test_field=f"generate.events.test = {study.generate.events['test']}",
                             with_replacement=tuple(study.toys.weights))
    problems += p
    notes += n

    per_task = min(study.toys.batch_size, study.toys.n_toys)
    n_max = max(c.n_events for c in plan.cells) if plan.cells else max(study.toys.n_events)
    biggest = per_task * n_max * TOY_BYTES_PER_EVENT
    if biggest > TOY_TASK_NOTE_BYTES:
        notes.append(f"a toy task at N = {n_max} holds about {biggest / 2**30:.1f} GiB "
                     f"({per_task} toys, toys.batch_size = {study.toys.batch_size}); lower toys.batch_size if "
                     "workers have less memory")

    if problems:  # models of several smearing variants share the split: say each problem once
        raise PlanError(f"{study.source}: the settings cannot run together:\n  - "
                        + "\n  - ".join(dict.fromkeys(problems)))
    return tuple(dict.fromkeys(notes))


def exact_split_above(n_classes: int) -> int:
    """Part size above which a missing class has probability below 2^-63: K (1 - 1/K)^n < 2^-63."""
    if n_classes == 2:
        return EXACT_SPLIT_ABOVE
    return math.ceil((63 * math.log(2) + math.log(n_classes)) / -math.log1p(-1.0 / n_classes))


def training_split_problems(m: Model, n_train: int, *, field: str = "classifier.{}") -> tuple[list[str], list[str]]:
    """Every component in the training and in the validation part of the seeded split.

    ``field`` spells a classifier setting the way the user gives it (``"--set {}"`` on the CLI).

    The split is the one training will make (hpcmix.train.split.split_indices, same seed),
    so the check is exact: early stopping and the validation ROC AUC need events of every class.
    Parts of more than ``exact_split_above(K)`` events are not shuffled here: one of K classes
    missing there has a probability below 2^-63 (EXACT_SPLIT_ABOVE for two classes).
    """
    from ..train.split import split_indices, validation_size

    s, problems, notes = m.settings, [], []
    K = len(m.components)
    n = K * n_train
    names = " and ".join(m.components)
    if n_train < 2:
        return [f"{n_train} train event(s) per component cannot be split into training and validation "
                f"events of {names}: raise generate.events.train to at least 2"], []
    n_val = validation_size(n, s.validation_fraction)
    n_fit = n - n_val
    parts = ()
    if min(n_val, n_fit) <= exact_split_above(K):
        train_idx, val_idx = split_indices(n, s.validation_fraction, s.seed)
        parts = (("validation", val_idx), ("training", train_idx))
    for part, idx in parts:
        # labels: the first n_train events are the first component, the next n_train the second, ...
        missing = [c for k, c in enumerate(m.components)
                   if not np.any((idx >= k * n_train) & (idx < (k + 1) * n_train))]
        if missing:
            problems.append(
                f"{field.format('validation_fraction')} = {s.validation_fraction} of {K} x {n_train} train events "
                f"gives {idx.size} {part} event(s), none of {', '.join(missing)} (split seed {s.seed}); training "
                f"needs {names} events in both parts: raise generate.events.train, or move "
                f"{field.format('validation_fraction')} towards 0.5")
    if s.batch_size > n_fit:
        notes.append(f"{field.format('batch_size')} = {s.batch_size} exceeds the {n_fit} training events of model "
                     f"{m.label!r}: one update per epoch")
    return problems, notes


def toy_pool_problems(cells: Iterable[Cell], pools: Mapping[str, int], *, zero: str, one: str,
                      nuisances: Sequence[str] = (), test_field: str = "the test split",
                      with_replacement: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """Every planned toy fits in the test pools: no event may appear twice in one toy (but in the
    pools of ``with_replacement``, drawn in proportion to weights, where events may repeat).

    The composition of each toy is the first draw of its batch's seeded stream
    (hpcmix.stats.toys.toy_counts, whose first draw is toy_composition's), so this is exactly
    what the toys stage will need; cells with N no larger than every pool cannot fail and are
    not drawn, and beyond EXACT_TOYS_MAX toys a binomial tail bound (exceeded with probability
    < 1e-9) stands in.
    """
    from scipy import stats

    from ..stats.toys import toy_counts, toy_seed
    from .stages.toys import draw_order

    cells = list(cells)
    comps = (zero, one, *nuisances)
    need: dict[tuple, dict[str, int]] = {}        # (alpha, N, fractions) -> component -> most events in one toy
    use: dict[tuple, float] = {}
    exact = sum(sum(c.batches) for c in cells) <= EXACT_TOYS_MAX
    for c in cells:
        n_toys = sum(c.batches)
        truth = c.true_fractions(comps)
        order = draw_order(comps)
        key = (c.alpha, c.n_events, c.fractions)
        # mean uses of one pool event: toys x N x share / pool, the largest over the components
        use[key] = n_toys * c.n_events * max(truth[k] / max(pools[k], 1) for k in comps)
        top = need.setdefault(key, dict.fromkeys(comps, 0))
        if c.n_events <= min((pools[k] for k in comps if k not in with_replacement), default=float("inf")):
            continue  # no toy can need more events of one component than it has in all
        if exact:
            for b, size in enumerate(c.batches):
                rng = toy_seed(c.seed, c.estimator, c.smearing, c.alpha, c.n_events, b, fractions=dict(c.fractions))
                counts = toy_counts(rng, [truth[k] for k in order], n_events=c.n_events, n_toys=size)
                for k, most in zip(order, counts.max(axis=0)):
                    top[k] = max(top[k], int(most))
        else:
            # too many toys to draw here: the count that any of them exceeds with probability < 1e-9
            p = 1e-9 / n_toys
            # isf(p) is the smallest k with P(X > k) <= p
            for k in comps:
                top[k] = max(top[k], min(int(stats.binom.isf(p, c.n_events, truth[k])), c.n_events))
    problems = []
    for (alpha, n_events, fractions), most in sorted(need.items()):
        short = [(most[k], k) for k in (one, zero, *nuisances) if most[k] > pools[k] and k not in with_replacement]
        if short:
            what = " and ".join(f"{k} distinct {c} events (the {c} test pool holds {pools[c]})" for k, c in short)
            at = f"toys.alpha = {alpha:g}" + "".join(f", toys.fractions.{c} = {f:g}" for c, f in fractions)
            problems.append(
                f"toys.n_events = {n_events} at {at} needs up to {what} in one toy "
                f"({test_field}): raise generate.events.test to at least {max(k for k, _ in short)}, "
                f"or keep toys.n_events <= {min(pools[k] for k in comps)}")
    notes = []
    if use:
        (alpha, n_events, fractions), worst = max(use.items(), key=lambda kv: kv[1])
        if worst > 1:
            at = f"toys.alpha = {alpha:g}" + "".join(f", toys.fractions.{c} = {f:g}" for c, f in fractions)
            notes.append(f"toys reuse test-pool events: at {at}, toys.n_events = {n_events} "
                         f"an event is in about {worst:.0f} toys of its cell on average, so the toys are "
                         f"correlated; raise generate.events.test for independent toys")
    return problems, notes
