"""Deploy end to end: ``ansible-playbook deploy.yml`` against three containerised Debian VMs.

Each "VM" is a container with sshd, python3, ufw (incoming denied, SSH allowed) and its own
Docker engine, on a private labelled test network. The main PC's role (images, broker) runs
on the test machine itself (``ansible_connection=local``), with its firewall management OFF:
the test must never change the test machine's own firewall. The broker binds to the test
network's gateway address only. Then:

1. before deploy, a VM's health port does not answer (even with something listening there);
2. ``ansible-playbook deploy.yml`` succeeds;
3. ``/ping`` answers on all three; ``simctl ping`` lists the three over TLS with credentials;
   anonymous and wrong-password connections are refused, and so is a worker's credential
   under another client id; a worker's password cannot publish an assignment or another
   worker's status;
4. ``simctl run`` of a small sweep completes with every result; so does a sweep of kind
   ``chain``, the example plugin (``examples/fput-chain``) that the inventory lists in
   ``particle_worker_extra_packages``: it is built into the worker image and installed where
   simctl runs (this test's Python);
5. a second ``deploy.yml`` reports ``changed=0``;
6. a fourth VM added to the inventory joins after a re-run; ``simctl ping`` lists four.

Every container, network and volume is labelled and removed before and after (also on
failure); each phase's duration is printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from simctl.local_broker import port_open
from tests.support import mqtt_probe, vms

pytestmark = pytest.mark.deploy

REPO = vms.REPO
PLUGIN = "examples/fput-chain"
"""The example plugin (kind ``chain``) the workers get as an extra package."""
SLOTS = 2
"""Slots per worker (the VMs share this machine's 2 cores)."""


class Phases:
    """Times named phases and prints each duration on the terminal (not captured)."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        self._capture = request.config.pluginmanager.get_plugin("capturemanager")
        self.durations: dict[str, float] = {}

    def run(self, name: str):  # type: ignore[no-untyped-def]
        phases = self

        class _Timer:
            def __enter__(self) -> None:
                self.start = time.monotonic()

            def __exit__(self, *exc: object) -> None:
                phases.durations[name] = elapsed = time.monotonic() - self.start
                phases.say(f"[deploy] {name}: {elapsed:.1f} s{' (failed)' if exc[0] else ''}")

        return _Timer()

    def say(self, line: str) -> None:
        if self._reporter is None or self._capture is None:
            print(line, file=sys.stderr)
            return
        with self._capture.global_and_fixture_disabled():
            self._reporter.write_line(line)


class Lab:
    """The test's VMs, inventory, playbook runs and simctl calls."""

    def __init__(self, workdir: Path, phases: Phases) -> None:
        self.workdir = workdir
        self.phases = phases
        self.tag = uuid.uuid4().hex[:8]
        self.generated = workdir / "generated"
        self.key = workdir / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)],
                       check=True)
        self.public_key = self.key.with_suffix(".pub").read_text().strip()
        self.images: dict[str, str] = {}
        self.network: vms.TestNetwork | None = None
        self.vms: dict[str, str] = {}  # name -> address
        self.broker_port = 0

    # ---------------------------------------------------------------- VMs

    def vm_name(self, n: int) -> str:
        return f"particle-test-vm{n}-{self.tag}"

    def start_network(self) -> None:
        self.network = vms.TestNetwork.create(f"particle-test-{self.tag}")
        from simctl.local_broker import free_port

        self.broker_port = free_port(self.network.gateway)

    def start_vms(self, numbers: list[int]) -> None:
        assert self.network is not None
        started = {self.vm_name(n): vms.start_vm(self.vm_name(n), self.images["vm"],
                                                 self.network, n, self.public_key)
                   for n in numbers}
        for name, ip in started.items():
            vms.wait_vm_ready(name, ip)
        self.vms.update(started)

    def vm_ip(self, n: int) -> str:
        return self.vms[self.vm_name(n)]

    # ---------------------------------------------------------- inventory

    def write_inventory(self, count: int) -> Path:
        """An inventory with ``count`` VMs, and the extra variables of the test."""
        assert self.network is not None
        gw = self.network.gateway
        workers = "\n".join(f"vm{n} ansible_host={self.vm_ip(n)} worker_slots={SLOTS}"
                            for n in range(1, count + 1))
        inventory = self.workdir / "inventory.ini"
        inventory.write_text(
            "[broker]\n"
            "# The main PC's role runs on this test machine. Its firewall is NOT managed\n"
            "# (broker_firewall=false): a test must not change the test machine's firewall.\n"
            f"mainpc ansible_connection=local ansible_python_interpreter={sys.executable} "
            f"broker_address={gw} broker_bind_address={gw} broker_firewall=false\n\n"
            f"[workers]\n{workers}\n\n"
            "[workers:vars]\n"
            "ansible_user=root\n"
            f"ansible_ssh_private_key_file={self.key}\n"
            "ansible_ssh_common_args='-o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null -o ConnectTimeout=10'\n"
            "ansible_python_interpreter=/usr/bin/python3\n\n"
            "[all:vars]\n"
            "# Everything runs as root already (no sudo in the VMs).\n"
            "ansible_become=false\n"
        )
        extra = self.workdir / "extra-vars.yml"
        extra.write_text(yaml.safe_dump({
            "particle_generated_dir": str(self.generated),
            "particle_broker_port": self.broker_port,
            "particle_labels": dict([vms.LABEL.split("=", 1)]),
            # Offline bases built from this machine's apt sources (no registry here).
            "images_base_image": self.images["slim"],
            "images_builder_image": self.images["builder"],
            "images_broker_base_image": self.images["broker"],
            # Developers sharing a working tree may pin the build to a commit
            # (DEPLOY_TEST_SOURCE_REF=$(git rev-parse HEAD)); CI builds its clean checkout.
            "images_source_ref": os.environ.get("DEPLOY_TEST_SOURCE_REF", ""),
            # Relative to the repository; also installed into this Python (simctl's).
            "particle_worker_extra_packages": [PLUGIN],
            "particle_simctl_python": sys.executable,
        }))
        return inventory

    def playbook(self, name: str) -> dict[str, dict[str, int]]:
        """Run ``ansible/<name>`` from the repository root; returns the PLAY RECAP per host."""
        exe = shutil.which("ansible-playbook", path=f"{Path(sys.executable).parent}:"
                                                     f"{os.environ.get('PATH', '')}")
        assert exe, "ansible-playbook not found (pip install -e '.[deploy]')"
        env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOST_KEY_CHECKING": "False",
               "ANSIBLE_PIPELINING": "True",
               # Per-task durations in the saved log, to see where the time goes.
               "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"}
        cmd = [exe, "-i", str(self.workdir / "inventory.ini"),
               "-e", f"@{self.workdir / 'extra-vars.yml'}", f"ansible/{name}"]
        result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=900)
        log = self.workdir / f"{name}-{time.monotonic_ns()}.log"
        log.write_text(result.stdout + result.stderr)
        assert result.returncode == 0, (
            f"ansible-playbook {name} failed (exit {result.returncode}); log {log}:\n"
            f"{result.stdout[-6000:]}\n{result.stderr[-2000:]}")
        return parse_recap(result.stdout)

    # -------------------------------------------------------------- simctl

    @property
    def simctl_env(self) -> dict[str, str]:
        return {**os.environ, "SIMCTL_CONFIG": str(self.generated / "simctl.yaml"),
                "SIMCTL_STORE": str(self.workdir / "ledger.sqlite")}

    def simctl_json(self, *args: str, timeout: float = 60) -> dict:  # type: ignore[type-arg]
        result = subprocess.run([sys.executable, "-m", "simctl", *args], env=self.simctl_env,
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, (
            f"simctl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
            f"{result.stderr[-3000:]}")
        return json.loads(result.stdout)

    def pinged_workers(self, expected: int) -> set[str]:
        """Worker ids answering ``simctl ping`` (a few tries while workers settle)."""
        seen: set[str] = set()
        for _ in range(5):
            doc = self.simctl_json("ping", "--json", "--timeout", "3")
            seen = {w["worker_id"] for w in doc["workers"]}
            if len(seen) >= expected:
                break
            time.sleep(1)
        return seen


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """``host : ok=3 changed=0 ...`` lines of the PLAY RECAP as {host: {field: n}}."""
    recap = output[output.rindex("PLAY RECAP"):].splitlines()[1:]
    hosts = {}
    for line in recap:
        match = re.match(r"^(\S+)\s*:\s*(ok=.*)$", line.strip())
        if not match:
            break  # the recap ends at the first line that is not a host's counts
        hosts[match[1]] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match[2])}
    return hosts


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    if shutil.which("docker") is None or subprocess.run(
            ["docker", "info"], capture_output=True).returncode != 0:
        pytest.fail("the deploy test needs a running Docker engine (scripts/test.sh starts one)")
    phases = Phases(request)
    with phases.run("clean-up before"):
        vms.remove_labelled()
    # Not pytest's tmp_path: other pytest sessions on a shared machine prune old basetemp
    # folders, and this test's generated secrets must outlive a long run.
    workdir = Path(tempfile.mkdtemp(prefix="particle-deploy-"))
    instance = Lab(workdir, phases)
    try:
        yield instance
    finally:
        if os.environ.get("DEPLOY_TEST_KEEP") == "1":
            phases.say(f"[deploy] DEPLOY_TEST_KEEP=1: containers kept; work folder {workdir}")
        else:
            with phases.run("clean-up after"):
                vms.remove_labelled()
                shutil.rmtree(workdir, ignore_errors=True)
        total = sum(phases.durations.values())
        phases.say(f"[deploy] total: {total:.1f} s")


