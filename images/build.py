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

Extra packages for the worker (``--extra-package``, repeatable; Ansible's
``particle_worker_extra_packages``), e.g. a lab's own kind: a source folder (the files git
tracks or would track there, else every file but build outputs) is built into a wheel in the
builder stage with the wheelhouse's build tools (``--no-build-isolation``, no index); a
``.whl`` file is copied as it is; a requirement (``name==version``) is downloaded on the main
PC like the wheelhouse. Their own dependencies (other than particle-sim) are downloaded too.
All of it is part of the context, so a changed plugin changes the worker's tag (and only
the worker's).

Stdlib only (it runs on the main PC, maybe before the project is installed). Usage::

    python3 images/build.py --json
    python3 images/build.py --json --only worker --extra-package examples/fput-chain
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
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

IMAGES = Path(__file__).resolve().parent
REPO = IMAGES.parent

# What a plugin's source folder holds is decided in one place, shared with `simctl local
# install`; that module needs only the standard library, so nothing must be installed yet.
sys.path.insert(0, str(REPO))
from simctl.sources import PINNED_REQUIREMENT, content_hash, folder_files  # noqa: E402

WHEELHOUSE_ROOT = IMAGES / "wheelhouse"
DIST = IMAGES / "dist"
REQUIREMENTS = IMAGES / "requirements.txt"
EXTRAS_CACHE = WHEELHOUSE_ROOT / "extras"
"""Downloaded extra requirements and the extras' dependencies, one folder per set."""

PROJECT_NAME = "particle-sim"
"""Our own distribution: an extra's dependency on it is met by the image's own wheel."""

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
    extras: list[Extra] = field(default_factory=list)


@dataclass(frozen=True)
class Extra:
    """One extra package: a source folder, a wheel file or a requirement (``name==1.0``)."""

    spec: str
    """As the user wrote it."""
    kind: str
    """``folder``, ``wheel`` or ``requirement``."""
    path: Path | None = None
    """The folder or wheel (absolute), None for a requirement."""

    @classmethod
    def parse(cls, spec: str) -> Extra:
        """Folders and wheels are absolute or relative to the repository (then the current
        folder); anything else must be a requirement ``name==version``."""
        candidates = [Path(spec)] if Path(spec).is_absolute() else [REPO / spec, Path(spec)]
        for path in candidates:
            if path.is_dir():
                return cls(spec, "folder", path.resolve())
            if path.is_file() and path.name.endswith(".whl"):
                return cls(spec, "wheel", path.resolve())
        if spec.endswith(".whl") or "/" in spec or spec.startswith("."):
            raise BuildError(f"extra package {spec!r}: no such folder or wheel (relative paths "
                             f"are taken from {REPO})")
        if not PINNED_REQUIREMENT.fullmatch(spec):
            raise BuildError(f"extra package {spec!r}: not a folder, a .whl file, or a pinned "
                             "requirement name==version (pin it: the tag is a hash of the "
                             "inputs)")
        return cls(spec, "requirement")

    def files(self) -> list[Path]:
        """A folder's files (relative): what git tracks or would track there, else every file
        but build outputs. A wheel: the file itself."""
        if self.kind == "wheel":
            assert self.path is not None
            return [Path(self.path.name)]
        assert self.kind == "folder" and self.path is not None
        return folder_files(self.path)

    def fingerprint(self) -> str:
        """A hash of the package's content (folder files, wheel bytes, requirement text)."""
        salt = f"{self.kind}\0{self.spec}\0"
        if self.kind == "requirement":
            return content_hash(REPO, [], salt)
        assert self.path is not None
        root = self.path if self.kind == "folder" else self.path.parent
        return content_hash(root, self.files(), salt)


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_dependencies(extra: Extra) -> list[str]:
    """The requirement strings an extra declares (folder: pyproject.toml's
    [project.dependencies]; wheel: its METADATA), without our own project."""
    assert extra.path is not None
    lines: list[str] = []
    if extra.kind == "wheel":
        with zipfile.ZipFile(extra.path) as wheel:
            meta = next((n for n in wheel.namelist()
                         if n.endswith(".dist-info/METADATA") and n.count("/") == 1), None)
            text = wheel.read(meta).decode() if meta else ""
        lines = [line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("Requires-Dist:")]
    elif (extra.path / "pyproject.toml").is_file():
        try:
            import tomllib
        except ImportError:  # Python 3.10: declare the extras' dependencies as requirements
            return []
        project = tomllib.loads((extra.path / "pyproject.toml").read_text()).get("project", {})
        lines = list(project.get("dependencies", []))
    wanted = []
    for line in lines:
        if re.search(r"\bextra\s*==", line):
            continue  # optional extras are not installed
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if name and canonical(name[1]) != PROJECT_NAME:
            wanted.append(line)
    return wanted


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


