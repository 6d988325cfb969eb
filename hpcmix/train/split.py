"""The seeded train/validation split (no Keras: the plan checks it before any training)."""

from __future__ import annotations

import numpy as np

__all__ = ["split_indices", "validation_size"]


def validation_size(n: int, validation_fraction: float) -> int:
    """Validation events out of ``n``: ``round(fraction * n)``, at least 1 and at most n - 1."""
    return min(max(int(round(validation_fraction * n)), 1), n - 1)


def split_indices(n: int, validation_fraction: float, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded shuffle of ``range(n)``; the last ``validation_size(n, fraction)`` are validation."""
    n_val = validation_size(n, validation_fraction)
    if n < 2:
        raise ValueError("need at least 2 events to split off a validation set")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[: n - n_val], perm[n - n_val :]
