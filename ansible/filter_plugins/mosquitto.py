"""Jinja filter ``mosquitto_passwd``: one line of a Mosquitto password file.

Mosquitto 2's format is ``user:$7$<iterations>$<base64 salt>$<base64 hash>`` with
PBKDF2-HMAC-SHA512. ``mosquitto_passwd`` draws a new salt on every call, which would rewrite
the password file (and restart the broker) on every playbook run; here the salt is an input,
kept in the generated secrets beside the password, so the line only changes with them.
"""

from __future__ import annotations

import base64
import hashlib

from ansible.errors import AnsibleFilterError

ITERATIONS = 101
"""Mosquitto's own default iteration count (``mosquitto_passwd``, version 2.0)."""

SALT_BYTES = 12
"""Mosquitto reads salts of exactly 12 bytes."""


def mosquitto_passwd(password: str, username: str, salt: str) -> str:
    """``username:$7$101$salt$hash`` for ``password``; ``salt`` must be 12 ASCII characters."""
    raw_salt = str(salt).encode()
    if len(raw_salt) != SALT_BYTES:
        raise AnsibleFilterError(
            f"mosquitto_passwd: the salt must be {SALT_BYTES} bytes, got {len(raw_salt)}"
        )
    if ":" in str(username) or not str(username):
        raise AnsibleFilterError(f"mosquitto_passwd: invalid user name {username!r}")
    digest = hashlib.pbkdf2_hmac("sha512", str(password).encode(), raw_salt, ITERATIONS)
    salt_b64 = base64.b64encode(raw_salt).decode()
    return f"{username}:$7${ITERATIONS}${salt_b64}${base64.b64encode(digest).decode()}"


class FilterModule:
    """Registers the filters of this file."""

    def filters(self) -> dict[str, object]:
        return {"mosquitto_passwd": mosquitto_passwd}
