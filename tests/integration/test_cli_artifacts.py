"""``simctl artifacts`` (listing and ``get``), ``simctl results --artifacts DIR`` and ``simctl
delete`` on a real ledger and store: a run of 8 tasks (two swept params, two replicas each)
whose results list real files, stored at their SHA-256 in the store beside the ledger."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from simctl import api
from simctl.artifacts import ArtifactUnavailable
from simctl.cli import cli
from simctl.errors import InputError
from simctl.ledger import Ledger
from simctl.store import ArtifactStore
from simctl.taskfile import parse_text
from simproto.protocol import FileRef
from simproto.protocol import Result as TaskResult
from simproto.sizes import format_size

SWEEP = ("name: arts\nseed: 4\ntasks:\n  - kind: sleep\n"
         "    sweep: {seconds: [0.5, 1.5], artifact_bytes: [100, 3000]}\n    replicas: 2\n")
"""8 tasks: 4 sweep points of (seconds, artifact_bytes), 2 replicas each."""

OTHER = "name: other\nseed: 9\ntasks:\n  - kind: sleep\n    params: {seconds: 0.25}\n"


def invoke(store: Path, *args: str, code: int = 0, input: str | None = None) -> Result:
    """simctl in-process on ``store``, with none of the caller's settings."""
    env: dict[str, str | None] = {"SIMCTL_CONFIG": None, "SIMCTL_BROKER": None,
                                  "SIMCTL_STORE": None}
    result = CliRunner().invoke(cli, ["--store", str(store), *args], env=env, input=input,
                                catch_exceptions=False)
    assert result.exit_code == code, (
        f"simctl {' '.join(args)} exited {result.exit_code}, expected {code}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}")
    return result


