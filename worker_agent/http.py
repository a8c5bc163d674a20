"""The agent's HTTP health endpoint: ``GET /ping`` (JSON) and ``GET /metrics`` (Prometheus).

It runs in its own thread and only reads a :class:`View`, an immutable snapshot that the
agent's main loop replaces whenever something it shows changes.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class View:
    """What the endpoint shows; replaced as a whole by the agent (no locks needed)."""

    worker_id: str
    state: str = "online"
    running: tuple[str, ...] = ()
    slots: int = 0
    connected: bool = False
    children: tuple[tuple[int, int | None, str | None], ...] = ()
    """(slot, child pid, task id) per slot."""
    counters: dict[str, int] = field(default_factory=dict)
    """The values of :data:`METRICS`, by name."""


METRICS: tuple[tuple[str, str, str], ...] = (
    ("tasks_done", "counter", "Tasks this agent finished successfully."),
    ("tasks_failed", "counter", "Task attempts that failed here (including handed back ones)."),
    ("tasks_cancelled", "counter", "Tasks cancelled on request."),
    ("tasks_rejected", "counter", "Assignments refused (no free slot or draining)."),
    ("results_unacked", "gauge", "Results kept until the dispatcher acknowledges them."),
    ("child_restarts", "counter", "Task child processes replaced (died, cancelled, handed back)."),
    ("invalid_messages", "counter", "Received messages rejected as invalid."),
    ("artifact_bytes_served", "counter", "Bytes of artifacts sent to simctl (re-sent included)."),
    ("input_bytes_fetched", "counter", "Bytes of input files received from simctl."),
    ("spool_bytes", "gauge", "Bytes the spool holds: unacknowledged artifacts and inputs."),
    ("spool_max_bytes", "gauge", "Bound of the spool (--spool-max-bytes)."),
)
"""The counters of :class:`View`, with their Prometheus type and help text."""


def ping_document(view: View) -> dict[str, Any]:
    """The JSON of ``GET /ping``."""
    return {
        "status": view.state,
        "worker_id": view.worker_id,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "current_task": view.running[0] if view.running else None,
        "running_tasks": list(view.running),
        "slots": view.slots,
        "connected": view.connected,
        "children": [{"slot": s, "pid": pid, "task_id": task} for s, pid, task in view.children],
    }


def metrics_text(view: View) -> str:
    """The Prometheus text exposition of ``GET /metrics``."""
    label = f'worker_id="{view.worker_id}"'
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        full = f"worker_agent_{name}" + ("_total" if kind == "counter" else "")
        lines.extend([f"# HELP {full} {help_text}", f"# TYPE {full} {kind}"])
        lines.extend(f"{full}{{{labels}}} {value:g}" for labels, value in samples)

    for name, kind, help_text in METRICS:
        metric(name, kind, help_text, [(label, view.counters.get(name, 0))])
    busy = len(view.running)
    metric("tasks_running", "gauge", "Tasks running now.", [(label, busy)])
    metric("slots", "gauge", "Task slots (child processes).", [(label, view.slots)])
    metric("slots_busy", "gauge", "Slots running a task.", [(label, busy)])
    metric("connected", "gauge", "1 while connected to the broker.",
           [(label, int(view.connected))])
    metric("child_pid", "gauge", "Process id of each slot's child.",
           [(f'{label},slot="{s}"', pid) for s, pid, _ in view.children if pid is not None])
    return "\n".join(lines) + "\n"


class HealthServer:
    """A threaded HTTP server answering from the agent's latest :class:`View`."""

    def __init__(self, port: int, view: View, host: str = "0.0.0.0") -> None:
        self.view = view
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                view = server_self.view
                if self.path.split("?", 1)[0] == "/ping":
                    body = json.dumps(ping_document(view)).encode()
                    self._reply(200, "application/json", body)
                elif self.path.split("?", 1)[0] == "/metrics":
                    self._reply(200, "text/plain; version=0.0.4", metrics_text(view).encode())
                else:
                    self._reply(404, "application/json",
                                json.dumps({"error": "not found; try /ping or /metrics"}).encode())

            def _reply(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http %s: " + format, self.address_string(), *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="http",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
