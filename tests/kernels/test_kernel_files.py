"""The built-in kinds' files: trajectories and final configurations in extended XYZ (read
back with ASE), runs started from a configuration (init), and that writing changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ase.io
import numpy as np
import pytest

import ckernel
from ckernel import extxyz
from ckernel.params import BUILT_IN, MAX_FRAMES
from simkind.extxyz import FINAL_CONFIGURATION, TRAJECTORY, read_last_header
from tests.support.kernels import both_backends

# lj: a 256-atom box (6.8 sigma) large enough that the neighbour list is rebuilt on
# displacement, not every step; nbody and brownian small.
PARAMS: dict[str, dict[str, Any]] = {
    "lj": {"n_cells": 4, "steps": 40, "sample_every": 10},
    "nbody": {"n_bodies": 32, "steps": 40, "sample_every": 10},
    "brownian": {"n_particles": 40, "steps": 40, "sample_every": 10},
}
KINDS = sorted(PARAMS)


def final_state(kind: str, params: dict[str, Any], seed: int,
                backend: str = "auto") -> dict[str, np.ndarray]:
    """The driver's arrays at the end of a run (lj: positions wrapped into the box)."""
    record, _, _ = ckernel.run(kind, params, seed, backend=backend)
    return record.state


@pytest.mark.parametrize("kind", KINDS)
def test_every_trajectory_frame_holds_the_state_of_the_run_at_its_step(
        kind: str, tmp_path: Path) -> None:
    every = 10
    result = ckernel.simulate(kind, {**PARAMS[kind], "trajectory_every": every}, 3,
                              artifact_dir=tmp_path)
    frames = ase.io.read(tmp_path / TRAJECTORY, index=":")
    assert [f.info["Step"] for f in frames] == [0, 10, 20, 30, 40]
    assert {a["name"] for a in result["artifacts"]} == {TRAJECTORY, FINAL_CONFIGURATION}
    for frame in frames:
        step = int(frame.info["Step"])
        assert frame.info["Time"] == step * ckernel.validate(kind, PARAMS[kind])["dt"]
        assert list(frame.symbols) == ["X"] * len(frame)
        if step == 0:
            continue
        # A run of `step` steps from the same seed ends where the long run was at `step`.
        state = final_state(kind, {**PARAMS[kind], "steps": step}, 3)
        np.testing.assert_allclose(frame.get_positions(), state["positions"], rtol=0,
                                   atol=1e-12)
        np.testing.assert_allclose(frame.arrays["vel"], state["velocities"], rtol=0,
                                   atol=1e-12)
    if kind == "lj":
        box = result["summary"]["box"]
        assert all(f.pbc.all() and np.allclose(f.cell.lengths(), box) for f in frames)
        assert all(((f.positions >= 0.0) & (f.positions < box)).all() for f in frames)
    else:
        assert not any(f.pbc.any() for f in frames)
    if kind == "nbody":
        np.testing.assert_array_equal(frames[0].get_masses(), np.full(32, 1.0 / 32))


@both_backends
@pytest.mark.parametrize("kind", KINDS)
def test_final_xyz_is_the_final_state_bit_for_bit(kind: str, backend: str,
                                                  tmp_path: Path) -> None:
    ckernel.simulate(kind, PARAMS[kind], 8, backend=backend, artifact_dir=tmp_path)
    state = final_state(kind, PARAMS[kind], 8, backend)
    read = extxyz.read_configuration(tmp_path / FINAL_CONFIGURATION)
    assert read.header.step == PARAMS[kind]["steps"]
    np.testing.assert_array_equal(read.positions, state["positions"])
    np.testing.assert_array_equal(read.velocities, state["velocities"])
    if kind == "nbody":
        np.testing.assert_array_equal(read.masses, state["masses"])
    atoms = ase.io.read(tmp_path / FINAL_CONFIGURATION)
    np.testing.assert_array_equal(atoms.get_positions(), state["positions"])


def test_overdamped_brownian_frames_hold_positions_only(tmp_path: Path) -> None:
    params = {**PARAMS["brownian"], "overdamped": True, "trajectory_every": 20}
    ckernel.simulate("brownian", params, 1, artifact_dir=tmp_path)
    header = read_last_header(tmp_path / TRAJECTORY)
    assert [p[0] for p in header.properties] == ["species", "pos"]
    assert extxyz.read_configuration(tmp_path / FINAL_CONFIGURATION).velocities is None


