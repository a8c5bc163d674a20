"""The broker role's security config, checked against a real Mosquitto (no Docker).

Fast companions of the end-to-end deploy test. The dynamic-security file the role renders
(``simctl.broker_security`` through the filter plugin) is loaded by a real broker
(the ``deployed_broker`` fixture) and:

- binds every credential except simctl's to its own client id: worker2 cannot connect as
  simctl's dispatcher or as worker1 (CONNACK "Not authorized"), only as itself;
- gives each worker's start-up id check its own identity and id;
- lets simctl open several clients at once;
- confines a worker to its own topics (it reads its own status, never another worker's
  assignments), while simctl keeps the whole tree.

The rendered file is also checked to give rights on every per-worker channel of the protocol,
so a new channel cannot be added to simproto without the broker's roles noticing, and real
Ansible is checked to render the same bytes as the fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jinja2
import paho.mqtt.client as mqtt
import pytest

from simctl import broker_security
from simctl.mqtt import Observer
from simproto.connection import BrokerAddress, ConnectionSettings, id_check_identity
from simproto.protocol import Channel, Topics
from tests.support import mqtt_probe
from tests.support.deployed_broker import (
    REPO,
    TEMPLATES,
    DeployedBroker,
    render_dynsec,
)

WAIT_S = 10.0


def _connect(settings: ConnectionSettings, client_id: str) -> tuple[mqtt.Client, Any]:
    client, rc = mqtt_probe.connect(settings, client_id)
    if rc.is_failure:
        client.loop_stop()
    return client, rc


def _refused(settings: ConnectionSettings, client_id: str) -> str:
    """The CONNACK reason of a connection that must be refused."""
    client, rc = _connect(settings, client_id)
    client.loop_stop()
    client.disconnect()
    assert rc.is_failure, f"{settings.username} was accepted with client id {client_id}"
    return str(rc)


def _wait(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _subscribe(client: mqtt.Client, topic: str) -> bool:
    """Whether the broker granted the subscription."""
    answer: list[Any] = []
    client.on_subscribe = lambda _c, _u, _mid, codes, _p: answer.extend(codes)
    client.subscribe(topic, qos=1)
    _wait(lambda: answer, f"SUBACK of {topic}")
    return not answer[0].is_failure


def _publish(client: mqtt.Client, topic: str, payload: bytes, retain: bool = False) -> bool:
    """Whether the broker accepted a QoS 1 publish (a refusal also costs the connection)."""
    acks: dict[int, str] = {}
    client.on_publish = lambda _c, _u, mid, reason, _p: acks.__setitem__(mid, str(reason))
    _wait(client.is_connected, "the client to (re)connect")
    mid = client.publish(topic, payload, qos=1, retain=retain).mid
    _wait(lambda: mid in acks, f"PUBACK of {topic}")
    return acks[mid] != "Not authorized"


def _close(*clients: mqtt.Client) -> None:
    for c in clients:
        c.disconnect()
        c.loop_stop()


# ------------------------------------------------------------------ the rendered file


def test_roles_cover_every_worker_channel(tmp_path: Path) -> None:
    config = json.loads(render_dynsec(tmp_path, "clusterA/sim", ("worker1",)))
    acls = {r["rolename"]: {(a["acltype"], a["topic"]) for a in r["acls"]}
            for r in config["roles"]}
    topics = Topics("clusterA/sim")
    worker = acls["worker1"]
    for channel in Channel:
        topic = topics.worker("worker1", channel)
        sends = ("publishClientSend", topic) in worker
        reads = {("subscribeLiteral", topic), ("publishClientReceive", topic)} <= worker
        assert sends or reads, channel
        assert sends == (channel in broker_security.WORKER_SENDS), channel
        assert reads == (channel in broker_security.WORKER_RECEIVES), channel
    assert ("subscribeLiteral", topics.worker("worker1", Channel.STATUS)) in worker
    assert not any("worker2" in topic or "#" in topic for _, topic in worker)
    assert acls["simctl"] >= {("publishClientSend", "clusterA/sim/#"),
                              ("subscribePattern", "clusterA/sim/#")}
    clients = {c["username"]: c for c in config["clients"]}
    assert "clientid" not in clients["simctl"]
    assert clients["worker1"]["clientid"] == "clusterA_sim-worker-worker1"
    assert clients["worker1.idcheck"]["clientid"] == "clusterA_sim-worker-worker1-idcheck"
    assert config["defaultACLAccess"]["publishClientSend"] is False
    assert config["defaultACLAccess"]["subscribe"] is False


def test_rendering_is_stable_for_stored_secrets(tmp_path: Path) -> None:
    first = render_dynsec(tmp_path, "sim", ("worker1", "worker2"))
    assert render_dynsec(tmp_path, "sim", ("worker1", "worker2")) == first
    (tmp_path / "passwords/worker2").write_text("another\n")
    assert render_dynsec(tmp_path, "sim", ("worker1", "worker2")) != first


def test_real_ansible_renders_the_same_file(tmp_path: Path) -> None:
    ansible = Path(sys.executable).parent / "ansible"
    if not ansible.exists():
        pytest.skip("ansible is not installed beside this interpreter (the deploy extra)")
    expected = render_dynsec(tmp_path / "secrets", "sim", ("worker1", "worker2"))
    extra = {"broker_worker_ids": ["worker1", "worker2"], "broker_topic_prefix": "sim",
             "broker_secrets_dir": str(tmp_path / "secrets"), "broker_password_length": 32}
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    dest = tmp_path / "rendered.json"
    env = {**os.environ, "ANSIBLE_FILTER_PLUGINS": str(REPO / "ansible/filter_plugins"),
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
    result = subprocess.run(
        [str(ansible), "localhost", "-c", "local", "-m", "ansible.builtin.template",
         "-a", f"src={TEMPLATES / 'dynamic-security.json.j2'} dest={dest}",
         "-e", f"@{tmp_path / 'vars.json'}"],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert dest.read_text() == expected


def test_mosquitto_conf_uses_the_plugin_only() -> None:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             undefined=jinja2.StrictUndefined)
    env.globals["lookup"] = lambda *_a, **_k: "# runtime settings"
    conf = env.get_template("mosquitto.conf.j2").render(
        ansible_managed="test", broker_port=8883, broker_bind_address="",
        broker_runtime_settings_file="x",
        broker_dynsec_plugin="/usr/local/lib/particle-broker/mosquitto_dynamic_security.so")
    lines = {line.strip() for line in conf.splitlines()}
    assert "allow_anonymous false" in lines
    assert "plugin_opt_config_file /etc/particle-broker/dynamic-security.json" in lines
    # Mosquitto would consult these before the plugin, without any client-id binding.
    assert not any(line.startswith(("password_file", "acl_file")) for line in lines)


def test_health_probe_script_uses_the_bound_identities() -> None:
    script = (REPO / "images/broker/healthcheck.sh").read_text()
    assert broker_security.HEALTH_TOPIC in script
    assert broker_security.HEALTH_CLIENT_ID in script
    assert broker_security.REGISTRATION_CLIENT_PREFIX + "$worker_id" in script
    assert "healthcheck.$worker_id" in script


def test_clashing_identities_are_refused() -> None:
    with pytest.raises(ValueError, match="user name 'simctl'"):
        broker_security.identities("sim", ["simctl"], deployed=True)
    with pytest.raises(ValueError, match="client id 'sim-worker-a-idcheck'"):
        broker_security.identities("sim", ["a", "a-idcheck"], deployed=False)


def test_id_check_ids_fit_and_stay_distinct() -> None:
    long = "x" * 40
    ids = {broker_security.worker_client_ids("sim", f"{long}{n}")[2] for n in range(2)}
    assert len(ids) == 2 and all(len(i) <= 64 for i in ids)
    settings, probe_id = id_check_identity(
        ConnectionSettings(BrokerAddress("127.0.0.1"), username="w1"), "sim-worker-w1")
    assert (settings.username, probe_id) == ("w1.idcheck", "sim-worker-w1-idcheck")


# --------------------------------------------------------------- against a real broker


def test_client_ids_belong_to_their_identity(deployed_broker: DeployedBroker,
                                            tmp_path: Path) -> None:
    b, p = deployed_broker, deployed_broker.topic_prefix
    creds = b.credentials
    w2 = b.settings("worker2")
    dispatcher = f"{p}-simctl-dispatcher"
    for stolen in (dispatcher, f"{dispatcher}-{uuid.uuid4()}", creds["worker1"].client_id,
                   creds["worker1.idcheck"].client_id, f"{p}-simctl-obs-1234abcd", "any-id"):
        assert _refused(w2, str(stolen)) == "Not authorized", stolen
    own, rc = _connect(w2, str(creds["worker2"].client_id))
    assert not rc.is_failure, rc
    _close(own)

    probe = b.settings("worker2.idcheck")
    assert probe.password_file == creds["worker2"].password_file  # the worker's own password
    for stolen in (creds["worker2"].client_id, creds["worker1.idcheck"].client_id, dispatcher):
        assert _refused(probe, str(stolen)) == "Not authorized", stolen
    assert _refused(b.settings("healthcheck"), dispatcher) == "Not authorized"
    assert _refused(b.settings("healthcheck.worker1"), broker_security.HEALTH_CLIENT_ID) \
        == "Not authorized"

    # simctl is the administrator: any ids, several clients at once (dispatchers, observers).
    ids = [f"{dispatcher}-{uuid.uuid4()}", f"{dispatcher}-{uuid.uuid4()}", f"{p}-simctl-obs-1"]
    clients = []
    for cid in ids:
        client, rc = _connect(b.settings("simctl"), cid)
        assert not rc.is_failure, (cid, rc)
        clients.append(client)
    time.sleep(0.3)
    assert all(c.is_connected() for c in clients)
    _close(*clients)

    anonymous = ConnectionSettings(w2.broker, topic_prefix=p)
    assert _refused(anonymous, "anon") == "Not authorized"
    # Mosquitto 2.0 answers a wrong password with the same reason as a stolen id.
    bad = tmp_path / "wrong.password"
    bad.write_text("not-the-password\n")
    assert _refused(ConnectionSettings(w2.broker, username="worker2", password_file=bad),
                    str(creds["worker2"].client_id)) == "Not authorized"


def test_workers_are_confined_to_their_own_topics(deployed_broker: DeployedBroker) -> None:
    b = deployed_broker
    topics = Topics(b.topic_prefix)
    watcher, rc = _connect(b.settings("simctl"), "watcher")
    assert not rc.is_failure, rc
    received: list[bytes] = []
    watcher.on_message = lambda _c, _u, msg: received.append(msg.payload)
    assert _subscribe(watcher, f"{b.topic_prefix}/#")

    worker, rc = _connect(b.settings("worker1"), str(b.credentials["worker1"].client_id))
    assert not rc.is_failure, rc
    attempts = {
        topics.worker("worker1", Channel.RESULT): True,
        topics.worker("worker1", Channel.STATUS): True,
        topics.worker("worker2", Channel.STATUS): False,
        topics.worker("worker2", Channel.ASSIGN): False,
        topics.worker("worker1", Channel.ASSIGN): False,
        topics.worker("worker1", Channel.CONTROL): False,
        topics.run_progress("run1"): False,
        topics.ping: False,
        topics.replies("simctl-obs"): True,  # pong answers go to any asker
        # Chunks of its own artifacts and requests for its own inputs; never bytes into
        # another worker's transfer, nor requests or input chunks in simctl's name.
        topics.worker("worker1", Channel.CHUNK): True,
        topics.worker("worker1", Channel.FETCH): True,
        topics.worker("worker2", Channel.CHUNK): False,
        topics.worker("worker2", Channel.FETCH): False,
        topics.worker("worker1", Channel.PULL): False,
        topics.worker("worker1", Channel.DOWNLOAD): False,
        topics.worker("worker2", Channel.DOWNLOAD): False,
    }
    verdicts = {t: _publish(worker, t, f"probe {t}".encode(), retain=t.endswith("status"))
                for t in attempts}
    assert verdicts == attempts
    allowed = {f"probe {t}".encode() for t, ok in attempts.items() if ok}
    _wait(lambda: allowed <= set(received), "the allowed messages at simctl")
    time.sleep(0.3)  # anything refused would have arrived with or before them
    assert set(received) == allowed

    # The worker reads its own (retained) status, its assignments and control, never another's.
    got: list[str] = []
    _wait(worker.is_connected, "worker1 to reconnect")
    worker.on_message = lambda _c, _u, msg: got.append(msg.topic)
    assert _subscribe(worker, topics.worker("worker1", Channel.STATUS))
    _wait(lambda: topics.worker("worker1", Channel.STATUS) in got, "worker1's own status")
    own = [topics.worker("worker1", c)
           for c in (Channel.ASSIGN, Channel.CONTROL, Channel.PULL, Channel.DOWNLOAD)]
    for topic in (*own, topics.ping, topics.replies("worker1")):
        assert _subscribe(worker, topic), topic
    others = [topics.worker("worker2", c)
              for c in (Channel.ASSIGN, Channel.STATUS, Channel.PULL, Channel.DOWNLOAD,
                        Channel.CHUNK)]
    for topic in (*others, topics.all_workers(Channel.ASSIGN),
                  topics.worker("worker1", Channel.RESULT), f"{b.topic_prefix}/#", "#"):
        assert not _subscribe(worker, topic), topic
    _close(worker, watcher)


def test_id_check_and_health_identities(deployed_broker: DeployedBroker) -> None:
    b = deployed_broker
    topics = Topics(b.topic_prefix)
    probe_id = str(b.credentials["worker1.idcheck"].client_id)
    probe, rc = _connect(b.settings("worker1.idcheck"), probe_id)
    assert not rc.is_failure, rc
    assert _subscribe(probe, topics.replies("worker1"))
    assert _subscribe(probe, topics.worker("worker1", Channel.STATUS))
    assert not _subscribe(probe, topics.worker("worker1", Channel.ASSIGN))
    assert not _subscribe(probe, topics.replies("worker2"))
    assert _publish(probe, topics.ping, b"{}")
    assert not _publish(probe, topics.worker("worker1", Channel.STATUS), b"{}")
    _close(probe)

    health, rc = _connect(b.settings("healthcheck"), broker_security.HEALTH_CLIENT_ID)
    assert not rc.is_failure, rc
    assert _publish(health, broker_security.HEALTH_TOPIC, b"ok", retain=True)
    assert _subscribe(health, broker_security.HEALTH_TOPIC)
    assert not _subscribe(health, topics.worker("worker1", Channel.STATUS))
    _close(health)
    check, rc = _connect(b.settings("healthcheck.worker1"),
                         broker_security.REGISTRATION_CLIENT_PREFIX + "worker1")
    assert not rc.is_failure, rc
    assert _subscribe(check, topics.worker("worker1", Channel.STATUS))
    assert not _subscribe(check, topics.worker("worker2", Channel.STATUS))
    _close(check)


def test_real_agents_start_under_the_deployed_config(deployed_broker: DeployedBroker,
                                                     tmp_path: Path) -> None:
    """The agent's id check (its own identity) and main connection work; a second agent with
    the same id is still refused (the id check sees the live one)."""
    b = deployed_broker
    args = [sys.executable, "-m", "worker_agent", *b.agent_args("worker1"), "--slots", "1",
            "--http-port", "0", "--heartbeat", "0.2", "--grace", "1"]
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        with Observer(b.settings("simctl")) as obs:
            _wait(lambda: getattr(obs.snapshot()[0].get("worker1"), "state", "") == "online",
                  "worker1 online")
        second = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert "already in use by a live agent" in second.stderr + second.stdout
        assert agent.poll() is None, "the first agent was taken over"
    finally:
        agent.terminate()
        agent.wait(30)
        log.close()



# ------------------------------------------- topics spelled outside simproto.protocol

def _probe_topics(script: str, prefix: str, worker_id: str) -> list[str]:
    """The -t arguments of the health probe script's commands, its shell variables filled in."""
    import re

    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    topics = re.findall(r'-t\s+("[^"]*"|\S+)', code)
    return [t.strip('"').replace("$prefix", prefix).replace("$worker_id", worker_id)
            for t in topics]


