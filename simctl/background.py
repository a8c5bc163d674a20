"""Processes that outlive the command that started them (local broker, agents, dispatcher)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def spawn_detached(
    argv: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, output appended to ``log_path``, no stdin.

    Its own session keeps it alive when the terminal goes and lets its whole process group
    be signalled at once.
    """
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