def target_args(python_version: str, machine: str) -> list[str]:
    """``pip download`` options for binary wheels of the image's Python and platform."""
    abi = f"cp{python_version.replace('.', '')}"
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in (36, 28, 27, 17)]
    platforms.append(f"manylinux2014_{machine}")
    return ["--only-binary=:all:", "--python-version", python_version, "--implementation",
            "cp", "--abi", abi, "--abi", "none",
            *[arg for p in platforms for arg in ("--platform", p)], "--platform", "any"]


def download(folder: Path, requirements: list[str], target: list[str], what: str,
             constraints: Path | None = None) -> None:
    """``pip download`` into ``folder``; nothing is fetched when the folder satisfies it."""
    base = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(folder), *target]
    if constraints is not None:
        base += ["--constraint", str(constraints)]
    base += requirements
    offline = subprocess.run([*base, "--no-index", "--find-links", str(folder)],
                             capture_output=True, text=True)
    if offline.returncode != 0:
        run(base, what)


def ensure_wheelhouse(python_version: str, machine: str) -> Path:
    """Download every pinned wheel for ``python_version`` on ``machine`` (once)."""
    folder = WHEELHOUSE_ROOT / f"cp{python_version.replace('.', '')}-{machine}"
    folder.mkdir(parents=True, exist_ok=True)
    download(folder, ["--requirement", str(REQUIREMENTS)], target_args(python_version, machine),
             "downloading the wheelhouse (pip download)")
    return folder


def ensure_extra_wheels(extras: list[Extra], python_version: str, machine: str,
                        wheelhouse: Path) -> Path | None:
    """Wheels of the extra requirements and of every extra's own dependencies that the
    wheelhouse lacks, in a folder keyed by what is asked (None: nothing to download).

    Our own project is never downloaded (an extra's dependency on it is met by the image's
    wheel); requirements.txt constrains the versions, so an extra cannot move numpy."""
    wanted = [e.spec for e in extras if e.kind == "requirement"]
    deps = sorted({d for e in extras if e.kind != "requirement" for d in declared_dependencies(e)})
    if not wanted and not deps:
        return None
    key = hashlib.sha256(json.dumps([python_version, machine, wanted, deps]).encode())
    folder = EXTRAS_CACHE / f"cp{python_version.replace('.', '')}-{machine}-{key.hexdigest()[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    target = target_args(python_version, machine)
    if wanted:
        # --no-deps: a plugin names particle-sim, which no index has (or an unrelated one).
        download(folder, ["--no-deps", *wanted], target,
                 f"downloading the extra packages {', '.join(wanted)} (pip download)")
        for wheel in sorted(folder.glob("*.whl")):
            name = canonical(wheel.name.split("-")[0])
            if any(canonical(re.split(r"[\[=\s]", w)[0]) == name for w in wanted):
                deps += declared_dependencies(Extra(wheel.name, "wheel", wheel))
    deps = sorted(set(deps))
    if deps:
        download(folder, ["--find-links", str(wheelhouse), *deps], target,
                 f"downloading the extras' dependencies {', '.join(deps)} (pip download)",
                 constraints=REQUIREMENTS)
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
                     source_ref: str | None, extra_wheels: Path | None = None) -> None:
    """Copy the Dockerfile folder, and the wheelhouse, sources and extras if needed, into
    ``into``.

    Sources come from the working tree, or from git ``source_ref`` when given (extra source
    folders always from the working tree). Extras go to ``extras/``: ``src/NN-name/`` per
    source folder (built in the builder stage), ``wheels/`` (given and downloaded wheels), and
    ``requirements.txt`` (what the runtime stage installs besides the built wheels)."""
    shutil.copytree(spec.folder, into, dirs_exist_ok=True)
    if spec.with_wheelhouse:
        assert wheelhouse is not None
        shutil.copytree(wheelhouse, into / "wheelhouse")
        add_extras(spec.extras, extra_wheels, wheelhouse, into / "extras")
        if source_ref:
            export_sources(source_ref, into / "src")
            return
        for rel in project_sources():
            dest = into / "src" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest)


