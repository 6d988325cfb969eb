"""``hpcmix run`` end to end: local cluster, SLURM through dask-jobqueue, resume after a kill, bad job files."""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from hpcmix.orchestrate.pipeline import plan_study, run_study
from hpcmix.schema import ConfigError
from hpcmix.study import load_study

TINY_JOB = """
name: tiny
output: {out}
seed: 11
generate:
  profile: fast
  chunk_size: 250
  events: {{train: 500, template: 250, test: 250}}
smearing: [none, detector]
classifier: {{hidden_layers: [16, 16], max_epochs: 2, batch_size: 128}}
toys:
  methods: [phi_star, nn]
  alpha: [0.5, 0.9]
  n_events: [20, 50]
  n_toys: {n_toys}
  batch_size: 20
auc_study:
  sets: [phi_star, [phi_star, upsilon_plus, upsilon_minus]]
  classifier: {{max_epochs: 1}}
"""


def _job_file(tmp_path, name="job.yaml", out="out", n_toys=40):
    path = tmp_path / name
    path.write_text(TINY_JOB.format(out=tmp_path / out, n_toys=n_toys))
    return str(path)


def _quiet(_msg):
    pass


def _local_site():
    """The default site, with a free dashboard port (8787 may be taken by another run on this machine)."""
    from hpcmix.orchestrate.sites import load_site

    return load_site("local").with_overrides(cpu={"dashboard_address": ":0"})


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    job = load_study(_job_file(tmp))
    return tmp, job, run_study(job, site=_local_site(), progress=False, echo=_quiet)


@pytest.mark.pythia
@pytest.mark.tensorflow
def test_local_run_produces_the_results_table(local_run):
    _, job, outcome = local_run
    ds = xr.open_zarr(outcome.results_path, consolidated=False)
    assert dict(ds.sizes) == {"estimator": 2, "smearing": 2, "alpha": 2, "n_events": 2, "toy": 40} | {
        k: v for k, v in ds.sizes.items() if k not in ("estimator", "smearing", "alpha", "n_events", "toy")}
    assert "method" not in ds.dims
    assert list(ds.estimator.values) == ["phi_star", "nn"] and list(ds.smearing.values) == ["none", "detector"]
    a_hat = ds.alpha_hat.values
    assert np.isfinite(a_hat).all()
    # phi* is sensitive to alpha even at this size: 160 toys per alpha give a mean to about +-0.06
    mean = ds.alpha_hat.sel(estimator="phi_star", smearing="none").mean(("n_events", "toy")).values
    assert mean[1] - mean[0] > 0.1, mean
    assert "phi_star, none" in outcome.table and "nn, detector" in outcome.table
    assert {os.path.basename(f) for f in outcome.figures} >= {"lr_stat_chi2.png", "likelihood_curves.png",
                                                                "templates_nn_none.png"}
    assert all(os.path.getsize(f) > 1000 for f in outcome.figures)
    assert set(outcome.training) == {"none", "detector"}
    # the feature-subset AUC study ran from the job file: one row per input set
    assert "| phi_star | 1 |" in outcome.table and "| phi_star+upsilon_plus+upsilon_minus | 3 |" in outcome.table
    assert os.path.exists(os.path.join(job.output, "report", "auc_study.md"))
    assert all(0.3 < t["info"]["roc_auc"] < 0.8 for t in outcome.training.values())
    # one page with all of it: every table's rows, every figure embedded, the study's addresses
    page = Path(job.output, "report", "index.html").read_text(encoding="utf-8")
    assert page.count("<img src=\"data:image/png;base64,") == len(outcome.figures)
    # the run's pool-reuse note extends the results' own: one note, the run's
    assert len(outcome.notes) == 1 and page.count('<p class="note">') == 1
    assert f'<p class="note">note: {html.escape(outcome.notes[0])}</p>' in page
    assert "<td>phi_star+upsilon_plus+upsilon_minus</td>" in page and outcome.plan.events_address in page


