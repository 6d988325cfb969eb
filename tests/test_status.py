"""``hpcmix status``: where a run stands, from the run log and the records alone (no Pythia, no cluster).

The finished and the killed real runs are checked in test_pipeline.py; here the run log and records
are made directly, so every branch (half done, stopped, running, failed, foreign folder) is exercised.
"""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from hpcmix.cli import cli
from hpcmix.orchestrate import runlog
from hpcmix.orchestrate.lock import output_lock
from hpcmix.orchestrate.pipeline import plan_study
from hpcmix.orchestrate.status import StatusError, output_status

from conftest import study_with, write_job

JOB = {"name": "st", "seed": 3, "components": ["H", "A"],
       "generate": {"profile": "fast", "chunk_size": 250, "events": {"train": 500, "template": 250, "test": 250}},
       "toys": {"methods": ["phi_star"], "alpha": [0.5], "n_events": [20, 50], "n_toys": 40, "batch_size": 20}}


def _study(tmp_path):
    return study_with(**JOB, output=str(tmp_path / "out"))


def _status(*args):
    result = CliRunner().invoke(cli, ["status", *map(str, args)])
    return result.exit_code, result.output


def test_an_empty_folder_says_nothing_has_run(tmp_path):
    code, out = _status(tmp_path)
    assert code == 0, out
    assert "the output folder is empty" in out


def test_a_folder_hpcmix_did_not_write_is_refused(tmp_path):
    (tmp_path / "thesis.tex").write_text("\\documentclass{article}")
    code, out = _status(tmp_path)
    assert code == 2
    assert "is not an hpcmix output folder" in out and "thesis.tex" in out
    with pytest.raises(StatusError):
        output_status(str(tmp_path))


def test_a_path_that_does_not_exist_is_a_usage_error(tmp_path):
    code, out = _status(tmp_path / "nowhere")
    assert code == 2 and "does not exist" in out


def test_a_job_file_whose_output_is_missing_lists_the_planned_totals(tmp_path):
    job = write_job(tmp_path, {**JOB, "output": str(tmp_path / "out")})
    code, out = _status("--json", job)
    assert code == 0, out
    st = json.loads(out)
    assert st["run_state"] == "unknown" and st["plan_from"] == f"job file {job}"
    assert any("does not exist yet" in n for n in st["notes"])
    stages = st["stages"]
    # 2 samples x (500 + 250 + 250) / 250 chunks; 1 estimator x 2 smearings x 1 alpha x 2 sizes x 2 batches
    assert stages["generate"]["summary"] == "0/8 chunks" and stages["generate"]["state"] == "missing"
    assert stages["toys"]["summary"].startswith("0/8 batches")
    assert {s["state"] for s in stages.values()} == {"missing"}
    # --set reaches the job's plan: more toys, more batches
    code, out = _status("--json", job, "--set", "toys.n_toys=60")
    assert code == 0, out
    assert json.loads(out)["stages"]["toys"]["summary"].startswith("0/12 batches")


def test_set_with_an_output_folder_is_refused(tmp_path):
    code, out = _status(tmp_path, "--set", "toys.n_toys=60")
    assert code == 2 and "give the job file" in out


def test_a_half_finished_run_counts_the_batches_written(tmp_path):
    plan = plan_study(_study(tmp_path))
    os.makedirs(plan.study.output)
    runlog.start(plan, command="hpcmix run st.yaml")
    first = plan.cells[0]
    os.makedirs(first.folder)
    for b in range(len(first.batches)):       # one cell complete
        open(first.batch_file(b), "wb").close()
    os.makedirs(plan.cells[1].folder)
    open(plan.cells[1].batch_file(0), "wb").close()   # and one half
    st = output_status(plan.study.output)
    assert st.plan_from == "run log"
    # the run log says running and no one holds the output lock: the run was killed
    assert st.run_state == "stopped"
    toys = {s.name: s for s in st.stages}["toys"]
    assert toys.state == "partial"
    assert toys.summary() == f"3/{2 * len(plan.cells)} batches (1/{len(plan.cells)} cells complete)"
    states = [i.state for i in toys.items]
    assert states == ["done", "partial"] + ["missing"] * (len(plan.cells) - 2)
    assert toys.items[0].address == first.address
    text = st.format()
    assert "run    : stopped" in text and "killed" in text
    assert f"partial        1/2  {plan.cells[1].address}" in text


def test_a_run_holding_the_lock_reads_running(tmp_path):
    plan = plan_study(_study(tmp_path))
    with output_lock(plan.study.output, what="hpcmix run st.yaml"):
        runlog.start(plan, command="hpcmix run st.yaml")
        st = output_status(plan.study.output)
        assert st.run_state == "running" and st.live["pid"] == os.getpid()
    assert output_status(plan.study.output).run_state == "stopped"


def test_a_failed_run_records_its_error(tmp_path, monkeypatch):
    from hpcmix.orchestrate import pipeline
    from hpcmix.orchestrate.executor import InProcess

    def boom(*args, **kwargs):
        raise ValueError("boom: the fit diverged\nsecond line")

    monkeypatch.setattr(pipeline, "_run_stages", boom)
    study = _study(tmp_path)
    with pytest.raises(ValueError, match="boom"):
        pipeline.run_study(study, executor=InProcess(), progress=False, echo=lambda *a: None)
    log = runlog.read(study.output)
    assert log["state"] == "failed" and log["ended"] is not None
    assert log["error"]["type"] == "ValueError" and "second line" in log["error"]["message"]
    code, out = _status(study.output)
    assert code == 0, out
    assert "run    : failed" in out
    assert "error  : ValueError: boom: the fit diverged" in out and "second line" not in out


def test_an_interrupted_run_says_so(tmp_path, monkeypatch):
    from hpcmix.orchestrate import pipeline
    from hpcmix.orchestrate.executor import InProcess

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_run_stages", ctrl_c)
    study = _study(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_study(study, executor=InProcess(), progress=False, echo=lambda *a: None)
    assert output_status(study.output).run_state == "interrupted"


def test_a_damaged_run_log_is_a_clear_error(tmp_path):
    (tmp_path / runlog.RUN_LOG).write_text("{not json")
    code, out = _status(tmp_path)
    assert code == 2 and "not valid JSON" in out and "next 'hpcmix run'" in out
    (tmp_path / runlog.RUN_LOG).write_text(json.dumps({"format": 99, "state": "running"}))
    code, out = _status(tmp_path)
    assert code == 2 and "format 1" in out


def test_a_job_with_other_settings_than_the_last_run_is_noted(tmp_path):
    plan = plan_study(_study(tmp_path))
    os.makedirs(plan.study.output)
    runlog.start(plan, command="hpcmix run st.yaml")
    job = write_job(tmp_path, {**JOB, "output": plan.study.output, "toys": {**JOB["toys"], "n_toys": 60}})
    code, out = _status(job)
    assert code == 0, out
    assert "planned other outputs than this job" in out
