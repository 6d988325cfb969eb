"""Background processes with real Pythia: Drell-Yan gamma*/Z -> tau tau and ttbar with W -> tau nu."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from conftest import run_in_process, study_with, write_job

from hpcmix.generate.processes import load_catalogue
from hpcmix.generate.pythia_task import GenerationError, _tau_products, find_taus, generate_chunk, make_pythia
from hpcmix.generate.run import plan_generation
from hpcmix.physics.features import FEATURE_NAMES, compute_features

pytestmark = pytest.mark.pythia

LOOSE = {"tau_vis_pt_min": 5.0}   # most events pass: the tests see the taus, not the cuts


def _single(sample, n, *, profile="fast", seed=3, selection=None, processes=None, generate=None):
    layer = {"components": [sample], "seed": seed, "selection": selection or {},
             "generate": {"events": {"train": n, "template": n, "test": n}, "chunk_size": n, "profile": profile,
                          **(generate or {})}}
    if processes:
        layer["processes"] = processes
    return plan_generation(study_with(**layer))


def _z_with(**changes):
    """The built-in Z as a job-file process, with some settings replaced."""
    z = load_catalogue().get("Z").as_dict()
    settings = [s for s in z["settings"] if s.split("=")[0].strip() not in changes]
    settings += [f"{k} = {v}" for k, v in changes.items()]
    return {"Zx": {"resonance": z["resonance"], "settings": settings, "description": "test copy of Z"}}


def test_built_in_backgrounds_are_data():
    cat = load_catalogue()
    z, tt = cat.get("Z"), cat.get("ttbar")
    assert z.resonance == 23 and "PhaseSpace:mHatMin = 150." in z.settings
    assert tt.resonance is None and tt.tau_chains == ((6, 24), (-6, -24))
    # ttbar pins the full profile: in a fast study its chunks still hadronise
    assert cat.profile_of(tt, "fast") == "full" and cat.profile_of(z, "fast") == "fast"
    assert "HadronLevel:Hadronize = off" not in cat.pythia_settings(tt, "fast")
    assert "HadronLevel:Hadronize = off" in cat.pythia_settings(z, "fast")
    # resonance processes keep their stored description (store addresses unchanged)
    assert set(cat.get("H").as_dict()) == {"name", "resonance", "settings", "description"}


@pytest.mark.parametrize("spec, message", [
    ({"settings": []}, "exactly one of 'resonance'"),
    ({"resonance": 23, "tau_chains": [[24], [-24]], "settings": []}, "exactly one of 'resonance'"),
    ({"tau_chains": [[6, 24]], "settings": []}, "two non-empty lists"),
    ({"tau_chains": [[6, 24], []], "settings": []}, "two non-empty lists"),
    ({"tau_chains": [[6, "W"], [-6, -24]], "settings": []}, "two non-empty lists"),
    ({"resonance": 0, "settings": []}, "nonzero integer PDG id"),
    ({"resonance": None, "settings": []}, "exactly one of 'resonance'"),
    ({"tau_chains": [[6, 24], [6, 24]], "settings": []}, "opposite sign"),
    ({"tau_chains": [[24], [23]], "settings": []}, "opposite sign"),
    ({"resonance": 23, "profile": "quick", "settings": []}, "unknown profile 'quick'"),
])
def test_process_data_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        load_catalogue({"X": spec})


def test_dy_selected_events_need_mhat_above_the_m_vis_cut():
    """m_vis <= m_tautau <= mHat: with mHatMin lowered to 100 GeV, no event below mHat = 150 reaches m_vis = 150."""
    proc = _z_with(**{"PhaseSpace:mHatMin": "100."})["Zx"]
    cat = load_catalogue({"Zx": proc})
    plan = _single("Zx", 5, processes={"Zx": proc})
    pythia = make_pythia(cat.pythia_settings("Zx", "fast"), 17)
    mhat, mvis = [], []
    while len(mhat) < 800:
        if not pythia.next():
            continue
        taus = find_taus(pythia.event, plan.specs[0])
        prods = [_tau_products(pythia.event, i) for i in taus] if taus else [None]
        if None in prods:
            continue
        vis = np.sum([[q.px(), q.py(), q.pz(), q.e()] for p in prods for q in p[1:3]], axis=0)
        mvis.append(math.sqrt(max(vis[3] ** 2 - vis[:3] @ vis[:3], 0.0)))
        mhat.append(pythia.infoPython().mHat())
    mhat, mvis = np.array(mhat), np.array(mvis)
    assert (mhat < 150).sum() > 200          # the lowered cut lets many such events through ...
    assert np.all(mvis <= mhat * (1 + 1e-9))  # ... but m_vis never exceeds mHat,
    assert not np.any((mhat < 150) & (mvis >= 150))  # so mHatMin = 150 GeV loses no selected event
    assert np.any((mhat >= 150) & (mvis >= 150))


def test_background_whose_selection_keeps_nothing_stops_with_its_cutflow():
    plan = _single("Zx", 5, processes=_z_with(**{"PhaseSpace:mHatMin": "60.", "PhaseSpace:mHatMax": "140."}),
                   selection={"m_vis_min": 150.0}, generate={"max_tries_factor": 20})
    with pytest.raises(GenerationError, match=r"only 0 of 5 events passed after 100 tries.*'m_vis': 0"):
        generate_chunk(plan.specs[0])


def test_dy_phi_star_is_flat():
    """No cos phi* term of the H/A size (a = 0.04): the vector boson's spin correlations average it out."""
    plan = _single("Z", 700, seed=8, selection=LOOSE)
    truth = generate_chunk(plan.specs[0])
    phi = compute_features(truth.p4, truth.vertex)[:, FEATURE_NAMES.index("phi_star")].astype(float)
    a = np.cos(phi).mean() / np.pi
    a_err = np.cos(phi).std() / np.sqrt(phi.size) / np.pi
    assert a_err < 0.0105
    assert abs(a) < 0.02 and abs(a) < 3 * a_err
    # sigmaGen in mb: the gamma*/Z cross section above 150 GeV is a few pb
    assert 3e-9 < truth.sigma_gen_mb < 1.5e-8


