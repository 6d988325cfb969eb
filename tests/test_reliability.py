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


def test_worker_killed_mid_generation_loses_nothing(tmp_path, dask_client):
    plan = plan_generation(samples=("A",), splits={"test": 600}, chunk_size=100, profile="fast", seed=99)
    path = str(tmp_path / "killed.zarr")
    stop = threading.Event()
    EventStore.create(path, plan.layout)
    killer = threading.Thread(target=_kill_a_worker_when_busy, args=(dask_client, path, stop), daemon=True)
    killer.start()
    report = run_generation(plan, path, client=dask_client, progress=False)
    stop.set()
    killer.join(timeout=30)
    assert report.chunks_run + report.chunks_skipped == 6
    dask_client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker
    reference = str(tmp_path / "clean.zarr")
    run_generation(plan, reference, client=dask_client, progress=False)
    got, want = EventStore(path).dataset("A"), EventStore(reference).dataset("A")
    assert EventStore(path).done_chunks("A", verify=True).all()
    for name in ("truth_p4", "truth_vertex", "features", "features_smeared", "cutflow", "pythia_seed"):
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)


def test_truncated_chunk_file_is_regenerated(tmp_path, dask_client):
    plan = plan_generation(samples=("H",), splits={"test": 100}, chunk_size=50, profile="fast", seed=5)
    path = str(tmp_path / "s.zarr")
    run_generation(plan, path, client=dask_client, progress=False)
    before = EventStore(path).dataset("H")["features"].values.copy()
    chunk_dir = os.path.join(path, "H", "features", "c", "1")
    victim = os.path.join(chunk_dir, os.listdir(chunk_dir)[0])
    with open(victim, "r+b") as f:  # a write cut short by a node failure
        f.truncate(os.path.getsize(victim) // 2)
    assert EventStore(path).done_chunks("H", verify=True).tolist() == [True, False]
    report = run_generation(plan, path, client=dask_client, progress=False)
    assert (report.chunks_run, report.chunks_skipped) == (1, 1)
    np.testing.assert_array_equal(EventStore(path).dataset("H")["features"].values, before)


def test_disk_too_small_is_refused_before_any_work(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from hpcmix.orchestrate.jobs import load_job
    from hpcmix.orchestrate.pipeline import InsufficientDiskError, plan_study, run_study

    job_file = tmp_path / "job.yaml"
    job_file.write_text(f"""
name: big
output: {tmp_path / 'out'}
generate: {{events: {{train: 1000000, template: 1000000, test: 1000000}}}}
toys: {{alpha: [0.5], n_events: [100], n_toys: 10}}
""")
    job = load_job(job_file)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**10, 10**10 - 10**8, 10**8))
    with pytest.raises(InsufficientDiskError, match=r"needs about 3.6 GB .* has 0.1 GB free"):
        run_study(job, site="local")
    assert not os.path.exists(plan_study(job).events)
