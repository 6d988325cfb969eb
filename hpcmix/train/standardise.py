"""Per-feature standardisation (zero mean, unit variance) fitted on training data.

Moments are accumulated in float64 over row chunks (Chan et al.'s parallel
update), so fitting a multi-million-event float32 array never makes a float64
copy of it.  Features whose variance is zero (after the frame rotations some
pion components are identically zero) keep ``std = 1``: they are shifted to
zero, never divided by zero, and listed in ``constant``; a log line says so.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

_FORMAT = "hpcmix.train.Standardiser"
_VERSION = 1
#: rows per chunk when fitting / transforming (bounds the temporary memory)
CHUNK_ROWS = 1 << 18


@dataclass(frozen=True)
class Standardiser:
    """``(x - mean) / std`` per feature, with the feature names it was fitted on."""

    names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    constant: tuple[str, ...] = field(default=())
    n_fit: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "constant", tuple(str(n) for n in self.constant))
        mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        std = np.asarray(self.std, dtype=np.float64).reshape(-1)
        if not (len(self.names) == mean.size == std.size):
            raise ValueError(
                f"names, mean and std must have one entry per feature "
                f"({len(self.names)}, {mean.size}, {std.size})"
            )
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"feature names must be unique, got {self.names}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ValueError("mean must be finite and std finite and positive")
        mean.flags.writeable = False
        std.flags.writeable = False
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def n_features(self) -> int:
        return len(self.names)

    # -- fitting ---------------------------------------------------------------
    @classmethod
    def fit(
        cls, x: np.ndarray, names: Sequence[str], *, rtol: float = 1e-12
    ) -> "Standardiser":
        """Fit mean and (population) std per column of ``x`` (n_events, n_features).

        A column counts as constant when its std is at most ``rtol * max(1, |mean|)``
        (float rounding of an identically-zero component leaves tiny noise).
        """
        x = _as_2d(x)
        names = tuple(names)
        if x.shape[1] != len(names):
            raise ValueError(f"x has {x.shape[1]} features but {len(names)} names were given")
        n = x.shape[0]
        if n < 1:
            raise ValueError("cannot fit a Standardiser on zero events")
        count = 0
        mean = np.zeros(x.shape[1])
        m2 = np.zeros(x.shape[1])
        for start in range(0, n, CHUNK_ROWS):
            chunk = np.asarray(x[start : start + CHUNK_ROWS], dtype=np.float64)
            if not np.all(np.isfinite(chunk)):
                bad = [names[j] for j in np.flatnonzero(~np.all(np.isfinite(chunk), axis=0))]
                raise ValueError(f"non-finite values in features {bad}")
            k = chunk.shape[0]
            c_mean = chunk.mean(axis=0)
            c_m2 = ((chunk - c_mean) ** 2).sum(axis=0)
            delta = c_mean - mean
            total = count + k
            mean = mean + delta * (k / total)
            m2 = m2 + c_m2 + delta**2 * (count * k / total)
            count = total
        std = np.sqrt(m2 / count)
        is_const = std <= rtol * np.maximum(1.0, np.abs(mean))
        constant = tuple(n for n, c in zip(names, is_const) if c)
        if constant:
            log.info(
                "standardiser: %d constant feature(s) keep std=1 (shifted to zero only): %s",
                len(constant),
                ", ".join(constant),
            )
        std = np.where(is_const, 1.0, std)
        return cls(names=names, mean=mean, std=std, constant=constant, n_fit=int(count))

    # -- applying --------------------------------------------------------------
    def transform(self, x: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        """Standardised float32 copy of ``x`` (or written into ``out``, which may be ``x``)."""
        x = _as_2d(x)
        if x.shape[1] != self.n_features:
            raise ValueError(
                f"x has {x.shape[1]} features, the standardiser expects {self.n_features}"
            )
        if out is None:
            out = np.empty(x.shape, dtype=np.float32)
        elif out.shape != x.shape or out.dtype != np.float32:
            raise ValueError("out must be a float32 array of x's shape")
        inv_std = 1.0 / self.std
        for start in range(0, x.shape[0], CHUNK_ROWS):
            # float64 arithmetic per chunk: exact shift even for features far from zero
            sl = slice(start, start + CHUNK_ROWS)
            chunk = np.array(x[sl], dtype=np.float64)  # a copy: never modify x
            chunk -= self.mean
            chunk *= inv_std
            out[sl] = chunk
        return out

    __call__ = transform

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        z = _as_2d(z)
        return (np.asarray(z, dtype=np.float64) * self.std + self.mean).astype(np.float32)

    def check_names(self, names: Sequence[str] | None) -> None:
        """Raise unless ``names`` (if given) are the fitted feature names, in order."""
        if names is not None and tuple(names) != self.names:
            raise ValueError(
                f"feature names differ from those the standardiser was fitted on:\n"
                f"  given  {tuple(names)}\n  fitted {self.names}"
            )

    # -- persistence -----------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "names": list(self.names),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "constant": list(self.constant),
            "n_fit": int(self.n_fit),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Standardiser":
        if d.get("format") != _FORMAT:
            raise ValueError(f"not a standardiser: format {d.get('format')!r}")
        if d.get("version") != _VERSION:
            raise ValueError(f"unsupported standardiser version {d.get('version')!r}")
        return cls(
            names=d["names"],
            mean=d["mean"],
            std=d["std"],
            constant=d.get("constant", ()),
            n_fit=d.get("n_fit", 0),
        )

    def save(self, path: str | os.PathLike) -> str:
        """Write JSON (floats written with full float64 precision: exact round trip)."""
        path = os.fspath(path)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Standardiser":
        with open(path) as f:
            return cls.from_dict(json.load(f))


def _as_2d(x: np.ndarray) -> np.ndarray:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    if len(x.shape) != 2:
        raise ValueError(f"expected a 2-d array (n_events, n_features), got shape {x.shape}")
    return x
