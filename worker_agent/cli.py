"""``worker-agent``: the command line of the agent on each worker machine.

Each setting comes from, in order of precedence: its flag, its environment variable, the
YAML file given with ``--config``, the default (see ``docs/protocol.md``, "Worker agent").
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from simproto.connection import DEFAULT_KEEPALIVE_S
from simproto.protocol import DEFAULT_TOPIC_PREFIX, package_version
from worker_agent.config import (
    DEFAULT_BROKER,
    DEFAULT_GRACE_S,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_HTTP_PORT,
    LOG_LEVELS,
    AgentConfig,
    read_config_file,
)
from worker_agent.errors import AgentError


def _load_config_file(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """Eager: the file's settings become click's default map, below flags and environment."""
    if value is None:
        return
    try:
        ctx.default_map = read_config_file(value)
    except AgentError as e:
        raise click.BadParameter(str(e), ctx=ctx, param_hint="'--config'") from e


@click.command(context_settings={"help_option_names": ["-h", "--help"],
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
@click.option("--keepalive", type=int, default=DEFAULT_KEEPALIVE_S, show_default=True,
              help="MQTT keepalive in whole seconds; the Last Will fires ~1.5x after silence.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
              default="info", show_default=True, help="Log verbosity (logs go to stderr).")
@click.option("--print-config", is_flag=True,
              help="Print the resolved settings as JSON and exit (nothing is started).")
@click.version_option(package_version(), "--version", prog_name="worker-agent")
def main(log_level: str, print_config: bool, **settings: Any) -> None:
    """Run the worker agent: take tasks from the broker, run them, report results.

    Stop with SIGTERM or Ctrl-C: running tasks get --grace seconds, then are handed back;
    a second signal stops at once. Exit codes: 0 stopped cleanly, 1 unexpected error,
    2 invalid settings or worker id already in use by a live agent, 3 the broker refused the
    connection (credentials, authorization, protocol: retrying cannot help), 4 replaced by a
    newer agent with the same worker id (this one was frozen or cut off).
    """
    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = AgentConfig.build(**settings)
        if print_config:
            click.echo(json.dumps({**config.describe(), "log_level": log_level.lower()},
                                  indent=2))
            return
        from worker_agent.agent import Agent  # loads the kernels: after the checks

        code = Agent(config).run()
    except AgentError as e:
        logging.getLogger("worker_agent").error("%s", e)
        sys.exit(e.exit_code)
    sys.exit(code)