@pytest.mark.pythia
@pytest.mark.tensorflow
@pytest.mark.browser
def test_chromium_renders_the_run_report(local_run, browser, tmp_path):
    """The real run's index.html in headless Chromium: figures drawn, Table 1's cells in the DOM."""
    _, job, outcome = local_run
    page = os.path.join(job.output, "report", "index.html")
    shot = browser.screenshot(page, tmp_path / "shot.png")
    assert (shot.max(axis=-1).astype(int) - shot.min(axis=-1) > 80).sum() > 2000
    dom = browser.dom(page)
    rows = [line for line in outcome.table.splitlines() if line.startswith("| phi_star, none |")]
    assert rows, outcome.table
    for cell in rows[0].strip("|").split("|")[1:]:
        assert f"<td>{cell.strip()}</td>" in dom


@pytest.mark.pythia
@pytest.mark.tensorflow
def test_status_of_a_finished_run_has_every_stage_done(local_run):
    _, job, outcome = local_run
    st = subprocess.run([sys.executable, "-m", "hpcmix", "status", job.output, "--json"],
                        capture_output=True, text=True, timeout=120)
    assert st.returncode == 0, st.stdout + st.stderr
    st = json.loads(st.stdout)
    assert st["run_state"] == "finished" and st["run"]["error"] is None and st["live"] is None
    plan = outcome.plan
    assert {k: v["state"] for k, v in st["stages"].items()} == dict.fromkeys(
        ("generate", "train", "templates", "toys", "results", "report"), "done")
    assert st["stages"]["generate"]["summary"] == f"{plan.generation.layout.n_chunks * 2}/" \
                                                  f"{plan.generation.layout.n_chunks * 2} chunks"
    n_batches = sum(len(c.batches) for c in plan.cells)
    assert st["stages"]["toys"]["summary"].startswith(f"{n_batches}/{n_batches} batches")
    assert {i["address"] for i in st["stages"]["toys"]["items"]} == {c.address for c in plan.cells}


@pytest.mark.pythia
@pytest.mark.tensorflow
def test_rerun_skips_everything_and_a_changed_toy_setting_redoes_only_toys(local_run):
    tmp, job, first = local_run
    again = run_study(job, site=_local_site(), progress=False, echo=_quiet)
    assert again.skipped == {"generate": 8, "train": 4, "templates": 4, "toys": len(first.plan.cells) * 2}
    a = xr.open_zarr(first.results_path, consolidated=False).alpha_hat.values
    b = xr.open_zarr(again.results_path, consolidated=False).alpha_hat.values
    assert np.array_equal(a, b)
    more = load_study(_job_file(tmp, "more.yaml", n_toys=60))
    changed = run_study(more, site=_local_site(), progress=False, echo=_quiet)
    assert changed.skipped["generate"] == 8 and changed.skipped["train"] == 4 and changed.skipped["templates"] == 4
    assert changed.skipped["toys"] == 0 and changed.plan.results != first.plan.results
    assert xr.open_zarr(changed.results_path, consolidated=False).sizes["toy"] == 60


def _stage_reached(plan, stage: str) -> bool:
    """Has the first run got to ``stage`` (a point where killing it leaves partial work)?"""
    from hpcmix.store import EventStore

    if stage == "generate":  # some chunks written, not all
        try:
            done = EventStore(plan.events).done_chunks(plan.study.components[0])
        except (FileNotFoundError, ValueError):
            return False
        return 0 < done.sum() < done.size
    if stage == "train":  # the store is complete and a model folder is being written
        return any(os.path.isdir(m.folder) for m in plan.models.values())
    if stage == "toys":  # some toy batches written
        return any(os.path.isdir(c.folder) and os.listdir(c.folder) for c in plan.cells)
    raise ValueError(stage)


def _completed(plan) -> dict:
    from hpcmix.orchestrate.record import is_done
    from hpcmix.store import EventStore

    try:
        chunks = sum(int(EventStore(plan.events).done_chunks(s).sum()) for s in plan.study.components)
    except (FileNotFoundError, ValueError):
        chunks = 0
    return {"generate": chunks,
            "train": sum(is_done(m.folder, m.address) for m in [*plan.models.values(), *plan.auc_models.values()]),
            "templates": sum(is_done(t.folder, t.address) for t in plan.templates.values()),
            "toys": sum(os.path.exists(c.batch_file(b)) for c in plan.cells for b in range(len(c.batches)))}


