"""``simctl monitor`` as a process against a real Mosquitto and a real agent: it stays up
while the broker is killed or stopped, says since when it is unreachable (JSON and text),
reconnects when the broker is back on the same port, sees the worker again, and leaves on
SIGINT with exit code 0, or by itself after ``--count`` screens."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from simctl.local_broker import LocalBroker
from tests.support.procs import Cluster, Proc
from tests.support.waiting import wait_for

MONITOR_TIMEOUT_S = 30.0
"""Upper bound of each wait for a screen (start-up, reconnect backoff, two busy cores)."""


def screens(monitor: Proc) -> list[dict[str, Any]]:
    """The JSON screens the monitor has printed so far (complete lines only)."""
    monitor.check_alive()
    text = monitor.stdout()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def worker_seen_since(doc: dict[str, Any], worker_id: str, since: float) -> bool:
    """Whether the screen shows the worker online and heard from after ``since``."""
    return any(w["worker_id"] == worker_id and w["state"] == "online" and w["last_seen"] > since
               for w in doc["workers"])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_monitor_outlives_the_broker_and_recovers(cluster: Cluster, broker: LocalBroker,
                                                 sig: signal.Signals) -> None:
    cluster.start_agents({"w1": 1})
    monitor = cluster.start_simctl("monitor", "monitor", "--interval", "0.3", "--json")
    text = cluster.start_simctl("monitor-text", "monitor", "--interval", "0.3")

    def connected_with_worker() -> dict[str, Any] | None:
        docs = [d for d in screens(monitor) if d["broker"]["connected"]]
        return next((d for d in docs if worker_seen_since(d, "w1", 0)), None)

    up = wait_for(connected_with_worker, MONITOR_TIMEOUT_S, 0.1, "a screen with w1 online")
    assert isinstance(up, dict) and up["broker"]["since"] <= up["time"]

    def text_screen_with_worker() -> bool:
        text.check_alive()
        return "throughput" in text.stdout() and "w1" in text.stdout()

    wait_for(text_screen_with_worker, MONITOR_TIMEOUT_S, 0.1, "a text screen")

    broker.stop(sig)
    before = len(screens(monitor))

    def unreachable() -> list[dict[str, Any]]:
        return [d for d in screens(monitor)[before:] if not d["broker"]["connected"]]

    wait_for(lambda: len(unreachable()) >= 3, MONITOR_TIMEOUT_S, 0.1,
             "three screens saying the broker is unreachable")
    down = unreachable()
    since = down[0]["broker"]["since"]
    assert all(d["broker"]["since"] == since for d in down)  # one outage, one start
    def banner() -> bool:
        text.check_alive()
        return "broker unreachable since" in text.stdout()

    wait_for(banner, MONITOR_TIMEOUT_S, 0.1, "the text monitor's banner")
    assert "(retrying)" in text.stdout()

    broker.start()
    n_down = len(screens(monitor))

    def recovered() -> dict[str, Any] | None:
        for doc in screens(monitor)[n_down:]:
            state = doc["broker"]
            if state["connected"] and state["since"] > since and worker_seen_since(
                    doc, "w1", state["since"]):
                return doc
        return None

    wait_for(recovered, MONITOR_TIMEOUT_S, 0.1, "a screen reconnected with w1 heard again")
    assert monitor.alive and text.alive

    def banner_gone() -> bool:
        text.check_alive()
        latest = text.stdout().rsplit("simctl monitor", 1)[-1]
        return "throughput" in latest and "unreachable" not in latest

    wait_for(banner_gone, MONITOR_TIMEOUT_S, 0.1, "a text screen without the banner")

    for proc in (monitor, text):
        proc.signal(signal.SIGINT)
        assert proc.wait(MONITOR_TIMEOUT_S) == 0, proc.describe()
    assert "Traceback" not in monitor.log() + text.log()


def test_monitor_stops_after_count_screens(cluster: Cluster) -> None:
    cluster.start_agents({"w1": 1})
    done = cluster.simctl("monitor", "--count", "3", "--interval", "0.1", "--json")
    assert done.returncode == 0, done.stderr
    docs = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(docs) == 3
    assert all(d["broker"]["connected"] for d in docs)
    assert [w["worker_id"] for w in docs[0]["workers"]] == ["w1"]