def test_ttbar_taus_come_from_the_w_bosons_and_the_lepton_veto_bites():
    plan = _single("ttbar", 60, profile="fast", seed=4, selection=LOOSE)   # pinned: generated with 'full'
    spec = plan.specs[0]
    assert "HadronLevel:Hadronize = off" not in spec.settings and spec.tau_chains == ((6, 24), (-6, -24))
    pythia = make_pythia(spec.settings, spec.seed)
    seen = 0
    while seen < 20:
        if not pythia.next():
            continue
        taus = find_taus(pythia.event, spec)
        assert taus is not None                       # both W are forced to tau nu
        ev = pythia.event
        ids = sorted(ev[i].id() for i in taus)
        assert ids == [-15, 15]
        for i in taus:  # the tau's mother is the W of the same charge sign (tau+ from W+)
            mother = ev[ev[i].mother1()]
            assert abs(mother.id()) == 24 and np.sign(mother.id()) == -np.sign(ev[i].id())
        seen += 1
    truth = generate_chunk(spec)
    flow = truth.cutflow
    # b-hadron semileptonic decays: the veto removes a good share of the events that reach it
    assert flow["lepton_veto"] == 60 and flow["n_taus"] - flow["lepton_veto"] >= 5
    assert 2e-9 < truth.sigma_gen_mb < 1.5e-8


# -- the background study end to end, at tiny size -------------------------------------------------

