"""The ``simctl`` command line. Each command parses, calls one library function, prints.

Heavy modules (numpy, ckernel, paho, sqlite) are imported inside the commands so that
``simctl --help`` answers at once. Exit codes: see :mod:`simctl.errors`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from simctl.config import Settings
from simctl.errors import InputError, NoWorkers, SimctlError, TasksFailed

if TYPE_CHECKING:
    from simctl.ledger import Ledger, RunInfo

DEFAULT_TASKFILE = Path("configs/tasks.yaml")
"""The task file ``simctl run`` and ``simctl validate`` use when none is named."""

INTERRUPTED_EXIT_CODE = 130
"""Exit code after Ctrl-C (128 + SIGINT), as shells report it."""

pass_settings = click.make_pass_decorator(Settings)


class SimctlGroup(click.Group):
    """A click group that turns every SimctlError into its message and exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SimctlError as e:
            click.echo(f"simctl: error: {e}", err=True)
            ctx.exit(e.exit_code)


def _print_version(ctx: click.Context, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from simproto.protocol import PROTOCOL_VERSION, package_version

    click.echo(f"simctl {package_version()} (protocol {PROTOCOL_VERSION})")
    ctx.exit()


@click.group(cls=SimctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--broker",
    envvar="SIMCTL_BROKER",
    metavar="ADDR",
    help="Broker: HOST, HOST:PORT, mqtt://HOST:PORT or mqtts://HOST:PORT "
    "[default: the local broker of `simctl local up`].",
)
@click.option("--topic-prefix", envvar="SIMCTL_TOPIC_PREFIX", help="Topic prefix [default: sim].")
@click.option("--username", envvar="SIMCTL_USERNAME", help="Broker user name.")
@click.option(
    "--password-file",
    envvar="SIMCTL_PASSWORD_FILE",
    type=click.Path(path_type=Path),
    help="File whose first line is the broker password.",
)
@click.option(
    "--tls-ca",
    envvar="SIMCTL_TLS_CA",
    type=click.Path(path_type=Path),
    help="CA certificate; turns TLS on.",
)
@click.option(
    "--tls-cert",
    envvar="SIMCTL_TLS_CERT",
    type=click.Path(path_type=Path),
    help="Client certificate for TLS.",
)
@click.option(
    "--tls-key",
    envvar="SIMCTL_TLS_KEY",
    type=click.Path(path_type=Path),
    help="Client key for TLS.",
)
@click.option(
    "--store",
    envvar="SIMCTL_STORE",
    type=click.Path(path_type=Path),
    help="The run ledger (SQLite) [default: ~/.local/share/simctl/ledger.sqlite].",
)
@click.option(
    "--log-level",
    envvar="SIMCTL_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="Log level of messages on stderr [default: warning].",
)
@click.option(
    "--config",
    "config_file",
    envvar="SIMCTL_CONFIG",
    type=click.Path(path_type=Path),
    help="YAML config file [default: ~/.config/simctl/config.yaml].",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, _param, value: _print_version(ctx, value),
    help="Show the version (and the protocol version) and exit.",
)
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None, **given: Any) -> None:
    """Run particle-simulation sweeps on worker agents over MQTT.

    Global options go before the command: simctl --broker HOST:1883 run tasks.yaml.
    Each also comes from a SIMCTL_* environment variable or the config file; a flag beats
    the environment, which beats the file. Exit codes: 0 success, 1 tasks failed or were
    cancelled, 2 invalid input, 3 timeout, 4 broker unreachable or no worker answering.
    """
    settings = Settings.resolve(given, config_file)
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = settings


def _exit(code: int) -> NoReturn:
    raise click.exceptions.Exit(code)


def _open_ledger(settings: Settings) -> Ledger:
    from simctl.ledger import Ledger

    return Ledger(settings.store)


# ------------------------------------------------------------------------ validate


