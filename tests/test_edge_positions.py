"""Edge-position definitions (sfn_stream.offline.evaluation.edge_positions) on edges with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from sfn_stream.core import paths
from sfn_stream.core.spectra import XANES_WINDOW, k_edge_energy
from sfn_stream.offline.evaluation import BENCHMARKS
from sfn_stream.offline.evaluation.edge_positions import (
    DEFINITIONS,
    edge_definitions,
    half_height,
    measured_rows,
    spectrum_edges,
    summarise,
    valence_slopes,
)
from sfn_stream.offline.shared import have_shared, shared_dir

FE = k_edge_energy("Fe")
XANES_SPAN = XANES_WINDOW.stop - XANES_WINDOW.start


def edge_with_pre_peak(energy, centre, pre_height, pre_offset=-10.0):
    """Normalised arctan edge (half height at ``centre``) plus a Lorentzian pre-edge peak."""
    edge = 0.5 + np.arctan((energy - centre) / 1.5) / np.pi
    pre = pre_height * 0.8**2 / ((energy - centre - pre_offset) ** 2 + 0.8**2)
    return edge + pre


def test_half_height_interpolates_the_crossing():
    energy = np.linspace(0.0, 10.0, 11)
    assert half_height(energy, energy / 10.0, start=0.0) == pytest.approx(5.0)
    assert np.isnan(half_height(energy, energy / 100.0, start=0.0))


def test_definitions_separate_pre_edge_from_main_rise():
    """A pre-edge peak whose derivative reaches 30-50 % of the main rise's catches the 30 % first
    inflection (how the corpus's Fe2O3 - FeO came out negative) but not the 50 % one or half height."""
    energy = np.arange(FE - 60.0, FE + 150.0, 0.1)
    centre = FE + 7.0
    mu = edge_with_pre_peak(energy, centre, pre_height=0.12)  # derivative peak ~47 % of the rise
    edges = edge_definitions(energy, mu, FE)
    assert edges["half_height"] == pytest.approx(7.0, abs=0.1)
    assert edges["max_derivative"] == pytest.approx(7.0, abs=0.3)
    assert edges["first_peak_50"] == pytest.approx(7.0, abs=0.3)
    assert edges["first_inflection"] < edges["half_height"] - 9.0  # landed on the pre-edge peak


def test_every_definition_moves_with_the_energy_scale():
    energy = np.arange(FE - 60.0, FE + 150.0, 0.2)
    mu = edge_with_pre_peak(energy, FE + 3.0, pre_height=0.02)
    before = spectrum_edges(energy, mu, "Fe")
    after = spectrum_edges(energy, mu, "Fe", energy_offset=-4.0)  # the calibration adds 4 eV
    assert before is not None and after is not None
    for name in DEFINITIONS:
        assert after[name] - before[name] == pytest.approx(4.0, abs=0.25), name


def test_summary_quartiles_and_slope_per_valence():
    rows = [{"kind": "feff10", "metal": "Mn", "valence": v, **{name: 2.0 * v + k for name in DEFINITIONS}}
            for v in (2, 3, 4) for k in (-1.0, 0.0, 1.0)]
    summary = summarise(rows)
    assert [(e["valence"], e["n"]) for e in summary] == [(2, 3), (3, 3), (4, 3)]
    assert summary[0]["half_height"] == pytest.approx([3.5, 4.0, 4.5])
    assert valence_slopes(summary)["Mn"]["feff10"] == pytest.approx(2.0)


def test_benchmark_is_registered():
    assert BENCHMARKS["edge-positions"][0] == "edge_positions"


@pytest.mark.skipif(not have_shared(), reason="../shared is absent")
def test_measured_foils_sit_below_their_compounds():
    rows = measured_rows(shared_dir() / "data" / "xanes_experimental_dev")
    assert rows, "no labelled measured spectrum was usable"
    for metal in {r["metal"] for r in rows if r["valence"] == 0}:
        foil = [r["first_peak_50"] for r in rows if r["metal"] == metal and r["valence"] == 0]
        compounds = [r["first_peak_50"] for r in rows if r["metal"] == metal and r["valence"] > 0]
        if compounds:
            assert np.median(foil) < np.median(compounds), metal


@pytest.mark.skipif(not (paths.CORPUS_DIR / "absorbers.parquet").is_file(), reason="data/corpus is absent")
def test_training_views_shifted_up_are_kept_when_the_coverage_limit_is_relaxed():
    """Views shifted up (where measured compound edges lie) leave the window's bottom without FEFF data;
    the 25 % coverage rule dropped them, ``view_max_window_missing`` keeps them."""
    import pandas as pd

    from sfn_stream.offline.training import edge_window
    from sfn_stream.offline.training._corpus_xanes import EdgeSpectrum

    rows = pd.read_parquet(paths.CORPUS_DIR / "absorbers.parquet", columns=["element", "spectrum_source", "energy",
                                                                             "mu", "energy_offset"])
    row = rows[(rows.element == "Fe") & (rows.spectrum_source == "feff10")].iloc[0]
    edge = EdgeSpectrum("Fe", "feff10", np.asarray(row.energy, float), np.asarray(row.mu, float),
                        float(row.energy_offset))
    clean = edge_window(edge)
    assert clean is not None
    shift = (0.35 - (1.0 - clean.window_coverage)) * XANES_SPAN  # leaves 35 % of the window uncovered
    assert shift > 0
    assert edge_window(edge, shift=shift) is None
    kept = edge_window(edge, shift=shift, max_window_missing=0.5)
    assert kept is not None and kept.window_coverage == pytest.approx(0.65, abs=0.02)
    assert kept.e0_shift - clean.e0_shift == pytest.approx(shift, abs=0.6)
