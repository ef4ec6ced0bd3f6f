"""Shared fixtures: one real Tiled server per test session, the demo sample, a RunEngine."""

from __future__ import annotations

import pytest


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
