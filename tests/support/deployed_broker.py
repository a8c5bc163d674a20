"""A real Mosquitto with the deployed broker's security: the Ansible role's dynamic-security
file, rendered from ``ansible/roles/broker/templates/dynamic-security.json.j2`` with the
role's filter plugin, on a free loopback port (plain TCP: TLS is the deploy test's part).

Ask for the ``deployed_broker`` fixture (:mod:`tests.support.fixtures`)::

    from tests.support.deployed_broker import DeployedBroker

    def test_x(deployed_broker: DeployedBroker) -> None:
        agent = [sys.executable, "-m", "worker_agent", *deployed_broker.agent_args("worker2")]
        simctl = ["simctl", *deployed_broker.simctl_args(), "run", ...]
        settings = deployed_broker.settings("worker2")   # for a paho client of your own
        deployed_broker.credentials["worker2"].client_id  # the only id worker2 may use

or :func:`deployed_broker_at` for a broker of your own (another prefix or other workers).

The template is rendered here with Jinja2 and stand-ins for the three Ansible features it
uses (``query('ansible.builtin.password', ...)``, the ``regex_replace`` and ``zip``
filters); ``test_broker_config.py`` checks that real Ansible renders the same bytes.
"""

from __future__ import annotations

import importlib.util
import re
import secrets
import string
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import jinja2

from simctl.broker_security import identities
from simctl.local_broker import LocalBroker, free_port
from simproto.connection import BrokerAddress, ConnectionSettings

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "ansible/roles/broker/templates"
FILTER_PLUGIN = REPO / "ansible/filter_plugins/mosquitto.py"
WORKERS = ("worker1", "worker2")
"""The workers the fixture creates credentials for."""
PASSWORD_LENGTH = 32
"""``broker_password_length``'s default."""


def filter_plugin() -> ModuleType:
    """The role's filter plugin module (``particle_dynsec``)."""
    spec = importlib.util.spec_from_file_location("particle_filter_plugin", FILTER_PLUGIN)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _password_lookup(plugin: str, *paths: str, length: int = 20,
                     chars: list[str] | None = None) -> list[str]:
    """``query('ansible.builtin.password', ...)``: each file's content, created if missing."""
    assert plugin == "ansible.builtin.password", plugin
    alphabet = "".join(getattr(string, c, c) for c in (chars or ["ascii_letters", "digits"]))
    found = []
    for path in map(Path, paths):
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(secrets.choice(alphabet) for _ in range(length)) + "\n")
        found.append(path.read_text().splitlines()[0])
    return found


def render_dynsec(secrets_dir: Path, topic_prefix: str, worker_ids: tuple[str, ...]) -> str:
    """The role's dynamic-security file for these secrets (created in ``secrets_dir``)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             undefined=jinja2.StrictUndefined)
    env.filters.update(filter_plugin().FilterModule().filters())
    env.filters["regex_replace"] = lambda value, pattern, repl: re.sub(pattern, repl, value)
    env.filters["zip"] = lambda a, *b: list(zip(a, *b, strict=False))
    env.globals["query"] = _password_lookup
    return env.get_template("dynamic-security.json.j2").render(
        broker_worker_ids=list(worker_ids), broker_topic_prefix=topic_prefix,
        broker_secrets_dir=str(secrets_dir), broker_password_length=PASSWORD_LENGTH)


@dataclass(frozen=True)
class Credential:
    """One identity of the deployed broker."""

    username: str
    password_file: Path
    client_id: str | None
    """The only client id the broker accepts for it; None: any (simctl)."""


@dataclass(frozen=True)
class DeployedBroker:
    """A running broker with the deployed security, and every identity's credentials."""

    broker: LocalBroker
    topic_prefix: str
    credentials: dict[str, Credential]
    """By user name: ``simctl``, ``healthcheck``, and for each worker W: ``W``,
    ``W.idcheck`` (its start-up id check) and ``healthcheck.W`` (Ansible's check)."""

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return self.broker.address

    def settings(self, username: str) -> ConnectionSettings:
        """Connection settings of one identity (see :attr:`credentials`)."""
        c = self.credentials[username]
        return ConnectionSettings(BrokerAddress.parse(self.address), topic_prefix=self.topic_prefix,
                                  username=c.username, password_file=c.password_file)

    def _flags(self, username: str) -> list[str]:
        c = self.credentials[username]
        return ["--broker", self.address, "--topic-prefix", self.topic_prefix,
                "--username", c.username, "--password-file", str(c.password_file)]

    def agent_args(self, worker_id: str) -> list[str]:
        """Flags of ``python -m worker_agent`` for that worker (add --worker-id, --slots...)."""
        return [*self._flags(worker_id), "--worker-id", worker_id]

    def simctl_args(self) -> list[str]:
        """simctl's global flags for this broker as the ``simctl`` user."""
        return self._flags("simctl")


@contextmanager
def deployed_broker_at(folder: Path, topic_prefix: str = "sim",
                       worker_ids: tuple[str, ...] = WORKERS) -> Iterator[DeployedBroker]:
    """Start the broker in ``folder`` (secrets in ``folder/generated``); stop it at exit."""
    folder.mkdir(parents=True, exist_ok=True)
    generated = folder / "generated"
    dynsec = folder / "dynamic-security.json"
    dynsec.write_text(render_dynsec(generated, topic_prefix, worker_ids))
    secret_of = {i.username: (i.secret, i.client_id)
                 for i in identities(topic_prefix, worker_ids, deployed=True)}
    credentials = {user: Credential(user, generated / "passwords" / secret, client_id)
                   for user, (secret, client_id) in secret_of.items()}
    broker = LocalBroker(folder / "broker", free_port(), dynsec_file=dynsec)
    broker.start()
    try:
        yield DeployedBroker(broker, topic_prefix, credentials)
    finally:
        broker.stop()

