"""Shared fixtures. The broker fixture starts a real Mosquitto; nothing here is a mock."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from simctl.local_broker import LocalBroker, free_port


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


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> object:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)
