"""``simctl local``: a broker and N worker agents on this machine, in the background.

Everything lives in one state folder (``$SIMCTL_LOCAL_DIR``, default
``$XDG_STATE_HOME/simctl/local``, mode 0700): ``state.json`` (broker address, topic prefix,
pids, simctl's user name and password file), the generated ``mosquitto.conf``, the broker's
persistence, and one log per process. It is also where simctl keeps its ledger
(``ledger.sqlite``) when it talks to this cluster and no ``--store``/``SIMCTL_STORE``/config
``store`` says otherwise (``simctl.config``), so one ``SIMCTL_LOCAL_DIR`` isolates a whole
cluster, runs included; ``local down`` keeps the folder and so the runs.

The broker is never anonymous: ``credentials/`` holds a generated password per identity
(``simctl``, ``local-admin``, ``worker1``, ...; mode 0600), and ``dynamic-security.json``
(mode 0600) the broker's clients, client ids and roles, built from them by
``simctl.broker_security`` exactly as for the deployed broker (minus the health probe, plus
``local-admin``, which adds the identities of new workers while the broker runs).
simctl (``simctl.config``) and the local agents use these credentials; nobody types any.

Plugins (a lab's own kind, ``local up --with PATH``; ``local install``, which the playbook
runs on the main PC) are installed into the environment simctl runs from, which is also the
one the local agents run from (:func:`install_plugins`).
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
from simctl.errors import InputError, LocalClusterError
from simctl.local_broker import LocalBroker, dynsec_control, free_port, port_open
from simctl.sources import PINNED_REQUIREMENT, content_hash, folder_files

WORKER_READY_TIMEOUT_S = 30.0
"""How long ``local up`` waits for the started agents to report online."""

STOP_POLL_S = 0.05
"""How often ``local down`` checks whether a process has exited."""

PASSWORD_BYTES = 24
"""Random bytes of each generated password (32 URL-safe characters)."""

PLUGIN_RECORD = Path(sys.prefix) / "share" / "particle-sim" / "installed-plugins.json"
"""What :func:`install_plugins` installed into this environment: source -> content hash."""



@dataclass(frozen=True)
class PluginInstall:
    """What :func:`install_plugins` did with one source."""

    source: str
    name: str | None
    version: str | None
    installed: bool
    """False: that version, with the same content, was installed already."""

    def describe(self) -> str:
        what = " ".join(x for x in (self.name, self.version) if x) or "the package"
        if self.installed:
            return f"installed plugin {what} from {self.source} into {sys.prefix}"
        return f"plugin {what} from {self.source} is already installed in {sys.prefix}"


def install_plugins(sources: list[str], *, paths_only: bool = False) -> list[PluginInstall]:
    """Install plugin packages into this environment (``python -m pip install
    --no-build-isolation SOURCE``), skipping those installed already with the same version and
    content.

    A source is a source folder, a ``.whl`` file or (unless ``paths_only``) a pinned
    requirement ``name==version``. A folder's missing build requirements (its pyproject's
    [build-system] requires, e.g. Cython) are installed first, since the build is not
    isolated. Raises InputError for a source that is none of these, LocalClusterError
    naming the source when pip fails."""
    record = _read_record()
    done = []
    for source in sources:
        done.append(_install_one(source, record, paths_only))
        if done[-1].installed:
            _write_record(record)
    return done


def _install_one(source: str, record: dict[str, str], paths_only: bool) -> PluginInstall:
    path = Path(source).expanduser()
    if path.is_dir() or (path.is_file() and path.name.endswith(".whl")):
        path = path.resolve()
        name, version = _path_identity(path)
        fingerprint = _fingerprint(path)
        if (name and version and _installed_version(name) == version
                and record.get(str(path)) == fingerprint):
            return PluginInstall(source, name, version, installed=False)
        if path.is_dir():
            _install_build_requirements(path, source)
            _pip(source, "install", "--no-build-isolation", str(path))
        else:
            # Same version, new content: pip would keep the installed files without --force.
            _pip(source, "install", "--force-reinstall", "--no-deps", str(path))
            _pip(source, "install", str(path))
        record[str(path)] = fingerprint
        return PluginInstall(source, name, version, installed=True)
    pin = PINNED_REQUIREMENT.fullmatch(source.strip())
    if paths_only or pin is None:
        raise InputError(f"plugin {source!r}: no such folder or .whl file"
                         + ("" if paths_only else " (nor a pinned requirement name==version)"))
    name, version = pin["name"], pin["version"]
    if _installed_version(name) == version:
        return PluginInstall(source, name, version, installed=False)
    _pip(source, "install", "--no-build-isolation", source.strip())
    return PluginInstall(source, name, version, installed=True)


def _pip(source: str, *args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-25:])
        raise LocalClusterError(
            f"installing the plugin {source} failed (python -m pip {' '.join(args)}):\n{tail}")


def _install_build_requirements(folder: Path, source: str) -> None:
    """Install what the folder's build needs and this environment lacks (the build is not
    isolated, so it uses this environment's numpy, Cython and setuptools)."""
    requires = _pyproject(folder).get("build-system", {}).get("requires", [])
    missing = [r for r in requires if not _satisfied(r)]
    if missing:
        _pip(source, "install", *missing)


def _satisfied(requirement: str) -> bool:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip vendors it
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[assignment]
    req = Requirement(requirement)
    if req.marker is not None and not req.marker.evaluate():
        return True
    installed = _installed_version(req.name)
    return installed is not None and req.specifier.contains(installed, prereleases=True)


def _installed_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _pyproject(folder: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10: no build requirements or identity known
        return {}
    try:
        return tomllib.loads((folder / "pyproject.toml").read_text())
    except (OSError, ValueError):
        return {}


def _path_identity(path: Path) -> tuple[str | None, str | None]:
    """Distribution name and version of a wheel (its file name) or a source folder (its
    pyproject's static [project] name and version)."""
    if path.is_file():
        parts = path.name.split("-")
        return (parts[0], parts[1]) if len(parts) >= 5 else (None, None)
    project = _pyproject(path).get("project", {})
    version = project.get("version") if "version" not in project.get("dynamic", []) else None
    return project.get("name"), version


def _fingerprint(path: Path) -> str:
    """A hash of a wheel (its bytes) or of a source folder (its files, see
    :func:`simctl.sources.folder_files`)."""
    if path.is_file():
        return content_hash(path.parent, [Path(path.name)])
    return content_hash(path, folder_files(path))


def _read_record() -> dict[str, str]:
    try:
        data = json.loads(PLUGIN_RECORD.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_record(record: dict[str, str]) -> None:
    try:
        PLUGIN_RECORD.parent.mkdir(parents=True, exist_ok=True)
        tmp = PLUGIN_RECORD.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        tmp.replace(PLUGIN_RECORD)
    except OSError:
        pass  # a read-only prefix: the next install just does not skip


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
