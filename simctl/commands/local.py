"""``simctl local``: a broker and worker agents on this machine."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import click

from simctl.cli import SimctlGroup, pass_settings
from simctl.commands import exit_with, seconds_option
from simctl.config import Settings
from simctl.errors import InputError


@click.group(cls=SimctlGroup)
def local() -> None:
    """A broker and worker agents on this machine (the single-machine quick start).

    State, pid files and logs live in $SIMCTL_LOCAL_DIR (default
    ~/.local/state/simctl/local). `simctl run` uses this broker when none is configured.
    """


@local.command("up")
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=3,
    show_default=True,
    help="Number of worker agents (ids worker1..N).",
)
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    help="Slots per agent [default: CPUs // workers, at least 1].",
)
@click.option(
    "--port", type=click.IntRange(min=1, max=65535), help="Broker port [default: a free one]."
)
@seconds_option("--heartbeat", minimum=0.2, default=2.0, help="Heartbeat interval of the agents.")
@seconds_option(
    "--grace", default=10.0, help="How long running tasks may finish when the agents stop."
)
@click.option(
    "--with",
    "plugins",
    multiple=True,
    metavar="PATH",
    help="Install this plugin (a source folder or .whl file) first, into the environment "
    "simctl and the agents run from (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_settings
def local_up(
    settings: Settings,
    workers: int,
    slots: int | None,
    port: int | None,
    heartbeat: float,
    grace: float,
    plugins: tuple[str, ...],
    as_json: bool,
) -> None:
    """Start the local broker and N worker agents in the background.

    With --with PATH, the plugin is installed first (python -m pip install
    --no-build-isolation PATH, plus any build requirement the environment lacks), unless that
    version with the same files is installed already. Agents that are running already keep
    the kinds they started with: `simctl local down` first to have them load it.
    """
    from simctl.local import LocalCluster, install_plugins

    cluster = LocalCluster(settings.local_dir)
    if plugins:
        for done in install_plugins(list(plugins), paths_only=True):
            click.echo(done.describe(), err=True)
        running = [p.name for p in cluster.processes() if p.name != "broker" and p.running]
        if running:
            click.echo(f"note: {', '.join(running)} already running and keep the kinds they "
                       "started with; `simctl local down` first to have them load the plugins",
                       err=True)
    cluster.up(workers, slots, settings.topic_prefix or "sim", port, heartbeat, grace)
    _local_status(settings, as_json)
    if not as_json:
        click.echo("\nstop with: simctl local down", err=True)


@local.command("install")
@click.argument("packages", nargs=-1, required=True, metavar="PACKAGE...")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def local_install(packages: tuple[str, ...], as_json: bool) -> None:
    """Install plugin packages into the environment simctl runs from.

    PACKAGE: a source folder, a .whl file or a pinned requirement name==version. One that is
    installed already (same version, same files) is skipped, so a re-run changes nothing
    (the deploy playbook runs this on the main PC for particle_worker_extra_packages).
    """
    from simctl.display import emit_json
    from simctl.local import install_plugins

    done = install_plugins(list(packages))
    if as_json:
        emit_json({"changed": any(d.installed for d in done),
                   "packages": [{"source": d.source, "name": d.name, "version": d.version,
                                 "installed": d.installed} for d in done]})
    else:
        for d in done:
            click.echo(d.describe())


@local.command("down")
@seconds_option("--timeout", default=15.0, help="Wait this long after SIGTERM before SIGKILL.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_settings
def local_down(settings: Settings, timeout: float, as_json: bool) -> None:
    """Stop the local worker agents, then the local broker."""
    from simctl.display import emit_json, table
    from simctl.local import LocalCluster

    report = LocalCluster(settings.local_dir).down(timeout)
    if as_json:
        emit_json({"stopped": [{"name": n, "result": r} for n, r in report]})
    elif report:
        click.echo(table([list(r) for r in report], ["process", "result"]))
    else:
        click.echo(f"no local cluster in {settings.local_dir}")


def _local_status(settings: Settings, as_json: bool) -> bool:
    from simctl.display import emit_json, table
    from simctl.local import LocalCluster

    cluster = LocalCluster(settings.local_dir)
    state = cluster.state()
    procs = [
        {"name": p.name, "pid": p.pid, "running": p.running, "slots": p.slots, "log": p.log}
        for p in cluster.processes()
    ]
    up = cluster.is_up()
    if as_json:
        emit_json(
            {
                "dir": str(settings.local_dir),
                "up": up,
                "broker": state.get("broker"),
                "topic_prefix": state.get("topic_prefix"),
                "processes": procs,
            }
        )
    elif procs:
        click.echo(
            f"local cluster in {settings.local_dir}: broker {state.get('broker')}, "
            f"topic prefix {state.get('topic_prefix')}"
        )
        click.echo(
            table(
                [
                    [
                        p["name"],
                        p["pid"],
                        "running" if p["running"] else "dead",
                        p["slots"] or "-",
                        p["log"],
                    ]
                    for p in procs
                ],
                ["process", "pid", "state", "slots", "log"],
            )
        )
    else:
        click.echo(f"no local cluster in {settings.local_dir}; start one with `simctl local up`")
    return up


@local.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_settings
def local_status(settings: Settings, as_json: bool) -> None:
    """Show the local broker and agents (pid, running or dead, log file); exit 4 if down."""
    from simctl.errors import BrokerError

    if not _local_status(settings, as_json):
        exit_with(BrokerError.exit_code)


@local.command("logs")
@click.argument("name", required=False)
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(min=0),
    default=40,
    show_default=True,
    help="Lines from the end of each log.",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing what NAME's log grows by.")
@pass_settings
def local_logs(settings: Settings, name: str | None, lines: int, follow: bool) -> None:
    """Show the logs of the local broker and agents (NAME: broker, worker1, ...)."""
    from simctl.local import LocalCluster

    files = LocalCluster(settings.local_dir).log_files()
    if name is not None:
        if name not in files:
            raise InputError(f"no log named {name!r}; there are: {', '.join(files) or 'none'}")
        files = {name: files[name]}
    elif follow:
        raise InputError("--follow needs a NAME (broker, worker1, ...)")
    for n, path in files.items():
        if len(files) > 1:
            click.echo(f"==> {n} ({path}) <==")
        click.echo(
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:] if lines else [])
        )
    if follow:
        _follow_file(next(iter(files.values())), click.echo)


def _follow_file(path: Path, out: Callable[..., None]) -> None:
    with open(path, errors="replace") as f:
        f.seek(0, 2)
        try:
            while True:
                chunk = f.read()
                if chunk:
                    out(chunk, nl=False)
                else:
                    time.sleep(0.2)
        except KeyboardInterrupt:
            pass
