"""The FEFF10 runner end to end on fcc Cu with fast settings (no SCF, FMS 3 A: ~15 s on one idle core),
as a campaign item runs it (with a fallback), a timeout, the xmu.dat reader and settings keys; an
isolated absorber; FEFF's own diagnosis on a failure."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from sfn_stream.offline.corpus._items import compute_feff_site
from sfn_stream.core.simulation import FeffRunError, FeffSettings, FeffTimeout, feff_input, read_xmu, run_feff
from sfn_stream.core.spectra import find_e0, k_edge_energy

FAST = FeffSettings(scf_radius=None, fms_radius=3.0, cluster_radius=5.0)


def _fcc_cu() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.6149), ["Cu"], [[0, 0, 0]])


@pytest.mark.slow
def test_fcc_cu_k_edge_end_to_end_through_the_fallback(tmp_path):
    """A campaign site whose first settings FEFF rejects is computed with the fallback settings."""
    broken = FeffSettings(scf_radius=None, fms_radius=3.0, cluster_radius=5.0, core_hole="BOGUS")
    value = compute_feff_site(_fcc_cu().as_dict(), 0, broken.to_dict(), str(tmp_path / "cu"), 600, [FAST.to_dict()])
    assert value["settings_key"] == FAST.key()
    assert len(value["failed_attempts"]) == 1 and "COREHOLE" in value["failed_attempts"][0]
    assert not (tmp_path / "cu").exists()  # FEFF folders and the site's own folder removed
    energy, mu = np.asarray(value["energy"]), np.asarray(value["mu"])
    assert np.all(np.diff(energy) > 0) and len(energy) > 100
    # an absorption edge: FEFF's grid starts a few eV below the Fermi level, where mu is still low;
    # well above the edge mu is about 1 (FEFF normalises to the atomic edge step)
    e0 = value["e0"]
    assert abs(e0 - find_e0(energy, mu)) < 0.01  # E0 of the unrounded spectrum
    assert abs(e0 - k_edge_energy("Cu")) < 25.0, e0  # FEFF's absolute scale is off by several eV only
    above = mu[(energy > e0 + 20) & (energy < e0 + 60)]
    assert mu[0] < 0.2 and 0.7 < above.mean() < 1.4


def test_read_xmu_reads_the_columns(tmp_path):
    path = tmp_path / "xmu.dat"
    path.write_text("# omega e k mu mu0 chi\n8980.0 -1.0 0.0 0.10 0.2 0\n8990.0 9.0 1.5 0.90 0.8 0\n")
    energy, mu, mu0 = read_xmu(path)
    assert energy.tolist() == [8980.0, 8990.0] and mu.tolist() == [0.1, 0.9] and mu0.tolist() == [0.2, 0.8]


def test_a_run_past_its_limit_is_stopped(tmp_path):
    with pytest.raises(FeffTimeout, match="limit"):
        run_feff(feff_input(_fcc_cu(), 0, FAST), tmp_path / "cu", FAST, timeout=0.5)


def test_settings_keys_follow_the_settings():
    assert FAST.key() == FeffSettings(scf_radius=None, fms_radius=3.0, cluster_radius=5.0).key()
    assert FAST.key() != FeffSettings(scf_radius=None, fms_radius=4.0, cluster_radius=5.0).key()
    assert "no SCF" in FAST.describe() and "FMS 3 A" in FAST.describe()
    text = feff_input(_fcc_cu(), 0, FAST)
    assert "SCF" not in text and "FMS 3.0 0" in text


def _isolated_ni() -> Structure:
    """A toy oxide whose Ni has no other Ni within 5.5 A (the cluster of FAST reaches 5 A)."""
    return Structure(Lattice.cubic(5.5), ["Ni", "O", "O", "O"], [[0, 0, 0], [0.36, 0, 0], [0, 0.36, 0], [0, 0, 0.36]])


def test_an_element_outside_the_cluster_gets_no_potential():
    text = feff_input(_isolated_ni(), 0, FAST)
    potentials = text.split("POTENTIALS", 1)[1].split("ATOMS", 1)[0].split()
    rows = [potentials[i:i + 7] for i in range(0, len(potentials), 7)]
    assert [(row[0], row[2]) for row in rows] == [("0", "Ni"), ("1", "O")]
    atoms = [line.split() for line in text.split("ATOMS", 1)[1].splitlines()[1:-1]]
    assert {a[3] for a in atoms} == {"0", "1"} and len(atoms) > 1


@pytest.mark.slow
def test_an_isolated_absorber_runs(tmp_path):
    """FEFF stopped in RDINP ("No atoms or overlap cards for unique pot 1") while the absorber's
    element had a potential without atoms in the cluster."""
    spectrum = run_feff(feff_input(_isolated_ni(), 0, FAST), tmp_path / "ni", FAST, timeout=600)
    assert len(spectrum.energy) > 100 and abs(find_e0(spectrum.energy, spectrum.mu) - k_edge_energy("Ni")) < 25


def test_a_failure_carries_feffs_own_diagnosis(tmp_path):
    text = feff_input(_isolated_ni(), 0, FAST)
    text = text.replace("\n\nATOMS", "\n    2   28  Ni    -1  -1  1  0\n\nATOMS")  # a potential without atoms
    with pytest.raises(FeffRunError, match="stage 'rdinp' failed.*No atoms or overlap cards for unique pot 2"):
        run_feff(text, tmp_path / "ni", FAST, timeout=60)
