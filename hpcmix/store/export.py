"""An event store as a ROOT file (uproot): the features, truth and cut flow a ROOT user expects.

One TTree per sample (``H``, ``A``, ``Z``, ...), one entry per selected event: every feature
without smearing (``<feature>``) and after it (``<feature>_smeared``), the truth four-momenta
(``truth_<particle>_<px|py|pz|e>``, GeV) and tau decay vertices (``vertex_<tau>_<x|y|z>``, mm),
the generation ``chunk`` and the ``split`` (0, 1, ... in the store's split order), and every
reweighting weight the sample holds (``weight_<name>``: network 0's, the nominal;
``weight_<name>_net<m>``: network m's; with several addresses of one name, ``_<address>`` after
the name). A weight with unwritten chunks among the exported ones is left out and listed. One TTree
``<sample>_cutflow`` per sample, one entry per chunk: the events counted after each cut, the
Pythia seed and ``sigmaGen`` (mb). A TObjString ``hpcmix`` holds, as JSON, the store's layout,
fingerprint, the split codes, the units and the hpcmix version. Written chunk by chunk (the memory
of one chunk), to a temporary name renamed at the end: a killed export leaves no ROOT file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import HpcmixError
from ..physics.layout import P4, PARTICLES, TAUS, XYZ
from .events import EventStore

#: the layout of the exported ROOT file (in its ``hpcmix`` TObjString); 2: the weight branches
ROOT_EXPORT_FORMAT = 2


class ExportError(HpcmixError, ValueError):
    """An export that cannot be made as asked: unfinished chunks, an unknown sample, an existing file."""


def event_branches(store: EventStore) -> dict[str, type]:
    """The event TTree's branches and their types, in the order they are written."""
    names = list(store.layout.feature_names)
    return ({n: np.float32 for n in names} | {f"{n}_smeared": np.float32 for n in names}
            | {f"truth_{p}_{c}": np.float64 for p in PARTICLES for c in P4}
            | {f"vertex_{t}_{x}": np.float64 for t in TAUS for x in XYZ}
            | {"chunk": np.int32, "split": np.int8})


def weight_branches(store: EventStore, sample: str, chunks: np.ndarray) -> tuple[dict[str, tuple], dict]:
    """The sample's weights as branches: {branch: (name, address, network)}, and the weights left out
    ({name/address: why}) because some of ``chunks`` have no weights written."""
    branches, skipped = {}, {}
    for name, addresses in sorted(store.weight_names(sample).items()):
        for address in addresses:
            done = store.weight_done_chunks(sample, name, address)
            if not done[chunks].all():
                skipped[f"{name}/{address}"] = (f"{int((~done[chunks]).sum())} of the {len(chunks)} exported chunks "
                                                "have no weights written")
                continue
            stem = f"weight_{name}" + (f"_{address}" if len(addresses) > 1 else "")
            n_networks = int(store.weight_info(sample, name, address)["n_networks"])
            for m in range(n_networks):
                branches[stem + (f"_net{m}" if m else "")] = (name, address, m)
    return branches, skipped


def _chunk_arrays(store: EventStore, sample: str, chunk: int, split_code: int,
                  weights: dict[str, tuple] | None = None) -> dict[str, np.ndarray]:
    """One chunk's events as flat branch arrays (with ``weights``: those weight branches too)."""
    g = store._group(sample)
    region = store.chunk_slice(chunk)
    names = store.layout.feature_names
    feats, smeared = g["features"][region], g["features_smeared"][region]
    p4, vtx = g["truth_p4"][region], g["truth_vertex"][region]
    n = len(feats)
    out = {name: feats[:, i] for i, name in enumerate(names)}
    out |= {f"{name}_smeared": smeared[:, i] for i, name in enumerate(names)}
    out |= {f"truth_{p}_{c}": p4[:, i, j] for i, p in enumerate(PARTICLES) for j, c in enumerate(P4)}
    out |= {f"vertex_{t}_{x}": vtx[:, i, j] for i, t in enumerate(TAUS) for j, x in enumerate(XYZ)}
    out |= {"chunk": np.full(n, chunk, np.int32), "split": np.full(n, split_code, np.int8)}
    types = event_branches(store)
    out = {k: np.ascontiguousarray(v, dtype=types[k]) for k, v in out.items()}
    values = {}
    for branch, (name, address, m) in (weights or {}).items():
        if (name, address) not in values:
            values[name, address] = store._weight_group(sample, name, address)["value"][region]
        out[branch] = np.ascontiguousarray(values[name, address][:, m], dtype=np.float64)
    return out


