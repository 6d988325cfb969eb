"""Event features for the H/A classifier (PHYSICS.md section 4, paper 3.2).

Frame (applied per event, vectorised):

1. boost to the zero-momentum frame (ZMF) of the four pions (visible ditau
   rest frame);
2. rotate so that the visible tau- (pi- + pi0-) lies along +z;
3. rotate about z so that the pi+ has no y component (and px >= 0).

What is transformed, and how:

- pions: four-vectors, boosted then rotated;
- MET: the truth sum of the two neutrinos' (px, py) in the lab, as the
  *massless* four-vector (px, py, 0, |pT|) (the longitudinal momentum is not
  measurable), boosted then rotated. (The reference code boosted the
  spacelike (px, py, 0, 0) instead; only consistency between samples matters.)
- impact-parameter (IP) vectors: computed in the lab and only *rotated*. An
  IP is a spatial displacement measured at no particular time, not the spatial
  part of a four-vector, so a boost has nothing well defined to act on; the
  rotation expresses it in the same axes as the momenta and keeps its length
  (mm, as measured).

Degenerate input: a pion with zero momentum or a pi0 collinear with its pi
(perpendicular part below 1e-12 of |p_pi0|, i.e. rounding noise) gives a zero
p_perp; then phi = pi/2 and O* = 0 (finite, no NaN), so phi* is pi/2 or 3 pi/2. Events whose four pions do not form a timelike total momentum raise
``ValueError`` from the boost.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from hpcmix.physics import kinematics as kin
from hpcmix.physics.layout import (
    NU_MINUS,
    NU_PLUS,
    P4,
    PARTICLES,
    PI0_MINUS,
    PI0_PLUS,
    PI_MINUS,
    PI_PLUS,
    TAUS,
    XYZ,
)

__all__ = [
    "FEATURE_NAMES",
    "NETWORK_INPUT_SETS",
    "PION_NAMES",
    "FrameTransform",
    "acoplanarity",
    "compute_features",
    "feature_indices",
    "frame_transform",
    "impact_parameters",
    "met_lab",
    "network_inputs",
]

#: particle-axis indices of the pions in p4, and the order of FrameTransform.pions
PION_INDICES = (PI_PLUS, PI0_PLUS, PI_MINUS, PI0_MINUS)
PION_NAMES = tuple(PARTICLES[i] for i in PION_INDICES)
# positions in FrameTransform.pions
_PIP, _PI0P, _PIM, _PI0M = range(4)

FEATURE_NAMES: tuple[str, ...] = (
    *(f"{name}_{c}" for name in PION_NAMES for c in P4),  # 16, transformed frame
    "met_x",  # transformed frame
    "met_y",
    "m_vis",  # invariant
    "mt_tot",  # lab frame
    "upsilon_plus",  # transformed frame energies
    "upsilon_minus",
    "upsilon_product",
    "o_star",
    "phi_star",
    *(f"ip_{tau}_{c}" for tau in TAUS for c in XYZ),  # transformed frame, mm
)
_COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}

_IP = tuple(f"ip_{tau}_{c}" for tau in TAUS for c in XYZ)
_PHI_STAR = ("phi_star",)
_PHI_STAR_UPSILON = _PHI_STAR + ("upsilon_plus", "upsilon_minus")
_HIGH_LEVEL = _PHI_STAR_UPSILON + ("met_x", "met_y", "mt_tot", *_IP, "o_star")

NETWORK_INPUT_SETS: dict[str, tuple[str, ...]] = {
    # the reference network's 25 inputs (ML-2HDM; the paper says 26 nodes)
    "reference25": (
        "pi_plus_px", "pi_plus_pz", "pi_plus_e",
        "pi0_plus_pz", "pi0_plus_e",
        "pi_minus_px", "pi_minus_py", "pi_minus_pz", "pi_minus_e",
        "pi0_minus_pz", "pi0_minus_e",
        "met_x", "met_y",
        "upsilon_plus", "upsilon_minus",
        "o_star", "phi_star",
        *_IP,
        "m_vis", "mt_tot",
    ),  # fmt: skip
    # the high-level subsets of the paper's AUC study (PHYSICS.md section 4)
    "phi_star": _PHI_STAR,
    "phi_star_upsilon": _PHI_STAR_UPSILON,
    "high_level": _HIGH_LEVEL,
    "high_level_mvis": _HIGH_LEVEL + ("m_vis",),
    "all": FEATURE_NAMES,
}


class FrameTransform(NamedTuple):
    """Quantities in the transformed frame (see the module docstring)."""

    pions: np.ndarray  #: (n, 4, 4) four-momenta, order PION_NAMES
    met: np.ndarray  #: (n, 4) massless MET four-vector
    ip: np.ndarray  #: (n, 2, 3) IP vectors (mm), order TAUS
    beta: np.ndarray  #: (n, 3) lab velocity of the pions' ZMF (the boost applied)
    rotation: np.ndarray  #: (n, 3, 3) rotation applied after the boost


def _check_inputs(p4, vertex) -> tuple[np.ndarray, np.ndarray]:
    p4, vertex = np.asarray(p4), np.asarray(vertex)
    want_p4 = (len(PARTICLES), len(P4))
    want_vx = (len(TAUS), len(XYZ))
    if p4.ndim != 3 or p4.shape[1:] != want_p4:
        raise ValueError(
            f"p4 must have shape (n_events, {want_p4[0]}, {want_p4[1]}): particles {PARTICLES} "
            f"by components {P4} (hpcmix.physics.layout); got {p4.shape}"
        )
    if vertex.ndim != 3 or vertex.shape[1:] != want_vx:
        raise ValueError(
            f"vertex must have shape (n_events, {want_vx[0]}, {want_vx[1]}): tau {TAUS} decay "
            f"vertices by {XYZ} in mm (hpcmix.physics.layout); got {vertex.shape}"
        )
    if p4.shape[0] != vertex.shape[0]:
        raise ValueError(f"p4 and vertex must describe the same events; got {p4.shape[0]} and {vertex.shape[0]} rows")
    for name, a in (("p4", p4), ("vertex", vertex)):
        if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
            raise ValueError(f"{name} must hold real numbers; got dtype {a.dtype}")
    return p4.astype(np.float64, copy=False), vertex.astype(np.float64, copy=False)


def met_lab(p4) -> np.ndarray:
    """Truth MET (n, 2): lab (px, py) of the sum of the two neutrinos."""
    p4 = np.asarray(p4, dtype=np.float64)
    return p4[:, NU_PLUS, :2] + p4[:, NU_MINUS, :2]


def impact_parameters(p4, vertex) -> np.ndarray:
    """Lab IP vectors (n, 2, 3) in mm of the pi+ and pi- tracks.

    From the primary vertex (origin) to the closest point of the straight line
    through the tau decay vertex along the charged pion's momentum, i.e. the
    vertex minus its projection on the track: perpendicular to the track.
    """
    p4, vertex = _check_inputs(p4, vertex)
    return kin.perpendicular(vertex, p4[:, [PI_PLUS, PI_MINUS], :3])


def frame_transform(p4, vertex) -> FrameTransform:
    """Boost/rotate pions, MET and IP vectors into the feature frame (module docstring)."""
    p4, vertex = _check_inputs(p4, vertex)
    n = p4.shape[0]
    pions_lab = p4[:, PION_INDICES, :]
    met_xy = met_lab(p4)
    met4 = np.zeros((n, 4))
    met4[:, :2] = met_xy
    met4[:, 3] = np.hypot(met_xy[:, 0], met_xy[:, 1])  # massless, pz = 0 by convention

    beta = kin.beta_of(pions_lab.sum(axis=1))
    pions = kin.boost(pions_lab, beta[:, None, :])
    met = kin.boost(met4, beta)

    # visible tau- onto +z, then the pi+ into the xz half-plane with px >= 0
    to_z = kin.rotation_to_z(pions[:, _PIM, :3] + pions[:, _PI0M, :3])
    pip = kin.rotate(to_z, pions[:, _PIP, :3])
    rotation = np.einsum("nij,njk->nik", kin.rotation_z(-kin.phi(pip)), to_z)

    pions = kin.rotate_p4(rotation[:, None], pions)
    met = kin.rotate_p4(rotation, met)
    ip = kin.rotate(rotation[:, None], kin.perpendicular(vertex, p4[:, [PI_PLUS, PI_MINUS], :3]))
    return FrameTransform(pions=pions, met=met, ip=ip, beta=beta, rotation=rotation)


def acoplanarity(pions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(phi_star, o_star) from pion four-momenta (n, 4, 4) in PION_NAMES order.

    Evaluate in the ZMF (the result is invariant under the rotations).
    p_perp = unit(pi0 momentum perpendicular to its pi); phi = arccos(p_perp+ .
    p_perp-) in [0, pi]; O* = p_hat(pi-) . (p_perp+ x p_perp-);
    phi' = phi if O* >= 0 else 2 pi - phi; phi* = phi' if Upsilon+ Upsilon- >= 0
    else (phi' + pi) mod 2 pi. Result in [0, 2 pi).
    """
    pions = np.asarray(pions, dtype=np.float64)
    mom = pions[..., :3]
    perp_plus = _perp_direction(mom[:, _PI0P], mom[:, _PIP])
    perp_minus = _perp_direction(mom[:, _PI0M], mom[:, _PIM])
    angle = np.arccos(np.clip(kin.dot3(perp_plus, perp_minus), -1.0, 1.0))
    o_star = kin.dot3(kin.unit(mom[:, _PIM]), np.cross(perp_plus, perp_minus))
    phi_prime = np.where(o_star >= 0, angle, 2.0 * np.pi - angle)
    y_product = _upsilon(pions[:, _PIP], pions[:, _PI0P]) * _upsilon(pions[:, _PIM], pions[:, _PI0M])
    phi_star = np.where(y_product >= 0, phi_prime, np.mod(phi_prime + np.pi, 2.0 * np.pi))
    # float rounding of 2 pi - phi or of the mod can give exactly 2 pi: fold into [0, 2 pi)
    phi_star = np.where(phi_star >= 2.0 * np.pi, 0.0, phi_star)
    return phi_star, o_star


