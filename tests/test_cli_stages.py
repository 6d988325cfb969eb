"""The stage commands on their own: hpcmix train / templates / toys / report on an existing store."""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

from hpcmix.cli import cli

TOYS = ["--alpha", "0.5,0.9", "--n-events", "20,100", "--n-toys", "40", "--batch-size", "15", "--seed", "7",
        "--no-progress"]


def invoke(*args, ok: bool = True):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    else:
        assert res.exit_code == 2, res.output + repr(res.exception)   # a usage error, raised before any work
    return res


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli_study")


@pytest.fixture(scope="module")
def phi_star_dir(small_store, study_dir):
    out = study_dir / "templates" / "phi_star-none"
    res = invoke("templates", small_store, "--method", "phi_star", "--out", out)
    assert "a = " in res.output and "c = " in res.output
    return out


@pytest.fixture(scope="module")
def model_dir(small_store, study_dir):
    pytest.importorskip("keras")
    out = study_dir / "models" / "none"
    res = invoke("train", small_store, "--set", "hidden_layers=16,16", "--set", "max_epochs=2",
                 "--set", "batch_norm=false", "--seed", "3", "--out", out)
    assert "ROC AUC" in res.output and "device" in res.output and str(out) in res.output
    # a line per epoch while it trains, not only the summary at the end
    assert "hpcmix.train: training on" in res.output and "Epoch 2/2" in res.output
    return out


# -- the chain: train -> templates (nn, phi*) -> toys -> report ---------------------------------
@pytest.mark.tensorflow
def test_train_writes_model_and_provenance(model_dir, small_store):
    from hpcmix.orchestrate.record import StageRecord
    from hpcmix.store import EventStore

    for name in ("classifier.keras", "standardiser.json", "history.json", "metrics.json", "done.json"):
        assert (model_dir / name).exists(), name
    rec = StageRecord.read(model_dir, stage="train")
    assert rec.stage == "train" and len(rec.address) == 12
    st = rec.settings
    assert st["smearing"] == "none" and st["components"] == ["H", "A"] and st["classifier"]["seed"] == 3
    assert st["classifier"]["hidden_layers"] == [16, 16] and st["classifier"]["max_epochs"] == 2
    assert st["classifier"]["batch_norm"] is False
    assert rec.info["epochs_run"] <= 2 and 0 <= rec.info["roc_auc"] <= 1
    assert rec.info["worker"]["slurm_job_id"] is None      # in this process, not on SLURM
    assert rec.paths["events"] == os.path.abspath(small_store) and len(st["network_inputs"]) == 25
    assert rec.inputs["events"] == EventStore(small_store).layout.fingerprint()


@pytest.mark.tensorflow
def test_nn_templates_toys_and_report(model_dir, phi_star_dir, small_store, study_dir):
    nn_dir = study_dir / "templates" / "nn-none"
    res = invoke("templates", small_store, "--method", "nn", "--model", model_dir, "--bandwidth", "scott",
                 "--out", nn_dir)
    from hpcmix.orchestrate.record import StageRecord

    assert "KDE bandwidths (logit space)" in res.output
    rec = StageRecord.read(nn_dir, stage="templates")
    assert rec.settings["estimator"] == "nn" and rec.settings["smearing"] == "none"
    assert rec.paths["model"] == os.path.abspath(model_dir)
    assert rec.inputs["model"] == StageRecord.read(model_dir, stage="train").address
    assert {"templates.npz", "test_pool.npz"} <= set(os.listdir(nn_dir))
    assert not any(f.endswith(".pkl") for f in os.listdir(nn_dir))

    # estimator and smearing come from done.json; the results go next to templates/ by default
    res = invoke("toys", nn_dir, phi_star_dir, *TOYS)
    assert "| method, smearing | alpha = 0.5 | alpha = 0.9 |" in res.output
    assert "in this process" in res.output
    results = study_dir / "results.zarr"
    assert results.exists()
    from hpcmix.results import open_results

    ds = open_results(results)
    assert ds["alpha_hat"].dims == ("estimator", "smearing", "alpha", "n_events", "toy")
    assert list(ds["estimator"].values) == ["phi_star", "nn"] and list(ds["smearing"].values) == ["none"]
    assert ds.sel(estimator="nn").sizes["smearing"] == 1
    assert ds["alpha"].values.tolist() == [0.5, 0.9] and ds["n_events"].values.tolist() == [20, 100]
    assert ds.sizes["toy"] == 40 and (ds["n_toys_filled"] == 40).all()
    assert np.isfinite(ds["alpha_hat"].values).all()
    assert np.isfinite(ds["cramer_rao"].values).all()

    res = invoke("report", results, "--out", study_dir / "report")
    assert "figures written" in res.output and (study_dir / "report" / "table1.md").exists()


