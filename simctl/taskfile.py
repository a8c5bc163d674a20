"""Task files: load, check and expand a YAML sweep into tasks with their seeds.

Rules (docs/tasks.md): parameter precedence ``defaults`` < ``params`` < ``sweep``; tasks
expand in file order, sweep keys in the order written (the first key varies slowest), and
replicas innermost. Kinds are the installed ones (``simkind``: built-in and plugins), and
each task records the version of its kind it was validated with. Every task's seed is
derived from the run seed and the task's content (:func:`task_seed`), not its position, so
adding sweep points leaves the other tasks' seeds (and their reuse) alone; the stored seed
is the exact integer the kind's run function gets. Every error names the file, the line and
the field.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import simkind
from simctl.errors import TaskFileError
from simproto.protocol import MAX_CONTROL_BYTES

DEFAULT_MAX_ATTEMPTS = 3
"""Tries per task, counting the first, when the file does not say."""

MAX_ATTEMPTS_LIMIT = 100
"""Largest ``max_attempts`` a task file may ask for."""

DEFAULT_MAX_LOST = 5
"""Times a task may lose its worker (killed, cut off, silent, stopping) before it fails: lost
attempts do not count against ``max_attempts``, but a task that kills its agent (out of
memory, say) must not be handed out forever."""

MAX_LOST_LIMIT = 100
"""Largest ``max_lost`` a task file may ask for."""

MAX_TASKS = 1_000_000
"""Largest number of tasks one file may expand to."""

MAX_NAME_LENGTH = 200
"""Longest run name."""

MAX_PARAMS_BYTES = MAX_CONTROL_BYTES - 4096
"""Largest parameter set (as JSON) of one task: it must fit in one assignment message."""


TOP_KEYS = ("name", "description", "seed", "max_attempts", "max_lost", "defaults", "tasks")
"""Keys allowed at the top of a task file."""

ENTRY_KEYS = ("kind", "params", "sweep", "replicas")
"""Keys allowed in one entry of ``tasks``."""

_SEED_MASK = (1 << 63) - 1


class _Mapping(dict):
    """A YAML mapping that remembers the line (1-based) of each key and of itself."""

    line: int
    key_lines: dict[Any, int]


class _List(list):
    """A YAML sequence that remembers the line of itself and of each item."""

    line: int
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """A safe loader whose mappings and sequences carry line numbers; duplicate keys fail."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> _Mapping:
        mapping = _Mapping()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError as e:
                raise yaml.constructor.ConstructorError(
                    None, None, f"unhashable key {key!r}", key_node.start_mark
                ) from e
            if key in mapping:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            mapping[key] = self.construct_object(value_node, deep=True)
            mapping.key_lines[key] = key_node.start_mark.line + 1
        return mapping

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> _List:
        seq = _List(self.construct_object(child, deep=True) for child in node.value)
        seq.line = node.start_mark.line + 1
        seq.item_lines = [child.start_mark.line + 1 for child in node.value]
        return seq


_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader.construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _LineLoader.construct_sequence)


@dataclass(frozen=True)
class TaskSpec:
    """One expanded task: what a worker runs and the seed it runs with."""

    index: int
    kind: str
    params: dict[str, Any]
    seed: int
    kind_version: str | None = None

    @property
    def reuse_key(self) -> str:
        return reuse_key(self.kind, self.kind_version, self.params, self.seed)


def reuse_key(kind: str, version: str | None, params: dict[str, Any], seed: int) -> str:
    """What makes two tasks the same computation: kind, kind version, validated params and
    seed (a done task with the same key is reused instead of run again)."""
    return _digest({"kind": kind, "version": version, "params": params, "seed": seed})


@dataclass(frozen=True)
class TaskFile:
    """A checked task file and its expansion."""

    path: Path
    name: str
    seed: int
    seed_given: bool
    max_attempts: int
    tasks: list[TaskSpec]
    text: str
    max_lost: int = DEFAULT_MAX_LOST

    def kinds(self) -> dict[str, int]:
        """Number of tasks per kind, in order of first appearance."""
        counts: dict[str, int] = {}
        for t in self.tasks:
            counts[t.kind] = counts.get(t.kind, 0) + 1
        return counts

    def kind_versions(self) -> dict[str, str | None]:
        """The version of each kind the tasks were validated with."""
        return {t.kind: t.kind_version for t in self.tasks}


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def task_seed(run_seed: int, kind: str, params: dict[str, Any], occurrence: int) -> int:
    """A task's seed: ``SeedSequence(run_seed, spawn_key=(content..., occurrence))``, one
    uint64 masked to 63 bits (the protocol's seed range). The content is a SHA-256 of the
    kind and validated params; ``occurrence`` counts earlier tasks of the file with the same
    content (the replicas of a point are its occurrences 0, 1, ...)."""
    return _seed(run_seed, _digest({"kind": kind, "params": params}), occurrence)


