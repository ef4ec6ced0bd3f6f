"""The FEFF input writer reproduces the OmniXAS / Materials Project Cu2O input (cluster, potentials, cards)."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Structure

from sfn_stream.core.simulation import OMNIXAS, feff_input
from sfn_stream.offline.shared import have_shared, shared_path


def _atoms_block(text: str) -> np.ndarray:
    lines = text.split("ATOMS", 1)[1].splitlines()
    rows = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 5 and not line.lstrip().startswith("*"):
            try:
                rows.append([float(parts[0]), float(parts[1]), float(parts[2]), int(parts[3])])
            except ValueError:
                continue
    return np.array(rows)


@pytest.mark.skipif(not have_shared(), reason="needs ../shared")
def test_cu2o_input_matches_the_reference_feff_inp():
    folder = shared_path("data", "omnixas_cu", "raw_example_mp-361_Cu2O")
    reference = (folder / "feff.inp").read_text()
    ours = feff_input(Structure.from_file(folder / "POSCAR"), 0, OMNIXAS)
    for card in ("SCF 7.0 0 100 0.2 3", "FMS 9.0 0", "COREHOLE RPA", "XANES 4 0.04 0.1", "EDGE K"):
        assert card in reference and card in ours
    ref_atoms, our_atoms = _atoms_block(reference), _atoms_block(ours)
    within = lambda a, r: a[np.linalg.norm(a[:, :3], axis=1) <= r]  # noqa: E731
    # the same shells out to the FMS radius: same distances, same potential types
    for radius in (3.0, 6.0, 8.7):
        ref, our = within(ref_atoms, radius), within(our_atoms, radius)
        assert len(ref) == len(our)
        assert np.allclose(np.sort(np.linalg.norm(ref[:, :3], axis=1)), np.sort(np.linalg.norm(our[:, :3], axis=1)),
                           atol=1e-3)
        assert sorted(ref[:, 3]) == sorted(our[:, 3])


def test_potentials_carry_the_cell_stoichiometry():
    from pymatgen.core import Lattice

    structure = Structure.from_spacegroup("R-3m", Lattice.hexagonal(3.0351, 17.166), ["Cu", "Fe", "O"],
                                          [[0, 0, 0], [0, 0, 0.5], [0, 0, 0.1066]]).get_primitive_structure()
    text = feff_input(structure, 0, OMNIXAS)
    potentials = text.split("POTENTIALS", 1)[1].split("ATOMS", 1)[0].split()
    rows = [potentials[i:i + 7] for i in range(0, len(potentials), 7)]
    stoichiometry = {row[2]: float(row[5]) for row in rows[1:]}
    assert rows[0][:3] == ["0", "29", "Cu"]
    assert stoichiometry == {"Cu": 1.0, "Fe": 1.0, "O": 2.0}