def test_health_probe_topics_are_the_protocols() -> None:
    """images/broker/healthcheck.sh spells its topics (the image has no Python): they, its
    default prefix and the status it waits for are the protocol's."""
    import fnmatch
    import re

    from simproto.protocol import DEFAULT_TOPIC_PREFIX, WorkerState, WorkerStatus

    script = (REPO / "images/broker/healthcheck.sh").read_text()
    default = re.search(r"^prefix=\$\{BROKER_TOPIC_PREFIX:-([^}]*)\}$", script, re.MULTILINE)
    assert default is not None, "the script's default prefix is not where the test looks"
    assert default.group(1) == DEFAULT_TOPIC_PREFIX
    for prefix in (DEFAULT_TOPIC_PREFIX, "lab/cluster-2"):
        topics = Topics(prefix)
        assert sorted(set(_probe_topics(script, prefix, "worker1"))) == sorted(
            {broker_security.HEALTH_TOPIC, topics.worker("worker1", Channel.STATUS)})
    online = WorkerStatus("worker1", WorkerState.ONLINE.value, "s", 0.0).encode().decode()
    patterns = re.search(r"^\s*(\*'[^\n]*'\*)\s*\)\s*;;", script, re.MULTILINE)
    assert patterns is not None, "the script's status pattern is not where the test looks"
    assert any(fnmatch.fnmatchcase(online, p.strip().replace("'", ""))
               for p in patterns.group(1).split("|"))


