"""Pseudo-experiments drawn from finite test pools, vectorised over toys, with reuse bookkeeping.

Each toy has N events; the number of A events is Binomial(N, alpha) (the paper's
binomial composition); A events come from the A pool and H events from the H pool,
never the same pool event twice within one toy. Across toys events are reused when
the pools are smaller than the toys need; ``ToyDraw`` records how much.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MixtureDraw", "ToyDraw", "draw_mixture_toys", "draw_toys", "toy_composition", "toy_counts", "toy_seed"]


def _words(value) -> list[int]:
    """Stable 32-bit words for a seed component (strings hashed, floats by their exact repr)."""
    if isinstance(value, (bool, np.bool_)):
        value = int(value)
    if isinstance(value, (int, np.integer)) and value >= 0:
        return [int(value) & 0xFFFFFFFF, int(value) >> 32 & 0xFFFFFFFF]
    digest = hashlib.sha256(f"{type(value).__name__}:{value!r}".encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def toy_seed(study_seed: int, method="", smearing="", alpha=0.0, n_events=0, batch=0, *,
             fractions: Mapping[str, float] | None = None) -> np.random.Generator:
    """Deterministic Generator for one batch of toys of one (method, smearing, alpha, N) cell.

    Built from a ``numpy.random.SeedSequence`` of all components, so cells and batches get
    independent streams and rerunning any one batch reproduces it. ``study_seed`` (the study's
    ``seed``) is required: this module reads no global settings. ``fractions``: the nuisance
    components' true fractions of a K > 2 cell; they enter the seed only where one is non-zero,
    so a cell without nuisance events draws the two-component cell's stream.
    """
    if study_seed is None:
        raise TypeError("toy_seed needs the study seed (an integer, e.g. the job's seed); "
                        "hpcmix.stats reads no global settings")
    study_seed = int(study_seed)
    alpha = round(float(alpha), 12)  # 0.7 and 0.7000000000000001 are the same cell
    entropy = []
    parts = [study_seed, str(method), str(smearing), alpha, int(n_events), int(batch)]
    if fractions and any(float(f) != 0.0 for f in fractions.values()):
        for name, f in sorted(fractions.items()):
            parts += [str(name), round(float(f), 12)]
    for part in parts:
        entropy += _words(part)
    return np.random.default_rng(np.random.SeedSequence(entropy))


@dataclass(frozen=True)
class ToyDraw:
    """Which pool events make up each toy.

    index: (n_toys, N) positions in the A pool where ``is_a`` else in the H pool.
    n_a: A events per toy. uses_a / uses_h: how many toys used each pool event.
    """

    index: np.ndarray
    is_a: np.ndarray
    n_a: np.ndarray
    uses_a: np.ndarray
    uses_h: np.ndarray
    effective_pool: Mapping[str, float] = field(default_factory=dict)   # weighted pools ("A" / "H")

    @property
    def n_toys(self) -> int:
        return self.index.shape[0]

    @property
    def n_events(self) -> int:
        return self.index.shape[1]

    @property
    def uses(self) -> dict[str, np.ndarray]:
        """Uses per pool event by component, as :class:`MixtureDraw` and stored batches keep them."""
        return {"A": self.uses_a, "H": self.uses_h}

    def as_mixture(self) -> MixtureDraw:
        """The same toys as a two-component :class:`MixtureDraw` (A first), for the shared bookkeeping."""
        return MixtureDraw(components=("A", "H"), index=self.index, component=(~self.is_a).astype(np.int8),
                           counts=np.column_stack([self.n_a, self.n_events - self.n_a]),
                           uses=self.uses, effective_pool=dict(self.effective_pool))

    @property
    def mean_uses(self) -> float:
        """Mean number of toys each pool event appears in (A and H pools together)."""
        return self.as_mixture().mean_uses

    @property
    def max_uses(self) -> int:
        return self.as_mixture().max_uses

    @property
    def pool_smaller_than_needed(self) -> bool:
        """True when the toys need more events than the pools hold, so events repeat across toys."""
        return self.as_mixture().pool_smaller_than_needed

    def note(self) -> str:
        """One line for outputs: how much the pools were reused."""
        return self.as_mixture().note()

    def gather(self, values_a, values_h) -> np.ndarray:
        """Per-toy values (n_toys, N) from per-pool-event arrays (e.g. template densities)."""
        values_a = np.asarray(values_a)
        values_h = np.asarray(values_h)
        if values_a.shape[0] != self.uses_a.size or values_h.shape[0] != self.uses_h.size:
            raise ValueError(
                f"values must have one entry per pool event ({self.uses_a.size} A, {self.uses_h.size} H), "
                f"got {values_a.shape[0]} and {values_h.shape[0]}"
            )
        ia = np.where(self.is_a, self.index, 0)
        ih = np.where(self.is_a, 0, self.index)
        return np.where(self.is_a, values_a[ia], values_h[ih])


def _distinct_rows(pool: int, k: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """(n_rows, width) ints: row i starts with k[i] distinct uniform draws from range(pool); rest -1."""
    n_rows = k.size
    out = np.full((n_rows, width), -1, dtype=np.int64)
    if width == 0 or n_rows == 0 or k.max() == 0:
        return out
    kmax = int(k.max())
    used = np.arange(kmax)[None, :] < k[:, None]
    if 4 * kmax <= pool:
        # collisions are rare (each draw repeats with probability < k/M <= 1/4, and the redraws
        # shrink geometrically): draw with replacement, then redraw duplicates.
        # Redrawing only the repeats is sequential sampling without replacement, so subsets are uniform.
        sentinel = pool + np.arange(kmax)[None, :]  # unused slots never collide
        draws = np.where(used, rng.integers(0, pool, size=(n_rows, kmax)), sentinel)
        while True:
            draws.sort(axis=1)
            dup = np.zeros(draws.shape, dtype=bool)
            dup[:, 1:] = draws[:, 1:] == draws[:, :-1]
            n_dup = int(dup.sum())
            if n_dup == 0:
                break
            draws[dup] = rng.integers(0, pool, size=n_dup)
        # sorted rows: the k valid draws come first (sentinels are >= pool); shuffle order per row
        keys = np.where(used, rng.random((n_rows, kmax)), 2.0)
        draws = np.take_along_axis(draws, np.argsort(keys, axis=1), axis=1)
    else:
        # dense case: the kmax smallest of iid random keys, in key order, are a random permutation prefix
        draws = np.empty((n_rows, kmax), dtype=np.int64)
        chunk = max(1, (1 << 24) // pool)
        for s in range(0, n_rows, chunk):  # bounded memory: rows x pool keys per chunk
            keys = rng.random((min(chunk, n_rows - s), pool))
            part = np.argpartition(keys, kmax - 1, axis=1)[:, :kmax] if kmax < pool else np.argsort(keys, axis=1)
            order = np.argsort(np.take_along_axis(keys, part, axis=1), axis=1)
            draws[s : s + part.shape[0]] = np.take_along_axis(part, order, axis=1)
    out[:, :kmax] = np.where(used, draws, -1)
    return out


def toy_composition(rng: np.random.Generator, *, alpha: float, n_events: int, n_toys: int) -> np.ndarray:
    """A events per toy, Binomial(N, alpha): the first draw of a toy batch's stream.

    The plan calls it with the batch's own seed to check the test pools before any
    toy runs (hpcmix.orchestrate.checks), so it must stay the first use of ``rng``.
    """
    return rng.binomial(int(n_events), float(alpha), size=int(n_toys))


def toy_counts(rng: np.random.Generator, fractions, *, n_events: int, n_toys: int) -> np.ndarray:
    """Events per component per toy, (n_toys, K): Multinomial(N, fractions) as sequential binomials.

    Component k gets Binomial(N - earlier counts, f_k / (1 - earlier fractions)); the last
    gets the rest. The first draw is :func:`toy_composition`'s, so two components reproduce
    the paper's Binomial(N, alpha) toys exactly, stream included.
    """
    f = np.asarray(fractions, dtype=float)
    if f.ndim != 1 or f.size < 2 or np.any(~np.isfinite(f)) or np.any(f < 0) or abs(f.sum() - 1.0) > 1e-9:
        raise ValueError(f"toy fractions must be >= 0 and sum to 1 over at least two components, got {f.tolist()}")
    counts = np.empty((int(n_toys), f.size), dtype=np.int64)
    left = np.full(int(n_toys), int(n_events), dtype=np.int64)
    rest = 1.0
    for k in range(f.size - 1):
        p = min(max(f[k] / rest, 0.0), 1.0) if rest > 0 else 0.0
        if k == 0:
            counts[:, k] = toy_composition(rng, alpha=p, n_events=n_events, n_toys=n_toys)
        elif p < 1e-12 or p > 1 - 1e-12:  # certain (up to rounding): no draw, so absent components
            counts[:, k] = left if p > 0.5 else 0  # leave the stream as it was
        else:
            counts[:, k] = rng.binomial(left, p)
        left -= counts[:, k]
        rest -= f[k]
    counts[:, -1] = left
    return counts


@dataclass(frozen=True)
class MixtureDraw:
    """Which pool events make up each toy, for K components.

    components: the draw order; index: (n_toys, N) positions in the pool of ``component``
    (codes into ``components``), each toy's events grouped by component in that order;
    counts: (n_toys, K); uses: {component: how many toys used each of its pool events}.
    """

    components: tuple[str, ...]
    index: np.ndarray
    component: np.ndarray
    counts: np.ndarray
    uses: Mapping[str, np.ndarray]
    # components drawn in proportion to per-event weights (with replacement): their pools' Kish
    # effective size sum(w)^2 / sum(w^2), to compare with the pool size
    effective_pool: Mapping[str, float] = field(default_factory=dict)

    @property
    def n_toys(self) -> int:
        return self.index.shape[0]

    @property
    def n_events(self) -> int:
        return self.index.shape[1]

    @property
    def max_uses(self) -> int:
        return int(max((u.max(initial=0) for u in self.uses.values()), default=0))

    @property
    def mean_uses(self) -> float:
        total = sum(int(u.sum()) for u in self.uses.values())
        return float(total / max(sum(u.size for u in self.uses.values()), 1))

    @property
    def pool_smaller_than_needed(self) -> bool:
        return any(u.sum() > u.size for u in self.uses.values())

    def note(self) -> str:
        """One line for outputs: how much the pools were reused."""
        need = sum(int(u.sum()) for u in self.uses.values())
        pool = sum(u.size for u in self.uses.values())
        sizes = " + ".join(f"{u.size} {c}" for c, u in self.uses.items())
        msg = (f"{self.n_toys} toys x N={self.n_events} used {need} events from pools of {sizes}; "
               f"mean uses per pool event {self.mean_uses:.2f}, max {self.max_uses}")
        if self.pool_smaller_than_needed:
            msg += f" - pool smaller than the toys need ({pool} < {need}): toys are not independent"
        if self.effective_pool:
            msg += "; drawn in proportion to weights (with replacement): " + ", ".join(
                f"{c} effective pool {n:.0f} of {self.uses[c].size}" for c, n in self.effective_pool.items())
        return msg

    def gather(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """Per-toy values (n_toys, N) from per-pool-event arrays, one per component."""
        out = None
        for k, c in enumerate(self.components):
            v = np.asarray(values[c])
            if v.shape[0] != self.uses[c].size:
                raise ValueError(f"values for {c} must have one entry per pool event ({self.uses[c].size}), "
                                 f"got {v.shape[0]}")
            here = self.component == k
            picked = v[np.where(here, self.index, 0)]
            out = picked if out is None else np.where(here, picked, out)
        return out

    def gather_densities(self, density: Mapping[tuple[str, str], np.ndarray], order) -> np.ndarray:
        """(n_toys, N, K): template density of every component in ``order`` at every toy event.

        ``density[(template component, event component)]`` holds one value per pool event of the
        event component: the layout of hpcmix.store.artefacts.PoolDensities.density.
        """
        return np.stack([self.gather({c: density[(t, c)] for c in self.components}) for t in order], axis=-1)


def _weighted_rows(weights: np.ndarray, k: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """(n_rows, width) ints: row i starts with k[i] draws from range(len(weights)) with probability
    proportional to the weights, with replacement (inverse CDF of uniforms); the rest -1."""
    out = np.full((k.size, width), -1, dtype=np.int64)
    kmax = int(k.max(initial=0))
    if kmax == 0:
        return out
    cdf = np.cumsum(weights)
    draws = np.searchsorted(cdf, rng.random((k.size, kmax)) * cdf[-1], side="right")
    draws = np.minimum(draws, weights.size - 1)   # u * total rounding up to the last edge
    out[:, :kmax] = np.where(np.arange(kmax)[None, :] < k[:, None], draws, -1)
    return out


def draw_mixture_toys(pools: Mapping[str, int], fractions: Mapping[str, float], *, n_events: int, n_toys: int,
                      rng: np.random.Generator, weights: Mapping[str, np.ndarray] | None = None) -> MixtureDraw:
    """Draw ``n_toys`` toys of ``n_events`` events with Multinomial(N, fractions) composition.

    ``fractions`` (their order is the draw order) must be >= 0 and sum to 1; ``pools`` gives
    each component's test-pool size. No pool event appears twice within one toy; a pool
    smaller than the events of its component one toy needs is a ValueError.
    ``weights`` ({component: one weight per pool event}): that component's events are drawn with
    probability proportional to their weight, with replacement (so an event may repeat within a
    toy, and the pool size sets no limit); the effective pool size goes into the draw's note.
    """
    names = tuple(fractions)
    f = np.array([float(fractions[c]) for c in names])
    if len(names) < 2:
        raise ValueError(f"a mixture needs at least two components, got {list(names)}")
    missing = [c for c in names if c not in pools]
    if missing:
        raise ValueError(f"no test pool for component(s) {missing}; pools: {list(pools)}")
    if np.any(~np.isfinite(f)) or np.any(f < 0) or abs(f.sum() - 1.0) > 1e-9:
        raise ValueError(f"toy fractions must be >= 0 and sum to 1, got {dict(zip(names, f.tolist()))}")
    if int(n_events) != n_events or n_events < 1:
        raise ValueError(f"n_events must be an integer >= 1 (an empty toy cannot be fitted), got {n_events}")
    if int(n_toys) != n_toys or n_toys < 1:
        raise ValueError(f"n_toys must be an integer >= 1, got {n_toys}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy Generator (use toy_seed(...))")
    n_events, n_toys = int(n_events), int(n_toys)
    sizes = {c: int(pools[c]) for c in names}
    if any(n < 0 for n in sizes.values()):
        raise ValueError("pool sizes must be >= 0")
    weighted = {}
    for c, w in (weights or {}).items():
        if c not in sizes:
            raise ValueError(f"weights given for {c!r}, which is not a component of {list(names)}")
        w = np.asarray(w, dtype=float).reshape(-1)
        if w.size != sizes[c] or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
            raise ValueError(f"weights of {c} must be one finite weight >= 0 per pool event ({sizes[c]}), not all 0")
        weighted[c] = w
    counts = toy_counts(rng, f, n_events=n_events, n_toys=n_toys)
    for k, c in enumerate(names):
        if c not in weighted and counts[:, k].max() > sizes[c]:
            raise ValueError(f"{c} pool has {sizes[c]} events but a toy needs {counts[:, k].max()} distinct {c} "
                             "events; enlarge the test pool or lower N")
    col = np.arange(n_events)[None, :]
    starts = np.cumsum(counts, axis=1) - counts          # first column of each component per toy
    index = np.zeros((n_toys, n_events), dtype=np.int64)
    component = np.zeros((n_toys, n_events), dtype=np.int8)
    uses = {}
    for k, c in enumerate(names):
        rows = (_weighted_rows(weighted[c], counts[:, k], n_events, rng) if c in weighted
                else _distinct_rows(sizes[c], counts[:, k], n_events, rng))
        here = (col >= starts[:, k : k + 1]) & (col < starts[:, k : k + 1] + counts[:, k : k + 1])
        # component k's draws shifted to its columns
        shifted = np.take_along_axis(rows, np.clip(col - starts[:, k : k + 1], 0, n_events - 1), axis=1)
        index = np.where(here, shifted, index)
        component[here] = k
        uses[c] = np.bincount(index[here], minlength=sizes[c])
    effective = {c: float(w.sum() ** 2 / (w * w).sum()) for c, w in weighted.items()}
    return MixtureDraw(components=names, index=index, component=component, counts=counts, uses=uses,
                       effective_pool=effective)


def draw_toys(n_pool_a: int, n_pool_h: int, *, alpha: float, n_events: int, n_toys: int,
              rng: np.random.Generator, weights_a=None, weights_h=None) -> ToyDraw:
    """Draw ``n_toys`` toys of ``n_events`` events with Binomial(N, alpha) A events each.

    Returns pool positions per toy (``ToyDraw.index`` with ``is_a``) and reuse counts.
    Raises ValueError for alpha outside [0, 1], N < 1, n_toys < 1, or a pool smaller than
    the A (or H) events one toy needs (no event may appear twice in one toy). The
    two-component case of :func:`draw_mixture_toys` (A drawn first); ``weights_a`` / ``weights_h``
    draw that pool in proportion to per-event weights, as there.
    """
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha for toy generation must lie in [0, 1], got {alpha}")
    weights = {k: w for k, w in (("A", weights_a), ("H", weights_h)) if w is not None}
    d = draw_mixture_toys({"A": n_pool_a, "H": n_pool_h}, {"A": alpha, "H": 1.0 - alpha}, n_events=n_events,
                          n_toys=n_toys, rng=rng, weights=weights or None)
    return ToyDraw(index=d.index, is_a=d.component == 0, n_a=d.counts[:, 0], uses_a=d.uses["A"],
                   uses_h=d.uses["H"], effective_pool=d.effective_pool)
