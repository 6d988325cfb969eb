"""The classifier network of paper section 3.3, in Keras 3.

Layer ordering, per hidden block: ``Dense -> BatchNormalization -> LeakyReLU
-> Dropout``.  This is the reference code's order (``smaeland/ML-2HDM``,
``neuralnet/nn_model.py``) and that of the batch-normalisation paper (normalise
the pre-activation, then apply the non-linearity); dropout comes last so that
batch normalisation sees the undropped activations of the previous block
rather than dropout-scaled ones.  "Batch normalisation between all layers" is
read, as in the reference, to include a BatchNormalization between the output
Dense(2) and the softmax (``output_batch_norm``, default on).

The output is a 2-way softmax (column 0: H, column 1: A) trained with sparse
categorical cross-entropy on integer labels (0 = H, 1 = A) with Adam. With
``n_classes = K`` the same network ends in a K-way softmax (one output per
mixture component: the multiclass estimator of the background studies).

``precision`` gives the hidden and output layers a mixed dtype policy (float16 or bfloat16
compute, float32 weights); the softmax and the ratio output compute in float32, and float16
training scales the loss (``LossScaleOptimizer``) so small gradients do not underflow.
"""

from __future__ import annotations

import keras

from .settings import ClassifierSettings

#: name of the output layer; ``model.get_layer(OUTPUT_NAME)`` is the softmax
OUTPUT_NAME = "probabilities"
INPUT_NAME = "features"
#: name of the ratio network's output layer (one linear unit u = omega(r))
RATIO_OUTPUT_NAME = "omega"
N_CLASSES = 2


def _initializer(name: str, seed: int | None, index: int):
    """A fresh initializer instance per layer, seeded from the study seed when given."""
    try:
        init = keras.initializers.get(name)
    except ValueError as err:
        raise ValueError(f"unknown Keras initializer {name!r}") from err
    config = init.get_config()
    if "seed" in config and seed is not None:
        config["seed"] = int(seed) + 1000 * (index + 1)
        init = init.__class__.from_config(config)
    return init


def _activation(settings: ClassifierSettings, index: int, dtype: str) -> keras.layers.Layer:
    if settings.activation == "leaky_relu":
        return keras.layers.LeakyReLU(
            negative_slope=settings.leaky_relu_slope, name=f"leaky_relu_{index}", dtype=dtype
        )
    return keras.layers.Activation(settings.activation, name=f"{settings.activation}_{index}", dtype=dtype)


def _check_inputs(n_inputs) -> int:
    if isinstance(n_inputs, bool) or int(n_inputs) != n_inputs or n_inputs < 1:
        raise ValueError(f"n_inputs must be a positive integer, got {n_inputs!r}")
    return int(n_inputs)


def _hidden_stack(n_inputs: int, settings: ClassifierSettings):
    """The input and the last hidden block's output: the part every hpcmix network shares."""
    seed = settings.seed
    dtype = settings.precision   # a policy per layer, never Keras' process-wide global policy
    inputs = keras.Input(shape=(n_inputs,), name=INPUT_NAME, dtype="float32")
    h = inputs
    for i, units in enumerate(settings.hidden_layers):
        h = keras.layers.Dense(
            units, kernel_initializer=_initializer(settings.initializer, seed, i), name=f"dense_{i}", dtype=dtype
        )(h)
        if settings.batch_norm:
            h = keras.layers.BatchNormalization(name=f"batch_norm_{i}", dtype=dtype)(h)
        h = _activation(settings, i, dtype)(h)
        if settings.dropout > 0.0:
            h = keras.layers.Dropout(
                settings.dropout,
                seed=None if seed is None else int(seed) + 7 * (i + 1),
                name=f"dropout_{i}",
                dtype=dtype,
            )(h)
    return inputs, h


def _optimizer(settings: ClassifierSettings):
    """Adam at the batch-size-scaled learning rate; loss-scaled for float16 compute."""
    adam = keras.optimizers.Adam(learning_rate=settings.effective_learning_rate)
    if settings.precision == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(adam)
    return adam


def build_model(n_inputs: int, settings: ClassifierSettings | None = None, *, n_classes: int = N_CLASSES
                ) -> keras.Model:
    """The compiled classifier for ``n_inputs`` standardised features and ``n_classes`` outputs.

    ``settings`` ``None`` means ``ClassifierSettings()`` (the paper's
    network).  Layers are named ``dense_<i>``, ``batch_norm_<i>``,
    ``leaky_relu_<i>`` and ``dropout_<i>`` (i = 0, 1, ... over the hidden
    blocks; the output block is ``dense_out``, ``batch_norm_out`` and
    ``probabilities``).
    """
    if settings is None:
        settings = ClassifierSettings()
    n_inputs = _check_inputs(n_inputs)
    if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    inputs, h = _hidden_stack(n_inputs, settings)
    n_hidden = len(settings.hidden_layers)
    h = keras.layers.Dense(
        int(n_classes),
        kernel_initializer=_initializer(settings.initializer, settings.seed, n_hidden),
        name="dense_out",
        dtype=settings.precision,
    )(h)
    if settings.batch_norm and settings.output_batch_norm:
        h = keras.layers.BatchNormalization(name="batch_norm_out", dtype=settings.precision)(h)
    outputs = keras.layers.Activation("softmax", name=OUTPUT_NAME, dtype="float32")(h)

    model = keras.Model(inputs, outputs, name="hpcmix_classifier")
    model.compile(
        optimizer=_optimizer(settings),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        steps_per_execution=settings.steps_per_execution,
    )
    return model


def build_ratio_model(n_inputs: int, settings: ClassifierSettings | None = None, *, loss: str) -> keras.Model:
    """The paper's hidden layers ending in one linear unit u(x), compiled with a likelihood-ratio loss.

    ``loss`` names a pair of ``hpcmix.train.losses``; the trained u estimates omega(r), r the density
    ratio of class 1 to class 0 (log r, or r for ``square``). No batch normalisation on the output:
    u is a free real number, not the input of a softmax.
    """
    from .losses import get_loss

    if settings is None:
        settings = ClassifierSettings()
    pair = get_loss(loss)
    inputs, h = _hidden_stack(_check_inputs(n_inputs), settings)
    u = keras.layers.Dense(1, kernel_initializer=_initializer(settings.initializer, settings.seed,
                                                              len(settings.hidden_layers)),
                           name=RATIO_OUTPUT_NAME, dtype="float32")(h)
    model = keras.Model(inputs, u, name="hpcmix_ratio_network")
    model.compile(optimizer=_optimizer(settings), loss=pair.keras(), steps_per_execution=settings.steps_per_execution)
    return model
