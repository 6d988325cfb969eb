"""Detector smearing of the four pions (PHYSICS.md section 3, paper 3.1).

Model, per pion: rotate the 3-momentum by an angle theta ~ N(0, sigma_theta)
about an axis perpendicular to it whose azimuth (around the momentum) is
uniform; scale the 3-momentum by (1 + N(0, sigma_E/E)); recompute the energy
from the PDG mass. Neutrinos are copied unchanged, so MET stays truth.

Random-number order (reproducibility contract)
----------------------------------------------
One call draws exactly ``n_events * 12`` 64-bit words from ``rng`` as a single
``rng.integers(0, 2**52, size=(n_events, 4, 3), dtype=uint64)`` block, i.e.
event-major, then pion in the order pi+, pi0+, pi-, pi0-, then
(axis azimuth, rotation angle, momentum scale). Each integer k becomes a
uniform u = (k + 0.5) / 2**52 in the open interval (0, 1); the azimuth is
2 pi u and the two Gaussians are Phi^-1(u) (``scipy.special.ndtri``).
Consequences: the same generator state gives the same output, and smearing a
chunk in consecutive pieces with one generator gives the same numbers as
smearing it at once (every event consumes its own 12 words of the stream).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

from hpcmix.physics import kinematics as kin
from hpcmix.physics.layout import (
    M_PI_CHARGED,
    M_PI_NEUTRAL,
    PARTICLES,
    PI0_MINUS,
    PI0_PLUS,
    PI_MINUS,
    PI_PLUS,
    P4,
)

__all__ = ["smear_pions", "PION_INDICES", "N_RANDOM_PER_EVENT"]

#: particle-axis indices of the smeared pions, in random-draw order
PION_INDICES = (PI_PLUS, PI0_PLUS, PI_MINUS, PI0_MINUS)
_IS_CHARGED = np.array([True, False, True, False])
_MASSES = np.where(_IS_CHARGED, M_PI_CHARGED, M_PI_NEUTRAL)
#: 64-bit words consumed from the generator per event
N_RANDOM_PER_EVENT = 12
_U_BITS = 52


def _check_p4(p4) -> np.ndarray:
    p4 = np.asarray(p4)
    expected = (len(PARTICLES), len(P4))
    if p4.ndim != 3 or p4.shape[1:] != expected:
        raise ValueError(
            f"p4 must have shape (n_events, {expected[0]}, {expected[1]}): particles "
            f"{PARTICLES} by components {P4} (see hpcmix.physics.layout); got shape "
            f"{p4.shape}. A single event needs a leading axis: p4[None]."
        )
    if not np.issubdtype(p4.dtype, np.number) or np.iscomplexobj(p4):
        raise ValueError(f"p4 must hold real numbers; got dtype {p4.dtype}")
    return p4.astype(np.float64, copy=False)


def _check_sigma(name: str, key: str, value) -> float:
    sigma = float(value)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (study setting {key}); got {sigma!r}")
    return sigma


def smear_pions(
    p4,
    rng: np.random.Generator,
    *,
    charged_sigma_theta: float,
    charged_sigma_e_rel: float,
    neutral_sigma_theta: float,
    neutral_sigma_e_rel: float,
) -> np.ndarray:
    """Return a smeared copy of ``p4`` (n, 6, 4); pions smeared, neutrinos untouched.

    The widths are the study's ``smearing.{charged,neutral}_pion.{sigma_theta, sigma_e_rel}``
    (radians, and sigma_E/E; ``Study.smearing.widths()`` gives these keywords). See the
    module docstring for the model and the exact random-number order.
    """
    p4 = _check_p4(p4)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)); got {type(rng).__name__}"
        )
    c_theta = _check_sigma("charged_sigma_theta", "smearing.charged_pion.sigma_theta", charged_sigma_theta)
    c_erel = _check_sigma("charged_sigma_e_rel", "smearing.charged_pion.sigma_e_rel", charged_sigma_e_rel)
    n_theta = _check_sigma("neutral_sigma_theta", "smearing.neutral_pion.sigma_theta", neutral_sigma_theta)
    n_erel = _check_sigma("neutral_sigma_e_rel", "smearing.neutral_pion.sigma_e_rel", neutral_sigma_e_rel)
    sigma_theta = np.where(_IS_CHARGED, c_theta, n_theta)
    sigma_erel = np.where(_IS_CHARGED, c_erel, n_erel)

    n = p4.shape[0]
    words = rng.integers(0, 2**_U_BITS, size=(n, len(PION_INDICES), 3), dtype=np.uint64)
    u = (words.astype(np.float64) + 0.5) * 2.0**-_U_BITS  # open interval (0, 1)
    azimuth = 2.0 * np.pi * u[..., 0]
    theta = sigma_theta * ndtri(u[..., 1])
    scale = 1.0 + sigma_erel * ndtri(u[..., 2])

    mom = p4[:, PION_INDICES, :3]
    # rotation axis: perpendicular to the momentum, uniform azimuth around it
    e1, e2 = kin.perpendicular_basis(mom)
    axis = np.cos(azimuth)[..., None] * e1 + np.sin(azimuth)[..., None] * e2
    smeared = kin.rotate_about_axis(mom, axis, theta) * scale[..., None]

    out = p4.copy()
    out[:, PION_INDICES, :3] = smeared
    # energy from the PDG mass, so the smeared pion stays on shell
    out[:, PION_INDICES, 3] = kin.energy(smeared, _MASSES)
    return out
