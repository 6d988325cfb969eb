"""The study model: layered resolution, one config reader, addresses that cover settings and code versions."""

from __future__ import annotations

import hashlib
import pathlib
import re

import dask.config
import numpy as np
import pytest

from hpcmix.orchestrate.pipeline import plan_study, run_study
from hpcmix.schema import ConfigError
from hpcmix.study import load_study, resolve_study

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "hpcmix"

TINY_PHI = """
name: tiny-phi
output: {out}
seed: 11
generate:
  profile: fast
  chunk_size: 250
  events: {{train: 500, template: 250, test: 250}}
smearing: [none, detector]
toys:
  methods: [phi_star]
  alpha: [0.5, 0.9]
  n_events: [20, 50]
  n_toys: 40
  batch_size: 20
"""
#: sha256 of alpha_hat's bytes for TINY_PHI: no code change may move a toy. The bytes depend on
#: the machine as well as the code (they moved with the machine while the numpy and scipy
#: versions did not move them: CPU-dependent math, in the event chain or in numpy's SIMD loops,
#: is the likely cause), so each hash here is what unchanged code gave on one machine kind:
#: 5895b9f6... by commit b7eb5f6 (before the study-model refactor) on the machines of 2026-11;
#: dd1ba8a2... by commit 5d03b48 on the development machine of 2026-12-02, the same
#: packages' versions making no difference (numpy 2.3.5 / 2.4.5 / 2.4.6, scipy 1.16.3 / 1.17.1).
#: A new machine kind: run this job with the last commit that passed, and add its hash.
TINY_PHI_ALPHA_HAT_SHA256 = ("5895b9f6bd9a1a5f260246fa71265cc02d98b181041fd9dc6d8540626aed6eb2",
                             "dd1ba8a2412f56b8fd9f3d3409855c58b426983b3bd017b22f20e7f521bf4d9a")


def test_only_the_settings_boundary_reads_config():
    readers = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if re.search(r"\bconfig\.get\(|dask\.config\.(get|set)\(", p.read_text()))
    assert readers == ["config.py"], readers


def test_layers_win_in_order(tmp_path, monkeypatch):
    job = tmp_path / "job.yaml"
    job.write_text("name: layers\nclassifier: {max_epochs: 7}\nselection: {m_vis_max: null}\n"
                   "smearing: {charged_pion: {sigma_theta: 0.003}}\n")
    assert resolve_study().classifier.max_epochs == 100                      # package default
    with dask.config.set({"hpcmix.classifier.max_epochs": 3, "hpcmix.selection.m_vis_max": 400.0,
                          "hpcmix.classifier.dropout": 0.1}):
        assert resolve_study().classifier.max_epochs == 3                    # dask config
        study = load_study(job)
        assert study.classifier.max_epochs == 7                              # job file over dask config
        assert study.classifier.dropout == 0.1                               # dask config where the job is silent
        assert study.selection.m_vis_max is None                             # an explicit null wins
        assert load_study(job, sets=["classifier.max_epochs=2"]).classifier.max_epochs == 2   # command line
    # smearing widths from a job file reach the generation settings
    assert study.smearing.widths()["charged_sigma_theta"] == 0.003
    assert study.classifier.seed == study.seed                               # null seed -> the study seed


def test_environment_variable_reaches_the_study(monkeypatch):
    monkeypatch.setenv("DASK_HPCMIX__GENERATE__CHUNK_SIZE", "123")
    dask.config.refresh()
    try:
        assert resolve_study().generate.chunk_size == 123
    finally:
        monkeypatch.delenv("DASK_HPCMIX__GENERATE__CHUNK_SIZE")
        dask.config.refresh()
    assert resolve_study().generate.chunk_size == 2000


def test_package_defaults_use_the_job_file_names():
    from hpcmix.config import package_defaults
    from hpcmix.study.resolve import TOP_FIELDS
    from hpcmix.train.settings import ClassifierSettings

    d = package_defaults()
    assert set(d) <= set(TOP_FIELDS), set(d) - set(TOP_FIELDS)
    assert ClassifierSettings().to_dict() == d["classifier"]                 # dataclass = YAML, no drift


@pytest.mark.parametrize("text, field", [
    ("name: x\ntoys: {n_toys: 0}\n", "toys.n_toys"),
    ("name: x\ngenerate: {chunk: 5}\n", "generate.chunk"),
    ("name: x\nclassifier: {epochs: 5}\n", "classifier.epochs"),
    ("name: x\npoi: {fraction_of: Z}\n", "Z"),
    ("name: x\nsamples: [H, A]\ncomponents: [H, A]\n", "samples"),
])
def test_bad_fields_name_the_field(tmp_path, text, field):
    job = tmp_path / "bad.yaml"
    job.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(field)):
        load_study(job)


def test_bad_set_names_the_option():
    with pytest.raises(ConfigError, match=r"--set.*toys\.n_toys"):
        resolve_study(sets=["toys.n_toys=-1"])
    with pytest.raises(ConfigError, match="--set"):
        resolve_study(sets=["toys.n_toys"])


