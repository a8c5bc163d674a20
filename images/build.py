#!/usr/bin/env python3
"""Build the particle-sim images and export them as reproducibly gzipped TARs.

Steps, each skipped when its result already exists:

1. Wheelhouse: every wheel of ``images/requirements.txt`` for the image's Python version and
   platform, downloaded with ``pip download`` into ``images/wheelhouse/<python>-<platform>/``
   (no download at all when the folder already satisfies the list).
2. Build context: the Dockerfile, the wheelhouse (worker) and the project's sources (the files
   git tracks or would track under the packages named in pyproject.toml) in a temp folder.
3. Tag: a hash of every file of the context, the build arguments and the base images' ids.
   ``particle-worker:<tag>`` / ``particle-broker:<tag>``; a tag that exists is not rebuilt.
4. TAR: ``docker save | gzip -n`` into ``images/dist/<name>-<tag>.tar.gz``; an unchanged
   image keeps its TAR, so nothing is shipped again.

Stdlib only (it runs on the main PC, maybe before the project is installed). Usage::

    python3 images/build.py --json
    python3 images/build.py --base-image particle-sim-base:slim-... \\
        --builder-image particle-sim-base:builder-... \\
        --broker-base-image particle-sim-base:broker-...
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

IMAGES = Path(__file__).resolve().parent
REPO = IMAGES.parent
WHEELHOUSE_ROOT = IMAGES / "wheelhouse"
DIST = IMAGES / "dist"
REQUIREMENTS = IMAGES / "requirements.txt"

PROJECT_FILES = ("pyproject.toml", "setup.py", "README.md", "LICENSE")
"""Top-level files the project's wheel is built from, besides its packages."""

PROJECT_PACKAGES = ("ckernel", "simkind", "simproto", "worker_agent", "simctl")
"""The packages of pyproject.toml's [tool.setuptools] packages."""

DEFAULT_BASE_IMAGE = "python:3.11-slim"
DEFAULT_BROKER_BASE_IMAGE = "eclipse-mosquitto:2"
DEFAULT_PYTHON_VERSION = "3.11"

# Legacy builder: this engine has no buildx plugin, and the Dockerfiles need no BuildKit feature.
DOCKER_ENV = {**os.environ, "DOCKER_BUILDKIT": "0"}


class BuildError(RuntimeError):
    """A step of the image build failed; the message says which and why."""


@dataclass(frozen=True)
class ImageSpec:
    """One image: its name, Dockerfile folder, build arguments and base images."""

    name: str
    folder: Path
    build_args: dict[str, str]
    with_wheelhouse: bool


def run(cmd: list[str], what: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; a failure raises BuildError with ``what`` and the command's stderr."""
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        tail = (result.stderr or result.stdout or "")[-4000:]
        raise BuildError(f"{what} failed ({' '.join(cmd[:3])} ...):\n{tail}")
    return result


def docker_platform() -> str:
    """The wheel platform tag of the Docker engine's architecture (manylinux)."""
    arch = run(["docker", "info", "--format", "{{.Architecture}}"], "docker info").stdout.strip()
    machine = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
    if arch not in machine:
        raise BuildError(f"unsupported Docker engine architecture {arch!r}")
    return machine[arch]


def ensure_wheelhouse(python_version: str, machine: str) -> Path:
    """Download every pinned wheel for ``python_version`` on ``machine`` (once)."""
    folder = WHEELHOUSE_ROOT / f"cp{python_version.replace('.', '')}-{machine}"
    folder.mkdir(parents=True, exist_ok=True)
    abi = f"cp{python_version.replace('.', '')}"
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in (36, 28, 27, 17)]
    platforms.append(f"manylinux2014_{machine}")
    target = ["--only-binary=:all:", "--python-version", python_version, "--implementation",
              "cp", "--abi", abi, "--abi", "none",
              *[arg for p in platforms for arg in ("--platform", p)], "--platform", "any"]
    base = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(folder),
            "--requirement", str(REQUIREMENTS), *target]
    offline = subprocess.run([*base, "--no-index", "--find-links", str(folder)],
                             capture_output=True, text=True)
    if offline.returncode != 0:
        run(base, "downloading the wheelhouse (pip download)")
    return folder


def export_sources(ref: str, into: Path) -> None:
    """The project's sources as committed at git ``ref`` (a tag, branch or commit)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref, "--",
                              *PROJECT_FILES, *PROJECT_PACKAGES], capture_output=True)
    if archive.returncode != 0:
        raise BuildError(f"exporting the sources of {ref!r} failed: {archive.stderr.decode()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)


def project_sources() -> list[Path]:
    """The project's source files, as git sees them (tracked or not ignored), relative."""
    listed = run(["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard",
                  "--", *PROJECT_FILES, *PROJECT_PACKAGES], "listing the sources (git ls-files)")
    files = sorted({Path(line) for line in listed.stdout.splitlines() if line})
    return [f for f in files if (REPO / f).is_file()]


