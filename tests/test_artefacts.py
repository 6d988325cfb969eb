"""Stage artefacts as versioned .npz: templates and toy batches round trip bit for bit, read with
numpy alone, and old pickles, other formats and bad meta are refused with clear messages."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle

import numpy as np
import pytest
from hpcmix.stats import AnalyticTemplates, KDETemplates, MixtureFit, PhiStarTemplates, fit_mixture
from hpcmix.stats import draw_toys, fit_phi_star_templates, toy_seed
from hpcmix.store import (
    TEMPLATES_FORMAT,
    TOY_BATCH_FORMAT,
    ArtefactFormatError,
    ToyBatch,
    load_templates,
    load_toy_batch,
    save_templates,
    save_toy_batch,
)
from hpcmix.store.artefacts import TEMPLATES_FILE, read_meta


def _labelled_outputs(rng, n=2000):
    """Network-output-like values: Beta-distributed, diverging at 1 (A) and at 0 (H)."""
    y = np.r_[rng.beta(0.6, 2.5, n), rng.beta(2.5, 0.6, n)]
    return y, np.r_[np.zeros(n, bool), np.ones(n, bool)]


def _test_pool(rng):
    """Values a test pool holds, plus the awkward ones: ends, inside the clip bins, outside [0, 1]."""
    return np.r_[rng.beta(0.6, 2.5, 3000), rng.beta(2.5, 0.6, 3000), rng.uniform(size=500),
                 [0.0, 1.0, 1e-9, 5e-8, 1e-7, 1 - 1e-7, 1 - 3e-8, 0.5, -0.1, 1.1]]


@pytest.fixture(scope="module")
def kde_inputs():
    return _labelled_outputs(np.random.default_rng(5))


@pytest.fixture(scope="module")
def phi_star():
    rng = np.random.default_rng(2)
    is_a = rng.uniform(size=4000) < 0.5
    x = rng.uniform(0, 2 * np.pi, is_a.size)  # a ~ 0: uniform values are enough for a fitted a
    return fit_phi_star_templates(x, is_a)


ALPHAS = np.array([-0.2, 0.0, 0.5, 0.7, 0.9, 1.0, 1.3])


def _assert_same_templates(t, u, x):
    for p, q in zip(t.densities(x), u.densities(x)):
        assert p.dtype == q.dtype and np.array_equal(p, q)
    assert u.positivity_limits() == t.positivity_limits()
    assert u.ratio_range == t.ratio_range
    assert np.array_equal(u.cramer_rao_bound(ALPHAS[:, None], np.array([20, 100, 500])),
                          t.cramer_rao_bound(ALPHAS[:, None], np.array([20, 100, 500])))
    assert np.array_equal(u.fisher_information(ALPHAS), t.fisher_information(ALPHAS))
    assert all(np.array_equal(a, b) for a, b in zip(u.tabulate(512), t.tabulate(512)))
    assert u.support == t.support
    assert type(u) is type(t)


def test_phi_star_round_trip_is_bit_identical(tmp_path, phi_star):
    path = save_templates(tmp_path, phi_star)
    assert path == os.path.join(tmp_path, TEMPLATES_FILE) and os.listdir(tmp_path) == [TEMPLATES_FILE]
    back = load_templates(tmp_path)
    x = np.random.default_rng(0).uniform(0, 2 * np.pi, 5000)
    _assert_same_templates(phi_star, back, x)
    assert back == phi_star  # a, a_err, c, c_err, n_events
    assert (back.a, back.a_err, back.c, back.n_events) == (phi_star.a, phi_star.a_err, phi_star.c, 4000)


@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("space", ["logit", "reflect"])
def test_kde_round_trip_is_bit_identical(tmp_path, kde_inputs, space, adaptive):
    t = KDETemplates(*kde_inputs, space=space, adaptive=adaptive, grid_size=2048)
    save_templates(tmp_path, t)
    u = load_templates(tmp_path)
    x = _test_pool(np.random.default_rng(1))
    _assert_same_templates(t, u, x)
    for ta, ua in ((t.template_a, u.template_a), (t.template_h, u.template_h)):
        assert np.array_equal(ta.cdf(x), ua.cdf(x)) and np.array_equal(ta.pdf_grid(), ua.pdf_grid())
        assert (ua.bandwidth, ua.n_events, ua.data_range, ua.factor_range, ua.pilot_geometric_mean) == \
            (ta.bandwidth, ta.n_events, ta.data_range, ta.factor_range, ta.pilot_geometric_mean)
    assert u.bandwidths == t.bandwidths and u.space == space and u.adaptive is adaptive
    assert np.array_equal(u.grid, t.grid) and u.grid.size == 2048
    assert (u.data_range, u.positivity_range, u.positivity_quantile, u.clip) == \
        (t.data_range, t.positivity_range, t.positivity_quantile, t.clip)
    assert u.settings == t.settings


def test_kde_round_trip_with_other_settings_and_component_names(tmp_path, kde_inputs):
    t = KDETemplates(*kde_inputs, bandwidth=0.25, positivity_quantile=0.01, clip=1e-5, grid_size=1024,
                     adaptive_classes=8)
    save_templates(tmp_path, t, components=("even", "odd_1"))
    u = load_templates(tmp_path)
    _assert_same_templates(t, u, _test_pool(np.random.default_rng(3)))
    assert u.settings == {"space": "logit", "bandwidth": 0.25, "adaptive": True, "grid_size": 1024,
                          "logit_clip": 1e-5, "positivity_quantile": 0.01, "adaptive_classes": 8}
    with np.load(os.path.join(tmp_path, TEMPLATES_FILE), allow_pickle=False) as f:
        assert {"density_even", "density_odd_1", "cum_odd_1", "bandwidth_even"} <= set(f.files)
        assert np.array_equal(f["density_even"], t.template_h.density)  # first name: the alpha = 0 one
        assert json.loads(f["meta"].item())["components"] == ["even", "odd_1"]


def test_save_overwrites_atomically_and_leaves_no_temporary_files(tmp_path, kde_inputs, phi_star, monkeypatch):
    save_templates(tmp_path, phi_star)
    t = KDETemplates(*kde_inputs, grid_size=512)
    save_templates(tmp_path, t)
    assert os.listdir(tmp_path) == [TEMPLATES_FILE] and isinstance(load_templates(tmp_path), KDETemplates)
    before = (tmp_path / TEMPLATES_FILE).read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        save_templates(tmp_path, phi_star)
    assert os.listdir(tmp_path) == [TEMPLATES_FILE]
    assert (tmp_path / TEMPLATES_FILE).read_bytes() == before  # old file intact


def test_templates_read_with_numpy_alone(tmp_path, kde_inputs, phi_star):
    """The docstring's recipe: np.load(allow_pickle=False), json meta, p(y) by interpolation."""
    y = np.r_[np.linspace(1e-6, 1 - 1e-6, 2001), [0.3, 0.9]]
    for space in ("logit", "reflect"):
        t = KDETemplates(*kde_inputs, space=space, grid_size=1024)
        folder = tmp_path / space
        save_templates(folder, t)
        with np.load(folder / TEMPLATES_FILE, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}  # every entry loads without unpickling
        assert all(not v.dtype.hasobject for v in arrays.values())
        meta = json.loads(arrays["meta"].item())
        assert meta["format"] == TEMPLATES_FORMAT == 1 and meta["kind"] == "kde"
        assert meta["components"] == ["H", "A"] and meta["densities"] == {"H": "density_H", "A": "density_A"}
        assert meta["settings"]["space"] == space and meta["hpcmix_version"]
        assert meta["grid_variable"] == {"logit": "logit(y)", "reflect": "y"}[space]
        assert np.array_equal(arrays["positivity_limits"], t.positivity_limits())
        assert np.array_equal(arrays["support"], [0.0, 1.0])
        assert arrays["bandwidth_A"] == t.bandwidths[0] and arrays["bandwidth_H"] == t.bandwidths[1]
        for name, expected in (("H", t.p_h(y)), ("A", t.p_a(y))):
            if space == "logit":
                p = np.interp(np.log(y / (1 - y)), arrays["grid"], arrays[f"density_{name}"]) / (y * (1 - y))
            else:
                p = np.interp(y, arrays["grid"], arrays[f"density_{name}"])
            np.testing.assert_allclose(p, expected, rtol=1e-9, atol=0)
    save_templates(tmp_path / "phi", phi_star)
    with np.load(tmp_path / "phi" / TEMPLATES_FILE, allow_pickle=False) as f:
        meta = json.loads(f["meta"].item())
        assert meta["kind"] == "phi_star" and meta["grid_variable"] == "phi_star"
        x, a, c = f["grid"], float(f["a"]), float(f["c"])
        np.testing.assert_allclose(f["density_A"], c + a * np.cos(x), rtol=1e-15)
        np.testing.assert_allclose(f["density_H"], c - a * np.cos(x), rtol=1e-15)
        assert tuple(f["positivity_limits"]) == phi_star.positivity_limits()


