"""``sfn-stream predict`` on files: predictions with confidence, or a clear reason and exit status 2."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from sfn_stream.simulated_beamline import xanes_energies
from sfn_stream.cli import main
from sfn_stream.offline.shared import have_shared, shared_dir


def _measured_xanes_file(path, beamline):
    """A transmission scan of the demo sample, as the simulated beamline measures it, saved as XDI."""
    mono, xas, _ = beamline
    rows = []
    for energy in xanes_energies("Cu"):
        mono.set(energy).wait()
        xas.trigger()
        rows.append((energy, xas.i0.get(), xas.it.get(), xas.iref.get()))
    header = ["#XDI/1.0", "# Column.1: energy eV", "# Column.2: i0", "# Column.3: itrans", "# Column.4: irefer",
              "# Element.symbol: Cu", "# Element.edge: K", "#----", "# energy i0 itrans irefer"]
    path.write_text("\n".join(header + [" ".join(f"{v:.4f}" for v in row) for row in rows]) + "\n")
    return path


def _run(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_predict_xanes_json_names_predictions_plainly(tmp_path, beamline, capsys):
    path = _measured_xanes_file(tmp_path / "scan.xdi", beamline)
    status, out, err = _run(capsys, "predict", "xanes", str(path), "--elements", "Cu,Fe,O", "--json")
    assert status == 0, err
    result = json.loads(out)
    predictions = result["predictions"]
    for name in ("oxidation_state", "coordination_number"):
        assert 0.0 <= predictions[name]["confidence"] <= 1.0
        assert sum(predictions[name]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert predictions["density"]["std"] > 0
    assert result["bundle_id"].startswith("xanes-specfusion-3d@")  # an element list: the 3d bundle answers Cu
    assert result["preprocessing"]["calibration"] == "reference_foil"
    assert isinstance(result["quality_flags"], list)


def test_predict_xanes_table_output(tmp_path, beamline, capsys):
    path = _measured_xanes_file(tmp_path / "scan.xdi", beamline)
    status, out, _ = _run(capsys, "predict", "xanes", str(path), "--elements", "Sr3CuPtO6")
    assert status == 0
    assert "oxidation_state" in out and "model bundle" in out


def test_absorber_comes_from_the_scan_when_nothing_names_it(tmp_path, beamline, capsys):
    named = _measured_xanes_file(tmp_path / "scan.xdi", beamline)
    anonymous = tmp_path / "sample7.xdi"  # no Element.symbol, no metal in the file name
    anonymous.write_text("".join(line for line in named.read_text().splitlines(True) if "Element." not in line))
    status, out, err = _run(capsys, "predict", "xanes", str(anonymous), "--elements", "Cu,Fe,O", "--json")
    assert status == 0, err
    assert json.loads(out)["absorber"] == "Cu"
    status, _, err = _run(capsys, "predict", "xanes", str(anonymous), "--elements", "Mn,O")
    assert status == 2 and "say which element absorbs" in err  # the sample's elements hold no Cu


def test_unsupported_absorber_exits_2_with_a_message(tmp_path, capsys):
    path = tmp_path / "ga.csv"  # Ga: no bundle covers it (the 3d metals Ti..Zn are all covered)
    energy = np.linspace(10250, 10550, 300)
    path.write_text("energy,mu\n" + "\n".join(f"{e},{0.5 + np.arctan((e - 10367) / 2) / np.pi}" for e in energy))
    status, _, err = _run(capsys, "predict", "xanes", str(path), "--absorber", "Ga", "--elements", "Ga,As")
    assert status == 2
    assert "Ga K edge" in err and "Traceback" not in err


@pytest.mark.parametrize("content, words", [("", "empty"), ("energy,mu\n1,2\nx,y\n", "")])
def test_unreadable_file_exits_2(tmp_path, capsys, content, words):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    status, _, err = _run(capsys, "predict", "xanes", str(path), "--absorber", "Cu")
    assert status == 2
    assert err.startswith("sfn-stream: ") and words in err


def test_predict_xrd_json(tmp_path, beamline, capsys):
    _, _, powder = beamline
    powder.trigger()
    path = tmp_path / "frame.xy"
    np.savetxt(path, np.column_stack([powder.tth.get(), powder.pattern.get()]))
    status, out, err = _run(capsys, "predict", "xrd", str(path), "--wavelength", "1.5406", "--json")
    assert status == 0, err
    result = json.loads(out)
    cs = result["predictions"]["crystal_system"]
    assert cs["value"] in cs["probabilities"] and 0 < cs["confidence"] <= 1
    assert result["bundle_id"].startswith("xrd-indexed@")


@pytest.mark.skipif(not have_shared(), reason="needs ../shared")
def test_every_measured_file_gives_a_prediction_or_a_clear_reason(capsys):
    """Measured spectra the model never saw: a prediction or a reason, never a traceback."""
    root = shared_dir() / "data"
    labels = {row["file"]: row for row in csv.DictReader(open(root / "xanes_experimental_dev" / "labels.csv"))}
    files = sorted((root / "xanes_experimental_dev").glob("*/*.*"))
    files = [f for f in files if f.suffix.lower() in (".xdi", ".csv", ".xd") and "LICENSE" not in f.name]
    assert len(files) > 50
    outcomes = {0: 0, 2: 0}
    for path in files:
        label = labels.get(f"{path.parent.name}/{path.name}")
        argv = ["predict", "xanes", str(path), "--json"]
        if label:
            argv += ["--elements", label["elements"].replace('"', "")]
        status, out, err = _run(capsys, *argv)
        assert status in (0, 2), (path, err)
        assert "Traceback" not in err
        if status == 2:
            assert err.strip(), path
        outcomes[status] += 1
    assert outcomes[0] > 0


def test_train_without_the_development_data_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SFN_SHARED", str(tmp_path / "nowhere"))
    status, _, err = _run(capsys, "train", "xanes", "--out", str(tmp_path / "bundle"))
    assert status == 2
    assert "shared development data" in err and "Traceback" not in err
    assert not (tmp_path / "bundle").exists()


@pytest.mark.slow
def test_bench_stream_prints_every_figure(capsys):
    status, out, _ = _run(capsys, "bench", "stream", "--scans", "1", "--json")
    assert status == 0
    result = json.loads(out)
    assert set(result["stop_to_derived_stream_written_ms"]) == {"p50", "p99", "max"}
    assert {"ratio", "acquisition_ratio"} <= set(result["scan_wall_s"])
    assert result["tiledwriter_alone_stop_ms"]["p50"] > 0  # figures only: no timing is asserted


def test_bench_passes_its_own_options_to_the_benchmark(capsys):
    with pytest.raises(SystemExit) as exit_info:  # the benchmark's own parser prints its help
        main(["bench", "xanes-model", "--help"])
    assert exit_info.value.code == 0 and "--bundle" in capsys.readouterr().out


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path, monkeypatch, capsys):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    path = tmp_path / "scan.csv"
    energy = np.linspace(8800, 9300, 400)
    path.write_text("energy,mu\n" + "\n".join(f"{e},{np.arctan((e - 8981) / 2)}" for e in energy))
    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert main(["predict", "xanes", str(path), "--elements", "Cu,O", "--json"]) == 141
    assert "Traceback" not in capsys.readouterr().err
