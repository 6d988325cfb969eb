"""The classifier trained from a real (small) event store separates H from A."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from hpcmix.orchestrate.stages import train as train_stage
from hpcmix.physics.features import network_inputs
from hpcmix.train import ClassifierSettings


@pytest.mark.pythia
@pytest.mark.tensorflow
def test_classifier_on_small_real_store_beats_chance(small_study, small_store, tmp_path):
    """1,000 events per sample are too few for the 25 inputs; the high-level phi* and Upsilon set learns."""
    out = str(tmp_path / "model")
    settings = ClassifierSettings(hidden_layers=[32, 16], learning_rate=0.01, batch_size=128, max_epochs=40,
                                  early_stopping_patience=8, lr_patience=4, dropout=0.1, seed=7)
    m = train_stage.model(small_study, label="none", smearing="none", inputs=network_inputs("phi_star_upsilon"),
                          settings=settings, events="small-store", folder=out)
    assert m.components == ("H", "A") and m.folder == out
    record = train_stage.train_task(m, small_store)
    assert record["stage"] == "train" and record["address"] == m.address
    info = record["info"]
    assert info["roc_auc_sample"] == "test" and info["n_test"] == 1000
    assert info["roc_auc"] > 0.55
    assert info["device"] == "CPU" or info["device"].startswith("GPU")
    for name in ("classifier.keras", "standardiser.json", "history.json", "metrics.json", "done.json"):
        assert os.path.exists(os.path.join(out, name)), name
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f)["roc_auc"] == pytest.approx(info["roc_auc"])
    with open(os.path.join(out, "done.json")) as f:
        assert json.load(f)["info"]["roc_auc"] == pytest.approx(info["roc_auc"])


def test_network_inputs_a_component_lacks_are_named():
    from hpcmix.orchestrate.stages.train import labelled_features

    class Store:
        def features(self, sample, split, *, smeared, names):
            x = np.ones((4, len(names)), dtype=np.float32)
            if sample == "ttbar":
                x[1, 1] = np.nan
            return x

    x, y = labelled_features(Store(), ("H", "A"), "train", smeared=False, names=["m_vis", "o_star"])
    assert x.shape == (8, 2) and y.tolist() == [0] * 4 + [1] * 4
    with pytest.raises(ValueError, match=r"component 'ttbar' \(train split, unsmeared.*\['o_star'\]"):
        labelled_features(Store(), ("H", "ttbar"), "train", smeared=False, names=["m_vis", "o_star"])