@pytest.mark.tensorflow
def test_ratio_network_templates_and_toys_from_the_command_line(model_dir, phi_star_dir, small_store, study_dir):
    """train --loss, then templates --method ratio and ratio_calibrated, then toys beside phi*."""
    from hpcmix.orchestrate.record import StageRecord
    from hpcmix.results import open_results
    from hpcmix.train import load_ratio_network

    ratio_model = study_dir / "models" / "ratio-none"
    res = invoke("train", small_store, "--loss", "exponential", "--set", "hidden_layers=16,16", "--set",
                 "max_epochs=2", "--seed", "3", "--out", ratio_model)
    assert "training a likelihood-ratio network (exponential loss)" in res.output
    assert "closure on held-out events: mean r on H" in res.output and "--method ratio" in res.output
    rec = StageRecord.read(ratio_model, stage="train")
    assert rec.settings["loss"] == "exponential" and "output_batch_norm" not in rec.settings["classifier"]
    assert load_ratio_network(ratio_model).class_names == ("H", "A")
    dirs, said = {}, {}
    for method in ("ratio", "ratio_calibrated"):
        dirs[method] = study_dir / "templates" / f"{method}-none"
        said[method] = invoke("templates", small_store, "--method", method, "--model", ratio_model,
                              "--out", dirs[method]).output
        assert "closure on the test pool: mean r on H" in said[method]
        trec = StageRecord.read(dirs[method], stage="templates")
        assert trec.settings["estimator"] == method and trec.inputs["ratio_models"] == {"A": rec.address}
    assert "exponential network: r normalised by" in said["ratio"]
    assert "KDE bandwidths (logit space)" in said["ratio_calibrated"]
    out = study_dir / "ratio-results" / "results.zarr"
    res = invoke("toys", dirs["ratio_calibrated"], phi_star_dir, dirs["ratio"], *TOYS, "--out", out)
    ds = open_results(out)
    assert list(ds["estimator"].values) == ["phi_star", "ratio", "ratio_calibrated"]
    assert np.isfinite(ds["alpha_hat"].values).all() and np.isfinite(ds["cramer_rao"].values).all()
    # a classifier is no ratio network and the other way round; the direct ratio has no KDE options
    res = invoke("templates", small_store, "--method", "ratio", "--model", model_dir, ok=False)
    assert "holds a classifier, and --method ratio takes a likelihood-ratio network" in res.output
    assert "--loss exponential" in res.output
    res = invoke("templates", small_store, "--method", "nn", "--model", ratio_model, ok=False)
    assert "holds a likelihood-ratio network" in res.output and "--method ratio or ratio_calibrated" in res.output
    res = invoke("templates", small_store, "--method", "ratio", "--model", ratio_model, "--bandwidth", "scott",
                 ok=False)
    assert "--method ratio uses the network's ratio with no KDE" in res.output
    res = invoke("train", small_store, "--loss", "kl", "--set", "output_batch_norm=true", ok=False)
    assert "output_batch_norm is not used by a ratio network" in res.output


