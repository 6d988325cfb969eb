"""hpcmix.train: settings, standardiser, ROC AUC, the paper's network, training."""

from __future__ import annotations

import itertools
import json
import logging
import os

import dask.config
import numpy as np
import pytest

from conftest import study_with

from hpcmix.config import package_defaults
from hpcmix.schema import ConfigError
from hpcmix.study import resolve_study
from hpcmix.train import ClassifierSettings, Standardiser, roc_auc

# ---------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------


def test_settings_defaults_are_the_papers():
    s = ClassifierSettings()
    assert s.hidden_layers == (500, 1000, 100)
    assert s.activation == "leaky_relu"
    assert s.batch_norm is True
    assert s.dropout == 0.375
    assert s.initializer == "he_normal"
    assert s.learning_rate == 0.03
    assert s.validation_fraction == 0.2
    assert (s.lr_patience, s.lr_factor) == (10, 0.1)
    assert s.early_stopping_patience == 15
    assert s.max_epochs == 100
    assert s.seed is None  # the study fills in its seed
    # the dataclass defaults agree with the YAML defaults (classifier:)
    yaml_classifier = package_defaults()["classifier"]
    assert ClassifierSettings(**yaml_classifier) == s
    # the resolved study's classifier: the same, seeded with the study seed (classifier.seed: null)
    study = study_with()
    assert study.classifier.seed == study.seed == package_defaults()["seed"]
    assert study.classifier == s.replace(seed=study.seed)
    assert study_with(seed=77).classifier.seed == 77
    assert study_with(seed=77, classifier={"seed": 5}).classifier.seed == 5


def test_settings_from_study_layers_and_dask_config():
    with dask.config.set({"hpcmix.classifier.learning_rate": 0.001, "hpcmix.classifier.hidden_layers": [8, 4]}):
        s = resolve_study().classifier
        assert s.learning_rate == 0.001 and s.hidden_layers == (8, 4)
        # a later layer (job file / command line) wins over dask config, key by key
        s = study_with(classifier={"learning_rate": 0.5, "seed": 3}).classifier
        assert s.learning_rate == 0.5 and s.seed == 3 and s.hidden_layers == (8, 4)
    with dask.config.set({"hpcmix.classifier.max_epochs": 3}):
        assert resolve_study().classifier.max_epochs == 3
    assert resolve_study().classifier.max_epochs == 100
    with pytest.raises(ConfigError, match=r"unknown field 'classifier\.lerning_rate'"):
        study_with(classifier={"lerning_rate": 0.1})
    with pytest.raises(ConfigError, match="dropout"):
        study_with(classifier={"dropout": 1.0})
    with pytest.raises(TypeError, match="lerning_rate"):
        ClassifierSettings(lerning_rate=0.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"hidden_layers": (500, 0, 100)}, "hidden_layers must be positive"),
        ({"hidden_layers": (500, -3)}, "hidden_layers must be positive"),
        ({"hidden_layers": ()}, "at least one layer"),
        ({"hidden_layers": (10.5,)}, "integers"),
        ({"hidden_layers": 500}, "sequence"),
        ({"validation_fraction": 0.0}, "validation_fraction"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"lr_factor": 1.0}, "lr_factor"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_epochs": 2.5}, "max_epochs"),
        ({"lr_patience": -1}, "lr_patience"),
        ({"early_stopping_patience": -1}, "early_stopping_patience"),
        ({"activation": "sigmoidish"}, "activation"),
        ({"leaky_relu_slope": 1.5}, "leaky_relu_slope"),
        ({"batch_norm": "yes"}, "batch_norm"),
        ({"seed": -1}, "seed"),
        ({"precision": "float64"}, "precision must be one of"),
        ({"lr_scaling": "cubic"}, "lr_scaling must be one of"),
        ({"reference_batch_size": 0}, "reference_batch_size"),
        ({"steps_per_execution": 0}, "steps_per_execution"),
    ],
)
def test_settings_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassifierSettings(**kwargs)


