"""Sizes as people write and read them (simproto.sizes), and the settings that take them."""

from __future__ import annotations

import pytest

from simproto.protocol import FileRef
from simproto.sizes import describe_files, format_size, over_task_limit, parse_size
from worker_agent.config import AgentConfig
from worker_agent.errors import ConfigError

SHA = "0" * 64


@pytest.mark.parametrize(("text", "size"), [
    ("20GiB", 20 << 30), ("500MB", 500_000_000), ("1.5 kB", 1500), ("7", 7), (4096, 4096),
    ("2 tib", 2 << 40), ("10b", 10), ("2G", 2 << 30),
])
def test_sizes_are_parsed(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["20 XB", "GiB", "-5", "1e9", "", True, None, -1])
def test_bad_sizes_are_refused_saying_what_is_allowed(text: object) -> None:
    with pytest.raises(ValueError, match="500MB, 4GiB or 2G"):
        parse_size(text)


def test_sizes_are_shown_in_binary_units() -> None:
    assert [format_size(n) for n in (0, 1023, 1024, 1536, 20 << 30, 3 << 50)] == \
        ["0 B", "1023 B", "1.0 KiB", "1.5 KiB", "20.0 GiB", "3.0 PiB"]


def test_a_task_over_its_limit_is_told_which_files_and_by_how_much() -> None:
    refs = (FileRef("final.xyz", 60_000, SHA), FileRef("trajectory.xyz", 3 << 20, SHA))
    assert describe_files(refs) == "trajectory.xyz 3.0 MiB, final.xyz 58.6 KiB"
    assert over_task_limit(refs, None) is None and over_task_limit(refs, 4 << 20) is None
    assert over_task_limit(refs, 1 << 20) == (
        "artifacts take 3.1 MiB (trajectory.xyz 3.0 MiB, final.xyz 58.6 KiB), over the task "
        "limit of 1.0 MiB (artifact_limits.task in the task file)")


@pytest.mark.parametrize(("value", "problem"), [
    ("20 XB", "--spool-max-bytes: '20 XB' is not a size"),
    ("0", "--spool-max-bytes: must be at least 1 byte"),
])
def test_the_agent_names_a_bad_spool_bound(value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        AgentConfig.build(spool_max_bytes=value)
