"""Generation with real Pythia: physics, determinism, store resume and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import study_with

from hpcmix.generate.processes import load_catalogue
from hpcmix.generate.pythia_task import ChunkSpec, GenerationError, generate_chunk
from hpcmix.generate.run import derive_arrays, plan_generation, run_generation
from hpcmix.generate.seeds import PYTHIA_SEED_MAX, pythia_seeds, smearing_rng
from hpcmix.physics.features import FEATURE_NAMES, frame_transform
from hpcmix.physics.layout import NU_MINUS, NU_PLUS, PI0_MINUS, PI0_PLUS, PI_MINUS, PI_PLUS
from hpcmix.orchestrate.executor import InProcess
from hpcmix.physics.selection import visible_tau_cutflow
from hpcmix.schema import ConfigError
from hpcmix.store import EventStore, StoreMismatchError

pytestmark = pytest.mark.pythia


def _study(components=("H",), events=None, *, chunk_size=None, profile=None, **layer):
    """A resolved study for a generation test: ``events`` per split (all three), fast settings."""
    generate = {**layer.pop("generate", {})}
    if events is not None:
        generate["events"] = events
    if chunk_size is not None:
        generate["chunk_size"] = chunk_size
    if profile is not None:
        generate["profile"] = profile
    return study_with(components=list(components), generate=generate, **layer)


def _each(n):
    return {"train": n, "template": n, "test": n}


def _all_events(store, sample):
    ds = EventStore(store).dataset(sample)
    return ds["truth_p4"].values, ds["truth_vertex"].values, ds["features"].values


# -- physics on real events ---------------------------------------------------------------

def test_phi_star_amplitude_has_opposite_signs_for_h_and_a(small_store):
    """p(phi*) = c +- a cos(phi*): the moment estimator a = <cos phi*> / pi, with its error."""
    col = FEATURE_NAMES.index("phi_star")
    amp = {}
    for sample in ("H", "A"):
        cos = np.cos(_all_events(small_store, sample)[2][:, col].astype(float))
        amp[sample] = (cos.mean() / np.pi, cos.std() / np.pi / np.sqrt(cos.size))
    (a_h, e_h), (a_a, e_a) = amp["H"], amp["A"]
    assert a_a > 0 > a_h
    assert (a_a - a_h) / np.hypot(e_a, e_h) > 4
    # PHYSICS.md: |a| near 0.04 after the cuts
    assert 0.015 < a_a < 0.07 and -0.07 < a_h < -0.015


def test_frame_invariants_on_real_events(small_store):
    p4, vertex, _ = _all_events(small_store, "A")
    ft = frame_transform(p4, vertex)
    pions = ft.pions  # pi+, pi0+, pi-, pi0-
    total = pions.sum(axis=1)
    scale = pions[..., 3].sum(axis=1)
    assert np.abs(total[:, :3]).max() / scale.max() < 1e-9
    tau_minus = pions[:, 2] + pions[:, 3]
    assert np.abs(tau_minus[:, :2]).max() < 1e-9 * scale.max()
    assert (tau_minus[:, 2] > 0).all()
    assert np.abs(pions[:, 0, 1]).max() < 1e-9 * scale.max()


def test_impact_parameters_are_perpendicular_to_pion_tracks(small_store):
    from hpcmix.physics.features import impact_parameters

    p4, vertex, _ = _all_events(small_store, "H")
    ip = impact_parameters(p4, vertex)
    for k, pion in enumerate((PI_PLUS, PI_MINUS)):
        direction = p4[:, pion, :3] / np.linalg.norm(p4[:, pion, :3], axis=1, keepdims=True)
        cosine = (ip[:, k] * direction).sum(axis=1) / np.maximum(np.linalg.norm(ip[:, k], axis=1), 1e-300)
        assert np.abs(cosine).max() < 1e-6
    # tau decay lengths are ~mm at these energies: vertices are displaced, IPs are not all zero
    assert np.median(np.linalg.norm(vertex, axis=2)) > 0.1
    assert np.median(np.linalg.norm(ip, axis=2)) > 1e-3


def test_stored_events_pass_the_selection_and_cutflow_is_consistent(small_store, small_study):
    store = EventStore(small_store)
    cuts = small_study.selection
    assert store.layout.settings["selection"] == cuts.as_dict()
    for sample in ("H", "A"):
        p4, _, _ = _all_events(small_store, sample)
        assert visible_tau_cutflow(p4, cuts)["m_vis"].all()
        flow = store.cutflow(sample)
        counts = list(flow.values())
        assert counts == sorted(counts, reverse=True), "a cut flow never grows"
        assert flow["lepton_veto"] == store.layout.n_events
        # the visible-tau cuts remove a sizeable fraction of events at 450 GeV
        assert 0.4 < flow["lepton_veto"] / flow["tried"] < 0.95
        # charges: pi+ on the plus side, neutrino energies positive
        assert (p4[:, NU_PLUS, 3] > 0).all() and (p4[:, NU_MINUS, 3] > 0).all()
        sigma, err = store.cross_section(sample)
        assert sigma > 0 and err >= 0


def test_features_and_smeared_features_come_from_the_same_events(small_store):
    ds = EventStore(small_store).dataset("H")
    raw, smeared = ds["features"].values, ds["features_smeared"].values
    assert raw.shape == smeared.shape and np.isfinite(raw).all() and np.isfinite(smeared).all()
    m_vis = FEATURE_NAMES.index("m_vis")
    # smearing moves m_vis by percent, not by the event-to-event spread of tens of GeV
    rel = np.abs(smeared[:, m_vis] / raw[:, m_vis] - 1)
    assert np.median(rel) < 0.1
    assert np.corrcoef(raw[:, m_vis], smeared[:, m_vis])[0, 1] > 0.95


# -- determinism ---------------------------------------------------------------------------

def test_same_key_gives_identical_chunk(small_plan):
    spec = ChunkSpec(**{**small_plan.specs[0].__dict__, "n_events": 50})
    first, second = generate_chunk(spec), generate_chunk(spec)
    assert np.array_equal(first.p4, second.p4) and np.array_equal(first.vertex, second.vertex)
    assert first.cutflow == second.cutflow
    other = generate_chunk(ChunkSpec(**{**spec.__dict__, "seed": spec.seed + 1}))
    assert not np.array_equal(first.p4, other.p4)


def test_chunks_from_dask_workers_equal_serial_chunks(small_store, small_plan, small_study):
    # the plan carries the study's settings, not config read on a worker
    assert small_plan.smearing == small_study.smearing.widths()
    assert small_plan.seed == small_study.seed == 4242
    assert all(spec.cuts == small_study.selection for spec in small_plan.specs)
    store = EventStore(small_store)
    spec = small_plan.specs[3]  # any chunk: generate it again in this process
    truth = generate_chunk(spec)
    arrays = derive_arrays(truth.p4, truth.vertex, smearing_rng(small_plan.seed, spec.sample, spec.chunk),
                           small_plan.smearing)
    ds = store.dataset(spec.sample).isel(event=store.chunk_slice(spec.chunk))
    for name, values in arrays.items():
        assert np.array_equal(ds[name].values, values), name


def test_pythia_seeds_are_unique_in_range_and_stable():
    keys = [(s, c) for s in ("H", "A", "Z") for c in range(5000)]
    seeds = pythia_seeds(7, keys)
    values = np.array(list(seeds.values()))
    assert len(np.unique(values)) == len(keys)
    assert values.min() >= 1 and values.max() <= PYTHIA_SEED_MAX
    assert pythia_seeds(7, keys[:10]) == {k: seeds[k] for k in keys[:10]}
    assert pythia_seeds(8, keys[:10]) != {k: seeds[k] for k in keys[:10]}


# -- store: resume, completion, splits ------------------------------------------------------

def test_rerun_skips_done_chunks_and_regenerates_torn_ones(tmp_path, local_executor):
    plan = plan_generation(_study(("A",), _each(50), chunk_size=50, profile="fast", seed=3))
    assert plan.n_tasks == 3
    path = str(tmp_path / "s.zarr")
    first = run_generation(plan, path, executor=local_executor, progress=False)
    assert (first.chunks_run, first.chunks_skipped) == (3, 0)
    store = EventStore(path)
    before = store.dataset("A")["features"].values.copy()
    again = run_generation(plan, path, executor=local_executor, progress=False)
    assert (again.chunks_run, again.chunks_skipped) == (0, 3)
    # tear chunk 1: data overwritten after the completion record (as a killed rewrite would leave it)
    import zarr

    zarr.open_group(path, mode="r+")["A/features"][60:70] = 0.0
    assert store.done_chunks("A", verify=True).tolist() == [True, False, True]
    # in this process (no cluster): the same numbers as the Dask workers wrote
    healed = run_generation(plan, path, executor=InProcess(), progress=False)
    assert (healed.chunks_run, healed.chunks_skipped) == (1, 2)
    assert np.array_equal(store.dataset("A")["features"].values, before)


def test_chunk_without_completion_record_is_not_done(tmp_path, small_plan):
    plan = plan_generation(_study(("H",), _each(20), chunk_size=20, profile="fast", seed=3))
    path = str(tmp_path / "s.zarr")
    store = EventStore.create(path, plan.layout)
    import zarr

    zarr.open_group(path, mode="r+")["H/features"][0:20] = 1.0  # data, but no record
    assert not store.done_chunks("H").any()
    with pytest.raises(ValueError, match="unfinished chunk"):
        store.split("H", "test")


def test_splits_are_disjoint_chunk_aligned_ranges(small_store):
    store = EventStore(small_store)
    ranges = store.layout.split_ranges()
    assert ranges == {"train": (0, 1000), "template": (1000, 1500), "test": (1500, 2000)}
    x_train = store.features("A", "train", smeared=False)
    x_test = store.features("A", "test", smeared=False)
    assert x_train.shape == (1000, len(FEATURE_NAMES)) and x_test.shape == (500, len(FEATURE_NAMES))
    assert not np.isin(x_test[:, 0], x_train[:, 0]).any()
    cols = store.features("A", "test", smeared=True, names=["phi_star", "m_vis"])
    assert cols.shape == (500, 2) and cols.dtype == np.float32


def test_store_opens_with_xarray_with_feature_coordinate(small_store):
    import xarray as xr

    ds = xr.open_zarr(small_store, group="A", consolidated=False)
    assert list(ds["feature"].values) == list(FEATURE_NAMES)
    assert ds["features"].dims == ("event", "feature")
    assert ds["truth_p4"].attrs["units"] == "GeV"
    assert ds.attrs["splits"]["test"] == [1500, 2000]
    assert ds["features"].sel(feature="phi_star").shape == (2000,)


def test_provenance_in_attributes(small_store):
    import zarr

    meta = dict(zarr.open_group(small_store, mode="r").attrs)["hpcmix"]
    settings = meta["layout"]["settings"]
    assert settings["pythia8mc"] == "8.317.2"
    assert "35:mWidth = 7.98759" in settings["pythia_settings"]["H"]
    assert settings["seed"] == 4242 and meta["hpcmix_version"]
    ds = EventStore(small_store).dataset("H")
    assert (ds["pythia_seed"].values > 0).all() and len(set(ds["pythia_seed"].values)) == 4


# -- bad input: clear errors before any cluster work -----------------------------------------

def test_unknown_process():
    # caught when the study is resolved, before any plan or cluster
    with pytest.raises(ConfigError, match=r"unknown process 'Zprime'.*known processes: A, H"):
        _study(("Zprime",), _each(10))


def test_rejected_pythia_setting_is_named():
    bad = {"Hbad": {"resonance": 35, "settings": ["Higgs:useBSM = on", "Beams:eCM = thirteen"]}}
    with pytest.raises(ValueError, match=r"rejected the setting 'Beams:eCM = thirteen'"):
        plan_generation(_study(("Hbad",), _each(10), processes=bad))
    unknown = {"Hbad": {"resonance": 35, "settings": ["Higgs:noSuchSwitch = on"]}}
    with pytest.raises(ValueError, match=r"Higgs:noSuchSwitch"):
        plan_generation(_study(("Hbad",), _each(10), processes=unknown))


@pytest.mark.parametrize("kwargs, message", [
    ({"events": {**_each(10), "test": 0}}, r"field 'generate\.events'.*integer >= 1"),
    ({"events": {**_each(10), "test": -5}}, r"field 'generate\.events'.*integer >= 1"),
    ({"events": {"test": 10}}, r"field 'generate\.events'.*train/template/test"),
    ({"events": _each(10), "chunk_size": 0}, r"field 'generate\.chunk_size'.*integer >= 1"),
    ({"events": _each(10), "chunk_size": -1}, r"field 'generate\.chunk_size'.*integer >= 1"),
])
def test_non_positive_counts(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _study(("H",), **kwargs)


def test_existing_store_with_other_settings_is_refused(tmp_path):
    path = str(tmp_path / "s.zarr")
    EventStore.create(path, plan_generation(_study(("H",), _each(10), chunk_size=10, seed=1)).layout)
    other = plan_generation(_study(("H",), _each(10), chunk_size=10, seed=2)).layout
    with pytest.raises(StoreMismatchError, match=r"seed: 1 -> 2.*--overwrite"):
        EventStore.create(path, other)
    assert EventStore.create(path, other, overwrite=True).layout.settings["seed"] == 2


def test_process_defined_as_data_generates(tmp_path):
    """A job file can add a process (here Z -> tau tau) without touching Python."""
    z = {"Z": {"resonance": 23, "description": "Drell-Yan Z -> tau tau",
               "settings": ["WeakSingleBoson:ffbar2gmZ = on", "23:onMode = off", "23:onIfMatch = 15 -15",
                            "PhaseSpace:mHatMin = 60."]}}
    plan = plan_generation(_study(("Z",), _each(5), chunk_size=5, profile="fast", seed=5, processes=z,
                                  selection={"tau_vis_pt_min": 5.0}))
    assert plan.specs[0].cuts.tau_vis_pt_min == 5.0
    truth = generate_chunk(plan.specs[0])
    assert truth.p4.shape == (5, 6, 4) and truth.cutflow["tried"] >= 5


def test_visible_mass_window_is_applied_and_counted():
    """The reference code's 150-500 GeV m_vis window, narrowed so that it bites: every kept event is inside."""
    plan = plan_generation(_study(("A",), _each(40), chunk_size=40, profile="fast", seed=11,
                                  selection={"m_vis_min": 300.0, "m_vis_max": 400.0}))
    assert plan.layout.settings["selection"]["m_vis_min"] == 300.0
    truth = generate_chunk(plan.specs[0])
    p4 = truth.p4[:, [PI_PLUS, PI0_PLUS, PI_MINUS, PI0_MINUS]].sum(axis=1)
    m_vis = np.sqrt(p4[:, 3] ** 2 - (p4[:, :3] ** 2).sum(axis=1))
    assert ((m_vis >= 300.0) & (m_vis < 400.0)).all()
    flow = truth.cutflow
    # most events at 450 GeV have m_vis below 300 GeV: the window removes more than it keeps
    assert flow["m_vis"] < 0.5 * flow["delta_r"]
    assert flow["lepton_veto"] == 40


