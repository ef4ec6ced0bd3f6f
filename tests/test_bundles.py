"""Verified bundles: weights that do not match their card's SHA-256 refuse to load, with a clear reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sfn_stream.core.files import file_sha256
from sfn_stream.core.networks import BundleError, load_bundle, models_dir
from sfn_stream.core.predict import ModelRegistry
from sfn_stream.live.plugin import XANES_STREAM, SfnPlugin, make_tiled_writer
from sfn_stream.simulated_beamline import xanes_scan

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "cu_synthetic.xdi"


@pytest.fixture
def tampered_models(tmp_path):
    """A copy of the shipped bundles whose XANES weights are valid but slightly changed."""
    folder = tmp_path / "models"
    shutil.copytree(models_dir(), folder)
    weights_path = folder / "xanes-specfusion" / "weights.pt"
    weights = torch.load(weights_path, map_location="cpu", weights_only=True)
    _perturb_first_tensor(weights)
    torch.save(weights, weights_path)
    return folder


def _perturb_first_tensor(tree) -> bool:
    for key, value in (tree.items() if isinstance(tree, dict) else enumerate(tree)):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            tree[key] = value + 1e-3
            return True
        if isinstance(value, (dict, list)) and _perturb_first_tensor(value):
            return True
    return False


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
    result = subprocess.run([sys.executable, "-c", code, "predict", "xanes", str(FIXTURE), "--elements", "Cu,O"],
                            env={**_environ(), "SFN_STREAM_MODELS": str(tampered_models)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "does not match its model card" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_live_run_records_the_reason_and_stays_complete(RE, beamline, client, tampered_models):
    mono, xas, _ = beamline
    plugin = SfnPlugin(make_tiled_writer(client), models=ModelRegistry(tampered_models))
    RE.subscribe(plugin)
    try:
        (uid,) = RE(xanes_scan(xas, mono, "Cu", composition="Sr3CuPtO6", sample="t-tampered"))
        assert plugin.flush(timeout=300)
    finally:
        plugin.close()
    run = client[uid]
    summary = run.metadata["stop"]["sfn"]
    assert summary["status"] == "error"
    assert "does not match its model card" in summary["reason"]
    assert run["primary"].read().sizes["time"] == 200
    assert run[XANES_STREAM].read()["status"].values[0] == "error"


def _environ() -> dict:
    import os

    return dict(os.environ)
