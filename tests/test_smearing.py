"""Tests for hpcmix.physics.smearing: the detector model of PHYSICS.md section 3."""

from __future__ import annotations

import dask.config
import numpy as np
import pytest
from scipy import stats

from conftest import study_with

from hpcmix import config
from hpcmix.physics import kinematics as kin
from hpcmix.physics.layout import M_PI_CHARGED, M_PI_NEUTRAL, NU_MINUS, NU_PLUS
from hpcmix.physics.smearing import PION_INDICES, smear_pions
from hpcmix.study import resolve_study

CHARGED = (0, 3)  # pi+, pi- in the particle axis
NEUTRAL = (1, 4)  # pi0+, pi0-
MASSES = np.array([M_PI_CHARGED, M_PI_NEUTRAL, 0.0, M_PI_CHARGED, M_PI_NEUTRAL, 0.0])


def _events(n, seed=0):
    """On-shell pions (and massless neutrinos) in random directions, 1-200 GeV."""
    rng = np.random.default_rng(seed)
    direction = kin.unit(rng.normal(size=(n, 6, 3)))
    mom = direction * rng.uniform(1.0, 200.0, size=(n, 6, 1))
    p4 = np.empty((n, 6, 4))
    p4[..., :3] = mom
    p4[..., 3] = kin.energy(mom, MASSES)
    return p4


def _opening_angle(a, b):
    return np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), kin.dot3(a, b))


# the paper's values (PHYSICS.md section 3)
SIGMAS = dict(
    charged_sigma_theta=0.001, charged_sigma_e_rel=0.05, neutral_sigma_theta=0.025 / np.sqrt(12), neutral_sigma_e_rel=0.1
)


@pytest.fixture(scope="module")
def smeared_sample():
    p4 = _events(50_000, seed=1)  # 10^5 pions of each kind
    return p4, smear_pions(p4, np.random.default_rng(2), **SIGMAS)


@pytest.mark.parametrize(
    "kind, sigma_theta, sigma_e",
    [(CHARGED, SIGMAS["charged_sigma_theta"], 0.05), (NEUTRAL, SIGMAS["neutral_sigma_theta"], 0.1)],
)
def test_angle_and_scale_spread_match_sigma(smeared_sample, kind, sigma_theta, sigma_e):
    p4, out = smeared_sample
    before, after = p4[:, kind, :3].reshape(-1, 3), out[:, kind, :3].reshape(-1, 3)
    assert len(before) == 100_000
    # the rotation angle is N(0, sigma) about an axis perpendicular to p, so the
    # opening angle is |N(0, sigma)|: its RMS is sigma, its mean sigma sqrt(2/pi)
    angle = _opening_angle(before, after)
    assert np.sqrt(np.mean(angle**2)) == pytest.approx(sigma_theta, rel=0.03)
    assert np.mean(angle) == pytest.approx(sigma_theta * np.sqrt(2 / np.pi), rel=0.03)
    ratio = kin.p_abs(after) / kin.p_abs(before) - 1.0
    assert np.std(ratio) == pytest.approx(sigma_e, rel=0.03)
    assert abs(np.mean(ratio)) < 4 * sigma_e / np.sqrt(len(ratio)) + 1e-12
    # Gaussian shape, not only the width
    assert stats.kstest(ratio / sigma_e, "norm").pvalue > 0.001


def test_axis_azimuth_uniform(smeared_sample):
    p4, out = smeared_sample
    before = p4[:, PION_INDICES, :3].reshape(-1, 3)
    after = out[:, PION_INDICES, :3].reshape(-1, 3)
    # azimuth of the displacement around p, in a test-built basis (z x p, p x (z x p))
    u = kin.unit(before)
    e1 = kin.unit(np.cross([0.0, 0.0, 1.0], u))
    e2 = np.cross(u, e1)
    shift = kin.perpendicular(after, before)
    azimuth = np.mod(np.arctan2(kin.dot3(shift, e2), kin.dot3(shift, e1)), 2 * np.pi)
    assert stats.kstest(azimuth / (2 * np.pi), "uniform").pvalue > 0.001