def add_extras(extras: list[Extra], extra_wheels: Path | None, wheelhouse: Path,
               into: Path) -> None:
    """The extras' part of the context (always present, empty without extras)."""
    (into / "src").mkdir(parents=True)
    (into / "wheels").mkdir()
    install = []
    if extra_wheels is not None:
        for wheel in sorted(extra_wheels.glob("*.whl")):
            if not (wheelhouse / wheel.name).exists():  # e.g. numpy: in the image already
                shutil.copy2(wheel, into / "wheels" / wheel.name)
    for number, extra in enumerate(extras, 1):
        if extra.kind == "requirement":
            install.append(extra.spec)
            continue
        assert extra.path is not None
        if extra.kind == "wheel":
            shutil.copy2(extra.path, into / "wheels" / extra.path.name)
            install.append(f"/extras/wheels/{extra.path.name}")
            continue
        dest = into / "src" / f"{number:02d}-{extra.path.name}"
        for rel in extra.files():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(extra.path / rel, dest / rel)
    (into / "requirements.txt").write_text("".join(f"{line}\n" for line in install))


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


def export_extra_wheels(context_tag: str, context_args: list[str],
                        context: Path, target: Path) -> bool:
    """The extras' wheels (built from source folders in the builder stage, given, downloaded,
    and their dependencies) into ``target``, for the offline bundle; False if it exists."""
    if target.exists():
        return False
    # The builder stage again: every step is in the engine's cache from the build just done.
    built = run(["docker", "build", "--quiet", "--force-rm", "--target", "builder",
                 *context_args, str(context)], f"building the builder stage of {context_tag}",
                env=DOCKER_ENV)
    container = run(["docker", "create", built.stdout.strip().splitlines()[-1], "true"],
                    "creating a container of the builder stage").stdout.strip()
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        for folder in ("/extras/wheels/.", "/dist/extras/."):
            probe = subprocess.run(["docker", "cp", f"{container}:{folder}", str(partial)],
                                   capture_output=True, text=True)
            if probe.returncode != 0 and "Could not find" not in probe.stderr \
                    and "No such" not in probe.stderr:
                raise BuildError(f"copying {folder} out of the builder stage: {probe.stderr}")
    finally:
        subprocess.run(["docker", "rm", "--force", container], capture_output=True)
    partial.rename(target)
    return True


def build_image(spec: ImageSpec, wheelhouse: Path | None, labels: dict[str, str],
                export: bool, source_ref: str | None,
                extra_wheels: Path | None = None) -> dict[str, object]:
    """Build (unless the tag exists) and export (unless the TAR exists) one image."""
    with tempfile.TemporaryDirectory(prefix=f"{spec.name}-context-") as tmp:
        context = Path(tmp)
        assemble_context(spec, wheelhouse, context, source_ref, extra_wheels)
        tag = inputs_hash(context, spec)
        ref = f"{spec.name}:{tag}"
        built = False
        args = ["--label", f"org.particle-sim.inputs={tag}"]
        for key, value in [*spec.build_args.items()]:
            args += ["--build-arg", f"{key}={value}"]
        for key, value in labels.items():
            args += ["--label", f"{key}={value}"]
        if image_id(ref) is None:
            # --force-rm: no container is left behind by a failed step.
            run(["docker", "build", "--quiet", "--force-rm", "--tag", ref, *args, str(context)],
                f"building {ref}", env=DOCKER_ENV)
            built = True
        wheels = DIST / f"{spec.name}-{tag}-wheels" if export and spec.extras else None
        wheels_exported = (wheels is not None
                           and export_extra_wheels(ref, args, context, wheels))
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
        "changed": built or exported or wheels_exported,
        "extras": [e.spec for e in spec.extras],
        "extra_wheels": str(wheels) if wheels else None,
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
    parser.add_argument("--extra-package", action="append", default=[], metavar="PACKAGE",
                        help="extra Python package for the worker image (repeatable): a source "
                             "folder or .whl file (absolute or relative to the repository) or "
                             "a requirement name==version")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        labels = {**json.loads(args.labels_json),
                  **dict(item.split("=", 1) for item in args.label)}
    except (ValueError, TypeError) as e:
        parser.error(f"invalid labels: {e}")
    wanted = args.only or ["worker", "broker"]
    try:
        extras = [Extra.parse(spec) for spec in args.extra_package]
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    specs = {
        "worker": ImageSpec("particle-worker", IMAGES / "worker",
                            {"BASE_IMAGE": args.base_image,
                             "BUILDER_IMAGE": args.builder_image or args.base_image}, True,
                            extras),
        "broker": ImageSpec("particle-broker", IMAGES / "broker",
                            {"BASE_IMAGE": args.broker_base_image}, False),
    }
    try:
        wheelhouse = extra_wheels = None
        if "worker" in wanted:
            machine = docker_platform()
            wheelhouse = ensure_wheelhouse(args.python_version, machine)
            extra_wheels = ensure_extra_wheels(extras, args.python_version, machine, wheelhouse)
        results = {name: build_image(specs[name], wheelhouse, labels, not args.no_export,
                                     args.source_ref, extra_wheels)
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
