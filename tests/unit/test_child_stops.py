"""How a task ends in the task child (worker_agent.child) when it stops early, in process:
handed back after a checkpoint, or failed when a kind raises Preempted with none saved."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from simkind import Context, Kind, Output, Preempted
from simkind.registry import LoadedKind, Registry
from worker_agent import child

MODULE = "tests.unit.test_child_stops"


def stops_after_a_checkpoint(params: dict[str, Any], seed: int, context: Context) -> Output:
    context.request_checkpoint_stop()  # as SIGUSR1 does during a warm stop
    context.save_checkpoint(7, {"x": np.arange(3.0)})  # raises Preempted: asked to stop
    return Output({"x": [1.0]})


def preempted_without_a_checkpoint(params: dict[str, Any], seed: int,
                                   context: Context) -> Output:
    raise Preempted(3, Path("nowhere.npz"))  # a kind's own mistake


class Pipe:
    """The child's end of the pipe: what it sent, unpickled."""

    def __init__(self) -> None:
        self.sent: list[child.PipeMessage] = []

    def send_bytes(self, data: bytes) -> None:
        self.sent.append(pickle.loads(data))


def run(function: str, tmp_path: Path) -> tuple[child.PipeMessage, list[child.PipeMessage]]:
    kind = Kind("stops_early", "stops early", {}, f"{MODULE}:{function}")
    kinds = Registry([LoadedKind(kind, "1", "lab-kinds", "1", f"{kind.name} = {MODULE}")])
    request = child.Run("r.1", kind.name, {}, 5, str(tmp_path / "r.1-1"), {}, 300.0,
                        str(tmp_path / "r.1-1.checkpoints"))
    pipe = Pipe()
    ending = child._run(pipe, kinds, request)  # type: ignore[arg-type]  # a pipe stand-in
    return ending, pipe.sent


def test_a_task_asked_to_stop_is_handed_back_after_its_checkpoint(tmp_path: Path) -> None:
    ending, sent = run("stops_after_a_checkpoint", tmp_path)
    assert isinstance(ending, child.HandedBack) and ending.task_id == "r.1"
    [saved] = [m for m in sent if isinstance(m, child.Checkpointed)]
    assert saved.step == 7 and saved.path == tmp_path / "r.1-1.checkpoints/checkpoint-7.npz"
    assert saved.path.stat().st_size == saved.size and len(saved.sha256) == 64


def test_preempted_without_a_checkpoint_fails_the_attempt_retryably(tmp_path: Path) -> None:
    ending, sent = run("preempted_without_a_checkpoint", tmp_path)
    assert isinstance(ending, child.Failed) and ending.retryable
    assert ending.error == ("Preempted raised with no checkpoint saved (only "
                            "Context.save_checkpoint may raise it)")
    assert not any(isinstance(m, child.Checkpointed) for m in sent)
