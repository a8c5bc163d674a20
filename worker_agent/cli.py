"""``worker-agent``: the command line of the agent on each worker machine.

Each setting comes from, in order of precedence: its flag, its environment variable, the
YAML file given with ``--config``, the default (see ``docs/protocol.md``, "Worker agent").

Errors are printed as simctl prints them: ``worker-agent: error: MESSAGE`` (a usage error
adds the usage line and where help is); once the agent runs, its log lines carry the rest.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from simproto.connection import DEFAULT_KEEPALIVE_S
from simproto.console import ErrorStyle, version_option
from simproto.protocol import DEFAULT_TOPIC_PREFIX
from simproto.sizes import format_size
from worker_agent.config import (
    DEFAULT_BROKER,
    DEFAULT_GRACE_S,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_HTTP_PORT,
    DEFAULT_SPOOL_MAX_BYTES,
    LOG_LEVELS,
    AgentConfig,
    check_broker,
    read_config_file,
)
from worker_agent.errors import AgentError

PROG = "worker-agent"
"""The program name in messages."""


class AgentCommand(ErrorStyle):
    """The command: click's errors are printed like the agent's own."""

    prog = PROG


class _Formatter(logging.Formatter):
    """Log lines with a time stamp; the error that ends the program (logged with
    ``extra={"fatal": True}``) as ``worker-agent: error: MESSAGE``, like simctl's."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "fatal", False):
            return f"{PROG}: error: {record.getMessage()}"
        return super().format(record)


def _broker_label(ctx: click.Context) -> str:
    """How the broker address is named in an error: by its flag, variable or file."""
    source = ctx.get_parameter_source("broker")
    if source is click.core.ParameterSource.ENVIRONMENT:
        return "SIMCTL_BROKER="
    if source is click.core.ParameterSource.DEFAULT_MAP:
        return f"{ctx.meta.get('worker_agent.config_file')}: broker: "
    return "--broker "


class ConfigFileError(click.ClickException):
    """The ``--config`` file cannot be used; exits 2 like every invalid setting."""

    exit_code = 2


def _load_config_file(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """Eager: the file's settings become click's default map, below flags and environment."""
    if value is None:
        return
    ctx.meta["worker_agent.config_file"] = value
    try:
        ctx.default_map = read_config_file(value)
    except AgentError as e:
        raise ConfigFileError(str(e)) from e


@click.command(cls=AgentCommand,
               context_settings={"help_option_names": ["-h", "--help"],
                                 "max_content_width": 100})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), is_eager=True,
              expose_value=False, callback=_load_config_file,
              help="YAML file of settings (keys are the long flag names).")
@click.option("--broker", envvar="SIMCTL_BROKER", default=DEFAULT_BROKER, show_default=True,
              help="Broker address: HOST, HOST:PORT, mqtt://HOST:PORT or mqtts://HOST:PORT.")
@click.option("--worker-id", envvar="WORKER_ID", default=None,
              help="This agent's id (letters, digits, '_.-').  [default: host name]")
@click.option("--slots", envvar="WORKER_SLOTS", type=int, default=None,
              help="Tasks run at once, one child process each.  [default: CPU count]")
@click.option("--http-port", envvar="WORKER_HTTP_PORT", type=int, default=DEFAULT_HTTP_PORT,
              show_default=True, help="Port of GET /ping and /metrics; 0 = any free port.")
@click.option("--topic-prefix", envvar="SIMCTL_TOPIC_PREFIX", default=DEFAULT_TOPIC_PREFIX,
              show_default=True, help="Topic prefix of the cluster.")
@click.option("--username", envvar="SIMCTL_USERNAME", default=None, help="Broker user name.")
@click.option("--password-file", envvar="SIMCTL_PASSWORD_FILE", default=None,
              help="File whose first line is the broker password.")
@click.option("--tls-ca", envvar="SIMCTL_TLS_CA", default=None,
              help="CA certificate to verify the broker (turns TLS on).")
@click.option("--tls-cert", envvar="SIMCTL_TLS_CERT", default=None,
              help="Client certificate for TLS.")
@click.option("--tls-key", envvar="SIMCTL_TLS_KEY", default=None,
              help="Key of the client certificate.")
@click.option("--heartbeat", envvar="WORKER_HEARTBEAT", type=float,
              default=DEFAULT_HEARTBEAT_S, show_default=True,
              help="Seconds between heartbeats (at least 0.2).")
@click.option("--grace", envvar="WORKER_GRACE", type=float, default=DEFAULT_GRACE_S,
              show_default=True,
              help="Seconds running tasks get to finish after SIGTERM before being handed back.")
@click.option("--spool", envvar="WORKER_SPOOL", default=None,
              help="Folder of the artifacts until simctl has them, and of the inputs cache.  "
                   "[default: $XDG_STATE_HOME/particle-sim/spool/WORKER_ID]")
@click.option("--spool-max-bytes", envvar="WORKER_SPOOL_MAX_BYTES", type=str,
              default=str(DEFAULT_SPOOL_MAX_BYTES),
              show_default=format_size(DEFAULT_SPOOL_MAX_BYTES),
              help="Bound of the spool: bytes, or a size such as 500MB or 20GiB.")
@click.option("--keepalive", type=int, default=DEFAULT_KEEPALIVE_S, show_default=True,
              help="MQTT keepalive in whole seconds; the Last Will fires ~1.5x after silence.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
              default="info", show_default=True, help="Log verbosity (logs go to stderr).")
@click.option("--print-config", is_flag=True,
              help="Print the resolved settings as JSON and exit (nothing is started).")
@version_option(PROG)
@click.pass_context
def main(ctx: click.Context, log_level: str, print_config: bool, **settings: Any) -> None:
    """Run the worker agent: take tasks from the broker, run them, report results.

    Stop with SIGTERM or Ctrl-C: running tasks get --grace seconds, then are handed back;
    a second signal stops at once. Exit codes: 0 stopped cleanly, 1 unexpected error,
    2 invalid settings or worker id already in use by a live agent, 3 the broker refused the
    connection (credentials, authorization, protocol: retrying cannot help), 4 replaced by a
    newer agent with the same worker id (this one was frozen or cut off).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=log_level.upper(), handlers=[handler])
    try:
        check_broker(settings["broker"], _broker_label(ctx))
        config = AgentConfig.build(**settings)
        if print_config:
            click.echo(json.dumps({**config.describe(), "log_level": log_level.lower()},
                                  indent=2))
            return
        from worker_agent.agent import Agent  # loads the kernels: after the checks

        code = Agent(config).run()
    except AgentError as e:
        # A log record (so that it is in the log with the rest) shown as `worker-agent: error:`.
        logging.getLogger("worker_agent").error("%s", e, extra={"fatal": True})
        sys.exit(e.exit_code)
    sys.exit(code)
