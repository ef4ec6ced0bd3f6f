"""Input files larger than the limit are refused from their size, fast and without reading them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from sfn_stream.cli import main
from sfn_stream.core.spectra import (
    MAX_INPUT_BYTES,
    InputTooLargeError,
    SpectrumFileError,
    max_input_bytes,
    read_pdcif,
    read_spectrum,
    read_xy,
)

ONE_GIB = 2**30
PEAK_MEMORY_CEILING_MB = 500
SECONDS_CEILING = 2.0

# Runs one refusal in a fresh interpreter and reports its time (imports excluded) and peak memory
# (imports included).
_MEASURE = textwrap.dedent("""
    import json, resource, sys, time
    from sfn_stream.cli import main
    from sfn_stream.core.spectra import InputTooLargeError, read_pdcif, read_spectrum, read_xy

    call, path = sys.argv[1], sys.argv[2]
    started = time.perf_counter()
    if call.startswith("predict"):
        status, message = main(call.split() + [path]), None
    else:
        reader = {"read_spectrum": read_spectrum, "read_xy": read_xy, "read_pdcif": read_pdcif}[call]
        try:
            reader(path)
            status, message = 0, None
        except InputTooLargeError as err:
            status, message = "refused", str(err)
    seconds = time.perf_counter() - started
    try:  # this process's own high-water mark (ru_maxrss would include the forking parent's, kept across exec)
        with open("/proc/self/status") as status_file:
            peak_kb = next(int(line.split()[1]) for line in status_file if line.startswith("VmHWM:"))
    except OSError:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak_kb / 1024
    print(json.dumps({"status": status, "message": message, "seconds": seconds, "peak_mb": peak_mb}))
""")


def _sparse_file(path, size=ONE_GIB):
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: no disk cost
    return path


def _measure(call, path):
    done = subprocess.run([sys.executable, "-c", _MEASURE, call, str(path)], capture_output=True, text=True,
                          check=False, timeout=300, env=_env_without_limit())
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["stderr"] = done.stderr
    return result


def _env_without_limit():
    import os

    return {k: v for k, v in os.environ.items() if k != "SFN_MAX_INPUT_BYTES"}


@pytest.mark.parametrize("reader, name", [("read_spectrum", "huge.xdi"), ("read_xy", "huge.xy"),
                                          ("read_pdcif", "huge.cif")])
def test_every_reader_refuses_a_1_gib_file_fast_and_unread(tmp_path, reader, name):
    path = _sparse_file(tmp_path / name)
    result = _measure(reader, path)
    assert result["status"] == "refused"
    assert str(path) in result["message"] and str(ONE_GIB) in result["message"]
    assert str(MAX_INPUT_BYTES) in result["message"] and "SFN_MAX_INPUT_BYTES" in result["message"]
    assert result["seconds"] < SECONDS_CEILING
    assert result["peak_mb"] < PEAK_MEMORY_CEILING_MB
    print(f"{reader}: refused 1 GiB in {result['seconds'] * 1000:.1f} ms, peak {result['peak_mb']:.0f} MB")


@pytest.mark.parametrize("command, name", [("predict xanes", "huge.xdi"), ("predict xrd", "huge.xy"),
                                           ("predict xrd", "huge.cif")])
def test_predict_refuses_a_1_gib_file_with_exit_2(tmp_path, command, name):
    path = _sparse_file(tmp_path / name)
    result = _measure(command, path)
    assert result["status"] == 2
    assert "sfn-stream: " in result["stderr"] and str(path) in result["stderr"]
    assert "1024.0 MiB" in result["stderr"] and "64.0 MiB" in result["stderr"]
    assert "Traceback" not in result["stderr"]
    assert result["seconds"] < SECONDS_CEILING
    assert result["peak_mb"] < PEAK_MEMORY_CEILING_MB
    print(f"{command} {name}: exit 2 in {result['seconds'] * 1000:.1f} ms, peak {result['peak_mb']:.0f} MB")


def test_the_limit_can_be_set_by_the_environment(tmp_path, monkeypatch, capsys):
    path = tmp_path / "pattern.xy"
    path.write_text("\n".join(f"{x} {x * x}" for x in range(100)) + "\n")
    size = path.stat().st_size
    assert read_xy(path)[0].size == 100  # under the default limit: read as before

    monkeypatch.setenv("SFN_MAX_INPUT_BYTES", str(size - 1))
    assert max_input_bytes() == size - 1
    with pytest.raises(InputTooLargeError, match=f"{size} bytes"):
        read_spectrum(path)
    assert main(["predict", "xrd", str(path)]) == 2
    assert f"{size - 1} bytes" in capsys.readouterr().err

    monkeypatch.setenv("SFN_MAX_INPUT_BYTES", str(size))
    assert read_xy(path)[0].size == 100  # a file exactly at the limit is read


@pytest.mark.parametrize("value", ["lots", "-5", "0", "1.5"])
def test_a_malformed_limit_is_a_clear_error(tmp_path, monkeypatch, value):
    path = tmp_path / "pattern.xy"
    path.write_text("1 2\n3 4\n")
    monkeypatch.setenv("SFN_MAX_INPUT_BYTES", value)
    with pytest.raises(SpectrumFileError, match="SFN_MAX_INPUT_BYTES must be a positive number of bytes"):
        read_xy(path)
    with pytest.raises(SpectrumFileError, match="SFN_MAX_INPUT_BYTES"):
        read_pdcif(path)
