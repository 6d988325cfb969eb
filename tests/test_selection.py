"""The visible-tau selection: vectorised cuts, the per-event form the generator uses, bad thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from hpcmix.physics.layout import PI0_MINUS, PI0_PLUS, PI_MINUS, PI_PLUS
from hpcmix.physics.selection import VISIBLE_TAU_CUTS, SelectionCuts, first_failed_visible_tau_cut, visible_tau_cutflow


def _back_to_back(pt: float, pz: float = 0.0, n: int = 1) -> np.ndarray:
    """Events whose visible taus (pion pairs sharing the momentum) are back to back in x."""
    p4 = np.zeros((n, 6, 4))
    for sign, (pi, pi0) in ((1, (PI_PLUS, PI0_PLUS)), (-1, (PI_MINUS, PI0_MINUS))):
        for k, share in ((pi, 0.6), (pi0, 0.4)):
            p = np.array([sign * pt * share, 0.0, sign * pz * share])
            p4[:, k, :3] = p
            p4[:, k, 3] = np.linalg.norm(p)  # massless is enough for the cuts
    return p4


def test_mass_window_keeps_events_inside_only():
    cuts = SelectionCuts.from_config(m_vis_min=150.0, m_vis_max=500.0)
    # two back-to-back massless taus of pT 60, 100, 300 GeV: m_vis = 2 pT
    events = np.concatenate([_back_to_back(pt) for pt in (60.0, 100.0, 300.0)])
    flow = visible_tau_cutflow(events, cuts)
    assert flow["delta_r"].tolist() == [True, True, True]
    assert flow["m_vis"].tolist() == [False, True, False]
    # no window (the defaults): every event that passes delta R passes
    assert visible_tau_cutflow(events, SelectionCuts.from_config())["m_vis"].all()
    # an upper edge alone
    only_max = SelectionCuts.from_config(m_vis_max=150.0)
    assert visible_tau_cutflow(events, only_max)["m_vis"].tolist() == [True, False, False]


def test_per_event_cuts_agree_with_the_vectorised_ones():
    """The generator's scalar path and the numpy path are one formula: same verdicts on random events."""
    rng = np.random.default_rng(1)
    p4 = np.zeros((4000, 6, 4))
    p4[..., :3] = rng.normal(0, 60, size=(4000, 6, 3))
    p4[..., 3] = np.linalg.norm(p4[..., :3], axis=-1) + rng.uniform(0, 1, size=(4000, 6))
    cuts = SelectionCuts.from_config(m_vis_min=150.0, m_vis_max=300.0)
    flow = visible_tau_cutflow(p4, cuts)
    expected = np.select([~flow[c] for c in VISIBLE_TAU_CUTS], list(VISIBLE_TAU_CUTS), default="")
    got = [first_failed_visible_tau_cut(ev.tolist(), cuts) or "" for ev in p4]
    assert got == expected.tolist()
    # every cut rejects something in this sample, so each branch was compared
    assert {name for name in got if name} == set(VISIBLE_TAU_CUTS)


@pytest.mark.parametrize("bad, match", [
    ({"m_vis_min": -1.0}, "0 <= m_vis_min < m_vis_max"),
    ({"m_vis_min": 500.0, "m_vis_max": 150.0}, "0 <= m_vis_min < m_vis_max"),
    ({"tau_vis_pt_min": -5.0}, "non-negative"),
    ({"max_taus_passing_pt": 1}, "at least 2"),
    ({"mvis_min": 1.0}, r"unknown selection cut\(s\) \['mvis_min'\]"),
])
def test_bad_thresholds_are_rejected_with_what_to_fix(bad, match):
    with pytest.raises(ValueError, match=match):
        SelectionCuts.from_config(**bad)
