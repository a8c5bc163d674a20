"""What a plugin's source folder consists of, a hash of it, and what a pinned requirement
looks like. Standard library only: ``images/build.py`` imports it from the repository
before anything is installed."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

PINNED_REQUIREMENT = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?P<extras>\[[A-Za-z0-9._, -]+\])?"
    r"\s*==\s*(?P<version>[A-Za-z0-9.+!_-]+)")
"""A pinned requirement ``name[extras]==version``: the only kind of package name an image
build or ``simctl local install`` accepts besides paths (the tag hashes its inputs)."""

BUILD_OUTPUTS = frozenset({"build", "dist", "__pycache__", ".git", ".venv", ".eggs",
                           ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox"})
"""Folders of a source folder (outside git) that are not part of its content."""

BUILD_OUTPUT_SUFFIXES = (".so", ".pyd", ".pyc", ".o", ".egg-info")
"""Files (and egg-info folders) of a source folder (outside git) that are not part of it."""


def folder_files(folder: Path) -> list[Path]:
    """A source folder's files, relative to it: what git tracks or would track there, else
    every file but build outputs."""
    listed = subprocess.run(["git", "-C", str(folder), "ls-files", "--cached", "--others",
                             "--exclude-standard", "--", "."], capture_output=True, text=True,
                            check=False)
    files = {Path(line) for line in listed.stdout.splitlines() if line}
    if listed.returncode == 0 and files:  # else: not in git, or all of it ignored
        return sorted(f for f in files if (folder / f).is_file())
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in BUILD_OUTPUTS and not d.endswith(BUILD_OUTPUT_SUFFIXES))
        found += [(Path(dirpath) / name).relative_to(folder) for name in filenames
                  if not name.endswith(BUILD_OUTPUT_SUFFIXES)]
    return sorted(found)


def content_hash(root: Path, files: list[Path], salt: str = "") -> str:
    """A SHA-256 of ``files`` (relative to ``root``): their names and contents."""
    h = hashlib.sha256(salt.encode())
    for rel in files:
        h.update(str(rel).encode() + b"\0")
        h.update(hashlib.sha256((root / rel).read_bytes()).digest())
    return h.hexdigest()
