"""Tests for hpcmix.physics.features: the frame, phi*, O*, IP and the feature table."""

from __future__ import annotations

import dask.config
import numpy as np
import pytest

from hpcmix.physics import features as F
from hpcmix.physics import kinematics as kin
from hpcmix.physics.layout import M_PI_CHARGED, M_PI_NEUTRAL
from hpcmix.schema import ConfigError
from hpcmix.study import resolve_study

M_TAU = 1.77686  # GeV
CTAU_TAU = 0.0871  # mm
TWO_PI = 2 * np.pi
COL = {name: i for i, name in enumerate(F.FEATURE_NAMES)}


# --- synthetic events ----------------------------------------------------------


def _isotropic_two_body(rng, m_parent, m1, m2):
    """Back-to-back daughters (n, 4) x 2 in the parent rest frame, isotropic."""
    n = len(m_parent)
    p = np.sqrt((m_parent**2 - (m1 + m2) ** 2) * (m_parent**2 - (m1 - m2) ** 2)) / (2 * m_parent)
    cos_t = rng.uniform(-1, 1, n)
    sin_t = np.sqrt(1 - cos_t**2)
    az = rng.uniform(0, TWO_PI, n)
    mom = p[:, None] * np.stack([sin_t * np.cos(az), sin_t * np.sin(az), cos_t], axis=-1)
    d1, d2 = np.empty((n, 4)), np.empty((n, 4))
    d1[:, :3], d2[:, :3] = mom, -mom
    d1[:, 3], d2[:, 3] = kin.energy(mom, m1), kin.energy(mom, m2)
    return d1, d2


def _to_parent_frame(daughters, parent):
    """Daughters from the parent's rest frame into the frame where it has momentum ``parent``."""
    return kin.boost(daughters, -kin.beta_of(parent))


def _tau_decay(rng, tau):
    """tau -> rho(-> pi pi0) nu, each step isotropic; returns pi, pi0, nu in the tau's frame."""
    n = len(tau)
    m_rho = rng.uniform(M_PI_CHARGED + M_PI_NEUTRAL + 0.01, M_TAU - 0.01, n)
    rho, nu = _isotropic_two_body(rng, np.full(n, M_TAU), m_rho, 0.0)
    pi, pi0 = _isotropic_two_body(rng, m_rho, M_PI_CHARGED, M_PI_NEUTRAL)
    pi, pi0 = _to_parent_frame(pi, rho), _to_parent_frame(pi0, rho)
    return [_to_parent_frame(x, tau) for x in (pi, pi0, nu)]


def physical_events(n, seed=0, m_resonance=450.0):
    """(p4, vertex) of X(450) -> tau tau -> (pi pi0 nu)(pi pi0 nu), with a random lab boost."""
    rng = np.random.default_rng(seed)
    tau_plus, tau_minus = _isotropic_two_body(rng, np.full(n, m_resonance), M_TAU, M_TAU)
    direction = kin.unit(rng.normal(size=(n, 3)))
    beta_x = direction * rng.uniform(0, 0.9, (n, 1))  # resonance velocity in the lab
    p4 = np.empty((n, 6, 4))
    vertex = np.empty((n, 2, 3))
    for k, tau in enumerate((tau_plus, tau_minus)):
        decay = _tau_decay(rng, tau)  # resonance frame
        for j, particle in enumerate(decay):
            p4[:, 3 * k + j] = kin.boost(particle, -beta_x)
        tau_lab = kin.boost(tau, -beta_x)
        flight = rng.exponential(CTAU_TAU, n)[:, None] * tau_lab[:, :3] / M_TAU  # beta gamma c tau
        vertex[:, k] = flight
    return p4, vertex


@pytest.fixture(scope="module")
def events():
    return physical_events(20_000, seed=11)


def _random_rotation(rng, n):
    return kin.rotation_about_axis(rng.normal(size=(n, 3)), rng.uniform(0, TWO_PI, n))


