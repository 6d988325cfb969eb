"""One generation task: run Pythia for a chunk and return the selected events' truth arrays.

The hot loop follows the hard-process resonance to its two taus (or each tau's
decay chain, as for t -> W -> tau; a dozen Python calls per event) instead of
scanning the event record; only events that pass the visible-tau cuts get the
full-record scan for extra taus and leptons.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import HpcmixError
from ..physics.layout import PARTICLES
from ..physics.selection import CUTFLOW_STEPS, SelectionCuts, first_failed_visible_tau_cut

_TAU = 15
_NU_TAU = 16
_PI_CHARGED = 211
_PI_NEUTRAL = 111
_ELECTRON, _MUON = 11, 13
_SCANNED = frozenset((_ELECTRON, _MUON, _TAU))
_NEUTRINOS = frozenset((12, 14, 16))
# How far into the event record to look for the hard-process resonance: the
# record starts with a copy of the hard process (system, beams, incoming, outgoing).
_HARD_PROCESS_END = 12


class GenerationError(HpcmixError, RuntimeError):
    """Generation cannot produce the requested events (with the cut flow so far)."""


@dataclass(frozen=True)
class ChunkSpec:
    """Everything one task needs; picklable so Dask can ship it."""

    sample: str
    chunk: int
    n_events: int
    seed: int
    settings: tuple[str, ...]
    resonance: int | None
    cuts: SelectionCuts
    max_tries_factor: int = 200
    tau_chains: tuple[tuple[int, ...], ...] | None = None   # hpcmix.generate.processes.Process

    def __post_init__(self):
        if self.n_events <= 0:
            raise ValueError(f"n_events must be positive, got {self.n_events}")
        if (self.resonance is None) == (self.tau_chains is None):
            raise ValueError("give exactly one of resonance and tau_chains")
        if not 1 <= self.seed <= 900_000_000:
            raise ValueError(f"Pythia seeds lie in 1..900000000 (0 means 'from the clock'), got {self.seed}")


@dataclass
class ChunkTruth:
    """Selected events of one chunk: truth four-momenta, tau decay vertices, and bookkeeping."""

    p4: np.ndarray           # (n, 6, 4) float64, layout.PARTICLES x layout.P4
    vertex: np.ndarray       # (n, 2, 3) float64, mm
    cutflow: dict[str, int]
    sigma_gen_mb: float
    sigma_err_mb: float
    seconds: float
    pythia_version: str = ""
    extra: dict = field(default_factory=dict)


def make_pythia(settings: tuple[str, ...], seed: int):
    """A configured, initialised Pythia; raises ValueError naming a setting Pythia rejects."""
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)
    for setting in settings + ("Random:setSeed = on", f"Random:seed = {seed}"):
        if not pythia.readString(setting):
            raise ValueError(f"Pythia rejected the setting {setting!r} (unknown name or bad value)")
    if not pythia.init():
        raise GenerationError("Pythia init() failed; check the process settings")
    return pythia


def check_settings(settings: tuple[str, ...]) -> None:
    """Validate settings with ``readString`` without initialising (cheap, for up-front checks)."""
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)
    for setting in settings:
        if not pythia.readString(setting):
            raise ValueError(f"Pythia rejected the setting {setting!r} (unknown name or bad value)")


def _find_resonance(event, pdg: int) -> int:
    for i in range(3, min(event.size(), _HARD_PROCESS_END)):
        if event[i].id() == pdg:
            return event[i].iBotCopyId()
    return -1


def _daughter(event, i: int, pdg: int) -> int:
    """The daughter of entry ``i`` with id ``pdg`` (last copy), or -1."""
    for d in event[i].daughterList():
        if event[d].id() == pdg:
            return event[d].iBotCopyId()
    return -1


def _chain_tau(event, chain: tuple[int, ...]) -> int:
    """The tau at the end of one decay chain (e.g. t -> W+ -> tau+), or -1."""
    i = _find_resonance(event, chain[0])
    for pdg in chain[1:]:
        if i < 0:
            return -1
        i = _daughter(event, i, pdg)
    if i < 0:
        return -1
    for d in event[i].daughterList():
        if event[d].idAbs() == _TAU:
            return d
    return -1


def find_taus(event, spec: ChunkSpec) -> tuple[int, int] | None:
    """Entries of the two hard-process taus (first copies), as the process data says, or None."""
    if spec.tau_chains is None:
        i_res = _find_resonance(event, spec.resonance)
        if i_res < 0:
            return None
        res = event[i_res]
        d1, d2 = res.daughter1(), res.daughter2()
        if d2 != d1 + 1 or event[d1].idAbs() != _TAU or event[d2].idAbs() != _TAU:
            return None
        return d1, d2
    d1, d2 = (_chain_tau(event, c) for c in spec.tau_chains)
    return None if d1 < 0 or d2 < 0 else (d1, d2)


def _tau_products(event, i_tau: int):
    """(charged pion, neutral pion, neutrino) of the last copy of a tau, or None for another decay."""
    tau = event[event[i_tau].iBotCopyId()]
    pi = pi0 = nu = None
    for d in tau.daughterList():
        q = event[d]
        a = q.idAbs()
        if a == _PI_CHARGED and pi is None:
            pi = q
        elif a == _PI_NEUTRAL and pi0 is None:
            pi0 = q
        elif a == _NU_TAU and nu is None:
            nu = q
        else:
            return None
    if pi is None or pi0 is None or nu is None:
        return None
    return tau.id(), pi, pi0, nu


def _scan_event_record(event, keep: set[int], cuts: SelectionCuts) -> str | None:
    """The first full-record cut an event fails ('n_taus', then 'lepton_veto'), or None."""
    # event.particles() hands over the record in one call (~35 % cheaper than event[j] per
    # particle); only e, mu and tau entries are looked at further.
    parts = event.particles()
    ids = [q.idAbs() for q in parts]
    n_taus, lepton = 2, False
    for j in [j for j, a in enumerate(ids) if a in _SCANNED]:
        q = parts[j]
        if ids[j] != _TAU:
            lepton = lepton or (q.isFinal() and q.pT() > cuts.lepton_pt_veto)
        elif j not in keep:
            # a third tau counts if it is a last copy whose visible decay products pass the pT cut
            daughters = q.daughterList()
            if daughters and all(ids[d] != _TAU for d in daughters):
                px = sum(parts[d].px() for d in daughters if ids[d] not in _NEUTRINOS)
                py = sum(parts[d].py() for d in daughters if ids[d] not in _NEUTRINOS)
                n_taus += (px * px + py * py) ** 0.5 > cuts.tau_vis_pt_min
    if n_taus > cuts.max_taus_passing_pt:
        return "n_taus"
    return "lepton_veto" if lepton else None


def generate_chunk(spec: ChunkSpec) -> ChunkTruth:
    """Generate events until ``spec.n_events`` pass the selection; return their truth arrays."""
    t0 = time.perf_counter()
    pythia = make_pythia(spec.settings, spec.seed)
    event = pythia.event
    n = spec.n_events
    p4 = np.empty((n, len(PARTICLES), 4))
    vertex = np.empty((n, 2, 3))
    flow = dict.fromkeys(CUTFLOW_STEPS, 0)
    failed_next = 0
    max_tries = spec.max_tries_factor * n
    passed = 0
    while passed < n:
        if flow["tried"] >= max_tries:
            raise GenerationError(
                f"sample {spec.sample!r} chunk {spec.chunk}: only {passed} of {n} events passed after "
                f"{flow['tried']} tries (max_tries_factor={spec.max_tries_factor}); cut flow {flow}. "
                "Check that the process decays to tau pairs with taus forced to pi pi0 nu."
            )
        if not pythia.next():
            failed_next += 1
            if failed_next > max(100, n):
                raise GenerationError(f"Pythia next() failed {failed_next} times; cut flow {flow}")
            continue
        flow["tried"] += 1
        taus = find_taus(event, spec)
        if taus is None:
            continue
        d1, d2 = taus
        prod1, prod2 = _tau_products(event, d1), _tau_products(event, d2)
        if prod1 is None or prod2 is None or prod1[0] == prod2[0]:
            continue
        # tau+ is PDG -15; order the pair as (tau+, tau-)
        plus, minus = (prod1, prod2) if prod1[0] == -_TAU else (prod2, prod1)
        row = [(q.px(), q.py(), q.pz(), q.e()) for q in plus[1:] + minus[1:]]
        flow["tau_pair"] += 1
        failed = first_failed_visible_tau_cut(row, spec.cuts)
        if failed is None:
            keep = {event[d1].iBotCopyId(), event[d2].iBotCopyId(), d1, d2}
            failed = _scan_event_record(event, keep, spec.cuts)
        if failed is not None:
            for step in CUTFLOW_STEPS[CUTFLOW_STEPS.index("tau_pair") + 1:CUTFLOW_STEPS.index(failed)]:
                flow[step] += 1
            continue
        for step in CUTFLOW_STEPS[CUTFLOW_STEPS.index("tau_pair") + 1:]:
            flow[step] += 1
        p4[passed] = row
        # the tau decay vertex is where its charged pion was produced
        for k, q in enumerate((plus[1], minus[1])):
            v = q.vProd()
            vertex[passed, k] = (v.px(), v.py(), v.pz())
        passed += 1
    info = pythia.infoPython()
    import pythia8mc

    return ChunkTruth(
        p4=p4, vertex=vertex, cutflow=flow,
        sigma_gen_mb=float(info.sigmaGen()), sigma_err_mb=float(info.sigmaErr()),
        seconds=time.perf_counter() - t0,
        pythia_version=str(getattr(pythia8mc, "__version__", "")),
        extra={"failed_next": failed_next},
    )