def tiny_backgrounds_job(out) -> dict:
    """jobs/backgrounds-small.yaml shrunk to seconds: loose cuts so that ttbar passes, a small network."""
    with open("jobs/backgrounds-small.yaml") as f:
        job = yaml.safe_load(f)
    job.update(output=str(out), smearing=["none"],
               selection={"tau_vis_pt_min": 5.0, "m_vis_min": 0.0, "m_vis_max": None},
               classifier={"max_epochs": 2, "batch_size": 64, "hidden_layers": [16]})
    job["generate"].update(chunk_size=150, events={"train": 150, "template": 150, "test": 150})
    job["toys"].update(n_toys=40, batch_size=20, n_events=[30], fractions={"Z": [0.0, 0.5], "ttbar": [0.0, 0.1]})
    return job


@pytest.fixture(scope="module")
def tiny_backgrounds(tmp_path_factory):
    from hpcmix.orchestrate.pipeline import run_study
    from hpcmix.orchestrate.sites import load_site
    from hpcmix.study import load_study

    tmp = tmp_path_factory.mktemp("backgrounds")
    job = write_job(tmp, tiny_backgrounds_job(tmp / "out"), "bg.yaml")
    # the default site, as `hpcmix run` uses it (the kill test compares against this run)
    site = load_site("local").with_overrides(cpu={"dashboard_address": ":0"})
    return tmp, job, run_study(load_study(job), site=site, progress=False, echo=lambda *a: None)


@pytest.mark.slow
@pytest.mark.tensorflow
def test_background_study_fits_every_estimator_with_signal_scaled_test_sets(tiny_backgrounds):
    from hpcmix.orchestrate.record import StageRecord
    from hpcmix.results import open_results

    _, _, out = tiny_backgrounds
    ds = open_results(out.results_path)
    assert list(ds["estimator"].values) == ["phi_star", "nn", "nn_multiclass", "nn_pairwise"]
    assert ds["alpha_hat"].dims == ("estimator", "smearing", "treatment", "fraction_Z", "fraction_ttbar", "alpha",
                                    "n_events", "toy")
    # n_events counts the signal: N = 30 / (1 - Z - ttbar)
    n = ds["events_per_toy"].sel(n_events=30)
    assert int(n.sel(fraction_Z=0.0, fraction_ttbar=0.0)) == 30 and int(n.sel(fraction_Z=0.5, fraction_ttbar=0.1)) == 75
    summ = ds.mixture.summary()
    floated = summ.sel(treatment="floated")
    assert np.isfinite(floated["coverage"]).all() and np.isfinite(floated["ks_pvalue"]).all()
    assert np.isfinite(ds["cramer_rao"]).all()
    # toys.treatment_of {ttbar: fixed}: every fit keeps ttbar at its true fraction, Z floats
    fl = ds.sel(treatment="floated")
    assert np.allclose(fl["fraction_hat_ttbar"] - fl["fraction_ttbar"], 0.0)
    assert not np.allclose(fl["fraction_hat_Z"] - fl["fraction_Z"], 0.0)
    # every network: 2 pairwise + the pair + one 4-class; the K-class one reports an AUC per class
    labels = set(out.training)
    assert labels == {"none", "pairwise:Z:none", "pairwise:ttbar:none", "multiclass:none"}
    multi = out.training["multiclass:none"]["info"]
    assert set(multi["roc_auc_vs_first"]) == {"A", "Z", "ttbar"}
    # Z is easy to tell from H even for a tiny network: its m_vis is softer
    assert multi["roc_auc_vs_first"]["Z"] > 0.6
    for est in ("nn_multiclass", "nn_pairwise"):
        rec = StageRecord.read(out.plan.templates[(est, "none")].folder, stage="templates")
        assert set(rec.info["closure"]) == {"A", "Z", "ttbar"}
        for c in rec.info["closure"].values():
            assert np.isfinite(c["mean_r_on_reference"]) and c["mean_r_on_reference"] > 0
    assert "Density ratios" in out.table and "multiclass:none" in out.table


