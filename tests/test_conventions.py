"""Run recognition, data-key matching and composition parsing."""

from __future__ import annotations

import pytest

from sfn_stream.core.predict import CompositionError, parse_elements
from sfn_stream.live.plugin import RunConvention


def _keys(*names, dtype="number"):
    return {name: {"dtype": dtype, "shape": [], "source": "sim"} for name in names}


def test_metadata_names_the_kind():
    convention = RunConvention()
    assert convention.detect_kind({"sfn": {"kind": "xrd"}}) == "xrd"
    assert convention.detect_kind({"sfn": {"kind": "xanes"}}) == "xanes"
    assert convention.detect_kind({"sfn": "not a mapping"}) is None


def test_ophyd_prefixed_keys_are_found_by_role():
    keys = _keys("mono_energy", "xas_i0", "xas_it", "xas_iref", "mono_energy_setpoint")
    found = RunConvention().find_keys(keys, ("energy", "i0", "it", "if", "iref"))
    assert found == {"energy": "mono_energy", "i0": "xas_i0", "it": "xas_it", "iref": "xas_iref"}


def test_explicit_keys_win():
    keys = _keys("dcm_e", "mono_energy", "xas_i0", "xas_it")
    found = RunConvention().find_keys(keys, ("energy",), {"energy": "dcm_e"})
    assert found["energy"] == "dcm_e"


def test_kind_from_data_keys_when_metadata_is_missing():
    convention = RunConvention()
    assert convention.detect_kind({}, _keys("mono_energy", "det_i0", "det_if")) == "xanes"
    pattern = {"pd_pattern": {"dtype": "array", "shape": [4500], "source": "sim"}}
    assert convention.detect_kind({}, pattern) == "xrd"
    assert convention.detect_kind({}, _keys("motor", "det")) is None
    assert RunConvention(detect_from_keys=False).detect_kind({}, _keys("mono_energy", "det_i0", "det_it")) is None


def test_parse_elements():
    assert parse_elements("Cu,O") == (["Cu", "O"], None)
    elements, fractions = parse_elements("CuFeO2")
    assert elements == ["Cu", "Fe", "O"] and fractions["O"] == pytest.approx(0.5)
    assert parse_elements(["Fe", "O"]) == (["Fe", "O"], None)
    assert parse_elements("fe, CR, o") == (["Fe", "Cr", "O"], None)  # a list's symbols, in any case
    with pytest.raises(CompositionError, match="repeated"):
        parse_elements("Co,co")
    with pytest.raises(CompositionError, match="unknown element"):
        parse_elements("Cu,Xx")
    with pytest.raises(CompositionError):
        parse_elements("")
    with pytest.raises(CompositionError, match="repeated"):
        parse_elements("O,O")