def known_phi_events(phi, y_plus_positive, y_minus_positive, seed=0):
    """Events whose ZMF phi' equals ``phi`` exactly, with chosen Upsilon signs.

    Built in the pions' ZMF: pi- along n- = z with its pi0- perpendicular
    direction e- = x; the tau+ side takes p_perp+ = e+ = cos(phi) e- +
    sin(phi) cos(b) (e- x n-) - |sin(phi)| sin(b) n-, so e+ . e- = cos(phi) and
    O* = n- . (e+ x e-) = sin(phi) cos(b); the pi+ direction n+ is then fixed
    by momentum balance (and is perpendicular to e+). Finally everything is
    rotated and boosted by random amounts into a "lab".
    """
    rng = np.random.default_rng(seed)
    phi = np.asarray(phi, dtype=float)
    n = len(phi)
    beta_tilt = 0.5
    z, x = np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0])
    p_pim, a_m = (40.0, 10.0) if y_minus_positive else (10.0, 40.0)
    pim = np.broadcast_to(p_pim * z, (n, 3))
    pi0m = np.broadcast_to(a_m * z + 1.0 * x, (n, 3))
    e_plus = (
        np.cos(phi)[:, None] * x
        + (np.sin(phi) * np.cos(beta_tilt))[:, None] * np.cross(x, z)
        - (np.abs(np.sin(phi)) * np.sin(beta_tilt))[:, None] * z
    )
    s_minus = pim + pi0m
    b_plus = -kin.dot3(s_minus, e_plus)
    assert np.all(b_plus > 0), "choose phi away from 0 and pi"
    rest = -s_minus - b_plus[:, None] * e_plus
    frac = 0.8 if y_plus_positive else 0.2
    pip = frac * rest
    pi0p = (1 - frac) * rest + b_plus[:, None] * e_plus
    mom = np.stack([pip, pi0p, np.zeros((n, 3)), pim, pi0m, np.zeros((n, 3))], axis=1)
    masses = np.array([M_PI_CHARGED, M_PI_NEUTRAL, 0.0, M_PI_CHARGED, M_PI_NEUTRAL, 0.0])
    p4 = np.empty((n, 6, 4))
    p4[..., :3] = mom
    p4[..., 3] = kin.energy(mom, masses)
    p4[:, [2, 5]] = [5.0, 0.0, 3.0, np.sqrt(34.0)]  # some neutrinos, irrelevant for phi*
    assert np.allclose(p4[:, [0, 1, 3, 4], :3].sum(axis=1), 0.0, atol=1e-12)  # it is the ZMF
    p4 = kin.rotate_p4(_random_rotation(rng, n)[:, None], p4)
    beta = kin.unit(rng.normal(size=(n, 3))) * rng.uniform(0, 0.95, (n, 1))
    p4 = kin.boost(p4, beta[:, None])
    expected_o_star = np.sin(phi) * np.cos(beta_tilt)
    return p4, np.zeros((n, 2, 3)), expected_o_star


# --- phi* and O* on hand-built configurations -------------------------------------


@pytest.mark.parametrize("y_plus_positive", [True, False])
@pytest.mark.parametrize("y_minus_positive", [True, False])
def test_phi_star_known_configurations(y_plus_positive, y_minus_positive):
    rng = np.random.default_rng(1)
    phi = np.concatenate([rng.uniform(0.1, np.pi - 0.1, 200), rng.uniform(np.pi + 0.1, TWO_PI - 0.1, 200)])
    phi = np.concatenate([phi, [0.5, TWO_PI - 0.5, 2.0, TWO_PI - 2.0]])
    p4, vertex, expected_o = known_phi_events(phi, y_plus_positive, y_minus_positive, seed=2)
    values = F.compute_features(p4, vertex)
    upsilon_plus, upsilon_minus = values[:, COL["upsilon_plus"]], values[:, COL["upsilon_minus"]]
    assert np.all((upsilon_plus > 0) == y_plus_positive)
    assert np.all((upsilon_minus > 0) == y_minus_positive)
    np.testing.assert_allclose(values[:, COL["o_star"]], expected_o, atol=1e-5)
    expected = phi if y_plus_positive == y_minus_positive else np.mod(phi + np.pi, TWO_PI)
    np.testing.assert_allclose(values[:, COL["phi_star"]], expected, atol=2e-5)


def test_o_star_sign_flip_mirrors_phi_star():
    # phi and 2 pi - phi share arccos(p_perp+ . p_perp-): only the O* sign tells them apart
    p4a, vx, oa = known_phi_events([1.2], True, True, seed=3)
    p4b, _, ob = known_phi_events([TWO_PI - 1.2], True, True, seed=3)
    fa, fb = F.compute_features(p4a, vx)[0], F.compute_features(p4b, vx)[0]
    assert fa[COL["o_star"]] > 0 > fb[COL["o_star"]]
    assert fa[COL["phi_star"]] == pytest.approx(1.2, abs=1e-5)
    assert fb[COL["phi_star"]] == pytest.approx(TWO_PI - 1.2, abs=1e-5)


def test_upsilon_sign_flip_shifts_phi_star_by_pi():
    for phi, shifted in ((1.2, 1.2 + np.pi), (4.0, 4.0 - np.pi)):
        p4, vx, _ = known_phi_events([phi], True, False, seed=4)
        assert F.compute_features(p4, vx)[0, COL["phi_star"]] == pytest.approx(shifted, abs=1e-5)


