"""Finding site configs: packaged sites (hpcmix/sites/) and $HPCMIX_SITE_PATH (hpcmix.orchestrate.sites)."""

from __future__ import annotations

import glob
import os
import tomllib
from pathlib import Path

import pytest

import hpcmix
from hpcmix.orchestrate import SiteConfigError, available_sites, load_site, site_search_path
from hpcmix.orchestrate.sites import packaged_site_dir

PACKAGE = Path(hpcmix.__file__).resolve().parent
PACKAGED = PACKAGE / "sites"
REPO = PACKAGE.parent
BUILT_IN = ("local", "ci-slurm", "slurm")

LOCAL_3 = "kind: local\ndescription: user copy\ncpu:\n  n_workers: 3\n"
SLURM_USER = "kind: slurm\ncpu:\n  partition: user\n  cores: 2\n  memory: 2GB\n"


@pytest.fixture
def no_user_path(monkeypatch):
    monkeypatch.delenv("HPCMIX_SITE_PATH", raising=False)
    monkeypatch.delenv("HPCMIX_SITE", raising=False)


def _dir(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    d = tmp_path / name
    d.mkdir()
    for fname, text in files.items():
        (d / fname).write_text(text)
    return d


@pytest.mark.parametrize("name", BUILT_IN)
def test_packaged_sites_load_by_name_from_any_directory(name, tmp_path, monkeypatch, no_user_path):
    monkeypatch.chdir(tmp_path)
    # a file of the same name in the working directory is not what a *name* means
    (tmp_path / f"{name}.yaml").write_text("kind: pbs\n")
    site = load_site(name)
    assert site.name == name
    assert site.path == str(PACKAGED / f"{name}.yaml")
    assert Path(site.path).is_file()
    assert Path(site.path).is_relative_to(PACKAGE)  # inside the package, not the repository


def test_default_site_from_any_directory(tmp_path, monkeypatch, no_user_path):
    monkeypatch.chdir(tmp_path)
    assert load_site().path == str(PACKAGED / "local.yaml")


def test_available_sites_lists_the_packaged_ones(no_user_path):
    assert set(BUILT_IN) <= set(available_sites())
    assert site_search_path() == [packaged_site_dir()]
    assert Path(str(packaged_site_dir())) == PACKAGED


def test_site_path_dirs_come_before_the_packaged_sites(tmp_path, monkeypatch, no_user_path):
    first = _dir(tmp_path, "first", {"mysite.yaml": SLURM_USER, "both.yaml": LOCAL_3})
    second = _dir(tmp_path, "second", {"local.yml": LOCAL_3, "both.yaml": "kind: local\ncpu: {}\n"})
    monkeypatch.setenv("HPCMIX_SITE_PATH", os.pathsep.join([str(first), "", str(second)]))
    monkeypatch.chdir(tmp_path)

    assert site_search_path() == [first, second, packaged_site_dir()]
    # a user site is found by name
    mine = load_site("mysite")
    assert mine.path == str(first / "mysite.yaml") and mine.cpu["queue"] == "user"
    # user directories win over the packaged sites: second/local.yml shadows the packaged local
    local = load_site("local")
    assert local.path == str(second / "local.yml") and local.cpu["n_workers"] == 3
    # ... and earlier user directories over later ones
    assert load_site("both").path == str(first / "both.yaml")
    # a name no user directory has still comes from the package
    assert load_site("ci-slurm").path == str(PACKAGED / "ci-slurm.yaml")
    assert load_site("slurm").path == str(PACKAGED / "slurm.yaml")
    names = available_sites()
    assert names == sorted(set(names))
    assert {"mysite", "both", *BUILT_IN} <= set(names)


def test_unknown_site_lists_searched_directories_and_names(tmp_path, monkeypatch, no_user_path):
    mine = _dir(tmp_path, "mine", {"mysite.yaml": SLURM_USER})
    missing = tmp_path / "not-there"
    monkeypatch.setenv("HPCMIX_SITE_PATH", os.pathsep.join([str(mine), str(missing)]))
    with pytest.raises(SiteConfigError) as ei:
        load_site("no-such-site")
    msg = str(ei.value)
    assert "unknown site 'no-such-site'" in msg and "no-such-site.yaml" in msg
    for d in (mine, missing, PACKAGED):
        assert str(d) in msg
    assert msg.index(str(mine)) < msg.index(str(missing)) < msg.index(str(PACKAGED))
    assert "HPCMIX_SITE_PATH" in msg
    assert "one of ci-slurm, local, mysite, slurm" in msg


def test_packaged_slurm_site_is_the_repository_template():
    template = REPO / "site_configs" / "slurm.yaml"
    if not template.is_file():
        pytest.skip("not a source checkout (no site_configs/slurm.yaml)")
    assert (PACKAGED / "slurm.yaml").read_bytes() == template.read_bytes(), (
        "site_configs/slurm.yaml (the template users copy) and hpcmix/sites/slurm.yaml (the "
        "packaged copy) differ: edit both")
    assert not (REPO / "site_configs" / "local.yaml").exists()
    assert not (REPO / "site_configs" / "ci-slurm.yaml").exists()


def test_package_data_ships_the_sites():
    pyproject = REPO / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("not a source checkout (no pyproject.toml)")
    patterns = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["hpcmix"]
    shipped = set()
    for pattern in patterns:
        matched = glob.glob(pattern, root_dir=PACKAGE)
        assert matched, f"package-data pattern {pattern!r} matches nothing under {PACKAGE}"
        shipped.update(matched)
    for name in BUILT_IN:
        assert f"sites/{name}.yaml" in shipped
