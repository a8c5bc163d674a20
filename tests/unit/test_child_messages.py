"""The task child's pipe messages (worker_agent.child) survive pickling whole."""

from __future__ import annotations

import dataclasses
import multiprocessing
import pickle
import typing
from pathlib import Path

import pytest

from worker_agent import child

SAMPLES: list[child.PipeMessage] = [
    child.Run("r.1", "lj", {"steps": 10, "dt": 0.005}, 7, "/spool/attempts/r.1-2",
              {"init": "/spool/inputs/ab"}, 300.0, "/spool/attempts/r.1-2.checkpoints"),
    child.Run("r.2", "sleep", {}, 0, "/a", {}),
    child.Stop(),
    child.Ready(41),
    child.Progress("r.1", 0.25),
    child.Checkpointed("r.1", 20, Path("/c/checkpoint-20.npz"), 123, "0" * 64),
    child.Resumed("r.1", 20, ""),
    child.HandedBack("r.1", 1.5, 2.5),
    child.Done("r.1", 1.0, 2.0, {"summary": {"e": -1.0}, "artifacts": []}),
    child.Failed("r.1", 1.0, 2.0, "boom", retryable=True),
]


def test_every_message_class_is_sampled() -> None:
    classes = {type(m) for m in SAMPLES}
    expected = {*typing.get_args(child.Reply), child.Run, child.Stop}
    assert classes == expected


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_a_message_pickles_as_its_class_and_fields_and_comes_back_equal(
        message: child.PipeMessage) -> None:
    again = pickle.loads(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
    assert again == message and type(again) is type(message)
    # The short form, not pickle's default (an empty object plus its attribute dictionary).
    cls, values = message.__reduce__()
    assert cls is type(message)
    assert dataclasses.is_dataclass(message)
    assert values == tuple(getattr(message, f.name) for f in dataclasses.fields(message))


def test_every_message_crosses_a_real_pipe_whole_and_in_order() -> None:
    agent_end, child_end = multiprocessing.Pipe(duplex=True)
    with agent_end, child_end:
        for message in SAMPLES:
            child.send(agent_end, message)
        assert [child.receive(child_end) for _ in SAMPLES] == SAMPLES
        agent_end.close()
        with pytest.raises(EOFError):
            child.receive(child_end)  # the other end is gone, as the child loop expects