def test_save_templates_refuses_what_it_cannot_store(tmp_path):
    with pytest.raises(TypeError, match="PhiStarTemplates, KDETemplates or DirectRatioTemplates"):
        save_templates(tmp_path, AnalyticTemplates(lambda v: 0.5 + v, lambda v: 1.5 - v))
    for bad in (("H",), ("H", "H"), ("H", "A", "X"), ("H", "a-b"), ("H", ""), ("H", 1)):
        with pytest.raises(ValueError, match="two distinct names"):
            save_templates(tmp_path, PhiStarTemplates(a=0.04), components=bad)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- toy batches


@pytest.fixture(scope="module")
def toy_batch():
    """A real batch: toys drawn from a pool and fitted, as the toys stage does."""
    t = PhiStarTemplates(a=0.041)
    rng = np.random.default_rng(9)
    x_a, x_h = rng.uniform(0, 2 * np.pi, 800), rng.uniform(0, 2 * np.pi, 600)
    draw = draw_toys(x_a.size, x_h.size, alpha=0.7, n_events=50, n_toys=40, rng=toy_seed(1, "phi_star", "none"))
    (pa_a, ph_a), (pa_h, ph_h) = t.densities(x_a), t.densities(x_h)
    fit = fit_mixture(draw.gather(pa_a, pa_h), draw.gather(ph_a, ph_h), alpha_true=0.7,
                      alpha_limits=t.positivity_limits())
    return fit, draw


