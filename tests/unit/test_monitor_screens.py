"""simctl monitor's throughput across runs that end or begin between two screens, and the
state of the broker connection in a screen."""

from __future__ import annotations

from dataclasses import replace

from simctl.ledger import RunInfo
from simctl.monitoring import BrokerState, BrokerWatch, Sample, screen
from simproto.protocol import RunProgress

NOW = 1_000_000.0


def run_info(run_id: str, done: int, pending: int = 0, state: str = "active",
             created_at: float = NOW - 100) -> RunInfo:
    return RunInfo(
        run_id=run_id, name=run_id, seed=1, max_attempts=2, taskfile="t.yaml",
        total=done + pending, state=state, created_at=created_at, finished_at=None,
        duplicates=0, max_lost=0, broker_id=None, topic_prefix=None, broker=None,
        counts={"done": done, "pending": pending},
    )


def progress(run_id: str, done: int, state: str, updated_at: float) -> RunProgress:
    return RunProgress(run_id=run_id, name=run_id, state=state, total=10, done=done,
                       failed=0, running=0, pending=10 - done, updated_at=updated_at)


def test_a_run_that_ends_between_two_screens_counts_up_to_its_end() -> None:
    first = screen({}, {}, {}, [run_info("a", 4, pending=6)], None, NOW)
    assert first.sample == Sample(NOW, {"a": 4})
    # By the next screen, run a finished its 6 remaining tasks and is no longer active.
    ended = replace(run_info("a", 10), state="done")
    second = screen({}, {}, {}, [], first.sample, NOW + 2, ended_runs=[ended])
    assert second.runs == [] and second.throughput_per_s == 3.0
    # Without what the ledger says of it, nothing would have finished.
    assert screen({}, {}, {}, [], first.sample, NOW + 2).throughput_per_s == 0.0


def test_another_ledgers_run_that_ends_counts_from_its_last_retained_progress() -> None:
    live = {"o": progress("o", 2, "active", NOW)}
    first = screen({}, {}, live, [], None, NOW)
    assert [r["run_id"] for r in first.runs] == ["o"]
    over = {"o": progress("o", 10, "done", NOW + 1)}
    second = screen({}, {}, over, [], first.sample, NOW + 4)
    assert second.runs == [] and second.throughput_per_s == 2.0


def test_a_run_created_since_the_previous_screen_counts_from_zero() -> None:
    first = screen({}, {}, {}, [], None, NOW)
    new = run_info("b", 5, pending=5, created_at=NOW + 1)
    older = run_info("c", 7, pending=3, created_at=NOW - 50)  # not in the sample: unknown
    second = screen({}, {}, {}, [new, older], first.sample, NOW + 5)
    assert second.throughput_per_s == 1.0


def test_the_broker_state_says_since_when_it_is_unreachable() -> None:
    watch = BrokerWatch(NOW)
    assert watch.see(True, NOW + 1) == BrokerState(True, NOW)
    assert watch.see(False, NOW + 2) == BrokerState(False, NOW + 2)
    assert watch.see(False, NOW + 3) == BrokerState(False, NOW + 2)  # the outage's start
    assert watch.see(True, NOW + 4) == BrokerState(True, NOW + 4)
    down = screen({}, {}, {}, [run_info("a", 1, pending=1)], None, NOW + 3,
                  broker=BrokerState(False, NOW + 2))
    doc = down.to_json()
    assert doc["broker"] == {"connected": False, "since": NOW + 2}
    assert [r["run_id"] for r in doc["runs"]] == ["a"]
