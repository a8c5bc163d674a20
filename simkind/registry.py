"""The installed kinds: found through the entry-point group ``particle_sim.kinds``.

Every kind, the built-in ones included, is an entry point ``name = "module:attribute"``
naming a :class:`~simkind.kind.Kind`. A plugin that fails to import, is not a Kind, is
named differently from its entry point, or declares a name another package also declares
is left out with a :class:`~simkind.errors.KindLoadError` in :attr:`Registry.errors`; the
other kinds are unaffected.
"""

from __future__ import annotations

import functools
import importlib
import math
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from simkind.errors import KindLoadError, ParamError, SimulationError, UnknownKind
from simkind.kind import ARTIFACT_NAME_RE, Context, Kind, Output
from simproto.transfer import hash_file

GROUP = "particle_sim.kinds"
"""The entry-point group kinds are registered in."""

MAX_SEED = 2**63 - 1



@dataclass(frozen=True)
class LoadedKind:
    """An installed kind with where it comes from."""

    kind: Kind
    version: str
    package: str
    package_version: str
    entry_point: str
    """``name = module:attribute``, as the package declares it."""

    @property
    def name(self) -> str:
        return self.kind.name

    def provenance(self) -> dict[str, str]:
        """What a result records of the code that computed it."""
        return {"kind": self.name, "kind_version": self.version, "package": self.package,
                "package_version": self.package_version}


class Registry:
    """The kinds that loaded, by name, and the plugins that did not."""

    def __init__(self, kinds: Iterable[LoadedKind], errors: Iterable[KindLoadError] = (),
                 broken: dict[str, str] | None = None) -> None:
        self.kinds = {k.name: k for k in kinds}
        self.errors = list(errors)
        self.broken = dict(broken or {})
        """Kind name -> package, for entry points that did not load (hints for errors)."""

    def names(self) -> list[str]:
        return sorted(self.kinds)

    def get(self, name: object) -> LoadedKind:
        """The installed kind ``name``, or UnknownKind saying what is installed and, when a
        package declares the name but failed to load, which one."""
        if isinstance(name, str) and name in self.kinds:
            return self.kinds[name]
        hint = ""
        if isinstance(name, str) and name in self.broken:
            hint = f" (package {self.broken[name]} declares it but failed to load: " \
                   f"run `simctl kinds` for the error)"
        raise UnknownKind(name, self.names(), hint)

    def validate(self, name: object, params: Any) -> dict[str, Any]:
        """Validated params of kind ``name`` (defaults filled in), or ParamError."""
        return self.get(name).kind.validate(params)

    def versions(self) -> dict[str, str]:
        """Kind name -> version, as a worker advertises them."""
        return {name: k.version for name, k in sorted(self.kinds.items())}


def discover(entry_points: Iterable[metadata.EntryPoint] | None = None) -> Registry:
    """Load every kind registered in :data:`GROUP` (or the given entry points)."""
    if entry_points is None:
        entry_points = metadata.entry_points(group=GROUP)
    found: dict[str, list[LoadedKind]] = {}
    errors: list[KindLoadError] = []
    broken: dict[str, str] = {}
    seen: set[tuple[str, str, str]] = set()
    for ep in entry_points:
        package, package_version = _distribution(ep)
        if (ep.name, ep.value, package) in seen:
            continue  # one distribution seen twice on sys.path (an editable install)
        seen.add((ep.name, ep.value, package))
        declared = f"{ep.name} = {ep.value}"
        try:
            loaded = _load(ep, declared, package, package_version)
        except KindLoadError as e:
            errors.append(e)
            broken[ep.name] = package
            continue
        found.setdefault(loaded.name, []).append(loaded)
    kinds = []
    for name, candidates in sorted(found.items()):
        if len(candidates) == 1:
            kinds.append(candidates[0])
            continue
        packages = ", ".join(sorted(c.package for c in candidates))
        for c in candidates:
            errors.append(KindLoadError(c.package, c.entry_point,
                                        f"kind {name!r} is declared by several packages "
                                        f"({packages}); none of them is used: uninstall all "
                                        "but one"))
        broken[name] = packages
    return Registry(kinds, errors, broken)


