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
from dataclasses import dataclass
from typing import ContextManager

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
