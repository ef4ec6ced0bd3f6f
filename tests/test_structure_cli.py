"""``sfn-stream infer-structure`` on a pattern file with a folder of template CIFs; bad input exits with 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sfn_stream.cli import main

from test_structure import anatase, fluorite, measured, rutile


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer-structure")
    templates = root / "templates"
    templates.mkdir()
    for name, structure in {"SnO2_rutile": rutile(4.737, 3.186, "Sn"), "TiO2_anatase": anatase(),
                            "ZrO2_fluorite": fluorite()}.items():
        structure.to(filename=str(templates / f"{name}.cif"))
    xrd = measured(rutile())
    pattern = root / "rutile.xy"
    np.savetxt(pattern, np.column_stack([xrd.x, xrd.intensity]), fmt="%.5f")
    return root, templates, pattern


def _run(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_infer_structure_writes_json_and_cifs(files, capsys):
    root, templates, pattern = files
    out = root / "result"
    status, stdout, err = _run(capsys, "infer-structure", "--elements", "Ti,O", "--xrd", pattern, "--wavelength", "1.54059",
                               "--oxidation", "Ti=4", "--cn", "Ti=6", "--sources", templates, "--cache-dir", root / "cache",
                               "--top", "3", "--space-group", "136=0.6,141=0.2", "--json", "--out", out)
    assert status == 0, err
    result = json.loads(stdout)
    best = result["candidates"][0]
    assert (best["formula"], best["spacegroup_symbol"]) == ("TiO2", "P4_2/mnm")
    assert result["request"]["space_group_probabilities"] == {"136": 0.6, "141": 0.2}
    assert best["components"]["space_group_log_prior"] > 0  # rutile's space group named first
    assert best["template"]["id"] == "cif:SnO2_rutile.cif"
    written = sorted(p.name for p in out.iterdir())
    assert "result.json" in written and "rank1_TiO2_136.cif" in written
    assert json.loads((out / "result.json").read_text())["candidates"][0]["cif"].startswith("# generated using pymatgen")


@pytest.mark.parametrize("argv, message", [
    (["--elements", "Ti,Qq"], "not an element"),
    (["--elements", "Ti"], "2 to 5 elements"),
    (["--elements", "Ti,O", "--oxidation", "Ti"], "ELEMENT=VALUE"),
    (["--elements", "Ti,O", "--crystal-system", "cubic=high"], "--crystal-system"),
    (["--elements", "Ti,O", "--sources", "nowhere-db"], "unknown template source"),
    (["--elements", "Ti,O", "--space-group", "P4_2/mnm"], "--space-group"),
    (["--elements", "Ti,O", "--space-group", "231=0.5"], "between 1 and 230"),
])
def test_bad_input_exits_with_status_2(files, capsys, argv, message):
    root, templates, pattern = files
    status, _, err = _run(capsys, "infer-structure", "--xrd", pattern, "--cache-dir", root / "cache", *argv)
    assert status == 2 and message in err


def test_missing_pattern_file_exits_with_status_2(files, capsys):
    root, _, _ = files
    status, _, err = _run(capsys, "infer-structure", "--elements", "Ti,O", "--xrd", root / "nope.xy")
    assert status == 2 and "no such file" in err
