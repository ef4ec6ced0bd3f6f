"""Layering: the import-linter contracts hold, and the light layers import nothing heavy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("module, forbidden", [
    ("sfn_stream.core.spectra", ["torch", "bluesky", "tiled", "event_model", "ophyd", "numba"]),
    ("sfn_stream.core.chemistry", ["torch", "bluesky", "tiled"]),
    ("sfn_stream.core.predict", ["bluesky", "tiled", "event_model", "ophyd"]),
    ("sfn_stream.live.catalog", ["torch", "bluesky"]),
])
def test_importing_a_layer_pulls_in_nothing_heavy(module, forbidden):
    code = (f"import sys, {module}; "
            f"loaded = [m for m in {forbidden!r} if m in sys.modules]; "
            "print(','.join(loaded))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{module} imported {result.stdout.strip()}"
