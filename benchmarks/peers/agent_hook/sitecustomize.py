"""Counts ckernel.simulate executions in particle-sim's agents, for benchmarks.peers.

``ThisSystem`` puts this folder first on the agents' PYTHONPATH, and the interpreter imports
``sitecustomize`` at start-up, so the product's code is not changed. With ``PEERS_EXEC_LOG``
set, every ``ckernel.simulate`` call writes a start and an end line to that file, the same
lines as the peers' tasks (:func:`benchmarks.peers.execution.log_execution`).
"""

from __future__ import annotations

import os
from typing import Any

_log = os.environ.get("PEERS_EXEC_LOG")
if _log:
    import ckernel
    from benchmarks.peers.execution import log_execution

    _simulate = ckernel.simulate

    def _counted(kind: str, params: dict[str, Any], seed: int, *args: Any,
                 **kwargs: Any) -> Any:
        assert _log is not None
        log_execution(_log, "start", seed)
        result = _simulate(kind, params, seed, *args, **kwargs)
        log_execution(_log, "end", seed)
        return result

    ckernel.simulate = _counted