@pytest.mark.parametrize("direction", [[1.0, 2.0, 3.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
def test_axis_azimuth_uniform_for_one_direction(direction):
    # many copies of one pion: no averaging over directions can hide a biased azimuth
    n = 50_000
    p4 = np.zeros((n, 6, 4))
    mom = 30.0 * kin.unit(np.array(direction))
    p4[:, 0, :3] = mom
    p4[:, 0, 3] = kin.energy(mom, M_PI_CHARGED)
    out = smear_pions(p4, np.random.default_rng(9), **SIGMAS)
    e1, e2 = kin.perpendicular_basis(mom)
    shift = out[:, 0, :3] - mom
    azimuth = np.mod(np.arctan2(kin.dot3(shift, e2), kin.dot3(shift, e1)), 2 * np.pi)
    assert stats.kstest(azimuth / (2 * np.pi), "uniform").pvalue > 0.001


def test_masses_preserved_and_neutrinos_untouched(smeared_sample):
    p4, out = smeared_sample
    np.testing.assert_allclose(kin.mass(out[:, CHARGED]), M_PI_CHARGED, rtol=1e-4)
    np.testing.assert_allclose(kin.mass(out[:, NEUTRAL]), M_PI_NEUTRAL, rtol=1e-4)
    np.testing.assert_array_equal(out[:, [NU_PLUS, NU_MINUS]], p4[:, [NU_PLUS, NU_MINUS]])


def test_energy_recomputed_from_pdg_mass():
    p4 = _events(10)
    p4[:, 0, 3] += 5.0  # off shell on input: the output is on the PDG shell
    out = smear_pions(p4, np.random.default_rng(0), **SIGMAS)
    np.testing.assert_allclose(out[:, 0, 3], kin.energy(out[:, 0, :3], M_PI_CHARGED))


def test_zero_sigma_is_identity():
    p4 = _events(100)
    out = smear_pions(
        p4,
        np.random.default_rng(0),
        charged_sigma_theta=0.0,
        charged_sigma_e_rel=0.0,
        neutral_sigma_theta=0.0,
        neutral_sigma_e_rel=0.0,
    )
    np.testing.assert_allclose(out, p4, rtol=1e-12)


def test_input_not_modified_and_reproducible():
    p4 = _events(1000)
    copy = p4.copy()
    a = smear_pions(p4, np.random.default_rng(42), **SIGMAS)
    b = smear_pions(p4, np.random.default_rng(42), **SIGMAS)
    c = smear_pions(p4, np.random.default_rng(43), **SIGMAS)
    np.testing.assert_array_equal(p4, copy)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_pieces_with_one_generator_equal_whole():
    # every event consumes its own 12 words of the stream (documented order)
    p4 = _events(1000)
    whole = smear_pions(p4, np.random.default_rng(7), **SIGMAS)
    rng = np.random.default_rng(7)
    pieces = np.concatenate([smear_pions(p4[:313], rng, **SIGMAS), smear_pions(p4[313:], rng, **SIGMAS)])
    np.testing.assert_array_equal(pieces, whole)


def test_widths_are_required():
    # no config fallback any more: every width is an explicit argument
    p4 = _events(3)
    with pytest.raises(TypeError, match="charged_sigma_theta"):
        smear_pions(p4, np.random.default_rng(0))
    partial = {k: v for k, v in SIGMAS.items() if k != "neutral_sigma_e_rel"}
    with pytest.raises(TypeError, match="neutral_sigma_e_rel"):
        smear_pions(p4, np.random.default_rng(0), **partial)


def test_study_widths_default_to_package_yaml_and_follow_dask_config():
    yaml_smearing = config.package_defaults()["smearing"]
    widths = study_with().smearing.widths()
    assert widths == {
        "charged_sigma_theta": yaml_smearing["charged_pion"]["sigma_theta"],
        "charged_sigma_e_rel": yaml_smearing["charged_pion"]["sigma_e_rel"],
        "neutral_sigma_theta": yaml_smearing["neutral_pion"]["sigma_theta"],
        "neutral_sigma_e_rel": yaml_smearing["neutral_pion"]["sigma_e_rel"],
    }
    # the package defaults are the paper's values
    assert widths == pytest.approx(SIGMAS, rel=1e-12)
    p4 = _events(1000)
    # (the YAML rounds 0.025/sqrt(12) to 16 digits)
    np.testing.assert_allclose(
        smear_pions(p4, np.random.default_rng(1), **widths),
        smear_pions(p4, np.random.default_rng(1), **SIGMAS),
        rtol=1e-12,
    )
    # dask config (DASK_HPCMIX__SMEARING__... or dask.config.set) changes the resolved study
    with dask.config.set({"hpcmix.smearing.charged_pion.sigma_theta": 0.002}):
        assert resolve_study().smearing.widths()["charged_sigma_theta"] == 0.002
    assert resolve_study().smearing.widths()["charged_sigma_theta"] == 0.001
    with dask.config.set({"hpcmix.smearing.charged_pion.sigma_theta": 0.0, "hpcmix.smearing.charged_pion.sigma_e_rel": 0.0}):
        zero_charged = resolve_study().smearing.widths()
    assert zero_charged["neutral_sigma_e_rel"] == widths["neutral_sigma_e_rel"]
    out = smear_pions(p4, np.random.default_rng(1), **zero_charged)
    np.testing.assert_allclose(out[:, CHARGED], p4[:, CHARGED], rtol=1e-12)
    assert not np.allclose(out[:, NEUTRAL], p4[:, NEUTRAL])


def test_empty_input():
    out = smear_pions(np.zeros((0, 6, 4)), np.random.default_rng(0), **SIGMAS)
    assert out.shape == (0, 6, 4)


@pytest.mark.parametrize("shape", [(6, 4), (10, 4, 4), (10, 6, 3), (10, 6, 4, 1)])
def test_bad_shape_raises(shape):
    with pytest.raises(ValueError, match=r"\(n_events, 6, 4\)"):
        smear_pions(np.zeros(shape), np.random.default_rng(0), **SIGMAS)


def test_bad_rng_and_sigma_raise():
    p4 = _events(3)
    with pytest.raises(TypeError, match="Generator"):
        smear_pions(p4, np.random.RandomState(0), **SIGMAS)
    with pytest.raises(ValueError, match="charged_sigma_theta"):
        smear_pions(p4, np.random.default_rng(0), **{**SIGMAS, "charged_sigma_theta": -1.0})