# -- addresses: which stages rerun after which change -----------------------------------------------
def _addresses(tmp_path, text=TINY_PHI, sets=(), methods="[phi_star, nn]"):
    job = tmp_path / "a.yaml"
    job.write_text(text.format(out=tmp_path / "out").replace("[phi_star]", methods))
    return plan_study(load_study(job, sets=sets)).addresses()


def _changed(before, after) -> set[str]:
    """Stage names whose addresses changed (any item of the stage)."""
    return {stage for stage in before if before[stage] != after[stage]}


def _changed_items(before, after, stage) -> set[str]:
    return {k for k in before[stage] if before[stage][k] != after[stage][k]}


#: the rerun table of the closing note: a change -> the stages whose outputs are rebuilt
RERUN_TABLE = [
    ("job file: toys.n_toys", ["toys.n_toys=60"], {"toys", "results"}),
    ("job file: templates.bandwidth", ["templates.bandwidth=0.2"], {"templates", "toys", "results"}),
    ("job file: classifier.max_epochs", ["classifier.max_epochs=3"], {"train", "templates", "toys", "results"}),
    ("job file: smearing width", ["smearing.neutral_pion.sigma_e_rel=0.2"],
     {"generate", "train", "templates", "toys", "results"}),
]


@pytest.mark.parametrize("what, sets, expected", RERUN_TABLE, ids=[r[0] for r in RERUN_TABLE])
def test_a_changed_setting_moves_exactly_its_stages(tmp_path, what, sets, expected):
    before = _addresses(tmp_path)
    after = _addresses(tmp_path, sets=sets)
    assert _changed(before, after) == expected
    if "templates.bandwidth" in what:   # a KDE setting leaves the phi* templates where they are
        assert _changed_items(before, after, "templates") == {"nn/none", "nn/detector"}


def test_dask_config_variable_moves_the_classifier(tmp_path, monkeypatch):
    before = _addresses(tmp_path)
    monkeypatch.setenv("DASK_HPCMIX__CLASSIFIER__MAX_EPOCHS", "4")
    dask.config.refresh()
    try:
        after = _addresses(tmp_path)
    finally:
        monkeypatch.delenv("DASK_HPCMIX__CLASSIFIER__MAX_EPOCHS")
        dask.config.refresh()
    assert _changed(before, after) == {"train", "templates", "toys", "results"}
    assert _changed_items(before, after, "templates") == {"nn/none", "nn/detector"}


@pytest.mark.parametrize("module, attr, expected", [
    ("hpcmix.generate.run", "GENERATION_VERSION", {"generate", "train", "templates", "toys", "results"}),
    ("hpcmix.orchestrate.stages.train", "VERSION", {"train", "templates", "toys", "results"}),
    ("hpcmix.orchestrate.stages.templates", "VERSION", {"templates", "toys", "results"}),
    ("hpcmix.orchestrate.stages.toys", "VERSION", {"toys", "results"}),
])
def test_a_bumped_algorithm_version_moves_its_stage_and_everything_after(tmp_path, monkeypatch, module, attr,
                                                                         expected):
    import importlib

    before = _addresses(tmp_path)
    mod = importlib.import_module(module)
    monkeypatch.setattr(mod, attr, getattr(mod, attr) + 1)
    assert _changed(before, _addresses(tmp_path)) == expected


# -- a real run: bit-identical to the code before the refactor, and reruns skip what is done ------------
@pytest.mark.pythia
def test_tiny_study_is_bit_identical_and_reruns_only_what_changed(tmp_path):
    import xarray as xr

    from hpcmix.orchestrate.executor import InProcess

    job = tmp_path / "tiny.yaml"
    job.write_text(TINY_PHI.format(out=tmp_path / "out"))
    quiet = lambda _m: None  # noqa: E731
    first = run_study(load_study(job), executor=InProcess(), progress=False, echo=quiet)
    a_hat = xr.open_zarr(first.results_path, consolidated=False).alpha_hat.values
    assert hashlib.sha256(np.ascontiguousarray(a_hat).tobytes()).hexdigest() in TINY_PHI_ALPHA_HAT_SHA256
    assert first.skipped == {"generate": 0, "train": 0, "templates": 0, "toys": 0}

    again = run_study(load_study(job), executor=InProcess(), progress=False, echo=quiet)
    assert again.skipped == {"generate": 8, "train": 0, "templates": 2, "toys": 16}

    more = run_study(load_study(job, sets=["toys.alpha=[0.5, 0.7]"]), executor=InProcess(), progress=False,
                     echo=quiet)
    # the alpha = 0.5 cells are where they were; the 0.7 ones are new
    assert more.skipped == {"generate": 8, "train": 0, "templates": 2, "toys": 8}
    ds = xr.open_zarr(more.results_path, consolidated=False)
    np.testing.assert_array_equal(ds.alpha_hat.sel(alpha=0.5).values,
                                  xr.open_zarr(first.results_path, consolidated=False).alpha_hat.sel(alpha=0.5).values)