def test_toy_batch_round_trip(tmp_path, toy_batch):
    fit, draw = toy_batch
    path = save_toy_batch(tmp_path / "batch-00000.npz", fit, uses={"H": draw.uses_h, "A": draw.uses_a},
                          max_uses=draw.max_uses, note=draw.note())
    assert os.listdir(tmp_path) == ["batch-00000.npz"] and path == str(tmp_path / "batch-00000.npz")
    back = load_toy_batch(path)
    assert isinstance(back, ToyBatch) and isinstance(back.fit, MixtureFit) and len(back.fit) == 40
    for f in dataclasses.fields(MixtureFit):
        a, b = getattr(fit, f.name), getattr(back.fit, f.name)
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f.name
    assert np.array_equal(back.draw.uses_a, draw.uses_a) and np.array_equal(back.draw.uses_h, draw.uses_h)
    assert back.draw.uses_a.dtype == draw.uses_a.dtype and back.draw.components == ("H", "A")
    assert back.draw.max_uses == draw.max_uses and back.note == draw.note()
    # what the results builder reads from today's {"fit", "draw"} dict: same names, same values
    assert back.draw.uses_a.sum() + back.draw.uses_h.sum() == draw.uses_a.sum() + draw.uses_h.sum()
    # with plain numpy
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(f["meta"].item())
        assert meta["format"] == TOY_BATCH_FORMAT == 1 and meta["kind"] == "toy_batch" and meta["n_toys"] == 40
        assert meta["uses"] == {"H": "uses_H", "A": "uses_A"} and meta["components"] == ["H", "A"]
        assert set(meta["fit_fields"]) == {f.name for f in dataclasses.fields(MixtureFit)} <= set(f.files)
        assert str(f["note"]) == draw.note() and int(f["max_uses"]) == draw.max_uses


def test_save_toy_batch_checks_its_input(tmp_path, toy_batch):
    fit, draw = toy_batch
    args = dict(max_uses=draw.max_uses, note="n")
    with pytest.raises(ValueError, match="end in .npz"):
        save_toy_batch(tmp_path / "batch-00000.pkl", fit, uses={"H": draw.uses_h, "A": draw.uses_a}, **args)
    with pytest.raises(ValueError, match="two distinct names"):
        save_toy_batch(tmp_path / "batch-00000.npz", fit, uses={"H": draw.uses_h}, **args)
    short = dataclasses.replace(fit, n_iter=fit.n_iter[:3])
    with pytest.raises(ValueError, match="shape"):
        save_toy_batch(tmp_path / "batch-00000.npz", short, uses={"H": draw.uses_h, "A": draw.uses_a}, **args)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- refusals


