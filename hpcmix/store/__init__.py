"""The Zarr event store (one store per study, a group per sample, chunk-aligned splits) and the
versioned .npz stage artefacts (templates, toy batches)."""

from .artefacts import (
    TEMPLATES_FORMAT,
    TOY_BATCH_FORMAT,
    ArtefactFormatError,
    ToyBatch,
    load_templates,
    load_toy_batch,
    save_templates,
    save_toy_batch,
)
from .events import EventStore, StoreLayout, StoreMismatchError

__all__ = [
    "TEMPLATES_FORMAT",
    "TOY_BATCH_FORMAT",
    "ArtefactFormatError",
    "EventStore",
    "StoreLayout",
    "StoreMismatchError",
    "ToyBatch",
    "load_templates",
    "load_toy_batch",
    "save_templates",
    "save_toy_batch",
]
