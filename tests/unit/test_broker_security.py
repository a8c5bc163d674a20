"""simctl.broker_security without a broker: identities, the dynsec file, control commands.

The file is loaded by a real Mosquitto in tests/deploy/test_broker_config.py; here its shape.
"""

from __future__ import annotations

import base64

import pytest

from simctl import broker_security as bs

PASSWORDS = {"simctl": "s", "local-admin": "a", "worker1": "w1", "worker2": "w2"}


def test_local_identities_bind_every_client_id_but_simctl() -> None:
    found = bs.identities("sim", ["worker1", "worker2"], deployed=False)
    bound = {i.username: i.client_id for i in found}
    assert bound == {
        "simctl": None, "local-admin": bs.ADMIN_CLIENT_ID,
        "worker1": "sim-worker-worker1", "worker1.idcheck": "sim-worker-worker1-idcheck",
        "worker2": "sim-worker-worker2", "worker2.idcheck": "sim-worker-worker2-idcheck",
    }
    assert {i.secret for i in found if i.username.startswith("worker1")} == {"worker1"}


def test_salts_make_the_file_reproducible() -> None:
    found = bs.identities("sim", ["worker1"], deployed=False)
    salts = {"simctl": "a" * 12, "local-admin": "b" * 12, "worker1": "c" * 12}
    assert bs.dynsec_json(found, PASSWORDS, salts) == bs.dynsec_json(found, PASSWORDS, salts)
    assert bs.dynsec_json(found, PASSWORDS) != bs.dynsec_json(found, PASSWORDS)
    clients = bs.dynsec_config(found, PASSWORDS, salts)["clients"]
    assert isinstance(clients, list)
    for client in clients:
        assert len(base64.b64decode(client["salt"])) == bs.SALT_BYTES
        assert len(base64.b64decode(client["password"])) == bs.HASH_BYTES
    # The worker and its id check share a password but not a salt, hence not a hash.
    by_user = {c["username"]: c for c in clients}
    assert by_user["worker1"]["salt"] != by_user["worker1.idcheck"]["salt"]


def test_a_missing_password_is_named() -> None:
    found = bs.identities("sim", ["worker1", "worker9"], deployed=False)
    with pytest.raises(ValueError, match="worker9"):
        bs.dynsec_config(found, PASSWORDS)
    with pytest.raises(ValueError, match="worker9"):
        bs.control_commands(found, PASSWORDS)


def test_control_commands_create_roles_before_clients() -> None:
    found = bs.worker_identities("sim", "worker3", registration=False)
    commands = bs.control_commands(found, {"worker3": "pw"})
    assert [c["command"] for c in commands] == ["createRole"] * 2 + ["createClient"] * 2
    clients = {c["username"]: c for c in commands if c["command"] == "createClient"}
    assert clients["worker3"]["clientid"] == "sim-worker-worker3"
    assert clients["worker3.idcheck"]["password"] == "pw"


def test_wildcard_filters_are_subscription_patterns() -> None:
    simctl = bs.identities("p", [], deployed=False)[0]
    kinds = {(a["acltype"], a["topic"]) for a in simctl.acls()}
    assert ("subscribePattern", "p/#") in kinds and ("publishClientReceive", "p/#") in kinds
