"""Tests for hpcmix.physics.kinematics: boosts, rotations and four-vector helpers."""

from __future__ import annotations

import numpy as np
import pytest

from hpcmix.physics import kinematics as kin


def _random_p4(rng, shape, mass=0.5, scale=50.0):
    p = np.empty(shape + (4,))
    p[..., :3] = rng.normal(scale=scale, size=shape + (3,))
    p[..., 3] = kin.energy(p[..., :3], mass)
    return p


def _random_beta(rng, n, max_beta=0.95):
    direction = kin.unit(rng.normal(size=(n, 3)))
    return direction * rng.uniform(0.0, max_beta, size=(n, 1))


def _metric_dot(a, b):
    return a[..., 3] * b[..., 3] - kin.dot3(a[..., :3], b[..., :3])


def test_components_known_values():
    p = np.array([[3.0, 4.0, 0.0, 13.0], [0.0, -2.0, 2.0, 3.0]])
    np.testing.assert_allclose(kin.pt(p), [5.0, 2.0])
    np.testing.assert_allclose(kin.p_abs(p), [5.0, np.sqrt(8.0)])
    np.testing.assert_allclose(kin.mass(p), [12.0, 1.0])
    np.testing.assert_allclose(kin.phi(p), [np.arctan2(4, 3), -np.pi / 2])
    np.testing.assert_allclose(kin.eta(p), [0.0, np.arcsinh(1.0)])


