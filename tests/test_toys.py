"""Pseudo-experiments: binomial composition, no repeats within a toy, reuse records, seeds, errors."""

from __future__ import annotations

import numpy as np
import pytest

from hpcmix.stats import draw_toys, toy_seed


@pytest.mark.parametrize("pool", [100_000, 2000, 150])  # sparse (redraw) and dense (random keys) paths
def test_composition_and_no_repeats(pool):
    rng = toy_seed(1, "phi*", "none", 0.7, 100, 0)
    d = draw_toys(pool, pool, alpha=0.7, n_events=100, n_toys=4000, rng=rng)
    assert d.index.shape == d.is_a.shape == (4000, 100)
    np.testing.assert_array_equal(d.is_a.sum(1), d.n_a)
    # Binomial(100, 0.7): mean 70, variance 21
    assert d.n_a.mean() == pytest.approx(70, abs=4 * np.sqrt(21 / 4000))
    assert d.n_a.var() == pytest.approx(21, rel=0.1)
    # no pool event twice in one toy (separately for the A and H pools)
    key = np.where(d.is_a, d.index, d.index + pool)
    s = np.sort(key, axis=1)
    assert not np.any(s[:, 1:] == s[:, :-1])
    assert d.index.min() >= 0 and d.index.max() < pool
    # every pool event about equally likely: uses are uniform across the pool
    assert d.uses_a.sum() == d.n_a.sum() and d.uses_h.sum() == (100 - d.n_a).sum()
    expect = d.uses_a.sum() / pool
    if pool == 150:
        assert d.uses_a.std() < 4 * np.sqrt(expect)


def test_reuse_is_recorded():
    d = draw_toys(1000, 1000, alpha=0.5, n_events=100, n_toys=100, rng=toy_seed(2))
    assert d.pool_smaller_than_needed and d.mean_uses == pytest.approx(5.0)
    assert "pool smaller than the toys need" in d.note()
    d2 = draw_toys(10**6, 10**6, alpha=0.5, n_events=10, n_toys=10, rng=toy_seed(2))
    assert not d2.pool_smaller_than_needed and "pool smaller" not in d2.note()


def test_edge_alphas_and_gather():
    d = draw_toys(50, 50, alpha=0.0, n_events=20, n_toys=30, rng=toy_seed(3))
    assert not d.is_a.any()
    d = draw_toys(50, 50, alpha=1.0, n_events=50, n_toys=30, rng=toy_seed(3))
    assert d.is_a.all() and np.all(np.sort(d.index, 1) == np.arange(50))  # a full permutation
    va, vh = np.arange(50) + 1000.0, -np.arange(50) - 1.0
    g = d.gather(va, vh)
    np.testing.assert_array_equal(g, d.index + 1000.0)
    with pytest.raises(ValueError, match="one entry per pool event"):
        d.gather(va[:10], vh)


def test_seeds_are_deterministic_and_distinct():
    a = toy_seed(7, "NN", "detector", 0.7, 100, 3).random(5)
    b = toy_seed(7, "NN", "detector", 0.7, 100, 3).random(5)
    np.testing.assert_array_equal(a, b)
    others = [toy_seed(8, "NN", "detector", 0.7, 100, 3), toy_seed(7, "phi*", "detector", 0.7, 100, 3),
              toy_seed(7, "NN", "none", 0.7, 100, 3), toy_seed(7, "NN", "detector", 0.9, 100, 3),
              toy_seed(7, "NN", "detector", 0.7, 500, 3), toy_seed(7, "NN", "detector", 0.7, 100, 4)]
    for g in others:
        assert not np.array_equal(a, g.random(5))
    # 0.7 computed two ways is the same cell
    np.testing.assert_array_equal(toy_seed(7, "NN", "d", 0.1 * 7, 100, 3).random(3),
                                  toy_seed(7, "NN", "d", 0.7, 100, 3).random(3))


def test_the_study_seed_is_required():
    with pytest.raises(TypeError, match="study_seed"):
        toy_seed()
    with pytest.raises(TypeError, match="needs the study seed"):
        toy_seed(None, "NN", "none", 0.7, 100, 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(alpha=1.2), r"\[0, 1\]"),
        (dict(alpha=-0.1), r"\[0, 1\]"),
        (dict(n_events=0), "empty toy"),
        (dict(n_toys=0), "n_toys"),
        (dict(n_events=500), "pool has"),
    ],
)
def test_bad_input(kwargs, match):
    args = dict(alpha=0.5, n_events=10, n_toys=5, rng=toy_seed(1))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        draw_toys(100, 100, **args)


