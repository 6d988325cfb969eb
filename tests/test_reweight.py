"""The reweighting stage: density-ratio networks between two configurations of one process, trained
outside a blinded region, their weights in the event store; and the statistics behind its checks."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import run_in_process, write_job

from hpcmix.orchestrate.pipeline import plan_study
from hpcmix.orchestrate.record import StageRecord
from hpcmix.schema import ConfigError
from hpcmix.stats.weights import effective_sample_size, network_spread, region_fractions, weight_summary
from hpcmix.study import load_study, resolve_study
from hpcmix.train.metrics import auc_error, roc_auc, weighted_roc_auc

# H at 450 GeV reweighted to H at 520 GeV (a variant of H): a shift every kinematic feature sees
HEAVY = {"H_heavy": {"variant_of": "H", "settings": ["35:m0 = 520."]}}
BLIND = {"feature": "m_vis", "min": 200.0, "max": 260.0}


def tiny_job(out, **changes) -> dict:
    job = {"name": "tiny-reweight", "output": str(out), "seed": 7, "smearing": ["none"], "processes": HEAVY,
           "generate": {"profile": "fast", "chunk_size": 500, "events": {"train": 1500, "template": 1000, "test": 1000}},
           "classifier": {"hidden_layers": [32, 32], "max_epochs": 10, "batch_size": 128, "learning_rate": 0.003,
                          "early_stopping_patience": 3, "lr_patience": 2},
           "reweight": {"heavy": {"source": "H", "target": "H_heavy", "blind": BLIND, "networks": 2}},
           "toys": {"estimators": ["phi_star"], "alpha": [0.5], "n_events": [50], "n_toys": 20, "batch_size": 20}}
    job.update(changes)
    return job



# -- the statistics (no events) --------------------------------------------------------------------
def test_shape_chi2_is_about_one_per_degree_of_freedom_for_one_density_and_sees_a_shift():
    from hpcmix.stats.weights import binned, equal_population_edges, shape_chi2

    rng = np.random.default_rng(11)
    ratios = []
    for _ in range(300):
        a, b = rng.normal(size=3000), rng.normal(size=2000)
        edges = equal_population_edges(b, bins=20)
        c = shape_chi2(binned(a, edges), binned(b, edges))
        assert c["ndf"] == 19
        ratios.append(c["chi2_per_ndf"])
    # chi2 / ndf has a standard deviation of sqrt(2 / 19) = 0.32 per pair: 300 pairs pin its mean to 0.02
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.08)
    shifted = shape_chi2(binned(rng.normal(0.3, 1, 3000), edges), binned(b, edges))
    assert shifted["chi2_per_ndf"] > 3 and shifted["p_value"] < 1e-6


def test_weighted_histograms_equal_repeated_events_and_exact_weights_close_the_shapes():
    from hpcmix.stats.weights import binned, equal_population_edges, feature_comparison

    rng = np.random.default_rng(12)
    x, k = rng.normal(size=5000), rng.integers(0, 4, 5000)
    edges = equal_population_edges(x, bins=15)
    s, s2 = binned(x, edges, k)
    np.testing.assert_allclose(s, binned(np.repeat(x, k), edges)[0])
    np.testing.assert_allclose(s2, binned(np.repeat(x, k * k), edges)[0])     # sum of w^2 per bin
    assert (np.diff(edges) > 0).all() and binned(x, edges)[0].min() >= 10
    # the exact density ratio N(0.5, 1) / N(0, 1) turns a N(0, 1) sample into a N(0.5, 1) one
    src, tgt = rng.normal(size=40000), rng.normal(0.5, 1, 20000)
    c = feature_comparison(src, np.exp(0.5 * src - 0.125), tgt)
    assert c["before"]["chi2_per_ndf"] > 20
    assert c["after"]["chi2_per_ndf"] < 2.0
    assert len(c["edges"]) == len(c["target"]) + 1 == len(c["reweighted"]) + 1
    # constant weights change no shape, and a feature with two values gets a bin each
    assert feature_comparison(src, np.full(src.size, 3.0), tgt)["after"]["chi2"] == pytest.approx(
        c["before"]["chi2"], rel=1e-9)
    two = feature_comparison(rng.integers(0, 2, 500).astype(float), np.ones(500), rng.integers(0, 2, 500).astype(float))
    assert len(two["edges"]) == 3 and two["before"]["ndf"] == 1
    # ties: a value 90 % of the events share, or a second value only 3 events have, leave no bin
    # below min_per_bin (the short bins are merged into their neighbours)
    tied = np.r_[np.zeros(900), rng.normal(5, 1, 100)]
    for v in (tied, np.r_[np.zeros(500), np.ones(3)]):
        e = equal_population_edges(v, bins=20, min_per_bin=10)
        assert binned(v, e)[0].min() >= 10 and (np.diff(e) > 0).all()
    assert len(equal_population_edges(tied, bins=20, min_per_bin=10)) > 3
    # a second value too rare for a bin of its own leaves one bin: no shape to compare, said as NaN
    rare = feature_comparison(np.r_[np.zeros(500), np.ones(3)], np.ones(503), np.r_[np.zeros(500), np.ones(3)])
    assert rare["after"]["ndf"] == 0 and np.isnan(rare["after"]["chi2_per_ndf"])
    with pytest.raises(ValueError, match="cannot fill two bins"):
        equal_population_edges(np.arange(15.0))
    with pytest.raises(ValueError, match="3 weights for 4 events"):
        binned(np.arange(4.0), edges, np.ones(3))


def test_weighted_auc_equals_the_auc_of_repeated_events():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 2000)
    s = np.round(rng.normal(size=2000) + 0.4 * y, 1)     # rounded: many ties
    w = rng.integers(0, 4, 2000)
    assert weighted_roc_auc(y, s, np.ones(2000)) == pytest.approx(roc_auc(y, s), abs=1e-12)
    assert weighted_roc_auc(y, s, w) == pytest.approx(roc_auc(np.repeat(y, w), np.repeat(s, w)), abs=1e-12)
    # weights that undo a selection bring the AUC of a score that only knows about it back to 0.5
    x = rng.normal(size=200_000)
    y = (rng.random(x.size) < 0.5).astype(int)
    keep = (y == 1) | (rng.random(x.size) < 1 / (1 + np.exp(-x)))     # source: target shaped by a logistic
    x, y = x[keep], y[keep]
    biased = weighted_roc_auc(y, x, np.ones(x.size))
    fixed = weighted_roc_auc(y, x, np.where(y == 0, 1 + np.exp(-x), 1.0))
    assert biased < 0.45 and abs(fixed - 0.5) < 3 * auc_error(0.5, (y == 1).sum(), effective_sample_size(
        (1 + np.exp(-x))[y == 0]))
    with pytest.raises(ValueError, match="both classes"):
        weighted_roc_auc(y, x, np.where(y == 1, 0.0, 1.0))


def test_effective_size_spread_and_region_shares():
    assert effective_sample_size(np.ones(50)) == pytest.approx(50)
    assert effective_sample_size(np.r_[np.ones(50), np.zeros(50)]) == pytest.approx(50)
    assert effective_sample_size([1.0, 3.0]) == pytest.approx(16 / 10)
    s = weight_summary(np.r_[np.ones(10), 3 * np.ones(10)])
    assert s["mean"] == 2 and s["effective_fraction"] == pytest.approx(0.8) and s["max"] == 3
    w = np.stack([np.ones(4), np.full(4, 3.0)], axis=1)
    assert network_spread(w)["relative_std_median"] == pytest.approx(np.sqrt(2) / 2)
    assert network_spread(w[:, :1])["relative_std_median"] == 0.0
    inside = np.r_[np.ones(10, bool), np.zeros(30, bool)]
    f = region_fractions(inside, np.where(inside, 2.0, 1.0), np.r_[np.ones(20, bool), np.zeros(20, bool)])
    assert f["source"] == 0.25 and f["reweighted_source"] == pytest.approx(0.4) and f["target"] == 0.5


# -- the study model (no events) -------------------------------------------------------------------
def test_reweighting_samples_join_the_store_and_their_names_stay_out_of_the_addresses(tmp_path):
    job = tiny_job(tmp_path / "out")
    plan = plan_study(load_study(write_job(tmp_path, job)))
    assert plan.generation.layout.samples == ("H", "A", "H_heavy")
    assert plan.generation.layout.settings["processes"]["H_heavy"]["variant_of"] == "H"
    r = plan.reweights["heavy"]
    assert [n.settings.seed for n in r.networks] == [7, 8]
    assert "reweight : heavy (H -> H_heavy, 2 network(s), blinded 200 <= m_vis < 260)" in plan.describe()
    renamed = plan_study(load_study(write_job(tmp_path, {**job, "reweight": {"other": job["reweight"]["heavy"]}}, "b.yaml")))
    assert renamed.reweights["other"].address == r.address
    no_test = {**job["reweight"]["heavy"], "two_sample_test": False}
    quick = plan_study(load_study(write_job(tmp_path, {**job, "reweight": {"heavy": no_test}}, "c.yaml")))
    # the checks' settings move the record, not the weights (nor what templates and toys read)
    assert quick.reweights["heavy"].address != r.address
    assert quick.reweights["heavy"].weights_address == r.weights_address
    assert [n.address for n in quick.reweights["heavy"].networks] == [n.address for n in r.networks]
    fewer = plan_study(load_study(write_job(tmp_path, {**job, "reweight": {"heavy": {**job["reweight"]["heavy"],
                                                                                 "networks": 1}}}, "e.yaml")))
    assert fewer.reweights["heavy"].weights_address != r.weights_address
    assert fewer.reweights["heavy"].networks[0].address == r.networks[0].address
    wider = {**job["reweight"]["heavy"], "blind": {**BLIND, "max": 270.0}}
    moved = plan_study(load_study(write_job(tmp_path, {**job, "reweight": {"heavy": wider}}, "d.yaml")))
    assert all(a.address != b.address for a, b in zip(moved.reweights["heavy"].networks, r.networks))
    # the components' classifier and templates do not depend on the weight's settings
    assert {k: t.address for k, t in moved.templates.items()} == {k: t.address for k, t in plan.templates.items()}


@pytest.mark.parametrize("section, message", [
    ({"source": "H", "target": "A"}, r"reweights 'H' \(process H\) to 'A' \(process A\).*different_processes: true"),
    ({"source": "H", "target": "H"}, "to itself"),
    ({"source": "H", "target": "H_hevy"}, "reweight.heavy.target.*unknown process 'H_hevy'"),
    ({"source": "H", "target": "H_heavy", "blind": {"feature": "mvis", "min": 1.0}}, "not a stored feature"),
    ({"source": "H", "target": "H_heavy", "blind": {"feature": "m_vis"}}, "neither min nor max"),
    ({"source": "H", "target": "H_heavy", "blind": {"feature": "m_vis", "min": 300, "max": 200}}, "min 300 >= max"),
    ({"source": "H", "target": "H_heavy", "smearing": "none", "blind": {"feature": "m_vis", "min": -1.0}},
     "covers the whole selected m_vis range.*removes every training event"),
    ({"source": "H", "target": "H_heavy", "loss": "hinge"}, "reweight.heavy.loss"),
    ({"source": "H", "target": "H_heavy", "network": 2}, "unknown field 'reweight.heavy.network'"),
    ({"source": "H", "target": "H_heavy", "classifier": {"output_batch_norm": True}}, "output_batch_norm is not used"),
])
def test_bad_reweight_sections_are_refused_before_any_work(tmp_path, section, message):
    with pytest.raises(ConfigError, match=message):
        plan_study(load_study(write_job(tmp_path, tiny_job(tmp_path / "out", reweight={"heavy": section}))))


def test_a_window_up_to_the_selections_upper_edge_covers_it_and_equal_weights_are_refused(tmp_path):
    # the selection keeps m_vis_min <= m_vis < m_vis_max: a window [min, m_vis_max) covers it all
    window = {"feature": "m_vis", "min": 150.0, "max": 500.0}
    job = tiny_job(tmp_path / "out", selection={"m_vis_min": 150.0, "m_vis_max": 500.0},
                   reweight={"heavy": {"source": "H", "target": "H_heavy", "smearing": "none", "blind": window}})
    with pytest.raises(ConfigError, match="removes every training event"):
        load_study(write_job(tmp_path, job))
    job["reweight"]["heavy"]["blind"] = {**window, "max": 499.0}
    load_study(write_job(tmp_path, job))
    job["reweight"]["twin"] = dict(job["reweight"]["heavy"])
    with pytest.raises(ConfigError, match="'reweight.twin' has the same settings as 'reweight.heavy'"):
        load_study(write_job(tmp_path, job))


def test_different_processes_on_purpose_and_variants_of_variants():
    s = resolve_study(overrides={"reweight": {"w": {"source": "H", "target": "A", "different_processes": True}}})
    assert s.reweight[0].different_processes and s.samples == ("H", "A")
    s = resolve_study(overrides={"processes": {**HEAVY, "H_2": {"variant_of": "H_heavy", "settings": ["35:m0 = 9."]}},
                                 "reweight": {"w": {"source": "H_heavy", "target": "H_2"}}})
    from hpcmix.generate.processes import load_catalogue
    from hpcmix.study.model import to_jsonable

    cat = load_catalogue(to_jsonable(s.processes))
    assert cat.get("H_2").physics_process == "H" and cat.get("H_2").settings[-2:] == ("35:m0 = 520.", "35:m0 = 9.")
    assert cat.get("H_2").as_dict()["variant_of"] == "H_heavy"     # the store records the direct base
    with pytest.raises(ConfigError, match="variant_of 'Q'"):
        resolve_study(overrides={"processes": {"X": {"variant_of": "Q", "settings": ["a = 1"]}}})
    with pytest.raises(ConfigError, match="remove \\['resonance'\\]"):
        resolve_study(overrides={"processes": {"X": {"variant_of": "H", "resonance": 25, "settings": ["a = 1"]}}})


# -- real Pythia events ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reweighted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reweight")
    path = write_job(tmp, tiny_job(tmp / "out"))
    out = run_in_process(path)
    return tmp, path, out


@pytest.mark.pythia
@pytest.mark.tensorflow
def test_reweighting_makes_the_source_hard_to_tell_from_the_target(reweighted):
    _, _, out = reweighted
    info = out.reweighting["heavy"]["info"]
    before, after = info["two_sample"]["before"]["control"], info["two_sample"]["after"]["control"]
    # a fresh network tells the 520 GeV H from the 450 GeV one; after reweighting far less well
    assert before["auc"] > 0.58
    assert before["auc"] - after["auc"] > 3 * np.hypot(before["auc_err"], after["auc_err"])
    assert abs(after["auc"] - 0.5) < 0.06
    # the weights move the share of events in the blinded region (never trained on) towards the target's
    share = info["blinded_fraction"]
    assert abs(share["reweighted_source"] - share["target"]) < abs(share["source"] - share["target"])
    # the networks' own ratio closes in the control region (10 % for these tiny networks); the stored
    # weights carry the control-region shares' ratio, so that over all source events their mean is 1 too
    # if the extrapolation into the blinded region holds (here: within 20 %)
    for key in ("mean_r_on_reference", "mean_inverse_r_on_component"):
        assert abs(info["control_closure"][key] - 1) < 0.1, info["control_closure"]
        assert abs(info["closure"][key] - 1) < 0.2, info["closure"]
    assert set(info["weights"]) == {"train", "template", "test"}
    assert 0.3 < info["weights"]["test"]["effective_fraction"] < 1.0
    assert info["network_spread"]["networks"] == 2 and info["network_spread"]["relative_std_median"] > 0
    assert "| heavy | H -> H_heavy | 200 <= m_vis < 260 | 2 |" in out.table
    assert os.path.exists(os.path.join(out.plan.report, "reweighting.md"))
    # per feature and region: the mass shift is plain in the control region's m_vis before and mostly gone
    # after (inside the narrow blinded window the shift shows in its share, above, more than in its shape)
    feats = info["features"]
    assert set(feats) == set(out.plan.reweights["heavy"].settings.inputs) | {"m_vis"}
    m = feats["m_vis"]["control"]
    assert m["before"]["chi2_per_ndf"] > 3 and m["after"]["chi2_per_ndf"] < m["before"]["chi2_per_ndf"] / 2, m
    blinded_test = sum(feats["m_vis"]["blinded"]["target"])
    assert blinded_test == sum(feats["phi_star"]["blinded"]["target"]) > 100
    assert sum(m["target"]) + blinded_test == 1000                      # the target's test split
    assert "| heavy | m_vis | " in out.table
    for region in ("control", "blinded"):
        assert os.path.exists(os.path.join(out.plan.report, f"reweighting_heavy_{region}.png"))
    # the report's one page holds the reweighting table and its figures too
    with open(os.path.join(out.plan.report, "index.html"), encoding="utf-8") as f:
        page = f.read()
    assert page.count('<img src="data:image/png;base64,') == len(out.figures)
    assert 'alt="reweighting_heavy_blinded.png"' in page and "<td>heavy</td><td>H -&gt; H_heavy</td>" in page


@pytest.mark.pythia
@pytest.mark.tensorflow
def test_the_networks_never_see_the_blinded_region_and_the_store_holds_their_ratios(reweighted):
    from hpcmix.orchestrate.stages.reweight import weights_of
    from hpcmix.store import EventStore

    _, _, out = reweighted
    r = out.plan.reweights["heavy"]
    store = EventStore(out.plan.events)
    m_vis = {s: store.features(s, "train", smeared=True, names=["m_vis"])[:, 0] for s in ("H", "H_heavy")}
    inside = sum(int(((v >= 200) & (v < 260)).sum()) for v in m_vis.values())
    assert inside > 100
    for n in r.networks:
        rec = StageRecord.read(n.folder, stage="reweight_network")
        assert rec.info["blinded_train_events"] == inside
        assert rec.info["n_train"] + rec.info["n_val"] == 2 * 1500 - inside
    # every source event has one weight per network: the networks' own r at its smeared features, times
    # the control-region shares' ratio P_target(C) / P_source(C) of the train split
    stored = store.weights("H", "heavy", network=None)
    factor = (((m_vis["H_heavy"] < 200) | (m_vis["H_heavy"] >= 260)).mean()
              / ((m_vis["H"] < 200) | (m_vis["H"] >= 260)).mean())
    assert out.reweighting["heavy"]["info"]["control_factor"] == pytest.approx(factor, rel=1e-12)
    assert factor != pytest.approx(1.0, abs=0.02)
    assert stored.shape == (store.layout.n_events, 2)
    assert np.isfinite(stored).all() and (stored > 0).all()
    x = store.features("H", "test", smeared=True, names=r.settings.inputs)
    start, stop = store.layout.split_ranges()["test"]
    # (float32 forward passes over other batches: equal to rounding)
    np.testing.assert_allclose(stored[start:stop], weights_of(r, x) * factor, rtol=1e-6)
    np.testing.assert_array_equal(store.weights("H", "heavy", "test"), stored[start:stop, 0])
    info = store.weight_info("H", "heavy")
    assert info["address"] == r.weights_address and info["n_networks"] == 2
    assert info["provenance"]["control_factor"] == pytest.approx(factor, rel=1e-12)
    prov = info["provenance"]
    assert prov["source"] == "H" and prov["target"] == "H_heavy" and prov["loss"] == "exponential"
    assert prov["blind"] == {"feature": "m_vis", "min": 200.0, "max": 260.0}
    assert [p["address"] for p in prov["networks"]] == [n.address for n in r.networks]


@pytest.mark.pythia
@pytest.mark.tensorflow
def test_a_rerun_skips_the_stage_and_reads_the_same_weights(reweighted):
    from hpcmix.store import EventStore, UnknownWeightError

    _, path, out = reweighted
    store = EventStore(out.plan.events)
    first = store.weights("H", "heavy", network=None)
    done = os.path.join(out.plan.reweights["heavy"].folder, "done.json")
    with open(done) as f:
        record = json.load(f)
    again = run_in_process(path)
    assert again.skipped["reweight"] == 1
    with open(done) as f:
        assert json.load(f) == record
    np.testing.assert_array_equal(EventStore(out.plan.events).weights("H", "heavy", network=None), first)
    with pytest.raises(UnknownWeightError, match="holds no weight 'heavvy'; it holds heavy"):
        store.weights("H", "heavvy")
    with pytest.raises(UnknownWeightError, match="holds no weight 'heavy'; it holds no weights"):
        store.weights("A", "heavy")


@pytest.mark.pythia
@pytest.mark.tensorflow
def test_hpcmix_reweight_writes_its_own_one_page_report(reweighted):
    """Stopped after the reweighting stage (hpcmix reweight): index.html with the reweighting table, its
    figures and the addresses, without results."""
    from hpcmix.orchestrate.executor import InProcess
    from hpcmix.orchestrate.pipeline import run_study

    _, path, out = reweighted
    got = run_study(load_study(path), executor=InProcess(), progress=False, echo=lambda *a: None, until="reweight")
    assert got.skipped["reweight"] == 1 and got.results_path == ""
    with open(os.path.join(got.plan.report, "index.html"), encoding="utf-8") as f:
        page = f.read()
    assert page.count('<img src="data:image/png;base64,') == len(got.figures) == 2
    assert "<td>heavy</td><td>H -&gt; H_heavy</td>" in page and got.plan.reweights["heavy"].address in page
    assert "Per-cell summary" not in page


@pytest.mark.pythia
@pytest.mark.tensorflow
def test_a_blinded_region_without_training_events_is_refused_before_training(reweighted, tmp_path):
    from hpcmix.orchestrate.stages.reweight import ReweightError

    tmp, _, out = reweighted
    # the smeared m_vis: the plan cannot know its range, the stage finds no event left on the client
    job = tiny_job(tmp / "out", reweight={"heavy": {"source": "H", "target": "H_heavy",
                                                    "blind": {"feature": "m_vis", "min": 0.0}}})
    study = load_study(write_job(tmp_path, job))
    with pytest.raises(ReweightError, match=r"leaves 0 of 1500 H, 0 of 1500 H_heavy training event"):
        run_in_process(study)
    assert not any(os.path.exists(n.folder) for n in plan_study(study).reweights["heavy"].networks)


# -- weighted templates and toys -------------------------------------------------------------------
def test_a_weighted_kde_is_the_kde_of_repeated_events():
    from hpcmix.stats.components import KDEComponents
    from hpcmix.stats.templates import KDETemplate, KDETemplates

    rng = np.random.default_rng(5)
    y = rng.beta(2, 3, 1500)
    w = rng.integers(0, 4, y.size)
    x = np.linspace(0.02, 0.98, 49)
    for adaptive in (False, True):
        a = KDETemplate(y, weights=w, bandwidth=0.2, adaptive=adaptive)
        b = KDETemplate(np.repeat(y, w), bandwidth=0.2, adaptive=adaptive, grid=a.grid)
        np.testing.assert_allclose(a.pdf(x), b.pdf(x), rtol=1e-9, atol=1e-12)
        assert a.n_events == int((w > 0).sum())
    # the bandwidth rule counts Kish's effective events, not the repeats: weights are not statistics
    assert KDETemplate(y, weights=w).bandwidth > KDETemplate(np.repeat(y, w)).bandwidth
    is_a = rng.random(y.size) < 0.5
    pair = KDETemplates(y, is_a, weights=w, bandwidth=0.2)
    rep = KDETemplates(np.repeat(y, w), np.repeat(is_a, w), bandwidth=0.2)
    np.testing.assert_allclose(np.array(pair.densities(x)), np.array(rep.densities(x)), rtol=1e-9, atol=1e-12)
    comp = KDEComponents({"H": y[~is_a], "A": y[is_a]}, weights={"A": w[is_a]}, bandwidth=0.2)
    rep = KDEComponents({"H": y[~is_a], "A": np.repeat(y[is_a], w[is_a])}, bandwidth=0.2)
    np.testing.assert_allclose(comp.densities(x), rep.densities(x), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="finite and >= 0"):
        KDETemplate(y, weights=-w)
    with pytest.raises(ValueError, match="weights given for \\['Z'\\]"):
        KDEComponents({"H": y, "A": y}, weights={"Z": w})


def test_weighted_phi_star_fits_are_the_fits_of_repeated_events():
    from hpcmix.stats.components import fit_phi_star_components
    from hpcmix.stats.templates import fit_phi_star_templates

    rng = np.random.default_rng(6)
    phi = rng.uniform(0, 2 * np.pi, 3000)
    is_a = rng.random(phi.size) < 0.5
    w = rng.integers(0, 3, phi.size)
    fit = fit_phi_star_templates(phi, is_a, weights=w)
    assert fit.a == pytest.approx(fit_phi_star_templates(np.repeat(phi, w), np.repeat(is_a, w)).a, abs=1e-12)
    plain = fit_phi_star_templates(phi, is_a)
    for c in (1.0, 2.0):   # a constant weight is no information: the same a and the same error
        const = fit_phi_star_templates(phi, is_a, weights=np.full(phi.size, c))
        assert const.a == pytest.approx(plain.a, abs=1e-12) and const.a_err == pytest.approx(plain.a_err, rel=1e-9)
    z = rng.vonmises(1.0, 1.0, 2000) % (2 * np.pi)
    wz = rng.integers(0, 3, z.size)
    comp = fit_phi_star_components({"H": phi[~is_a], "A": phi[is_a], "Z": z}, pair=("H", "A"), weights={"Z": wz})
    rep = fit_phi_star_components({"H": phi[~is_a], "A": phi[is_a], "Z": np.repeat(z, wz)}, pair=("H", "A"))
    np.testing.assert_allclose(comp.coefficients["Z"], rep.coefficients["Z"], rtol=1e-12)
    plain = fit_phi_star_components({"H": phi[~is_a], "A": phi[is_a], "Z": z}, pair=("H", "A"))
    const = fit_phi_star_components({"H": phi[~is_a], "A": phi[is_a], "Z": z}, pair=("H", "A"),
                                    weights={"Z": np.full(z.size, 3.0)})
    # constant weights: the unweighted error up to sqrt((n - 1) / n) (the plain one divides by n - 1)
    np.testing.assert_allclose(const.coefficient_errors["Z"], np.array(plain.coefficient_errors["Z"])
                               * np.sqrt((z.size - 1) / z.size), rtol=1e-9)


def test_weighted_toys_draw_events_in_proportion_to_their_weights():
    from hpcmix.stats.toys import draw_mixture_toys

    rng = np.random.default_rng(7)
    w = np.r_[np.zeros(10), np.ones(20), 3 * np.ones(20)]
    d = draw_mixture_toys({"A": 50, "H": 50}, {"A": 0.6, "H": 0.4}, n_events=50, n_toys=4000, rng=rng,
                          weights={"A": w})
    uses = d.uses["A"]
    assert uses[:10].sum() == 0
    share = uses[30:].sum() / uses[10:].sum()
    assert abs(share - 0.75) < 0.01
    assert d.effective_pool["A"] == pytest.approx(80**2 / 200) and "A effective pool 32 of 50" in d.note()
    # about 45 A events per toy from a 20-event pool: refused without replacement, drawn with it
    with pytest.raises(ValueError, match="distinct A events"):
        draw_mixture_toys({"A": 20, "H": 50}, {"A": 0.9, "H": 0.1}, n_events=50, n_toys=10, rng=rng)
    big = draw_mixture_toys({"A": 20, "H": 50}, {"A": 0.9, "H": 0.1}, n_events=50, n_toys=10, rng=rng,
                            weights={"A": np.ones(20)})
    assert big.counts[:, 0].max() > 20 and big.uses["A"].sum() == big.counts[:, 0].sum()
    with pytest.raises(ValueError, match="one finite weight >= 0 per pool event"):
        draw_mixture_toys({"A": 50, "H": 50}, {"A": 0.5, "H": 0.5}, n_events=5, n_toys=2, rng=rng,
                          weights={"A": np.ones(3)})


@pytest.mark.parametrize("section, weights, message", [
    ("templates", {"H": "hevy"}, "asks for weight 'hevy', which no reweight: section makes; weights of this study: "
                                 "\\['heavy'\\]"),
    ("toys", {"A": "heavy"}, "weights the events of 'H', not of 'A'"),
    ("toys", {"Z": "heavy"}, "names 'Z', which is not a component"),
])
def test_a_weight_a_study_does_not_make_is_refused_before_any_work(tmp_path, section, weights, message):
    job = tiny_job(tmp_path / "out")
    job[section] = {**job.get(section, {}), "weights": weights}
    with pytest.raises(ConfigError, match=message):
        load_study(write_job(tmp_path, job))


def test_weights_move_only_their_stages_and_the_ratio_networks_that_model_the_weighted_densities(tmp_path):
    base = tiny_job(tmp_path / "out")
    base["toys"] = {**base["toys"], "estimators": ["phi_star", "nn", "ratio"]}
    plain = plan_study(load_study(write_job(tmp_path, base, "a.yaml")))
    weighted = plan_study(load_study(write_job(tmp_path, {**base, "templates": {"weights": {"H": "heavy"}}}, "b.yaml")))
    drawn = plan_study(load_study(write_job(tmp_path, {**base, "toys": {**base["toys"], "weights": {"H": "heavy"}}},
                                         "c.yaml")))
    heavy = plain.reweights["heavy"].weights_address
    # the classifier is calibrated by the weighted KDEs; the ratio network must learn the weighted ratio
    assert weighted.models["none"].address == plain.models["none"].address
    assert weighted.models["ratio:A:none"].address != plain.models["ratio:A:none"].address
    assert weighted.models["ratio:A:none"].weights == (("H", "heavy", heavy),)
    assert all(weighted.templates[k].address != t.address for k, t in plain.templates.items())
    assert weighted.templates[("nn", "none")].inputs["weights"] == {"H": heavy}
    assert {k: m.address for k, m in drawn.models.items()} == {k: m.address for k, m in plain.models.items()}
    assert {k: t.address for k, t in drawn.templates.items()} == {k: t.address for k, t in plain.templates.items()}
    assert all(a.address != b.address for a, b in zip(drawn.cells, plain.cells))
    # the network systematic trains the ratio network once more per reweighting network, with its weights;
    # network m's ratio templates take that network (the classifier of nn stays the one)
    job = {**base, "templates": {"weights": {"H": "heavy"}, "weight_networks": "all"}}
    every = plan_study(load_study(write_job(tmp_path, job, "d.yaml")))
    one = every.models["ratio:A:none:network1"]
    assert one.weight_network == 1 and one.weights == weighted.models["ratio:A:none"].weights
    assert every.models["ratio:A:none"].address == weighted.models["ratio:A:none"].address
    assert every.network_templates[("ratio", "none", 1)].ratio_models == (("A", one.address, one.folder),)
    assert every.network_templates[("nn", "none", 1)].model == weighted.models["none"].address
    # toys-only weights: no weighted ratio network, so none per network either
    toys_only = plan_study(load_study(write_job(tmp_path, {**base, "templates": {"weight_networks": "all"},
                                                           "toys": {**base["toys"], "weights": {"H": "heavy"}}},
                                                "e.yaml")))
    assert set(toys_only.models) == set(plain.models)


@pytest.mark.pythia
@pytest.mark.tensorflow
def test_templates_and_toys_take_the_stored_weights(reweighted, tmp_path):
    from hpcmix.store import EventStore, load_templates, load_toy_batch
    from hpcmix.store.artefacts import load_test_pool

    tmp, _, out = reweighted
    job = tiny_job(tmp / "out", templates={"weights": {"H": "heavy"}})
    job["toys"] = {**job["toys"], "estimators": ["phi_star", "nn"], "weights": {"H": "heavy"}}
    study = load_study(write_job(tmp_path, job))
    got = run_in_process(study)
    assert got.skipped["reweight"] == 1                          # the weights are read, not recomputed
    store = EventStore(got.plan.events)
    w_template = store.weights("H", "heavy", "template")
    for est in ("phi_star", "nn"):
        rec = StageRecord.read(got.plan.templates[(est, "none")].folder, stage="templates")
        info = rec.info["weights"]["H"]
        split = "template"   # phi* too: the networks trained on the train split, their weights there are fitted
        w = store.weights("H", "heavy", split)
        assert info["split"] == split and info["n_events"] == w.size
        assert info["effective_sample_size"] == pytest.approx(w.sum() ** 2 / (w * w).sum())
    # the weighted H template is the weighted KDE of the stored network outputs (the test pool's own values
    # are unweighted: the fit evaluates the templates at every test event)
    from hpcmix.stats.templates import KDETemplates
    from hpcmix.train import load_classifier

    clf = load_classifier(got.plan.models["none"].folder)
    y = {c: clf.predict(store.features(c, "template", smeared=False, names=clf.feature_names)).astype(float)
         for c in ("H", "A")}
    s = dict(study.templates.__dict__)
    kde = KDETemplates(np.r_[y["H"], y["A"]], np.r_[np.zeros(y["H"].size, bool), np.ones(y["A"].size, bool)],
                       weights=np.r_[w_template, np.ones(y["A"].size)], bandwidth=s["bandwidth"], space=s["space"],
                       grid_size=s["grid_size"], clip=s["logit_clip"], adaptive=s["adaptive"],
                       positivity_quantile=s["positivity_quantile"])
    folder = got.plan.templates[("nn", "none")].folder
    pool = load_test_pool(folder)
    np.testing.assert_allclose(pool.density[("H", "H")], kde.densities(pool.values["H"])[1], rtol=1e-12)
    unweighted = load_templates(out.plan.templates[("phi_star", "none")].folder)
    assert load_templates(got.plan.templates[("phi_star", "none")].folder).a != unweighted.a
    # toys drew H in proportion to its test events' weights: the batch says how large the pool effectively is
    cell = next(c for c in got.plan.cells if c.estimator == "nn")
    note = str(load_toy_batch(cell.batch_file(0)).note)
    w_test = store.weights("H", "heavy", "test")
    assert f"H effective pool {w_test.sum() ** 2 / (w_test ** 2).sum():.0f} of {w_test.size}" in note


@pytest.mark.pythia
@pytest.mark.tensorflow
def test_the_calibrated_ratios_of_the_pairwise_estimator_take_the_stored_weights(reweighted, tmp_path):
    """nn_pairwise with a weighted reference: H_heavy (the reweighting's target sample) as a third
    component, H's template events weighted; the nodes carry the stored weights and the closure in the
    record is the weighted one on the test events."""
    from hpcmix.results import open_results
    from hpcmix.store import EventStore, load_templates
    from hpcmix.store.artefacts import load_test_pool

    tmp, _, _ = reweighted
    job = tiny_job(tmp / "out", components=["H", "A", "H_heavy"], templates={"weights": {"H": "heavy"}},
                   poi={"name": "alpha", "fraction_of": "A", "among": ["H", "A"]})
    job["toys"] = {**job["toys"], "estimators": ["nn_pairwise"], "fractions": {"H_heavy": [0.2]},
                   "treatments": ["fixed"]}
    got = run_in_process(load_study(write_job(tmp_path, job)))
    assert got.skipped["reweight"] == 1
    store = EventStore(got.plan.events)
    folder = got.plan.templates[("nn_pairwise", "none")].folder
    info = StageRecord.read(folder, stage="templates").info
    w = store.weights("H", "heavy", "template")
    assert info["weights"]["H"]["n_events"] == w.size and info["weights"]["H"]["split"] == "template"
    templates = load_templates(folder)
    n_h = templates.node_counts["H"]
    assert n_h == int((w > 0).sum())
    np.testing.assert_array_equal(templates.node_weights[:n_h], w[w > 0])
    assert np.all(templates.node_weights[n_h:] == 1.0)
    pool = load_test_pool(folder)
    weighted = templates.closure(pool.values, {"H": store.weights("H", "heavy", "test")})
    assert info["closure"] == json.loads(json.dumps(weighted))
    assert info["closure"] != json.loads(json.dumps(templates.closure(pool.values)))
    alpha_hat = open_results(got.results_path)["alpha_hat"].sel(estimator="nn_pairwise").values
    assert np.isfinite(alpha_hat).mean() > 0.9


@pytest.mark.pythia
@pytest.mark.tensorflow
def test_the_ratio_estimator_trains_its_network_on_the_stored_weights(reweighted, tmp_path):
    """templates.weights with ratio: H's train events weighted in the ratio network's training, its
    closure and the templates' normalisation and nodes weighted with the stored weights."""
    from hpcmix.orchestrate.stages import templates as templates_stage
    from hpcmix.stats.ratios import ratio_closure
    from hpcmix.store import EventStore, load_templates
    from hpcmix.train.losses import get_loss

    tmp, _, _ = reweighted
    job = tiny_job(tmp / "out", templates={"weights": {"H": "heavy"}})
    job["toys"] = {**job["toys"], "estimators": ["ratio"]}
    got = run_in_process(load_study(write_job(tmp_path, job)))
    assert got.skipped["reweight"] == 1
    store = EventStore(got.plan.events)
    m = got.plan.models["ratio:A:none"]
    rec = StageRecord.read(m.folder, stage="train")
    w_train = store.weights("H", "heavy", "train")
    assert rec.inputs["weights"] == {"H": got.plan.reweights["heavy"].weights_address}
    assert rec.info["weights"]["H"]["n_events"] == w_train.size
    assert rec.info["weights"]["H"]["effective_sample_size"] == pytest.approx(effective_sample_size(w_train))
    # the network's closure on the test split is weighted by H's test weights
    t = got.plan.templates[("ratio", "none")]
    u = [np.ravel(v) for v in templates_stage._values(store, t, "test", templates_stage._classifiers(t))]
    pair = get_loss(rec.info["loss"])
    w_test = store.weights("H", "heavy", "test")
    expect = ratio_closure(pair.ratio(u[0]), pair.ratio(u[1]), w_ref=w_test)
    assert rec.info["closure"]["A"] == pytest.approx(expect, rel=1e-4)
    assert abs(expect["mean_r_on_reference"] - 1) < 0.3      # a ratio to the weighted H, roughly normalised
    # the templates: H's nodes carry its template weights, c is the weighted mean over them
    templates = load_templates(t.folder)
    w = store.weights("H", "heavy", "template")
    n_h = templates.node_counts["H"]
    np.testing.assert_array_equal(templates.node_weights[:n_h], w[w > 0])
    r_h = pair.ratio(templates.nodes[:n_h])
    assert templates.norm == pytest.approx((w[w > 0] * r_h).sum() / w.sum(), rel=1e-12)
    alpha_hat = open_results_of(got).sel(estimator="ratio").values
    assert np.isfinite(alpha_hat).mean() > 0.9


@pytest.mark.pythia
def test_the_train_task_hands_the_stored_weights_of_its_network_to_the_training(reweighted, tmp_path, monkeypatch):
    """What a weighted ratio network trains on: per event of (H, A), H's stored train weights of the
    model's reweighting network and 1 for A; its closure's test weights likewise (no training: a spy)."""
    import hpcmix.train.fit as fit
    from hpcmix.orchestrate.stages import train as train_stage
    from hpcmix.store import EventStore

    class Handed(Exception):
        pass

    def spy(x, y, **kw):
        raise Handed(x, y, kw)

    monkeypatch.setattr(fit, "train_classifier", spy)
    tmp, _, _ = reweighted
    job = tiny_job(tmp / "out", templates={"weights": {"H": "heavy"}, "weight_networks": "all"})
    job["toys"] = {**job["toys"], "estimators": ["ratio"]}
    plan = plan_study(load_study(write_job(tmp_path, job)))
    store = EventStore(plan.events)
    for label, net in (("ratio:A:none", 0), ("ratio:A:none:network1", 1)):
        m = plan.models[label]
        with pytest.raises(Handed) as got:
            train_stage.train_task(m, plan.events)
        x, y, kw = got.value.args
        w, w_test = kw["weights"], kw["test_weights"]
        np.testing.assert_array_equal(w[y == 0], store.weights("H", "heavy", "train", network=net))
        assert np.all(w[y == 1] == 1.0) and w.size == x.shape[0]
        np.testing.assert_array_equal(w_test[kw["y_test"] == 0], store.weights("H", "heavy", "test", network=net))
    assert not np.array_equal(store.weights("H", "heavy", "train", network=0),
                              store.weights("H", "heavy", "train", network=1))


def open_results_of(run):
    from hpcmix.results import open_results

    return open_results(run.results_path)["alpha_hat"]


def test_weight_networks_all_needs_a_used_weight_of_several_networks(tmp_path):
    job = tiny_job(tmp_path / "out", templates={"weight_networks": "all"})
    with pytest.raises(ConfigError, match="neither templates.weights nor toys.weights names a weight"):
        load_study(write_job(tmp_path, job))
    one = tiny_job(tmp_path / "out", templates={"weights": {"H": "heavy"}, "weight_networks": "all"})
    one["reweight"]["heavy"]["networks"] = 1
    with pytest.raises(ConfigError, match=r"two or more; reweight.<name>.networks: \{'heavy': 1\}"):
        load_study(write_job(tmp_path, one))
    with pytest.raises(ConfigError, match="weight_networks"):
        load_study(write_job(tmp_path, tiny_job(tmp_path / "out", templates={"weight_networks": "each"})))
    # templates and toys weighting H with two weights of different numbers of networks: both are counted
    two = tiny_job(tmp_path / "out", templates={"weights": {"H": "heavy"}, "weight_networks": "all"})
    two["reweight"]["heavy"]["networks"] = 1
    two["reweight"]["heavy3"] = {**two["reweight"]["heavy"], "networks": 3}
    two["toys"] = {**two["toys"], "weights": {"H": "heavy3"}}
    with pytest.raises(ConfigError, match=r"\{'heavy': 1, 'heavy3': 3\}"):
        load_study(write_job(tmp_path, two))


def test_the_network_systematic_counts_its_toy_tasks_and_lists_its_addresses(tmp_path):
    from hpcmix.orchestrate.checks import MAX_TASKS_PER_STAGE, PlanError

    # toys-only weights: network 1 moves no template (none is weighted), only the cells
    toys_only = tiny_job(tmp_path / "out", templates={"weight_networks": "all"})
    toys_only["toys"] = {**toys_only["toys"], "weights": {"H": "heavy"}}
    plan = plan_study(load_study(write_job(tmp_path, toys_only, "a.yaml")))
    listed = plan.addresses()["weight_networks"]
    assert listed["templates"] == {}
    assert listed["toys"] == {"phi_star/none/0.5/50/network=1": plan.network_cells[0].address}
    assert plan.network_cells[0].address not in plan.addresses()["toys"].values()
    # 0.6 x the most toy tasks a stage may schedule, once per network: refused before the plan
    many = {**toys_only, "toys": {**toys_only["toys"], "n_toys": int(0.6 * MAX_TASKS_PER_STAGE), "batch_size": 1}}
    with pytest.raises(PlanError, match=r"over 2 cells \(the cells of all 2 reweighting networks\) make 240,000 toy tasks"):
        plan_study(load_study(write_job(tmp_path, many, "b.yaml")))
    plan_study(load_study(write_job(tmp_path, {**many, "templates": {}}, "c.yaml")))   # one network: it fits


@pytest.mark.pythia
@pytest.mark.tensorflow
def test_every_reweighting_network_gets_its_templates_and_toys_the_network_choice_systematic(reweighted, tmp_path):
    from hpcmix.results import open_results

    tmp, _, out = reweighted
    weighted = {"weights": {"H": "heavy"}}
    nominal_job = tiny_job(tmp / "out", templates=weighted)
    nominal_job["toys"] = {**nominal_job["toys"], **weighted, "estimators": ["phi_star", "ratio"]}
    job = {**nominal_job, "templates": {**weighted, "weight_networks": "all"}}
    nominal = plan_study(load_study(write_job(tmp_path, nominal_job, "nominal.yaml")))
    study = load_study(write_job(tmp_path, job))
    plan = plan_study(study)
    # network 0's templates and cells keep their addresses; network 1 adds its own of each, and its own
    # ratio network, trained with its weights
    assert {k: t.address for k, t in plan.templates.items()} == {k: t.address for k, t in nominal.templates.items()}
    assert [c.address for c in plan.cells] == [c.address for c in nominal.cells]
    assert set(plan.network_templates) == {("phi_star", "none", 1), ("ratio", "none", 1)}
    assert [c.weight_network for c in plan.network_cells] == [1, 1]
    assert set(plan.models) - set(nominal.models) == {"ratio:A:none:network1"}
    assert "templates and toys again with reweighting network(s) 1" in plan.describe()
    got = run_in_process(study)
    assert got.skipped["reweight"] == 1
    t0 = StageRecord.read(plan.templates[("phi_star", "none")].folder, stage="templates").info
    t1 = StageRecord.read(plan.network_templates[("phi_star", "none", 1)].folder, stage="templates").info
    assert (t0["weights"]["H"]["network"], t1["weights"]["H"]["network"]) == (0, 1)
    assert t1["a"] != t0["a"]                       # network 1's weights move the weighted phi* fit
    from hpcmix.store import EventStore, load_templates

    net1 = plan.models["ratio:A:none:network1"]
    assert StageRecord.read(net1.folder, stage="train").info["weights"]["H"]["network"] == 1
    w1 = EventStore(plan.events).weights("H", "heavy", "template", network=1)
    r1 = load_templates(plan.network_templates[("ratio", "none", 1)].folder)
    np.testing.assert_array_equal(r1.node_weights[:r1.node_counts["H"]], w1[w1 > 0])
    ds = open_results(got.results_path)
    by = ds["alpha_hat_by_network"]
    assert list(by["reweight_network"].values) == [0, 1]
    np.testing.assert_array_equal(by.sel(reweight_network=0).values, ds["alpha_hat"].values)
    one = by.sel(reweight_network=1, estimator="phi_star", smearing="none", alpha=0.5, n_events=50).values
    zero = ds["alpha_hat"].sel(estimator="phi_star", smearing="none", alpha=0.5, n_events=50).values
    assert np.isfinite(one).all() and not np.allclose(one, zero)
    syst = ds.mixture.network_systematic().sel(estimator="phi_star", smearing="none", alpha=0.5, n_events=50)
    assert float(syst["mean"].sel(reweight_network=1)) == pytest.approx(one.mean())
    assert float(syst["mean_shift"]) == pytest.approx(abs(one.mean() - zero.mean()))
    assert float(syst["gauss_sigma_shift"]) == pytest.approx(
        abs(float(syst["gauss_sigma"].sel(reweight_network=1)) - float(syst["gauss_sigma"].sel(reweight_network=0))))
    assert "Network-choice systematic" in got.table
    assert os.path.exists(os.path.join(got.plan.report, "weight_networks.md"))
    with pytest.raises(ValueError, match="templates.weight_networks: all"):
        open_results(out.plan.results).mixture.network_systematic()


@pytest.mark.pythia
@pytest.mark.tensorflow
def test_hpcmix_reweight_runs_the_stage_alone_with_the_addresses_of_hpcmix_run(reweighted, tmp_path):
    from click.testing import CliRunner

    from hpcmix.cli import cli

    tmp, path, out = reweighted
    # without the two-sample test only the record's address moves: the networks and weights are read back
    job = tiny_job(tmp / "out")
    job["reweight"]["heavy"]["two_sample_test"] = False
    quick = write_job(tmp_path, job)
    site = tmp_path / "site.yaml"   # the local site, its dashboard on a free port
    site.write_text("kind: local\ncpu: {n_workers: 2, threads_per_worker: 1, dashboard_address: ':0'}\ngpu: null\n")
    res = CliRunner().invoke(cli, ["reweight", quick, "--no-progress", "--site", str(site)])
    assert res.exit_code == 0, res.output
    plan = plan_study(load_study(quick))
    r = plan.reweights["heavy"]
    assert r.weights_address == out.plan.reweights["heavy"].weights_address and r.address != out.plan.reweights["heavy"].address
    rec = StageRecord.read(r.folder, stage="reweight")
    assert "two_sample" not in rec.info and rec.info["closure"] == out.reweighting["heavy"]["info"]["closure"]
    assert "| heavy | H -> H_heavy | 200 <= m_vis < 260 | 2 |" in res.output
    assert f"EventStore({plan.events!r}).weights('H', 'heavy')" in res.output
    wall = [line for line in res.output.splitlines() if line.startswith("wall time")][0]
    assert "(generate " in wall and "reweight " in wall and "templates" not in wall and "toys" not in wall
    assert "Table 1 layout" not in res.output
    bare = write_job(tmp_path, {k: v for k, v in tiny_job(tmp / "out").items() if k != "reweight"}, "bare.yaml")
    res = CliRunner().invoke(cli, ["reweight", bare])
    assert res.exit_code == 2 and "has no reweight: section" in res.output