def test_learning_rate_follows_the_batch_size_as_asked():
    s = ClassifierSettings(batch_size=264 * 16)
    assert s.effective_learning_rate == 0.03                    # none: the paper's rate at any batch size
    assert s.replace(lr_scaling="linear").effective_learning_rate == pytest.approx(0.03 * 16)
    assert s.replace(lr_scaling="sqrt").effective_learning_rate == pytest.approx(0.03 * 4)
    assert s.replace(lr_scaling="sqrt", reference_batch_size=1056).effective_learning_rate == pytest.approx(0.06)


def test_throughput_settings_enter_addresses_only_when_set():
    """Networks trained before precision / lr_scaling existed keep their addresses; setting one moves it."""
    from hpcmix.orchestrate.stages import train as train_stage

    s = ClassifierSettings(seed=1)
    added = ("precision", "lr_scaling", "reference_batch_size", "steps_per_execution")
    assert set(added) <= set(s.to_dict()) and not set(added) & set(s.address_dict())
    assert s.address_dict() == {k: v for k, v in s.to_dict().items() if k not in added}
    study = study_with()
    kw = dict(label="none", smearing="none", inputs=("a", "b"), events="e" * 12, root="/r")
    base = train_stage.model(study, settings=s, **kw).address
    assert train_stage.model(study, settings=s.replace(precision="float32"), **kw).address == base
    moved = {train_stage.model(study, settings=s.replace(**c), **kw).address
             for c in ({"precision": "mixed_bfloat16"}, {"lr_scaling": "sqrt"},
                       {"lr_scaling": "sqrt", "reference_batch_size": 128}, {"steps_per_execution": 16})}
    assert len(moved) == 4 and base not in moved
    # the reference batch size means nothing without lr_scaling: no new address, no retraining
    assert train_stage.model(study, settings=s.replace(reference_batch_size=128), **kw).address == base


def test_settings_normalise_types():
    s = ClassifierSettings(hidden_layers=[np.int64(4), 2.0], batch_size=np.int32(16), dropout=0)
    assert s.hidden_layers == (4, 2) and type(s.batch_size) is int and type(s.dropout) is float
    json.dumps(s.to_dict())


# ---------------------------------------------------------------------------
# standardiser
# ---------------------------------------------------------------------------


def test_standardiser_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(5000, 4)) * [1.0, 10.0, 0.1, 3.0] + [0.0, 100.0, -5.0, 2.0]).astype(np.float32)
    names = ["a", "b", "c", "d"]
    st = Standardiser.fit(x, names)
    np.testing.assert_allclose(st.mean, x.astype(np.float64).mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(st.std, x.astype(np.float64).std(axis=0), rtol=1e-10)
    z = st.transform(x)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=1e-4)
    np.testing.assert_allclose(st.inverse_transform(z), x, rtol=1e-4, atol=1e-3)

    path = st.save(tmp_path / "std.json")
    back = Standardiser.load(path)
    assert back.names == st.names
    np.testing.assert_array_equal(back.mean, st.mean)  # exact: JSON keeps float64 digits
    np.testing.assert_array_equal(back.std, st.std)
    np.testing.assert_array_equal(back.transform(x), z)
    with pytest.raises(ValueError, match="feature names differ"):
        back.check_names(["a", "b", "d", "c"])
    with pytest.raises(ValueError, match="features"):
        st.transform(x[:, :3])