# -- K components ----------------------------------------------------------------------------
def test_mixture_toys_have_multinomial_composition_and_no_event_twice():
    from hpcmix.stats.toys import draw_mixture_toys

    fractions = {"A": 0.35, "H": 0.15, "Z": 0.4, "tt": 0.1}
    pools = {"A": 400, "H": 300, "Z": 500, "tt": 60}
    d = draw_mixture_toys(pools, fractions, n_events=50, n_toys=20000, rng=toy_seed(11))
    f = np.array(list(fractions.values()))
    assert d.counts.shape == (20000, 4) and np.all(d.counts.sum(axis=1) == 50)
    # multinomial mean N f and covariance N (diag(f) - f f^T)
    assert np.all(np.abs(d.counts.mean(axis=0) - 50 * f) < 4 * np.sqrt(50 * f / 20000))
    cov = np.cov(d.counts.T)
    np.testing.assert_allclose(cov, 50 * (np.diag(f) - np.outer(f, f)), atol=0.25)
    for k, c in enumerate(fractions):
        here = d.component == k
        assert np.all(here.sum(axis=1) == d.counts[:, k])
        assert d.index[here].max() < pools[c] and d.uses[c].sum() == d.counts[:, k].sum()
        # no pool event twice within one toy: sort each toy's positions of this component
        pos = np.where(here, d.index, -1 - np.arange(50)[None, :])
        srt = np.sort(pos, axis=1)
        assert not np.any((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0))


def test_mixture_toys_gather_densities_by_event_component():
    from hpcmix.stats.toys import draw_mixture_toys

    pools = {"A": 30, "H": 20, "Z": 25}
    d = draw_mixture_toys(pools, {"A": 0.5, "H": 0.3, "Z": 0.2}, n_events=12, n_toys=40, rng=toy_seed(5))
    # PoolDensities' layout: density[(template, events of)], one value per pool event of the
    # event component; here 1000 * event's component code + 10 * template code + position / 100
    code = {c: i for i, c in enumerate(pools)}
    dens = {(t, e): 1000 * code[e] + 10 * code[t] + np.arange(pools[e]) / 100 for e in pools for t in pools}
    m = d.gather_densities(dens, ("H", "A", "Z"))
    assert m.shape == (40, 12, 3)
    np.testing.assert_array_equal(np.floor(m[..., 0] / 1000), d.component)          # event's component
    np.testing.assert_allclose(m[..., 1] - m[..., 0], 10 * (code["A"] - code["H"]))  # template column
    np.testing.assert_allclose(np.round((m[..., 0] % 10) * 100), d.index)           # pool position


def test_two_component_mixture_toys_are_the_binomial_toys():
    from hpcmix.stats.toys import draw_mixture_toys

    a = draw_toys(300, 200, alpha=0.7, n_events=40, n_toys=500, rng=toy_seed(9, "c", "d", 0.7, 40, 2))
    m = draw_mixture_toys({"A": 300, "H": 200}, {"A": 0.7, "H": 0.3}, n_events=40, n_toys=500,
                          rng=toy_seed(9, "c", "d", 0.7, 40, 2))
    np.testing.assert_array_equal(a.index, m.index)
    np.testing.assert_array_equal(a.n_a, m.counts[:, 0])


@pytest.mark.parametrize("pools, fractions, match", [
    ({"A": 10, "H": 10}, {"A": 0.5, "H": 0.6}, "sum to 1"),
    ({"A": 10, "H": 10}, {"A": 1.2, "H": -0.2}, ">= 0"),
    ({"A": 10}, {"A": 0.5, "H": 0.5}, "no test pool"),
    ({"A": 10}, {"A": 1.0}, "at least two"),
    ({"A": 30, "H": 2}, {"A": 0.5, "H": 0.5}, "H pool has 2 events"),
])
def test_mixture_toys_refuse_bad_input(pools, fractions, match):
    from hpcmix.stats.toys import draw_mixture_toys

    with pytest.raises(ValueError, match=match):
        draw_mixture_toys(pools, fractions, n_events=20, n_toys=50, rng=toy_seed(1))
