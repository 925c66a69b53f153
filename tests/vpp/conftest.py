"""Fixtures of the vpp package tests."""

import pytest

from tests.vpp.harness import make_plant


@pytest.fixture
async def plant(tmp_path):
    """A five-enterprise simulated park at noon, its service loaded and one telemetry poll done."""
    plant = await make_plant(tmp_path)
    yield plant
    await plant.service.stop()
    await plant.store.close()
