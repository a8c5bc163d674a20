"""The kernel backends' types cannot drift: the stub ``ckernel/_kernels.pyi`` against the built
extension (mypy's stubtest), and both backends against the ``Kernels`` protocol, argument
names included (mypy checks the types; it does not compare positional argument names)."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from ckernel import _backend, reference
from ckernel._backend import CompiledKernels, Kernels

ROOT = Path(__file__).resolve().parents[2]

# Cython adds a doctest table to every module; it is no API.
STUBTEST_ALLOWLIST = "ckernel._kernels.__test__\n"


def _protocol_members(protocol: type) -> dict[str, list[str]]:
    """Method name -> its argument names (without self), for every method of ``protocol``."""
    return {name: list(inspect.signature(member).parameters)[1:]
            for name, member in vars(protocol).items()
            if inspect.isfunction(member) and not name.startswith("_")}


def _arguments(module: object, name: str) -> list[str]:
    return list(inspect.signature(getattr(module, name)).parameters)


def test_the_numpy_reference_has_every_kernel_with_the_same_arguments() -> None:
    for name, arguments in _protocol_members(Kernels).items():
        assert _arguments(reference, name) == arguments, name


@pytest.mark.skipif(_backend.compiled is None, reason="needs the compiled kernels")
def test_the_compiled_kernels_have_every_kernel_with_the_same_arguments() -> None:
    members = {**_protocol_members(Kernels), **_protocol_members(CompiledKernels)}
    for name, arguments in members.items():
        assert _arguments(_backend.compiled, name) == arguments, name
    assert isinstance(_backend.compiled.SIMD_VARIANTS, tuple)


@pytest.mark.skipif(_backend.compiled is None, reason="needs the compiled kernels")
def test_the_stub_matches_the_built_extension(tmp_path: Path) -> None:
    pytest.importorskip("mypy.stubtest", reason="needs mypy (the dev extra)")
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(STUBTEST_ALLOWLIST)
    done = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "ckernel._kernels", "--allowlist",
         str(allowlist), "--mypy-config-file", str(ROOT / "pyproject.toml")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
