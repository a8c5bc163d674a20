"""Global settings of simctl: where they come from and where files live.

Precedence, highest first: command-line flag > ``SIMCTL_*`` environment variable > the
YAML config file (``--config``, else ``$SIMCTL_CONFIG``, else
``$XDG_CONFIG_HOME/simctl/config.yaml``, i.e. ``~/.config/simctl/config.yaml``) > default.
The flags and the environment are read by click; this module adds the file and the
defaults, and turns the result into :class:`Settings`, which remembers where the broker
address came from so that connection errors can say so.

Without a broker (flag, environment or file), simctl talks to the local cluster of
``simctl local up`` (``$SIMCTL_LOCAL_DIR``), and the ledger's default is then that
cluster's folder (``ledger.sqlite`` in it) rather than ``$XDG_DATA_HOME/simctl``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simctl.errors import ConfigError, NoBrokerConfigured
from simproto.protocol import DEFAULT_TOPIC_PREFIX, Topics

if TYPE_CHECKING:
    from simproto.connection import ConnectionSettings

CONFIG_KEYS = (
    "broker",
    "topic_prefix",
    "username",
    "password_file",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "store",
    "log_level",
)
"""Keys a config file may set; each is also a global flag (``--topic-prefix``, ...)."""

PATH_KEYS = frozenset({"password_file", "tls_ca", "tls_cert", "tls_key", "store"})
"""Config keys holding paths; relative ones are resolved against the config file's folder."""


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_config_path() -> Path:
    """``$SIMCTL_CONFIG`` or ``$XDG_CONFIG_HOME/simctl/config.yaml``."""
    explicit = os.environ.get("SIMCTL_CONFIG")
    return Path(explicit) if explicit else _xdg("XDG_CONFIG_HOME", ".config") / "simctl/config.yaml"


def default_store() -> Path:
    """The ledger when none is configured: ``$XDG_DATA_HOME/simctl/ledger.sqlite``."""
    return _xdg("XDG_DATA_HOME", ".local/share") / "simctl/ledger.sqlite"


def default_local_dir() -> Path:
    """State folder of ``simctl local``: ``$SIMCTL_LOCAL_DIR`` or XDG state/simctl/local."""
    explicit = os.environ.get("SIMCTL_LOCAL_DIR")
    return Path(explicit) if explicit else _xdg("XDG_STATE_HOME", ".local/state") / "simctl/local"


LOCAL_LEDGER_NAME = "ledger.sqlite"
"""The ledger's file name in the local cluster's folder (the default without a broker)."""



def check_broker(address: str, label: str) -> None:
    """Raise ConfigError starting with ``label`` (``"--broker "``, ``"SIMCTL_BROKER="``,
    ``"FILE: broker: "``) and the address when it is not a broker address."""
    from simproto.connection import BrokerAddress

    try:
        BrokerAddress.parse(address)
    except ValueError as e:
        raise ConfigError(f"{label}{address}: {e}") from e


def load_config_file(path: Path, required: bool) -> dict[str, Any]:
    """Read a config file; a missing file is an error only when it was named explicitly."""
    if not path.exists():
        if required:
            raise ConfigError(f"config file {path} does not exist")
        return {}
    from simproto.settings_file import read_settings_file  # yaml only when a file exists

    try:
        values = read_settings_file(path, CONFIG_KEYS, PATH_KEYS)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return {key: str(value) for key, value in values.items()}


