"""The GPU check before training: what SLURM allocated against what the Keras backend sees.

The branches on a real SLURM GPU job (the CI's stand-in) are in test_cluster.py; here the job's
environment is given directly.
"""

from __future__ import annotations

import pytest

from hpcmix.train.device import Device, GPUNotVisibleError, GPUNotVisibleWarning, allocated_gpus, check_gpu

CPU = Device(label="CPU", backend="tensorflow")
GPU = Device(label="GPU:0 (NVIDIA H200)", backend="tensorflow")
JOB = {"SLURM_JOB_ID": "42", "SLURM_JOB_GPUS": "3", "CUDA_VISIBLE_DEVICES": "0", "LD_LIBRARY_PATH": "/opt/cuda/lib64"}


def test_what_slurm_allocated():
    assert allocated_gpus(JOB) == "3"
    assert allocated_gpus({"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "0,1"}) == "0,1"
    assert allocated_gpus({"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "NoDevFiles"}) is None
    assert allocated_gpus({"SLURM_JOB_ID": "42"}) is None
    # outside SLURM CUDA_VISIBLE_DEVICES is the user's own choice, not an allocation
    assert allocated_gpus({"CUDA_VISIBLE_DEVICES": "0"}) is None


def test_a_gpu_job_that_sees_no_gpu_stops_with_the_install_to_fix():
    with pytest.raises(GPUNotVisibleError) as ei:
        check_gpu(CPU, env=JOB)
    msg = str(ei.value)
    assert "SLURM gave this job GPU 3" in msg and "sees no GPU" in msg
    assert "pip uninstall -y tensorflow-cpu && pip install 'tensorflow[and-cuda]>=2.16'" in msg
    assert "/opt/cuda/lib64" in msg and "gpu_check: warn" in msg


def test_warn_trains_on_and_records_the_mismatch():
    with pytest.warns(GPUNotVisibleWarning, match="SLURM gave this job GPU 3"):
        report = check_gpu(CPU, env={**JOB, "HPCMIX_GPU_CHECK": "warn"})
    assert report == {"slurm_job_gpus": "3", "cuda_visible_devices": "0", "allocated": "3", "sees": "CPU",
                      "backend": "tensorflow", "policy": "warn", "mismatch": True}
    assert check_gpu(CPU, env=JOB, policy="off")["mismatch"] is True   # off: recorded, no word


def test_a_gpu_seen_or_none_allocated_passes():
    assert check_gpu(GPU, env=JOB)["mismatch"] is False
    assert check_gpu(CPU, env={"SLURM_JOB_ID": "42"})["mismatch"] is False
    assert check_gpu(CPU, env={})["allocated"] is None


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="give one of error, warn, off"):
        check_gpu(CPU, env={**JOB, "HPCMIX_GPU_CHECK": "maybe"})


def test_the_site_setting_reaches_the_job_script(tmp_path):
    from hpcmix.orchestrate import make_clusters

    with make_clusters("ci-slurm", cpu={"minimum_jobs": 0, "log_directory": str(tmp_path)},
                       gpu={"minimum_jobs": 0, "log_directory": str(tmp_path), "gpu_check": "error"},
                       wait=False, preflight=False) as pools:
        assert "export HPCMIX_GPU_CHECK=error" in pools.gpu.cluster.job_script()
        assert "export HPCMIX_GPU_CHECK=error" in pools.cpu.cluster.job_script()   # the default
    with make_clusters("ci-slurm", cpu={"minimum_jobs": 0, "log_directory": str(tmp_path)},
                       gpu={"minimum_jobs": 0, "log_directory": str(tmp_path)}, wait=False, preflight=False) as pools:
        assert "export HPCMIX_GPU_CHECK=warn" in pools.gpu.cluster.job_script()    # ci-slurm's stand-in GPU