TREE_LEVELS = sorted({topic.split("/")[1] for topic in (
    *(Topics("p").worker("w", channel) for channel in Channel), Topics("p").ping,
    Topics("p").replies("c"), Topics("p").run_progress("r"), Topics("p").broker_identity)})
"""The first levels under the prefix of every topic the protocol builds."""


def test_ansible_spells_no_topic_of_the_tree() -> None:
    """The roles pass only the prefix on (to the agents' environment, simctl.yaml and the
    particle_dynsec filter, which builds the broker's rules from Topics): no template, task
    or variable file writes a topic of the tree itself."""
    import re

    from simproto.protocol import DEFAULT_TOPIC_PREFIX

    prefix = (rf"(?:\b{re.escape(DEFAULT_TOPIC_PREFIX)}|topic_prefix\s*}}}}"
              r"|topic_prefix\s*~\s*['\"])")
    spelled = re.compile(rf"{prefix}/(?:{'|'.join(map(re.escape, TREE_LEVELS))})\b")
    found = []
    for path in sorted((REPO / "ansible").rglob("*")):
        if path.is_file() and "generated" not in path.parts and path.suffix in (
                ".j2", ".yml", ".yaml", ".cfg", ".ini", ".py"):
            found += [f"{path.relative_to(REPO)}: {m.group(0)}"
                      for m in spelled.finditer(path.read_text())]
    assert not found, "topics spelled out in ansible/ instead of built by Topics:\n" + "\n".join(
        found)
    # The check itself sees a spelled-out topic.
    assert spelled.search("t: '{{ broker_topic_prefix }}/workers/{{ id }}/status'")
