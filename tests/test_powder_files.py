"""Powder pattern files as integrations and diffractometers write them: pyFAI, Fit2D .chi, plain .xy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sfn_stream.cli import main
from sfn_stream.core.spectra import SpectrumFileError, read_powder_file, two_theta_to_q

WAVELENGTH = 0.7293  # A, a synchrotron energy (17 keV)


def _pattern():
    tth = np.linspace(3.0, 40.0, 1500)
    peaks = [(8.0, 100.0), (12.4, 40.0), (17.1, 60.0), (25.3, 20.0)]
    intensity = 5.0 + sum(h * np.exp(-0.5 * ((tth - c) / 0.03) ** 2) for c, h in peaks)
    return tth, intensity


def _pyfai(path, x, y, unit):
    header = ["# == pyFAI calibration ==", f"# Wavelength: {WAVELENGTH * 1e-10:.6e} m", "# Distance Sample to Detector: 0.3 m",
              f"#  {unit:>12s}  I"]
    path.write_text("\n".join(header + [f"{a:.6f} {b:.4f}" for a, b in zip(x, y)]) + "\n")
    return path


def test_pyfai_axis_units_and_wavelength_come_from_the_header(tmp_path):
    tth, intensity = _pattern()
    q = two_theta_to_q(tth, WAVELENGTH)
    by_angle = read_powder_file(_pyfai(tmp_path / "a.xy", tth, intensity, "2th_deg"))
    assert by_angle.axis == "2theta" and by_angle.wavelength == pytest.approx(WAVELENGTH)
    np.testing.assert_allclose(by_angle.x, tth, atol=1e-6)
    in_nm = read_powder_file(_pyfai(tmp_path / "q.xy", q * 10.0, intensity, "q_nm^-1"))
    assert in_nm.axis == "q"
    np.testing.assert_allclose(in_nm.x, q, atol=1e-5)  # nm^-1 -> 1/A
    in_angstrom = read_powder_file(_pyfai(tmp_path / "qa.xy", q, intensity, "q_A^-1"))
    np.testing.assert_allclose(in_angstrom.x, q, atol=1e-5)


def test_fit2d_chi_point_count_line_is_header(tmp_path):
    tth, intensity = _pattern()
    path = tmp_path / "frame.chi"
    lines = ["frame_0001.edf: Azimuthal integration", "2-Theta Angle (Degrees)", "Intensity", f"{len(tth):>10d}"]
    path.write_text("\n".join(lines + [f"  {a:.6E}  {b:.6E}" for a, b in zip(tth, intensity)]) + "\n")
    pattern = read_powder_file(path)
    assert len(pattern.x) == len(tth) and pattern.axis is None and pattern.wavelength is None
    np.testing.assert_allclose(pattern.intensity, intensity, rtol=1e-6)


def test_headerless_xy_says_nothing_of_its_axis(tmp_path):
    tth, intensity = _pattern()
    path = tmp_path / "plain.xy"
    np.savetxt(path, np.column_stack([tth, intensity]))
    pattern = read_powder_file(path)
    assert pattern.axis is None and pattern.wavelength is None
    one = tmp_path / "one.xy"
    one.write_text("1\n2\n3\n")
    with pytest.raises(SpectrumFileError, match="two columns"):
        read_powder_file(one)


def test_predict_xrd_reads_the_same_pattern_in_q_as_in_two_theta(tmp_path, capsys):
    tth, intensity = _pattern()
    q = two_theta_to_q(tth, WAVELENGTH)
    results = []
    for name, x, unit in (("tth.xy", tth, "2th_deg"), ("q.xy", q * 10.0, "q_nm^-1")):
        status = main(["predict", "xrd", str(_pyfai(tmp_path / name, x, intensity, unit)), "--json"])
        assert status == 0
        results.append(json.loads(capsys.readouterr().out)["predictions"]["crystal_system"])
    assert results[0]["value"] == results[1]["value"]
    for system, p in results[0]["probabilities"].items():
        assert results[1]["probabilities"][system] == pytest.approx(p, abs=0.02)


def test_panalytical_xrdml_and_rigaku_ras(tmp_path):
    tth, intensity = _pattern()
    counts = " ".join(f"{v:.1f}" for v in intensity)
    xrdml = tmp_path / "scan.xrdml"
    xrdml.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<xrdMeasurements xmlns="http://www.xrdml.com/XRDMeasurement/1.5">
 <xrdMeasurement measurementType="Scan">
  <usedWavelength intended="K-Alpha 1"><kAlpha1 unit="Angstrom">1.5405980</kAlpha1></usedWavelength>
  <scan><dataPoints>
   <positions axis="2Theta" unit="deg"><startPosition>{tth[0]}</startPosition><endPosition>{tth[-1]}</endPosition></positions>
   <positions axis="Omega" unit="deg"><startPosition>1.5</startPosition><endPosition>20</endPosition></positions>
   <intensities unit="counts">{counts}</intensities>
  </dataPoints></scan>
 </xrdMeasurement>
</xrdMeasurements>
""")
    pattern = read_powder_file(xrdml)
    assert pattern.axis == "2theta" and pattern.wavelength == pytest.approx(1.540598)
    np.testing.assert_allclose(pattern.x, tth, atol=1e-9)
    np.testing.assert_allclose(pattern.intensity, intensity, atol=0.06)
    ras = tmp_path / "scan.ras"
    rows = [f"{a:.4f} {b / 2:.4f} 2.000" for a, b in zip(tth, intensity)]
    ras.write_text("\n".join(["*RAS_DATA_START", "*RAS_HEADER_START", '*HW_XG_WAVE_LENGTH_ALPHA1 "1.540593"',
                              "*RAS_HEADER_END", "*RAS_INT_START", *rows, "*RAS_INT_END", "*RAS_DATA_END"]) + "\n")
    pattern = read_powder_file(ras)
    assert pattern.wavelength == pytest.approx(1.540593)
    np.testing.assert_allclose(pattern.intensity, intensity, atol=1e-3)  # counts times the attenuator factor
    broken = tmp_path / "broken.xrdml"
    broken.write_text("<xrdMeasurements><unclosed>")
    with pytest.raises(SpectrumFileError, match="broken.xrdml"):
        read_powder_file(broken)


