"""Athena project files: both generations (Demeter's Perl dump, Larch's JSON), gzipped or not."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from sfn_stream.cli import main
from sfn_stream.core.spectra import (
    SpectrumFileError,
    is_athena_project,
    read_athena,
    read_spectrum,
    xanes_channels,
)

DATA = Path(__file__).parent / "data"


def _scan():
    channels = xanes_channels(read_spectrum(DATA / "fe_synthetic.csv"))
    return channels["energy"], channels["mu"]


def _perl_list(values) -> str:
    return ",".join(f"'{v}'" for v in values)


def _demeter_project(path: Path, groups: list[tuple[str, dict]], compress: bool = True) -> Path:
    """A project as Demeter writes it: one ``$old_group``/``@args``/``@x``/``@y`` record per group."""
    energy, mu = _scan()
    lines = ["# Athena project file -- Demeter version 0.9.26", "# This file created at 2026-12-05", ""]
    for key, (label, args) in enumerate(groups):
        pairs = [item for pair in {"label": label, "bkg_z": "Fe", "bkg_edge": "K", **args}.items() for item in pair]
        lines += [f"$old_group = 'g{key}';", f"@args = ({_perl_list(pairs)});",
                  f"@x = ({_perl_list(energy)});", f"@y = ({_perl_list(mu)});", "[record] # ", ""]
    text = "\n".join(lines + ["1;", ""]).encode()
    path.write_bytes(gzip.compress(text) if compress else text)
    return path


def test_demeter_project_groups_with_athena_energy_shift(tmp_path):
    energy, mu = _scan()
    path = _demeter_project(tmp_path / "fe.prj", [("FeO std", {}), ("shifted", {"bkg_eshift": "-2.5"}),
                                                  ("chi of it", {"is_chi": "1"})])
    assert is_athena_project(path)
    groups = read_athena(path)
    assert [g.metadata["athena.group"] for g in groups] == ["FeO std", "shifted"]  # chi(k) is not a spectrum
    np.testing.assert_allclose(groups[0].columns["energy"], energy)
    np.testing.assert_allclose(groups[1].columns["energy"], energy - 2.5)
    np.testing.assert_allclose(groups[0].columns["mu"], mu)
    assert xanes_channels(groups[0])["absorber"] == "Fe"
    assert [g.metadata["athena.group"] for g in read_athena(path, group="SHIFT*")] == ["shifted"]
    with pytest.raises(SpectrumFileError, match="no group matches 'x'; the groups are: FeO std, shifted"):
        read_athena(path, group="x")
    with pytest.raises(SpectrumFileError, match="2 groups"):
        read_spectrum(path)


def test_plain_text_project_of_one_group_reads_like_any_file(tmp_path):
    path = _demeter_project(tmp_path / "one.prj", [("only", {})], compress=False)
    spectrum = read_spectrum(path)
    assert spectrum.format == "athena" and spectrum.path.endswith("#only")


def test_larch_json_project(tmp_path):
    energy, mu = _scan()
    document = {"_____header": "# Athena project file -- Larch", "_____journal": "",
                "_____order": ["abcde"],
                "abcde": {"args": {"label": "Fe foil", "atsym": "Fe", "edge": "K"}, "x": energy.tolist(),
                          "y": mu.tolist()}}
    path = tmp_path / "larch.prj"
    path.write_bytes(gzip.compress(json.dumps(document).encode()))
    (group,) = read_athena(path)
    assert group.metadata["athena.group"] == "Fe foil"
    np.testing.assert_allclose(group.columns["mu"], mu)


def test_files_that_are_not_projects_are_refused_clearly(tmp_path):
    with pytest.raises(SpectrumFileError, match="not an Athena project"):
        read_athena(DATA / "fe_synthetic.csv")
    broken = tmp_path / "broken.prj"
    broken.write_bytes(b"\x1f\x8b" + b"not gzip at all")
    assert not is_athena_project(broken)
    with pytest.raises(SpectrumFileError, match="gzip"):
        read_athena(broken)


def test_predict_xanes_predicts_every_group_of_a_project(tmp_path, capsys):
    path = _demeter_project(tmp_path / "fe.prj", [("first", {}), ("second", {})])
    status = main(["predict", "xanes", str(path), "--elements", "Fe,O", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert status == 0
    assert [r["file"] for r in out] == [f"{path}#first", f"{path}#second"]
    assert all(r["absorber"] == "Fe" and r["status"] in ("ok", "flagged") for r in out)
    assert out[0]["predictions"] == out[1]["predictions"]  # the same scan twice
    status = main(["predict", "xanes", str(path), "--group", "sec*", "--elements", "Fe,O", "--json"])
    assert status == 0 and json.loads(capsys.readouterr().out)["file"].endswith("#second")


def test_a_group_that_cannot_be_predicted_does_not_stop_the_others(tmp_path, capsys):
    path = _demeter_project(tmp_path / "fe.prj", [("fe scan", {}), ("said to be cu", {"bkg_z": "Cu"})])
    status = main(["predict", "xanes", str(path), "--elements", "Fe,O", "--json"])
    captured = capsys.readouterr()
    first, second = json.loads(captured.out)
    assert status == 2 and first["status"] in ("ok", "flagged")
    assert second["status"] == "refused" and "Cu" in second["reason"] and "said to be cu" in captured.err


def test_several_files_and_projects_in_one_call(tmp_path, capsys):
    project = _demeter_project(tmp_path / "fe.prj", [("a", {}), ("b", {})])
    status = main(["predict", "xanes", str(DATA / "fe_synthetic.csv"), str(tmp_path / "absent.xdi"), str(project),
                   "--elements", "Fe,O", "--json"])
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert status == 2  # one file was not there; the others were predicted
    assert [r["status"] for r in results][1] == "refused" and "no such file" in captured.err
    assert [r["file"] for r in results][2:] == [f"{project}#a", f"{project}#b"]
    assert all(r["status"] in ("ok", "flagged") for i, r in enumerate(results) if i != 1)
    assert main(["predict", "xanes", str(DATA / "fe_synthetic.csv"), str(project), "--edge", "Cr=x.csv"]) == 2


def test_a_project_that_unpacks_beyond_the_limit_is_refused(tmp_path, monkeypatch):
    from sfn_stream.core.spectra import InputTooLargeError

    path = _demeter_project(tmp_path / "fe.prj", [(f"copy {i}", {}) for i in range(60)])  # packs > 8-fold
    monkeypatch.setenv("SFN_MAX_INPUT_BYTES", str(path.stat().st_size))  # the packed file passes, its text not
    with pytest.raises(InputTooLargeError, match="unpacks to more than"):
        read_athena(path)
