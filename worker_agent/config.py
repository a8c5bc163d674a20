"""The agent's settings and defaults; precedence: flag > environment > config file > default.

The command line (``worker_agent.cli``) resolves the sources; this module holds the
defaults (one line of documentation each), the checks, and the YAML config-file reader.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simproto.connection import DEFAULT_KEEPALIVE_S, BrokerAddress, ConnectionSettings
from simproto.protocol import DEFAULT_TOPIC_PREFIX, Topics, check_id
from simproto.settings_file import read_settings_file
from simproto.sizes import parse_size
from worker_agent.errors import ConfigError

DEFAULT_BROKER = "127.0.0.1:1883"
"""Broker used when none is configured: the local quick-start broker."""

DEFAULT_HEARTBEAT_S = 2.0
"""Seconds between heartbeats; the dispatcher's leases expire after three missed ones."""

MIN_HEARTBEAT_S = 0.2
"""Shortest heartbeat interval accepted (tests use it for quick fault detection)."""

DEFAULT_GRACE_S = 30.0
"""Seconds running tasks may take to finish after SIGTERM before they are handed back."""

DEFAULT_HTTP_PORT = 8000
"""Port of the HTTP health endpoint (``/ping``, ``/metrics``); 0 picks any free port."""

DEFAULT_SPOOL_MAX_BYTES = 20 << 30
"""Bound of the spool (artifacts simctl has not fetched yet, and cached inputs): 20 GiB."""

LOG_LEVELS = ("debug", "info", "warning", "error")
"""Accepted ``--log-level`` values."""

CONFIG_KEYS = (
    "broker", "worker_id", "slots", "http_port", "topic_prefix", "username", "password_file",
    "tls_ca", "tls_cert", "tls_key", "heartbeat", "grace", "keepalive", "log_level", "spool",
    "spool_max_bytes",
)
"""Keys a YAML config file may set (the long flag names; '-' and '_' are interchangeable)."""

PATH_KEYS = ("password_file", "tls_ca", "tls_cert", "tls_key", "spool")
"""Settings that name files; in a config file they are relative to the file's folder."""


def default_worker_id() -> str:
    """The host name, which is what a machine's single agent is naturally called."""
    return socket.gethostname().split(".", 1)[0] or "worker"


def default_spool(worker_id: str) -> Path:
    """``$XDG_STATE_HOME/particle-sim/spool/<worker_id>`` (``~/.local/state`` without it)."""
    state = os.environ.get("XDG_STATE_HOME")
    return (Path(state) if state else Path.home() / ".local/state") / "particle-sim/spool" / \
        worker_id


def default_slots() -> int:
    """One slot per CPU this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class AgentConfig:
    """Everything one agent process needs, already checked."""

    connection: ConnectionSettings
    worker_id: str
    slots: int
    http_port: int
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    grace_s: float = DEFAULT_GRACE_S
    spool: Path | None = None
    """The spool folder (None: :func:`default_spool`; see :attr:`spool_dir`)."""
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES

    @property
    def spool_dir(self) -> Path:
        return self.spool or default_spool(self.worker_id)

    @property
    def topics(self) -> Topics:
        return self.connection.topics

    @property
    def client_id(self) -> str:
        """The agent's MQTT client id: stable per worker id, so its session survives reconnects."""
        return f"{self.connection.topic_prefix.replace('/', '_')}-worker-{self.worker_id}"

    def describe(self) -> dict[str, Any]:
        """The settings as plain JSON-ready values (no secrets: only the password's file)."""
        c = self.connection
        return {
            "broker": str(c.broker), "worker_id": self.worker_id, "slots": self.slots,
            "http_port": self.http_port, "topic_prefix": c.topic_prefix,
            "username": c.username,
            **{k: str(v) if v else None for k, v in (
                ("password_file", c.password_file), ("tls_ca", c.tls_ca),
                ("tls_cert", c.tls_cert), ("tls_key", c.tls_key))},
            "heartbeat": self.heartbeat_s, "grace": self.grace_s, "keepalive": c.keepalive_s,
            "client_id": self.client_id, "spool": str(self.spool_dir),
            "spool_max_bytes": self.spool_max_bytes,
        }

    @classmethod
    def build(
        cls,
        *,
        broker: str = DEFAULT_BROKER,
        worker_id: str | None = None,
        slots: int | None = None,
        http_port: int = DEFAULT_HTTP_PORT,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        username: str | None = None,
        password_file: str | Path | None = None,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        heartbeat: float = DEFAULT_HEARTBEAT_S,
        grace: float = DEFAULT_GRACE_S,
        keepalive: int = DEFAULT_KEEPALIVE_S,
        spool: str | Path | None = None,
        spool_max_bytes: int | str = DEFAULT_SPOOL_MAX_BYTES,
    ) -> AgentConfig:
        """Check every value and build the config; raises ConfigError naming the bad one."""
        try:
            address = BrokerAddress.parse(broker)
            Topics(topic_prefix)
            wid = check_id(worker_id or default_worker_id(), "worker id")
        except ValueError as e:
            raise ConfigError(str(e)) from e
        try:
            max_bytes = parse_size(spool_max_bytes)
        except ValueError as e:
            raise ConfigError(f"--spool-max-bytes: {e}") from e
        if max_bytes < 1:
            raise ConfigError(f"--spool-max-bytes: must be at least 1 byte, got "
                              f"{spool_max_bytes!r}")
        n_slots = default_slots() if slots is None else slots
        checks = [
            (n_slots >= 1, f"--slots must be at least 1, got {n_slots}"),
            (0 <= http_port <= 65535, f"--http-port must be in 0..65535, got {http_port}"),
            (heartbeat >= MIN_HEARTBEAT_S,
             f"--heartbeat must be at least {MIN_HEARTBEAT_S} s, got {heartbeat}"),
            (grace >= 0, f"--grace must not be negative, got {grace}"),
            (keepalive >= 1, f"--keepalive must be an integer >= 1, got {keepalive}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        paths = {"password_file": password_file, "tls_ca": tls_ca, "tls_cert": tls_cert,
                 "tls_key": tls_key}
        for name, path in paths.items():
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"--{name.replace('_', '-')}: no such file: {path}")
        connection = ConnectionSettings(
            broker=address,
            topic_prefix=topic_prefix,
            username=username,
            password_file=Path(password_file) if password_file else None,
            tls_ca=Path(tls_ca) if tls_ca else None,
            tls_cert=Path(tls_cert) if tls_cert else None,
            tls_key=Path(tls_key) if tls_key else None,
            keepalive_s=keepalive,
        )
        try:
            connection.read_password()
        except ValueError as e:
            raise ConfigError(str(e)) from e
        if spool is not None and Path(spool).exists() and not Path(spool).is_dir():
            raise ConfigError(f"--spool: {spool} is not a folder")
        return cls(connection, wid, n_slots, http_port, heartbeat, grace,
                   Path(spool) if spool else None, max_bytes)




def check_broker(address: str, label: str) -> None:
    """ConfigError ``LABELADDRESS: what is wrong`` for a bad broker address."""
    try:
        BrokerAddress.parse(address)
    except ValueError as e:
        raise ConfigError(f"{label}{address}: {e}") from e


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings of a YAML config file, keys normalised to ``CONFIG_KEYS``; invalid YAML
    is reported as ``FILE:LINE: invalid YAML: PROBLEM``."""
    try:
        return read_settings_file(path, CONFIG_KEYS, PATH_KEYS)
    except ValueError as e:
        raise ConfigError(str(e)) from e
