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