def test_eta_along_beam_and_null_vector_without_warning():
    p = np.array([[0.0, 0.0, 5.0, 5.0], [0.0, 0.0, -5.0, 5.0], [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(kin.eta(p), [np.inf, -np.inf, 0.0])


def test_mass_clips_rounding_negative():
    p = np.array([1.0, 0.0, 0.0, 1.0 - 1e-15])
    assert kin.mass(p) == 0.0


def test_delta_phi_wraps_and_delta_r():
    a = np.array([np.cos(3.0), np.sin(3.0), 0.0, 1.0])
    b = np.array([np.cos(-3.0), np.sin(-3.0), 0.0, 1.0])
    np.testing.assert_allclose(kin.delta_phi(a, b), 6.0 - 2 * np.pi)
    np.testing.assert_allclose(kin.delta_phi(b, a), 2 * np.pi - 6.0)
    c = np.array([1.0, 0.0, np.sinh(0.3), np.cosh(0.3)])
    d = np.array([0.0, 1.0, np.sinh(-0.1), np.cosh(-0.1)])
    np.testing.assert_allclose(kin.delta_r(c, d), np.hypot(0.4, np.pi / 2))


def test_transverse_mass2_matches_cosine_formula():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 1000, 4))
    expected = 2 * kin.pt(a) * kin.pt(b) * (1 - np.cos(kin.phi(a) - kin.phi(b)))
    np.testing.assert_allclose(kin.transverse_mass2(a, b), expected, rtol=1e-9, atol=1e-12)


def test_unit_and_perpendicular():
    v = np.array([[3.0, 0.0, 4.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(kin.unit(v), [[0.6, 0.0, 0.8], [0.0, 0.0, 0.0]])
    w = kin.perpendicular(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 7.0]))
    np.testing.assert_allclose(w, [1.0, 2.0, 0.0])


def test_perpendicular_basis_is_right_handed_orthonormal():
    rng = np.random.default_rng(4)
    d = rng.normal(size=(10_000, 3))
    d[0] = [0, 0, 1]
    d[1] = [0, 0, -1]
    d[2] = [0, 0, -1e-30]
    d[3] = [1e-9, 0, -1.0]
    e1, e2 = kin.perpendicular_basis(d)
    u = kin.unit(d)
    for a, b in ((e1, e2), (e1, u), (e2, u)):
        np.testing.assert_allclose(kin.dot3(a, b), 0.0, atol=1e-12)
    for a in (e1, e2):
        np.testing.assert_allclose(kin.dot3(a, a), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.cross(e1, e2), u, atol=1e-12)


def test_boost_known_1d_values():
    # a particle at rest seen from a frame moving with +0.6 c along x
    p = np.array([0.0, 0.0, 0.0, 1.0])
    out = kin.boost(p, np.array([0.6, 0.0, 0.0]))
    np.testing.assert_allclose(out, [-0.75, 0.0, 0.0, 1.25])


def test_boost_to_own_rest_frame_and_inverse():
    rng = np.random.default_rng(5)
    p = _random_p4(rng, (1000,), mass=1.3)
    rest = kin.boost_to_rest(p, p)
    np.testing.assert_allclose(rest[:, :3], 0.0, atol=1e-10)
    np.testing.assert_allclose(rest[:, 3], 1.3, rtol=1e-10)
    q = _random_p4(rng, (1000, 3))
    beta = _random_beta(rng, 1000)
    there = kin.boost(q, beta[:, None])
    back = kin.boost(there, -beta[:, None])
    np.testing.assert_allclose(back, q, rtol=1e-9, atol=1e-9)


def test_boost_preserves_minkowski_products():
    rng = np.random.default_rng(6)
    a, b = _random_p4(rng, (1000,)), _random_p4(rng, (1000,), mass=0.0)
    beta = _random_beta(rng, 1000, max_beta=0.999)
    ab = kin.boost(a, beta), kin.boost(b, beta)
    np.testing.assert_allclose(_metric_dot(*ab), _metric_dot(a, b), rtol=1e-8)
    np.testing.assert_allclose(kin.mass(ab[0]), 0.5, rtol=1e-6)


def test_boost_zero_velocity_is_identity_and_superluminal_raises():
    p = np.array([1.0, 2.0, 3.0, 10.0])
    np.testing.assert_array_equal(kin.boost(p, np.zeros(3)), p)
    with pytest.raises(ValueError, match="beta"):
        kin.boost(p, np.array([1.0, 0.0, 0.0]))


def test_axis_rotations_are_right_handed():
    np.testing.assert_allclose(kin.rotate(kin.rotation_z(np.pi / 2), [1.0, 0, 0]), [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(kin.rotate(kin.rotation_x(np.pi / 2), [0, 1.0, 0]), [0, 0, 1], atol=1e-15)
    np.testing.assert_allclose(kin.rotate(kin.rotation_y(np.pi / 2), [0, 0, 1.0]), [1, 0, 0], atol=1e-15)


def test_rotation_about_axis_matrix_matches_vector_form():
    rng = np.random.default_rng(7)
    axis, v = rng.normal(size=(2, 500, 3))
    angle = rng.uniform(-4, 4, size=500)
    r = kin.rotation_about_axis(axis, angle)
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", r, r), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, rtol=1e-12)
    np.testing.assert_allclose(kin.rotate(r, v), kin.rotate_about_axis(v, axis, angle), atol=1e-12)
    # the axis itself is fixed
    np.testing.assert_allclose(kin.rotate(r, axis), axis, atol=1e-12)


def test_rotation_to_z_including_edge_cases():
    rng = np.random.default_rng(8)
    v = rng.normal(size=(1000, 3))
    v[0] = [0, 0, 2.0]
    v[1] = [0, 0, -2.0]
    v[2] = [1e-12, 0, -2.0]
    r = kin.rotation_to_z(v)
    out = kin.rotate(r, v)
    np.testing.assert_allclose(out[:, :2], 0.0, atol=1e-12)
    np.testing.assert_allclose(out[:, 2], np.linalg.norm(v, axis=1), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, rtol=1e-12)
    np.testing.assert_allclose(kin.rotation_to_z(np.zeros(3)), np.eye(3))


def test_rotate_p4_broadcasts_over_particles_and_keeps_energy():
    rng = np.random.default_rng(9)
    p = _random_p4(rng, (20, 4))
    r = kin.rotation_about_axis(rng.normal(size=(20, 3)), rng.uniform(0, 6, 20))
    out = kin.rotate_p4(r[:, None], p)
    assert out.shape == p.shape
    np.testing.assert_array_equal(out[..., 3], p[..., 3])
    np.testing.assert_allclose(kin.mass(out), kin.mass(p), rtol=1e-9)
    np.testing.assert_allclose(out[3, 2, :3], r[3] @ p[3, 2, :3])
