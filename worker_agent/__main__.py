"""``python -m worker_agent``: the same as the ``worker-agent`` command."""

from __future__ import annotations

from worker_agent.cli import main

if __name__ == "__main__":
    main()