def test_acoplanarity_is_frame_rotation_invariant(events):
    p4, vertex = events
    ft = F.frame_transform(p4[:500], vertex[:500])
    rng = np.random.default_rng(5)
    rotated = kin.rotate_p4(_random_rotation(rng, 500)[:, None], ft.pions)
    for a, b in zip(F.acoplanarity(ft.pions), F.acoplanarity(rotated)):
        np.testing.assert_allclose(a, b, atol=1e-9)


def test_phi_star_range_and_degenerate_collinear_pi0(events):
    p4, vertex = events
    phi_star = F.compute_features(p4, vertex)[:, COL["phi_star"]]
    assert np.all((phi_star >= 0) & (phi_star < TWO_PI))
    # no spin correlations in these isotropic events: phi* is flat, <cos phi*> ~ 0
    assert abs(np.mean(np.cos(phi_star))) < 4 / np.sqrt(2 * len(phi_star))
    # pi0- exactly collinear with pi-: p_perp- = 0 -> phi = pi/2, O* = 0, no NaN
    pions = F.frame_transform(p4[:3], vertex[:3]).pions.copy()
    pions[:, 3, :3] = 0.5 * pions[:, 2, :3]
    phi_star, o_star = F.acoplanarity(pions)
    assert np.all(np.isfinite(phi_star)) and np.all(o_star == 0)
    assert np.all(np.isclose(phi_star, np.pi / 2) | np.isclose(phi_star, 1.5 * np.pi))


# --- the frame -----------------------------------------------------------------


def test_frame_invariants(events):
    p4, vertex = events
    ft = F.frame_transform(p4, vertex)
    n = len(p4)
    assert ft.pions.shape == (n, 4, 4) and ft.met.shape == (n, 4) and ft.ip.shape == (n, 2, 3)
    scale = ft.pions[..., 3].sum(axis=1)[:, None]  # ~ m_vis
    # zero-momentum frame of the four pions
    np.testing.assert_allclose(ft.pions[..., :3].sum(axis=1) / scale, 0.0, atol=1e-12)
    # visible tau- along +z
    tau_minus = ft.pions[:, 2] + ft.pions[:, 3]
    np.testing.assert_allclose(tau_minus[:, :2] / scale, 0.0, atol=1e-12)
    assert np.all(tau_minus[:, 2] > 0)
    # pi+ in the xz half-plane with px >= 0
    np.testing.assert_allclose(ft.pions[:, 0, 1] / scale[:, 0], 0.0, atol=1e-12)
    assert np.all(ft.pions[:, 0, 0] >= 0)
    # masses preserved, pion by pion and in total
    lab = p4[:, [0, 1, 3, 4]]
    np.testing.assert_allclose(kin.mass(ft.pions), kin.mass(lab), rtol=1e-5)
    np.testing.assert_allclose(kin.mass(ft.pions.sum(axis=1)), kin.mass(lab.sum(axis=1)), rtol=1e-10)
    np.testing.assert_allclose(ft.pions[..., 3].sum(axis=1), kin.mass(lab.sum(axis=1)), rtol=1e-10)
    # rotations are proper
    np.testing.assert_allclose(np.linalg.det(ft.rotation), 1.0, rtol=1e-12)


def test_met_boost_convention(events):
    p4, vertex = events
    ft = F.frame_transform(p4, vertex)
    met_lab = F.met_lab(p4)
    np.testing.assert_allclose(met_lab, p4[:, 2, :2] + p4[:, 5, :2])
    # massless (px, py, 0, |pT|) in the lab, so in the ZMF its energy is P.MET / m_vis
    met4 = np.zeros((len(p4), 4))
    met4[:, :2], met4[:, 3] = met_lab, np.hypot(*met_lab.T)
    total = p4[:, [0, 1, 3, 4]].sum(axis=1)
    expected_e = (total[:, 3] * met4[:, 3] - kin.dot3(total[:, :3], met4[:, :3])) / kin.mass(total)
    np.testing.assert_allclose(ft.met[:, 3], expected_e, rtol=1e-8)
    np.testing.assert_allclose(kin.p_abs(ft.met), ft.met[:, 3], rtol=1e-8)


