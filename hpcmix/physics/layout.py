"""The truth-array layout shared by generation, smearing, features and the store.

Every stage exchanges plain numpy arrays with these axes, so that the physics
functions stay pure and vectorised over events:

- ``p4``: float64, shape ``(n_events, 6, 4)``; particles in ``PARTICLES`` order,
  components in ``P4`` order (GeV, lab frame).
- ``vertex``: float64, shape ``(n_events, 2, 3)``; the tau+ and tau- decay
  vertices (``TAUS`` order), x, y, z in mm, relative to the primary vertex
  (Pythia's origin).

"plus" labels the tau+ side: tau+ -> pi+ pi0 anti-nu_tau; "minus" the tau- side.
"""

from __future__ import annotations

PARTICLES = ("pi_plus", "pi0_plus", "nu_plus", "pi_minus", "pi0_minus", "nu_minus")
P4 = ("px", "py", "pz", "e")
TAUS = ("plus", "minus")
XYZ = ("x", "y", "z")

# indices into the particle axis
PI_PLUS, PI0_PLUS, NU_PLUS, PI_MINUS, PI0_MINUS, NU_MINUS = range(6)
# indices into the p4 axis
PX, PY, PZ, E = range(4)

# PDG masses (GeV) used when smearing re-derives energies from 3-momenta
M_PI_CHARGED = 0.13957039
M_PI_NEUTRAL = 0.1349768
