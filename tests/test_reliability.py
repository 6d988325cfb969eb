"""Faults injected for real: killed workers, torn data, a full disk."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from hpcmix.generate.run import plan_generation, run_generation
from hpcmix.store import EventStore

pytestmark = pytest.mark.pythia


def _plan(component: str, per_split: int, *, chunk_size: int, seed: int):
    """A one-component store plan with ``per_split`` selected events in each of train, template and test."""
    from hpcmix.study import resolve_study

    study = resolve_study(overrides={"components": [component], "seed": seed, "generate": {
        "profile": "fast", "chunk_size": chunk_size,
        "events": {"train": per_split, "template": per_split, "test": per_split}}}, mixture=False)
    return plan_generation(study)


def _kill_a_worker_when_busy(client, store_path, stop: threading.Event):
    """SIGKILL one worker process once the first chunk is done and more are running."""
    while not stop.is_set():
        try:
            if EventStore(store_path).done_chunks("A").sum() >= 1:
                break
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.05)
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    os.kill(victim, signal.SIGKILL)
    return victim


def test_worker_killed_mid_generation_loses_nothing(tmp_path, local_executor, dask_client):
    plan = _plan("A", 200, chunk_size=100, seed=99)
    path = str(tmp_path / "killed.zarr")
    stop = threading.Event()
    EventStore.create(path, plan.layout)
    killer = threading.Thread(target=_kill_a_worker_when_busy, args=(dask_client, path, stop), daemon=True)
    killer.start()
    report = run_generation(plan, path, executor=local_executor, progress=False)
    stop.set()
    killer.join(timeout=30)
    assert report.chunks_run + report.chunks_skipped == 6
    dask_client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker
    reference = str(tmp_path / "clean.zarr")
    run_generation(plan, reference, executor=local_executor, progress=False)
    got, want = EventStore(path).dataset("A"), EventStore(reference).dataset("A")
    assert EventStore(path).done_chunks("A", verify=True).all()
    for name in ("truth_p4", "truth_vertex", "features", "features_smeared", "cutflow", "pythia_seed"):
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)


def test_truncated_chunk_file_is_regenerated(tmp_path, local_executor):
    plan = _plan("H", 50, chunk_size=50, seed=5)
    path = str(tmp_path / "s.zarr")
    run_generation(plan, path, executor=local_executor, progress=False)
    before = EventStore(path).dataset("H")["features"].values.copy()
    chunk_dir = os.path.join(path, "H", "features", "c", "1")
    victim = os.path.join(chunk_dir, os.listdir(chunk_dir)[0])
    with open(victim, "r+b") as f:  # a write cut short by a node failure
        f.truncate(os.path.getsize(victim) // 2)
    assert EventStore(path).done_chunks("H", verify=True).tolist() == [True, False, True]
    report = run_generation(plan, path, executor=local_executor, progress=False)
    assert (report.chunks_run, report.chunks_skipped) == (1, 2)
    np.testing.assert_array_equal(EventStore(path).dataset("H")["features"].values, before)


def test_disk_too_small_is_refused_before_any_work(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from hpcmix.orchestrate.pipeline import InsufficientDiskError, plan_study, run_study
    from hpcmix.study import load_study

    job_file = tmp_path / "job.yaml"
    job_file.write_text(f"""
name: big
output: {tmp_path / 'out'}
generate: {{events: {{train: 1000000, template: 1000000, test: 1000000}}}}
toys: {{alpha: [0.5], n_events: [100], n_toys: 10}}
""")
    job = load_study(job_file)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**10, 10**10 - 10**8, 10**8))
    with pytest.raises(InsufficientDiskError, match=r"needs about 3.6 GB .* has 0.1 GB free"):
        run_study(job, site="nowhere")  # refused before the site is even looked up
    assert not os.path.exists(plan_study(job).events)


# -- SLURM: a cancelled worker job, and workers reaching their walltime lifetime -----------------

def _reference_store(tmp_path, plan, executor):
    path = str(tmp_path / "reference.zarr")
    run_generation(plan, path, executor=executor, progress=False)
    return EventStore(path)


def _assert_same_store(a: EventStore, b: EventStore, sample: str):
    for name in ("truth_p4", "features", "features_smeared", "cutflow", "pythia_seed"):
        np.testing.assert_array_equal(a.dataset(sample)[name].values, b.dataset(sample)[name].values, err_msg=name)


@pytest.mark.slurm
def test_scancel_of_a_worker_job_mid_generation_is_survived(tmp_path, slurm_cluster, local_executor):
    import subprocess

    from hpcmix.orchestrate.executor import OnPools
    from hpcmix.orchestrate.pools import make_clusters

    plan = _plan("A", 800, chunk_size=200, seed=17)
    path = str(tmp_path / "s.zarr")
    EventStore.create(path, plan.layout)
    with make_clusters("ci-slurm", gpu=False, cpu={"minimum_jobs": 1, "maximum_jobs": 1}) as pools:
        cancelled = []

        def cancel_when_busy():
            while EventStore(path).done_chunks("A").sum() < 2:
                time.sleep(0.1)
            job = pools.cpu.job_ids[-1]
            subprocess.run(["scancel", job], check=True, timeout=30)
            cancelled.append(job)

        t = threading.Thread(target=cancel_when_busy, daemon=True)
        t.start()
        report = run_generation(plan, path, executor=OnPools(pools), progress=False)
        t.join(timeout=60)
    assert cancelled, "the worker job was not cancelled"
    assert len(report.slurm_jobs) >= 2, f"the pool did not replace the cancelled job: {report.slurm_jobs}"
    assert EventStore(path).done_chunks("A", verify=True).all()
    _assert_same_store(EventStore(path), _reference_store(tmp_path, plan, local_executor), "A")


@pytest.mark.slurm
def test_workers_reaching_their_lifetime_hand_over_without_losing_tasks(tmp_path, slurm_cluster, local_executor):
    from collections import Counter

    import dask
    from distributed import get_task_stream

    from hpcmix.orchestrate.executor import OnPools
    from hpcmix.orchestrate.pools import make_clusters

    plan = _plan("H", 2000, chunk_size=100, seed=23)
    path = str(tmp_path / "s.zarr")
    # workers retire after ~30 s (dask-jobqueue --lifetime), well before the walltime; adapt replaces
    # them. A task still running at retirement is rerun elsewhere and counts as a failure, so the
    # lifetime must be long against one task (here ~1 s; on a real site hours against minutes).
    cpu = {"lifetime": "30s", "lifetime_stagger": "2s", "walltime": "00:10:00", "minimum_jobs": 1, "maximum_jobs": 1}
    with dask.config.set({"distributed.scheduler.allowed-failures": 10}), \
            make_clusters("ci-slurm", gpu=False, cpu=cpu) as pools, get_task_stream(pools.cpu.client) as stream:
        report = run_generation(plan, path, executor=OnPools(pools), progress=False)
    assert len(report.slurm_jobs) >= 2, f"no handover happened: {report.slurm_jobs}"
    # a finished chunk is not run again when the worker holding its result retires
    runs = Counter(t["key"] for t in stream.data)
    assert len(runs) == plan.layout.n_chunks and max(runs.values()) == 1, runs.most_common(3)
    assert EventStore(path).done_chunks("H", verify=True).all()
    _assert_same_store(EventStore(path), _reference_store(tmp_path, plan, local_executor), "H")
