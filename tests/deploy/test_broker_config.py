"""The broker role's password file and ACL, checked against a real Mosquitto (no Docker).

Fast companions of the end-to-end deploy test: the ``mosquitto_passwd`` filter's lines are
accepted by Mosquitto (and are stable for a stored salt), and the rendered ACL, loaded by a
real broker, confines a worker to its own topics while simctl keeps the whole tree. The ACL
is also checked to name every per-worker channel of the protocol, so a new channel cannot be
added to simproto without the ACL noticing.
"""

from __future__ import annotations

import getpass
import importlib.util
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jinja2
import mqtt_probe
import pytest

from simctl.local_broker import find_mosquitto, free_port, port_open
from simproto.connection import BrokerAddress, ConnectionSettings
from simproto.protocol import Channel, Topics

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "ansible/roles/broker/templates"
PREFIX = "sim"
WORKERS = ("worker1", "worker2")
# Worker -> broker channels a worker publishes on; the rest it only receives.
WORKER_WRITES = {Channel.STATUS, Channel.HEARTBEAT, Channel.RESULT, Channel.EVENT}


def _filter_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "mosquitto_filter", REPO / "ansible/filter_plugins/mosquitto.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


mosquitto_filter = _filter_module()


def render_acl(prefix: str = PREFIX) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             undefined=jinja2.StrictUndefined)
    return env.get_template("acl.j2").render(ansible_managed="test", broker_topic_prefix=prefix)


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Mosquitto with the role's ACL and a password file written by the filter."""
    passwords = {user: f"pw-{user}-secret" for user in ("simctl", "healthcheck", *WORKERS)}
    salts = {user: f"salt{n:08d}" for n, user in enumerate(passwords)}
    (tmp_path / "passwd").write_text("".join(
        mosquitto_filter.mosquitto_passwd(pw, user, salts[user]) + "\n"
        for user, pw in passwords.items()))
    (tmp_path / "acl").write_text(render_acl())
    port = free_port()
    (tmp_path / "mosquitto.conf").write_text(
        # Run as the caller: started as root, mosquitto would switch to its own user, which
        # cannot read this test's folder.
        f"user {getpass.getuser()}\n"
        f"per_listener_settings false\nallow_anonymous false\n"
        f"password_file {tmp_path}/passwd\nacl_file {tmp_path}/acl\n"
        f"listener {port} 127.0.0.1\n")
    proc = subprocess.Popen([find_mosquitto(), "-c", str(tmp_path / "mosquitto.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", port):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.05)
        yield port, passwords
    finally:
        proc.terminate()
        proc.wait(10)


def _client(port: int, tmp_path: Path, user: str, password: str, name: str):  # type: ignore[no-untyped-def]
    pw_file = tmp_path / f"{name}.pw"
    pw_file.write_text(password + "\n")
    settings = ConnectionSettings(BrokerAddress("127.0.0.1", port), username=user,
                                  password_file=pw_file)
    return mqtt_probe.connect(settings, name)


def test_filter_line_is_stable_and_in_mosquitto_format() -> None:
    line = mosquitto_filter.mosquitto_passwd("secret", "worker1", "abcdefghijkl")
    assert line == mosquitto_filter.mosquitto_passwd("secret", "worker1", "abcdefghijkl")
    user, rest = line.split(":", 1)
    assert user == "worker1" and rest.startswith("$7$101$")
    assert line != mosquitto_filter.mosquitto_passwd("secret", "worker1", "abcdefghijkm")
    with pytest.raises(Exception, match="12 bytes"):
        mosquitto_filter.mosquitto_passwd("secret", "worker1", "short")


def test_acl_names_every_worker_channel() -> None:
    acl = render_acl("clusterA/sim")
    for channel in Channel:
        verb = "write" if channel in WORKER_WRITES else "read"
        assert f"pattern {verb} clusterA/sim/workers/%u/{channel.value}\n" in acl, channel


def test_password_file_and_acl_on_a_real_broker(
        secured_broker: tuple[int, dict[str, str]], tmp_path: Path) -> None:
    port, passwords = secured_broker
    topics = Topics(PREFIX)

    client, rc = _client(port, tmp_path, "worker1", "wrong", "wrong")
    client.loop_stop()
    assert rc.is_failure, rc

    watcher, rc = _client(port, tmp_path, "simctl", passwords["simctl"], "watcher")
    assert not rc.is_failure, rc
    received: list[bytes] = []
    watcher.on_message = lambda _c, _u, msg: received.append(msg.payload)
    subscribed = threading.Event()
    watcher.on_subscribe = lambda *_a: subscribed.set()
    watcher.subscribe(f"{PREFIX}/#", qos=1)
    assert subscribed.wait(10)

    worker, rc = _client(port, tmp_path, "worker1", passwords["worker1"], "worker1-test")
    assert not rc.is_failure, rc
    acks: dict[int, str] = {}
    worker.on_publish = lambda _c, _u, mid, reason, _p: acks.__setitem__(mid, str(reason))
    attempts = {
        topics.worker("worker1", Channel.RESULT): True,
        topics.worker("worker2", Channel.STATUS): False,
        topics.worker("worker2", Channel.ASSIGN): False,
        topics.worker("worker1", Channel.ASSIGN): False,
        topics.run_progress("run1"): False,
    }
    verdicts = {}
    for topic in attempts:
        deadline = time.monotonic() + 10
        while not worker.is_connected():  # a refused publish costs the connection
            assert time.monotonic() < deadline
            time.sleep(0.02)
        mid = worker.publish(topic, f"probe {topic}".encode(), qos=1).mid
        while mid not in acks:
            assert time.monotonic() < deadline, f"no PUBACK for {topic}"
            time.sleep(0.02)
        verdicts[topic] = acks[mid] != "Not authorized"
    deadline = time.monotonic() + 5
    while f"probe {topics.worker('worker1', Channel.RESULT)}".encode() not in received:
        assert time.monotonic() < deadline, "the allowed result never reached simctl"
        time.sleep(0.02)
    for c in (worker, watcher):
        c.loop_stop()
        c.disconnect()
    assert verdicts == attempts
    assert received == [f"probe {topics.worker('worker1', Channel.RESULT)}".encode()]
