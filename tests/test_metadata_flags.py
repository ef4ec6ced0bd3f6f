"""Misconfigured ``sfn`` metadata is flagged (stop summary, derived rows, a logged warning), never ignored,
and the run is still analysed as well as it can be and recorded whole."""

from __future__ import annotations

import logging

import numpy as np
from bluesky import plans as bp

from sfn_stream.live.analyses.base import explicit_key_flags
from sfn_stream.live.plugin import XANES_STREAM, XRD_STREAM, RunConvention
from sfn_stream.simulated_beamline import powder_scan, xanes_energies, xanes_scan
from test_streaming import _primary_events, _run, plugin  # noqa: F401 (plugin: a fixture)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "sfn-stream" in r.getMessage()]


# -- the convention and the key check, without a run ------------------------------------------------


def test_run_metadata_flags_what_breaks_the_convention(caplog):
    convention = RunConvention()
    with caplog.at_level(logging.WARNING):
        assert convention.run_metadata({"uid": "u1", "sfn": "xanes"}).flags == ["sfn_metadata_not_a_mapping"]
    assert any("sfn_metadata_not_a_mapping" in m and "u1" in m for m in _warnings(caplog))
    md = convention.run_metadata({"sfn": {"kind": "xanes", "keys": "mono_energy"}})
    assert md.flags == ["sfn_keys_not_a_mapping"] and "keys" not in md and md["kind"] == "xanes"
    assert convention.run_metadata({"sfn": {"kind": "XANES"}}).flags == ["sfn_kind_unknown:XANES"]
    assert convention.run_metadata({"sfn": {"kind": ["xanes"]}}).flags == ["sfn_kind_unknown:['xanes']"]
    # good metadata, and none at all, are unchanged and unflagged
    good = {"kind": "xanes", "element": "Cu", "keys": {"energy": "mono_energy"}}
    assert convention.run_metadata({"sfn": good}) == good and convention.run_metadata({"sfn": good}).flags == []
    assert convention.run_metadata({}) == {} and convention.run_metadata({}).flags == []


def test_a_malformed_explicit_key_is_looked_for_by_name():
    keys = {"mono_energy": {"dtype": "number"}, "det_i0": {"dtype": "number"}}
    found = RunConvention().find_keys(keys, ("energy", "i0"), {"energy": ["a", "list"], "i0": "no_such"})
    assert found == {"energy": "mono_energy", "i0": "det_i0"}


def test_explicit_key_flags():
    descriptor = {"data_keys": {"mono_energy": {}, "det_i0": {}},
                  "configuration": {"det": {"data_keys": {"det_tth": {}}}}}
    roles = ("energy", "i0", "x")
    assert explicit_key_flags({"energy": "mono_energy", "x": "det_tth"}, descriptor, roles) == []
    assert explicit_key_flags({"energy": "no_such_channel"}, descriptor, roles) == [
        "sfn_key_missing:energy=no_such_channel"]
    assert explicit_key_flags({"enrgy": "mono_energy"}, descriptor, roles) == ["sfn_key_unknown_role:enrgy"]
    assert explicit_key_flags(None, descriptor, roles) == []


# -- real runs through the plugin into Tiled --------------------------------------------------------


def test_sfn_metadata_that_is_not_a_mapping_is_flagged(RE, plugin, beamline, client, caplog):
    mono, xas, _ = beamline
    with caplog.at_level(logging.WARNING):
        uid, docs, _ = _run(RE, plugin, bp.list_scan([xas], mono, list(xanes_energies("Cu")), md={"sfn": "xanes"}))
    run = client[uid]
    summary = run.metadata["stop"]["sfn"]
    assert "sfn_metadata_not_a_mapping" in summary["quality_flags"]
    assert summary["status"] == "flagged"
    assert summary["absorber"] == "Cu" and summary.get("oxidation_state") is not None  # still analysed
    derived = run[XANES_STREAM].read()
    assert "sfn_metadata_not_a_mapping" in derived["quality_flags"].values[0].split(",")
    assert any("sfn_metadata_not_a_mapping" in m for m in _warnings(caplog))
    assert run["primary"].read().sizes["time"] == len(_primary_events(docs)) == len(xanes_energies("Cu"))


def test_an_explicit_key_the_run_lacks_is_flagged(RE, plugin, beamline, client, caplog):
    mono, xas, _ = beamline
    md = {"sfn": {"kind": "xanes", "element": "Cu", "composition": "Sr3CuPtO6",
                  "keys": {"energy": "no_such_channel"}}}
    with caplog.at_level(logging.WARNING):
        uid, docs, _ = _run(RE, plugin, xanes_scan(xas, mono, "Cu", md=md))
    run = client[uid]
    summary = run.metadata["stop"]["sfn"]
    assert "sfn_key_missing:energy=no_such_channel" in summary["quality_flags"]
    assert summary["status"] == "flagged"
    assert summary.get("oxidation_state") is not None  # the energy was found by name instead
    derived = run[XANES_STREAM].read()
    assert "sfn_key_missing:energy=no_such_channel" in derived["quality_flags"].values[0].split(",")
    assert any("sfn_key_missing:energy=no_such_channel" in m for m in _warnings(caplog))
    assert run["primary"].read().sizes["time"] == len(_primary_events(docs)) == len(xanes_energies("Cu"))


def test_an_explicit_key_the_powder_run_lacks_flags_every_frame(RE, plugin, beamline, client):
    _, _, powder = beamline
    uid, _, _ = _run(RE, plugin, powder_scan(powder, num=2, md={"sfn": {"kind": "xrd", "axis": "2theta",
                                                                     "wavelength": float(powder.wavelength.get()),
                                                                     "keys": {"pattern": "missing_pattern"}}}))
    run = client[uid]
    summary = run.metadata["stop"]["sfn"]
    assert "sfn_key_missing:pattern=missing_pattern" in summary["quality_flags"]
    assert summary["frames"] == 2 and summary["crystal_system"]
    flags = [row.split(",") for row in run[XRD_STREAM].read()["quality_flags"].values]
    assert len(flags) == 2 and all("sfn_key_missing:pattern=missing_pattern" in f for f in flags)
    assert np.asarray(run["primary"].read()["time"]).size == 2