@pytest.mark.slow
@pytest.mark.tensorflow
def test_zero_background_cells_reproduce_the_two_component_study(tiny_backgrounds, tmp_path):
    """Same seeds, same H and A events: the phi* cell without backgrounds is the two-component study's."""
    from hpcmix.results import open_results

    _, _, out = tiny_backgrounds
    k4 = open_results(out.results_path)
    job = tiny_backgrounds_job(tmp_path / "out")
    job.update(components=["H", "A"])
    job["toys"] = {"estimators": ["phi_star"], "alpha": [0.7], "n_events": [30], "n_toys": 40, "batch_size": 20}
    k2 = open_results(run_in_process(write_job(tmp_path, job, "k2.yaml")).results_path)
    a2 = k2["alpha_hat"].sel(estimator="phi_star", smearing="none", alpha=0.7, n_events=30).values
    a4 = k4["alpha_hat"].sel(estimator="phi_star", smearing="none", treatment="fixed", fraction_Z=0.0,
                             fraction_ttbar=0.0, alpha=0.7, n_events=30).values
    assert np.isfinite(a2).all()
    np.testing.assert_allclose(a4, a2, atol=1e-6)


@pytest.mark.slow
@pytest.mark.tensorflow
def test_background_study_killed_in_training_resumes_with_identical_results(tiny_backgrounds):
    """SIGKILL `hpcmix run` while the networks train; the rerun redoes nothing finished and matches."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from hpcmix.orchestrate.pipeline import plan_study
    from hpcmix.results import open_results
    from hpcmix.study import load_study

    tmp, _, uninterrupted = tiny_backgrounds
    job = write_job(tmp, tiny_backgrounds_job(tmp / "killed"), "killed.yaml")
    plan = plan_study(load_study(job))
    log = tmp / "killed.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "hpcmix", "run", job, "--no-progress"], stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while not any(os.path.isdir(m.folder) for m in plan.models.values()):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "training not reached in 300 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    rerun = subprocess.run([sys.executable, "-m", "hpcmix", "run", job, "--no-progress"], capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    n_chunks = len(plan.generation.specs)
    assert f"generate {n_chunks}" in rerun.stdout.split("already done:")[-1]
    a = open_results(uninterrupted.results_path)
    b = open_results(os.path.join(tmp, "killed", "results.zarr"))
    for name in ("alpha_hat", "fraction_hat_Z", "fraction_hat_ttbar"):
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_dry_run_estimate_counts_each_process_and_the_k_fraction_fits(tmp_path):
    """The estimate divides each process's events by its own efficiency and rate, and fits of cells with
    nuisances by the K-fraction rate, once per treatment (the small job's toys took 444 s on two cores
    where a two-component rate promised 25 core-seconds)."""
    from hpcmix.orchestrate.pipeline import plan_study
    from hpcmix.study import load_study

    job = "jobs/backgrounds-small.yaml"
    plan = plan_study(load_study(job, sets=[f"output={tmp_path}"]))
    est = plan.study.estimates
    cells = plan.cells
    assert cells and all(c.has_nuisances for c in cells)
    fitted = plan.study.toys.n_toys * sum(c.n_events * len(c.treatments) for c in cells)
    assert plan.estimate().toys * 3600 == pytest.approx(fitted / est["fraction_toy_events_per_core_second"])
    n = plan.generation.layout.n_events
    own = est["processes"]
    expect = sum(n / own.get(p, {}).get("selection_efficiency", est["selection_efficiency"])
                 / (own.get(p, {}).get("tried_events_per_core_second") or est["tried_events_per_core_second"])[
                     "full" if p == "ttbar" else "fast"] for p in ("H", "A", "Z", "ttbar"))
    assert plan.estimate().generate * 3600 == pytest.approx(expect)
    slower = plan_study(load_study(job, sets=[f"output={tmp_path}", "estimates.processes.Z.selection_efficiency=0.035"]))
    z = n / 0.07 / own["Z"]["tried_events_per_core_second"]["fast"]
    assert (slower.estimate().generate - plan.estimate().generate) * 3600 == pytest.approx(z)
