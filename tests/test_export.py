"""``hpcmix export STORE --format root OUT``: the event store as ROOT TTrees, read back with uproot."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from hpcmix.cli import cli
from hpcmix.physics.layout import P4, PARTICLES
from hpcmix.store import EventStore

uproot = pytest.importorskip("uproot")


def _export(*args):
    result = CliRunner().invoke(cli, ["export", *map(str, args), "--no-progress"])
    return result.exit_code, result.output


@pytest.mark.pythia
def test_root_export_round_trips_features_truth_and_cut_flow(small_store, tmp_path):
    out = tmp_path / "events.root"
    code, text = _export(small_store, out)
    assert code == 0, text
    store = EventStore(small_store)
    layout = store.layout
    names = list(layout.feature_names)
    with uproot.open(out) as f:
        info = json.loads(str(f["hpcmix"]))
        assert info["fingerprint"] == layout.fingerprint() and info["partial"] is False
        assert set(f.keys(cycle=False)) == {"hpcmix", *layout.samples, *(f"{s}_cutflow" for s in layout.samples)}
        codes = {v: int(k) for k, v in info["split_codes"].items()}
        for s in layout.samples:
            t = f[s].arrays(library="np")
            ds = store.dataset(s)
            assert len(t["chunk"]) == layout.n_events
            np.testing.assert_array_equal(np.column_stack([t[n] for n in names]), ds.features.values)
            np.testing.assert_array_equal(np.column_stack([t[f"{n}_smeared"] for n in names]),
                                          ds.features_smeared.values)
            p4 = ds.truth_p4.values
            for i, p in enumerate(PARTICLES):
                for j, c in enumerate(P4):
                    np.testing.assert_array_equal(t[f"truth_{p}_{c}"], p4[:, i, j])
            np.testing.assert_array_equal(t["vertex_minus_z"], ds.truth_vertex.values[:, 1, 2])
            for split, (lo, hi) in layout.split_ranges().items():   # each event's split code, by range
                assert (t["split"][lo:hi] == codes[split]).all()
            np.testing.assert_array_equal(t["chunk"], np.arange(layout.n_events) // layout.chunk_size)
            flow = f[f"{s}_cutflow"].arrays(library="np")
            assert {step: int(flow[step].sum()) for step in layout.cutflow_steps} == store.cutflow(s)
            # every chunk keeps exactly chunk_size selected events: the last cut's count
            assert (flow[layout.cutflow_steps[-1]] == layout.chunk_size).all()
            np.testing.assert_array_equal(flow["sigma_gen"], ds.sigma_gen.values)
    # an existing file is not replaced unless asked
    code, text = _export(small_store, out)
    assert code == 2 and "--overwrite" in text
    code, text = _export(small_store, out, "--overwrite", "--sample", layout.samples[0])
    assert code == 0, text
    with uproot.open(out) as f:
        assert set(f.keys(cycle=False)) == {"hpcmix", layout.samples[0], f"{layout.samples[0]}_cutflow"}


@pytest.mark.pythia
def test_an_unfinished_store_is_refused_unless_partial(small_store, tmp_path):
    import zarr

    copy = tmp_path / "events.zarr"
    shutil.copytree(small_store, copy)
    store = EventStore(copy)
    sample = store.layout.samples[1]
    zarr.open_group(str(copy), mode="r+")[sample]["chunk_done"][1] = 0   # as if killed mid-chunk
    code, text = _export(copy, tmp_path / "a.root")
    assert code == 2 and f"{sample}: 1 of {store.layout.n_chunks}" in text and "--partial" in text
    assert not (tmp_path / "a.root").exists() and not (tmp_path / "a.root.tmp").exists()
    code, text = _export(copy, tmp_path / "a.root", "--partial")
    assert code == 0, text
    assert "finished chunks only" in text
    with uproot.open(tmp_path / "a.root") as f:
        chunks = f[sample]["chunk"].array(library="np")
        assert 1 not in set(chunks) and len(chunks) == (store.layout.n_chunks - 1) * store.layout.chunk_size
        assert json.loads(str(f["hpcmix"]))["partial"] is True


def test_bad_input_is_a_clear_error(tmp_path):
    code, text = _export(tmp_path, tmp_path / "x.root")
    assert code == 2 and "no hpcmix event store" in text
    code, text = _export(tmp_path, tmp_path / "x.root", "--format", "csv")
    assert code == 2 and "'csv' is not 'root'" in text


@pytest.mark.pythia
def test_an_unknown_sample_is_refused(small_store, tmp_path):
    code, text = _export(small_store, tmp_path / "x.root", "--sample", "Zprime")
    assert code == 2 and "unknown sample(s) ['Zprime']" in text


@pytest.mark.pythia
def test_the_reweighting_weights_are_exported_per_network(small_store, tmp_path):
    """Every finished weight becomes a branch per network (network 0 the nominal, unsuffixed); a weight with
    unwritten chunks is left out and said so."""
    copy = tmp_path / "events.zarr"
    shutil.copytree(small_store, copy)
    store = EventStore(copy)
    layout = store.layout
    s = layout.samples[0]
    rng = np.random.default_rng(3)
    values = rng.uniform(0.5, 2.0, (layout.n_events, 2))
    store.create_weight(s, "heavy", "a" * 12, n_networks=2, provenance={"test": True})
    store.create_weight(s, "half", "b" * 12, n_networks=1, provenance={"test": True})
    for c in range(layout.n_chunks):
        store.write_weight_chunk(s, "heavy", "a" * 12, c, values[store.chunk_slice(c)])
    store.write_weight_chunk(s, "half", "b" * 12, 0, values[store.chunk_slice(0), :1])
    out = tmp_path / "w.root"
    code, text = _export(copy, out)
    assert code == 0, text
    assert f"{s}: {layout.n_events} events ({layout.n_chunks} chunks) -> TTrees {s}, {s}_cutflow; " \
           "weights weight_heavy, weight_heavy_net1" in text
    assert f"{s}: weight half/{'b' * 12} left out: {layout.n_chunks - 1} of the {layout.n_chunks} exported " \
           "chunks have no weights written" in text
    with uproot.open(out) as f:
        t = f[s].arrays(["weight_heavy", "weight_heavy_net1"], library="np")
        np.testing.assert_array_equal(t["weight_heavy"], values[:, 0])
        np.testing.assert_array_equal(t["weight_heavy_net1"], values[:, 1])
        assert not [k for k in f[s].keys() if k.startswith("weight_half")]
        assert not [k for k in f[layout.samples[1]].keys() if k.startswith("weight_")]
        info = json.loads(str(f["hpcmix"]))
        assert info["format"] == 2
        assert info["weights"][s]["weight_heavy_net1"] == {"name": "heavy", "address": "a" * 12, "network": 1}
        assert list(info["weights_left_out"][s]) == [f"half/{'b' * 12}"]
