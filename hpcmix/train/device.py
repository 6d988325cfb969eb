"""Which device Keras trains on, and a context that pins it there.

TensorFlow (the project's backend): ``tf.config.list_physical_devices("GPU")``;
the first visible GPU is used ("GPU:0 (<name>)"), else "CPU".  Set
``CUDA_VISIBLE_DEVICES=`` (empty) to force the CPU.  The JAX and torch
backends of Keras 3 are recognised too (same device string), so the model code
can be checked on a machine that has Keras but no TensorFlow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ContextManager

from ..errors import HpcmixError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Device:
    label: str  # "GPU:0 (NVIDIA H100 80GB HBM3)" or "CPU"
    backend: str  # keras backend name
    tf_name: str | None = None  # "/GPU:0" / "/CPU:0" for tf.device, else None

    @property
    def is_gpu(self) -> bool:
        return self.label.startswith("GPU")

    def scope(self) -> ContextManager:
        """Context placing new ops on this device (TensorFlow); a no-op for other backends."""
        if self.tf_name is not None:
            import tensorflow as tf

            return tf.device(self.tf_name)
        return contextlib.nullcontext()


def detect_device() -> Device:
    """The device training will use: the first visible GPU, else the CPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            try:
                name = tf.config.experimental.get_device_details(gpus[0]).get("device_name")
            except Exception:  # details are best-effort; the device is still usable
                name = None
            label = f"GPU:0 ({name or gpus[0].name})"
            return Device(label=label, backend=backend, tf_name="/GPU:0")
        return Device(label="CPU", backend=backend, tf_name="/CPU:0")
    if backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if gpus:
            return Device(label=f"GPU:0 ({gpus[0].device_kind})", backend=backend)
        return Device(label="CPU", backend=backend)
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return Device(label=f"GPU:0 ({torch.cuda.get_device_name(0)})", backend=backend)
        return Device(label="CPU", backend=backend)
    return Device(label="CPU", backend=backend)


# -- the GPU check: a job SLURM gave a GPU must not train on the CPU without a word --------------
#: the worker's environment variable the site's ``gpu_check`` setting reaches it by (orchestrate/pools.py)
GPU_CHECK_ENV = "HPCMIX_GPU_CHECK"
#: error: stop; warn: say so and train on the CPU (stand-in GPUs, as in CI); off: no check
GPU_CHECKS = ("error", "warn", "off")
GPU_INSTALL = "pip uninstall -y tensorflow-cpu && pip install 'tensorflow[and-cuda]>=2.16'"


class GPUNotVisibleError(HpcmixError, RuntimeError):
    """SLURM gave the job a GPU and the Keras backend sees none: training would run on the CPU."""


class GPUNotVisibleWarning(UserWarning):
    """As GPUNotVisibleError, on a site whose gpu_check is 'warn' (a stand-in GPU)."""


def allocated_gpus(env: Mapping[str, str] | None = None) -> str | None:
    """The GPUs SLURM gave this job (``SLURM_JOB_GPUS``, ``SLURM_STEP_GPUS``, else the
    ``CUDA_VISIBLE_DEVICES`` SLURM sets for a GPU gres), or None outside a SLURM job or with none."""
    env = os.environ if env is None else env
    if not env.get("SLURM_JOB_ID"):
        return None   # not a SLURM job: CUDA_VISIBLE_DEVICES is the user's own choice (''= force the CPU)
    for key in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES"):
        value = env.get(key, "").strip()
        if value and value != "NoDevFiles":
            return value
    return None


def check_gpu(device: Device, *, policy: str | None = None, env: Mapping[str, str] | None = None) -> dict:
    """What SLURM allocated and what the backend sees, for the training record; when SLURM gave a GPU
    that the backend cannot see, raise (``policy`` 'error', the default) or warn ('warn').

    ``policy`` None: the worker's ``$HPCMIX_GPU_CHECK`` (the site pool's ``gpu_check``), else 'error'.
    """
    env = os.environ if env is None else env
    policy = policy or env.get(GPU_CHECK_ENV) or "error"
    if policy not in GPU_CHECKS:
        raise ValueError(f"gpu_check {policy!r}: give one of {', '.join(GPU_CHECKS)}")
    allocated = allocated_gpus(env)
    report = {"slurm_job_gpus": env.get("SLURM_JOB_GPUS"), "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"),
              "allocated": allocated, "sees": device.label, "backend": device.backend, "policy": policy,
              "mismatch": bool(allocated) and not device.is_gpu}
    if report["mismatch"] and policy != "off":
        lib = env.get("LD_LIBRARY_PATH") or "(empty)"
        message = (
            f"SLURM gave this job GPU {allocated} (SLURM_JOB_GPUS={report['slurm_job_gpus']!r}, CUDA_VISIBLE_DEVICES="
            f"{report['cuda_visible_devices']!r}), but Keras's {device.backend} backend sees no GPU, so training would "
            f"run on the CPU (for the paper's study hours instead of minutes). Install a TensorFlow that sees the GPU "
            f"in the workers' environment: {GPU_INSTALL} (docs/site-config.md, 'The GPU pool'), then check on a GPU "
            "node: python -c \"import tensorflow as tf; print(tf.config.list_physical_devices('GPU'))\". If that "
            f"prints [], the CUDA libraries are not found: check LD_LIBRARY_PATH (here {lib}) and the "
            "job_script_prologue's 'module load cuda'. For a stand-in GPU set gpu_check: warn in the site's gpu pool.")
        if policy == "error":
            raise GPUNotVisibleError(message)
        warnings.warn(message, GPUNotVisibleWarning, stacklevel=2)
        log.warning(message)
    return report


def check_training_device(policy: str | None = None) -> dict:
    """``check_gpu`` of the device this process would train on (submit it to a pool to ask a worker)."""
    return check_gpu(detect_device(), policy=policy)
