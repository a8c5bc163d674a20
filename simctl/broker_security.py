"""Who may connect to the broker, under which client id, and to which topics.

One definition for both brokers: the deployed one (Ansible renders it through the filter
``particle_dynsec`` of ``ansible/filter_plugins/mosquitto.py``) and the local cluster of
``simctl local up``. The output is the configuration file of Mosquitto's dynamic-security
plugin (dynsec, shipped with Mosquitto 2): clients (user name, PBKDF2-SHA512 password hash,
salt, iterations, optionally a client id the client is bound to) and roles (ACLs).

Why dynsec and client-id binding: a dynsec client with a ``clientid`` is refused unless it
connects with exactly that id, so no worker credential can take the dispatcher's session or
another worker's. ``use_username_as_clientid`` cannot do this: simctl opens several clients
at once (a dispatcher per ledger, observers, ping), and an agent opens a second connection
(its start-up id check) while another agent may hold its id. Here the id check has its own
identity (``<worker>.idcheck``, the worker's password) bound to its own id.

| user                   | client id bound to          | may                                  |
|------------------------|-----------------------------|--------------------------------------|
| ``simctl``             | none: any id                | the whole tree under the prefix      |
| ``<worker>``           | ``<prefix>-worker-<worker>`` | its own channels, ping, pong replies |
| ``<worker>.idcheck``   | ``<that id>-idcheck``       | publish ping; read its replies and   |
|                        |                             | its status                           |
| ``healthcheck``        | ``particle-broker-health``  | the health topic (deployed only)     |
| ``healthcheck.<worker>`` | ``particle-broker-registration-<worker>`` | read that worker's status |
| ``local-admin``        | ``simctl-local-admin``      | the dynsec control API (local only)  |

simctl is unbound: it is the cluster's administrator credential (it assigns every task), so
whoever holds it can do anything in the cluster anyway.

Importing this module imports no MQTT client; computing a worker's client ids imports the
agent's own definitions (``worker_agent.config``, ``simproto.connection``) so that they are
never written twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from simproto.protocol import Channel, Topics, check_id

ITERATIONS = 101
"""PBKDF2 iterations; Mosquitto 2.0's own default. The generated passwords are 32 random
letters and digits, so the hash's cost adds nothing against guessing."""

SALT_BYTES = 12
"""dynsec (2.0) reads salts of exactly 12 bytes."""

HASH_BYTES = 64
"""PBKDF2-HMAC-SHA512 output length dynsec compares."""

HEALTH_TOPIC = "particle-broker/health"
"""The broker image's health probe topic (images/broker/healthcheck.sh spells it too,
guarded by tests/deploy/test_broker_config.py::test_health_probe_topics_are_the_protocols)."""

HEALTH_CLIENT_ID = "particle-broker-health"
"""Client id of the image's HEALTHCHECK (one at a time: Docker does not overlap them)."""

REGISTRATION_CLIENT_PREFIX = "particle-broker-registration-"
"""Client id prefix of Ansible's registration check, one per worker (they run in parallel)."""

ADMIN_USER = "local-admin"
"""The local cluster's dynsec administrator (adds workers while the broker runs)."""

ADMIN_CLIENT_ID = "simctl-local-admin"
"""The only client id the local administrator may use."""

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
"""Where dynsec takes commands; it answers on ``CONTROL_TOPIC + '/response'``."""

WORKER_SENDS = frozenset({Channel.STATUS, Channel.HEARTBEAT, Channel.RESULT, Channel.EVENT,
                          Channel.CHUNK, Channel.FETCH})
"""The per-worker channels a worker publishes on (its status is also its Last Will; chunks
of its own artifacts only, and requests for its own inputs)."""

WORKER_RECEIVES = frozenset({Channel.ASSIGN, Channel.CONTROL, Channel.STATUS, Channel.PULL,
                             Channel.DOWNLOAD})
"""The per-worker channels a worker subscribes to (its status: to see a newer agent; the
requests for its artifacts and the chunks of its inputs)."""

