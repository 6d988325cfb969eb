"""One Zarr store per study: a group per sample with truth arrays and two feature sets.

Each sample group holds arrays along ``event`` (chunked exactly as generation
tasks write them, so a task owns its region) and per-chunk bookkeeping along
``chunk``: the cut flow, the Pythia seed, the cross section, a digest of the
chunk's data, and ``chunk_done``, written last. A chunk counts as done only
when ``chunk_done`` is set and its digest matches the data, so a task killed
half-way is regenerated, never read. Splits (train / template / test) are
contiguous, chunk-aligned event ranges fixed by the layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import xarray as xr

from ..errors import HpcmixError
from ..physics.layout import P4, PARTICLES, TAUS, XYZ

STORE_FORMAT = 1
EVENT_ARRAYS = ("truth_p4", "truth_vertex", "features", "features_smeared")
CHUNK_ARRAYS = ("cutflow", "pythia_seed", "sigma_gen", "sigma_err", "seconds", "digest", "chunk_done")
#: the layout of a stored weight variable (<sample>/weights/<name>/<address>)
WEIGHT_FORMAT = 1


class UnknownWeightError(HpcmixError, KeyError):
    """A weight name (or address) the store does not hold for that sample."""

    def __str__(self) -> str:   # KeyError would quote the message
        return str(self.args[0])


class StoreMismatchError(HpcmixError, ValueError):
    """An existing store was made with other settings than the ones asked for."""


@dataclass(frozen=True)
class StoreLayout:
    """Shape of a store: samples, chunking, splits, feature and cut-flow names, and the settings behind it."""

    samples: tuple[str, ...]
    chunk_size: int
    split_chunks: tuple[tuple[str, int], ...]     # (split name, number of chunks), in event order
    feature_names: tuple[str, ...]
    cutflow_steps: tuple[str, ...]
    settings: Mapping[str, Any]                    # everything that determines the events (JSON-able)

    def __post_init__(self):
        if self.chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive number of events, got {self.chunk_size}")
        if not self.samples:
            raise ValueError("a store needs at least one sample")
        for name, n in self.split_chunks:
            if n <= 0:
                raise ValueError(f"split {name!r} needs a positive number of chunks, got {n}")

    @property
    def n_chunks(self) -> int:
        return sum(n for _, n in self.split_chunks)

    @property
    def n_events(self) -> int:
        return self.n_chunks * self.chunk_size

    def split_ranges(self) -> dict[str, tuple[int, int]]:
        """Event range [start, stop) of each split."""
        ranges, start = {}, 0
        for name, n in self.split_chunks:
            ranges[name] = (start, start + n * self.chunk_size)
            start += n * self.chunk_size
        return ranges

    def to_json(self) -> dict:
        d = asdict(self)
        d["split_chunks"] = [list(x) for x in self.split_chunks]
        return json.loads(json.dumps(d))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "StoreLayout":
        return cls(samples=tuple(d["samples"]), chunk_size=int(d["chunk_size"]),
                   split_chunks=tuple((str(a), int(b)) for a, b in d["split_chunks"]),
                   feature_names=tuple(d["feature_names"]), cutflow_steps=tuple(d["cutflow_steps"]),
                   settings=d["settings"])

    def fingerprint(self) -> str:
        """Hash of everything that fixes the stored events."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]


def chunk_digest(arrays: Mapping[str, np.ndarray]) -> int:
    """A 63-bit digest of one chunk's event arrays, to tell complete chunks from torn ones."""
    h = hashlib.blake2b(digest_size=8)
    for name in EVENT_ARRAYS:
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return int.from_bytes(h.digest(), "little") >> 1


def _strings(values) -> np.ndarray:
    # variable-length strings: the only string type with a Zarr v3 specification
    return np.array(list(values), dtype=object)


