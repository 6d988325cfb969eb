"""Event selection of paper section 3.1 on visible taus (pi + pi0), vectorised over events.

The cuts that need only the two hard-process taus live here; the two that need
the whole event record (no third tau passing the pT cut, the e/mu veto) are
counted by the generator while the event is still in Pythia's memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .. import config
from .layout import E, PI0_MINUS, PI0_PLUS, PI_MINUS, PI_PLUS, PX, PY, PZ

# Cut names in the order they are applied; the generator appends its own two.
VISIBLE_TAU_CUTS = ("tau_pt", "tau_eta", "delta_r")
EVENT_RECORD_CUTS = ("n_taus", "lepton_veto")
CUTFLOW_STEPS = ("tried", "tau_pair") + VISIBLE_TAU_CUTS + EVENT_RECORD_CUTS


@dataclass(frozen=True)
class SelectionCuts:
    """Thresholds of the ditau selection (GeV, radians); defaults from ``hpcmix.selection``."""

    tau_vis_pt_min: float
    tau_vis_abs_eta_max: float
    delta_r_min: float
    max_taus_passing_pt: int
    lepton_pt_veto: float

    @classmethod
    def from_config(cls, **overrides) -> "SelectionCuts":
        values = {k: config.get(f"selection.{k}", overrides.pop(k, None)) for k in cls.__dataclass_fields__}
        if overrides:
            raise ValueError(f"unknown selection cut(s) {sorted(overrides)}; allowed: {sorted(cls.__dataclass_fields__)}")
        cuts = cls(**values)
        if cuts.tau_vis_pt_min < 0 or cuts.tau_vis_abs_eta_max <= 0 or cuts.delta_r_min < 0:
            raise ValueError(f"selection thresholds must be non-negative (eta > 0), got {asdict(cuts)}")
        if cuts.max_taus_passing_pt < 2:
            raise ValueError(f"max_taus_passing_pt must be at least 2 (the signal pair), got {cuts.max_taus_passing_pt}")
        return cuts

    def as_dict(self) -> dict:
        return asdict(self)


def visible_taus(p4: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the visible tau+ and tau- four-momenta (pi + pi0), each of shape (n, 4)."""
    return p4[:, PI_PLUS] + p4[:, PI0_PLUS], p4[:, PI_MINUS] + p4[:, PI0_MINUS]


def _pt_eta_phi(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pt = np.hypot(v[:, PX], v[:, PY])
    # eta = asinh(pz / pT); a vanishing pT maps to |eta| = inf, which fails any eta cut
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, v[:, PZ] / np.where(pt > 0, pt, 1.0), np.sign(v[:, PZ]) * np.inf))
    return pt, eta, np.arctan2(v[:, PY], v[:, PX])


def visible_tau_cutflow(p4: np.ndarray, cuts: SelectionCuts) -> dict[str, np.ndarray]:
    """Cumulative pass masks for the cuts in ``VISIBLE_TAU_CUTS``, each of shape (n,)."""
    tp, tm = visible_taus(p4)
    pt_p, eta_p, phi_p = _pt_eta_phi(tp)
    pt_m, eta_m, phi_m = _pt_eta_phi(tm)
    dphi = np.angle(np.exp(1j * (phi_p - phi_m)))
    delta_r = np.hypot(eta_p - eta_m, dphi)
    ok_pt = (pt_p > cuts.tau_vis_pt_min) & (pt_m > cuts.tau_vis_pt_min)
    ok_eta = ok_pt & (np.abs(eta_p) < cuts.tau_vis_abs_eta_max) & (np.abs(eta_m) < cuts.tau_vis_abs_eta_max)
    ok_dr = ok_eta & (delta_r > cuts.delta_r_min)
    return {"tau_pt": ok_pt, "tau_eta": ok_eta, "delta_r": ok_dr}


def passes_visible_tau_cuts(p4_event: np.ndarray, cuts: SelectionCuts) -> str | None:
    """For one event (6, 4): the name of the first visible-tau cut it fails, or None."""
    flow = visible_tau_cutflow(p4_event[None], cuts)
    for name in VISIBLE_TAU_CUTS:
        if not flow[name][0]:
            return name
    return None