# -- without TensorFlow -------------------------------------------------------------------------
def test_phi_star_toys_rerun_skips_batches_and_matches(phi_star_dir, tmp_path):
    out = tmp_path / "r" / "results.zarr"
    first = invoke("toys", phi_star_dir, *TOYS, "--out", out)
    assert "12 batch(es) to fit" in first.output
    from hpcmix.results import open_results

    a = open_results(out)
    again = invoke("toys", phi_star_dir, *TOYS, "--out", out)
    assert "0 batch(es) to fit, 12 already done" in again.output
    b = open_results(out)
    np.testing.assert_array_equal(a["alpha_hat"].values, b["alpha_hat"].values)
    assert list(a["estimator"].values) == ["phi_star"]
    batches = sorted(os.listdir(tmp_path / "r" / "toys" / os.listdir(tmp_path / "r" / "toys")[0]))
    assert batches and all(f.startswith("batch-") and f.endswith(".npz") for f in batches), batches


def test_toys_on_a_local_cluster_match_in_process(phi_star_dir, tmp_path):
    from hpcmix.results import open_results

    args = ["--alpha", "0.7", "--n-events", "50", "--n-toys", "30", "--batch-size", "10", "--no-progress"]
    invoke("toys", phi_star_dir, *args, "--out", tmp_path / "a" / "results.zarr", "-w", "0")
    res = invoke("toys", phi_star_dir, *args, "--out", tmp_path / "b" / "results.zarr", "-w", "1")
    assert "local Dask cluster (1 worker)" in res.output
    a, b = (open_results(tmp_path / k / "results.zarr") for k in "ab")
    np.testing.assert_array_equal(a["alpha_hat"].values, b["alpha_hat"].values)


def test_templates_refuse_a_finished_folder_without_overwrite(small_store, phi_star_dir):
    # the same templates again: a no-op
    res = invoke("templates", small_store, "--method", "phi_star", "--out", phi_star_dir)
    assert "already holds these templates" in res.output and "nothing to do" in res.output
    # other settings (components swapped): refused before any work
    res = invoke("templates", small_store, "--method", "phi_star", "--samples", "A,H", "--out", phi_star_dir, ok=False)
    assert "already holds finished templates made with other settings" in res.output and "--overwrite" in res.output


@pytest.mark.parametrize("args, message", [
    (["--set", "wings=3"], "valid keys: hidden_layers, activation"),
    (["--set", "max_epochs=two"], "max_epochs takes an integer"),
    (["--set", "hidden_layers=16,x"], "comma-separated integers"),
    (["--set", "dropout=1.5"], "dropout must be in [0, 1)"),
    (["--set", "seed=3"], "--seed"),
    (["--set", "max_epochs"], "KEY=VALUE"),
    (["--features", "pi_plus_px,nonsense"], "unknown feature name(s) ['nonsense']"),
    (["--samples", "H,Z"], "not in the store"),
])
def test_train_errors(small_store, args, message):
    res = invoke("train", small_store, *args, ok=False)
    assert message in res.output


def test_store_errors(tmp_path, small_plan):
    res = invoke("train", tmp_path / "missing.zarr", ok=False)
    assert "does not exist" in res.output and "hpcmix generate" in res.output
    from hpcmix.store import EventStore

    partial = tmp_path / "partial.zarr"
    EventStore.create(partial, small_plan.layout)     # laid out, nothing generated
    res = invoke("templates", partial, "--method", "phi_star", ok=False)
    assert "not complete" in res.output and "hpcmix generate" in res.output
    (tmp_path / "plain").mkdir()
    res = invoke("templates", tmp_path / "plain", "--method", "phi_star", ok=False)
    assert "no hpcmix event store" in res.output


