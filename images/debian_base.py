#!/usr/bin/env python3
"""Build slim Debian base images from this machine's own apt sources, for offline image builds.

Where no image can be pulled from a registry (the test machines, air-gapped sites), the
worker and broker images are built FROM base images made here: ``mmdebstrap`` writes a root
file system from the apt sources configured on this machine (read at run time, so no mirror
name is ever written into the repository) and ``docker import`` turns it into an image.

Variants (all Debian bookworm, Python 3.11 to match the host's cp311 wheels):

``slim``     python3 only, slimmed (no docs, man pages, locales, apt lists): the runtime base.
``builder``  ``slim`` plus gcc and python3-dev: the builder stage's base (no apt in docker build).
``broker``   mosquitto and its clients, slimmed: the broker image's base.

Root file systems are cached as tarballs keyed by a hash of their recipe (suite, packages,
options, the apt sources' content), and downloaded packages are kept in a cache folder, so a
second build of an unchanged recipe only runs ``docker import`` (or nothing, if the image
exists). Usage::

    python3 images/debian_base.py slim builder broker --json
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / ".generated" / "debian-base"
"""Where root file system tarballs and downloaded packages are kept between builds."""

SUITE = "bookworm"
"""Debian release of every variant: its python3 is 3.11, the version of the wheelhouse."""

MERGED_USR_HOOKS = "/usr/share/mmdebstrap/hooks/merged-usr"
"""mmdebstrap's hooks that set up merged /usr without the usrmerge package."""

IMAGE_REPOSITORY = "particle-sim-base"
"""Images are tagged ``particle-sim-base:<variant>-<recipe hash>``."""

# Paths dpkg never unpacks: documentation, manuals and translations are dead weight in an
# image (copyright files go too; the licences are those of Debian's packages, see their source).
SLIM_DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/i18n/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/bash-completion/*",
)

# Run inside the finished root file system: apt's package lists and caches are only needed to
# install more, which these images never do at run time.
SLIM_CLEANUP = (
    'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old '
    '"$1"/var/log/* "$1"/tmp/*'
)


@dataclass(frozen=True)
class Variant:
    """One base image recipe."""

    name: str
    packages: tuple[str, ...]
    mode_variant: str = "essential"
    customize_hooks: tuple[str, ...] = field(default_factory=tuple)
    slim: bool = True


VARIANTS = {
    v.name: v
    for v in (
        # passwd: useradd for the non-root user; libstdc++6: numpy's C extensions link it.
        Variant("slim", ("python3", "libstdc++6", "passwd")),
        Variant("builder", ("python3", "passwd", "gcc", "libc6-dev", "python3-dev")),
        Variant("broker", ("mosquitto", "mosquitto-clients", "passwd")),
    )
}


def apt_source_files() -> list[Path]:
    """The apt sources of this machine (deb822 ``.sources`` files and ``sources.list``)."""
    found = [Path(p) for p in sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))]
    found += [Path(p) for p in sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file() and any(
        line.strip() and not line.lstrip().startswith("#")
        for line in legacy.read_text().splitlines()
    ):
        found.append(legacy)
    if not found:
        raise RuntimeError("no apt sources on this machine (/etc/apt/sources.list[.d]/)")
    return found


def recipe_hash(variant: Variant, sources: list[Path]) -> str:
    """A hash of everything that decides the root file system's content."""
    h = hashlib.sha256()
    h.update(json.dumps([SUITE, variant.name, variant.packages, variant.mode_variant,
                         variant.customize_hooks, variant.slim, SLIM_DPKG_OPTIONS,
                         SLIM_CLEANUP, MERGED_USR_HOOKS]).encode())
    for path in sources:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def image_exists(ref: str) -> bool:
    """Whether the local Docker engine has an image called ``ref``."""
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


def build_rootfs(variant: Variant, sources: list[Path], target: Path, cache: Path) -> None:
    """Run mmdebstrap for ``variant`` into the tarball ``target``."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    cmd = [
        "mmdebstrap", f"--variant={variant.mode_variant}", "--mode=root", "--format=tar",
        f"--include={','.join(variant.packages)}",
        "--aptopt=Acquire::Languages \"none\"",
        # Reuse packages downloaded by earlier builds, and keep the new ones for later builds.
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
        f"--setup-hook=sync-in {debs} /var/cache/apt/archives/",
        f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
        "--skip=download/empty",
        # Merged /usr by directory symlinks, as debootstrap does: otherwise apt satisfies
        # init-system-helpers with the usrmerge package, which drags in 50 MB of perl.
        f"--hook-dir={MERGED_USR_HOOKS}",
    ]
    if variant.slim:
        cmd += [f"--dpkgopt={opt}" for opt in SLIM_DPKG_OPTIONS]
    cmd += [f"--customize-hook={hook}" for hook in variant.customize_hooks]
    if variant.slim:
        cmd.append(f"--customize-hook={SLIM_CLEANUP}")
    partial = target.with_suffix(".partial")
    cmd += [SUITE, str(partial), *map(str, sources)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"mmdebstrap failed for {variant.name}:\n{result.stderr[-4000:]}")
    partial.rename(target)


def ensure_base(variant: Variant, cache: Path = DEFAULT_CACHE,
                labels: dict[str, str] | None = None, changes: tuple[str, ...] = ()) -> dict:
    """Make sure the image of ``variant`` exists; returns its reference and what was done."""
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap not found: apt-get install mmdebstrap")
    sources = apt_source_files()
    key = recipe_hash(variant, sources)
    ref = f"{IMAGE_REPOSITORY}:{variant.name}-{key}"
    if image_exists(ref):
        return {"variant": variant.name, "image": ref, "action": "exists"}
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"{variant.name}-{key}.tar"
    action = "imported"
    if not tarball.exists():
        build_rootfs(variant, sources, tarball, cache)
        action = "built"
    cmd = ["docker", "import"]
    for k, v in (labels or {}).items():
        cmd += ["--change", f"LABEL {k}={v}"]
    for change in changes:
        cmd += ["--change", change]
    subprocess.run([*cmd, str(tarball), ref], check=True, capture_output=True)
    return {"variant": variant.name, "image": ref, "action": action,
            "rootfs_mb": round(tarball.stat().st_size / 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="folder for root file system tarballs and packages")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="label the imported images (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    labels = dict(item.split("=", 1) for item in args.label)
    try:
        results = [ensure_base(VARIANTS[name], args.cache, labels) for name in args.variants]
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['variant']}: {r['image']} ({r['action']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