def _seed(run_seed: int, content: str, occurrence: int) -> int:
    import numpy as np

    words = [int(content[i:i + 8], 16) for i in (0, 8, 16, 24)]
    state = np.random.SeedSequence(run_seed, spawn_key=(*words, occurrence))
    return int(state.generate_state(1, dtype=np.uint64)[0]) & _SEED_MASK


class _Checker:
    """Walks one parsed file, raising TaskFileError with file, line and field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, line: int | None, field: str | None, message: str) -> TaskFileError:
        return TaskFileError(self.path, line, field, message)

    def kind(self, kinds: simkind.Registry, container: Any, key: Any, field: str,
             name: Any) -> simkind.LoadedKind:
        """The installed kind ``name``, or the error naming it (and what is installed)."""
        try:
            return kinds.get(name)
        except simkind.UnknownKind as e:
            raise self.fail(self.line_of(container, key), field, str(e)) from e

    @staticmethod
    def line_of(container: Any, key: Any) -> int | None:
        if isinstance(container, _Mapping):
            return container.key_lines.get(key, container.line)
        if (
            isinstance(container, _List)
            and isinstance(key, int)
            and key < len(container.item_lines)
        ):
            return container.item_lines[key]
        return getattr(container, "line", None)

    def int_field(self, mapping: dict[Any, Any], key: str, field: str, lo: int, hi: int) -> int:
        value = mapping[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(self.line_of(mapping, key), field, f"must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise self.fail(
                self.line_of(mapping, key), field, f"{value} is out of range [{lo}, {hi}]"
            )
        return value

    def mapping(self, container: Any, key: Any, field: str) -> dict[Any, Any]:
        value = container[key]
        if not isinstance(value, dict):
            raise self.fail(
                self.line_of(container, key), field, f"must be a mapping, got {_kind_of(value)}"
            )
        return value

    def keys(self, mapping: dict[Any, Any], allowed: tuple[str, ...], field: str) -> None:
        for key in mapping:
            if key not in allowed:
                where = f"{field}.{key}" if field else str(key)
                raise self.fail(
                    self.line_of(mapping, key),
                    where,
                    f"unknown key {key!r}; allowed: {', '.join(allowed)}",
                )


def _line(node: Any) -> int | None:
    """The line of a mapping or sequence from the file (None for anything else)."""
    return getattr(node, "line", None)


def _kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def parse_text(text: str, path: Path) -> TaskFile:
    """Check and expand a task file's text; raises TaskFileError."""
    kinds = simkind.installed()
    check = _Checker(path)
    try:
        doc = yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise check.fail(line, None, f"invalid YAML: {e.problem or e}") from e
    except yaml.YAMLError as e:
        raise check.fail(None, None, f"invalid YAML: {e}") from e
    except RecursionError as e:
        raise check.fail(None, None, "invalid YAML: nested too deeply") from e
    if not isinstance(doc, dict):
        raise check.fail(getattr(doc, "line", 1), None, "must be a mapping with a 'tasks' list")
    check.keys(doc, TOP_KEYS, "")

    name = doc.get("name", path.stem)
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise check.fail(
            check.line_of(doc, "name"),
            "name",
            f"must be a non-empty string of at most {MAX_NAME_LENGTH} characters, got {name!r}",
        )
    if "description" in doc and not isinstance(doc["description"], str):
        raise check.fail(check.line_of(doc, "description"), "description", "must be a string")
    seed_given = "seed" in doc
    seed = (
        check.int_field(doc, "seed", "seed", 0, 2**63 - 1) if seed_given else secrets.randbits(63)
    )
    max_attempts = (
        check.int_field(doc, "max_attempts", "max_attempts", 1, MAX_ATTEMPTS_LIMIT)
        if "max_attempts" in doc
        else DEFAULT_MAX_ATTEMPTS
    )
    max_lost = (
        check.int_field(doc, "max_lost", "max_lost", 1, MAX_LOST_LIMIT)
        if "max_lost" in doc
        else DEFAULT_MAX_LOST
    )

    defaults: dict[Any, Any] = _Mapping()
    if "defaults" in doc and doc["defaults"] is not None:
        defaults = check.mapping(doc, "defaults", "defaults")
        for kind in defaults:
            check.kind(kinds, defaults, kind, f"defaults.{kind}", kind)
            check.mapping(defaults, kind, f"defaults.{kind}")

    if "tasks" not in doc:
        raise check.fail(_line(doc), "tasks", "missing: list the tasks to run")
    entries = doc["tasks"]
    if not isinstance(entries, list) or not entries:
        raise check.fail(check.line_of(doc, "tasks"), "tasks", "must be a non-empty list")

    specs: list[tuple[simkind.LoadedKind, dict[str, Any]]] = []
    for i, entry in enumerate(entries):
        specs.extend(_expand_entry(check, kinds, entries, i, entry, defaults, len(specs)))
    occurrences: dict[str, int] = {}
    tasks = []
    for i, (loaded, params) in enumerate(specs):
        content = _digest({"kind": loaded.name, "params": params})
        occurrence = occurrences[content] = occurrences.get(content, -1) + 1
        tasks.append(TaskSpec(i, loaded.name, params, _seed(seed, content, occurrence),
                              loaded.version))
    return TaskFile(path, name.strip(), seed, seed_given, max_attempts, tasks, text, max_lost)


