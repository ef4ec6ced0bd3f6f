"""Shared fixtures: one real Tiled server per test session, the demo sample, a RunEngine."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# Every plugin a test makes spools into a folder of this test session, never the user's own spool
# (a plugin adopts the undelivered runs of any ended session on its spool root).
os.environ.setdefault("SFN_SPOOL_DIR", tempfile.mkdtemp(prefix="sfn-test-spool-"))


@pytest.fixture(scope="session")
def tiled_service(tmp_path_factory):
    from sfn_stream.live.catalog import TiledService

    service = TiledService(tmp_path_factory.mktemp("tiled"))
    yield service
    service.close()


@pytest.fixture(scope="session")
def client(tiled_service):
    return tiled_service.client()


@pytest.fixture(scope="session")
def demo_sample():
    from sfn_stream.simulated_beamline import load_demo_sample

    return load_demo_sample()


@pytest.fixture
def beamline(demo_sample):
    from sfn_stream.simulated_beamline import simulated_beamline

    return simulated_beamline(demo_sample, seed=3)


@pytest.fixture
def RE():
    from bluesky import RunEngine

    return RunEngine({}, call_returns_result=False)


@pytest.fixture
def tampered_models(tmp_path):
    """A copy of the shipped bundles whose XANES weights are valid but slightly changed."""
    import torch

    from sfn_stream.core.networks import models_dir

    folder = tmp_path / "models"
    shutil.copytree(models_dir(), folder)
    weights_path = folder / "xanes-specfusion" / "weights.pt"
    weights = torch.load(weights_path, map_location="cpu", weights_only=True)
    _perturb_first_tensor(weights)
    torch.save(weights, weights_path)
    return folder


def _perturb_first_tensor(tree) -> bool:
    import torch

    for key, value in (tree.items() if isinstance(tree, dict) else enumerate(tree)):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            tree[key] = value + 1e-3
            return True
        if isinstance(value, (dict, list)) and _perturb_first_tensor(value):
            return True
    return False
