"""simctl monitor's screen: this ledger's runs merged with other ledgers' live progress, the
stale-progress rule, the throughput between two screens, and the JSON of one screen."""

from __future__ import annotations

import io

from simctl.ledger import RunInfo
from simctl.monitoring import STALE_PROGRESS_S, Sample, screen
from simproto.protocol import RunProgress, WorkerStatus

NOW = 1_000_000.0


def run_info(run_id: str, done: int, failed: int = 0, assigned: int = 0,
             pending: int = 0) -> RunInfo:
    return RunInfo(
        run_id=run_id, name=f"name-{run_id}", seed=1, max_attempts=2, taskfile="t.yaml",
        total=done + failed + assigned + pending, state="active", created_at=NOW - 12.34,
        finished_at=NOW, duplicates=0, max_lost=0, broker_id=None, topic_prefix=None,
        broker=None,
        counts={"done": done, "failed": failed, "assigned": assigned, "pending": pending},
    )


def progress(run_id: str, done: int, state: str = "active", age: float = 1.0) -> RunProgress:
    return RunProgress(run_id=run_id, name=f"name-{run_id}", state=state, total=10, done=done,
                       failed=0, running=1, pending=10 - done - 1, updated_at=NOW - age)


def status(worker_id: str, slots: int, free: int, running: list[str]) -> WorkerStatus:
    return WorkerStatus(worker_id=worker_id, state="online", session="s", ts=NOW - 5,
                        host="h", slots=slots, free_slots=free, running=running)


def test_ledger_runs_first_then_live_progress_of_other_ledgers() -> None:
    retained = {
        "ours": progress("ours", 1),            # our own run: the ledger's numbers win
        "other": progress("other", 4),          # another ledger's, kept up: shown
        "gone": progress("gone", 2, age=STALE_PROGRESS_S + 1),  # its dispatcher is gone
        "over": progress("over", 9, state="cancelled"),         # finished: not active
    }
    shown = screen({}, {}, retained, [run_info("ours", 3, pending=2)], None, NOW)
    assert [r["run_id"] for r in shown.runs] == ["ours", "other"]
    runs = shown.to_json()["runs"]
    assert runs[0] == {"run_id": "ours", "name": "name-ours", "total": 5, "done": 3,
                       "failed": 0, "running": 0, "pending": 2, "elapsed_s": 12.3}
    assert runs[1]["done"] == 4 and runs[1]["elapsed_s"] is None


def test_throughput_counts_finished_tasks_of_runs_in_both_samples() -> None:
    first = screen({}, {}, {}, [run_info("a", 2, failed=1, pending=5)], None, NOW)
    assert first.throughput_per_s is None and first.to_json()["throughput_per_s"] is None
    assert first.sample == Sample(NOW, {"a": 3})
    later = [run_info("a", 6, failed=2, pending=0), run_info("b", 7)]  # b is new: adds 0
    second = screen({}, {}, {}, later, first.sample, NOW + 2)
    assert second.throughput_per_s == 2.5
    assert second.to_json()["throughput_per_s"] == 2.5


def test_worker_rows_of_the_screen() -> None:
    statuses = {"w2": status("w2", 4, 1, ["t1", "t2", "t3"]), "w1": status("w1", 2, 3, [])}
    shown = screen(statuses, {"w2": NOW - 1}, {}, [], None, NOW)
    assert [w["worker_id"] for w in shown.workers] == ["w1", "w2"]
    assert shown.to_json()["workers"] == [
        {"worker_id": "w1", "state": "online", "slots": 2, "busy_slots": 0, "running": 0,
         "last_seen": NOW - 5},
        {"worker_id": "w2", "state": "online", "slots": 4, "busy_slots": 3, "running": 3,
         "last_seen": NOW - 1},
    ]


def test_a_run_waiting_for_a_kind_says_so_in_the_progress_line_and_the_tables() -> None:
    from simctl.display import ProgressBar, waiting_notes, waiting_text
    from simctl.routing import unrunnable

    needs = {("chain", "1.0"): 3, ("sleep", None): 2, ("lj", "0.1"): 0}
    assert unrunnable(needs, [{"sleep": "9"}, {"chain": "1.1"}]) == {"chain 1.0": 3}
    assert unrunnable(needs, [{"chain": "1.0", "sleep": "1"}]) == {}
    assert waiting_text({"chain 1.0": 3}) == "3 tasks wait: no online worker has kind chain 1.0"
    assert waiting_notes([{"run_id": "r1", "waiting": {"chain 1.0": 1}}, {"run_id": "r2"}]) == [
        "run r1: 1 task wait: no online worker has kind chain 1.0"]
    bar = ProgressBar(io.StringIO())
    assert bar.line(run_info("r1", 2, pending=3), NOW, {"chain 1.0": 3}).endswith(
        "; 3 tasks wait: no online worker has kind chain 1.0")
