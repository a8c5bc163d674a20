"""Which worker can run which task: a task needs its kind at the version it was validated
with; a worker advertises its kinds and versions. Pure logic, shared by the dispatcher (which
routes by it) and by ``status``, ``monitor`` and ``run`` (which say what a run waits for).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simctl.ledger import LiveTask

Need = tuple[str, str | None]
"""What a task needs of a worker: its kind and the kind's version (None: not recorded)."""


def need_of(task: LiveTask) -> Need:
    """What a pending task needs of a worker."""
    return task.kind, task.kind_version


def describe_need(need: Need) -> str:
    """"kind version" (or just the kind), as progress and status show it."""
    return need[0] if need[1] is None else f"{need[0]} {need[1]}"


def can_run(kinds: Mapping[str, str], need: Need) -> bool:
    """Whether a worker with ``kinds`` (name -> version) has the kind at the version the
    task needs (None: any version)."""
    kind, version = need
    return kind in kinds and version in (None, kinds[kind])


def unrunnable(needs: Mapping[Need, int], online: Iterable[Mapping[str, str]]) -> dict[str, int]:
    """Of the pending tasks counted by need, those no online worker (given by its kinds)
    can run, by "kind version": what a run waits for."""
    workers = list(online)
    return {describe_need(need): count for need, count in needs.items()
            if count and not any(can_run(kinds, need) for kinds in workers)}
