"""Verified bundles: weights that do not match their card's SHA-256 refuse to load, with a clear reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sfn_stream.core.files import file_sha256
from sfn_stream.core.networks import BundleError, load_bundle, models_dir

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "cu_synthetic.xdi"


def test_shipped_cards_record_their_weights_hash():
    for card_path in sorted(models_dir().glob("*/card.json")):
        card = json.loads(card_path.read_text())
        assert card["weights_sha256"] == file_sha256(card_path.parent / "weights.pt"), card_path


def test_changed_weights_refuse_to_load(tampered_models):
    with pytest.raises(BundleError, match="does not match its model card"):
        load_bundle(tampered_models / "xanes-specfusion")
    assert load_bundle(tampered_models / "xrd-crystal-system").id.startswith("xrd-crystal-system@")


def test_a_card_without_the_hash_refuses_to_load(tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(models_dir() / "xrd-crystal-system", folder)
    card = json.loads((folder / "card.json").read_text())
    del card["weights_sha256"]
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="lacks weights_sha256"):
        load_bundle(folder)


def test_cli_says_why_and_exits_2(tampered_models):
    code = "import sys; from sfn_stream.cli import main; sys.exit(main(sys.argv[1:]))"
    # a formula: the request goes to the (tampered) Cu bundle
    result = subprocess.run([sys.executable, "-c", code, "predict", "xanes", str(FIXTURE), "--elements", "CuO"],
                            env={**_environ(), "SFN_STREAM_MODELS": str(tampered_models)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "does not match its model card" in result.stderr
    assert "Traceback" not in result.stderr


def _environ() -> dict:
    import os

    return dict(os.environ)