@cli.command()
@click.argument("taskfile", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def validate(taskfile: Path | None, as_json: bool) -> None:
    """Check a task file and count its tasks; nothing is stored or sent."""
    from simctl import taskfile as tf_mod
    from simctl.display import emit_json

    tf = tf_mod.load(taskfile or DEFAULT_TASKFILE)
    if as_json:
        emit_json(
            {
                "taskfile": str(tf.path),
                "valid": True,
                "name": tf.name,
                "tasks": len(tf.tasks),
                "kinds": tf.kinds(),
                "seed": tf.seed,
                "max_attempts": tf.max_attempts,
            }
        )
        return
    kinds = ", ".join(f"{k}: {n}" for k, n in tf.kinds().items())
    seed = tf.seed if tf.seed_given else f"{tf.seed} (random: the file sets none)"
    click.echo(f"{tf.path}: valid, {len(tf.tasks)} tasks ({kinds})")
    click.echo(f"name {tf.name}, seed {seed}, max_attempts {tf.max_attempts}")


# ----------------------------------------------------------------------------- run


@cli.command()
@click.argument("taskfile", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@click.option(
    "--detach", is_flag=True, help="Return once the run is stored; dispatch in the background."
)
@click.option("--resume", metavar="RUN_ID", help="Continue a run whose dispatcher died.")
@click.option(
    "--broker-changed",
    is_flag=True,
    help="With --resume: the run's broker was replaced; continue it on this one.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Give up following after this long (the run stays resumable); exit 3.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@pass_settings
def run(
    settings: Settings,
    taskfile: Path | None,
    as_json: bool,
    detach: bool,
    resume: str | None,
    broker_changed: bool,
    timeout: float | None,
    quiet: bool,
) -> None:
    """Submit a task file (default configs/tasks.yaml), dispatch it, and show its progress.

    If another simctl already dispatches for this ledger, the run is added and followed.
    """
    from simctl import runner
    from simctl import taskfile as tf_mod
    from simctl.display import ProgressBar

    if resume and taskfile:
        raise InputError("give either a task file or --resume RUN_ID, not both")
    if broker_changed and not resume:
        raise InputError("--broker-changed goes with --resume RUN_ID")
    conn = settings.connection()
    held = None
    if resume:
        ledger = _open_ledger(settings)
        runner.check_broker(ledger, ledger.run(resume), conn, changed=broker_changed)
        run_id = resume
    else:
        tf = tf_mod.load(taskfile or DEFAULT_TASKFILE)  # checked before the ledger is touched
        ledger = _open_ledger(settings)
        run_id, held = runner.submit(settings, conn, ledger, tf, dispatch_here=not detach)
        if not as_json:
            click.echo(
                f"run {run_id}: {len(tf.tasks)} tasks from {tf.path} (ledger {settings.store})",
                err=True,
            )
    if detach:
        runner.spawn_background_dispatcher(settings, run_id)
        info = ledger.run(run_id)
        if as_json:
            from simctl.display import emit_json

            emit_json({**_run_json(info, settings), "detached": True})
        else:
            click.echo(run_id)
            click.echo(
                f"dispatching in the background; follow with `simctl status {run_id}` "
                f"or `simctl run --resume {run_id}`",
                err=True,
            )
        return
    bar = ProgressBar(enabled=not quiet)
    try:
        info = runner.follow(
            settings, ledger, run_id, timeout=timeout, on_update=bar.update, held=held
        )
    except KeyboardInterrupt:
        bar.close()
        click.echo(
            f"\ninterrupted: run {run_id} is kept in the ledger; continue it with "
            f"`simctl run --resume {run_id}` or stop it with `simctl cancel {run_id}`",
            err=True,
        )
        _exit(INTERRUPTED_EXIT_CODE)
    finally:
        bar.close()
    _report_run(settings, ledger, info, as_json)


def _run_json(info: RunInfo, settings: Settings) -> dict[str, Any]:
    return {**info.to_json(), "store": str(settings.store)}


def _report_run(settings: Settings, ledger: Ledger, info: RunInfo, as_json: bool) -> None:
    from simctl.display import emit_json
    from simctl.results import run_summary

    if as_json:
        emit_json(_run_json(info, settings))
    else:
        click.echo(run_summary(ledger, info))
    if info.state != "done":
        _exit(TasksFailed.exit_code)


@cli.command("_serve", hidden=True)
@click.argument("run_id", required=False)
@pass_settings
def serve(settings: Settings, run_id: str | None) -> None:
    """Background dispatcher (started by run --detach and by a finishing foreground run)."""
    from simctl import runner

    if run_id is None:
        _exit(runner.serve_all(settings))
    runner.follow(
        settings, _open_ledger(settings), run_id, timeout=None, on_update=lambda _info: None
    )


# ---------------------------------------------------------------------------- ping


@cli.command()
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for answers.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_settings
def ping(settings: Settings, timeout: float, as_json: bool) -> None:
    """Ping every worker and show who answers, with the round-trip time."""
    from simctl.display import emit_json, table
    from simctl.mqtt import Observer

    with Observer(settings.connection()) as obs:
        pongs = obs.ping(timeout)
    workers = [
        {
            "worker_id": w,
            "rtt_ms": round(p.rtt_ms, 2),
            "state": p.pong.state,
            "slots": p.pong.slots,
            "free_slots": p.pong.free_slots,
            "version": p.pong.version,
        }
        for w, p in sorted(pongs.items())
    ]
    if as_json:
        emit_json({"workers": workers})
    elif workers:
        click.echo(
            table(
                [list(w.values()) for w in workers],
                ["worker", "rtt_ms", "state", "slots", "free", "version"],
            )
        )
    if not workers:
        raise NoWorkers(f"no worker answered within {timeout:g} s")


# -------------------------------------------------------------------------- status


def _workers_json(settings: Settings) -> list[dict[str, Any]]:
    from simctl.mqtt import Observer

    with Observer(settings.connection()) as obs:
        obs.sync(0.8)
        statuses, heard, _ = obs.snapshot()
    return [
        {
            "worker_id": s.worker_id,
            "state": s.state,
            "host": s.host,
            "version": s.version,
            "slots": s.slots,
            "busy_slots": max(0, s.slots - s.free_slots),
            "free_slots": s.free_slots,
            "running": list(s.running),
            "last_seen": heard.get(s.worker_id, s.ts),
            "status_at": s.ts,
            "http_port": s.http_port,
        }
        for s in sorted(statuses.values(), key=lambda s: s.worker_id)
    ]


def _workers_table(workers: list[dict[str, Any]]) -> str:
    from simctl.display import ago, table

    return table(
        [
            [
                w["worker_id"],
                w["state"],
                f"{w['busy_slots']}/{w['slots']}",
                len(w["running"]),
                w["host"],
                ago(w["last_seen"]),
            ]
            for w in workers
        ],
        ["worker", "state", "busy", "running", "host", "last seen"],
    )


def _runs_table(runs: list[RunInfo]) -> str:
    from simctl.display import duration, table, when

    return table(
        [
            [
                r.run_id,
                r.name,
                r.state,
                f"{r.done}/{r.total}",
                r.failed,
                r.running,
                when(r.created_at),
                duration(r.elapsed_s),
            ]
            for r in runs
        ],
        ["run", "name", "state", "done", "failed", "running", "started", "elapsed"],
    )


@cli.command()
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_settings
def status(settings: Settings, run_id: str | None, as_json: bool) -> None:
    """Workers and runs at a glance; with RUN_ID, one row per task of that run."""
    from simctl.display import emit_json, table

    ledger = _open_ledger(settings)
    if run_id is not None:
        info = ledger.run(run_id)
        tasks = ledger.task_states(run_id)
        if as_json:
            emit_json({"run": info.to_json(), "tasks": tasks})
            return
        click.echo(_runs_table([info]) + "\n")
        click.echo(
            table(
                [
                    [
                        t["task_id"],
                        t["kind"],
                        t["state"],
                        t["worker_id"] or "-",
                        t["attempts"],
                        t["error"] or "",
                    ]
                    for t in tasks
                ],
                ["task", "kind", "state", "worker", "attempts", "failure"],
            )
        )
        return
    runs = ledger.runs()
    broker_error: SimctlError | None = None
    try:
        workers = _workers_json(settings)
    except SimctlError as e:
        workers, broker_error = [], e
    rejected = ledger.rejections()
    if as_json:
        emit_json({"workers": workers, "runs": [r.to_json() for r in runs], "rejected": rejected})
    else:
        click.echo(_workers_table(workers) if workers else "no workers known")
        click.echo()
        click.echo(_runs_table(runs) if runs else f"no runs in {settings.store}")
        if rejected:
            counts = ", ".join(f"{reason} {r['count']}" for reason, r in rejected.items())
            click.echo(f"\nmessages refused by the dispatcher: {counts} (details: --json)")
    if broker_error is not None:
        raise broker_error


# ------------------------------------------------------------------------- monitor


@cli.command()
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Refresh interval.",
)
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="Stop after N refreshes.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per refresh, one per line.")
@pass_settings
def monitor(settings: Settings, interval: float, count: int | None, as_json: bool) -> None:
    """A live view of workers, active runs and throughput; Ctrl-C leaves."""
    from simctl.mqtt import Observer

    ledger = _open_ledger(settings)
    with Observer(settings.connection(), heartbeats=True, progress=True) as obs:
        obs.sync(1.0)
        view = _MonitorView(settings, ledger, obs, as_json)
        n = 0
        try:
            while True:
                view.refresh()
                n += 1
                if count is not None and n >= count:
                    break
                time.sleep(interval)
        except KeyboardInterrupt:
            pass


class _MonitorView:
    """One screen of ``simctl monitor``; throughput from the change since the last screen."""

    def __init__(self, settings: Settings, ledger: Ledger, obs: Any, as_json: bool) -> None:
        self.settings, self.ledger, self.obs, self.as_json = settings, ledger, obs, as_json
        self.last: tuple[float, dict[str, int]] | None = None
        self.tty = sys.stdout.isatty()

    def refresh(self) -> None:
        from simctl.display import ago, duration, emit_json, table

        statuses, heard, progress = self.obs.snapshot()
        now = time.time()
        ledger_runs = {r.run_id: r for r in self.ledger.runs(active_only=True)}
        runs: list[dict[str, Any]] = []
        for r in ledger_runs.values():
            runs.append(
                {
                    "run_id": r.run_id,
                    "name": r.name,
                    "total": r.total,
                    "done": r.done,
                    "failed": r.failed,
                    "running": r.running,
                    "pending": r.pending,
                    "elapsed_s": round(r.elapsed_s, 1),
                }
            )
        from simctl.dispatcher import PROGRESS_KEEPALIVE_S

        for p in progress.values():
            # Another ledger's run, known from its retained progress: active only while its
            # dispatcher keeps publishing it (a killed one leaves "active" behind).
            fresh = now - p.updated_at < 3 * PROGRESS_KEEPALIVE_S
            if p.run_id not in ledger_runs and p.state == "active" and fresh:
                runs.append(
                    {
                        "run_id": p.run_id,
                        "name": p.name,
                        "total": p.total,
                        "done": p.done,
                        "failed": p.failed,
                        "running": p.running,
                        "pending": p.pending,
                        "elapsed_s": None,
                    }
                )
        finished = {r["run_id"]: r["done"] + r["failed"] for r in runs}
        rate = None
        if self.last is not None:
            t0, before = self.last
            delta = sum(v - before.get(k, v) for k, v in finished.items())
            rate = delta / max(1e-9, now - t0)
        self.last = (now, finished)
        workers = [
            {
                "worker_id": s.worker_id,
                "state": s.state,
                "slots": s.slots,
                "busy_slots": max(0, s.slots - s.free_slots),
                "running": len(s.running),
                "last_seen": heard.get(s.worker_id, s.ts),
            }
            for s in sorted(statuses.values(), key=lambda s: s.worker_id)
        ]
        if self.as_json:
            emit_json(
                {
                    "time": now,
                    "workers": workers,
                    "runs": runs,
                    "throughput_per_s": None if rate is None else round(rate, 2),
                },
                lines=True,
            )
            return
        if self.tty:
            click.echo("\x1b[2J\x1b[H", nl=False)
        click.echo(
            f"simctl monitor  {time.strftime('%H:%M:%S')}  broker "
            f"{self.settings.connection().broker}  prefix {self.settings.prefix}"
        )
        click.echo(
            table(
                [
                    [
                        w["worker_id"],
                        w["state"],
                        f"{w['busy_slots']}/{w['slots']}",
                        ago(w["last_seen"]),
                    ]
                    for w in workers
                ],
                ["worker", "state", "busy", "last seen"],
            )
            if workers
            else "no workers known"
        )
        click.echo()
        click.echo(
            table(
                [
                    [
                        r["run_id"],
                        r["name"],
                        f"{r['done']}/{r['total']}",
                        r["failed"],
                        r["running"],
                        r["pending"],
                        duration(r["elapsed_s"]),
                    ]
                    for r in runs
                ],
                ["run", "name", "done", "failed", "running", "pending", "elapsed"],
            )
            if runs
            else "no active runs"
        )
        click.echo(f"\nthroughput: {'-' if rate is None else f'{rate:.1f} tasks/s'}")
        if not self.tty:
            click.echo("")


# ------------------------------------------------------------------------- results


@cli.command()
@click.argument("run_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--observables", is_flag=True, help="With JSON: include every observable series.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write to this file instead of stdout.",
)
@pass_settings
def results(
    settings: Settings, run_id: str, fmt: str, as_json: bool, observables: bool, output: Path | None
) -> None:
    """Results of a run (also while it is in progress)."""
    from simctl.results import render

    text = render(_open_ledger(settings), run_id, "json" if as_json else fmt, observables)
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)


