"""Event selection of paper section 3.1 on visible taus (pi + pi0), vectorised over events.

The cuts that need only the two hard-process taus live here; the two that need
the whole event record (no third tau passing the pT cut, the e/mu veto) are
counted by the generator while the event is still in Pythia's memory.

The visible-mass window (``m_vis_min``/``m_vis_max``) is not in the paper's
text but in its reference code, which kept 150 < m_vis < 500 GeV; it raises
the phi* amplitude from 0.039 to the paper's 0.041 (docs/REPRODUCTION.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import numpy as np

from .layout import E, PI0_MINUS, PI0_PLUS, PI_MINUS, PI_PLUS, PX, PY, PZ

# Cut names in the order they are applied; the generator appends its own two.
VISIBLE_TAU_CUTS = ("tau_pt", "tau_eta", "delta_r", "m_vis")
EVENT_RECORD_CUTS = ("n_taus", "lepton_veto")
CUTFLOW_STEPS = ("tried", "tau_pair") + VISIBLE_TAU_CUTS + EVENT_RECORD_CUTS


@dataclass(frozen=True)
class SelectionCuts:
    """Thresholds of the ditau selection (GeV, radians); the study's come from ``hpcmix.selection``."""

    tau_vis_pt_min: float
    tau_vis_abs_eta_max: float
    delta_r_min: float
    max_taus_passing_pt: int
    lepton_pt_veto: float
    m_vis_min: float = 0.0           # GeV, four-pion invariant mass window
    m_vis_max: float | None = None   # GeV; None: no upper edge

    def __post_init__(self) -> None:
        cuts = self
        if cuts.tau_vis_pt_min < 0 or cuts.tau_vis_abs_eta_max <= 0 or cuts.delta_r_min < 0:
            raise ValueError(f"selection thresholds must be non-negative (eta > 0), got {asdict(cuts)}")
        if cuts.m_vis_min < 0 or (cuts.m_vis_max is not None and cuts.m_vis_max <= cuts.m_vis_min):
            raise ValueError(f"the visible-mass window needs 0 <= m_vis_min < m_vis_max (GeV), got "
                             f"[{cuts.m_vis_min}, {cuts.m_vis_max}]; set m_vis_max to null for no upper edge")
        if cuts.max_taus_passing_pt < 2:
            raise ValueError(f"max_taus_passing_pt must be at least 2 (the signal pair), got {cuts.max_taus_passing_pt}")

    def as_dict(self) -> dict:
        return asdict(self)


def visible_taus(p4: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the visible tau+ and tau- four-momenta (pi + pi0), each of shape (n, 4)."""
    return p4[:, PI_PLUS] + p4[:, PI0_PLUS], p4[:, PI_MINUS] + p4[:, PI0_MINUS]


def visible_tau_cuts(px_p, py_p, pz_p, e_p, px_m, py_m, pz_m, e_m, cuts: SelectionCuts, *, xp=np):
    """Cumulative pass flags (pt, eta, delta R, m_vis) from the visible taus' four-momenta.

    One formula for both uses: arrays of events with ``xp=numpy``, and the
    generator's per-event floats with ``xp=SCALAR_MATH`` (plain ``math``, a few us).
    """
    pt_p = (px_p * px_p + py_p * py_p) ** 0.5
    pt_m = (px_m * px_m + py_m * py_m) ** 0.5
    ok_pt = (pt_p > cuts.tau_vis_pt_min) & (pt_m > cuts.tau_vis_pt_min)
    # |eta| < eta_max  <=>  |pz| < pT sinh(eta_max): no division, pT = 0 fails
    pz_max = xp.sinh(cuts.tau_vis_abs_eta_max)
    ok_eta = ok_pt & (abs(pz_p) < pt_p * pz_max) & (abs(pz_m) < pt_m * pz_max)
    # eta only matters where the eta cut passed (pT > 0 there)
    eta_p = xp.arcsinh(pz_p / xp.maximum(pt_p, 1e-12))
    eta_m = xp.arcsinh(pz_m / xp.maximum(pt_m, 1e-12))
    dphi = (xp.arctan2(py_p, px_p) - xp.arctan2(py_m, px_m) + math.pi) % (2 * math.pi) - math.pi
    ok_dr = ok_eta & ((eta_p - eta_m) ** 2 + dphi * dphi > cuts.delta_r_min ** 2)
    # the window is on m^2 (no square root, and m^2 < 0 from rounding fails any m_vis_min > 0)
    m2 = (e_p + e_m) ** 2 - (px_p + px_m) ** 2 - (py_p + py_m) ** 2 - (pz_p + pz_m) ** 2
    ok_m = ok_dr & (m2 >= cuts.m_vis_min ** 2)
    if cuts.m_vis_max is not None:
        ok_m = ok_m & (m2 < cuts.m_vis_max ** 2)
    return ok_pt, ok_eta, ok_dr, ok_m


# the numpy functions visible_tau_cuts uses, for Python floats
SCALAR_MATH = SimpleNamespace(sinh=math.sinh, arcsinh=math.asinh, maximum=max, arctan2=math.atan2)


def visible_tau_cutflow(p4: np.ndarray, cuts: SelectionCuts) -> dict[str, np.ndarray]:
    """Cumulative pass masks for the cuts in ``VISIBLE_TAU_CUTS``, each of shape (n,)."""
    tp, tm = visible_taus(p4)
    flags = visible_tau_cuts(tp[:, PX], tp[:, PY], tp[:, PZ], tp[:, E], tm[:, PX], tm[:, PY], tm[:, PZ], tm[:, E], cuts)
    return dict(zip(VISIBLE_TAU_CUTS, flags))


def first_failed_visible_tau_cut(p4_event, cuts: SelectionCuts) -> str | None:
    """For one event (6 x 4 floats): the name of the first visible-tau cut it fails, or None."""
    plus = [a + b for a, b in zip(p4_event[PI_PLUS], p4_event[PI0_PLUS])]
    minus = [a + b for a, b in zip(p4_event[PI_MINUS], p4_event[PI0_MINUS])]
    flags = visible_tau_cuts(*plus, *minus, cuts, xp=SCALAR_MATH)
    for name, ok in zip(VISIBLE_TAU_CUTS, flags):
        if not ok:
            return name
    return None
