"""The FEFF10 runner end to end on fcc Cu with fast settings (no SCF, FMS 3 A: ~15 s on one idle core)."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from sfn_stream.simulation import FeffSettings, FeffTimeout, feff_input, read_xmu, run_feff
from sfn_stream.spectra import find_e0, k_edge_energy

FAST = FeffSettings(scf_radius=None, fms_radius=3.0, cluster_radius=5.0)


def _fcc_cu() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.6149), ["Cu"], [[0, 0, 0]])


@pytest.mark.slow
def test_fcc_cu_k_edge_end_to_end(tmp_path):
    spectrum = run_feff(feff_input(_fcc_cu(), 0, FAST), tmp_path / "cu", FAST, timeout=600)
    energy, mu = spectrum.energy, spectrum.mu
    assert (tmp_path / "cu" / "xmu.dat").is_file()
    assert np.all(np.diff(energy) > 0) and len(energy) > 100
    # an absorption edge: FEFF's grid starts a few eV below the Fermi level, where mu is still low;
    # well above the edge mu is about 1 (FEFF normalises to the atomic edge step)
    e0 = find_e0(energy, mu)
    assert abs(e0 - k_edge_energy("Cu")) < 25.0, e0  # FEFF's absolute scale is off by several eV only
    above = mu[(energy > e0 + 20) & (energy < e0 + 60)]
    assert mu[0] < 0.2 and 0.7 < above.mean() < 1.4
    # the reader gives back what the runner returned
    e_read, mu_read, _ = read_xmu(tmp_path / "cu" / "xmu.dat")
    assert np.allclose(e_read, energy) and np.allclose(mu_read, mu)


def test_a_run_past_its_limit_is_stopped(tmp_path):
    with pytest.raises(FeffTimeout, match="limit"):
        run_feff(feff_input(_fcc_cu(), 0, FAST), tmp_path / "cu", FAST, timeout=0.5)


def test_settings_keys_follow_the_settings():
    assert FAST.key() == FeffSettings(scf_radius=None, fms_radius=3.0, cluster_radius=5.0).key()
    assert FAST.key() != FeffSettings(scf_radius=None, fms_radius=4.0, cluster_radius=5.0).key()
    assert "no SCF" in FAST.describe() and "FMS 3 A" in FAST.describe()
    text = feff_input(_fcc_cu(), 0, FAST)
    assert "SCF" not in text and "FMS 3.0 0" in text