def test_standardiser_chunked_fit_matches_numpy(monkeypatch):
    import hpcmix.train.standardise as mod

    monkeypatch.setattr(mod, "CHUNK_ROWS", 37)  # many uneven chunks
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(1000, 3)) + 1e3).astype(np.float32)
    st = Standardiser.fit(x, ["a", "b", "c"])
    np.testing.assert_allclose(st.mean, x.astype(np.float64).mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(st.std, x.astype(np.float64).std(axis=0), rtol=1e-9)
    np.testing.assert_allclose(st.transform(x), (x - st.mean) / st.std, rtol=1e-6, atol=1e-6)
    x64 = x.astype(np.float64)
    before = x64.copy()
    st.transform(x64)
    np.testing.assert_array_equal(x64, before)  # the input is never modified


def test_standardiser_zero_variance(caplog):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    x[:, 1] = 0.0  # a pion component that is identically zero after the rotation
    x[:, 2] = 7.5  # constant but non-zero
    with caplog.at_level(logging.INFO, logger="hpcmix.train.standardise"):
        st = Standardiser.fit(x, ["px", "py", "m"])
    assert st.constant == ("py", "m")
    assert st.std[1] == 1.0 and st.std[2] == 1.0
    assert "constant feature" in caplog.text and "py" in caplog.text
    z = st.transform(x)
    assert np.all(np.isfinite(z))
    np.testing.assert_array_equal(z[:, 1:], 0.0)
    assert Standardiser.from_dict(st.to_dict()).constant == ("py", "m")


def test_standardiser_rejects_nonfinite():
    x = np.ones((5, 2), dtype=np.float32)
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite.*b"):
        Standardiser.fit(x, ["a", "b"])


# ---------------------------------------------------------------------------
# ROC AUC
# ---------------------------------------------------------------------------


def _auc_pairwise(y, s):
    pos, neg = s[y == 1], s[y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 150
    y = rng.integers(0, 2, n)
    # rounded scores: plenty of ties, across and within classes
    s = np.round(rng.normal(size=n) + 0.7 * y, 1)
    assert roc_auc(y, s) == pytest.approx(_auc_pairwise(y, s), abs=1e-12)


def test_roc_auc_edge_cases():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="0/1"):
        roc_auc([0, 2], [0.2, 0.3])
    with pytest.raises(ValueError, match="non-finite"):
        roc_auc([0, 1], [0.2, np.nan])


# ---------------------------------------------------------------------------
# the network (Keras)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def _layers(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


@pytest.mark.tensorflow
def test_model_architecture_is_the_papers(keras):
    from hpcmix.train.model import OUTPUT_NAME, build_model

    model = build_model(25, ClassifierSettings())
    dense = _layers(model, keras.layers.Dense)
    assert [d.units for d in dense] == [500, 1000, 100, 2]
    assert model.input_shape == (None, 25) and model.output_shape == (None, 2)
    for d in dense:
        init = d.kernel_initializer
        assert isinstance(init, keras.initializers.HeNormal)
    bn = _layers(model, keras.layers.BatchNormalization)
    assert len(bn) == 4  # after each hidden Dense and before the softmax
    drop = _layers(model, keras.layers.Dropout)
    assert [d.rate for d in drop] == [0.375] * 3
    act = _layers(model, keras.layers.LeakyReLU)
    assert len(act) == 3 and all(a.negative_slope == pytest.approx(0.3) for a in act)
    assert model.get_layer(OUTPUT_NAME).get_config()["activation"] == "softmax"
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.Adam)
    assert float(keras.ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(0.03)
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)

    # ordering inside each hidden block: Dense -> BatchNorm -> LeakyReLU -> Dropout
    kinds = [type(layer).__name__ for layer in model.layers[1:]]
    assert kinds == ["Dense", "BatchNormalization", "LeakyReLU", "Dropout"] * 3 + [
        "Dense",
        "BatchNormalization",
        "Activation",
    ]
    # parameters: Dense (in*out + out) and BatchNorm (4 per unit, 2 trainable)
    sizes = [25, 500, 1000, 100, 2]
    n_dense = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    assert model.count_params() == n_dense + 4 * sum(sizes[1:])


@pytest.mark.tensorflow
def test_model_options(keras):
    from hpcmix.train.model import build_model

    s = ClassifierSettings(
        hidden_layers=(7, 5), batch_norm=False, dropout=0.0, activation="relu",
        initializer="glorot_uniform", learning_rate=1e-3, seed=1,
    )
    model = build_model(3, s)
    assert [d.units for d in _layers(model, keras.layers.Dense)] == [7, 5, 2]
    assert not _layers(model, keras.layers.BatchNormalization)
    assert not _layers(model, keras.layers.Dropout)
    with pytest.raises(ValueError, match="initializer"):
        build_model(3, s.replace(initializer="no_such_init"))
    with pytest.raises(ValueError, match="n_inputs"):
        build_model(0, s)


