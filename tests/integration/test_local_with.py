"""``simctl local up --with PATH``: a plugin kind installed, then run through the local cluster.

simctl runs as a subprocess from the repository root (so ``--with examples/fput-chain`` is the
relative path a user types), with its own ``SIMCTL_LOCAL_DIR``, ledger and topic prefix; the
local broker takes a free port. The plugin (``examples/fput-chain``, kind ``chain``) is
installed into this test's own Python environment, which is what ``--with`` is for: simctl
and the local agents run from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PLUGIN = "examples/fput-chain"
KINDS_SCRIPT = "import json, simkind; print(json.dumps(simkind.discover().names()))"

pytestmark = pytest.mark.slow


class LocalSimctl:
    """``python -m simctl`` from the repository root with one local dir, ledger and prefix."""

    def __init__(self, tmp_path: Path, prefix: str) -> None:
        self.local_dir = tmp_path / "local"
        self.base = ["--store", str(tmp_path / "ledger.sqlite"), "--topic-prefix", prefix]
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("SIMCTL_", "WORKER_", "XDG_"))}
        self.env.update(SIMCTL_LOCAL_DIR=str(self.local_dir),
                        XDG_CONFIG_HOME=str(tmp_path / "config"))

    def __call__(self, *args: str, code: int = 0,
                 timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "simctl", *self.base, *args], cwd=REPO,
                                env=self.env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == code, (
            f"simctl {' '.join(args)} exited {result.returncode}, expected {code}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr[-4000:]}")
        return result

    def json(self, *args: str, code: int = 0, timeout: float = 300) -> Any:
        return json.loads(self(*args, "--json", code=code, timeout=timeout).stdout)


@pytest.fixture
def sim(tmp_path: Path, topic_prefix: str) -> Iterator[LocalSimctl]:
    instance = LocalSimctl(tmp_path, topic_prefix)
    try:
        yield instance
    finally:
        instance("local", "down", "--timeout", "10")


def installed_kinds() -> list[str]:
    """The kinds a fresh process of this environment finds (as simctl and the agents do)."""
    out = subprocess.run([sys.executable, "-c", KINDS_SCRIPT], capture_output=True, text=True,
                         check=True).stdout
    return list(json.loads(out))


def test_local_up_with_a_plugin_runs_its_kind(sim: LocalSimctl, tmp_path: Path) -> None:
    up = sim("local", "up", "--with", PLUGIN, "--workers", "2", "--heartbeat", "0.2",
             "--grace", "1")
    assert f"particle-sim-fput-chain 1.0.0 from {PLUGIN}" in up.stderr, up.stderr
    assert "chain" in installed_kinds()
    assert sim.json("local", "status")["up"] is True

    # Installed unchanged: skipped, and said so.
    again = sim("local", "up", "--with", PLUGIN, "--workers", "2", "--heartbeat", "0.2")
    assert f"particle-sim-fput-chain 1.0.0 from {PLUGIN} is already installed" in again.stderr

    taskfile = tmp_path / "chain.yaml"
    taskfile.write_text(yaml.safe_dump({
        "name": "local-chain", "seed": 3, "tasks": [
            {"kind": "chain", "params": {"n_particles": 16, "steps": 200, "sample_every": 20,
                                         "modes_recorded": 2},
             "sweep": {"beta": [0.0, 1.0]}, "replicas": 2},
        ]}, sort_keys=False))
    summary = sim.json("run", str(taskfile), "--quiet", "--timeout", "120")
    assert (summary["tasks"], summary["done"], summary["failed"]) == (4, 4, 0), summary
    rows = json.loads(sim("results", summary["run_id"], "--format", "json").stdout)["tasks"]
    assert len(rows) == 4 and all(r["kind"] == "chain" and r["state"] == "done"
                                  and r["summary"] for r in rows), rows


def test_local_up_with_a_bad_plugin_names_it(sim: LocalSimctl, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-plugin"
    result = sim("local", "up", "--with", str(missing), code=2)
    assert str(missing) in result.stderr
    assert not (sim.local_dir / "state.json").exists(), "something started before the error"

    broken = tmp_path / "broken-plugin"
    broken.mkdir()
    (broken / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "broken-plugin"\nversion = "0.1"\n')
    (broken / "setup.py").write_text("raise SystemExit('this plugin does not build')\n")
    result = sim("local", "up", "--with", str(broken), code=1)
    assert f"installing the plugin {broken} failed" in result.stderr, result.stderr
    assert not (sim.local_dir / "state.json").exists(), "something started before the error"