def export_root(store_path: str, out: str, *, samples: Sequence[str] | None = None, partial: bool = False,
                overwrite: bool = False, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Write the event store at ``store_path`` to the ROOT file ``out``; return what was written.

    Only finished chunks are exported; a store with unfinished chunks is refused unless ``partial``.
    ``progress(sample, chunks_written, chunks_to_write)`` is called after each chunk.
    """
    import uproot

    try:
        store = EventStore(store_path)
    except (FileNotFoundError, ValueError) as err:
        raise ExportError(str(err)) from None
    layout = store.layout
    samples = list(layout.samples) if not samples else list(samples)
    unknown = [s for s in samples if s not in layout.samples]
    if unknown:
        raise ExportError(f"unknown sample(s) {unknown}; the store at {store_path!r} has {list(layout.samples)}")
    if os.path.exists(out) and not overwrite:
        raise ExportError(f"{out!r} exists; give another file name or --overwrite")
    done = {s: store.done_chunks(s) for s in samples}
    unfinished = {s: int((~d).sum()) for s, d in done.items() if not d.all()}
    if unfinished and not partial:
        raise ExportError(f"the store has unfinished chunks ({', '.join(f'{s}: {n}' for s, n in unfinished.items())}"
                          f" of {layout.n_chunks}); finish it with 'hpcmix run' (or 'hpcmix generate') with the same "
                          "settings, or export the finished chunks only with --partial")
    if not any(d.any() for d in done.values()):
        raise ExportError(f"no finished chunks in {store_path!r} to export")
    split_names = [name for name, _ in layout.split_chunks]
    split_of_chunk = [i for i, (_, k) in enumerate(layout.split_chunks) for _ in range(k)]
    branches = event_branches(store)
    steps = list(layout.cutflow_steps)
    from .. import __version__

    info = {"format": ROOT_EXPORT_FORMAT, "store": os.path.abspath(store_path), "fingerprint": layout.fingerprint(),
            "layout": layout.to_json(), "samples": samples, "split_codes": dict(enumerate(split_names)),
            "partial": bool(unfinished), "chunks": {s: np.flatnonzero(d).tolist() for s, d in done.items()},
            "units": {"truth_*": "GeV", "vertex_*": "mm", "sigma_gen": "mb", "sigma_err": "mb"},
            "hpcmix_version": __version__}
    weights = {s: weight_branches(store, s, np.flatnonzero(done[s])) for s in samples}
    info["weights"] = {s: {b: {"name": n, "address": a, "network": m} for b, (n, a, m) in w.items()}
                       for s, (w, _) in weights.items()}
    info["weights_left_out"] = {s: left for s, (_, left) in weights.items() if left}
    tmp = out + ".tmp"
    written = {}
    try:
        with uproot.recreate(tmp) as f:
            for s in samples:
                chunks = np.flatnonzero(done[s])
                w = weights[s][0]
                tree = f.mktree(s, branches | dict.fromkeys(w, np.float64),
                                title=f"hpcmix {s} selected events (store {layout.fingerprint()})")
                for k, c in enumerate(chunks):
                    tree.extend(_chunk_arrays(store, s, int(c), split_of_chunk[c], w))
                    if progress is not None:
                        progress(s, k + 1, len(chunks))
                g = store._group(s)
                flow = g["cutflow"][:][chunks]
                cut = {"chunk": chunks.astype(np.int32), "pythia_seed": g["pythia_seed"][:][chunks].astype(np.int64),
                       "sigma_gen": g["sigma_gen"][:][chunks].astype(np.float64),
                       "sigma_err": g["sigma_err"][:][chunks].astype(np.float64)}
                cut |= {step: flow[:, i].astype(np.int64) for i, step in enumerate(steps)}
                f.mktree(f"{s}_cutflow", {k: v.dtype for k, v in cut.items()},
                         title=f"hpcmix {s} cut flow per generation chunk").extend(cut)
                written[s] = {"events": int(len(chunks) * layout.chunk_size), "chunks": int(len(chunks)),
                              "weights": list(w), "weights_left_out": weights[s][1]}
            f["hpcmix"] = json.dumps(info, default=str)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return {"path": out, "samples": written, "partial": bool(unfinished)}