def assemble_context(spec: ImageSpec, wheelhouse: Path | None, into: Path,
                     source_ref: str | None) -> None:
    """Copy the Dockerfile folder, and the wheelhouse and sources if needed, into ``into``.

    Sources come from the working tree, or from git ``source_ref`` when given."""
    shutil.copytree(spec.folder, into, dirs_exist_ok=True)
    if spec.with_wheelhouse:
        assert wheelhouse is not None
        shutil.copytree(wheelhouse, into / "wheelhouse")
        if source_ref:
            export_sources(source_ref, into / "src")
            return
        for rel in project_sources():
            dest = into / "src" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest)


def image_id(ref: str) -> str | None:
    """The id of a local image, or None when the engine does not have it."""
    result = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref],
                            capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def inputs_hash(context: Path, spec: ImageSpec) -> str:
    """A hash of every file in the context, the build arguments and the base images' ids."""
    h = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(context)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    for key, value in sorted(spec.build_args.items()):
        # A base image is identified by its content (id) when present, else by its name.
        h.update(f"{key}={value}={image_id(value) or ''}\0".encode())
    return h.hexdigest()[:16]


def export_tar(ref: str, target: Path) -> None:
    """``docker save`` piped through gzip without name or time stamp (``gzip -n``)."""
    partial = target.with_name(target.name + ".partial")
    with subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE) as save:
        assert save.stdout is not None
        with partial.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                      mtime=0, compresslevel=6) as gz:
            shutil.copyfileobj(save.stdout, gz, 1 << 20)
    if save.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BuildError(f"docker save {ref} failed")
    partial.rename(target)


def build_image(spec: ImageSpec, wheelhouse: Path | None, labels: dict[str, str],
                export: bool, source_ref: str | None) -> dict[str, object]:
    """Build (unless the tag exists) and export (unless the TAR exists) one image."""
    with tempfile.TemporaryDirectory(prefix=f"{spec.name}-context-") as tmp:
        context = Path(tmp)
        assemble_context(spec, wheelhouse, context, source_ref)
        tag = inputs_hash(context, spec)
        ref = f"{spec.name}:{tag}"
        built = False
        if image_id(ref) is None:
            # --force-rm: no container is left behind by a failed step.
            cmd = ["docker", "build", "--quiet", "--force-rm", "--tag", ref,
                   "--label", f"org.particle-sim.inputs={tag}"]
            for key, value in [*spec.build_args.items()]:
                cmd += ["--build-arg", f"{key}={value}"]
            for key, value in labels.items():
                cmd += ["--label", f"{key}={value}"]
            run([*cmd, str(context)], f"building {ref}", env=DOCKER_ENV)
            built = True
    tar = DIST / f"{spec.name}-{tag}.tar.gz"
    exported = False
    if export and not tar.exists():
        DIST.mkdir(parents=True, exist_ok=True)
        export_tar(ref, tar)
        exported = True
    return {
        "image": ref,
        "tag": tag,
        "built": built,
        "tar": str(tar) if export else None,
        "exported": exported,
        "tar_mb": round(tar.stat().st_size / 1e6, 1) if export else None,
        "changed": built or exported,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-image", default=DEFAULT_BASE_IMAGE,
                        help=f"runtime base of the worker image (default {DEFAULT_BASE_IMAGE})")
    parser.add_argument("--builder-image", default=None,
                        help="base of the worker's builder stage (default: --base-image)")
    parser.add_argument("--broker-base-image", default=DEFAULT_BROKER_BASE_IMAGE,
                        help=f"base of the broker image (default {DEFAULT_BROKER_BASE_IMAGE})")
    parser.add_argument("--python-version", default=DEFAULT_PYTHON_VERSION,
                        help="Python version of the base image, for the wheelhouse")
    parser.add_argument("--only", choices=("worker", "broker"), action="append",
                        help="build only this image (repeatable; default both)")
    parser.add_argument("--source-ref", default=None, metavar="GIT_REF",
                        help="build the sources committed at this git ref (default: the "
                             "working tree as it is)")
    parser.add_argument("--no-export", action="store_true", help="build, but write no TARs")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="extra image label (repeatable)")
    parser.add_argument("--labels-json", default="{}", metavar="JSON",
                        help='extra image labels as a JSON object, e.g. \'{"team": "a"}\'')
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        labels = {**json.loads(args.labels_json),
                  **dict(item.split("=", 1) for item in args.label)}
    except (ValueError, TypeError) as e:
        parser.error(f"invalid labels: {e}")
    wanted = args.only or ["worker", "broker"]
    specs = {
        "worker": ImageSpec("particle-worker", IMAGES / "worker",
                            {"BASE_IMAGE": args.base_image,
                             "BUILDER_IMAGE": args.builder_image or args.base_image}, True),
        "broker": ImageSpec("particle-broker", IMAGES / "broker",
                            {"BASE_IMAGE": args.broker_base_image}, False),
    }
    try:
        wheelhouse = (ensure_wheelhouse(args.python_version, docker_platform())
                      if "worker" in wanted else None)
        results = {name: build_image(specs[name], wheelhouse, labels, not args.no_export,
                                         args.source_ref)
                   for name in wanted}
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, r in results.items():
            state = "built" if r["built"] else "up to date"
            print(f"{name}: {r['image']} ({state}){'  ' + str(r['tar']) if r['tar'] else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