def test_impact_parameter_geometry(events):
    p4, vertex = events
    ip_lab = F.impact_parameters(p4, vertex)
    tracks = p4[:, [0, 3], :3]
    # perpendicular to the pion track, and on the line through the vertex
    cos_angle = kin.dot3(kin.unit(ip_lab), kin.unit(tracks))
    np.testing.assert_allclose(cos_angle, 0.0, atol=1e-9)
    np.testing.assert_allclose(np.cross(ip_lab - vertex, tracks), 0.0, atol=1e-9 * np.abs(tracks).max())
    # the closest point: any other point of the line is farther from the origin
    for t in (-1e-3, 1e-3):
        other = vertex + t * kin.unit(tracks)
        assert np.all(np.linalg.norm(other, axis=-1) >= np.linalg.norm(ip_lab, axis=-1))
    # IP vectors are rotated, never boosted: length kept, lab vector recovered by R^T
    ft = F.frame_transform(p4, vertex)
    np.testing.assert_allclose(np.linalg.norm(ft.ip, axis=-1), np.linalg.norm(ip_lab, axis=-1), rtol=1e-10)
    back = np.einsum("nji,nkj->nki", ft.rotation, ft.ip)
    np.testing.assert_allclose(back, ip_lab, rtol=1e-9, atol=1e-15)


def test_impact_parameter_hand_built():
    p4 = np.zeros((1, 6, 4))
    p4[0, 0] = [10.0, 0, 0, np.hypot(10.0, M_PI_CHARGED)]  # pi+ along x
    p4[0, 3] = [0, 0, 5.0, np.hypot(5.0, M_PI_CHARGED)]  # pi- along z
    vertex = np.array([[[1.0, 1.0, 0.0], [0.5, 0.0, 2.0]]])
    np.testing.assert_allclose(F.impact_parameters(p4, vertex), [[[0.0, 1.0, 0.0], [0.5, 0.0, 0.0]]])


# --- the feature table ------------------------------------------------------------