class EventStore:
    """A study's events on disk. Create with ``EventStore.create``, reopen with ``EventStore(path)``."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.exists(os.path.join(self.path, "zarr.json")):
            raise FileNotFoundError(f"no hpcmix event store at {self.path!r}; create one with 'hpcmix generate'")
        import zarr

        attrs = dict(zarr.open_group(self.path, mode="r").attrs)
        if "hpcmix" not in attrs:
            raise ValueError(f"{self.path!r} is a Zarr store but not an hpcmix event store")
        self.layout = StoreLayout.from_json(attrs["hpcmix"]["layout"])

    # -- creation ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, layout: StoreLayout, *, overwrite: bool = False) -> "EventStore":
        """Create the store's layout, or reopen it if it was made with identical settings.

        A store made with different settings is refused unless ``overwrite``;
        the error says what differs and how to proceed.
        """
        path = os.fspath(path)
        if os.path.exists(path) and _layout_unfinished(path):
            # killed while laying out: no task can have written into it yet
            shutil.rmtree(path)
        if os.path.exists(path):
            if overwrite:
                shutil.rmtree(path)
            else:
                try:
                    existing = cls(path)
                except (FileNotFoundError, ValueError) as err:
                    raise StoreMismatchError(
                        f"{path!r} exists but is not a readable hpcmix event store ({err}); "
                        "choose another output or pass --overwrite to replace it"
                    ) from None
                if existing.layout.fingerprint() != layout.fingerprint():
                    diff = _describe_difference(existing.layout.to_json(), layout.to_json())
                    raise StoreMismatchError(
                        f"the event store {path!r} was made with different settings ({diff}). "
                        "To resume it, rerun with the settings it was made with; to replace it, pass "
                        "--overwrite (overwrite=True); or write to another output path."
                    )
                return existing
        cls._write_layout(path, layout)
        return cls(path)

    @staticmethod
    def _write_layout(path: str, layout: StoreLayout) -> None:
        import dask.array as da
        import zarr

        n, c, nc = layout.n_events, layout.chunk_size, layout.n_chunks
        nf, ns = len(layout.feature_names), len(layout.cutflow_steps)
        split_of_chunk = [name for name, k in layout.split_chunks for _ in range(k)]
        zarr.open_group(path, mode="w", attributes={"hpcmix_layout": "unfinished"})
        for sample in layout.samples:
            ds = xr.Dataset(
                {
                    "truth_p4": (("event", "particle", "p4"), da.full((n, 6, 4), np.nan, chunks=(c, 6, 4))),
                    "truth_vertex": (("event", "tau", "xyz"), da.full((n, 2, 3), np.nan, chunks=(c, 2, 3))),
                    "features": (("event", "feature"), da.full((n, nf), np.nan, chunks=(c, nf), dtype="f4")),
                    "features_smeared": (("event", "feature"), da.full((n, nf), np.nan, chunks=(c, nf), dtype="f4")),
                    "cutflow": (("chunk", "cut"), da.zeros((nc, ns), chunks=(1, ns), dtype="i8")),
                    "pythia_seed": (("chunk",), da.zeros(nc, chunks=1, dtype="i8")),
                    "sigma_gen": (("chunk",), da.full(nc, np.nan, chunks=1)),
                    "sigma_err": (("chunk",), da.full(nc, np.nan, chunks=1)),
                    "seconds": (("chunk",), da.full(nc, np.nan, chunks=1)),
                    "digest": (("chunk",), da.zeros(nc, chunks=1, dtype="i8")),
                    "chunk_done": (("chunk",), da.zeros(nc, chunks=1, dtype="i1")),
                },
                coords={
                    "particle": _strings(PARTICLES), "p4": _strings(P4), "tau": _strings(TAUS),
                    "xyz": _strings(XYZ), "feature": _strings(layout.feature_names),
                    "cut": _strings(layout.cutflow_steps), "chunk_split": ("chunk", _strings(split_of_chunk)),
                },
            )
            ds["truth_p4"].attrs["units"] = "GeV"
            ds["truth_p4"].attrs["description"] = "lab-frame truth four-momenta of the selected events"
            ds["truth_vertex"].attrs["units"] = "mm"
            ds["truth_vertex"].attrs["description"] = "tau decay vertices relative to the primary vertex"
            ds["features"].attrs["description"] = "features without detector smearing"
            ds["features_smeared"].attrs["description"] = "features after smearing the pions"
            ds["cutflow"].attrs["description"] = "events counted after each cut, per generation chunk"
            ds["sigma_gen"].attrs["units"] = "mb"
            ds["sigma_gen"].attrs["description"] = "Pythia sigmaGen() of the chunk (before the selection)"
            ds["seconds"].attrs["units"] = "s"
            ds["chunk_done"].attrs["description"] = "1 once the chunk's data and records are written"
            ds.attrs["sample"] = sample
            ds.attrs["splits"] = {k: list(v) for k, v in layout.split_ranges().items()}
            ds.to_zarr(path, group=sample, mode="w", compute=False, consolidated=False)
        root = zarr.open_group(path, mode="r+")
        from .. import __version__

        # written last: a store without it was interrupted while being laid out
        root.attrs["hpcmix"] = {"format": STORE_FORMAT, "layout": layout.to_json(), "fingerprint": layout.fingerprint(),
                                "hpcmix_version": __version__}

    # -- chunk bookkeeping ------------------------------------------------------------------
    def chunk_slice(self, chunk: int) -> slice:
        if not 0 <= chunk < self.layout.n_chunks:
            raise ValueError(f"chunk {chunk} outside 0..{self.layout.n_chunks - 1}")
        c = self.layout.chunk_size
        return slice(chunk * c, (chunk + 1) * c)

    def _group(self, sample: str, mode: str = "r"):
        import zarr

        if sample not in self.layout.samples:
            raise ValueError(f"unknown sample {sample!r}; this store has {', '.join(self.layout.samples)}")
        return zarr.open_group(self.path, mode=mode, path=sample)

    def write_chunk(self, sample: str, chunk: int, arrays: Mapping[str, np.ndarray], record: Mapping[str, Any]) -> None:
        """Write one chunk's event arrays and records, then mark it done (in that order)."""
        g = self._group(sample, "r+")
        region = self.chunk_slice(chunk)
        for name in EVENT_ARRAYS:
            g[name][region] = arrays[name]
        g["cutflow"][chunk] = [record["cutflow"][s] for s in self.layout.cutflow_steps]
        for name in ("pythia_seed", "sigma_gen", "sigma_err", "seconds"):
            g[name][chunk] = record[name]
        g["digest"][chunk] = chunk_digest(arrays)
        g["chunk_done"][chunk] = 1

    def done_chunks(self, sample: str, *, verify: bool = False) -> np.ndarray:
        """Boolean per chunk: written completely. With ``verify``, re-check each digest against the data."""
        g = self._group(sample)
        done = g["chunk_done"][:] == 1
        if verify:
            digests = g["digest"][:]
            for chunk in np.flatnonzero(done):
                region = self.chunk_slice(int(chunk))
                try:
                    arrays = {name: g[name][region] for name in EVENT_ARRAYS}
                    done[chunk] = chunk_digest(arrays) == digests[chunk]
                except Exception:  # a truncated or unreadable chunk file is simply not done
                    done[chunk] = False
        return done

    def is_complete(self) -> bool:
        return all(self.done_chunks(s).all() for s in self.layout.samples)

    # -- reading ----------------------------------------------------------------------------
    def dataset(self, sample: str) -> xr.Dataset:
        """The whole sample group as a lazy xarray Dataset."""
        self._group(sample)
        return xr.open_zarr(self.path, group=sample, consolidated=False)

    def split(self, sample: str, split: str, *, require_complete: bool = True) -> xr.Dataset:
        """The events of one split (a contiguous, chunk-aligned range), lazily."""
        ranges = self.layout.split_ranges()
        if split not in ranges:
            raise ValueError(f"unknown split {split!r}; this store has {', '.join(ranges)}")
        start, stop = ranges[split]
        if require_complete:
            c = self.layout.chunk_size
            done = self.done_chunks(sample)[start // c: stop // c]
            if not done.all():
                raise ValueError(f"sample {sample!r} split {split!r} has {int((~done).sum())} unfinished chunk(s); "
                                 "run 'hpcmix generate' again with the same settings to finish it")
        return self.dataset(sample).isel(event=slice(start, stop))

    def features(self, sample: str, split: str, *, smeared: bool, names=None) -> np.ndarray:
        """Feature matrix (n_events, n_features) as float32, loading only the columns asked for."""
        ds = self.split(sample, split)
        var = ds["features_smeared" if smeared else "features"]
        if names is not None:
            missing = [n for n in names if n not in self.layout.feature_names]
            if missing:
                raise ValueError(f"unknown feature(s) {missing}; the store has {list(self.layout.feature_names)}")
            var = var.sel(feature=list(names))
        return np.asarray(var.values, dtype=np.float32)

    # -- weights: per-event variables computed after generation (the reweighting stage) ---------
    # A weight lives in the sample's group at weights/<name>/<address>: ``value`` (event, network),
    # one column per reweighting network, chunked as the events are so a task owns its chunk, and
    # ``chunk_done`` written after each chunk's values. The group's attrs hold the provenance. The
    # address is the reweighting stage's, so two settings of one name never overwrite each other.
    @staticmethod
    def _weight_path(sample: str, name: str, address: str) -> str:
        return f"{sample}/weights/{name}/{address}"

    def create_weight(self, sample: str, name: str, address: str, *, n_networks: int,
                      provenance: Mapping[str, Any]) -> None:
        """Lay out a weight variable (or keep it, when one of this address exists)."""
        import zarr

        self._group(sample)
        path = self._weight_path(sample, name, address)
        root = zarr.open_group(self.path, mode="r+")
        try:
            existing = root[path]
            if dict(existing.attrs).get("hpcmix_weight", {}).get("format") == WEIGHT_FORMAT:
                return
        except KeyError:
            pass
        c, n = self.layout.chunk_size, self.layout.n_events
        g = root.require_group(path)
        g.create_array("value", shape=(n, n_networks), chunks=(c, n_networks), dtype="f8", fill_value=np.nan,
                       dimension_names=("event", "network"), overwrite=True)
        g.create_array("chunk_done", shape=(self.layout.n_chunks,), chunks=(1,), dtype="i1", fill_value=0,
                       dimension_names=("chunk",), overwrite=True)
        from .. import __version__

        g.attrs["hpcmix_weight"] = {"format": WEIGHT_FORMAT, "name": name, "address": address, "sample": sample,
                                    "n_networks": int(n_networks), "provenance": json.loads(json.dumps(provenance)),
                                    "hpcmix_version": __version__}

    def _weight_group(self, sample: str, name: str, address: str | None = None):
        import zarr

        self._group(sample)
        held = self.weight_names(sample)
        if name not in held:
            raise UnknownWeightError(
                f"sample {sample!r} of {self.path} holds no weight {name!r}; it holds "
                f"{', '.join(sorted(held)) or 'no weights'} (weights are written by a job file's reweight: section)")
        if address is None:
            if len(held[name]) > 1:
                raise UnknownWeightError(f"sample {sample!r} holds weight {name!r} at several addresses "
                                         f"{held[name]}; give the address")
            address = held[name][0]
        elif address not in held[name]:
            raise UnknownWeightError(f"sample {sample!r} holds weight {name!r} at {held[name]}, not at {address!r}; "
                                     "run the reweighting stage of that study")
        return zarr.open_group(self.path, mode="r", path=self._weight_path(sample, name, address))

    def weight_names(self, sample: str) -> dict[str, list[str]]:
        """{weight name: [addresses]} the sample holds."""
        import zarr

        g = self._group(sample)
        try:
            weights = g["weights"]
        except KeyError:
            return {}
        out = {}
        for name, sub in weights.groups():
            out[name] = sorted(a for a, _ in sub.groups())
        return {k: v for k, v in out.items() if v}

    def weight_info(self, sample: str, name: str, address: str | None = None) -> dict[str, Any]:
        """The weight's record: name, address, number of networks, provenance."""
        return dict(self._weight_group(sample, name, address).attrs)["hpcmix_weight"]

    def write_weight_chunk(self, sample: str, name: str, address: str, chunk: int, values: np.ndarray) -> None:
        """Write one chunk's weights (chunk_size, n_networks), then mark it done."""
        import zarr

        g = zarr.open_group(self.path, mode="r+", path=self._weight_path(sample, name, address))
        g["value"][self.chunk_slice(chunk)] = values
        g["chunk_done"][chunk] = 1

    def weight_done_chunks(self, sample: str, name: str, address: str) -> np.ndarray:
        """Boolean per chunk: its weights are written (all False when the variable is not laid out)."""
        try:
            g = self._weight_group(sample, name, address)
        except UnknownWeightError:
            return np.zeros(self.layout.n_chunks, dtype=bool)
        return g["chunk_done"][:] == 1

    def weights(self, sample: str, name: str, split: str | None = None, *, address: str | None = None,
                network: int | None = 0) -> np.ndarray:
        """The weights of one sample (one split of it), float64: network 0's (n,), or every network's (n, M)
        with ``network=None``. Refuses a variable with unwritten chunks in the range asked for."""
        g = self._weight_group(sample, name, address)
        start, stop = (0, self.layout.n_events) if split is None else self.layout.split_ranges()[split]
        c = self.layout.chunk_size
        missing = int((g["chunk_done"][start // c: stop // c] != 1).sum())
        if missing:
            raise ValueError(f"weight {name!r} of sample {sample!r} has {missing} unwritten chunk(s) in "
                             f"{split or 'the sample'}; rerun the reweighting stage to finish it")
        value = g["value"][start:stop]
        return value if network is None else value[:, network]

    def chunk_features(self, sample: str, chunk: int, *, smeared: bool, names=None) -> np.ndarray:
        """Feature matrix of one finished chunk (chunk_size, n_features), float32 (read with zarr alone:
        a task per chunk pays no xarray metadata pass)."""
        g = self._group(sample)
        region = self.chunk_slice(chunk)
        if g["chunk_done"][chunk] != 1:
            raise ValueError(f"sample {sample!r} chunk {chunk} is not generated yet; run 'hpcmix generate' first")
        x = g["features_smeared" if smeared else "features"][region]
        if names is not None:
            missing = [n for n in names if n not in self.layout.feature_names]
            if missing:
                raise ValueError(f"unknown feature(s) {missing}; the store has {list(self.layout.feature_names)}")
            x = x[:, [self.layout.feature_names.index(n) for n in names]]
        return np.asarray(x, dtype=np.float32)

    def cutflow(self, sample: str) -> dict[str, int]:
        """Cut flow summed over the finished chunks."""
        g = self._group(sample)
        done = g["chunk_done"][:] == 1
        totals = g["cutflow"][:][done].sum(axis=0)
        return {s: int(v) for s, v in zip(self.layout.cutflow_steps, totals)}

    def cross_section(self, sample: str) -> tuple[float, float]:
        """Cross section (mb) before the selection: tries-weighted mean over finished chunks, and its error."""
        g = self._group(sample)
        done = g["chunk_done"][:] == 1
        if not done.any():
            return float("nan"), float("nan")
        tried = g["cutflow"][:][done][:, self.layout.cutflow_steps.index("tried")].astype(float)
        sig, err = g["sigma_gen"][:][done], g["sigma_err"][:][done]
        w = tried / tried.sum()
        return float((w * sig).sum()), float(np.sqrt(((w * err) ** 2).sum()))


def _layout_unfinished(path: str) -> bool:
    import zarr

    try:
        attrs = dict(zarr.open_group(path, mode="r").attrs)
    except Exception:
        return False
    return attrs.get("hpcmix_layout") == "unfinished" and "hpcmix" not in attrs


def _describe_difference(old: Any, new: Any, prefix: str = "") -> str:
    """The first few settings that differ between two layouts, as 'key: old -> new'."""
    diffs: list[str] = []

    def walk(a, b, p):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{p}.{k}" if p else k)
        elif a != b:
            diffs.append(f"{p}: {a!r} -> {b!r}")

    walk(old, new, prefix)
    return "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
