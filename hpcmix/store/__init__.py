"""The Zarr event store: one store per study, a group per sample, chunk-aligned splits."""

from .events import EventStore, StoreLayout, StoreMismatchError

__all__ = ["EventStore", "StoreLayout", "StoreMismatchError"]
