"""Hyper-parameters of the H-vs-A classifier (paper section 3.3).

Every field has the paper's value as its default (the same values as the
package's ``hpcmix.yaml``, section ``classifier``); where the paper is silent
the reference code's value is used and the docstring says so.  A study's
settings are resolved once by :func:`hpcmix.study.resolve_study`.

This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

#: activations that ``build_model`` knows; ``leaky_relu`` uses ``leaky_relu_slope``
ACTIVATIONS = ("leaky_relu", "relu", "elu", "selu", "gelu", "silu", "tanh")
#: Keras dtype policies of the hidden layers: float32, or float16 / bfloat16 compute on float32 weights
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
#: how the learning rate follows the batch size: lr x (batch_size / reference_batch_size) ** power
LR_SCALINGS = {"none": 0.0, "linear": 1.0, "sqrt": 0.5}
#: settings added for GPU throughput after networks were trained without them: in an address only
#: when they differ from these values, so those networks keep their addresses
_ADDED_DEFAULTS = {"precision": "float32", "lr_scaling": "none", "reference_batch_size": 264,
                   "steps_per_execution": 1}


@dataclass(frozen=True)
class ClassifierSettings:
    """The classifier's architecture and training schedule.

    Defaults are the paper's (26 -> 500 -> 1000 -> 100 -> softmax(2), leaky
    ReLU, batch normalisation between all layers, dropout 0.375, He-normal,
    Adam at 0.03, 20 % validation, lr / 10 after 10 epochs without
    improvement, stop at 100 epochs or 15 without improvement).

    Not in the paper, taken from the reference code (``smaeland/ML-2HDM``):
    ``leaky_relu_slope`` 0.3 (Keras' default there), ``output_batch_norm``
    (a BatchNorm between the output Dense and the softmax), ``batch_size``
    264 and ``lr_min`` 1e-7.  ``seed`` ``None`` means the study seed
    (the study's resolution fills it in).

    For GPUs (not in the paper): ``precision`` (mixed float16 with loss scaling, or mixed
    bfloat16; the softmax and the ratio output stay float32); ``lr_scaling``, which scales
    ``learning_rate`` (meant for ``reference_batch_size``) to a larger ``batch_size``: linearly
    (Goyal et al. 2017) or by the square root (the usual rule for Adam); and
    ``steps_per_execution``, batches per compiled call, so that Python does not dispatch every
    batch (the same updates in the same order).
    """

    hidden_layers: tuple[int, ...] = (500, 1000, 100)
    activation: str = "leaky_relu"
    leaky_relu_slope: float = 0.3
    batch_norm: bool = True
    output_batch_norm: bool = True
    dropout: float = 0.375
    initializer: str = "he_normal"
    learning_rate: float = 0.03
    batch_size: int = 264
    validation_fraction: float = 0.2
    lr_patience: int = 10
    lr_factor: float = 0.1
    lr_min: float = 1e-7
    early_stopping_patience: int = 15
    max_epochs: int = 100
    predict_batch_size: int = 65536
    precision: str = "float32"
    lr_scaling: str = "none"
    reference_batch_size: int = 264
    steps_per_execution: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        # normalise (frozen: go through object.__setattr__)
        layers = self.hidden_layers
        if isinstance(layers, (int, float)) or isinstance(layers, str):
            raise ValueError(f"hidden_layers must be a sequence of layer sizes, got {layers!r}")
        layers = tuple(layers)
        for n in layers:
            if isinstance(n, bool) or not (
                isinstance(n, numbers.Integral) or isinstance(n, float) and n.is_integer()
            ):
                raise ValueError(f"hidden_layers must hold integers, got {layers!r}")
        layers = tuple(int(n) for n in layers)
        object.__setattr__(self, "hidden_layers", layers)

        if not layers:
            raise ValueError("hidden_layers must hold at least one layer")
        if any(n <= 0 for n in layers):
            raise ValueError(f"hidden_layers must be positive, got {layers!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        _check_real("leaky_relu_slope", self.leaky_relu_slope)
        if not 0.0 <= self.leaky_relu_slope < 1.0:
            raise ValueError(f"leaky_relu_slope must be in [0, 1), got {self.leaky_relu_slope!r}")
        for name in ("batch_norm", "output_batch_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        _check_real("dropout", self.dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.initializer, str) or not self.initializer:
            raise ValueError(f"initializer must be a Keras initializer name, got {self.initializer!r}")
        _check_real("learning_rate", self.learning_rate)
        if not self.learning_rate > 0.0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
        _check_real("validation_fraction", self.validation_fraction)
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}"
            )
        _check_real("lr_factor", self.lr_factor)
        if not 0.0 < self.lr_factor < 1.0:
            raise ValueError(f"lr_factor must be in (0, 1), got {self.lr_factor!r}")
        _check_real("lr_min", self.lr_min)
        if not 0.0 <= self.lr_min:
            raise ValueError(f"lr_min must be >= 0, got {self.lr_min!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.lr_scaling not in LR_SCALINGS:
            raise ValueError(f"lr_scaling must be one of {tuple(LR_SCALINGS)}, got {self.lr_scaling!r}")
        for name in ("batch_size", "max_epochs", "predict_batch_size", "reference_batch_size",
                     "steps_per_execution"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("lr_patience", "early_stopping_patience"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.seed is not None:
            _check_int("seed", self.seed, minimum=0)
        # plain Python numbers (numpy scalars from callers would not serialise)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type == "float":
                object.__setattr__(self, f.name, float(v))
            elif isinstance(v, numbers.Integral) and not isinstance(v, bool):
                object.__setattr__(self, f.name, int(v))

    @property
    def effective_learning_rate(self) -> float:
        """Adam's initial learning rate: ``learning_rate`` scaled to ``batch_size`` by ``lr_scaling``."""
        return self.learning_rate * (self.batch_size / self.reference_batch_size) ** LR_SCALINGS[self.lr_scaling]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples as lists)."""
        d = dataclasses.asdict(self)
        d["hidden_layers"] = list(self.hidden_layers)
        return d

    def address_dict(self) -> dict[str, Any]:
        """``to_dict`` as a stage address covers it: the GPU-throughput settings only where set (and
        ``reference_batch_size`` only where ``lr_scaling`` uses it). ``steps_per_execution`` is kept
        where set, though the updates are the same: a backend may fuse the batches' arithmetic differently."""
        d = {k: v for k, v in self.to_dict().items() if k not in _ADDED_DEFAULTS or v != _ADDED_DEFAULTS[k]}
        if self.lr_scaling == "none":
            d.pop("reference_batch_size", None)
        return d

    def replace(self, **changes: Any) -> "ClassifierSettings":
        return dataclasses.replace(self, **changes)


def _check_real(name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
    ):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
