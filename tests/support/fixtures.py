"""The harness's fixtures, a pytest plugin registered by ``tests/conftest.py``.

Nothing here is a mock: ``broker`` starts a real Mosquitto, ``cluster`` real agents and
simctl processes around it, ``deployed_broker`` Mosquitto with the deployed security.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from simctl.local_broker import LocalBroker, free_port
from tests.support.procs import Cluster

if TYPE_CHECKING:
    from tests.support.deployed_broker import DeployedBroker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A real Mosquitto on a free loopback port with the project's broker settings."""
    instance = LocalBroker(tmp_path / "broker", free_port())
    instance.state_dir.mkdir()
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix unique to this test, so tests never see each other's messages."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def cluster(broker: LocalBroker, topic_prefix: str, tmp_path: Path) -> Iterator[Cluster]:
    """A :class:`Cluster` on the test's broker and topic prefix; torn down even on failure."""
    with Cluster(broker.address, topic_prefix, tmp_path / "cluster") as instance:
        yield instance


@pytest.fixture
def deployed_broker(tmp_path: Path) -> Iterator[DeployedBroker]:
    """Mosquitto with the deployed security config, credentials for simctl, worker1, worker2."""
    # Imported here: it needs jinja2 (the deploy extra), which most tests do without.
    from tests.support.deployed_broker import deployed_broker_at

    with deployed_broker_at(tmp_path / "deployed-broker") as instance:
        yield instance
