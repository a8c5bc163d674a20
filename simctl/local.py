"""``simctl local``: a broker and N worker agents on this machine, in the background.

Everything lives in one state folder (``$SIMCTL_LOCAL_DIR``, default
``$XDG_STATE_HOME/simctl/local``, mode 0700): ``state.json`` (broker address, topic prefix,
pids, simctl's user name and password file), the generated ``mosquitto.conf``, the broker's
persistence, and one log per process.

The broker is never anonymous: ``credentials/`` holds a generated password per identity
(``simctl``, ``local-admin``, ``worker1``, ...; mode 0600), and ``dynamic-security.json``
(mode 0600) the broker's clients, client ids and roles, built from them by
``simctl.broker_security`` exactly as for the deployed broker (minus the health probe, plus
``local-admin``, which adds the identities of new workers while the broker runs).
simctl (``simctl.config``) and the local agents use these credentials; nobody types any.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simctl.background import spawn_detached
from simctl.errors import LocalClusterError
from simctl.local_broker import LocalBroker, dynsec_control, free_port, port_open

WORKER_READY_TIMEOUT_S = 30.0
"""How long ``local up`` waits for the started agents to report online."""

STOP_POLL_S = 0.05
"""How often ``local down`` checks whether a process has exited."""

PASSWORD_BYTES = 24
"""Random bytes of each generated password (32 URL-safe characters)."""


def default_slots(workers: int) -> int:
    """Slots per local agent: the machine's CPUs shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def alive(pid: int | None, marker: str) -> bool:
    """Whether ``pid`` is a live (not zombie) process whose command line contains ``marker``."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and marker in cmdline


@dataclass
class Proc:
    """One background process of the local cluster."""

    name: str
    pid: int
    marker: str
    log: str
    slots: int | None = None

    @property
    def running(self) -> bool:
        return alive(self.pid, self.marker)


class LocalCluster:
    """The local broker and agents recorded in one state folder."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.state_path = self.dir / "state.json"
        self.credentials_dir = self.dir / "credentials"
        self.dynsec_path = self.dir / "dynamic-security.json"

    def password_file(self, name: str) -> Path:
        """The password file of identity ``name``, generated (mode 0600) if missing."""
        path = self.credentials_dir / f"{name}.password"
        if not path.exists():
            self.credentials_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(PASSWORD_BYTES) + "\n")
        return path

    def _passwords(self, names: list[str]) -> dict[str, str]:
        return {n: self.password_file(n).read_text().splitlines()[0] for n in names}

    def _write_dynsec(self, prefix: str, worker_ids: list[str]) -> None:
        """The broker's dynamic-security file for simctl, the administrator and the workers."""
        from simctl.broker_security import ADMIN_USER, dynsec_json, identities

        found = identities(prefix, worker_ids, deployed=False)
        text = dynsec_json(found, self._passwords(["simctl", ADMIN_USER, *worker_ids]))
        tmp = self.dynsec_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        tmp.replace(self.dynsec_path)

    def _add_workers(self, state: dict[str, Any], worker_ids: list[str]) -> None:
        """Give new workers their identities on the running broker (dynsec's control API; the
        plugin saves them to its file, and the file is rebuilt at every broker start)."""
        from simctl.broker_security import (
            ADMIN_CLIENT_ID,
            ADMIN_USER,
            control_commands,
            worker_identities,
        )

        found = [i for w in worker_ids
                 for i in worker_identities(state["topic_prefix"], w, registration=False)]
        admin = self._passwords([ADMIN_USER])[ADMIN_USER]
        try:
            dynsec_control("127.0.0.1", int(state["port"]), ADMIN_USER, admin, ADMIN_CLIENT_ID,
                           control_commands(found, self._passwords(worker_ids)))
        except (RuntimeError, OSError) as e:
            raise LocalClusterError(f"cannot add workers to the local broker: {e}") from e

    def state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_path)

    def processes(self) -> list[Proc]:
        state = self.state()
        procs = []
        if state.get("broker_pid"):
            procs.append(
                Proc("broker", state["broker_pid"], "mosquitto", str(self.dir / "mosquitto.log"))
            )
        for w in state.get("workers", []):
            procs.append(Proc(w["worker_id"], w["pid"], "worker_agent", w["log"], w.get("slots")))
        return procs

    def up(
        self,
        workers: int,
        slots: int | None,
        prefix: str,
        port: int | None,
        heartbeat: float,
        grace: float,
    ) -> dict[str, Any]:
        """Start what is not running yet: the broker, then agents worker1..N."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)  # credentials, the broker's user file and logs: the owner's only
        state = self.state()
        if (
            state
            and state.get("topic_prefix") != prefix
            and any(p.running for p in self.processes())
        ):
            raise LocalClusterError(
                f"a local cluster with topic prefix {state.get('topic_prefix')!r} is running; "
                "stop it first with `simctl local down`"
            )
        previous_port = state.get("port")
        wanted = [f"worker{i}" for i in range(1, workers + 1)]
        if not alive(state.get("broker_pid"), "mosquitto"):
            live = [p for p in state.get("workers", []) if alive(p["pid"], "worker_agent")]
            state = {"workers": live}
            # Keep the previous port (clients may have it configured) unless it is taken now.
            if not port and previous_port and not port_open("127.0.0.1", previous_port):
                port = previous_port
            port = port or free_port()
            known = sorted({*wanted, *(w["worker_id"] for w in live)}, key=_worker_order)
            broker = LocalBroker(self.dir, port, dynsec_file=self.dynsec_path)
            try:
                self._write_dynsec(prefix, known)
                broker.start()
            except (RuntimeError, FileNotFoundError, OSError) as e:
                raise LocalClusterError(f"cannot start the local broker: {e}") from e
            assert broker.process is not None
            state.update(port=port, broker=broker.address, broker_pid=broker.process.pid,
                         username="simctl", password_file=str(self.password_file("simctl")),
                         identities=known)
        elif "identities" not in state:
            raise LocalClusterError(
                "the running local broker was started without credentials by an older simctl: "
                "stop it with `simctl local down`, then `simctl local up` again"
            )
        else:
            new = [w for w in wanted if w not in state["identities"]]
            if new:
                self._add_workers(state, new)
                state["identities"] = sorted({*state["identities"], *new}, key=_worker_order)
        state["topic_prefix"] = prefix
        state["started_at"] = state.get("started_at") or time.time()
        per_worker = slots or default_slots(workers)
        running = {
            w["worker_id"]: w for w in state.get("workers", []) if alive(w["pid"], "worker_agent")
        }
        started = []
        for i in range(1, workers + 1):
            worker_id = f"worker{i}"
            if worker_id in running:
                continue
            log_path = self.dir / f"{worker_id}.log"
            cmd = [
                sys.executable,
                "-m",
                "worker_agent",
                "--broker",
                state["broker"],
                "--worker-id",
                worker_id,
                "--slots",
                str(per_worker),
                "--topic-prefix",
                prefix,
                "--username",
                worker_id,
                "--password-file",
                str(self.password_file(worker_id)),
                "--http-port",
                "0",
                "--heartbeat",
                f"{heartbeat:g}",
                "--grace",
                f"{grace:g}",
            ]
            proc = spawn_detached(cmd, log_path)
            running[worker_id] = {
                "worker_id": worker_id,
                "pid": proc.pid,
                "slots": per_worker,
                "log": str(log_path),
            }
            started.append((worker_id, proc))
        state["workers"] = sorted(running.values(), key=lambda w: _worker_order(w["worker_id"]))
        self._save(state)
        self._wait_online(state, prefix, started)
        return state

    def _wait_online(
        self, state: dict[str, Any], prefix: str, started: list[tuple[str, subprocess.Popen[bytes]]]
    ) -> None:
        if not started:
            return
        from simctl.mqtt import Observer
        from simproto.connection import BrokerAddress, ConnectionSettings

        settings = ConnectionSettings(BrokerAddress.parse(state["broker"]), topic_prefix=prefix,
                                      username=state["username"],
                                      password_file=Path(state["password_file"]))
        with Observer(settings) as obs:
            deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
            while True:
                statuses = obs.snapshot()[0]
                waiting = [
                    w for w, _ in started if w not in statuses or statuses[w].state != "online"
                ]
                if not waiting:
                    return
                for worker_id, proc in started:
                    if proc.poll() is not None:
                        tail = _tail(self.dir / f"{worker_id}.log", 20)
                        raise LocalClusterError(
                            f"worker agent {worker_id} exited with code {proc.returncode}:\n{tail}"
                        )
                if time.monotonic() > deadline:
                    raise LocalClusterError(
                        f"workers {', '.join(waiting)} did not come online within "
                        f"{WORKER_READY_TIMEOUT_S:g} s; see `simctl local logs`"
                    )
                time.sleep(0.05)

    def down(self, timeout: float) -> list[tuple[str, str]]:
        """Stop the agents (SIGTERM, SIGKILL after ``timeout``), then the broker."""
        procs = self.processes()
        report: list[tuple[str, str]] = []
        workers = [p for p in procs if p.name != "broker"]
        report += _stop(workers, timeout)
        report += _stop([p for p in procs if p.name == "broker"], timeout)
        if self.state_path.exists():
            state = self.state()
            self._save({"port": state.get("port"), "topic_prefix": state.get("topic_prefix")})
        return report

    def is_up(self) -> bool:
        state = self.state()
        return alive(state.get("broker_pid"), "mosquitto") and port_open(
            "127.0.0.1", int(state.get("port") or 0)
        )

    def log_files(self) -> dict[str, Path]:
        files = {"broker": self.dir / "mosquitto.log"}
        for path in sorted(self.dir.glob("worker*.log"), key=lambda p: _worker_order(p.stem)):
            files[path.stem] = path
        return {name: path for name, path in files.items() if path.exists()}


def _worker_order(worker_id: str) -> tuple[int, str]:
    digits = worker_id.removeprefix("worker")
    return (int(digits), "") if digits.isdigit() else (1 << 30, worker_id)


def _stop(procs: list[Proc], timeout: float) -> list[tuple[str, str]]:
    report = []
    live = [p for p in procs if p.running]
    for p in procs:
        if not p.running:
            report.append((p.name, "not running"))
    for p in live:
        os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(p.running for p in live) and time.monotonic() < deadline:
        time.sleep(STOP_POLL_S)
    for p in live:
        if p.running:
            os.kill(p.pid, signal.SIGKILL)
            report.append((p.name, f"killed (no exit within {timeout:g} s of SIGTERM)"))
        else:
            report.append((p.name, "stopped"))
    return report


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
