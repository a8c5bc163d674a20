"""How simctl and worker-agent report bad configuration: one error style, the source of a
setting named, the ledger's default place, one version format.

Messages are checked on the real programs (``python -m simctl`` / ``python -m worker_agent``
subprocesses, so the output is exactly what a user sees); the pure CLI parsing of a
misplaced global option goes through click's CliRunner.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from simctl.cli import cli
from simproto.protocol import PROTOCOL_VERSION, package_version

GOOD_TASKFILE = "name: g\ntasks:\n  - kind: sleep\n"


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without the developer's SIMCTL_*/WORKER_*/XDG_* settings,
    every XDG folder and the local cluster's inside ``tmp_path``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SIMCTL_", "WORKER_", "XDG_"))}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_STATE_HOME=str(tmp_path / "state"),
               SIMCTL_LOCAL_DIR=str(tmp_path / "local"))
    env.update(extra)
    return env


def run(module: str, *args: str, env: dict[str, str],
        code: int | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", module, *args], env=env, text=True,
                          capture_output=True, timeout=60)
    if code is not None:
        assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    return done


def simctl(tmp_path: Path, *args: str, code: int | None = None,
           **env: str) -> subprocess.CompletedProcess[str]:
    return run("simctl", *args, env=clean_env(tmp_path, **env), code=code)


def agent(tmp_path: Path, *args: str, code: int | None = None,
          **env: str) -> subprocess.CompletedProcess[str]:
    return run("worker_agent", *args, env=clean_env(tmp_path, **env), code=code)


# ------------------------------------------------------------ a global option after the command


@pytest.mark.parametrize(("args", "message"), [
    (["validate", "f.yaml", "--store", "x"],
     "--store is a global option: put it before the command: simctl --store x validate f.yaml"),
    (["--log-level", "info", "validate", "--store=x", "f.yaml"],
     "--store is a global option: put it before the command: "
     "simctl --log-level info --store=x validate f.yaml"),
    (["local", "up", "--broker", "h:1", "--workers", "2"],
     "--broker is a global option: put it before the command: "
     "simctl --broker h:1 local up --workers 2"),
])
def test_a_global_option_after_the_command_is_named_as_such(
        tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, args, env=clean_env(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == f"simctl: error: {message}"
    assert "Did you mean" not in result.stderr


def test_an_unknown_option_that_is_not_global_keeps_clicks_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", "--stor", "x"], env=clean_env(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.startswith("simctl: error: No such option '--stor'.")
    assert "global option" not in result.stderr


# ------------------------------------------------------------------------------ one error style


def test_usage_and_own_errors_look_the_same(tmp_path: Path) -> None:
    usage = simctl(tmp_path, "fly", code=2).stderr
    assert usage.splitlines()[0] == "simctl: error: No such command 'fly'."
    assert "Usage: simctl [OPTIONS] COMMAND [ARGS]..." in usage
    assert "Try 'simctl --help' for help." in usage  # the same hint in both programs
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  - kind: warp\n")
    own = simctl(tmp_path, "validate", str(bad), code=2).stderr
    assert own.startswith(f"simctl: error: {bad}:2: tasks[0].kind: unknown kind 'warp'")
    for text in (usage, own):
        assert not re.search(r"^Error:", text, re.MULTILINE), text

    agent_usage = agent(tmp_path, "--slots", "many", code=2).stderr
    assert agent_usage.splitlines()[0] == (
        "worker-agent: error: Invalid value for '--slots': 'many' is not a valid integer.")
    assert "Try 'worker-agent --help' for help." in agent_usage
    agent_own = agent(tmp_path, "--heartbeat", "0.1", "--print-config", code=2).stderr
    assert agent_own.strip() == "worker-agent: error: --heartbeat must be at least 0.2 s, got 0.1"


def test_both_programs_print_one_version_format(tmp_path: Path) -> None:
    version = package_version()
    tail = f"{version} (particle-sim {version}, protocol {PROTOCOL_VERSION}, " \
           f"Python {platform.python_version()})"
    assert simctl(tmp_path, "--version", code=0).stdout == f"simctl {tail}\n"
    assert agent(tmp_path, "--version", code=0).stdout == f"worker-agent {tail}\n"


# ------------------------------------------------------------------------ bad YAML, bad ports


def test_bad_yaml_in_a_config_file_names_the_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("topic_prefix: lab\nusername: me\nbroker: a: b\n")
    expected = f"{config}:3: invalid YAML: mapping values are not allowed here (column 10)"
    for err in (
        simctl(tmp_path, "--config", str(config), "status", code=2).stderr,
        simctl(tmp_path, "status", code=2, SIMCTL_CONFIG=str(config)).stderr,
    ):
        assert err.strip() == f"simctl: error: {expected}"
    err = agent(tmp_path, "--config", str(config), "--print-config", code=2).stderr
    assert err.strip() == f"worker-agent: error: {expected}"


@pytest.mark.parametrize("address", ["mqtt://127.0.0.1:abc", "127.0.0.1:abc", "mqtt://h:0",
                                     "h:70000", "h:"])
def test_a_bad_broker_port_says_what_a_port_is_and_where_it_was_given(
        tmp_path: Path, address: str) -> None:
    must = "the port must be a number from 1 to 65535"
    err = simctl(tmp_path, "--broker", address, "status", code=2).stderr
    assert err.strip() == f"simctl: error: --broker {address}: {must}"
    err = simctl(tmp_path, "status", code=2, SIMCTL_BROKER=address).stderr
    assert err.strip() == f"simctl: error: SIMCTL_BROKER={address}: {must}"
    config = tmp_path / "simctl.yaml"
    config.write_text(f"broker: '{address}'\n")
    err = simctl(tmp_path, "--config", str(config), "status", code=2).stderr
    assert err.strip() == f"simctl: error: {config}: broker: {address}: {must}"

    err = agent(tmp_path, "--broker", address, "--print-config", code=2).stderr
    assert err.strip() == f"worker-agent: error: --broker {address}: {must}"
    err = agent(tmp_path, "--print-config", code=2, SIMCTL_BROKER=address).stderr
    assert err.strip() == f"worker-agent: error: SIMCTL_BROKER={address}: {must}"
    err = agent(tmp_path, "--config", str(config), "--print-config", code=2).stderr
    assert err.strip() == f"worker-agent: error: {config}: broker: {address}: {must}"


def test_a_good_broker_address_still_parses(tmp_path: Path) -> None:
    out = agent(tmp_path, "--broker", "mqtts://broker.example:8883", "--print-config", code=0)
    assert json.loads(out.stdout)["broker"] == "mqtts://broker.example:8883"