def test_evaluate_xrd_judges_a_folder_of_labelled_patterns(tmp_path, capsys):
    """A kept-aside PXRD set laid out as the development set: pyFAI files at their own wavelength."""
    tth, intensity = _pattern()
    _pyfai(tmp_path / "a.xy", tth, intensity, "2th_deg")
    (tmp_path / "labels.csv").write_text("file,elements,crystal_system\na.xy,\"Mn,O\",cubic\nmissing.xy,\"Ti,O\",tetragonal\n"
                                         "mix.xy,\"Mn,O\",\n")
    status = main(["evaluate", "xrd", "--measured", str(tmp_path), "--measured-only", "--json"])
    out = capsys.readouterr()
    assert status == 0, out.err
    measured = json.loads(out.out)["sets"]["measured"]
    assert {entry["n"] for name, entry in measured.items() if name != "skipped_files"} == {1}
    reasons = {s["file"]: s["reason"] for s in measured["skipped_files"]}
    assert "no such file" in reasons["missing.xy"] and "crystal-system label" in reasons["mix.xy"]
    assert main(["evaluate", "xrd", "--measured", str(tmp_path), "--measured-only", "--write-card"]) == 2


def test_predict_xrd_takes_several_files_and_reports_the_unreadable_one(tmp_path, capsys):
    tth, intensity = _pattern()
    first = _pyfai(tmp_path / "a.xy", tth, intensity, "2th_deg")
    status = main(["predict", "xrd", str(first), str(tmp_path / "absent.xy"), "--json"])
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert status == 2 and [r["status"] for r in results][1] == "refused" and "no such file" in captured.err
    assert results[0]["predictions"]["crystal_system"]["value"] in results[0]["predictions"]["crystal_system"]["probabilities"]
