"""Vectorised four-vector and rotation helpers.

Every function works on arrays whose last axis holds the components and
broadcasts over all leading axes (events, particles), so no stage needs a
per-event Python loop.

Conventions
-----------
- Four-vectors are ``(..., 4)`` arrays ordered ``(px, py, pz, e)`` (see
  :mod:`hpcmix.physics.layout`); 3-vectors are ``(..., 3)`` arrays.
- Rotation matrices are ``(..., 3, 3)`` and act on column vectors:
  ``v' = R v`` (:func:`rotate`).
- :func:`boost` is *passive*: it returns the components seen by an observer
  moving with velocity ``beta`` (units of c) relative to the current frame, so
  ``boost(P, P[..., :3] / P[..., 3:])`` brings ``P`` to rest.
- Degenerate input (zero-length vectors) gives zeros rather than NaN, without
  floating-point warnings: :func:`unit` of a zero vector is the zero vector,
  :func:`phi` of a vector along the beam is 0, :func:`eta` is +-inf.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "p3",
    "p_abs",
    "pt",
    "eta",
    "phi",
    "mass2",
    "mass",
    "energy",
    "delta_phi",
    "delta_r",
    "dot3",
    "unit",
    "perpendicular",
    "perpendicular_basis",
    "beta_of",
    "boost",
    "boost_to_rest",
    "rotation_x",
    "rotation_y",
    "rotation_z",
    "rotation_about_axis",
    "rotation_to_z",
    "rotate",
    "rotate_p4",
    "rotate_about_axis",
    "transverse_mass2",
]


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den == 0`` (no warnings, no NaN)."""
    num, den = np.broadcast_arrays(_f64(num), _f64(den))
    return np.divide(num, den, out=np.zeros(num.shape), where=den != 0)


# --- components --------------------------------------------------------------


def p3(p: np.ndarray) -> np.ndarray:
    """Spatial part ``(..., 3)`` of four-vectors ``(..., 4)`` (a view)."""
    return _f64(p)[..., :3]


def dot3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean dot product over the last axis of 3-vectors."""
    a, b = _f64(a), _f64(b)
    return np.einsum("...i,...i->...", a, b)


def p_abs(p: np.ndarray) -> np.ndarray:
    """Length of the 3-momentum of four-vectors (or of 3-vectors)."""
    p = _f64(p)
    return np.sqrt(dot3(p[..., :3], p[..., :3]))


def pt(p: np.ndarray) -> np.ndarray:
    """Transverse momentum sqrt(px^2 + py^2)."""
    p = _f64(p)
    return np.hypot(p[..., 0], p[..., 1])


def eta(p: np.ndarray) -> np.ndarray:
    """Pseudorapidity asinh(pz/pT); +-inf along the beam, 0 for a null vector."""
    p = _f64(p)
    transverse = pt(p)
    pz = p[..., 2]
    safe = transverse > 0
    out = np.where(pz > 0, np.inf, np.where(pz < 0, -np.inf, 0.0))
    np.arcsinh(pz / np.where(safe, transverse, 1.0), out=out, where=safe)
    return out


def phi(p: np.ndarray) -> np.ndarray:
    """Azimuth atan2(py, px) in (-pi, pi]."""
    p = _f64(p)
    return np.arctan2(p[..., 1], p[..., 0])


def mass2(p: np.ndarray) -> np.ndarray:
    """Minkowski square e^2 - |p|^2 (metric +,-,-,-)."""
    p = _f64(p)
    return p[..., 3] ** 2 - dot3(p[..., :3], p[..., :3])


def mass(p: np.ndarray) -> np.ndarray:
    """Invariant mass; a (rounding-level) negative m^2 is clipped to 0, not signed."""
    return np.sqrt(np.maximum(mass2(p), 0.0))


def energy(p3vec: np.ndarray, m) -> np.ndarray:
    """On-shell energy sqrt(|p|^2 + m^2) for 3-momenta and mass(es) ``m``."""
    p3vec = _f64(p3vec)
    return np.sqrt(dot3(p3vec, p3vec) + _f64(m) ** 2)


def delta_phi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """phi(a) - phi(b) wrapped into [-pi, pi)."""
    d = phi(a) - phi(b)
    return (d + np.pi) % (2.0 * np.pi) - np.pi


def delta_r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angular distance sqrt(d_eta^2 + d_phi^2) between four-vectors."""
    return np.hypot(eta(a) - eta(b), delta_phi(a, b))


def transverse_mass2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """mT^2(a, b) = 2 pT_a pT_b (1 - cos dphi), as 2 (pT_a pT_b - a_T . b_T).

    The dot-product form avoids computing azimuths (and is exact for a null
    vector); rounding-level negatives are clipped to 0.
    """
    a, b = _f64(a), _f64(b)
    dot_t = a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]
    return np.maximum(2.0 * (pt(a) * pt(b) - dot_t), 0.0)


# --- 3-vector geometry -------------------------------------------------------


def unit(v: np.ndarray) -> np.ndarray:
    """Unit 3-vectors along ``v``; a zero vector stays zero (no NaN)."""
    v = _f64(v)
    return _safe_divide(v, np.sqrt(dot3(v, v))[..., None])


