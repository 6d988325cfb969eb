"""The ratio / ratio_calibrated estimators end to end at tiny size: likelihood-ratio networks trained
beside the paper's, their ratios fitted directly and after calibration, for two and three components."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_in_process, write_job

from hpcmix.orchestrate.pipeline import plan_study
from hpcmix.orchestrate.record import StageRecord
from hpcmix.results import open_results
from hpcmix.schema import ConfigError
from hpcmix.study import load_study

pytestmark = [pytest.mark.pythia, pytest.mark.tensorflow]


def tiny_job(out, **changes) -> dict:
    job = {"name": "tiny-ratio", "output": str(out), "seed": 13, "smearing": ["none"],
           "generate": {"profile": "fast", "chunk_size": 300, "events": {"train": 600, "template": 300, "test": 300}},
           "classifier": {"hidden_layers": [16, 16], "max_epochs": 2, "batch_size": 128},
           "toys": {"estimators": ["nn", "ratio", "ratio_calibrated"], "alpha": [0.5, 0.9], "n_events": [50],
                    "n_toys": 40, "batch_size": 20}}
    job.update(changes)
    return job




@pytest.fixture(scope="module")
def two(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ratio")
    path = write_job(tmp, tiny_job(tmp / "out"))
    return tmp, path, run_in_process(path)


def test_ratio_estimators_sit_beside_nn_in_the_table(two):
    _, _, out = two
    ds = open_results(out.results_path)
    assert list(ds["estimator"].values) == ["nn", "ratio", "ratio_calibrated"]
    assert np.isfinite(ds["alpha_hat"]).all() and np.isfinite(ds["cramer_rao"]).all()
    summ = ds.mixture.summary()
    assert np.isfinite(summ["coverage"]).all() and np.isfinite(summ["ks_pvalue"]).all()
    assert "| ratio, none |" in out.table and "| ratio_calibrated, none |" in out.table
    assert "Density ratios" in out.table and "| ratio, none | A |" in out.table
    # one likelihood-ratio network (A against H) next to the paper's, with its loss and closure
    assert set(out.training) == {"none", "ratio:A:none"}
    info = out.training["ratio:A:none"]["info"]
    assert info["loss"] == "exponential" and 0.3 < info["roc_auc"] < 0.9
    # a 2-epoch network on 600 events: its raw ratio closes to 10 % on the test split
    c = info["closure"]["A"]
    assert abs(c["mean_r_on_reference"] - 1) < 0.1 and abs(c["mean_inverse_r_on_component"] - 1) < 0.1
    # the direct estimator's templates: no KDE, the normalisation and the held-out closure recorded
    rec = StageRecord.read(out.plan.templates[("ratio", "none")].folder, stage="templates")
    assert rec.settings["templates"] == {} and rec.info["loss"] == "exponential"
    assert set(rec.info["closure"]) == {"A"}
    closure = rec.info["closure"]["A"]
    for key in ("mean_r_on_reference", "mean_inverse_r_on_component"):
        assert abs(closure[key] - 1) < 5 * closure[key + "_err"] + 0.02, closure
    assert set(rec.inputs["ratio_models"]) == {"A"}
    cal = StageRecord.read(out.plan.templates[("ratio_calibrated", "none")].folder, stage="templates")
    assert cal.inputs["ratio_models"] == rec.inputs["ratio_models"]   # both estimators share the network
    assert "bandwidths" in cal.info and np.isfinite(list(cal.info["closure"]["A"].values())).all()


def test_the_fits_take_the_networks_ratios_at_the_test_events(two):
    """The ratio test pool holds u of the stored network and r = e^u / c; the calibrated one r / (1 + r)."""
    from scipy import special

    from hpcmix.store import EventStore
    from hpcmix.store.artefacts import load_templates, load_test_pool
    from hpcmix.train import load_ratio_network

    _, _, out = two
    net = load_ratio_network(out.plan.models["ratio:A:none"].folder)
    assert net.loss == "exponential" and net.class_names == ("H", "A")
    store = EventStore(out.plan.events)
    x = store.features("A", "test", smeared=False, names=net.feature_names)
    u = net.output(x).astype(float)
    folder = out.plan.templates[("ratio", "none")].folder
    pool, templates = load_test_pool(folder), load_templates(folder)
    np.testing.assert_array_equal(pool.values["A"], u)
    np.testing.assert_allclose(pool.density[("A", "A")], np.exp(u) / templates.norm, rtol=1e-12)
    np.testing.assert_array_equal(pool.density[("H", "A")], 1.0)
    cal = load_test_pool(out.plan.templates[("ratio_calibrated", "none")].folder)
    np.testing.assert_allclose(cal.values["A"], special.expit(u), rtol=1e-12)


def test_adding_ratio_estimators_leaves_the_classifier_addresses_and_the_loss_moves_only_the_ratio_networks(
        two, tmp_path):
    tmp, path, out = two
    job = tiny_job(tmp / "out")
    plain = plan_study(load_study(write_job(tmp_path, {**job, "toys": {**job["toys"], "estimators": ["nn"]}}, "a.yaml")))
    assert plain.models["none"].address == out.plan.models["none"].address
    assert plain.templates[("nn", "none")].address == out.plan.templates[("nn", "none")].address
    kl = plan_study(load_study(write_job(tmp_path, {**job, "ratio": {"loss": "kl"}}, "b.yaml")))
    assert kl.models["none"].address == out.plan.models["none"].address
    assert kl.models["ratio:A:none"].address != out.plan.models["ratio:A:none"].address
    assert kl.models["ratio:A:none"].loss == "kl"
    # ratio.classifier overrides reach the ratio networks only
    lr = plan_study(load_study(write_job(tmp_path, {**job, "ratio": {"classifier": {"learning_rate": 3e-4}}}, "c.yaml")))
    assert lr.models["ratio:A:none"].settings.learning_rate == 3e-4
    assert lr.models["none"].address == out.plan.models["none"].address
    # a rerun does nothing
    again = run_in_process(path)
    assert again.plan.models["ratio:A:none"].address == out.plan.models["ratio:A:none"].address
    assert "toys" in again.skipped and again.skipped["train"] == 2


@pytest.mark.parametrize("ratio, message", [
    ({"loss": "hinge"}, "ratio.loss"),
    ({"classifier": {"layers": [3]}}, "ratio.classifier.layers"),
    ({"lost": "kl"}, "ratio.lost"),
    ({"classifier": {"output_batch_norm": True}}, "output_batch_norm is not used"),
])
def test_bad_ratio_section_is_named(tmp_path, ratio, message):
    with pytest.raises(ConfigError, match=message):
        load_study(write_job(tmp_path, tiny_job(tmp_path / "out", ratio=ratio)))


@pytest.mark.slow
def test_three_components_fit_direct_and_calibrated_ratios(tmp_path):
    """With a Z nuisance: one ratio network per non-reference component, the K-fraction fitter takes them."""
    job = tiny_job(tmp_path / "out", components=["H", "A", "Z"],
                   poi={"name": "alpha", "fraction_of": "A", "among": ["H", "A"]},
                   selection={"tau_vis_pt_min": 5.0, "m_vis_min": 0.0, "m_vis_max": None})
    job["generate"]["events"] = {"train": 300, "template": 150, "test": 150}
    job["toys"].update(n_toys=20, fractions={"Z": [0.3]}, treatments=["fixed", "floated"])
    out = run_in_process(write_job(tmp_path, job))
    assert set(out.training) == {"none", "ratio:A:none", "ratio:Z:none"}
    ds = open_results(out.results_path)
    assert list(ds["estimator"].values) == ["nn", "ratio", "ratio_calibrated"]
    fl = ds.sel(treatment="floated", estimator=["ratio", "ratio_calibrated"])
    assert np.isfinite(fl["alpha_hat"]).all() and np.isfinite(fl["fraction_hat_Z"]).all()
    for est in ("ratio", "ratio_calibrated"):
        rec = StageRecord.read(out.plan.templates[(est, "none")].folder, stage="templates")
        assert set(rec.info["closure"]) == {"A", "Z"} and set(rec.inputs["ratio_models"]) == {"A", "Z"}