# below this fraction of |p_pi0| the perpendicular component is rounding noise
_COLLINEAR_TOLERANCE = 1e-12


def _perp_direction(neutral: np.ndarray, charged: np.ndarray) -> np.ndarray:
    # unit(pi0 momentum perpendicular to the pi); zero when (numerically) collinear
    perp = kin.perpendicular(neutral, charged)
    length = np.sqrt(kin.dot3(perp, perp))
    collinear = length <= _COLLINEAR_TOLERANCE * np.sqrt(kin.dot3(neutral, neutral))
    return np.where(collinear[..., None], 0.0, kin.unit(perp))


def _upsilon(charged: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    # energy sharing (E_pi - E_pi0)/(E_pi + E_pi0); both energies > 0 for real pions
    e_c, e_n = charged[..., 3], neutral[..., 3]
    return kin._safe_divide(e_c - e_n, e_c + e_n)


def compute_features(p4, vertex) -> np.ndarray:
    """Feature table float32 (n, len(FEATURE_NAMES)), columns in FEATURE_NAMES order."""
    p4, vertex = _check_inputs(p4, vertex)
    ft = frame_transform(p4, vertex)
    n = p4.shape[0]
    out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
    out[:, :16] = ft.pions.reshape(n, 16)
    out[:, _COLUMN["met_x"]] = ft.met[:, 0]
    out[:, _COLUMN["met_y"]] = ft.met[:, 1]

    tau_plus = p4[:, PI_PLUS] + p4[:, PI0_PLUS]  # visible taus, lab frame
    tau_minus = p4[:, PI_MINUS] + p4[:, PI0_MINUS]
    out[:, _COLUMN["m_vis"]] = kin.mass(tau_plus + tau_minus)
    met = met_lab(p4)
    out[:, _COLUMN["mt_tot"]] = np.sqrt(
        kin.transverse_mass2(met, tau_plus)
        + kin.transverse_mass2(met, tau_minus)
        + kin.transverse_mass2(tau_plus, tau_minus)
    )

    y_plus = _upsilon(ft.pions[:, _PIP], ft.pions[:, _PI0P])
    y_minus = _upsilon(ft.pions[:, _PIM], ft.pions[:, _PI0M])
    out[:, _COLUMN["upsilon_plus"]] = y_plus
    out[:, _COLUMN["upsilon_minus"]] = y_minus
    out[:, _COLUMN["upsilon_product"]] = y_plus * y_minus
    phi_star, o_star = acoplanarity(ft.pions)
    out[:, _COLUMN["o_star"]] = o_star
    out[:, _COLUMN["phi_star"]] = phi_star
    out[:, _COLUMN["ip_plus_x"] : _COLUMN["ip_minus_z"] + 1] = ft.ip.reshape(n, 6)
    return out.astype(np.float32)


def network_inputs(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Resolve a named set (NETWORK_INPUT_SETS) or validate a list of FEATURE_NAMES.

    A study's set is its ``features.network_inputs`` (``Study.network_inputs``, resolved).
    """
    if spec is None:
        raise ValueError("network inputs: give a named set (e.g. 'reference25') or a list of feature names")
    if isinstance(spec, str):
        try:
            return NETWORK_INPUT_SETS[spec]
        except KeyError:
            raise ValueError(
                f"unknown network-input set {spec!r}; valid sets: {sorted(NETWORK_INPUT_SETS)} "
                f"(or give a list of feature names from FEATURE_NAMES)"
            ) from None
    names = tuple(spec)
    if not names:
        raise ValueError("network inputs must name at least one feature")
    if not all(isinstance(s, str) for s in names):
        raise ValueError(f"network inputs must be feature-name strings; got {names!r}")
    unknown = [s for s in names if s not in _COLUMN]
    if unknown:
        raise ValueError(f"unknown feature name(s) {unknown}; valid names: {list(FEATURE_NAMES)}")
    duplicates = sorted({s for s in names if names.count(s) > 1})
    if duplicates:
        raise ValueError(f"duplicate feature name(s) {duplicates} in network inputs")
    return names


def feature_indices(spec: str | Sequence[str]) -> np.ndarray:
    """Column indices into compute_features' output for ``network_inputs(spec)``."""
    return np.array([_COLUMN[s] for s in network_inputs(spec)], dtype=np.intp)