def test_feature_table_matches_frame_and_definitions(events):
    p4, vertex = events
    values = F.compute_features(p4, vertex)
    assert values.dtype == np.float32 and values.shape == (len(p4), len(F.FEATURE_NAMES))
    assert np.all(np.isfinite(values))
    ft = F.frame_transform(p4, vertex)
    np.testing.assert_allclose(values[:, :16], ft.pions.reshape(-1, 16), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(values[:, [COL["met_x"], COL["met_y"]]], ft.met[:, :2], rtol=1e-6, atol=1e-4)
    ip_cols = [COL[f"ip_{t}_{c}"] for t in ("plus", "minus") for c in "xyz"]
    np.testing.assert_allclose(values[:, ip_cols], ft.ip.reshape(-1, 6), rtol=1e-6, atol=1e-9)
    e = ft.pions[..., 3]
    y_plus, y_minus = (e[:, 0] - e[:, 1]) / (e[:, 0] + e[:, 1]), (e[:, 2] - e[:, 3]) / (e[:, 2] + e[:, 3])
    np.testing.assert_allclose(values[:, COL["upsilon_plus"]], y_plus, atol=1e-6)
    np.testing.assert_allclose(values[:, COL["upsilon_minus"]], y_minus, atol=1e-6)
    np.testing.assert_allclose(values[:, COL["upsilon_product"]], y_plus * y_minus, atol=1e-6)
    assert np.all(np.abs(values[:, [COL["upsilon_plus"], COL["upsilon_minus"]]]) <= 1)
    m_vis = kin.mass(p4[:, [0, 1, 3, 4]].sum(axis=1))
    np.testing.assert_allclose(values[:, COL["m_vis"]], m_vis, rtol=1e-6)
    assert np.all(m_vis < 450.0)
    # the named redundancies of the frame
    np.testing.assert_allclose(values[:, COL["pi_plus_py"]], 0.0, atol=1e-4)
    np.testing.assert_allclose(values[:, COL["pi0_minus_px"]], -values[:, COL["pi_minus_px"]], atol=1e-3)


def test_mt_tot_hand_built():
    p4 = np.zeros((1, 6, 4))
    # visible tau+ = pi+ + pi0+ with pT 20 along y, visible tau- pT 30 along -x
    p4[0, 0, :3], p4[0, 1, :3] = [0, 12.0, 3.0], [0, 8.0, -1.0]
    p4[0, 3, :3], p4[0, 4, :3] = [-18.0, 0, 4.0], [-12.0, 0, 2.0]
    p4[0, 2, :3], p4[0, 5, :3] = [4.0, 0, 7.0], [6.0, 0, -9.0]  # MET = 10 along x
    masses = np.array([M_PI_CHARGED, M_PI_NEUTRAL, 0, M_PI_CHARGED, M_PI_NEUTRAL, 0])
    p4[0, :, 3] = kin.energy(p4[0, :, :3], masses)
    # mT2(met, tau+) = 400, mT2(met, tau-) = 1200, mT2(tau+, tau-) = 1200
    value = F.compute_features(p4, np.zeros((1, 2, 3)))[0, COL["mt_tot"]]
    assert value == pytest.approx(np.sqrt(2800.0), rel=1e-6)


def test_empty_input():
    assert F.compute_features(np.zeros((0, 6, 4)), np.zeros((0, 2, 3))).shape == (0, len(F.FEATURE_NAMES))


@pytest.mark.parametrize(
    "p4_shape, vertex_shape, match",
    [
        ((5, 4, 4), (5, 2, 3), "p4 must have shape"),
        ((6, 4), (5, 2, 3), "p4 must have shape"),
        ((5, 6, 4), (5, 3), "vertex must have shape"),
        ((5, 6, 4), (5, 2, 4), "vertex must have shape"),
        ((5, 6, 4), (4, 2, 3), "same events"),
    ],
)
def test_bad_shapes_raise(p4_shape, vertex_shape, match):
    with pytest.raises(ValueError, match=match):
        F.compute_features(np.ones(p4_shape), np.zeros(vertex_shape))
    with pytest.raises(ValueError, match=match):
        F.frame_transform(np.ones(p4_shape), np.zeros(vertex_shape))


# --- names and network-input sets --------------------------------------------------


def test_feature_names():
    assert len(F.FEATURE_NAMES) == len(set(F.FEATURE_NAMES)) == 31
    assert F.FEATURE_NAMES[:4] == ("pi_plus_px", "pi_plus_py", "pi_plus_pz", "pi_plus_e")
    assert F.FEATURE_NAMES[12:16] == ("pi0_minus_px", "pi0_minus_py", "pi0_minus_pz", "pi0_minus_e")
    assert F.FEATURE_NAMES[-6:] == ("ip_plus_x", "ip_plus_y", "ip_plus_z", "ip_minus_x", "ip_minus_y", "ip_minus_z")


def test_network_input_sets():
    ref = F.network_inputs("reference25")
    assert len(ref) == 25 and set(ref) <= set(F.FEATURE_NAMES)
    assert {"pi_plus_py", "pi0_plus_px", "pi0_minus_py", "upsilon_product"}.isdisjoint(ref)
    chain = ["phi_star", "phi_star_upsilon", "high_level", "high_level_mvis"]
    sets = [F.network_inputs(name) for name in chain]
    assert sets[0] == ("phi_star",)
    assert set(sets[1]) == {"phi_star", "upsilon_plus", "upsilon_minus"}
    assert set(sets[2]) - set(sets[1]) == {"met_x", "met_y", "mt_tot", "o_star", *F.FEATURE_NAMES[-6:]}
    assert set(sets[3]) - set(sets[2]) == {"m_vis"}
    assert not any(name.startswith("pi") and name != "phi_star" for name in sets[3])
    for names in F.NETWORK_INPUT_SETS.values():
        assert len(set(names)) == len(names) and set(names) <= set(F.FEATURE_NAMES)
    assert F.network_inputs("all") == F.FEATURE_NAMES


def test_network_inputs_default_and_lists():
    # the function takes the set explicitly; the study's default and overrides come from resolution
    with pytest.raises(ValueError, match="named set"):
        F.network_inputs(None)
    assert resolve_study().network_inputs == F.NETWORK_INPUT_SETS["reference25"]
    with dask.config.set({"hpcmix.features.network_inputs": "phi_star_upsilon"}):
        assert resolve_study().network_inputs == F.NETWORK_INPUT_SETS["phi_star_upsilon"]
    with dask.config.set({"hpcmix.features.network_inputs": ["m_vis", "phi_star"]}):
        assert resolve_study().network_inputs == ("m_vis", "phi_star")
    with dask.config.set({"hpcmix.features.network_inputs": "no_such_set"}):
        with pytest.raises(ConfigError, match="features.network_inputs"):
            resolve_study()
    assert F.network_inputs(["phi_star", "m_vis"]) == ("phi_star", "m_vis")
    np.testing.assert_array_equal(F.feature_indices(["phi_star", "m_vis"]), [COL["phi_star"], COL["m_vis"]])


@pytest.mark.parametrize(
    "spec, match",
    [
        ("reference26", "valid sets:.*reference25"),
        (["phi_star", "nonsense"], "unknown feature name.*nonsense"),
        (["phi_star", "phi_star"], "duplicate"),
        ([], "at least one"),
        ([1, 2], "strings"),
    ],
)
def test_network_inputs_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        F.network_inputs(spec)
