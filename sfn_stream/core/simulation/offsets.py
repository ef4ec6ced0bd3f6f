"""The energy scale of a FEFF calculation, shared by the corpus, the training set and the demo sample."""

from __future__ import annotations

import numpy as np

from sfn_stream.core.spectra import find_first_inflection, k_edge_energy


def metal_energy_offset(energy, mu, element: str) -> float:
    """A calculation's energy offset: its own metal spectrum's first inflection minus the tabulated K edge.

    First inflection, because that is where a measured scan's reference foil is put (the tabulated
    edges are first inflection points), so computed and measured energies land on one scale.
    """
    return float(find_first_inflection(np.asarray(energy, float), np.asarray(mu, float)) - k_edge_energy(element))