_UNPLACED = set(Channel) - WORKER_SENDS - WORKER_RECEIVES
if _UNPLACED:  # a new channel must be placed in one of the two sets
    raise AssertionError(f"channels without broker rights: {sorted(_UNPLACED)}")

DEFAULT_ACL_ACCESS = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}
"""Everything not granted by a role is refused, receiving included (so even a subscription
that slipped through delivers nothing)."""


@dataclass(frozen=True)
class Identity:
    """One dynsec client and its role (named like the client)."""

    username: str
    client_id: str | None
    """The only client id it may use; None: any (simctl)."""
    secret: str
    """Key of its password in the passwords mapping (the worker's id for its id check)."""
    description: str
    send: tuple[str, ...] = ()
    """Topic filters it may publish on."""
    receive: tuple[str, ...] = ()
    """Topic filters it may subscribe to and receive from."""

    def acls(self) -> list[dict[str, object]]:
        """The role's ACLs; filters with wildcards are subscription patterns."""
        acls: list[dict[str, object]] = [
            {"acltype": "publishClientSend", "topic": t, "allow": True} for t in self.send
        ]
        for topic in self.receive:
            wild = "+" in topic or "#" in topic
            acls.append({"acltype": "subscribePattern" if wild else "subscribeLiteral",
                         "topic": topic, "allow": True})
            acls.append({"acltype": "publishClientReceive", "topic": topic, "allow": True})
        return acls


def _any_last_level(topic: str) -> str:
    """``a/b/x`` -> ``a/b/+``: the filter of every topic built like ``topic``."""
    return topic.rsplit("/", 1)[0] + "/+"


def worker_client_ids(topic_prefix: str, worker_id: str) -> tuple[str, str, str]:
    """(agent client id, id-check user name, id-check client id) of one worker, as the agent
    itself computes them (the agent's user name is its worker id)."""
    from simproto.connection import BrokerAddress, ConnectionSettings, id_check_identity
    from worker_agent.config import AgentConfig

    settings = ConnectionSettings(BrokerAddress("localhost"), topic_prefix=topic_prefix,
                                  username=worker_id)
    agent = AgentConfig(connection=settings, worker_id=worker_id, slots=1, http_port=0)
    probe, probe_id = id_check_identity(settings, agent.client_id)
    assert probe.username is not None
    return agent.client_id, probe.username, probe_id


def worker_identities(topic_prefix: str, worker_id: str, *, registration: bool) -> list[Identity]:
    """The agent's identity and its id check's; with ``registration``, Ansible's check."""
    t = Topics(topic_prefix)
    check_id(worker_id, "worker id")
    client_id, probe_user, probe_id = worker_client_ids(topic_prefix, worker_id)
    status = t.worker(worker_id, Channel.STATUS)
    found = [
        Identity(
            worker_id, client_id, worker_id, f"worker agent {worker_id}",
            send=(*(t.worker(worker_id, c) for c in sorted(WORKER_SENDS)),
                  _any_last_level(t.replies(worker_id))),
            receive=(*(t.worker(worker_id, c) for c in sorted(WORKER_RECEIVES)),
                     t.ping, t.replies(worker_id)),
        ),
        Identity(probe_user, probe_id, worker_id, f"start-up id check of {worker_id}",
                 send=(t.ping,), receive=(t.replies(worker_id), status)),
    ]
    if registration:
        found.append(Identity(f"healthcheck.{worker_id}", REGISTRATION_CLIENT_PREFIX + worker_id,
                              "healthcheck", f"registration check of {worker_id}",
                              receive=(status,)))
    return found