@pytest.mark.slow
@pytest.mark.pythia
@pytest.mark.tensorflow
@pytest.mark.parametrize("stage, how", [
    ("generate", signal.SIGINT), ("generate", signal.SIGKILL), ("train", signal.SIGKILL), ("toys", signal.SIGINT),
], ids=["generate-SIGINT", "generate-SIGKILL", "train-SIGKILL", "toys-SIGINT"])
def test_client_interrupted_resumes_with_identical_results(tmp_path, local_run, stage, how):
    """Interrupt `hpcmix run` mid-stage; the rerun redoes nothing complete and matches an uninterrupted run."""
    job_file = _job_file(tmp_path)
    plan = plan_study(load_study(job_file))
    log = tmp_path / "first-run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hpcmix", "run", job_file, "--no-progress"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while not _stage_reached(plan, stage):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"stage {stage} not reached in 300 s"
            time.sleep(0.05)
        os.killpg(proc.pid, how)  # SIGINT: Ctrl-C to the client and its cluster; SIGKILL: a dead node
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    before = _completed(plan)
    # what `hpcmix status` says of the killed run, from its files alone
    st = subprocess.run([sys.executable, "-m", "hpcmix", "status", os.path.join(tmp_path, "out"), "--json"],
                        capture_output=True, text=True, timeout=120)
    assert st.returncode == 0, st.stdout + st.stderr
    st = json.loads(st.stdout)
    assert st["run_state"] == ("interrupted" if how == signal.SIGINT else "stopped"), st["run"]
    stages = st["stages"]
    assert sum(i["done"] for i in stages["generate"]["items"]) == before["generate"]
    assert sum(i["done"] for i in stages["toys"]["items"]) == before["toys"]
    assert sum(i["done"] for i in stages["train"]["items"]) == before["train"]
    assert stages["results"]["state"] == "missing" and stages["report"]["state"] == "missing"
    assert stages[stage]["state"] != "done"   # the stage the run was killed in
    rerun = subprocess.run([sys.executable, "-m", "hpcmix", "run", job_file, "--no-progress"],
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    done_line = rerun.stdout.split("already done:")[-1]
    for name, n in before.items():  # nothing complete is redone
        if n:
            assert re.search(rf"\b{name} {n}(,|$)", done_line, re.M), (name, n, rerun.stdout[-500:])
    _, _, uninterrupted = local_run
    a = xr.open_zarr(uninterrupted.plan.results, consolidated=False)  # not the link: a later test repoints it
    b = xr.open_zarr(os.path.join(tmp_path, "out", "results.zarr"), consolidated=False)
    for name in ("alpha_hat", "sigma_hat", "lr_stat"):
        np.testing.assert_array_equal(a[name].values, b[name].values)


@pytest.mark.slurm
@pytest.mark.pythia
@pytest.mark.tensorflow
def test_slurm_run_generates_on_cpu_jobs_and_trains_on_the_gpu_job(tmp_path, slurm_cluster):
    from hpcmix.orchestrate.record import StageRecord

    job = load_study(_job_file(tmp_path))
    said = []
    outcome = run_study(job, site="ci-slurm", progress=False, echo=said.append)
    # both pools' schedulers speak TLS (the workers in the SLURM jobs connected with their certificates),
    # and the dashboards are on localhost, with the ssh tunnel printed
    said = "\n".join(map(str, said))
    assert re.search(r"cpu: SLURMCluster .*scheduler tls://", said) and re.search(r"gpu: SLURMCluster .*scheduler tls://", said)
    assert len(re.findall(r"reach it with: ssh -N -L (\d+):localhost:\1 ", said)) == 2, said
    assert outcome.slurm_jobs["generate"], "generation tasks must run in SLURM jobs"
    assert outcome.slurm_jobs["toys"], "toy tasks must run in SLURM jobs"
    for smearing, record in outcome.training.items():
        info = StageRecord.read(outcome.plan.models[smearing].folder, stage="train").info
        assert info == record["info"], smearing
        gres = info["slurm_gres"]  # read by scontrol on the worker while training
        assert gres["gpus"] == 1 and gres["partition"] == "gpu", (smearing, gres)
        assert info["worker"]["slurm_job_id"] not in outcome.slurm_jobs["generate"]
        assert info["worker"]["slurm_job_id"] in outcome.slurm_jobs["train"]
        # the stand-in GPU: allocated, invisible to TensorFlow, and the site says warn (recorded, not hidden)
        assert info["gpu_check"]["mismatch"] is True and info["gpu_check"]["policy"] == "warn", info["gpu_check"]
    ds = xr.open_zarr(outcome.results_path, consolidated=False)
    assert np.isfinite(ds.alpha_hat.values).all() and "nn, detector" in outcome.table


# -- job-file validation: one clear error naming the file, the field and what is allowed ----------

GOOD = {"name": "x", "generate": {"events": {"train": 10, "template": 10, "test": 10}},
        "toys": {"alpha": [0.5], "n_events": [10], "n_toys": 5}}


def _with(path, value):
    import copy

    job = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = job
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return job


_DELETE = object()


@pytest.mark.parametrize("path, value, message", [
    ("name", _DELETE, r"missing required field 'name'"),
    ("seed", -1, r"field 'seed' has value -1 \(int\); allowed: an integer in \[0, 2\^63\)"),
    ("seed", "abc", r"field 'seed' has value 'abc' \(str\)"),
    ("colour", "red", r"unknown field 'colour'.*allowed fields: name, "),
    ("generate.profile", "turbo", r"field 'generate.profile' has value 'turbo'.*'full' or 'fast'"),
    ("generate.chunk_size", 0, r"field 'generate.chunk_size' has value 0.*integer >= 1"),
    ("generate.events", {"train": 10}, r"field 'generate.events'.*train/template/test"),
    ("generate.speed", 3, r"unknown field 'generate.speed'"),
    ("toys.alpha", [1.5], r"field 'toys.alpha' has value \[1.5\].*numbers in \[0, 1\]"),
    ("toys.n_events", [0], r"field 'toys.n_events'.*integers >= 1"),
    ("toys.estimators", ["bdt"], r"field 'toys.estimators' has value \['bdt'\].*\['phi_star', 'nn', 'nn_multiclass', 'nn_pairwise', 'ratio', 'ratio_calibrated'\]"),
    # the old name is still read; the error names the field by its new name
    ("toys.methods", ["bdt"], r"field 'toys.estimators' has value \['bdt'\].*\['phi_star', 'nn', 'nn_multiclass', 'nn_pairwise', 'ratio', 'ratio_calibrated'\]"),
    ("toys.n_toys", 0, r"field 'toys.n_toys' has value 0 .*integer >= 1"),
    ("smearing", ["extreme"], r"field 'smearing.variants' has value \['extreme'\].*\['none', 'detector'\]"),
    ("components", ["H"], r"'components' needs at least two processes to mix, got \['H'\]"),
    ("features", ["phi_star", "no_such_feature"],
     r"field 'features.network_inputs': unknown feature name\(s\) \['no_such_feature'\]"),
    ("classifier.dropout", 1.5, r"classifier: .*dropout"),
    ("classifier.layers", [3], r"unknown field 'classifier.layers'"),
    ("templates.bandwidth", -1, r"field 'templates.bandwidth' has value -1"),
    ("selection.m_vis_min", -5.0, r"selection: the visible-mass window needs 0 <= m_vis_min < m_vis_max"),
    ("selection.mvis_max", 500.0, r"unknown field 'selection.mvis_max'; allowed fields in selection: .*m_vis_max"),
])
def test_bad_job_fields(tmp_path, path, value, message):
    import yaml

    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(_with(path, value)))
    with pytest.raises(ConfigError, match=message) as err:
        load_study(f)
    assert str(f) in str(err.value)


