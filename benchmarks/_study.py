"""Shared by the generation benchmarks: a resolved single-component study of a given size."""

from __future__ import annotations


def split_events(total: int, chunk_size: int) -> dict[str, int]:
    """Selected events per split (a study has all three): one chunk each for template and test, the rest train."""
    if total < 3 * chunk_size:
        raise SystemExit(f"need at least 3 chunks (one per split): events {total} < 3 x chunk size {chunk_size}")
    return {"train": total - 2 * chunk_size, "template": chunk_size, "test": chunk_size}


def generation_study(sample: str, events: dict[str, int], *, chunk_size: int, profile: str, seed: int,
                     processes: dict | None = None, selection: dict | None = None):
    """A resolved single-component study (package defaults < dask config < these)."""
    from hpcmix.study import resolve_study

    overrides = {"components": [sample], "seed": seed,
                 "generate": {"events": events, "chunk_size": chunk_size, "profile": profile}}
    if processes:
        overrides["processes"] = processes
    if selection:
        overrides["selection"] = selection
    return resolve_study(overrides=overrides, mixture=False)
