"""Containerised "VMs" for the deploy test: Debian with sshd, python3, ufw and a Docker engine.

Every Docker object made here carries the label ``LABEL`` so :func:`remove_labelled` can take
all of them away before and after a test, also after a failure. The VM image and the base
images are the exception: they are caches keyed by their recipe (``CACHE_LABEL``), kept
between runs because building them costs minutes and they never change unless the recipe
does.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from simctl.local_broker import port_open

REPO = Path(__file__).resolve().parents[2]
LABEL = "org.particle-sim.test=deploy"
"""Label of every container, network and volume (and built image) of the deploy test."""

CACHE_LABEL = "org.particle-sim.cache=deploy-test"
"""Label of the base and VM images, kept between runs (keyed by recipe)."""

SUBNETS = ("172.30.231.0/24", "172.30.232.0/24", "10.231.77.0/24", "192.168.231.0/24")
"""Candidate subnets of the test network; the first free one is used."""

# Nested Docker inside a container (DESIGN.md, "Facts about the test machines"): these caps,
# no seccomp/apparmor confinement, all devices, the host's cgroup namespace, and a real file
# system (a volume) under /var/lib/docker for overlay2. --privileged fails on these machines.
VM_RUN_FLAGS = (
    "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW",
    "--cap-add", "MKNOD", "--cap-add", "SYS_PTRACE", "--cap-add", "SYS_MODULE",
    "--cap-add", "DAC_READ_SEARCH", "--cap-add", "IPC_LOCK",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--device-cgroup-rule", "a *:* rwm", "--cgroupns", "host",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run",
)

# Started as the VM's init: a firewall like a freshly hardened server (incoming denied, SSH
# allowed), a Docker engine, and sshd in the foreground with the test's key.
VM_INIT = r"""#!/bin/sh
set -e
mkdir -p /run/sshd /root/.ssh
chmod 0700 /root/.ssh
printf '%s\n' "$VM_AUTHORIZED_KEY" > /root/.ssh/authorized_keys
ssh-keygen -A >/dev/null
ufw default deny incoming >/dev/null
ufw allow 22/tcp >/dev/null
ufw --force enable >/dev/null
dockerd >/var/log/dockerd.log 2>&1 &
exec /usr/sbin/sshd -D -e
"""


def _load_debian_base() -> ModuleType:
    spec = importlib.util.spec_from_file_location("debian_base", REPO / "images/debian_base.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


debian_base = _load_debian_base()

VM_VARIANT = debian_base.Variant(
    "testvm",
    ("openssh-server", "python3", "python3-requests", "docker.io", "ufw", "iptables",
     "ca-certificates", "procps", "iproute2", "curl"),
    customize_hooks=(
        f"cat > \"$1\"/usr/local/sbin/vm-init <<'EOF'\n{VM_INIT}EOF\n"
        'chmod 0755 "$1"/usr/local/sbin/vm-init',
    ),
)


def docker(*args: str, check: bool = True, timeout: float = 300) -> str:
    """Run the docker CLI; returns stdout; raises with stderr on failure when ``check``."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def remove_labelled(label: str = LABEL) -> None:
    """Remove every container, volume, network and image carrying ``label`` (in this order:
    volumes and networks are only free once their containers are gone)."""
    for kind, lister in (("container", ["ps", "-aq"]), ("volume", ["volume", "ls", "-q"]),
                         ("network", ["network", "ls", "-q"]), ("image", ["images", "-aq"])):
        ids = docker(*lister, "--filter", f"label={label}").split()
        if ids:
            rm = {"container": ["rm", "-f", "-v"], "volume": ["volume", "rm", "-f"],
                  "network": ["network", "rm"], "image": ["rmi", "-f"]}[kind]
            docker(*rm, *sorted(set(ids)), check=False)


def build_images() -> dict[str, str]:
    """The base images (slim, builder, broker) and the VM image, as references."""
    labels = dict([CACHE_LABEL.split("=", 1)])
    refs = {name: debian_base.ensure_base(debian_base.VARIANTS[name], labels=labels)["image"]
            for name in ("slim", "builder", "broker")}
    refs["vm"] = debian_base.ensure_base(
        VM_VARIANT, labels=labels, changes=('CMD ["/usr/local/sbin/vm-init"]',))["image"]
    return refs


@dataclass
class TestNetwork:
    """A labelled user-defined network; the test machine is its gateway (``.1``)."""

    name: str
    subnet: ipaddress.IPv4Network

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    def address(self, n: int) -> str:
        """The static address of VM number ``n`` (1-based): .11, .12, ..."""
        return str(self.subnet.network_address + 10 + n)

    @classmethod
    def create(cls, name: str) -> TestNetwork:
        errors = []
        for subnet in SUBNETS:
            net = ipaddress.IPv4Network(subnet)
            try:
                docker("network", "create", "--label", LABEL, "--subnet", subnet,
                       "--gateway", str(net.network_address + 1), name)
                return cls(name, net)
            except RuntimeError as e:
                errors.append(str(e))
        raise RuntimeError("no free subnet for the test network: " + "; ".join(errors))


def start_vm(name: str, image: str, network: TestNetwork, n: int, public_key: str) -> str:
    """Start VM number ``n``; returns its address once sshd and its Docker engine answer."""
    ip = network.address(n)
    docker("volume", "create", "--label", LABEL, f"{name}-docker")
    docker("run", "-d", "--name", name, "--hostname", name, "--label", LABEL, *VM_RUN_FLAGS,
           "-v", f"{name}-docker:/var/lib/docker", "--network", network.name, "--ip", ip,
           "-e", f"VM_AUTHORIZED_KEY={public_key}", image)
    return ip


def wait_vm_ready(name: str, ip: str, timeout: float = 90) -> None:
    """Wait until the VM's sshd accepts connections and its Docker engine answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(ip, 22, timeout=1.0) and subprocess.run(
                ["docker", "exec", name, "docker", "info"], capture_output=True).returncode == 0:
            return
        time.sleep(0.5)
    logs = docker("logs", "--tail", "30", name, check=False)
    inner = docker("exec", name, "tail", "-n", "30", "/var/log/dockerd.log", check=False)
    raise RuntimeError(f"VM {name} not ready after {timeout:.0f} s:\n{logs}\n{inner}")


def http_json(url: str, timeout: float = 3.0) -> dict[str, Any]:
    """GET ``url`` and decode its JSON body."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())
