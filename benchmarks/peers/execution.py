"""Counting executions the same way in every system, and killing a busy worker process."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def log_execution(log_path: str, event: str, seed: int) -> None:
    """Append one ``event seed pid time`` line; O_APPEND keeps concurrent writers' lines whole."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{event} {seed} {os.getpid()} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


def counted_simulate(kind: str, params: dict[str, Any], seed: int, log_path: str) -> Any:
    """``ckernel.simulate`` with a start and an end line in the execution log."""
    import ckernel

    log_execution(log_path, "start", seed)
    result = ckernel.simulate(kind, params, seed)
    log_execution(log_path, "end", seed)
    return result


def noop(i: int) -> None:
    """The overhead task of the peers: nothing at all."""


@dataclass
class ExecutionLog:
    """The start/end lines of one run, read back."""

    starts: dict[int, int] = field(default_factory=dict)
    ends: dict[int, int] = field(default_factory=dict)
    running_pids: list[int] = field(default_factory=list)
    busy_s: float = 0.0
    """Summed duration of the executions that ran to completion."""

    @classmethod
    def read(cls, path: Path) -> ExecutionLog:
        log = cls()
        last_event: dict[int, str] = {}
        started_at: dict[int, float] = {}
        order: list[int] = []
        text = path.read_text() if path.exists() else ""
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 4:
                continue  # a line being written right now
            event, seed, pid, at = parts[0], int(parts[1]), int(parts[2]), float(parts[3])
            counts = log.starts if event == "start" else log.ends
            counts[seed] = counts.get(seed, 0) + 1
            last_event[pid] = event
            if event == "start":
                order.append(pid)
                started_at[pid] = at
            elif pid in started_at:
                log.busy_s += at - started_at.pop(pid)
        # Processes whose latest line is a start are inside a task; latest start first.
        log.running_pids = [p for p in reversed(order) if last_event[p] == "start"]
        log.running_pids = list(dict.fromkeys(log.running_pids))
        return log

    @property
    def completed(self) -> int:
        return sum(self.ends.values())

    def ran_twice(self) -> int:
        """Tasks that ran to completion more than once."""
        return sum(1 for n in self.ends.values() if n > 1)

    def restarted(self) -> int:
        """Tasks that were started more than once (a killed attempt included)."""
        return sum(1 for n in self.starts.values() if n > 1)


class Killer(threading.Thread):
    """Once ``after_ends`` tasks have finished, waits ``delay_s`` and kill -9s a busy process."""

    POLL_S = 0.02

    def __init__(self, log_path: Path, after_ends: int, delay_s: float, mode: str) -> None:
        super().__init__(daemon=True)
        self.log_path = log_path
        self.after_ends = after_ends
        self.delay_s = delay_s
        self.mode = mode
        self.killed_pid: int | None = None
        self.killed_at: float | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            if ExecutionLog.read(self.log_path).completed >= self.after_ends:
                break
            time.sleep(self.POLL_S)
        else:
            return
        if self._stop_event.wait(self.delay_s):
            return
        for pid in ExecutionLog.read(self.log_path).running_pids:
            with contextlib.suppress(ProcessLookupError):
                if self.mode == "node":
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
                self.killed_pid, self.killed_at = pid, time.monotonic()
                return

    def stop(self) -> None:
        self._stop_event.set()