def test_process_without_taus_stops_with_the_cutflow():
    nothing = {"Hmumu": {"resonance": 35, "settings": ["Higgs:useBSM = on", "HiggsBSM:gg2H2 = on",
                                                       "35:m0 = 450.", "35:onMode = off", "35:onIfMatch = 13 -13"]}}
    plan = plan_generation(_study(("Hmumu",), _each(5), chunk_size=5, profile="fast", seed=5, processes=nothing,
                                  generate={"max_tries_factor": 4}))
    with pytest.raises(GenerationError, match=r"only 0 of 5 events passed after 20 tries.*tau_pair': 0"):
        generate_chunk(plan.specs[0])


def test_catalogue_validates_process_fields():
    with pytest.raises(ValueError, match="unknown field"):
        load_catalogue({"X": {"resonance": 1, "settings": [], "colour": "red"}})
    with pytest.raises(ValueError, match="exactly one of 'resonance'"):
        load_catalogue({"X": {"settings": []}})


def test_store_interrupted_while_laid_out_is_recreated(tmp_path):
    import zarr

    plan = plan_generation(_study(("H",), _each(10), chunk_size=10, seed=1))
    path = str(tmp_path / "s.zarr")
    zarr.open_group(path, mode="w", attributes={"hpcmix_layout": "unfinished"})  # as a kill leaves it
    assert EventStore.create(path, plan.layout).layout == plan.layout
    foreign = str(tmp_path / "other.zarr")
    zarr.open_group(foreign, mode="w")  # somebody else's store is never deleted
    with pytest.raises(StoreMismatchError, match="not a readable hpcmix event store"):
        EventStore.create(foreign, plan.layout)