@pytest.mark.tensorflow
def test_callbacks_use_configured_patience(keras):
    from hpcmix.train.fit import make_callbacks

    s = ClassifierSettings(lr_patience=4, lr_factor=0.5, early_stopping_patience=6, lr_min=1e-6)
    cbs = make_callbacks(s)
    (lr,) = [c for c in cbs if isinstance(c, keras.callbacks.ReduceLROnPlateau)]
    (es,) = [c for c in cbs if isinstance(c, keras.callbacks.EarlyStopping)]
    assert (lr.monitor, lr.patience, lr.factor, lr.min_lr) == ("val_loss", 4, 0.5, 1e-6)
    assert (es.monitor, es.patience, es.restore_best_weights) == ("val_loss", 6, True)
    d = make_callbacks(ClassifierSettings())
    assert [c.patience for c in d[:2]] == [10, 15] and d[0].factor == 0.1


def test_split_is_seeded_and_disjoint():
    from hpcmix.train.fit import split_indices

    tr, va = split_indices(1000, 0.2, seed=5)
    assert len(va) == 200 and len(tr) == 800
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(1000))
    tr2, va2 = split_indices(1000, 0.2, seed=5)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    assert not np.array_equal(va, split_indices(1000, 0.2, seed=6)[1])


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _toy(n, seed, n_features=6):
    """H (0) and A (1) overlap: a mean shift of 0.6 sigma in one feature and a
    class-dependent width in another (best AUC about 0.70); one feature is
    identically zero, one is on a large scale."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int8)
    x = rng.normal(size=(n, n_features))
    x[:, 0] += 0.6 * y
    x[:, 1] *= np.where(y == 1, 1.5, 1.0)
    x[:, 2] = 0.0
    x[:, 3] = 450.0 + 40.0 * x[:, 3]
    return x.astype(np.float32), y


SMALL = dict(hidden_layers=(32, 16), batch_size=128, learning_rate=0.01, max_epochs=8, seed=11)


@pytest.mark.tensorflow
def test_training_reaches_auc_and_writes_reloadable_artefacts(tmp_path, keras):
    from hpcmix.train import load_classifier, predict, train_classifier

    x, y = _toy(4000, seed=0)
    x_test, y_test = _toy(2000, seed=1)
    names = [f"f{i}" for i in range(x.shape[1])]
    out = tmp_path / "model"
    res = train_classifier(
        x, y, feature_names=names, out_dir=out, settings=ClassifierSettings(**SMALL),
        x_test=x_test, y_test=y_test, progress=False,
    )
    assert res.roc_auc > 0.55 and res.roc_auc_sample == "test"
    assert res.roc_auc_validation > 0.55
    assert (res.n_train, res.n_val, res.n_test) == (3200, 800, 2000)
    assert res.device == "CPU" or res.device.startswith("GPU:0")
    assert 1 <= res.best_epoch <= res.epochs_run <= SMALL["max_epochs"]
    assert res.samples_per_second > 0
    for p in (res.model_path, res.standardiser_path, res.history_path, res.metrics_path):
        assert os.path.isfile(p) and os.path.dirname(p) == str(out)
    assert res.model_path.endswith(".keras")

    metrics = _read_json(res.metrics_path)
    assert metrics["roc_auc"] == pytest.approx(res.roc_auc)
    assert metrics["device"] == res.device and metrics["n_train"] == 3200
    assert metrics["constant_features"] == ["f2"]
    assert metrics["settings"]["hidden_layers"] == [32, 16]
    history = _read_json(res.history_path)
    assert len(history["loss"]) == len(history["val_loss"]) == res.epochs_run
    assert "learning_rate" in history

    # reload: identical predictions, P(A) in [0, 1], same AUC
    clf = load_classifier(out)
    p1 = clf.predict(x_test, feature_names=names)
    p2 = predict(out, x_test, batch_size=333)  # other batching, same numbers
    assert p1.shape == (2000,) and np.all((p1 >= 0) & (p1 <= 1))
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)
    assert roc_auc(y_test, p1) == pytest.approx(res.roc_auc, abs=1e-4)
    with pytest.raises(ValueError, match="feature names differ"):
        clf.predict(x_test, feature_names=names[::-1])


@pytest.mark.tensorflow
@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_saves_and_reloads(tmp_path, keras, precision):
    """Hidden layers compute in 16 bits on float32 weights, the softmax in float32; float16 scales the
    loss; the saved network reloads with its policies and predicts float32 probabilities."""
    from hpcmix.train import load_classifier, train_classifier
    from hpcmix.train.model import OUTPUT_NAME, build_model

    settings = ClassifierSettings(**{**SMALL, "precision": precision, "batch_size": 512, "lr_scaling": "sqrt"})
    model = build_model(5, settings)
    half = precision.removeprefix("mixed_")
    assert model.get_layer("dense_0").compute_dtype == half and model.get_layer("dense_0").variable_dtype == "float32"
    assert model.get_layer("batch_norm_out").compute_dtype == half
    assert model.get_layer(OUTPUT_NAME).compute_dtype == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "mixed_float16")
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(
        settings.effective_learning_rate)

    x, y = _toy(4000, seed=0)
    x_test, y_test = _toy(2000, seed=1)
    names = [f"f{i}" for i in range(x.shape[1])]
    res = train_classifier(x, y, feature_names=names, out_dir=tmp_path / "m", settings=settings,
                           x_test=x_test, y_test=y_test, progress=False)
    assert res.roc_auc > 0.55
    metrics = _read_json(res.metrics_path)
    assert metrics["settings"]["precision"] == precision
    assert metrics["effective_learning_rate"] == pytest.approx(settings.effective_learning_rate)
    clf = load_classifier(tmp_path / "m")
    assert clf.model.get_layer("dense_1").compute_dtype == half
    p = clf.predict(x_test, feature_names=names)
    assert p.dtype == np.float32 and np.all((p >= 0) & (p <= 1))
    assert roc_auc(y_test, p) == pytest.approx(res.roc_auc, abs=2e-3)


@pytest.mark.tensorflow
def test_steps_per_execution_makes_the_same_updates(tmp_path, keras):
    """Several batches per compiled call: the same losses epoch by epoch and the same network, on a ratio
    network too (the setting only takes Python's per-batch dispatch away)."""
    from hpcmix.train import train_classifier
    from hpcmix.train.model import build_ratio_model

    x, y = _toy(3000, seed=0)
    names = [f"f{i}" for i in range(x.shape[1])]
    runs = {}
    for spe in (1, 7):
        s = ClassifierSettings(**{**SMALL, "max_epochs": 3, "steps_per_execution": spe})
        runs[spe] = train_classifier(x, y, feature_names=names, out_dir=tmp_path / str(spe), settings=s,
                                     progress=False)
    h1, h7 = (_read_json(runs[k].history_path) for k in (1, 7))
    np.testing.assert_allclose(h7["loss"], h1["loss"], rtol=1e-5)
    np.testing.assert_allclose(h7["val_loss"], h1["val_loss"], rtol=1e-5)
    assert runs[7].roc_auc == pytest.approx(runs[1].roc_auc, abs=1e-5)
    ratio = build_ratio_model(6, ClassifierSettings(**{**SMALL, "steps_per_execution": 7}), loss="exponential")
    assert ratio.steps_per_execution == 7


@pytest.mark.tensorflow
def test_training_is_deterministic(tmp_path, keras):
    from hpcmix.train import train_classifier

    x, y = _toy(600, seed=4)
    s = ClassifierSettings(**{**SMALL, "max_epochs": 1})
    kw = dict(feature_names=[f"f{i}" for i in range(x.shape[1])], settings=s, progress=False)
    a = train_classifier(x, y, out_dir=tmp_path / "a", **kw)
    b = train_classifier(x, y, out_dir=tmp_path / "b", **kw)
    ha = _read_json(a.history_path)
    hb = _read_json(b.history_path)
    np.testing.assert_allclose(ha["val_loss"], hb["val_loss"], rtol=1e-5)


@pytest.mark.tensorflow
def test_early_stopping_and_lr_reduction_act(tmp_path, keras):
    """Pure-noise labels: val_loss stops improving, lr drops, training stops early."""
    from hpcmix.train import train_classifier

    rng = np.random.default_rng(9)
    x = rng.normal(size=(600, 3)).astype(np.float32)
    y = rng.integers(0, 2, 600)
    s = ClassifierSettings(
        hidden_layers=(16,), batch_size=64, learning_rate=0.05, max_epochs=40,
        lr_patience=1, lr_factor=0.5, early_stopping_patience=3, seed=2,
    )
    res = train_classifier(x, y, feature_names=["a", "b", "c"], out_dir=tmp_path, settings=s, progress=False)
    history = _read_json(res.history_path)
    assert res.epochs_run < 40
    assert res.epochs_run - res.best_epoch == 3  # stopped after 3 epochs without improvement
    assert min(history["learning_rate"]) < 0.05


@pytest.mark.tensorflow
def test_training_input_errors(tmp_path, keras):
    from hpcmix.train import train_classifier

    x, y = _toy(100, seed=0)
    names = [f"f{i}" for i in range(x.shape[1])]
    s = ClassifierSettings(**SMALL)
    with pytest.raises(ValueError, match="feature names"):
        train_classifier(x, y, feature_names=names[:-1], out_dir=tmp_path, settings=s)
    with pytest.raises(ValueError, match="labels"):
        train_classifier(x, y + 1, feature_names=names, out_dir=tmp_path, settings=s)
    with pytest.raises(ValueError, match=r"every class, 0 \(H\) and 1 \(A\)"):
        train_classifier(x, np.zeros_like(y), feature_names=names, out_dir=tmp_path, settings=s)
    with pytest.raises(ValueError, match="events"):
        train_classifier(x, y[:-1], feature_names=names, out_dir=tmp_path, settings=s)
    with pytest.raises(ValueError, match="x_test and y_test"):
        train_classifier(x, y, feature_names=names, out_dir=tmp_path, settings=s, x_test=x)
    with pytest.raises(ValueError, match="seed is None"):
        train_classifier(x, y, feature_names=names, out_dir=tmp_path, settings=s.replace(seed=None))
    with pytest.raises(TypeError, match="settings"):
        train_classifier(x, y, feature_names=names, out_dir=tmp_path)


@pytest.mark.tensorflow
def test_paper_network_trains_one_epoch(tmp_path, keras):
    """The full 25 -> 500 -> 1000 -> 100 -> 2 network, one epoch on a tiny set."""
    from hpcmix.train import train_classifier

    x, y = _toy(600, seed=5, n_features=25)
    s = ClassifierSettings(max_epochs=1, seed=3)
    res = train_classifier(
        x, y, feature_names=[f"f{i}" for i in range(25)], out_dir=tmp_path, settings=s, progress=False
    )
    assert res.epochs_run == 1 and res.n_val == 120
    assert 0.0 <= res.roc_auc <= 1.0


@pytest.mark.tensorflow
def test_gpu_throughput_benchmark_runs_and_projects_the_paper_run(tmp_path):
    """benchmarks/gpu_throughput.py, the one prepared script for a GPU machine, runs here on the CPU: a rate
    per configuration, the learning rate scaled, the paper-size projection from the rate."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gpu_throughput.py")
    out = tmp_path / "rates.json"
    r = subprocess.run([sys.executable, script, "--events", "3000", "--epochs", "2", "--batch", "264",
                        "--batch", "1056", "--hidden", "8", "--precision", "float32", "--precision",
                        "mixed_bfloat16", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    res = _read_json(out)
    rows = res["configurations"]
    assert [(c["batch_size"], c["precision"]) for c in rows] == [
        (264, "float32"), (1056, "float32"), (264, "mixed_bfloat16"), (1056, "mixed_bfloat16")]
    assert [c["learning_rate"] for c in rows[:2]] == pytest.approx([0.03, 0.06])   # sqrt(1056 / 264) = 2
    for c in rows:
        assert c["samples_per_second"] > 0 and c["epochs"] == 2
        assert c["paper_hours"]["typical"] == pytest.approx(4e6 * 40 / c["samples_per_second"] / 3600)
        assert f"| {c['batch_size']} | {c['precision']} | 1 |" in r.stdout
    assert res["device"] == "CPU" and res["hidden_layers"] == [8]
