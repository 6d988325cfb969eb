"""The likelihood-ratio losses of ``hpcmix.train.losses`` in ``keras.ops`` (any Keras backend)."""

from __future__ import annotations

import keras
from keras import ops

from .losses import get_loss

_PAIRS = {
    "exponential": (lambda u: ops.exp(u / 2.0), lambda u: ops.exp(-u / 2.0)),
    "kl": (ops.exp, lambda u: -u),
    "cross_entropy": (ops.softplus, lambda u: ops.softplus(-u)),
    "square": (lambda u: ops.square(u) / 2.0, lambda u: -u),
}


@keras.saving.register_keras_serializable(package="hpcmix")
class RatioLoss(keras.losses.Loss):
    """Per event (1 - y) phi(u) + y psi(u), u the network's single output; Keras applies the sample weights."""

    def __init__(self, pair: str = "cross_entropy", name: str | None = None, **kwargs):
        get_loss(pair)   # a ValueError naming the pairs for a wrong name
        super().__init__(name=name or f"ratio_{pair}", **kwargs)
        self.pair = pair
        self._phi, self._psi = _PAIRS[pair]

    def call(self, y_true, y_pred):
        u = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
        y = ops.reshape(ops.cast(y_true, "float32"), (-1,))
        return (1.0 - y) * self._phi(u) + y * self._psi(u)

    def get_config(self):
        return {**super().get_config(), "pair": self.pair}