def identities(topic_prefix: str, worker_ids: Iterable[str], *, deployed: bool) -> list[Identity]:
    """Every identity of a cluster: the deployed one has the health probe and the
    registration checks; the local one has the administrator instead."""
    t = Topics(topic_prefix)
    everything = f"{t.prefix}/#"
    found = [Identity("simctl", None, "simctl", "simctl: the cluster's administrator",
                      send=(everything,), receive=(everything,))]
    if deployed:
        found.append(Identity("healthcheck", HEALTH_CLIENT_ID, "healthcheck",
                              "the broker image's health probe",
                              send=(HEALTH_TOPIC,), receive=(HEALTH_TOPIC,)))
    else:
        control = f"{CONTROL_TOPIC}/#"
        found.append(Identity(ADMIN_USER, ADMIN_CLIENT_ID, ADMIN_USER,
                              "local cluster: adds workers while the broker runs",
                              send=(control,), receive=(control,)))
    for worker_id in worker_ids:
        found += worker_identities(topic_prefix, worker_id, registration=deployed)
    _check_unique(found)
    return found


def _check_unique(found: list[Identity]) -> None:
    for what, values in (("user name", [i.username for i in found]),
                         ("client id", [i.client_id for i in found if i.client_id])):
        taken = {v for v in values if values.count(v) > 1}
        if taken:
            raise ValueError(
                f"two identities would share the {what} {sorted(taken)[0]!r}: rename the "
                "worker whose id makes it (worker ids are also user names)")


def password_hash(password: str, salt: bytes) -> str:
    """Base64 PBKDF2-HMAC-SHA512 of ``password``, as dynsec stores it."""
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS, HASH_BYTES)
    return base64.b64encode(digest).decode()


def _salt(identity: Identity, salts: Mapping[str, str] | None) -> bytes:
    if salts is None:
        return os.urandom(SALT_BYTES)
    # One stored salt per secret; each client gets its own, derived, so a re-run with the
    # same inputs writes the same file (a new salt would change it on every run).
    return hashlib.sha256(f"{salts[identity.secret]}:{identity.username}".encode()).digest()[
        :SALT_BYTES]


def _missing(found: list[Identity], passwords: Mapping[str, str]) -> None:
    missing = sorted({i.secret for i in found} - set(passwords))
    if missing:
        raise ValueError(f"no password for {', '.join(missing)}")


def dynsec_config(
    found: list[Identity], passwords: Mapping[str, str], salts: Mapping[str, str] | None = None
) -> dict[str, object]:
    """The dynsec file's content. ``salts`` (one per secret) make it reproducible."""
    _missing(found, passwords)
    clients = []
    for identity in found:
        salt = _salt(identity, salts)
        client: dict[str, object] = {
            "username": identity.username,
            "textname": identity.description,
            "password": password_hash(passwords[identity.secret], salt),
            "salt": base64.b64encode(salt).decode(),
            "iterations": ITERATIONS,
            "roles": [{"rolename": identity.username}],
        }
        if identity.client_id:
            client["clientid"] = identity.client_id
        clients.append(client)
    return {
        "defaultACLAccess": dict(DEFAULT_ACL_ACCESS),
        "clients": clients,
        "groups": [],
        "roles": [{"rolename": i.username, "acls": i.acls()} for i in found],
    }


def dynsec_json(found: list[Identity], passwords: Mapping[str, str],
                salts: Mapping[str, str] | None = None) -> str:
    """:func:`dynsec_config` as the file's text (stable key order, final newline)."""
    return json.dumps(dynsec_config(found, passwords, salts), indent=2, sort_keys=True) + "\n"


def control_commands(found: list[Identity],
                     passwords: Mapping[str, str]) -> list[dict[str, object]]:
    """dynsec control-API commands that add ``found`` to a running broker (roles first)."""
    _missing(found, passwords)
    commands: list[dict[str, object]] = [
        {"command": "createRole", "rolename": i.username, "acls": i.acls()} for i in found
    ]
    for i in found:
        command: dict[str, object] = {
            "command": "createClient", "username": i.username, "password": passwords[i.secret],
            "textname": i.description, "roles": [{"rolename": i.username}],
        }
        if i.client_id:
            command["clientid"] = i.client_id
        commands.append(command)
    return commands
