"""Spectrum file readers on small synthetic fixtures (tests/data, made by make_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sfn_stream.core.spectra import (
    SpectrumFileError,
    absorber_from_filename,
    absorber_from_scan,
    preprocess_xanes_file,
    read_spectrum,
    read_xy,
    xanes_channels,
)
from sfn_stream.offline.shared import have_shared, shared_dir

DATA = Path(__file__).parent / "data"


def test_xdi_header_columns_and_metadata():
    spectrum = read_spectrum(DATA / "cu_synthetic.xdi")
    assert spectrum.format == "xdi"
    assert list(spectrum.columns) == ["energy", "i0", "itrans"]
    assert spectrum.meta("element.symbol") == "Cu"
    assert spectrum.meta("Element.edge") == "K"
    assert spectrum.meta("Mono.d_spacing") == "3.13555"
    assert spectrum.metadata["XDI.version"].startswith("XDI/1.0")
    assert any("arctan" in c for c in spectrum.comments)
    assert spectrum.columns["energy"][0] == 8829.0
    assert len(spectrum.columns["energy"]) == len(spectrum.columns["itrans"])
    assert np.all(np.diff(spectrum.columns["energy"]) > 0)


def test_xanes_channels_maps_raw_columns_and_absorber():
    channels = xanes_channels(read_spectrum(DATA / "cu_synthetic.xdi"))
    assert set(channels) == {"energy", "i0", "it", "absorber", "edge"}
    assert channels["absorber"] == "Cu" and channels["edge"] == "K"
    result = preprocess_xanes_file(DATA / "cu_synthetic.xdi")
    assert result.usable and result.mode == "transmission"
    assert result.e0 == pytest.approx(8980.5, abs=1.0)


def test_csv_with_named_columns():
    spectrum = read_spectrum(DATA / "fe_synthetic.csv")
    assert spectrum.format == "csv"
    assert list(spectrum.columns) == ["energy_eV", "mu"]
    assert spectrum.metadata.get("source") == "synthetic"
    channels = xanes_channels(spectrum)
    assert set(channels) == {"energy", "mu"}
    result = preprocess_xanes_file(DATA / "fe_synthetic.csv", absorber="Fe")
    assert result.usable and result.mode == "mu"
    assert result.e0 == pytest.approx(7114.5, abs=1.0)


def test_xy_two_columns_without_header():
    spectrum = read_spectrum(DATA / "pattern.xy")
    assert spectrum.format == "xy" and list(spectrum.columns) == ["x", "y"]
    x, y = read_xy(DATA / "pattern.xy")
    assert len(x) == len(y) == 50
    assert x[0] == 10.0 and y.max() == pytest.approx(1000.0, rel=1e-3)


def test_malformed_files_raise_with_file_and_problem(tmp_path):
    with pytest.raises(SpectrumFileError, match=r"malformed\.xdi: line 9 is not numeric"):
        read_spectrum(DATA / "malformed.xdi")
    with pytest.raises(SpectrumFileError, match="line 3 has 3 values"):
        read_spectrum(DATA / "ragged.txt")
    with pytest.raises(SpectrumFileError, match="no energy column; columns are: angle, intensity"):
        xanes_channels(read_spectrum(DATA / "no_energy.csv"))
    with pytest.raises(SpectrumFileError, match="no such file"):
        read_spectrum(tmp_path / "missing.xdi")
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    with pytest.raises(SpectrumFileError, match="empty"):
        read_spectrum(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("# energy,mu\n")
    with pytest.raises(SpectrumFileError, match="no numeric data"):
        read_spectrum(header_only)
    no_mu = tmp_path / "no_mu.csv"
    no_mu.write_text("# energy,i0\n1,2\n3,4\n")
    with pytest.raises(SpectrumFileError, match="no mu column"):
        xanes_channels(read_spectrum(no_mu))
    anonymous = tmp_path / "synthetic.csv"  # the Ga K edge: no 3d metal's, and no name
    energy = np.linspace(10250, 10550, 300)
    anonymous.write_text("energy,mu\n" + "\n".join(f"{e},{np.arctan((e - 10367) / 2)}" for e in energy))
    with pytest.raises(SpectrumFileError, match="no absorber"):
        preprocess_xanes_file(anonymous)
    renamed = tmp_path / "sample.csv"
    renamed.write_text((DATA / "fe_synthetic.csv").read_text())
    assert preprocess_xanes_file(renamed).absorber == "Fe"  # the energies say Fe


def test_fortran_exponents_and_whitespace_columns(tmp_path):
    path = tmp_path / "scan.dat"
    path.write_text("# energy  xmu\n  .8786204E+04 .1013661D+01\n .8796258E+04 .9949864E+00\n")
    spectrum = read_spectrum(path)
    assert spectrum.format == "columns"
    np.testing.assert_allclose(spectrum.columns["xmu"], [1.013661, 0.9949864])


@pytest.mark.parametrize("header, delimiter", [
    ("Energy (eV)  mu(E)", " "),     # units in the names
    ("E;norm", ";"),                 # semicolons, an Athena 'norm' export
    ("energy\tflat", "\t"),
    (None, " "),                     # no header: energy, mu
])
def test_column_files_as_spreadsheets_and_athena_write_them(tmp_path, header, delimiter):
    reference = xanes_channels(read_spectrum(DATA / "fe_synthetic.csv"))
    table = np.c_[reference["energy"], reference["mu"]]
    path = tmp_path / "scan.dat"
    np.savetxt(path, table, delimiter=delimiter, header=header or "", comments="")
    channels = xanes_channels(read_spectrum(path))
    np.testing.assert_allclose(channels["energy"], reference["energy"])
    np.testing.assert_allclose(channels["mu"], reference["mu"])


def test_xdi_angle_column_becomes_energy_through_the_d_spacing(tmp_path):
    reference = read_spectrum(DATA / "cu_synthetic.xdi")
    d_spacing = float(reference.meta("Mono.d_spacing"))
    angle = np.degrees(np.arcsin(12398.419843 / (2 * d_spacing * reference.columns["energy"])))
    lines = ["# XDI/1.0", f"# Mono.d_spacing: {d_spacing}", "# Element.symbol: Cu", "# Column.1: angle degrees",
             "# Column.2: i0", "# Column.3: itrans", "#----"]
    rows = [f"{a:.8f} {i0} {it}" for a, i0, it in zip(angle, reference.columns["i0"], reference.columns["itrans"])]
    path = tmp_path / "angle.xdi"
    path.write_text("\n".join(lines + rows) + "\n")
    np.testing.assert_allclose(xanes_channels(read_spectrum(path))["energy"], reference.columns["energy"], atol=1e-3)
    path.write_text("\n".join([line for line in lines if "d_spacing" not in line] + rows) + "\n")
    with pytest.raises(SpectrumFileError, match="no energy column; columns are: angle, i0, itrans"):
        xanes_channels(read_spectrum(path))


def test_a_footer_after_the_table_is_not_data(tmp_path):
    path = tmp_path / "footer.csv"
    path.write_text((DATA / "fe_synthetic.csv").read_text() + "END OF DATA\n")
    assert len(read_spectrum(path).columns["mu"]) == len(read_spectrum(DATA / "fe_synthetic.csv").columns["mu"])


def test_header_symbols_in_any_case_name_the_absorber(tmp_path):
    path = tmp_path / "lower.xdi"
    path.write_text((DATA / "cu_synthetic.xdi").read_text().replace("Element.symbol: Cu", "Element.symbol: cu"))
    assert xanes_channels(read_spectrum(path))["absorber"] == "Cu"


def test_absorber_from_scan_reads_the_edge_in_the_energies():
    channels = xanes_channels(read_spectrum(DATA / "fe_synthetic.csv"))
    energy, mu = channels["energy"], channels["mu"]
    assert absorber_from_scan(energy, mu) == "Fe"
    assert absorber_from_scan(energy / 1000.0, mu) == "Fe"  # keV
    assert absorber_from_scan(energy, mu, candidates=["Fe", "Cr", "O"]) == "Fe"
    assert absorber_from_scan(energy, mu, candidates=["Cu", "O"]) is None  # the sample has no Fe
    xdi = xanes_channels(read_spectrum(DATA / "cu_synthetic.xdi"))
    assert absorber_from_scan(xdi["energy"], i0=xdi["i0"], it=xdi["it"]) == "Cu"
    # a scan wide enough to hold the Fe and Co edges: the steepest rise decides
    wide = np.arange(7000.0, 7800.0, 1.0)
    assert absorber_from_scan(wide, np.arctan((wide - 7715.0) / 2.0)) == "Co"
    assert absorber_from_scan(wide, np.arctan((wide - 7114.0) / 2.0)) == "Fe"
    assert absorber_from_scan(wide, np.arctan((wide - 7400.0) / 2.0)) is None  # a rise at no edge


def test_absorber_from_filename():
    assert absorber_from_filename("Fe-K-ALS-10.3.2__Chromite.csv") == "Fe"
    assert absorber_from_filename("athena2__mn2s_003.csv") == "Mn"
    assert absorber_from_filename("eutio3__Ti300.csv") == "Ti"
    assert absorber_from_filename("CuHERFD_standards__CuHERFD_Cu2S_001.csv") == "Cu"
    assert absorber_from_filename("Hansel2001_goethite_xanes_003.xdi") is None
    assert absorber_from_filename("copper_scan.csv") is None


@pytest.mark.skipif(not have_shared(), reason="../shared not available")
@pytest.mark.shared
def test_every_shared_measured_file_reads():
    folder = shared_dir() / "data" / "xanes_experimental_dev"
    paths = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(("LICENSE", "labels"))]
    assert len(paths) >= 100
    for path in paths:
        channels = xanes_channels(read_spectrum(path))
        assert "energy" in channels and ("mu" in channels or "i0" in channels), path
        if path.suffix.startswith(".xd"):
            assert channels.get("absorber"), path