def _rewrite(path, meta=None, drop=(), **extra):
    """Rewrite an artefact: meta replaced (None: kept; False: removed; a dict: as JSON), arrays dropped
    or replaced (``extra``)."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files if k not in drop}
    if meta is False:
        del arrays["meta"]
    elif isinstance(meta, dict):
        arrays["meta"] = np.array(json.dumps(meta))
    elif meta is not None:
        extra["meta"] = np.asarray(meta)
    arrays.update(extra)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_old_pickled_templates_are_refused(tmp_path, phi_star):
    with open(tmp_path / "templates.pkl", "wb") as f:
        pickle.dump(phi_star, f)
    for where in (tmp_path, tmp_path / "templates.pkl"):
        with pytest.raises(ArtefactFormatError) as err:
            load_templates(where)
        msg = str(err.value)
        assert "made by an older hpcmix" in msg and "pickles are not read any more" in msg
        assert "rerun the templates stage" in msg and "hpcmix templates" in msg and "hpcmix run JOB" in msg
    assert isinstance(err.value, ValueError)
    with pytest.raises(FileNotFoundError, match="run the templates stage"):
        load_templates(tmp_path / "empty")


def test_old_pickled_toy_batches_are_refused(tmp_path, toy_batch):
    fit, draw = toy_batch
    with open(tmp_path / "batch-00000.pkl", "wb") as f:
        pickle.dump({"fit": fit, "draw": draw, "note": "x"}, f)
    for where in (tmp_path / "batch-00000.pkl", tmp_path / "batch-00000.npz"):
        with pytest.raises(ArtefactFormatError) as err:
            load_toy_batch(where)
        msg = str(err.value)
        assert "made by an older hpcmix" in msg and "pickles are not read any more" in msg
        assert "rerun the toys stage" in msg and "hpcmix toys" in msg and "batch-00000.pkl" in msg
    # a pickle under the new name is no artefact either, and is not unpickled
    os.replace(tmp_path / "batch-00000.pkl", tmp_path / "batch-00001.npz")
    with pytest.raises(ArtefactFormatError, match="not a readable hpcmix .npz artefact"):
        load_toy_batch(tmp_path / "batch-00001.npz")


@pytest.mark.parametrize("fmt, word", [(2, "newer hpcmix; upgrade"), (0, "older hpcmix; rerun the templates")])
def test_other_template_formats_are_refused_naming_both_numbers(tmp_path, phi_star, fmt, word):
    path = save_templates(tmp_path, phi_star)
    meta = read_meta(path)
    _rewrite(path, {**meta, "format": fmt})
    with pytest.raises(ArtefactFormatError) as err:
        load_templates(tmp_path)
    msg = str(err.value)
    assert f"templates format {fmt}" in msg and f"reads templates format {TEMPLATES_FORMAT}" in msg and word in msg


@pytest.mark.parametrize("fmt, word", [(7, "newer hpcmix"), (0, "older hpcmix; rerun the toys")])
def test_other_toy_batch_formats_are_refused_naming_both_numbers(tmp_path, toy_batch, fmt, word):
    fit, draw = toy_batch
    path = save_toy_batch(tmp_path / "batch-00000.npz", fit, uses={"H": draw.uses_h, "A": draw.uses_a},
                          max_uses=draw.max_uses, note="")
    _rewrite(path, {**read_meta(path), "format": fmt})
    with pytest.raises(ArtefactFormatError) as err:
        load_toy_batch(path)
    msg = str(err.value)
    assert f"toy batch format {fmt}" in msg and f"reads toy batch format {TOY_BATCH_FORMAT}" in msg and word in msg


@pytest.mark.parametrize(
    "meta, match",
    [
        (False, "no meta entry"),
        ("{not json", "malformed meta, not JSON"),
        (json.dumps(["format", 1]), "no integer 'format'"),
        (json.dumps({"kind": "kde"}), "no integer 'format'"),
        (json.dumps({"format": "1", "kind": "kde"}), "no integer 'format'"),
        (json.dumps({"format": 1, "kind": "toy_batch", "components": ["H", "A"]}), "'toy_batch' is not a templates"),
        (json.dumps({"format": 9, "kind": "toy_batch", "components": ["H", "A"]}), "'toy_batch' is not a templates"),
        (json.dumps({"format": 1, "kind": "histogram", "components": ["H", "A"]}), "'histogram' is not a templates"),
        (json.dumps({"format": 1, "kind": "kde"}), "malformed meta components"),
        (json.dumps({"format": 1, "kind": "kde", "components": ["H", "A"]}), "'settings' missing"),
    ],
)
def test_missing_or_malformed_template_meta_is_refused(tmp_path, kde_inputs, meta, match):
    path = save_templates(tmp_path, KDETemplates(*kde_inputs, grid_size=256))
    _rewrite(path, meta)
    with pytest.raises(ArtefactFormatError, match=match):
        load_templates(tmp_path)


def test_malformed_arrays_are_refused(tmp_path, kde_inputs, toy_batch):
    path = save_templates(tmp_path, KDETemplates(*kde_inputs, grid_size=256))
    _rewrite(path, drop=("cum_A",))
    with pytest.raises(ArtefactFormatError, match="'cum_A' missing for kde templates"):
        load_templates(tmp_path)
    path = save_templates(tmp_path, KDETemplates(*kde_inputs, grid_size=256))
    _rewrite(path, density_H=np.zeros(3))
    with pytest.raises(ArtefactFormatError, match="malformed kde templates"):
        load_templates(tmp_path)
    path = save_templates(tmp_path, PhiStarTemplates(a=0.04))
    _rewrite(path, drop=("meta",), meta_=np.zeros(1))
    with pytest.raises(ArtefactFormatError, match="no meta entry"):
        load_templates(tmp_path)
    path = save_templates(tmp_path, PhiStarTemplates(a=0.04))
    _rewrite(path, drop=("meta",), meta=np.zeros(2))
    with pytest.raises(ArtefactFormatError, match="malformed meta"):
        load_templates(tmp_path)
    # a toy batch loaded as templates and back, and one missing arrays
    save_templates(tmp_path, PhiStarTemplates(a=0.04))
    fit, draw = toy_batch
    bpath = save_toy_batch(tmp_path / "batch-00000.npz", fit, uses={"H": draw.uses_h, "A": draw.uses_a},
                           max_uses=draw.max_uses, note="")
    with pytest.raises(ArtefactFormatError, match="kind 'toy_batch' is not a templates file"):
        load_templates(bpath)
    with pytest.raises(ArtefactFormatError, match="kind 'phi_star' is not a toy batch file"):
        load_toy_batch(os.path.join(tmp_path, TEMPLATES_FILE))
    _rewrite(bpath, drop=("uses_A", "lr_stat"))
    with pytest.raises(ArtefactFormatError, match=r"arrays \['lr_stat', 'uses_A'\] missing for a toy batch"):
        load_toy_batch(bpath)


def test_loaded_templates_never_unpickle(tmp_path, phi_star):
    """A file written by save_templates holds no pickled objects: an allow_pickle=False load succeeds."""
    path = save_templates(tmp_path, phi_star)
    with np.load(path, allow_pickle=False) as f:
        for k in f.files:
            assert not f[k].dtype.hasobject
    # and an object array smuggled in is refused rather than unpickled
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["a"] = np.array([{"a": 0.04}], dtype=object)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ArtefactFormatError, match="not a readable hpcmix .npz artefact"):
        load_templates(tmp_path)


def test_test_pool_round_trip_keyed_by_component(tmp_path, kde_inputs):
    from hpcmix.store.artefacts import TEST_POOL_FILE, load_test_pool, save_test_pool

    t = KDETemplates(*kde_inputs)
    rng = np.random.default_rng(3)
    values = {"Z": rng.beta(0.6, 2.5, 300), "A": rng.beta(2.5, 0.6, 200)}
    save_test_pool(tmp_path, t, values)
    pool = load_test_pool(tmp_path)
    assert pool.components == ("Z", "A") and pool.size("Z") == 300 and pool.size("A") == 200
    for c, v in values.items():
        p_a, p_h = t.densities(v)
        np.testing.assert_array_equal(pool.values[c], v)
        np.testing.assert_array_equal(pool.density[("A", c)], p_a)   # the alpha = 1 component's density
        np.testing.assert_array_equal(pool.density[("Z", c)], p_h)
    path = tmp_path / TEST_POOL_FILE
    with np.load(path, allow_pickle=False) as f:                     # numpy alone reads it
        assert json.loads(f["meta"].item())["kind"] == "test_pool"
    meta = read_meta(path)
    _rewrite(path, meta={**meta, "format": meta["format"] + 1})
    with pytest.raises(ArtefactFormatError, match="test pool format 2.*newer"):
        load_test_pool(tmp_path)
    _rewrite(path, meta=meta, drop=("density_A_on_Z",))
    with pytest.raises(ArtefactFormatError, match="density_A_on_Z"):
        load_test_pool(tmp_path)