def _expand_entry(
    check: _Checker,
    kinds: simkind.Registry,
    entries: list[Any],
    i: int,
    entry: Any,
    defaults: dict[Any, Any],
    already: int,
) -> Iterator[tuple[simkind.LoadedKind, dict[str, Any]]]:
    """Expand one ``tasks`` entry: sweep combinations (keys as written), replicas innermost."""
    field = f"tasks[{i}]"
    if not isinstance(entry, dict):
        raise check.fail(
            check.line_of(entries, i), field, f"must be a mapping, got {_kind_of(entry)}"
        )
    check.keys(entry, ENTRY_KEYS, field)
    if "kind" not in entry:
        raise check.fail(_line(entry), f"{field}.kind", "missing: say which kind of simulation")
    kind = entry["kind"]
    loaded = check.kind(kinds, entry, "kind", f"{field}.kind", kind)
    params: dict[Any, Any] = (
        check.mapping(entry, "params", f"{field}.params") if "params" in entry else _Mapping()
    )
    sweep: dict[Any, Any] = (
        check.mapping(entry, "sweep", f"{field}.sweep") if "sweep" in entry else _Mapping()
    )
    replicas = (
        check.int_field(entry, "replicas", f"{field}.replicas", 1, MAX_TASKS)
        if "replicas" in entry
        else 1
    )
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise check.fail(
                check.line_of(sweep, key),
                f"{field}.sweep.{key}",
                "must be a non-empty list of values",
            )
    count = replicas
    for values in sweep.values():
        count *= len(values)
    if already + count > MAX_TASKS:
        raise check.fail(
            check.line_of(entries, i), field, f"expands the file beyond {MAX_TASKS} tasks"
        )

    kind_defaults = defaults.get(kind) or _Mapping()
    base = {**kind_defaults, **params}
    keys = list(sweep)
    for combo in itertools.product(*(list(enumerate(sweep[k])) for k in keys)):
        merged = {**base, **{k: v for k, (_, v) in zip(keys, combo, strict=False)}}
        try:
            validated = loaded.kind.validate(_plain(merged))
        except simkind.ParamError as e:
            name = _param_named(str(e), kind, merged)
            if name in sweep:
                j = dict(zip(keys, combo, strict=False))[name][0]
                line, where = check.line_of(sweep[name], j), f"{field}.sweep.{name}[{j}]"
            elif name in params:
                line, where = check.line_of(params, name), f"{field}.params.{name}"
            elif name in kind_defaults:
                line, where = check.line_of(kind_defaults, name), f"defaults.{kind}.{name}"
            else:
                line, where = _line(entry), f"{field}.params"
            raise check.fail(line, where, str(e)) from e
        size = len(json.dumps(validated, separators=(",", ":")))
        if size > MAX_PARAMS_BYTES:
            raise check.fail(
                _line(entry),
                f"{field}.params",
                f"parameters take {size} bytes as JSON; an assignment allows {MAX_PARAMS_BYTES}",
            )
        for _ in range(replicas):
            yield loaded, validated


def _param_named(message: str, kind: str, params: dict[str, Any]) -> str | None:
    """Which parameter a ParamError message is about (ckernel names it as kind.name or 'name')."""
    for name in sorted(params, key=lambda n: -len(str(n))):
        if re.search(
            rf"(\b{re.escape(kind)}\.{re.escape(str(name))}\b|'{re.escape(str(name))}')", message
        ):
            return str(name)
    return None


def _plain(value: Any) -> Any:
    """Turn the line-tracking containers back into plain dicts and lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load(path: Path | str) -> TaskFile:
    """Read, check and expand the task file at ``path``; raises TaskFileError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise TaskFileError(path, None, None, "no such file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise TaskFileError(path, None, None, f"cannot read: {e}") from e
    return parse_text(text, path)
