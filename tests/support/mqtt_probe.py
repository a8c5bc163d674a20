"""Connect to a broker as a given user and report what its CONNACK said (for ACL checks)."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt

from simproto.connection import ConnectionSettings, make_client


def connect(settings: ConnectionSettings, client_id: str) -> tuple[mqtt.Client, Any]:
    """Connect and start the network loop; returns (client, CONNACK reason code).

    The caller stops the client (``loop_stop()``), whether the broker accepted it or not.
    """
    client = make_client(settings, client_id)
    answered = threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(_c: Any, _u: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        outcome["rc"] = reason_code
        answered.set()

    client.on_connect = on_connect
    client.connect(settings.broker.host, settings.broker.port, keepalive=10)
    client.loop_start()
    assert answered.wait(10), "no CONNACK from the broker"
    return client, outcome["rc"]
