"""The visible-tau selection: vectorised cuts, the per-event form the generator uses, bad thresholds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import study_with

from hpcmix.physics.layout import PI0_MINUS, PI0_PLUS, PI_MINUS, PI_PLUS
from hpcmix.physics.selection import VISIBLE_TAU_CUTS, SelectionCuts, first_failed_visible_tau_cut, visible_tau_cutflow
from hpcmix.schema import ConfigError


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
    cuts = study_with(selection={"m_vis_min": 150.0, "m_vis_max": 500.0}).selection
    # two back-to-back massless taus of pT 60, 100, 300 GeV: m_vis = 2 pT
    events = np.concatenate([_back_to_back(pt) for pt in (60.0, 100.0, 300.0)])
    flow = visible_tau_cutflow(events, cuts)
    assert flow["delta_r"].tolist() == [True, True, True]
    assert flow["m_vis"].tolist() == [False, True, False]
    # no window (the defaults): every event that passes delta R passes
    assert visible_tau_cutflow(events, study_with().selection)["m_vis"].all()
    # an upper edge alone
    only_max = study_with(selection={"m_vis_max": 150.0}).selection
    assert visible_tau_cutflow(events, only_max)["m_vis"].tolist() == [True, False, False]


def test_per_event_cuts_agree_with_the_vectorised_ones():
    """The generator's scalar path and the numpy path are one formula: same verdicts on random events."""
    rng = np.random.default_rng(1)
    p4 = np.zeros((4000, 6, 4))
    p4[..., :3] = rng.normal(0, 60, size=(4000, 6, 3))
    p4[..., 3] = np.linalg.norm(p4[..., :3], axis=-1) + rng.uniform(0, 1, size=(4000, 6))
    cuts = dataclasses.replace(study_with().selection, m_vis_min=150.0, m_vis_max=300.0)
    flow = visible_tau_cutflow(p4, cuts)
    expected = np.select([~flow[c] for c in VISIBLE_TAU_CUTS], list(VISIBLE_TAU_CUTS), default="")
    got = [first_failed_visible_tau_cut(ev.tolist(), cuts) or "" for ev in p4]
    assert got == expected.tolist()
    # every cut rejects something in this sample, so each branch was compared
    assert {name for name in got if name} == set(VISIBLE_TAU_CUTS)


def test_study_cuts_are_the_package_defaults():
    from hpcmix.config import package_defaults

    cuts = study_with().selection
    assert isinstance(cuts, SelectionCuts)
    assert cuts.as_dict() == package_defaults()["selection"]
    assert cuts.m_vis_min == 0.0 and cuts.m_vis_max is None  # no window by default
    assert study_with(selection={"tau_vis_pt_min": 30.0}).selection.tau_vis_pt_min == 30.0


BAD_THRESHOLDS = [
    ({"m_vis_min": -1.0}, "0 <= m_vis_min < m_vis_max"),
    ({"m_vis_min": 500.0, "m_vis_max": 150.0}, "0 <= m_vis_min < m_vis_max"),
    ({"tau_vis_pt_min": -5.0}, "non-negative"),
    ({"max_taus_passing_pt": 1}, "at least 2"),
]


@pytest.mark.parametrize("bad, match", BAD_THRESHOLDS)
def test_bad_thresholds_are_rejected_with_what_to_fix(bad, match):
    values = {**study_with().selection.as_dict(), **bad}
    with pytest.raises(ValueError, match=match):
        SelectionCuts(**values)
    # and when resolving a study (a ConfigError names the section)
    with pytest.raises(ConfigError, match=match):
        study_with(selection=bad)


def test_unknown_cut_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown field 'selection\.mvis_min'") as err:
        study_with(selection={"mvis_min": 1.0})
    assert isinstance(err.value, ValueError)
