"""The Zarr event store (one store per study, a group per sample, chunk-aligned splits) and the
versioned .npz stage artefacts (templates, toy batches)."""

from .artefacts import (
    FRACTION_BATCH_FORMAT,
    TEMPLATES_FORMAT,
    TOY_BATCH_FORMAT,
    ArtefactFormatError,
    FractionBatch,
    PoolDensities,
    PoolUses,
    ToyBatch,
    load_fraction_batch,
    load_templates,
    load_test_pool,
    load_toy_batch,
    save_fraction_batch,
    save_templates,
    save_test_pool,
    save_toy_batch,
)
from .events import WEIGHT_FORMAT, EventStore, StoreLayout, StoreMismatchError, UnknownWeightError

__all__ = [
    "FRACTION_BATCH_FORMAT",
    "TEMPLATES_FORMAT",
    "TOY_BATCH_FORMAT",
    "ArtefactFormatError",
    "EventStore",
    "FractionBatch",
    "PoolDensities",
    "PoolUses",
    "StoreLayout",
    "StoreMismatchError",
    "UnknownWeightError",
    "WEIGHT_FORMAT",
    "ToyBatch",
    "load_fraction_batch",
    "load_templates",
    "load_test_pool",
    "load_toy_batch",
    "save_fraction_batch",
    "save_templates",
    "save_test_pool",
    "save_toy_batch",
]
