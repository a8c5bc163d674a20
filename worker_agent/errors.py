"""The worker agent's exceptions: one root, one class per thing a caller can act on."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the worker agent raises on purpose."""

    exit_code = 1
    """The process exit code when this error ends ``worker-agent``."""


class ConfigError(AgentError):
    """A flag, environment variable or config file value is invalid; the message names it."""

    exit_code = 2


class WorkerIdInUse(AgentError):
    """Another live agent answered a ping under this worker id."""

    exit_code = 2


class BrokerRefused(AgentError):
    """The broker refused the connection for a reason retrying cannot cure (bad user name or
    password, not authorized, a client id or MQTT version it does not accept)."""

    exit_code = 3


class Superseded(AgentError):
    """A newer agent announced itself under this worker id (this one was frozen or cut off
    and was replaced): this one leaves it the id instead of fighting over the session."""

    exit_code = 4
