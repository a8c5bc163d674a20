"""Jinja filter ``particle_dynsec``: the broker's dynamic-security file, as JSON text.

The clients, the client ids they are bound to and their roles are defined once, in the
project's ``simctl.broker_security`` (the local cluster uses the same module), so this filter
needs the project importable: run ``ansible-playbook`` from the project's virtualenv
(``pip install -e '.[deploy]'``). Failing that, the repository this file sits in is tried.

Mosquitto's ``mosquitto_passwd`` and dynsec's control API draw a new salt for every hash,
which would rewrite the file (and restart the broker) on every playbook run; here the salts
are inputs, kept in the generated secrets beside the passwords, so the file only changes
with a user, a password or the topic tree.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError


def _broker_security() -> Any:
    try:
        from simctl import broker_security
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        try:
            from simctl import broker_security
        except ImportError as e:
            raise AnsibleFilterError(
                f"particle_dynsec needs the particle-sim project ({e}): run ansible-playbook "
                "from the project's virtualenv (pip install -e '.[deploy]')"
            ) from e
    return broker_security


def particle_dynsec(worker_ids: list[str], topic_prefix: str, passwords: dict[str, str],
                    salts: dict[str, str]) -> str:
    """The dynsec file of a deployed cluster: simctl, the health probe, every worker.

    ``passwords`` and ``salts`` map ``simctl``, ``healthcheck`` and each worker id to its
    generated password and stored salt.
    """
    security = _broker_security()
    try:
        found = security.identities(str(topic_prefix), [str(w) for w in worker_ids],
                                    deployed=True)
        return str(security.dynsec_json(found, {str(k): str(v) for k, v in passwords.items()},
                                        {str(k): str(v) for k, v in salts.items()}))
    except (ValueError, KeyError, ImportError) as e:
        raise AnsibleFilterError(f"particle_dynsec: {e}") from e


class FilterModule:
    """Registers the filters of this file."""

    def filters(self) -> dict[str, object]:
        return {"particle_dynsec": particle_dynsec}