def perpendicular(v: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Component of ``v`` perpendicular to ``direction`` (3-vectors)."""
    v = _f64(v)
    d = unit(direction)
    return v - dot3(v, d)[..., None] * d


def perpendicular_basis(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors ``(e1, e2)`` with ``(e1, e2, unit(d))`` right-handed orthonormal.

    Branch-free construction of Duff et al., JCGT 6 (2017) 1; defined for every
    input (a zero ``d`` gives the x and y axes), no division by ~0.
    """
    d = unit(d)
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    sign = np.copysign(1.0, z)
    a = -1.0 / (sign + z)
    b = x * y * a
    e1 = np.stack([1.0 + sign * x * x * a, sign * b, -sign * x], axis=-1)
    e2 = np.stack([b, sign + y * y * a, -y], axis=-1)
    return e1, e2


# --- Lorentz boosts ----------------------------------------------------------


def beta_of(frame: np.ndarray) -> np.ndarray:
    """Velocity p/E (units of c) of the frame in which ``frame`` is at rest."""
    frame = _f64(frame)
    return _safe_divide(frame[..., :3], frame[..., 3:4])


def boost(p: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Four-vectors ``p`` as seen from a frame moving with velocity ``beta``.

    General (non-collinear) pure boost; ``beta`` broadcasts against
    ``p[..., :3]``. Uses (gamma - 1)/beta^2 = gamma^2/(1 + gamma), which is
    finite at beta = 0. Raises ``ValueError`` for |beta| >= 1.
    """
    p, beta = _f64(p), _f64(beta)
    b2 = dot3(beta, beta)
    if np.any(b2 >= 1.0):
        raise ValueError("boost: |beta| must be < 1 (a timelike frame four-momentum)")
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = dot3(beta, p[..., :3])
    e = p[..., 3]
    coeff = gamma**2 / (1.0 + gamma) * bp - gamma * e
    out = np.empty(np.broadcast_shapes(p.shape, beta.shape[:-1] + (4,)))
    out[..., :3] = p[..., :3] + coeff[..., None] * beta
    out[..., 3] = gamma * (e - bp)
    return out


def boost_to_rest(p: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Four-vectors ``p`` in the rest frame of the four-momentum ``frame``."""
    return boost(p, beta_of(frame))


# --- rotations ---------------------------------------------------------------


def _rotation_matrix(c: np.ndarray, s: np.ndarray, i: int, j: int) -> np.ndarray:
    # rotation in the (i, j) plane by the angle with cosine c and sine s
    c, s = np.broadcast_arrays(_f64(c), _f64(s))
    r = np.zeros(c.shape + (3, 3))
    k = 3 - i - j
    r[..., k, k] = 1.0
    r[..., i, i] = c
    r[..., j, j] = c
    r[..., i, j] = -s
    r[..., j, i] = s
    return r


def rotation_x(angle) -> np.ndarray:
    """Active right-handed rotation matrices about +x by ``angle`` (radians)."""
    angle = _f64(angle)
    return _rotation_matrix(np.cos(angle), np.sin(angle), 1, 2)


def rotation_y(angle) -> np.ndarray:
    """Active right-handed rotation matrices about +y by ``angle`` (radians)."""
    angle = _f64(angle)
    return _rotation_matrix(np.cos(angle), np.sin(angle), 2, 0)


def rotation_z(angle) -> np.ndarray:
    """Active right-handed rotation matrices about +z by ``angle`` (radians)."""
    angle = _f64(angle)
    return _rotation_matrix(np.cos(angle), np.sin(angle), 0, 1)


def rotation_about_axis(axis: np.ndarray, angle) -> np.ndarray:
    """Rodrigues matrices R = cos I + sin [k]x + (1 - cos) k k^T, k = unit(axis)."""
    k = unit(axis)
    angle = _f64(angle)
    c, s = np.cos(angle)[..., None, None], np.sin(angle)[..., None, None]
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    cross = np.stack(
        [
            np.stack([zero, -kz, ky], axis=-1),
            np.stack([kz, zero, -kx], axis=-1),
            np.stack([-ky, kx, zero], axis=-1),
        ],
        axis=-2,
    )
    outer = np.einsum("...i,...j->...ij", k, k)
    return c * np.eye(3) + s * cross + (1.0 - c) * outer


def rotation_to_z(v: np.ndarray) -> np.ndarray:
    """Rotation matrices taking the direction of ``v`` onto +z: R_y(-theta) R_z(-phi).

    Built from the polar and azimuthal angles with atan2, so it is smooth and
    finite for every input (``v`` along -z gives a rotation by pi about y, a
    zero ``v`` the identity). The residual freedom (a rotation about z) is left
    to the caller.
    """
    v = _f64(v)
    polar = np.arctan2(np.hypot(v[..., 0], v[..., 1]), v[..., 2])
    azimuth = np.arctan2(v[..., 1], v[..., 0])
    return np.einsum("...ij,...jk->...ik", rotation_y(-polar), rotation_z(-azimuth))


def rotate(r: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Apply rotation matrices ``(..., 3, 3)`` to 3-vectors ``(..., 3)`` (broadcasting)."""
    return np.einsum("...ij,...j->...i", _f64(r), _f64(v))


def rotate_p4(r: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Rotate the spatial part of four-vectors; the energy is unchanged."""
    p = _f64(p)
    spatial = rotate(r, p[..., :3])
    out = np.empty(spatial.shape[:-1] + (4,))
    out[..., :3] = spatial
    out[..., 3] = np.broadcast_to(p[..., 3], spatial.shape[:-1])
    return out


def rotate_about_axis(v: np.ndarray, axis: np.ndarray, angle) -> np.ndarray:
    """Rotate 3-vectors ``v`` by ``angle`` about ``axis`` (Rodrigues, without matrices)."""
    v = _f64(v)
    k = unit(axis)
    angle = _f64(angle)[..., None]
    c, s = np.cos(angle), np.sin(angle)
    return v * c + np.cross(k, v) * s + k * dot3(k, v)[..., None] * (1.0 - c)
