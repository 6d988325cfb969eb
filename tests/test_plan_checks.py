"""Plan-time checks of coupled settings, and the CLI's handling of errors (no tracebacks)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from conftest import study_with

TINY = {"generate": {"profile": "fast", "chunk_size": 10, "events": {"train": 20, "template": 10, "test": 10}},
        "toys": {"alpha": [0.5], "n_events": [5], "n_toys": 4, "batch_size": 2}}


def _job(tmp_path, **layer) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"name": "checks", "output": str(tmp_path / "out"), **layer}))
    return str(path)


def _dry_run(path):
    from hpcmix.cli import cli

    return CliRunner().invoke(cli, ["run", path, "--dry-run"])


# -- the two cases, refused by --dry-run -----------------------------------------------
def test_test_pool_smaller_than_a_toy_is_refused_by_dry_run(tmp_path):
    path = _job(tmp_path, generate={"chunk_size": 100, "events": {"train": 1000, "template": 1000, "test": 100}},
                toys={"n_events": [5000], "alpha": [0.5]})
    result = _dry_run(path)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    # names the fields, their values, and what would work
    for text in ("toys.n_events = 5000", "toys.alpha = 0.5", "generate.events.test = 100",
                 "the A test pool holds 100", "raise generate.events.test to at least", "toys.n_events <= 100"):
        assert text in result.output, result.output
    assert not os.path.exists(tmp_path / "out")            # nothing started, nothing written


def test_splits_too_small_to_train_on_are_refused_by_dry_run(tmp_path):
    path = _job(tmp_path, generate={"chunk_size": 2, "events": {"train": 2, "template": 2, "test": 2}},
                toys={"n_events": [2], "alpha": [0.5]})
    result = _dry_run(path)
    assert result.exit_code == 2, result.output
    assert "classifier.validation_fraction = 0.2 of 2 x 2 train events" in result.output
    assert "raise generate.events.train" in result.output
    assert "Traceback" not in result.output


# -- what the checks compute -------------------------------------------------------------------
def test_pool_check_sees_exactly_the_counts_the_toys_stage_draws():
    """The plan's largest toy composition equals what draw_toys draws from the same seed."""
    from hpcmix.orchestrate.checks import toy_pool_problems
    from hpcmix.orchestrate.pipeline import plan_study
    from hpcmix.stats.toys import draw_toys, toy_seed

    plan = plan_study(study_with(**TINY))
    cell = plan.cells[0]
    drawn = [draw_toys(10, 10, alpha=cell.alpha, n_events=cell.n_events, n_toys=n,
                       rng=toy_seed(cell.seed, cell.estimator, cell.smearing, cell.alpha, cell.n_events, b)).n_a
             for b, n in enumerate(cell.batches)]
    need = int(np.concatenate(drawn).max())
    # a pool one event short of the largest toy is refused, one of exactly that size is not
    short, _ = toy_pool_problems([cell], {"H": 10, "A": need - 1}, zero="H", one="A")
    enough, _ = toy_pool_problems([cell], {"H": 10, "A": need}, zero="H", one="A")
    assert len(short) == 1 and f"{need} distinct A events" in short[0]
    assert enough == []


def test_training_split_check_is_the_split_training_makes():
    from hpcmix.orchestrate.checks import training_split_problems
    from hpcmix.orchestrate.pipeline import plan_study
    from hpcmix.train.split import split_indices

    model = plan_study(study_with(**TINY)).models["none"]
    for fraction in (0.01, 0.05, 0.1, 0.2, 0.5):
        m = model.__class__(**{**model.__dict__, "settings": model.settings.replace(validation_fraction=fraction)})
        for n_train in (3, 5, 8, 20):
            _, val = split_indices(2 * n_train, fraction, m.settings.seed)
            one_class = bool(np.all(val >= n_train) or np.all(val < n_train))
            problems, _ = training_split_problems(m, n_train)
            assert bool(problems) == one_class, (fraction, n_train, problems)