@pytest.mark.parametrize("key", ["components", "samples"])
def test_unknown_process_is_named(tmp_path, key):
    """``samples:`` (the old name) and ``components:`` reach the same process check."""
    import yaml

    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump({**GOOD, key: ["H", "Zprime"],
                                 "poi": {"name": "alpha", "fraction_of": "Zprime", "among": ["H", "Zprime"]}}))
    with pytest.raises(ConfigError, match=r"components/processes: .*unknown process 'Zprime'") as err:
        load_study(f)
    assert str(f) in str(err.value)


def test_old_and_new_names_together_are_refused(tmp_path):
    import yaml

    f = tmp_path / "both.yaml"
    f.write_text(yaml.safe_dump({**GOOD, "samples": ["H", "A"], "components": ["H", "A"]}))
    with pytest.raises(ConfigError, match=r"'samples' is the old name of 'components'; give one of them") as err:
        load_study(f)
    assert str(f) in str(err.value)


def test_old_names_are_read(tmp_path):
    import yaml

    f = tmp_path / "old.yaml"
    f.write_text(yaml.safe_dump({**GOOD, "samples": ["H", "A"], "toys": {**GOOD["toys"], "methods": ["nn"]}}))
    study = load_study(f)
    assert study.components == ("H", "A") and study.toys.estimators == ("nn",)


