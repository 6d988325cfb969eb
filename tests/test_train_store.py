"""The classifier trained from a real (small) event store separates H from A."""

from __future__ import annotations

import json
import os

import pytest

from hpcmix.orchestrate import stages
from hpcmix.physics.features import network_inputs


@pytest.mark.pythia
@pytest.mark.tensorflow
def test_classifier_on_small_real_store_beats_chance(small_store, tmp_path):
    """1,000 events per sample are too few for the 25 inputs; the high-level phi* and Upsilon set learns."""
    out = str(tmp_path / "model")
    settings = {"hidden_layers": [32, 16], "learning_rate": 0.01, "batch_size": 128, "max_epochs": 40,
                "early_stopping_patience": 8, "lr_patience": 4, "dropout": 0.1}
    info = stages.train_task(small_store, ("H", "A"), False, network_inputs("phi_star_upsilon"), settings, 7, out)
    assert info["roc_auc_sample"] == "test" and info["n_test"] == 1000
    assert info["roc_auc"] > 0.55
    assert info["device"] == "CPU" or info["device"].startswith("GPU")
    for name in ("classifier.keras", "standardiser.json", "history.json", "metrics.json", "done.json"):
        assert os.path.exists(os.path.join(out, name)), name
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f)["roc_auc"] == pytest.approx(info["roc_auc"])