def test_wasteful_settings_are_noted_in_the_plan():
    from hpcmix.orchestrate.pipeline import plan_study

    plan = plan_study(study_with(**{**TINY, "generate": {**TINY["generate"], "chunk_size": 15},
                                    "toys": {**TINY["toys"], "n_toys": 400}}))
    text = plan.describe()
    assert "whole chunks of generate.chunk_size = 15" in text and "train 20 -> 30" in text
    assert "toys reuse test-pool events" in text
    assert "classifier.batch_size = 264 exceeds the" in text


def test_kde_templates_need_two_events(tmp_path):
    path = _job(tmp_path, generate={"chunk_size": 1, "events": {"train": 20, "template": 1, "test": 10}},
                toys={"n_events": [5], "alpha": [0.5], "estimators": ["nn"]})
    result = _dry_run(path)
    assert result.exit_code == 2 and "KDE templates need at least 2" in result.output, result.output
    # phi* alone builds no KDE: the same sizes plan
    path = _job(tmp_path, generate={"chunk_size": 1, "events": {"train": 20, "template": 1, "test": 10}},
                toys={"n_events": [5], "alpha": [0.5], "estimators": ["phi_star"]})
    assert _dry_run(path).exit_code == 0


# -- errors reaching the user -------------------------------------------------------------------
def test_input_error_is_one_clean_message_in_a_real_process(tmp_path):
    """``python -m hpcmix`` itself (not click's test runner): exit 2, the message, no traceback."""
    path = _job(tmp_path, toys={"n_toys": 0})
    r = subprocess.run([sys.executable, "-m", "hpcmix", "run", path, "--dry-run"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr
    assert "toys.n_toys" in r.stderr and "Traceback" not in r.stderr + r.stdout


def test_project_error_raised_inside_a_command_exits_2_without_traceback(tmp_path, monkeypatch):
    from hpcmix.cli import cli
    from hpcmix.orchestrate import pipeline
    from hpcmix.orchestrate.lock import OutputLockedError

    def locked(*args, **kwargs):
        raise OutputLockedError("the output folder is in use by another run (pid 1); wait for it")

    monkeypatch.setattr(pipeline, "run_study", locked)
    result = CliRunner().invoke(cli, ["run", _job(tmp_path, **TINY)])
    assert result.exit_code == 2
    assert "Error: the output folder is in use" in result.output and "Traceback" not in result.output


def test_unexpected_error_names_stage_and_task_and_writes_the_traceback(tmp_path, monkeypatch):
    from hpcmix.cli import cli
    from hpcmix.errors import TaskFailedError
    from hpcmix.orchestrate import pipeline

    def broken(*args, **kwargs):
        try:
            {}["missing"]
        except KeyError as err:
            raise TaskFailedError("toys", "toys-0123abcd-4", err) from err

    monkeypatch.setattr(pipeline, "run_study", broken)
    monkeypatch.setenv("HPCMIX_TRACEBACK_DIR", str(tmp_path / "tb"))
    result = CliRunner().invoke(cli, ["run", _job(tmp_path, **TINY)])
    assert result.exit_code == 1
    out = result.output
    assert "unexpected KeyError in stage 'toys', task 'toys-0123abcd-4'" in out and "Traceback" not in out
    [written] = os.listdir(tmp_path / "tb")
    text = (tmp_path / "tb" / written).read_text()
    assert str(tmp_path / "tb" / written) in out
    assert "Traceback" in text and "KeyError: 'missing'" in text and "in broken" in text


def _fails(kind):
    if kind == "bug":
        raise ZeroDivisionError("division by zero in a task")
    from hpcmix.schema import ConfigError

    raise ConfigError("a field is wrong: fix it")


@pytest.mark.parametrize("where", ["in-process", "local-cluster"])
def test_executors_name_the_stage_and_task_of_a_failure(where, request):
    from hpcmix.errors import TaskFailedError
    from hpcmix.orchestrate.executor import InProcess, Task
    from hpcmix.schema import ConfigError

    ex = InProcess() if where == "in-process" else request.getfixturevalue("local_executor")
    with pytest.raises(TaskFailedError) as info:
        list(ex.run([Task(key="demo-task-1", fn=_fails, args=("bug",))], stage="demo"))
    assert (info.value.stage, info.value.task) == ("demo", "demo-task-1")
    assert isinstance(info.value.error, ZeroDivisionError)
    # the project's own errors pass unchanged: their message is what the user needs
    with pytest.raises(ConfigError, match="fix it"):
        list(ex.run([Task(key="demo-task-2", fn=_fails, args=("input",))], stage="demo"))


def test_task_counts_the_scheduler_cannot_carry_are_refused_before_planning(tmp_path):
    from hpcmix.orchestrate.checks import MAX_TASKS_PER_STAGE

    path = _job(tmp_path, toys={"n_toys": 10 * MAX_TASKS_PER_STAGE, "batch_size": 1})
    result = _dry_run(path)
    assert result.exit_code == 2 and "raise toys.batch_size" in result.output, result.output
    path = _job(tmp_path, generate={"chunk_size": 1, "events": {"train": MAX_TASKS_PER_STAGE, "template": 1,
                                                                "test": 1}})
    result = _dry_run(path)
    assert result.exit_code == 2 and "raise generate.chunk_size" in result.output, result.output


@pytest.mark.pythia
@pytest.mark.tensorflow
def test_a_pipeline_failure_names_its_stage_and_task(tmp_path, monkeypatch):
    """A bug inside a toy task, and one on the client (aggregation), each name where they happened."""
    from hpcmix.errors import TaskFailedError
    from hpcmix.orchestrate.executor import InProcess
    from hpcmix.orchestrate.pipeline import run_study
    from hpcmix.orchestrate.stages import toys as toys_stage
    from hpcmix.results import aggregate

    study = study_with(**TINY, output=str(tmp_path / "out"), smearing={"variants": ["none"]},
                       classifier={"hidden_layers": [8], "max_epochs": 1})
    real_task = toys_stage.toys_task

    def bad_task(cell, batch):
        raise IndexError("a bug in a toy task")

    monkeypatch.setattr(toys_stage, "toys_task", bad_task)
    with pytest.raises(TaskFailedError) as info:
        run_study(study, executor=InProcess(), progress=False, echo=lambda _: None)
    assert info.value.stage == "toys" and info.value.task.startswith("toys-")
    assert isinstance(info.value.error, IndexError)

    monkeypatch.setattr(toys_stage, "toys_task", real_task)
    monkeypatch.setattr(aggregate, "aggregate_toys", lambda *a, **k: {}["a bug on the client"])
    with pytest.raises(TaskFailedError) as info:
        run_study(study, executor=InProcess(), progress=False, echo=lambda _: None)
    assert info.value.stage == "aggregate" and info.value.task is None
    assert "on the client" in str(info.value)


#: job files the fuzzer (tests/test_job_fuzz.py) found failing late or with a traceback, kept as cases
FUZZER_FINDINGS = [
    ({"auc_study": {"sets": ["phi_star"], "smearing": []}}, "auc_study.smearing"),   # [] in {...}: TypeError
]


#: and one that ran to the report: phi* toys at alpha = 0 from a test pool of 2 events per component
#: gave alpha_hat values too close together for 50 histogram bins (report.py: _hist_range)


@pytest.mark.parametrize("layer, field", FUZZER_FINDINGS)
def test_fuzzer_findings_are_refused_cleanly(tmp_path, layer, field):
    result = _dry_run(_job(tmp_path, **layer))
    assert result.exit_code == 2 and field in result.output and "unexpected" not in result.output, result.output


def test_report_histograms_toys_that_all_agree():
    """The fuzzer's second finding: alpha_hat equal to 1e-12 in every toy of a cell."""
    from hpcmix.results.report import _hist_range

    x = -0.123456789 + np.arange(4) * np.spacing(0.123456789)   # one float apart
    with pytest.raises(ValueError, match="Too many bins"):
        np.histogram(x, bins=50)                       # what the report did
    counts, edges = np.histogram(x, bins=50, range=_hist_range(x))
    assert counts.sum() == 4 and np.all(np.diff(edges) > 0)
    wide = np.array([0.1, 0.9])
    assert _hist_range(wide) == (0.1, 0.9)            # an ordinary spread is left alone