def test_malformed_yaml_and_missing_file(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML"):
        load_study(f)
    with pytest.raises(ConfigError, match=r"no such job file"):
        load_study(tmp_path / "absent.yaml")


def test_shipped_jobs_are_valid():
    jobs = os.path.join(os.path.dirname(__file__), "..", "jobs")
    for name in sorted(os.listdir(jobs)):
        if name.endswith(".yaml"):
            plan = plan_study(load_study(os.path.join(jobs, name)))
            assert plan.n_toy_tasks > 0 and plan.generation.n_tasks > 0


def test_job_selection_reaches_the_event_store_address(tmp_path):
    """A job's selection section sets the cuts, and a different window is a different event store."""
    import yaml

    def plan_for(selection):
        f = tmp_path / "sel.yaml"
        f.write_text(yaml.safe_dump({**GOOD, "selection": selection}))
        return plan_study(load_study(f))

    windowed, plain = plan_for({"m_vis_min": 150.0, "m_vis_max": 500.0}), plan_for({})
    cuts = windowed.generation.specs[0].cuts
    assert (cuts.m_vis_min, cuts.m_vis_max) == (150.0, 500.0)
    assert windowed.generation.layout.settings["selection"]["m_vis_max"] == 500.0
    assert plain.generation.specs[0].cuts.m_vis_max is None
    assert windowed.events != plain.events


def test_cli_dry_run_prints_the_plan_and_starts_nothing(tmp_path):
    from click.testing import CliRunner

    from hpcmix.cli import cli

    result = CliRunner().invoke(cli, ["run", _job_file(tmp_path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "generate : 8 tasks" in result.output and "toys     : 16 cells" in result.output
    assert "core-h (CPU; a GPU is far faster)" in result.output   # the local site trains on its cpu pool
    assert not os.path.exists(tmp_path / "out")


def test_dry_run_estimates_training_from_the_sites_gpu_rate(tmp_path):
    """A site with a gpu pool gets the training time in hours there: from the pool's own measured rate, else
    from hpcmix.estimates' GPU rates by batch size; the samples are those the CPU core-hours count."""
    from click.testing import CliRunner

    from hpcmix.cli import cli
    from hpcmix.orchestrate.sites import SiteConfigError, load_site

    plan = plan_study(load_study(_job_file(tmp_path)))   # batch 128 (main networks) and 264 (AUC study's)
    est = plan.study.estimates
    cpu = plan.estimate()
    assert cpu.train_pool is None and cpu.train_pool_hours is None
    samples = cpu.train * 3600 * est["training_samples_per_core_second"]
    measured = load_site("ci-slurm").with_overrides(gpu={"training_samples_per_second": 50_000})
    e = plan.estimate(measured)
    assert e.train_pool == "gpu" and e.train == cpu.train
    assert e.train_pool_hours == pytest.approx(samples / 50_000 / 3600)
    assert "on the gpu pool (the gpu pool's measured 50,000 samples/s)" in e.lines()[0]
    # without its own rate: the estimates' GPU rate of the largest measured batch not above each network's
    by_batch = dict(est["training_samples_per_gpu_second"])
    bare = measured.with_overrides(gpu={"training_samples_per_second": None})
    assert sorted(by_batch) == [264, 4096]

    def at_batch(batch):   # every network of the job (the AUC study's inherit it) at this batch size
        p = plan_study(load_study(_job_file(tmp_path), sets=[f"classifier.batch_size={batch}"]))
        assert {m.settings.batch_size for m in [*p.models.values(), *p.auc_models.values()]} == {batch}
        return p, p.estimate().train * 3600 * est["training_samples_per_core_second"]
    for batch, rate in ((264, by_batch[264]), (1000, by_batch[264]), (4096, by_batch[4096]),
                        (8192, by_batch[4096]), (66, by_batch[264] / 4)):
        # below the smallest measured batch the GPU is launch-bound: the rate falls in proportion to the batch
        p, n = at_batch(batch)
        assert p.estimate(bare).train_pool_hours == pytest.approx(n / rate / 3600), batch
    # a layer gives the whole table; a malformed one is refused where the study is resolved
    own = plan_study(load_study(_job_file(tmp_path), sets=["estimates.training_samples_per_gpu_second=[[128, 1000]]"]))
    assert own.estimate(bare).train_pool_hours == pytest.approx(samples / 1000 / 3600)
    for bad in ("{264: 94500}", "[[264]]", "[[0, 5]]", "[['4k', 5]]"):
        with pytest.raises(ConfigError, match="training_samples_per_gpu_second must be a list of"):
            load_study(_job_file(tmp_path), sets=[f"estimates.training_samples_per_gpu_second={bad}"])
    # a site without a gpu pool trains on its cpu pool: hours only from that pool's own rate
    assert plan.estimate(bare.with_overrides(gpu=False)).train_pool_hours is None
    assert f"train {cpu.train:.2f} core-h (CPU" in plan.estimate(bare.with_overrides(gpu=False)).lines()[0]
    on_cpu = bare.with_overrides(gpu=False, cpu={"training_samples_per_second": 1000})
    assert plan.estimate(on_cpu).train_pool == "cpu"
    assert plan.estimate(on_cpu).train_pool_hours == pytest.approx(samples / 1000 / 3600)

    # the CLI: the packaged ci-slurm's stand-in GPU pool trains on one CPU core, and says so
    result = CliRunner().invoke(cli, ["run", _job_file(tmp_path), "--dry-run", "--site", "ci-slurm"])
    assert result.exit_code == 0, result.output
    hours = samples / 4300 / 3600
    assert f"train {hours:.2f} h on the gpu pool (the gpu pool's measured 4,300 samples/s)" in result.output
    with pytest.raises(SiteConfigError, match="training_samples_per_second"):
        measured.with_overrides(gpu={"training_samples_per_second": -5})


def test_cli_unknown_site(tmp_path):
    from click.testing import CliRunner

    from hpcmix.cli import cli

    result = CliRunner().invoke(cli, ["run", _job_file(tmp_path), "--site", "nowhere"])
    assert result.exit_code == 2 and "nowhere" in result.output and "local" in result.output


def test_second_run_on_the_same_output_is_refused_and_a_killed_holder_releases(tmp_path):
    from hpcmix.orchestrate.lock import OutputLockedError, output_lock

    folder = str(tmp_path / "out")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from hpcmix.orchestrate.lock import output_lock\n"
        f"with output_lock({folder!r}, what='first run'):\n"
        "    print('locked', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match=rf"in use by first run \(pid {holder.pid} on "):
            with output_lock(folder):
                pass
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs
        holder.wait()
        holder.stdout.close()
    with output_lock(folder, what="second run"):
        pass


@pytest.mark.slow
@pytest.mark.pythia
@pytest.mark.tensorflow
def test_worker_killed_mid_toys_gives_identical_results(tmp_path, local_run):
    """SIGKILL a worker process while toy batches are being fitted: Dask reruns them, nothing changes."""
    import threading

    from hpcmix.orchestrate.executor import OnPools
    from hpcmix.orchestrate.pools import make_clusters

    job = load_study(_job_file(tmp_path))
    plan = plan_study(job)
    killed = []

    def kill_when_toys_start(pools):
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not _stage_reached(plan, "toys"):
            time.sleep(0.02)
        pid = sorted(pools.cpu.client.run(os.getpid).values())[0]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    with make_clusters(_local_site()) as pools:
        t = threading.Thread(target=kill_when_toys_start, args=(pools,), daemon=True)
        t.start()
        outcome = run_study(job, executor=OnPools(pools), progress=False, echo=_quiet)
        t.join(timeout=60)
    assert killed, "no worker was killed"
    _, _, uninterrupted = local_run
    a = xr.open_zarr(uninterrupted.plan.results, consolidated=False)
    b = xr.open_zarr(outcome.plan.results, consolidated=False)
    for name in ("alpha_hat", "sigma_hat", "lr_stat", "interval_lo", "interval_hi"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