KINDS_SCRIPT = "import json, simkind; print(json.dumps(simkind.discover().names()))"
"""Prints the kinds installed in the Python that runs it, as a JSON list."""


# ------------------------------------------------------------------ MQTT checks


def _settings(lab: Lab, username: str | None, password: str | None):  # type: ignore[no-untyped-def]
    from simproto.connection import BrokerAddress, ConnectionSettings

    password_file = None
    if password is not None:
        password_file = lab.workdir / f"pw-{username}-{uuid.uuid4().hex[:6]}"
        password_file.write_text(password + "\n")
    assert lab.network is not None
    return ConnectionSettings(
        broker=BrokerAddress(lab.network.gateway, lab.broker_port, tls=True),
        username=username, password_file=password_file,
        tls_ca=lab.generated / "ca" / "ca.crt")


def _wait(condition, what: str, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def check_refused_and_confined(lab: Lab) -> None:
    from simctl.broker_security import worker_client_ids
    from simproto.protocol import Channel, Topics

    topics = Topics("sim")
    password = (lab.generated / "passwords" / "worker1").read_text().strip()

    client, rc = mqtt_probe.connect(_settings(lab, None, None), f"anon-{lab.tag}")
    client.loop_stop()
    client.disconnect()
    assert rc.is_failure, f"an anonymous client was accepted ({rc})"

    client, rc = mqtt_probe.connect(_settings(lab, "worker1", password + "x"), f"wrongpw-{lab.tag}")
    client.loop_stop()
    client.disconnect()
    assert rc.is_failure, f"a wrong password was accepted ({rc})"

    # Every credential but simctl's is bound to its own client id (dynamic security).
    client, rc = mqtt_probe.connect(_settings(lab, "worker1", password), f"forger-{lab.tag}")
    client.loop_stop()
    client.disconnect()
    assert rc.is_failure, f"worker1's credentials were accepted under another client id ({rc})"

    # A subscriber with simctl's rights watches worker2's assignments and status and the ping
    # topic; worker1's password then publishes to all three, as worker1's id check (its main
    # identity's id is held by the live agent). Only the ping may arrive.
    simctl_pw = (lab.generated / "passwords" / "simctl").read_text().strip()
    watcher, rc = mqtt_probe.connect(_settings(lab, "simctl", simctl_pw), f"watch-{lab.tag}")
    assert not rc.is_failure, rc
    received: list[bytes] = []
    subscribed = threading.Event()
    watcher.on_message = lambda _c, _u, msg: received.append(msg.payload)
    watcher.on_subscribe = lambda *_a: subscribed.set()
    forged = {
        topics.worker("worker2", Channel.ASSIGN): f"forged-assign-{lab.tag}".encode(),
        topics.worker("worker2", Channel.STATUS): f"forged-status-{lab.tag}".encode(),
        topics.ping: f"own-ping-{lab.tag}".encode(),
    }
    watcher.subscribe([(t, 1) for t in forged])
    assert subscribed.wait(10)

    _, probe_user, probe_id = worker_client_ids("sim", "worker1")
    worker, rc = mqtt_probe.connect(_settings(lab, probe_user, password), probe_id)
    assert not rc.is_failure, f"worker1's id-check identity was refused ({rc})"
    acks: dict[int, object] = {}
    worker.on_publish = lambda _c, _u, mid, reason, _p: acks.__setitem__(mid, reason)
    verdicts = {}
    for topic, payload in forged.items():
        # Mosquitto answers a refused QoS 1 publish with PUBACK "Not authorized" and then
        # drops the connection; the client reconnects before the next attempt.
        _wait(worker.is_connected, "worker1's test client to reconnect")
        mid = worker.publish(topic, payload, qos=1).mid
        _wait(lambda mid=mid: mid in acks, f"PUBACK of {topic}")
        verdicts[topic] = str(acks[mid])
    refused = {t: v for t, v in verdicts.items() if v == "Not authorized"}
    assert set(refused) == set(forged) - {topics.ping}, verdicts
    own = forged[topics.ping]
    _wait(lambda: own in received, "worker1's (allowed) ping at the watcher")
    time.sleep(1.0)  # anything forged would have arrived with or before the allowed message
    for c in (worker, watcher):
        c.loop_stop()
        c.disconnect()
    leaked = [p for p in received if p.startswith(b"forged-")]
    assert not leaked, f"the ACL let worker1 publish as simctl / as worker2: {leaked}"


# -------------------------------------------------------------------- the test


def test_deploy_to_containerised_vms(lab: Lab) -> None:
    phases = lab.phases
    with phases.run("base and VM images"):
        lab.images = vms.build_images()
    with phases.run("network and three VMs"):
        lab.start_network()
        lab.start_vms([1, 2, 3])
        lab.write_inventory(3)

    with phases.run("1. health port closed before deploy"):
        # Something listens on 8001 inside vm1, but ufw (deny incoming) keeps it unreachable.
        name = lab.vm_name(1)
        vms.docker("exec", name, "sh", "-c",
                   "python3 -m http.server 8001 >/dev/null 2>&1 & echo $! > /tmp/probe.pid")
        for _ in range(50):
            inside = subprocess.run(["docker", "exec", name, "curl", "-sf", "-o", "/dev/null",
                                     "http://127.0.0.1:8001/"], capture_output=True)
            if inside.returncode == 0:
                break
            time.sleep(0.1)
        assert inside.returncode == 0, "the probe listener inside vm1 did not start"
        assert not port_open(lab.vm_ip(1), 8001, timeout=1.0), "vm1:8001 answers before deploy"
        vms.docker("exec", name, "sh", "-c", 'kill "$(cat /tmp/probe.pid)"')

    with phases.run("2. deploy"):
        lab.playbook("deploy.yml")

    with phases.run("3. ping, TLS, credentials, ACL"):
        for n in (1, 2, 3):
            doc = vms.http_json(f"http://{lab.vm_ip(n)}:{8000 + n}/ping")
            assert doc["worker_id"] == f"worker{n}" and doc["status"] == "online", doc
        assert lab.pinged_workers(3) == {"worker1", "worker2", "worker3"}
        check_refused_and_confined(lab)
        # The plugin's kind loads inside a deployed worker, and where simctl runs.
        in_worker = vms.docker("exec", lab.vm_name(1), "docker", "exec", "particle-worker-1",
                               "python3", "-c", KINDS_SCRIPT)
        assert "chain" in json.loads(in_worker.strip().splitlines()[-1]), in_worker
        here = subprocess.run([sys.executable, "-c", KINDS_SCRIPT], capture_output=True,
                              text=True, check=True)
        assert "chain" in json.loads(here.stdout), here.stdout

    with phases.run("4. sweep"):
        taskfile = lab.workdir / "sweep.yaml"
        taskfile.write_text(yaml.safe_dump({
            "name": "deploy-sweep", "seed": 7, "tasks": [
                {"kind": "sleep", "params": {"seconds": 0.2}, "replicas": 6},
                {"kind": "lj", "params": {"n_cells": 3, "density": 0.8, "temperature": 1.0,
                                          "rc": 2.5, "steps": 100, "sample_every": 20},
                 "sweep": {"temperature": [0.9, 1.2]}},
            ]}, sort_keys=False))
        summary = lab.simctl_json("run", str(taskfile), "--json", "--quiet", "--timeout", "240",
                                  timeout=300)
        assert (summary["tasks"], summary["done"], summary["failed"]) == (8, 8, 0), summary
        results = lab.simctl_json("results", summary["run_id"], "--format", "json")
        rows = results["tasks"]
        assert len(rows) == 8 and all(r["state"] == "done" for r in rows), rows
        assert {r["worker_id"] for r in rows} <= {"worker1", "worker2", "worker3"}, rows

    with phases.run("4b. sweep of the plugin's kind chain"):
        taskfile = lab.workdir / "chain.yaml"
        taskfile.write_text(yaml.safe_dump({
            "name": "deploy-chain", "seed": 11, "tasks": [
                {"kind": "chain", "params": {"n_particles": 16, "steps": 400, "sample_every": 20,
                                             "modes_recorded": 4},
                 "sweep": {"beta": [0.0, 1.0], "dt": [0.05, 0.1]}},
            ]}, sort_keys=False))
        summary = lab.simctl_json("run", str(taskfile), "--json", "--quiet", "--timeout", "120",
                                  timeout=180)
        assert (summary["tasks"], summary["done"], summary["failed"]) == (4, 4, 0), summary
        rows = lab.simctl_json("results", summary["run_id"], "--format", "json")["tasks"]
        assert len(rows) == 4 and all(r["state"] == "done" and r["kind"] == "chain"
                                      and r["summary"] for r in rows), rows
        # Each result records what computed it: the kind's package and version, the image.
        assert {(r["kind_version"], r["package"]) for r in rows} == {
            ("1.0.0", "particle-sim-fput-chain")}, rows
        image = vms.docker("exec", lab.vm_name(1), "docker", "inspect", "--format",
                           "{{.Config.Image}}", "particle-worker-1").strip()
        assert image.startswith("particle-worker:") and {r["image"] for r in rows} == {image}

    with phases.run("5. second deploy changes nothing"):
        recap = lab.playbook("deploy.yml")
        changed = {host: r["changed"] for host, r in recap.items() if r.get("changed")}
        assert not changed, f"second deploy changed something: {changed} ({recap})"

    with phases.run("6. a fourth VM joins"):
        lab.start_vms([4])
        lab.write_inventory(4)
        lab.playbook("deploy.yml")
        doc = vms.http_json(f"http://{lab.vm_ip(4)}:8004/ping")
        assert doc["worker_id"] == "worker4", doc
        assert lab.pinged_workers(4) == {"worker1", "worker2", "worker3", "worker4"}