def test_templates_errors(small_store, tmp_path, phi_star_dir):
    res = invoke("templates", small_store, "--method", "nn", ok=False)
    assert "--method nn needs --model" in res.output
    res = invoke("templates", small_store, "--method", "nn", "--model", tmp_path, ok=False)
    assert "--model" in res.output and "holds no finished stage output (no done.json)" in res.output
    assert "hpcmix train" in res.output
    res = invoke("templates", small_store, "--method", "nn", "--model", phi_star_dir, ok=False)
    assert "holds a 'templates' output, not a 'train' one" in res.output
    res = invoke("templates", small_store, "--method", "phi_star", "--bandwidth", "0.3", ok=False)
    assert "--bandwidth is for the KDE methods (nn, ratio_calibrated) only" in res.output
    res = invoke("templates", small_store, "--method", "phi_star", "--model", phi_star_dir, ok=False)
    assert "--model is for the network methods (nn, ratio, ratio_calibrated) only" in res.output
    res = invoke("templates", small_store, "--method", "nn", "--model", tmp_path, "--bandwidth", "-1", ok=False)
    assert "scott, silverman or a number > 0" in res.output


def test_toys_errors(phi_star_dir, tmp_path):
    for alpha in ("0.5,1.2", "-0.1", "0.5,0.5", "half"):
        res = invoke("toys", phi_star_dir, "--alpha", alpha, ok=False)
        assert "--alpha" in res.output
    assert "outside [0.0, 1.0]" in invoke("toys", phi_star_dir, "--alpha", "0.5,1.2", ok=False).output
    assert "outside [1, inf]" in invoke("toys", phi_star_dir, "--n-events", "0", ok=False).output
    assert "at least 1 toy" in invoke("toys", phi_star_dir, "--n-toys", "0", ok=False).output
    res = invoke("toys", tmp_path / "nowhere", ok=False)
    assert "does not exist" in res.output and "hpcmix templates" in res.output
    res = invoke("toys", tmp_path, ok=False)
    assert "TEMPLATES_DIR" in res.output and "holds no finished stage output (no done.json)" in res.output
    assert "hpcmix templates" in res.output
    res = invoke("toys", phi_star_dir, phi_star_dir, ok=False)
    assert "pass one folder per (method, smearing)" in res.output
    res = invoke("toys", phi_star_dir, "--out", tmp_path, ok=False)
    assert "not a Zarr store" in res.output
    assert "Missing argument" in invoke("toys", ok=False).output


# -- the stage commands on a SLURM site: training on the GPU pool ------------------------------
@pytest.mark.slurm
@pytest.mark.tensorflow
def test_stage_commands_on_slurm_train_on_the_gpu_job(small_store, slurm_cluster, tmp_path):
    from hpcmix.orchestrate.record import StageRecord
    from hpcmix.results import open_results

    model = tmp_path / "models" / "none"
    res = invoke("train", small_store, "--site", "ci-slurm", "--set", "hidden_layers=8", "--set", "max_epochs=1",
                 "--out", model)
    assert "ROC AUC" in res.output
    info = StageRecord.read(model, stage="train").info
    job = info["worker"]["slurm_job_id"]
    assert job, "training did not run in a SLURM job"
    assert f"SLURM job {job}" in res.output
    gres = info["slurm_gres"]  # read by scontrol on the worker while training
    assert gres["job_id"] == job and gres["gpus"] == 1 and gres["partition"] == "gpu", gres

    nn_dir = tmp_path / "templates" / "nn-none"
    res = invoke("templates", small_store, "--method", "nn", "--model", model, "--site", "ci-slurm", "--out", nn_dir)
    assert StageRecord.read(nn_dir, stage="templates").settings["estimator"] == "nn"

    out = tmp_path / "results.zarr"
    res = invoke("toys", nn_dir, "--site", "ci-slurm", "--n-toys", "20", "--batch-size", "10", "--alpha", "0.5",
                 "--n-events", "20", "--no-progress", "--out", out)
    assert "2 batch(es) to fit" in res.output and "on site 'ci-slurm'" in res.output
    ds = open_results(out)
    assert ds["alpha_hat"].dims == ("estimator", "smearing", "alpha", "n_events", "toy")
    assert list(ds["estimator"].values) == ["nn"] and ds.sizes["toy"] == 20
    assert np.isfinite(ds.sel(estimator="nn")["alpha_hat"].values).all()
