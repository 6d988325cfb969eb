"""Seeds for every random stream, derived from (study seed, sample, chunk, stream).

``numpy.random.SeedSequence`` mixes the key into well-separated states, so the
same key always gives the same bytes and different keys independent streams.
Pythia takes one integer in 1..900000000 (0 would mean "from the clock");
``pythia_seeds`` maps all chunks of a study into that range with no repeats.
"""

from __future__ import annotations

import zlib
from typing import Iterable

import numpy as np

PYTHIA_SEED_MAX = 900_000_000
STREAM_PYTHIA = 0
STREAM_SMEARING = 1


def sample_key(sample: str) -> int:
    """A stable integer for a sample name (CRC32), so keys do not depend on sample order."""
    return zlib.crc32(sample.encode())


def seed_sequence(study_seed: int, sample: str, chunk: int, stream: int, attempt: int = 0) -> np.random.SeedSequence:
    if study_seed < 0 or chunk < 0:
        raise ValueError(f"seeds need non-negative study seed and chunk, got {study_seed}, {chunk}")
    return np.random.SeedSequence(entropy=study_seed, spawn_key=(sample_key(sample), chunk, stream, attempt))


def smearing_rng(study_seed: int, sample: str, chunk: int) -> np.random.Generator:
    """The detector-smearing stream of one chunk, independent of Pythia's."""
    return np.random.default_rng(seed_sequence(study_seed, sample, chunk, STREAM_SMEARING))


def _pythia_candidate(study_seed: int, sample: str, chunk: int, attempt: int) -> int:
    state = seed_sequence(study_seed, sample, chunk, STREAM_PYTHIA, attempt).generate_state(1, np.uint64)[0]
    return int(state % PYTHIA_SEED_MAX) + 1


def pythia_seeds(study_seed: int, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Pythia seeds for (sample, chunk) keys, unique across the whole study.

    Collisions in 9e8 values are rare but not negligible for 10^4 chunks
    (birthday bound), so a colliding key takes its next ``attempt``. Keys are
    resolved in a fixed chunk-major order; every chunk records the seed it used.
    """
    ordered = sorted(set(keys), key=lambda k: (k[1], sample_key(k[0]), k[0]))
    used: set[int] = set()
    seeds = {}
    for sample, chunk in ordered:
        attempt = 0
        while (seed := _pythia_candidate(study_seed, sample, chunk, attempt)) in used:
            attempt += 1
        used.add(seed)
        seeds[(sample, chunk)] = seed
    return seeds