# -------------------------------------------------------------------------- cancel


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_settings
def cancel(settings: Settings, run_id: str, as_json: bool) -> None:
    """Cancel a run: pending tasks are dropped, running ones are stopped on their workers."""
    from simctl.display import emit_json
    from simctl.errors import BrokerError

    ledger = _open_ledger(settings)
    before = ledger.run(run_id)
    stopped = ledger.cancel_run(run_id)
    told, broker_error = 0, None
    if before.state == "active":
        from simctl.mqtt import Observer
        from simproto.protocol import Cancel, Channel, RunProgress

        by_worker: dict[str, list[str]] = {}
        for task_id, worker_id in stopped:
            by_worker.setdefault(worker_id, []).append(task_id)
        after = ledger.run(run_id)
        try:
            conn = settings.connection()
            with Observer(conn) as obs:
                for worker_id, task_ids in by_worker.items():
                    obs.publish(
                        conn.topics.worker(worker_id, Channel.CONTROL),
                        Cancel(task_ids=task_ids).encode(),
                    )
                    told += len(task_ids)
                # The run's retained progress says cancelled at once, with or without a
                # dispatcher to publish it (monitor shows no phantom active run).
                final = RunProgress(
                    run_id=run_id, name=after.name, state=after.state, total=after.total,
                    done=after.done, failed=after.failed, running=0, pending=0,
                    updated_at=time.time(),
                )
                obs.publish(conn.topics.run_progress(run_id), final.encode(), retain=True)
        except BrokerError as e:
            broker_error = e
    after = ledger.run(run_id)
    if as_json:
        emit_json(
            {
                "run_id": run_id,
                "state": after.state,
                "was": before.state,
                "cancelled": before.pending + before.running if before.state == "active" else 0,
                "stopped": told,
            }
        )
    elif before.state != "active":
        click.echo(f"run {run_id} had already finished ({before.state}); nothing to cancel")
    else:
        click.echo(
            f"cancelled run {run_id}: {before.pending} pending tasks dropped, "
            f"{told} running tasks told to stop"
        )
    if broker_error is not None:
        raise broker_error


# --------------------------------------------------------------------------- local


@cli.group(cls=SimctlGroup)
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
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="Heartbeat interval of the agents.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How long running tasks may finish when the agents stop.",
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
    as_json: bool,
) -> None:
    """Start the local broker and N worker agents in the background."""
    from simctl.local import LocalCluster

    cluster = LocalCluster(settings.local_dir)
    cluster.up(workers, slots, settings.topic_prefix or "sim", port, heartbeat, grace)
    _local_status(settings, as_json)
    if not as_json:
        click.echo("\nstop with: simctl local down", err=True)


@local.command("down")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=15.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait this long after SIGTERM before SIGKILL.",
)
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
        _exit(BrokerError.exit_code)


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


def main() -> None:
    """Entry point of the ``simctl`` command."""
    cli(prog_name="simctl")
