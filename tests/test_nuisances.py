"""Studies with more than two components: the job file, the plan, the toys of every treatment, the results."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from hpcmix.orchestrate.pipeline import plan_study
from hpcmix.schema import ConfigError
from hpcmix.study import load_study, resolve_study

Z_PROCESS = {"description": "Drell-Yan gamma*/Z -> tau tau, mHat > 150 GeV", "resonance": 23,
             "settings": ["WeakSingleBoson:ffbar2gmZ = on", "PhaseSpace:mHatMin = 150.", "23:onMode = off",
                          "23:onIfMatch = 15 -15"]}


def k3_job(**toys) -> dict:
    """A three-component job (H, A and a job-defined Z) in job-file layout."""
    return {"name": "k3", "seed": 5, "components": ["H", "A", "Z"], "processes": {"Z": Z_PROCESS},
            "poi": {"name": "alpha", "fraction_of": "A", "among": ["H", "A"]},
            "generate": {"profile": "fast", "chunk_size": 100, "events": {"train": 200, "template": 200, "test": 200}},
            "smearing": ["none"],
            "toys": {"estimators": ["phi_star"], "alpha": [0.7], "n_events": [30], "n_toys": 40, "batch_size": 20,
                     "fractions": {"Z": [0.0, 0.3]}, "treatments": ["fixed", "floated", "constrained"],
                     "constraint_width": {"Z": 0.05}, **toys}}


def test_the_example_job_file_resolves_with_its_nuisance():
    study = load_study("jobs/three-components.yaml")
    assert study.components == ("H", "A", "Z") and study.nuisances == ("Z",)
    assert study.fit_components == ("H", "A", "Z") and study.pair == ("H", "A")
    assert study.toys.fractions == {"Z": (0.0, 0.2, 0.5)}
    assert study.toys.treatments == ("fixed", "floated", "constrained")
    assert study.toys.constraint_width == {"Z": 0.05}


@pytest.mark.parametrize("change, message", [
    ({"poi": {"name": "alpha", "fraction_of": "A", "among": ["H", "B"]}}, r"component\(s\) \['B'\] that the study"),
    ({"toys": {"fractions": {"W": [0.1]}}}, r"'toys.fractions' names component\(s\) \['W'\]"),
    ({"toys": {"fractions": {"Z": [0.2], "A": [0.1]}}}, r"share what the nuisances leave"),
    ({"toys": {"fractions": {}}}, r"give toys.fractions.Z"),
    ({"toys": {"fractions": {"Z": [0.99, 1.0]}}}, r"distinct true fractions in \[0, 1\)"),
    ({"toys": {"fractions": {"Z": [0.1, 0.1 + 1e-7]}}}, r"values closer than 1e-6"),
    ({"toys": {"constraint_width": {"Z": 0}}}, r"'toys.constraint_width.Z' has value 0"),
    ({"toys": {"constraint_width": {"Z": -0.1}}}, r"'toys.constraint_width.Z' has value -0.1"),
    ({"toys": {"constraint_width": {}}}, r"give toys.constraint_width.Z"),
    ({"toys": {"constraint_width": {"Z": 0.1, "H": 0.1}}}, r"names \['H'\], which are not nuisance"),
    ({"toys": {"treatments": ["profiled"]}}, r"'toys.treatments'"),
    ({"components": ["A"]}, r"at least two processes"),
    ({"poi": {"name": "alpha", "fraction_of": "A", "among": ["H", "A", "Z"]}}, r"'poi.among' must name two"),
])
def test_bad_nuisance_settings_are_refused_before_any_cluster(change, message):
    job = k3_job()
    for key, value in change.items():
        if key == "toys":
            job["toys"] = {**job["toys"], **value}
            for k, v in value.items():
                job["toys"][k] = v
        else:
            job[key] = value
    with pytest.raises(ConfigError, match=message):
        resolve_study(job, source="job.yaml")


@pytest.mark.parametrize("name, message", [("Z-1", r"only letters, digits and underscores"),
                                           ("hat_Z", r"start with 'hat_'")])
def test_component_names_that_cannot_name_arrays_are_refused(name, message):
    job = k3_job(fractions={name: [0.1]}, constraint_width={name: 0.05})
    job["components"] = ["H", "A", name]
    job["processes"] = {name: Z_PROCESS}
    with pytest.raises(ConfigError, match=message):
        resolve_study(job, source="job.yaml")


def test_fractions_leaving_no_room_name_the_grid_point():
    job = k3_job(fractions={"Z": [0.2, 0.6]})
    job["components"] = ["H", "A", "Z", "Y"]
    job["processes"]["Y"] = Z_PROCESS
    job["toys"]["fractions"]["Y"] = [0.1, 0.4]
    with pytest.raises(ConfigError, match=r"leave no room for the signal.*'Z': 0.6, 'Y': 0.4.*sum to 1 >= 1"):
        resolve_study(job, source="job.yaml")


def test_two_component_jobs_take_no_nuisance_settings():
    study = load_study("jobs/quickstart.yaml")
    assert study.nuisances == () and study.toys.fractions == {} and study.toys.treatments == ()
    with pytest.raises(ConfigError, match=r"names component\(s\) \['Z'\]"):
        load_study("jobs/quickstart.yaml", sets=["toys.fractions={Z: [0.1]}"])


def test_the_plan_has_a_cell_per_fraction_point_and_addresses_that_say_them(tmp_path):
    study = resolve_study(k3_job(n_events=[30, 60]), source="job.yaml").replace(output=str(tmp_path))
    plan = plan_study(study)
    assert len(plan.cells) == 1 * 1 * 2 * 1 * 2        # estimator x smearing x Z points x alpha x N
    assert {c.fractions for c in plan.cells} == {(("Z", 0.0),), (("Z", 0.3),)}
    assert all(c.treatments == ("fixed", "floated", "constrained") and c.widths == (("Z", 0.05),)
               for c in plan.cells)
    assert len({c.address for c in plan.cells}) == len(plan.cells)
    assert "phi_star/none/0.7/30/Z=0.3" in plan.addresses()["toys"]
    text = plan.describe()
    assert "nuisances Z at [0.0, 0.3], fitted fixed, floated, constrained" in text
    # the templates hold all three components, the pair first
    assert all(t.components == ("H", "A", "Z") for t in plan.templates.values())
    # a treatment is a fit of the same toys, not a cell: changing the list moves the toys, not the templates
    other = plan_study(study.replace(toys=study.toys.__class__(**{**study.toys.__dict__, "treatments": ("floated",),
                                                                  "constraint_width": {}})))
    assert {t.address for t in other.templates.values()} == {t.address for t in plan.templates.values()}
    assert not {c.address for c in other.cells} & {c.address for c in plan.cells}


def test_toys_without_nuisance_events_draw_the_two_component_stream():
    """A cell at Z fraction 0 draws exactly the toys of the two-component cell (same seed words, same draws)."""
    from hpcmix.orchestrate.stages.toys import draw_order
    from hpcmix.stats.toys import draw_mixture_toys, draw_toys, toy_seed

    pools = {"H": 300, "A": 250, "Z": 200}
    two = draw_toys(250, 300, alpha=0.7, n_events=40, n_toys=50, rng=toy_seed(9, "nn", "none", 0.7, 40, 1))
    truth = {"H": 0.3, "A": 0.7, "Z": 0.0}
    three = draw_mixture_toys(pools, {k: truth[k] for k in draw_order(("H", "A", "Z"))}, n_events=40, n_toys=50,
                              rng=toy_seed(9, "nn", "none", 0.7, 40, 1, fractions={"Z": 0.0}))
    np.testing.assert_array_equal(three.counts[:, 0], two.n_a)
    np.testing.assert_array_equal(three.index, two.index)
    np.testing.assert_array_equal(three.uses["A"], two.uses_a)
    # any nuisance events: another stream
    other = toy_seed(9, "nn", "none", 0.7, 40, 1, fractions={"Z": 0.1}).random(4)
    assert not np.array_equal(other, toy_seed(9, "nn", "none", 0.7, 40, 1).random(4))


def test_pool_check_counts_nuisance_events(tmp_path):
    from hpcmix.orchestrate.checks import PlanError

    job = k3_job(fractions={"Z": [0.5]}, n_events=[250])
    job["generate"]["events"]["test"] = 100
    study = resolve_study(job, source="job.yaml").replace(output=str(tmp_path))
    with pytest.raises(PlanError, match=r"toys.n_events = 250 at toys.alpha = 0.7, toys.fractions.Z = 0.5 needs up "
                                        r"to .*\d+ distinct Z events \(the Z test pool holds 100\)"):
        plan_study(study)


def test_pool_check_is_exactly_what_the_toys_draw(tmp_path):
    """The plan-time maxima per component are the counts the toys task draws, batch by batch."""
    from hpcmix.orchestrate.checks import toy_pool_problems
    from hpcmix.orchestrate.stages.toys import draw_order
    from hpcmix.stats.toys import draw_mixture_toys, toy_seed

    study = resolve_study(k3_job(n_events=[120]), source="job.yaml").replace(output=str(tmp_path))
    cells = [c for c in plan_study(study.replace(generate=study.generate.__class__(
        **{**study.generate.__dict__, "events": {"train": 200, "template": 200, "test": 1000}}))).cells
             if c.fractions == (("Z", 0.3),)]
    comps = ("H", "A", "Z")
    most = dict.fromkeys(comps, 0)
    for c in cells:
        truth = c.true_fractions(comps)
        for b, n in enumerate(c.batches):
            d = draw_mixture_toys(dict.fromkeys(comps, 1000), {k: truth[k] for k in draw_order(comps)},
                                  n_events=c.n_events, n_toys=n,
                                  rng=toy_seed(c.seed, c.estimator, c.smearing, c.alpha, c.n_events, b,
                                               fractions=dict(c.fractions)))
            for k in comps:
                most[k] = max(most[k], int(d.counts[:, d.components.index(k)].max()))
    for k in comps:
        short = {**dict.fromkeys(comps, 119), k: most[k] - 1}   # every pool < N, so the check draws
        enough = {**dict.fromkeys(comps, 119), k: most[k]}
        assert any(f"{most[k]} distinct {k} events" in p
                   for p in toy_pool_problems(cells, short, zero="H", one="A", nuisances=("Z",))[0])
        assert not any(f"distinct {k} events" in p
                       for p in toy_pool_problems(cells, enough, zero="H", one="A", nuisances=("Z",))[0])


@pytest.mark.pythia
def test_a_three_component_study_runs_fits_every_treatment_and_reruns_nothing(tmp_path):
    from hpcmix.orchestrate.executor import InProcess
    from hpcmix.orchestrate.pipeline import run_study
    from hpcmix.results import open_results

    job = tmp_path / "k3.yaml"
    spec = k3_job(estimators=["phi_star", "nn"])
    spec["generate"].update(chunk_size=150, events={"train": 150, "template": 150, "test": 150})
    spec["classifier"] = {"max_epochs": 2, "batch_size": 64, "hidden_layers": [16]}
    job.write_text(yaml.safe_dump({**spec, "output": str(tmp_path / "out")}))
    study = load_study(job)
    out = run_study(study, executor=InProcess(), progress=False, echo=lambda *a: None)
    ds = open_results(out.results_path)
    assert ds["alpha_hat"].dims == ("estimator", "smearing", "treatment", "fraction_Z", "alpha", "n_events", "toy")
    assert list(ds["treatment"].values) == ["fixed", "floated", "constrained"]
    assert list(ds["fraction_Z"].values) == [0.0, 0.3]
    assert int(ds["n_toys_filled"].min()) == 40
    z = ds["fraction_hat_Z"]
    # fixed: the true fraction; floated and constrained: fitted
    fixed = z.sel(treatment="fixed")
    assert np.allclose(fixed - ds["fraction_Z"], 0.0)
    floated = z.sel(treatment="floated")
    assert np.isfinite(floated).all() and not np.allclose(floated - ds["fraction_Z"], 0.0)
    # the same toys fitted three ways: the fixed fit cannot be worse than knowing less
    cr = ds["cramer_rao"].sel(smearing="none", alpha=0.7, n_events=30)
    assert np.isfinite(cr).all()
    assert (cr.sel(treatment="fixed") <= cr.sel(treatment="constrained") + 1e-12).all()
    assert (cr.sel(treatment="constrained") <= cr.sel(treatment="floated") + 1e-12).all()
    # summary, tables and the figure against the fraction
    summ = ds.mixture.summary()
    assert {"treatment", "fraction_Z"} <= set(summ["coverage"].dims) and "flat_fraction" in summ
    assert np.isfinite(summ["coverage"]).all() and np.isfinite(summ["ks_pvalue"]).all()
    assert "sigma of alpha_hat" in out.table and "| phi_star, none, floated |" in out.table
    assert any(p.endswith("sigma_vs_fraction_Z_N30.png") for p in out.figures)
    assert ds["template_density"].sizes["component"] == 3
    # constrained fits get a centre per toy, scattered around the truth by the width
    from hpcmix.store.artefacts import load_fraction_batch

    cell = next(c for c in out.plan.cells if c.fractions == (("Z", 0.3),))
    centres = load_fraction_batch(cell.batch_file(0)).centres["Z"]
    assert centres.shape == (20,) and 0.02 < centres.std() < 0.09 and abs(centres.mean() - 0.3) < 0.05
    again = run_study(study, executor=InProcess(), progress=False, echo=lambda *a: None)
    assert again.skipped["toys"] == len(again.plan.cells) * 2 and again.skipped["templates"] == 2


def test_treatment_of_pins_one_nuisance_in_every_fit(tmp_path):
    job = {**k3_job(), "output": str(tmp_path / "out"), "components": ["H", "A", "Z", "W"]}
    job["processes"] = {"Z": Z_PROCESS, "W": {**Z_PROCESS, "description": "a second background"}}
    job["toys"] = {**job["toys"], "fractions": {"Z": [0.0, 0.3], "W": [0.1]}, "treatment_of": {"W": "fixed"},
                   "constraint_width": {"Z": 0.05}}
    plan = plan_study(resolve_study(overrides=job))
    comps = ("H", "A", "Z", "W")
    cell = plan.cells[0]
    assert cell.treatment_of == (("W", "fixed"),)
    assert cell.fit_treatment("floated", comps) == ({2: "floated", 3: "fixed"}, {})
    assert cell.fit_treatment("constrained", comps) == ({2: "constrained", 3: "fixed"}, {2: 0.05})
    job["toys"]["treatment_of"] = {"W": "floated"}       # the same constraint widths: only treatment_of moves
    other = plan_study(resolve_study(overrides=job))
    assert other.cells[0].address != cell.address        # the address says how the fits treat W
    assert other.cells[0].fit_treatment("fixed", comps) == ({2: "fixed", 3: "floated"}, {})
    job["toys"]["treatment_of"] = {"H": "fixed"}
    with pytest.raises(ConfigError, match=r"'toys.treatment_of' names \['H'\], which are not nuisance"):
        resolve_study(overrides=job)
    job["toys"].update(treatment_of={"W": "constrained"}, treatments=["fixed"], constraint_width={})
    with pytest.raises(ConfigError, match=r"makes W constrained, so it needs a constraint width"):
        resolve_study(overrides=job)
    job["toys"].update(treatment_of={"W": "fixed", "Z": "fixed"}, treatments=["fixed", "floated"])
    with pytest.raises(ConfigError, match=r"pins every nuisance.*would fit the same way"):
        resolve_study(overrides=job)