@pytest.mark.parametrize("kind", KINDS)
def test_writing_files_does_not_change_the_results(kind: str, tmp_path: Path) -> None:
    plain = ckernel.simulate(kind, {**PARAMS[kind], "save_final": False}, 4)
    written = ckernel.simulate(kind, {**PARAMS[kind], "trajectory_every": 1}, 4,
                               artifact_dir=tmp_path)
    assert (written["observables"], written["summary"]) == (plain["observables"],
                                                            plain["summary"])
    assert len(ase.io.read(tmp_path / TRAJECTORY, index=":")) == PARAMS[kind]["steps"] + 1


def test_without_an_artifact_folder_nothing_is_written(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = ckernel.simulate("lj", {**PARAMS["lj"], "trajectory_every": 5}, 1)
    assert result["artifacts"] == [] and list(tmp_path.iterdir()) == []


def test_save_final_false_writes_no_final_configuration(tmp_path: Path) -> None:
    result = ckernel.simulate("lj", {**PARAMS["lj"], "save_final": False}, 1,
                              artifact_dir=tmp_path)
    assert result["artifacts"] == []


def test_the_number_of_frames_is_bounded() -> None:
    with pytest.raises(ckernel.ParamError, match=rf"lj.trajectory_every = 1 gives 20001 frames "
                       rf"for steps = 20000; at most {MAX_FRAMES} are allowed: use "
                       r"trajectory_every >= 2"):
        ckernel.validate("lj", {"steps": 20000, "sample_every": 10, "trajectory_every": 1})
    assert ckernel.validate("lj", {"steps": 20000, "sample_every": 10,
                                   "trajectory_every": 2})["trajectory_every"] == 2


def test_output_fields_leave_the_seed_alone() -> None:
    for kind in KINDS:
        spec = BUILT_IN[kind].params
        assert spec["trajectory_every"].output and spec["save_final"].output


@both_backends
@pytest.mark.parametrize("rebuild", [10, 1])
def test_lj_nve_continued_from_final_xyz_is_bit_identical_to_one_long_run(
        rebuild: int, backend: str, tmp_path: Path) -> None:
    # Bit for bit when the continuation's first neighbour list is the long run's at that
    # step: with rebuild_every = k dividing the first leg (or every step).
    base = {"n_cells": 4, "sample_every": 1, "rebuild_every": rebuild}
    long = ckernel.simulate("lj", {**base, "steps": 60}, 5, backend=backend,
                            artifact_dir=tmp_path / "long")
    ckernel.simulate("lj", {**base, "steps": 30}, 5, backend=backend,
                     artifact_dir=tmp_path / "first")
    # Another seed: with velocities in the file, nothing is drawn.
    second = ckernel.simulate("lj", {**base, "steps": 30}, 6, backend=backend,
                              artifact_dir=tmp_path / "second",
                              inputs={"init": tmp_path / "first" / FINAL_CONFIGURATION})
    for name, values in second["observables"].items():
        if name != "t":
            assert long["observables"][name][30:] == values, name
    end_long = extxyz.read_configuration(tmp_path / "long" / FINAL_CONFIGURATION)
    end_chain = extxyz.read_configuration(tmp_path / "second" / FINAL_CONFIGURATION)
    np.testing.assert_array_equal(end_chain.positions, end_long.positions)
    np.testing.assert_array_equal(end_chain.velocities, end_long.velocities)


def test_lj_nve_continued_with_displacement_rebuilds_agrees_to_rounding(
        tmp_path: Path) -> None:
    # rebuild_every = 0: the long run's list at the joint was built earlier (other pair
    # order, unwrapped positions), so sums round differently: equal to ~1e-14, not bit for bit.
    base = {"n_cells": 4, "sample_every": 1}
    long = ckernel.simulate("lj", {**base, "steps": 40}, 5)
    ckernel.simulate("lj", {**base, "steps": 20}, 5, artifact_dir=tmp_path)
    second = ckernel.simulate("lj", {**base, "steps": 20}, 5,
                              inputs={"init": tmp_path / FINAL_CONFIGURATION})
    np.testing.assert_allclose(second["observables"]["total_energy"],
                               long["observables"]["total_energy"][20:], rtol=0, atol=1e-12)


def test_lj_init_without_velocities_draws_them_from_temperature_and_seed(
        tmp_path: Path) -> None:
    positions, box = ckernel.lj.fcc_lattice(3, 0.8)
    path = tmp_path / "start.xyz"
    with extxyz.open_text(path) as f:
        extxyz.write_frame(f, positions, step=0, time=0.0, box=box)
    params = {"steps": 20, "sample_every": 10, "temperature": 1.5}
    from_file = ckernel.simulate("lj", params, 9, inputs={"init": path})
    from_lattice = ckernel.simulate("lj", {**params, "n_cells": 3}, 9)
    assert from_file["observables"] == from_lattice["observables"]
    assert from_file["summary"]["n_atoms"] == 108.0


@pytest.mark.parametrize("kind", ["nbody", "brownian"])
def test_nbody_and_brownian_start_from_a_final_configuration(kind: str,
                                                             tmp_path: Path) -> None:
    first = {**PARAMS[kind], "steps": 20}
    ckernel.simulate(kind, first, 2, artifact_dir=tmp_path / "a")
    start = extxyz.read_configuration(tmp_path / "a" / FINAL_CONFIGURATION)
    ckernel.simulate(kind, {**first, "steps": 1}, 2, artifact_dir=tmp_path / "b",
                     inputs={"init": tmp_path / "a" / FINAL_CONFIGURATION})
    after = extxyz.read_configuration(tmp_path / "b" / FINAL_CONFIGURATION)
    moved = np.abs(after.positions - start.positions).max()
    assert 0.0 < moved < 0.1  # one step on from the file's state, not from a new start
    if kind == "nbody":
        np.testing.assert_array_equal(after.masses, start.masses)


def test_nbody_init_without_masses_or_velocities_uses_equal_masses_at_rest(
        tmp_path: Path) -> None:
    path = tmp_path / "cloud.xyz"
    positions = np.random.default_rng(0).standard_normal((10, 3))
    with extxyz.open_text(path) as f:
        extxyz.write_frame(f, positions, step=0, time=0.0)
    result = ckernel.simulate("nbody", {"steps": 10, "sample_every": 10}, 0,
                              inputs={"init": path}, artifact_dir=tmp_path / "out")
    assert result["observables"]["kinetic_energy"][0] == 0.0
    assert result["summary"]["n_bodies"] == 10.0
    masses = extxyz.read_configuration(tmp_path / "out" / FINAL_CONFIGURATION).masses
    np.testing.assert_array_equal(masses, np.full(10, 0.1))


def test_reader_round_trips_float64_exactly_and_agrees_with_the_header_reader(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    # Awkward numbers: tiny, huge, negative zero, many digits.
    positions = rng.standard_normal((1000, 3)) * 10.0 ** rng.integers(-300, 300, (1000, 3))
    positions[0] = [-0.0, 5e-324, 1.7976931348623157e308]
    velocities = rng.standard_normal((1000, 3))
    path = tmp_path / "two.xyz"
    with extxyz.open_text(path) as f:
        extxyz.write_frame(f, positions[:7], step=1, time=np.float64(0.5), box=np.float64(3.0))
        extxyz.write_frame(f, positions, step=2, time=1.0, box=3.0, velocities=velocities)
        f.write("\n\n")  # blank lines after the last frame
    read = extxyz.read_configuration(path)
    assert read.header == read_last_header(path)
    assert read.header.step == 2 and read.header.n_atoms == 1000
    assert read_last_header(path).info["Time"] == "1.0"
    np.testing.assert_array_equal(read.positions, positions)
    np.testing.assert_array_equal(read.velocities, velocities)
    assert read.masses is None
    assert np.signbit(read.positions[0, 0])


def test_reader_reads_files_with_crlf_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "dos.xyz"
    path.write_bytes(b'2\r\nLattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3\r\n'
                     b"Ar 0 0 0\r\nAr 1.5 1.5 1.5\r\n")
    read = extxyz.read_configuration(path)
    np.testing.assert_array_equal(read.positions, [[0, 0, 0], [1.5, 1.5, 1.5]])


LJ_LATTICE = 'Lattice="8 0 0 0 8 0 0 0 8" Properties=species:S:1:pos:R:3:vel:R:3'


@pytest.mark.parametrize(("text", "message"), [
    (f"2\n{LJ_LATTICE}\nX 0 0 0 0 0 0\nX 1 1 1 0 0\n",
     r"bad\.xyz:4: an atom line has 6 columns, Properties gives 7"),
    (f"2\n{LJ_LATTICE}\nX 0 0 0 0 0 0\nX 1 1 zz 0 0 0\n",
     r"bad\.xyz: the atom lines of the last frame \(from line 3\) do not hold numbers"),
    (f"2\n{LJ_LATTICE}\nX 0 0 0 0 0 0\nX 1 1 nan 0 0 0\n",
     r"bad\.xyz:4: an atom's numbers are not all finite"),
    ("2\nProperties=species:S:1:pos:R:3\nX 0 0 0\nX 1 1 1\n",
     r"bad\.xyz: lj\.init: the configuration's Lattice \[\] is not a cubic box"),
    ('2\nLattice="8 0 0 0 9 0 0 0 8" Properties=species:S:1:pos:R:3\nX 0 0 0\nX 1 1 1\n',
     r"bad\.xyz: lj\.init: .* is not a cubic box"),
    ('2\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3\nX 0 0 0\nX 1 1 1\n',
     r"bad\.xyz: lj\.rc = 2\.5 out of range: must be at most half the box side \(1\.5\) of "
     r"the init configuration"),
    ('1\nLattice="8 0 0 0 8 0 0 0 8" Properties=species:S:1:pos:R:3\nX 0 0 0\n',
     r"bad\.xyz: lj\.init: the configuration has 1 atoms, allowed 2 to 256000"),
    ('2\nLattice="8 0 0 0 8 0 0 0 8" Properties=species:S:1:pos:R:3:vel:I:3\n'
     "X 0 0 0 1 1 1\nX 1 1 1 1 1 1\n",
     r"bad\.xyz: init: Properties column vel:I:3 must be vel:R:3"),
    ('2\nLattice="8 0 0 0 8 0 0 0 8" Properties=species:S:1:pos:R:3 pbc="T T F"\n'
     "X 0 0 0\nX 1 1 1\n", r'bad\.xyz: lj\.init: pbc="T T F": lj is periodic'),
    ("two\n", r"bad\.xyz:1: 'two' is not an atom count"),
])
def test_bad_or_misfitting_init_files_are_refused_naming_file_and_line(
        text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.xyz"
    path.write_text(text)
    with pytest.raises(ckernel.ParamError, match=message):
        ckernel.simulate("lj", {"steps": 10}, 0, inputs={"init": path})


def test_nonpositive_masses_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.xyz"
    path.write_text("2\nProperties=species:S:1:pos:R:3:masses:R:1\nX 0 0 0 1\nX 1 1 1 0\n")
    with pytest.raises(ckernel.ParamError, match=r"m\.xyz:4: masses must be > 0"):
        ckernel.simulate("nbody", {"steps": 10}, 0, inputs={"init": path})


def test_init_is_refused_with_explicit_positions_or_bodies_and_for_sleep(
        tmp_path: Path) -> None:
    ckernel.simulate("lj", {"n_cells": 3, "steps": 10}, 0, artifact_dir=tmp_path)
    init = {"init": tmp_path / FINAL_CONFIGURATION}
    positions, box = ckernel.lj.fcc_lattice(3, 0.8)
    with pytest.raises(ckernel.ParamError, match=r"lj\.init: not allowed with lj\.positions"):
        ckernel.simulate("lj", {"positions": positions.tolist(), "box": box, "steps": 10}, 0,
                         inputs=init)
    bodies = [{"mass": 1.0, "position": [i, 0, 0], "velocity": [0, 0, 0]} for i in range(2)]
    with pytest.raises(ckernel.ParamError, match=r"nbody\.init: not allowed with nbody\.bodies"):
        ckernel.simulate("nbody", {"bodies": bodies, "steps": 10}, 0, inputs=init)
    with pytest.raises(ckernel.ParamError, match=r"sleep: this kind cannot start from"):
        ckernel.simulate("sleep", {}, 0, inputs=init)
    with pytest.raises(ckernel.ParamError, match=r"lj: unknown input 'start'"):
        ckernel.simulate("lj", {"steps": 10}, 0, inputs={"start": init["init"]})


def test_kind_check_init_accepts_a_final_configuration(tmp_path: Path) -> None:
    ckernel.simulate("lj", {"n_cells": 3, "steps": 10}, 0, artifact_dir=tmp_path)
    frame = ckernel.params.LJ.check_init(ckernel.validate("lj", {}),
                                         tmp_path / FINAL_CONFIGURATION)
    assert frame.n_atoms == 108 and frame.cubic_box is not None and frame.has("vel")