def put(store: ArtifactStore, name: str, data: bytes) -> FileRef:
    """Store ``data`` as an object of ``store`` (its real SHA-256); its reference as ``name``."""
    sha256 = hashlib.sha256(data).hexdigest()
    path = store.path(sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return FileRef(name, len(data), sha256)


def files_of(task_id: str, artifact_bytes: int) -> dict[str, bytes]:
    """What a task of the sweep wrote: data.bin (its own bytes) and final.xyz."""
    block = hashlib.sha512(task_id.encode()).digest()
    return {"data.bin": (block * (artifact_bytes // len(block) + 1))[:artifact_bytes],
            "final.xyz": f"2\nLattice=\"1 0 0 0 1 0 0 0 1\" task={task_id}\nAr 0 0 0\n"
                         "Ar 0.5 0.5 0.5\n".encode()}


def finish(ledger: Ledger, store: ArtifactStore, run_id: str,
           extra: dict[str, bytes] | None = None) -> dict[str, dict[str, FileRef]]:
    """Store a done result with its files for every task of the run and finish it; each
    task's references by name. ``extra``: more files for every task."""
    now = time.time()
    refs: dict[str, dict[str, FileRef]] = {}
    with ledger.batch():
        for row in ledger.task_rows(run_id):
            task_id = row["task_id"]
            written = {**files_of(task_id, row["params"]["artifact_bytes"]), **(extra or {})}
            refs[task_id] = {name: put(store, name, data) for name, data in written.items()}
            ledger.assign(task_id, 1, "w1", "s1", now)
            ledger.store_result(
                TaskResult(worker_id="w1", session="s1", run_id=run_id, task_id=task_id,
                           attempt=1, state="done", started_at=now - 1, finished_at=now,
                           summary={"e": 1.0}, observables={}, artifacts=[
                               r.to_json() for r in refs[task_id].values()]), "done")
            ledger.add_artifacts(run_id, task_id, refs[task_id].values())
        ledger.finish_run(run_id)
    return refs


class Stored:
    """A ledger with one finished run of :data:`SWEEP` and its files in the store."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "ledger.sqlite"
        self.store = ArtifactStore.beside(self.path)
        self.ledger = Ledger(self.path)
        self.run_id = self.ledger.create_run(parse_text(SWEEP, tmp_path / "arts.yaml"))
        self.refs = finish(self.ledger, self.store, self.run_id)
        self.rows = self.ledger.task_rows(self.run_id)

    def folders(self) -> dict[str, str]:
        """Task id -> the folder an export should give it (worked out here, by hand)."""
        seen: dict[tuple[float, int], int] = {}
        found = {}
        for row in self.rows:
            point = (row["params"]["seconds"], row["params"]["artifact_bytes"])
            seen[point] = seen.get(point, 0) + 1
            found[row["task_id"]] = (f"{row['index']:04d}_seconds={point[0]:g}_"
                                     f"artifact_bytes={point[1]}_r{seen[point]}")
        return found


@pytest.fixture
def stored(tmp_path: Path) -> Iterator[Stored]:
    s = Stored(tmp_path)
    yield s
    s.ledger.close()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ listing


def test_listing_shows_every_file_with_its_sweep_point_and_a_total(stored: Stored) -> None:
    out = invoke(stored.path, "artifacts", stored.run_id).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["task", "kind", "point", "name", "size", "sha256"]
    body = lines[2:-1]
    assert len(body) == 16
    third = stored.rows[3]
    point = (f"seconds={third['params']['seconds']:g} "
             f"artifact_bytes={third['params']['artifact_bytes']} r2")
    mine = [line for line in body if line.split()[0] == "3"]
    assert [line.split()[-4] for line in mine] == ["data.bin", "final.xyz"]
    for line, name in zip(mine, ("data.bin", "final.xyz"), strict=True):
        ref = stored.refs[third["task_id"]][name]
        assert point in line
        assert line.split()[-1] == ref.sha256[:12]
        assert ref.sha256 not in line
    assert third["params"]["artifact_bytes"] == 3000 and "  2.9 KiB  " in mine[0]
    total = sum(r.size for refs in stored.refs.values() for r in refs.values())
    assert lines[-1] == f"16 files of 8 tasks, {format_size(total)}"
    assert "KiB" in lines[-1]
    assert invoke(stored.path, "artifacts", "list", "last").stdout == out


def test_listing_json_has_full_digests_and_store_paths(stored: Stored) -> None:
    doc = json.loads(invoke(stored.path, "artifacts", stored.run_id, "--json").stdout)
    assert doc["run_id"] == stored.run_id
    assert (doc["files"], doc["tasks"]) == (16, 8)
    assert doc["bytes"] == sum(r.size for refs in stored.refs.values() for r in refs.values())
    for a in doc["artifacts"]:
        ref = stored.refs[a["task_id"]][a["name"]]
        assert (a["size"], a["sha256"]) == (ref.size, ref.sha256)
        assert sha(Path(a["path"])) == ref.sha256
        row = stored.rows[a["index"]]
        assert a["point"] == {"seconds": row["params"]["seconds"],
                              "artifact_bytes": row["params"]["artifact_bytes"]}
        assert a["replica"] in (1, 2)
    assert [a["index"] for a in doc["artifacts"]] == sorted(a["index"] for a in doc["artifacts"])


def test_listing_of_one_task_by_index_or_id(stored: Stored) -> None:
    task_id = stored.rows[5]["task_id"]
    by_index = json.loads(invoke(stored.path, "artifacts", stored.run_id, "5", "--json").stdout)
    by_id = json.loads(invoke(stored.path, "artifacts", "--json", stored.run_id, task_id).stdout)
    assert by_index == by_id
    assert {a["task_id"] for a in by_index["artifacts"]} == {task_id}
    assert by_index["files"] == 2
    err = invoke(stored.path, "artifacts", stored.run_id, "99", code=2).stderr
    assert f"run {stored.run_id} has no task '99'" in err
    assert "no run 'nosuch'" in invoke(stored.path, "artifacts", "nosuch", code=2).stderr


def test_run_ids_complete_in_place_of_the_listing_command(stored: Stored) -> None:
    env = {"_SIMCTL_COMPLETE": "bash_complete", "COMP_WORDS": "simctl artifacts ",
           "COMP_CWORD": "2", "SIMCTL_STORE": str(stored.path), "SIMCTL_CONFIG": None,
           "SIMCTL_BROKER": None}
    out = CliRunner().invoke(cli, [], prog_name="simctl", env=env).stdout
    assert {"plain,get", "plain,list", f"plain,{stored.run_id}", "plain,last"} <= set(
        out.splitlines())


# ------------------------------------------------------------------------------ get


def test_get_copies_the_file_and_never_overwrites_without_force(
        stored: Stored, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task_id = stored.rows[2]["task_id"]
    ref = stored.refs[task_id]["final.xyz"]
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    invoke(stored.path, "artifacts", "get", stored.run_id, "2", "final.xyz")
    assert sha(out / "final.xyz") == ref.sha256
    err = invoke(stored.path, "artifacts", "get", stored.run_id, task_id, "final.xyz",
                 code=2).stderr
    assert "final.xyz exists: give --force" in err
    (out / "final.xyz").write_text("mine")
    invoke(stored.path, "artifacts", "get", stored.run_id, "2", "final.xyz", "--force")
    assert sha(out / "final.xyz") == ref.sha256

    named = tmp_path / "named.xyz"
    invoke(stored.path, "artifacts", "get", stored.run_id, "2", "final.xyz", "-o", str(named))
    assert sha(named) == ref.sha256
    folder = tmp_path / "folder"
    folder.mkdir()
    invoke(stored.path, "artifacts", "get", stored.run_id, "2", "data.bin", "-o", str(folder))
    assert sha(folder / "data.bin") == stored.refs[task_id]["data.bin"].sha256
    piped = invoke(stored.path, "artifacts", "get", stored.run_id, "2", "final.xyz", "-o", "-")
    assert hashlib.sha256(piped.stdout_bytes).hexdigest() == ref.sha256

    err = invoke(stored.path, "artifacts", "get", stored.run_id, "2", "traj.xyz", code=2).stderr
    assert "no artifact 'traj.xyz': this task has data.bin, final.xyz" in err
    nowhere = tmp_path / "no-such-folder" / "final.xyz"
    err = invoke(stored.path, "artifacts", "get", stored.run_id, "2", "final.xyz", "-o",
                 str(nowhere), code=2).stderr
    assert f"cannot write {nowhere}: No such file or directory" in err


def test_get_refuses_a_corrupt_or_missing_store_file(stored: Stored, tmp_path: Path) -> None:
    ref = stored.refs[stored.rows[1]["task_id"]]["final.xyz"]
    object_path = stored.store.path(ref.sha256)
    good = object_path.read_bytes()
    object_path.write_bytes(good[:-1] + b"!")  # same size, one byte changed
    target = tmp_path / "final.xyz"
    err = invoke(stored.path, "artifacts", "get", stored.run_id, "1", "final.xyz", "-o",
                 str(target), code=1).stderr
    assert "is corrupt" in err and ref.sha256 in err
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
    object_path.unlink()
    err = invoke(stored.path, "artifacts", "get", stored.run_id, "1", "final.xyz", "-o",
                 str(target), code=1).stderr
    assert "the store has no copy of" in err
    assert not target.exists()


# ------------------------------------------------------------------------------ export


def read_index(dest: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((dest / "index.csv").read_text())))


def test_results_export_a_folder_per_sweep_point_linked_from_the_store(
        stored: Stored, tmp_path: Path) -> None:
    dest = tmp_path / "export"
    result = invoke(stored.path, "results", stored.run_id, "--artifacts", str(dest))
    assert all(row["task_id"] in result.stdout for row in stored.rows)  # the table still
    assert "exported 16 artifacts of 8 tasks" in result.stderr
    assert "16 linked" in result.stderr
    folders = stored.folders()
    assert sorted(p.name for p in dest.iterdir()) == sorted([*folders.values(), "index.csv"])
    for task_id, folder in folders.items():
        assert sorted(p.name for p in (dest / folder).iterdir()) == ["data.bin", "final.xyz"]
        for name, ref in stored.refs[task_id].items():
            exported = dest / folder / name
            assert sha(exported) == ref.sha256
            assert os.path.samefile(exported, stored.store.path(ref.sha256))
            assert not exported.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    index = read_index(dest)
    assert [r["folder"] for r in index] == [folders[row["task_id"]] for row in stored.rows]
    for entry, row in zip(index, stored.rows, strict=True):
        assert entry["task_id"] == row["task_id"]
        assert float(entry["param.seconds"]) == row["params"]["seconds"]
        assert int(entry["param.artifact_bytes"]) == row["params"]["artifact_bytes"]

    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*")}
    again = invoke(stored.path, "results", stored.run_id, "--json", "--artifacts", str(dest))
    assert json.loads(again.stdout)["run_id"] == stored.run_id
    assert "0 linked, 0 copied, 16 already there" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.name != "index.csv"} == {
        p: t for p, t in before.items() if p.name != "index.csv"}


def test_export_refuses_files_that_differ_unless_forced(stored: Stored, tmp_path: Path) -> None:
    dest = tmp_path / "export"
    invoke(stored.path, "results", stored.run_id, "--artifacts", str(dest))
    task_id = stored.rows[4]["task_id"]
    changed = dest / stored.folders()[task_id] / "data.bin"
    changed.unlink()
    changed.write_bytes(b"edited by hand")
    err = invoke(stored.path, "results", stored.run_id, "--artifacts", str(dest), code=2).stderr
    assert f"1 file in {dest} differ from run {stored.run_id}'s: {changed}" in err
    assert "--force" in err
    assert changed.read_bytes() == b"edited by hand"
    forced = invoke(stored.path, "results", stored.run_id, "--artifacts", str(dest), "--force")
    assert "1 linked, 0 copied, 15 already there, 1 replaced" in forced.stderr
    assert sha(changed) == stored.refs[task_id]["data.bin"].sha256
    assert "--force goes with --artifacts" in invoke(
        stored.path, "results", stored.run_id, "--force", code=2).stderr


def test_export_to_another_file_system_copies_and_checks(stored: Stored) -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        dest = Path(other) / "export"
        assert os.stat(other).st_dev != os.stat(stored.path).st_dev  # a tmpfs, not the disk
        err = invoke(stored.path, "results", stored.run_id, "--format", "csv", "--artifacts",
                     str(dest)).stderr
        assert "0 linked, 16 copied" in err
        for task_id, folder in stored.folders().items():
            for name, ref in stored.refs[task_id].items():
                exported = dest / folder / name
                assert sha(exported) == ref.sha256
                assert exported.stat().st_mode & stat.S_IWUSR  # the person's own copy
        assert "16 already there" in invoke(stored.path, "results", stored.run_id,
                                            "--artifacts", str(dest)).stderr


def test_export_with_a_missing_store_file_writes_nothing(stored: Stored, tmp_path: Path) -> None:
    ref = stored.refs[stored.rows[6]["task_id"]]["final.xyz"]
    stored.store.path(ref.sha256).unlink()
    dest = tmp_path / "export"
    err = invoke(stored.path, "results", stored.run_id, "--artifacts", str(dest), code=1).stderr
    assert f"the store has no copy of {stored.rows[6]['task_id']} final.xyz" in err
    assert not dest.exists()


# ------------------------------------------------------------------------------ delete


def test_delete_asks_and_removes_only_the_files_no_other_run_has(
        stored: Stored, tmp_path: Path) -> None:
    shared = stored.refs[stored.rows[0]["task_id"]]["final.xyz"]
    other_id = stored.ledger.create_run(parse_text(OTHER.replace(
        "{seconds: 0.25}", "{seconds: 0.25, artifact_bytes: 3}"), tmp_path / "other.yaml"))
    finish(stored.ledger, stored.store, other_id,
           extra={"final.xyz": stored.store.path(shared.sha256).read_bytes()})
    own = {r.sha256: r.size for refs in stored.refs.values() for r in refs.values()}
    only_here = {d: s for d, s in own.items() if d != shared.sha256}

    kept = invoke(stored.path, "delete", stored.run_id, input="n\n")
    assert f"run {stored.run_id} (arts): done, 8 tasks (8 done, 0 failed); 16 artifacts" in (
        kept.stderr)
    assert f"kept run {stored.run_id}" in kept.stderr
    assert len(json.loads(invoke(stored.path, "artifacts", stored.run_id, "--json").stdout)[
        "artifacts"]) == 16
    assert all(stored.store.has(d) for d in own)

    doc = json.loads(invoke(stored.path, "delete", stored.run_id, "--yes", "--json").stdout)
    assert doc["deleted"] is True
    assert set(doc["removed"]) == set(only_here)
    assert doc["bytes_freed"] == sum(only_here.values())
    assert (doc["tasks"], doc["artifacts"]) == (8, 16)
    assert not any(stored.store.has(d) for d in only_here)
    assert stored.store.has(shared.sha256)
    invoke(stored.path, "status", stored.run_id, code=2)
    other = json.loads(invoke(stored.path, "artifacts", other_id, "--json").stdout)
    assert {a["sha256"] for a in other["artifacts"]} >= {shared.sha256}


def test_delete_says_what_the_store_gives_back_before_asking(stored: Stored) -> None:
    freed = sum(r.size for refs in stored.refs.values() for r in refs.values())
    listed = invoke(stored.path, "artifacts", stored.run_id).stdout.splitlines()[-1]
    asked = invoke(stored.path, "delete", stored.run_id, input="y\n")
    size = listed.rsplit(", ", 1)[1]
    assert f"16 artifacts, {size}; {size} freed in the store" in asked.stderr
    assert f"deleted run {stored.run_id} (arts): 8 tasks, 16 artifacts; 16 files removed" in (
        asked.stdout)
    assert freed > 0 and not list(stored.store.root.joinpath("objects").rglob("*/*"))


def test_delete_refuses_an_active_run_before_asking(stored: Stored, tmp_path: Path) -> None:
    active = stored.ledger.create_run(parse_text(OTHER, tmp_path / "other.yaml"))
    for args in ((), ("--yes",)):
        result = invoke(stored.path, "delete", active, *args, input="y\n", code=2)
        assert f"run {active} is active: cancel it first" in result.stderr
        assert "delete it?" not in result.stderr
    assert stored.ledger.run(active).state == "active"


# ------------------------------------------------------------------------------ api


def test_api_lists_the_files_and_finds_one_in_the_store(stored: Stored) -> None:
    files = api.artifacts("last", store=stored.path)
    assert len(files) == 16
    for f in files:
        assert sha(f["path"]) == stored.refs[f["task_id"]][f["name"]].sha256
    assert [f["name"] for f in api.artifacts(stored.run_id, stored.path, task="4")] == [
        "data.bin", "final.xyz"]
    task_id = stored.rows[4]["task_id"]
    path = api.artifact_path(stored.run_id[:10], task_id, "final.xyz", store=stored.path)
    assert path == stored.store.path(stored.refs[task_id]["final.xyz"].sha256)
    assert path.read_text().splitlines()[1].endswith(f"task={task_id}")
    with pytest.raises(InputError, match=r"no artifact 'traj\.xyz'"):
        api.artifact_path(stored.run_id, "4", "traj.xyz", store=stored.path)
    path.unlink()
    with pytest.raises(ArtifactUnavailable, match="the store has no copy"):
        api.artifact_path(stored.run_id, "4", "final.xyz", store=stored.path)