def _distribution(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", "unknown"
    return dist.metadata["Name"] or "unknown", dist.version or "unknown"


def _load(ep: metadata.EntryPoint, declared: str, package: str,
          package_version: str) -> LoadedKind:
    try:
        obj = ep.load()
    except Exception as e:  # a plugin's import may raise anything; the others must still load
        raise KindLoadError(package, declared, f"import failed: {type(e).__name__}: {e}") from e
    if not isinstance(obj, Kind):
        raise KindLoadError(package, declared,
                            f"names a {type(obj).__name__}, not a simkind.Kind")
    if obj.name != ep.name:
        raise KindLoadError(package, declared,
                            f"the entry point is named {ep.name!r} but the kind {obj.name!r}")
    return LoadedKind(obj, obj.version or package_version, package, package_version, declared)


@functools.cache
def installed() -> Registry:
    """The kinds installed in this environment (loaded once per process)."""
    return discover()


RunFunction = Callable[[dict[str, Any], int, Context], Output]
"""What a kind's ``run`` target is: validated params, seed, context -> output."""


@functools.cache
def run_function(target: str) -> RunFunction:
    """Import a kind's ``module:function`` (where tasks run, never where they are validated)."""
    module, _, attribute = target.partition(":")
    function = getattr(importlib.import_module(module), attribute)
    if not callable(function):
        raise TypeError(f"{target} is not callable")
    return function


def execute(loaded: LoadedKind, params: dict[str, Any], seed: int,
            context: Context | None = None, function: RunFunction | None = None, *,
            validated: bool = False) -> dict[str, Any]:
    """Validate and run one task of ``loaded``; return its JSON-serialisable result.

    Keys: kind, params (validated), seed, observables (name -> list of float), summary (name
    -> float) and metadata (the kind's own, then its provenance, the Python version and the
    elapsed time; ``resumed_from_step`` when the run went on from a checkpoint,
    ``resume_note`` when a given checkpoint was refused). Raises ParamError for bad input
    and SimulationError when the run fails or returns something that is not an
    :class:`Output` of finite numbers; :class:`~simkind.checkpoint.Preempted` passes
    through (the run stopped at a checkpoint, as asked). ``function`` stands in for the
    kind's run target (a caller choosing options of its own kind). ``validated``: the params
    are what this kind's ``validate`` returned already (the worker checked them before it
    handed the task to its task process), so they are not checked twice.
    """
    kind = loaded.kind
    if not validated:
        params = kind.validate(params)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ParamError(f"seed = {seed!r}: must be an integer in [0, 2**63)")
    function = function or run_function(kind.run)
    context = context or Context()
    started = time.perf_counter()
    output = function(params, seed, context)
    elapsed = time.perf_counter() - started
    if not isinstance(output, Output):
        raise SimulationError(f"{kind.name}: {kind.run} returned a {type(output).__name__}, "
                              "not a simkind.Output")
    observables: dict[str, list[float]] = {}
    shapes: dict[str, list[int]] = {}
    for name, values in output.observables.items():
        flat, shape = _series(kind.name, str(name), values)
        observables[str(name)] = flat
        if len(shape) != 1:
            shapes[str(name)] = shape
    metadata = {**plain(dict(output.metadata)), **loaded.provenance(),
                "python_version": platform.python_version(), "elapsed_s": elapsed}
    if shapes:
        metadata["observable_shapes"] = shapes
    if context.resumed_step > 0:
        metadata["resumed_from_step"] = context.resumed_step
    if context.resume_note:
        metadata["resume_note"] = context.resume_note
    return {
        "kind": kind.name,
        "params": params,
        "seed": seed,
        "artifacts": artifact_manifest(kind.name, context.folder_written()),
        "observables": observables,
        "summary": {str(name): _finite(kind.name, f"summary {name}", value)
                    for name, value in output.summary.items()},
        "metadata": metadata,
    }


def artifact_manifest(kind: str, folder: Path | None) -> list[dict[str, Any]]:
    """Every file a task left in its artifact folder: name, size and SHA-256, by name.
    Anything there that is not a plain file of a valid name is the kind's mistake."""
    if folder is None or not folder.exists():
        return []
    manifest = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.is_symlink() or not ARTIFACT_NAME_RE.match(path.name):
            raise SimulationError(f"{kind}: {path.name!r} in the artifact folder is not a "
                                  f"plain file named as {ARTIFACT_NAME_RE.pattern}")
        size, sha256 = hash_file(path)
        manifest.append({"name": path.name, "size": size, "sha256": sha256})
    return manifest


def _series(kind: str, name: str, values: Any) -> tuple[list[float], list[int]]:
    """An observable as a flat list of finite floats (C order) and its shape: the wire
    carries flat series, and the shape of an array of more than one dimension is kept in
    the metadata (``observable_shapes``)."""
    if hasattr(values, "tolist"):  # a numpy array, without importing numpy here
        values = values.tolist()
    if type(values) is list and all(type(x) is float for x in values) \
            and math.isfinite(sum(values)):
        # The common case, per task: a flat series of floats. A sum is finite only when
        # every term is (an infinite or NaN term makes it inf or NaN; an overflowing sum of
        # finite terms falls through to the check of each).
        return values, [len(values)]
    shape: list[int] = []
    level = values
    while isinstance(level, list | tuple):
        shape.append(len(level))
        level = level[0] if level else None
    flat: list[Any] = [values]
    for _ in shape:
        if any(not isinstance(v, list | tuple) or len(v) != len(flat[0]) for v in flat):
            raise SimulationError(f"{kind}: observable {name} is not a rectangular array")
        flat = [x for row in flat for x in row]
    return [_finite(kind, f"observable {name}", x) for x in flat], shape


_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})
"""Types :func:`plain` returns unchanged (floats are checked to be finite)."""


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into JSON-ready Python objects."""
    if type(value) in _PLAIN_SCALARS:  # most metadata values: nothing to turn
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy array or scalar
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN; keep the information as text
    return value


def _finite(kind: str, what: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SimulationError(f"{kind}: {what} = {value!r:.60} is not a number") from None
    if not math.isfinite(number):
        raise SimulationError(f"{kind}: {what} is {number} (not finite)")
    return number