@dataclass(frozen=True)
class Settings:
    """The resolved global options of one simctl invocation."""

    broker: str | None
    topic_prefix: str | None
    username: str | None
    password_file: Path | None
    tls_ca: Path | None
    tls_cert: Path | None
    tls_key: Path | None
    store: Path
    log_level: str
    local_dir: Path
    broker_origin: str | None = None
    """Where ``broker`` came from: ``--broker``, ``SIMCTL_BROKER`` or the config file's path."""

    @classmethod
    def resolve(
        cls,
        given: dict[str, Any],
        config_file: Path | None,
        origins: Mapping[str, str] | None = None,
    ) -> Settings:
        """Fill options not given by flag or environment from the config file, then defaults.

        ``origins`` names, per key in ``given``, where its value came from (``--broker``,
        ``SIMCTL_BROKER``); it is ``--FLAG`` when not said.
        """
        path = config_file or default_config_path()
        from_file = load_config_file(path, required=config_file is not None)
        merged = {
            k: given.get(k) if given.get(k) is not None else from_file.get(k) for k in CONFIG_KEYS
        }
        broker_origin = None
        if given.get("broker") is not None:
            broker_origin = (origins or {}).get("broker", "--broker")
        elif merged["broker"] is not None:
            broker_origin = str(path)
        if merged["topic_prefix"] is not None:
            try:
                Topics(merged["topic_prefix"])
            except ValueError as e:
                raise ConfigError(str(e)) from e
        if merged["broker"] is not None:
            labels = {"--broker": "--broker ", "SIMCTL_BROKER": "SIMCTL_BROKER="}
            check_broker(merged["broker"], labels.get(str(broker_origin), f"{path}: broker: "))
        local_dir = default_local_dir()
        if merged["store"]:
            store = Path(str(merged["store"])).expanduser()
        elif merged["broker"] is None:
            store = local_dir / LOCAL_LEDGER_NAME  # the local cluster's runs stay with it
        else:
            store = default_store()

        def as_path(key: str) -> Path | None:
            return Path(str(merged[key])).expanduser() if merged[key] else None

        return cls(
            broker=merged["broker"],
            topic_prefix=merged["topic_prefix"],
            username=merged["username"],
            password_file=as_path("password_file"),
            tls_ca=as_path("tls_ca"),
            tls_cert=as_path("tls_cert"),
            tls_key=as_path("tls_key"),
            store=store,
            log_level=(merged["log_level"] or "warning").upper(),
            local_dir=local_dir,
            broker_origin=broker_origin,
        )

    def broker_source(self) -> str:
        """Where the broker address in use comes from, for messages: ``from --broker``,
        ``from SIMCTL_BROKER``, ``from config file F``, or the local cluster's state file."""
        if self.broker is None:
            return f"from the local cluster's {self.local_dir / 'state.json'}"
        origin = self.broker_origin or "--broker"
        if origin.startswith(("--", "SIMCTL_")):
            return f"from {origin}"
        return f"from config file {origin}"

    def local_state(self) -> dict[str, Any] | None:
        """The state file of a local cluster started by ``simctl local up``, if any."""
        try:
            return json.loads((self.local_dir / "state.json").read_text())
        except (OSError, ValueError):
            return None

    @property
    def prefix(self) -> str:
        """The topic prefix: configured, else the local cluster's, else the default."""
        if self.topic_prefix:
            return self.topic_prefix
        if self.broker is None:
            state = self.local_state()
            if state and state.get("topic_prefix"):
                return str(state["topic_prefix"])
        return DEFAULT_TOPIC_PREFIX

    def connection(self) -> ConnectionSettings:
        """How to reach the broker; without ``--broker``, the local one (``simctl local up``)."""
        from simproto.connection import BrokerAddress, ConnectionSettings

        address, username, password_file = self.broker, self.username, self.password_file
        if address is None:
            state = self.local_state()
            if not state or "broker" not in state:
                raise NoBrokerConfigured(
                    "no broker configured and no local broker running: start one with "
                    "`simctl local up`, or give --broker HOST:PORT (or SIMCTL_BROKER)"
                )
            address = str(state["broker"])
            if username is None and state.get("username"):
                # The local cluster's generated credentials (simctl.local), unless others
                # were given.
                username = str(state["username"])
                password_file = Path(state["password_file"])
        return ConnectionSettings(
            broker=BrokerAddress.parse(address),
            topic_prefix=self.prefix,
            username=username,
            password_file=password_file,
            tls_ca=self.tls_ca,
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
        )

    def global_args(self) -> list[str]:
        """These settings as global flags, for a background simctl started by this one."""
        args = ["--store", str(self.store), "--log-level", self.log_level.lower()]
        if self.broker:
            args += ["--broker", self.broker]
        if self.topic_prefix:
            args += ["--topic-prefix", self.topic_prefix]
        for flag, value in (
            ("--username", self.username),
            ("--password-file", self.password_file),
            ("--tls-ca", self.tls_ca),
            ("--tls-cert", self.tls_cert),
            ("--tls-key", self.tls_key),
        ):
            if value:
                args += [flag, str(value)]
        return args
