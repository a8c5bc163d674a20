"""Where simctl's settings come from, as a user sees it: a connection error names the source
of the broker address, and the ledger's default place follows the local cluster.

Real ``python -m simctl`` subprocesses; the broker addresses are free ports on 127.0.0.1
where nothing listens (connections are refused at once), or a local cluster's state file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from simctl.local_broker import free_port


def simctl(tmp_path: Path, *args: str, code: int | None = None,
           **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m simctl ARGS`` without the developer's SIMCTL_*/XDG_* settings, every XDG
    folder and the local cluster's inside ``tmp_path``, plus ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SIMCTL_", "XDG_"))}
    full.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"),
                XDG_STATE_HOME=str(tmp_path / "state"),
                SIMCTL_LOCAL_DIR=str(tmp_path / "local"))
    full.update(env)
    done = subprocess.run([sys.executable, "-m", "simctl", *args], env=full, text=True,
                          capture_output=True, timeout=60)
    if code is not None:
        assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    return done


def test_connection_errors_say_where_the_address_came_from(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    reach = f"simctl: error: cannot reach the broker at mqtt://{address}:"

    err = simctl(tmp_path, "--broker", address, "ping", code=4).stderr
    assert err.startswith(reach) and err.strip().endswith("(the address is from --broker)")
    err = simctl(tmp_path, "ping", code=4, SIMCTL_BROKER=address).stderr
    assert err.startswith(reach) and err.strip().endswith("(the address is from SIMCTL_BROKER)")
    config = tmp_path / "config" / "simctl" / "config.yaml"  # the default config file
    config.parent.mkdir(parents=True)
    config.write_text(f"broker: {address}\n")
    err = simctl(tmp_path, "ping", code=4).stderr
    assert err.startswith(reach)
    assert err.strip().endswith(f"(the address is from config file {config})")
    config.unlink()

    # The state file `simctl local up` leaves (here: of a cluster whose broker is gone).
    local = tmp_path / "local"
    local.mkdir()
    (local / "state.json").write_text(json.dumps({"broker": address, "topic_prefix": "p"}))
    err = simctl(tmp_path, "ping", code=4).stderr
    assert err.startswith(reach)
    assert err.strip().endswith(f"(the address is from the local cluster's {local}/state.json)")


# ------------------------------------------------------------------------ where the ledger is


def ledger_of(tmp_path: Path, *args: str, **env: str) -> str:
    """The ledger simctl uses, as ``simctl status`` names it (it has no runs)."""
    out = simctl(tmp_path, *args, "status", **env).stdout
    match = re.search(r"no runs in (\S+)", out)
    assert match, out
    return match[1]


def test_the_local_clusters_ledger_lives_in_its_folder_unless_told(tmp_path: Path) -> None:
    """Precedence: flag > environment > config file > the local cluster's folder (no broker
    given) > the XDG default (a broker given)."""
    local = tmp_path / "local"
    assert ledger_of(tmp_path) == str(local / "ledger.sqlite")
    other_local = tmp_path / "elsewhere"
    assert ledger_of(tmp_path, SIMCTL_LOCAL_DIR=str(other_local)) == str(
        other_local / "ledger.sqlite")
    dead = f"127.0.0.1:{free_port()}"
    assert ledger_of(tmp_path, "--broker", dead) == str(
        tmp_path / "data" / "simctl" / "ledger.sqlite")

    config = tmp_path / "config" / "simctl" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("store: from-file.sqlite\n")
    assert ledger_of(tmp_path) == str(config.parent / "from-file.sqlite")
    assert ledger_of(tmp_path, SIMCTL_STORE=str(tmp_path / "env.sqlite")) == str(
        tmp_path / "env.sqlite")
    assert ledger_of(tmp_path, "--store", str(tmp_path / "flag.sqlite"),
                     SIMCTL_STORE=str(tmp_path / "env.sqlite")) == str(tmp_path / "flag.sqlite")
