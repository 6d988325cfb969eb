"""The H-vs-A classifier (paper section 3.3): settings, standardisation, model, training.

Importing ``hpcmix.train`` is cheap: the Keras-dependent names (``build_model``,
``train_classifier``, ``predict``, ...) are imported on first use.
"""

from __future__ import annotations

import importlib

from .losses import LOSSES, get_loss
from .metrics import roc_auc
from .settings import ClassifierSettings
from .split import split_indices
from .standardise import Standardiser

_LAZY = {
    "build_model": "model",
    "Classifier": "fit",
    "TrainingResult": "fit",
    "load_classifier": "fit",
    "load_ratio_network": "fit",
    "RatioNetwork": "fit",
    "build_ratio_model": "model",
    "make_callbacks": "fit",
    "predict": "fit",
    "train_classifier": "fit",
    "detect_device": "device",
}


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LOSSES", "ClassifierSettings", "get_loss", "Standardiser", "roc_auc", "split_indices", *_LAZY]
