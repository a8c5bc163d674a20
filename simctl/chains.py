"""Chained tasks: what each task of a task file starts from (its ``init``), resolved against
the ledger and the artifact store before anything is sent.

A task file says where a configuration comes from (``simctl.taskfile``: a file, a task of
an earlier run, or an earlier entry of the same file); this module turns that into the
task's input files (``FileRef`` s named ``init``, their bytes in the store) or, for a task of
the same file, the index of the task it waits for. Every problem is a
:class:`TaskFileErrors` naming the file, line and field, as the task file's own are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import simkind
from simctl.ledger import Ledger, TaskState
from simctl.store import ArtifactStore
from simctl.taskfile import InitEntry, InitFile, InitTask, Problem, TaskFile, TaskFileErrors
from simkind.extxyz import Frame, read_last_header
from simproto.protocol import FileRef


@dataclass(frozen=True)
class Start:
    """What one task starts from: input files, and the index of a task of the same run
    whose final configuration becomes its ``init`` once that task is done."""

    inputs: tuple[FileRef, ...] = ()
    waits_for: int | None = None


NOTHING = Start()


def resolve(taskfile: TaskFile, ledger: Ledger | None, store: ArtifactStore | None,
            *, copy: bool) -> list[Start]:
    """Each task's start, in task order. ``copy``: put ``init`` files given by path into the
    store (a run is being made); without it only check them (``simctl validate``).
    ``ledger`` None (no ledger yet): a ``from: RUN_ID.INDEX`` cannot be found."""
    problems: list[Problem] = []
    starts: list[Start] = []
    copied: set[str] = set()
    frames: dict[Path, Frame] = {}
    kinds = simkind.installed()
    for task in taskfile.tasks:
        init = task.init
        if init is None:
            starts.append(NOTHING)
        elif isinstance(init, InitEntry):
            starts.append(Start(waits_for=init.index))
        elif isinstance(init, InitFile):
            ref = FileRef(simkind.INIT_INPUT, init.size, init.sha256)
            if copy and store is not None and init.sha256 not in copied:
                store.add_file(init.path, ref)
                copied.add(init.sha256)
            starts.append(Start(inputs=(ref,)))
        else:
            found = _from_task(init, ledger, store)
            if isinstance(found, Problem):
                problems.append(found)
                starts.append(NOTHING)
                continue
            ref, path = found
            try:
                if path not in frames:  # many tasks may start from one task's file
                    frames[path] = read_last_header(path)
                kinds.get(task.kind).kind.fit_init(task.params, frames[path])
            except simkind.ParamError as e:
                problems.append(Problem(init.line, init.field, str(e)))
            starts.append(Start(inputs=(ref,)))
    if problems:
        unique = list(dict.fromkeys(problems))
        raise TaskFileErrors(taskfile.path, unique)
    return starts


def _from_task(init: InitTask, ledger: Ledger | None,
               store: ArtifactStore | None) -> tuple[FileRef, Path] | Problem:
    """The final configuration of an earlier run's task (its reference as an ``init`` and
    its file in the store), or the problem with it."""
    where = (init.line, init.field)
    state = ledger.task_state(init.task_id) if ledger is not None else None
    if ledger is None or store is None or state is None:
        return Problem(*where, f"from: {init.task_id}: no such task in this ledger (a task "
                       "id is RUN_ID.INDEX, as simctl status RUN lists them)")
    _, task_state = state
    if task_state != TaskState.DONE.value:
        return Problem(*where, f"from: {init.task_id}: that task is {task_state}, not done; "
                       "start from a done task, or name an entry of this file to wait for it")
    final = ledger.final_configuration(init.task_id)
    if final is None:
        return Problem(*where, f"from: {init.task_id}: that task saved no final "
                       f"configuration ({simkind.FINAL_CONFIGURATION})")
    if not store.has(final.sha256):
        return Problem(*where, f"from: {init.task_id}: its {simkind.FINAL_CONFIGURATION} is "
                       f"missing from the store {store.root}")
    return final, store.path(final.sha256)
