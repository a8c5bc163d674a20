"""Task files: load, check and expand a YAML sweep into tasks with their seeds.

Rules (docs/tasks.md): parameter precedence ``defaults`` < ``params`` < ``sweep``; tasks
expand in file order, sweep keys in the order written (the first key varies slowest), and
replicas innermost. Kinds are the installed ones (``simkind``: built-in and plugins), and
each task records the version of its kind it was validated with. Every task's seed is
derived from the run seed and the task's content (:func:`task_seed`), not its position, so
adding sweep points leaves the other tasks' seeds (and their reuse) alone; the stored seed
is the exact integer the kind's run function gets. Every error names the file, the line and
the field; every error of a file (up to :data:`MAX_ERRORS`) is reported at once, in one
:class:`TaskFileErrors`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import simkind
from simctl.errors import InputError, TaskFileError
from simkind.extxyz import read_last_header
from simkind.fields import simulated, yaml_repr
from simproto.protocol import MAX_CHECKPOINT_EVERY_S, MAX_CONTROL_BYTES
from simproto.sizes import parse_size
from simproto.transfer import hash_file

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


TOP_KEYS = ("name", "description", "seed", "max_attempts", "max_lost", "artifact_limits",
            "checkpoint_every_s", "defaults", "tasks")
"""Keys allowed at the top of a task file."""

ENTRY_KEYS = ("name", "kind", "params", "sweep", "zip", "replicas", "init")
"""Keys allowed in one entry of ``tasks``."""

LIMIT_KEYS = ("task", "run")
"""Keys of ``artifact_limits``: bytes one task's artifacts, and all of a run's, may take."""

ENTRY_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
"""Entry names (what ``init: {from: NAME}`` names)."""

TASK_ID_RE = re.compile(r"^(?P<run>[A-Za-z0-9][A-Za-z0-9_.-]*)\.(?P<index>\d+)$")
"""A task id, ``RUN_ID.INDEX`` (what ``init: {from: RUN_ID.INDEX}`` names)."""

RANGE_FORMS = {
    "linspace": "{linspace: [start, stop, n]}",
    "logspace": "{logspace: [start_exponent, stop_exponent, n]}",
    "geomspace": "{geomspace: [start, stop, n]}",
    "range": "{range: [start, stop, step]}",
}
"""The ranges a sweep or zip value may be instead of a list, as a task file spells them."""

RANGE_DIGITS = 12
"""Significant digits the inner points of linspace, logspace and geomspace are rounded to
(the endpoints stay exactly as written), so that ``{linspace: [0.8, 1.6, 9]}`` gives the same
values (and seeds) as the list ``[0.8, 0.9, ..., 1.6]``."""

MAX_ERRORS = 20
"""Most errors of one file listed; the rest are counted."""

STDIN = "-"
"""The task-file argument that means: read the file from standard input."""

STDIN_NAME = "<stdin>"
"""The name errors give a task file read from standard input."""

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
# PyYAML resolves YAML 1.1, whose floats need a dot and a signed exponent: 1e-3 and 1.0e3 would
# be strings. Also resolve YAML 1.2's floats with an exponent (the others are 1.1 floats too).
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


@dataclass(frozen=True)
class Problem:
    """One error of a task file: its line (1-based; None: the whole file), field and message."""

    line: int | None
    field: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "message": self.message}


class TaskFileErrors(TaskFileError):
    """Every error found in one task file (the first :data:`MAX_ERRORS`, and how many more):
    one line each, ``FILE:LINE: FIELD: message``; ``line`` and ``field`` are the first's."""

    def __init__(self, path: Path | str, problems: list[Problem], more: int = 0) -> None:
        first = problems[0]
        super().__init__(path, first.line, first.field, first.message)
        self.problems = problems
        self.more = more
        lines = [str(TaskFileError(path, p.line, p.field, p.message)) for p in problems]
        if len(lines) > 1 or more:
            total = len(problems) + more
            shown = f" (the first {len(problems)})" if more else ""
            lines.insert(0, f"{self.path}: {total} errors{shown}:")
        if more:
            lines.append(f"... and {count_of(more, 'more error')}")
        self.args = ("\n".join(lines),)

    def to_json(self) -> list[dict[str, Any]]:
        return [p.to_json() for p in self.problems]


@dataclass(frozen=True)
class InitFile:
    """``init: PATH``: start from the last frame of an extended XYZ file (checked against
    the kind when the file is read; copied into the store when the run is made)."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class InitTask:
    """``init: {from: RUN_ID.INDEX}``: start from the final configuration of a task of an
    earlier run (checked against the ledger when the run is made: ``simctl.chains``)."""

    task_id: str
    line: int | None
    field: str


@dataclass(frozen=True)
class InitEntry:
    """``init: {from: NAME}``: start from the final configuration of the task with this
    index of the same file; the task waits until that one is done."""

    index: int


Init = InitFile | InitTask | InitEntry


@dataclass(frozen=True)
class TaskSpec:
    """One expanded task: what a worker runs and the seed it runs with."""

    index: int
    kind: str
    params: dict[str, Any]
    seed: int
    kind_version: str | None = None
    init: Init | None = None

    @property
    def reuse_key(self) -> str:
        return reuse_key(self.kind, self.kind_version, self.params, self.seed)


def reuse_key(kind: str, version: str | None, params: dict[str, Any], seed: int,
              inputs: tuple[str, ...] = ()) -> str:
    """What makes two tasks the same computation: kind, kind version, validated params and
    seed, and the SHA-256 of every input file it starts from (a done task with the same key
    is reused instead of run again). The key is the SHA-256 of the canonical JSON (sorted
    keys, no spaces) of ``{"inputs", "kind", "params", "seed", "version"}`` (``inputs``
    only when there are some): keys stored by earlier versions stay valid."""
    return ReuseKeys().key(kind, version, params, seed, inputs)


class ReuseKeys:
    """The reuse keys of a run's tasks, in order. Everything before the seed in a key's
    canonical text is hashed once for consecutive tasks of the same kind, version, params
    (the same dict: the replicas of a point share theirs) and inputs; each task then adds
    its seed. Submitting a sweep of many replicas spends its time storing them, not hashing
    the same params again."""

    def __init__(self) -> None:
        self._last: tuple[str, str | None, dict[str, Any], tuple[str, ...]] | None = None
        self._head = hashlib.sha256()
        self._tail = ""

    def key(self, kind: str, version: str | None, params: dict[str, Any], seed: int,
            inputs: tuple[str, ...] = ()) -> str:
        last = self._last
        if last is None or last[2] is not params or last[0] != kind or last[1] != version \
                or last[3] != inputs:
            # The canonical text's keys in sorted order: inputs, kind, params, seed, version.
            head = f'"inputs":{_canonical(list(inputs))},' if inputs else ""
            head += f'"kind":{_canonical(kind)},"params":{_canonical(params)},"seed":'
            self._head = hashlib.sha256(f"{{{head}".encode())
            self._tail = f',"version":{_canonical(version)}}}'
            self._last = (kind, version, params, inputs)
        digest = self._head.copy()
        digest.update(f"{seed}{self._tail}".encode())
        return digest.hexdigest()


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
    max_task_artifact_bytes: int | None = None
    """``artifact_limits.task`` (None: not given, the default applies)."""
    max_run_artifact_bytes: int | None = None
    """``artifact_limits.run`` (None: not given, the default applies)."""
    checkpoint_every_s: float | None = None
    """``checkpoint_every_s`` (None: not given, the default applies; 0: no checkpoints)."""

    def kinds(self) -> dict[str, int]:
        """Number of tasks per kind, in order of first appearance."""
        counts: dict[str, int] = {}
        for t in self.tasks:
            counts[t.kind] = counts.get(t.kind, 0) + 1
        return counts

    def kind_versions(self) -> dict[str, str | None]:
        """The version of each kind the tasks were validated with."""
        return {t.kind: t.kind_version for t in self.tasks}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()


def task_seed(run_seed: int, kind: str, params: dict[str, Any], occurrence: int) -> int:
    """A task's seed: ``SeedSequence(run_seed, spawn_key=(content..., occurrence))``, one
    uint64 masked to 63 bits (the protocol's seed range). The content is a SHA-256 of the
    kind and validated params, less those marked ``output`` (what to write, not what to
    simulate: ``simkind.fields.simulated``); ``occurrence`` counts earlier tasks of the file
    with the same content (the replicas of a point are its occurrences 0, 1, ...)."""
    return _seed(run_seed, _content(simkind.installed().get(kind), params), occurrence)


def _content(loaded: simkind.LoadedKind, params: dict[str, Any]) -> str:
    """The digest of what a task simulates (its seed's content)."""
    return _digest({"kind": loaded.name, "params": simulated(loaded.kind.params, params)})


def _seed(run_seed: int, content: str, occurrence: int) -> int:
    import numpy as np

    words = [int(content[i:i + 8], 16) for i in (0, 8, 16, 24)]
    state = np.random.SeedSequence(run_seed, spawn_key=(*words, occurrence))
    return int(state.generate_state(1, dtype=np.uint64)[0]) & _SEED_MASK


def count_of(n: int, word: str) -> str:
    """``n word`` with the plural where English wants it (``1 task``, ``26 tasks``)."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class _Stop(Exception):
    """The part of the file being checked cannot be checked further (its error is reported)."""


class _Checker:
    """Walks one parsed file, collecting problems with file, line and field.

    ``report`` records one and goes on; ``fail`` records one and returns :class:`_Stop` for
    the caller to raise, which abandons the part being checked (an entry, a key) while the
    rest of the file is still checked. The same problem (say, a bad base parameter met by
    every combination of a sweep) is reported once.
    """

    def __init__(self, path: Path, max_errors: int = MAX_ERRORS) -> None:
        self.path = path
        self.max_errors = max_errors
        self.problems: list[Problem] = []
        self.more = 0
        self._seen: set[int] = set()

    def report(self, line: int | None, field: str | None, message: str) -> None:
        key = hash((line, field, message))
        if key in self._seen:
            return
        self._seen.add(key)
        if len(self.problems) < self.max_errors:
            self.problems.append(Problem(line, field, message))
        else:
            self.more += 1

    def fail(self, line: int | None, field: str | None, message: str) -> _Stop:
        self.report(line, field, message)
        return _Stop()

    def error(self) -> TaskFileErrors:
        return TaskFileErrors(self.path, self.problems, self.more)

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
            raise self.fail(self.line_of(mapping, key), field,
                            f"must be an integer, got {yaml_repr(value)}")
        if not lo <= value <= hi:
            raise self.fail(
                self.line_of(mapping, key), field, f"{value} is out of range [{lo}, {hi}]"
            )
        return value

    def number_field(self, mapping: dict[Any, Any], key: str, field: str, lo: float,
                     hi: float) -> float:
        value = mapping[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise self.fail(self.line_of(mapping, key), field,
                            f"must be a number, got {yaml_repr(value)}")
        if not lo <= value <= hi:
            raise self.fail(self.line_of(mapping, key), field,
                            f"{value:g} is out of range [{lo:g}, {hi:g}]")
        return float(value)

    def mapping(self, container: Any, key: Any, field: str) -> dict[Any, Any]:
        value = container[key]
        if not isinstance(value, dict):
            raise self.fail(
                self.line_of(container, key), field, f"must be a mapping, got {_kind_of(value)}"
            )
        return value

    def keys(self, mapping: dict[Any, Any], allowed: tuple[str, ...], field: str) -> None:
        """Report every key of ``mapping`` that is not ``allowed``."""
        for key in mapping:
            if key not in allowed:
                where = f"{field}.{key}" if field else str(key)
                self.report(
                    self.line_of(mapping, key),
                    where,
                    f"unknown key {yaml_repr(key)}; allowed: {', '.join(allowed)}",
                )


def _line(node: Any) -> int | None:
    """The line of a mapping or sequence from the file (None for anything else)."""
    return getattr(node, "line", None)


def _kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return yaml_repr(value)


def parse_text(text: str, path: Path) -> TaskFile:
    """Check and expand a task file's text; raises :class:`TaskFileErrors` (a TaskFileError)
    listing every problem found."""
    check = _Checker(path)
    try:
        tf = _parse(check, text, path)
    except _Stop:
        tf = None
    if check.problems or tf is None:
        raise check.error()
    return tf


def _parse(check: _Checker, text: str, path: Path) -> TaskFile:
    kinds = simkind.installed()
    try:
        doc = yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        # An error at the end of the file (an unclosed bracket) is marked on the line after
        # the last one: name the last line instead.
        line = min(mark.line + 1, max(1, len(text.splitlines()))) if mark else None
        raise check.fail(line, None, f"invalid YAML: {e.problem or e}") from e
    except yaml.YAMLError as e:
        raise check.fail(None, None, f"invalid YAML: {e}") from e
    except RecursionError as e:
        raise check.fail(None, None, "invalid YAML: nested too deeply") from e
    if not isinstance(doc, dict):
        raise check.fail(getattr(doc, "line", 1), None, "must be a mapping with a 'tasks' list")
    check.keys(doc, TOP_KEYS, "")

    default_name = "stdin" if str(path) == STDIN_NAME else path.stem
    name = doc.get("name", default_name)
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        check.report(
            check.line_of(doc, "name"),
            "name",
            f"must be a non-empty string of at most {MAX_NAME_LENGTH} characters, "
            f"got {yaml_repr(name)}",
        )
        name = default_name
    if "description" in doc and not isinstance(doc["description"], str):
        check.report(check.line_of(doc, "description"), "description", "must be a string")
    seed_given = "seed" in doc
    seed = secrets.randbits(63)
    if seed_given:
        seed = _or(seed, lambda: check.int_field(doc, "seed", "seed", 0, 2**63 - 1))
    max_attempts = DEFAULT_MAX_ATTEMPTS
    if "max_attempts" in doc:
        max_attempts = _or(max_attempts, lambda: check.int_field(
            doc, "max_attempts", "max_attempts", 1, MAX_ATTEMPTS_LIMIT))
    max_lost = DEFAULT_MAX_LOST
    if "max_lost" in doc:
        max_lost = _or(max_lost, lambda: check.int_field(
            doc, "max_lost", "max_lost", 1, MAX_LOST_LIMIT))

    limits = _or({}, lambda: _artifact_limits(check, doc)) if "artifact_limits" in doc else {}
    checkpoint_every_s = None
    if "checkpoint_every_s" in doc:
        checkpoint_every_s = _or(None, lambda: check.number_field(
            doc, "checkpoint_every_s", "checkpoint_every_s", 0.0, MAX_CHECKPOINT_EVERY_S))

    defaults: dict[Any, Any] = _Mapping()
    if "defaults" in doc and doc["defaults"] is not None:
        given = _or(None, lambda: check.mapping(doc, "defaults", "defaults"))
        for kind in given or ():
            try:
                check.kind(kinds, given, kind, f"defaults.{kind}", kind)
                defaults[kind] = check.mapping(given, kind, f"defaults.{kind}")
            except _Stop:
                continue

    if "tasks" not in doc:
        raise check.fail(_line(doc), "tasks", "missing: list the tasks to run")
    entries = doc["tasks"]
    if not isinstance(entries, list) or not entries:
        raise check.fail(check.line_of(doc, "tasks"), "tasks", "must be a non-empty list")

    specs: list[tuple[simkind.LoadedKind, dict[str, Any]]] = []
    inits: list[Init | None] = []
    named: dict[str, _Entry] = {}
    for i, entry in enumerate(entries):
        try:
            expanded = _expand_entry(check, kinds, entries, i, entry, defaults, len(specs))
        except _Stop:
            continue
        here = _Entry(len(specs), len(expanded), expanded[0][0] if expanded else None,
                      [params for _, params in expanded])
        specs.extend(expanded)
        try:
            inits.extend(_entry_inits(check, path, entry, f"tasks[{i}]", here, named))
        except _Stop:
            inits.extend([None] * len(expanded))
        if "name" in entry:
            with contextlib.suppress(_Stop):
                _name_entry(check, entry, f"tasks[{i}]", here, named)
    if check.problems:
        raise _Stop
    occurrences: dict[str, int] = {}
    tasks = []
    for i, ((loaded, params), init) in enumerate(zip(specs, inits, strict=True)):
        content = _content(loaded, params)
        occurrence = occurrences[content] = occurrences.get(content, -1) + 1
        tasks.append(TaskSpec(i, loaded.name, params, _seed(seed, content, occurrence),
                              loaded.version, init))
    return TaskFile(path, name.strip(), seed, seed_given, max_attempts, tasks, text, max_lost,
                    limits.get("task"), limits.get("run"), checkpoint_every_s)


@dataclass
class _Entry:
    """One entry of ``tasks`` once expanded: where its tasks start, how many, their kind
    and validated params."""

    start: int
    count: int
    loaded: simkind.LoadedKind | None
    params: list[dict[str, Any]]


def _artifact_limits(check: _Checker, doc: dict[Any, Any]) -> dict[str, int]:
    """``artifact_limits: {task: SIZE, run: SIZE}`` in bytes."""
    given = check.mapping(doc, "artifact_limits", "artifact_limits")
    check.keys(given, LIMIT_KEYS, "artifact_limits")
    limits: dict[str, int] = {}
    for key in LIMIT_KEYS:
        if key in given:
            try:
                limits[key] = parse_size(given[key])
            except ValueError as e:
                check.report(check.line_of(given, key), f"artifact_limits.{key}", str(e))
                continue
            if limits[key] == 0:
                check.report(check.line_of(given, key), f"artifact_limits.{key}",
                             "must be above 0 (a task with no room for its files would "
                             "always fail)")
    return limits


def _name_entry(check: _Checker, entry: dict[Any, Any], field: str, here: _Entry,
                named: dict[str, _Entry]) -> None:
    """Record an entry's ``name`` (what a later ``init: {from: NAME}`` names)."""
    name = entry["name"]
    line = check.line_of(entry, "name")
    if not isinstance(name, str) or not ENTRY_NAME_RE.match(name):
        raise check.fail(line, f"{field}.name", f"{yaml_repr(name)} must match "
                         f"{ENTRY_NAME_RE.pattern} (letters, digits, '_', '-')")
    if name in named:
        raise check.fail(line, f"{field}.name", f"{name!r} names an earlier entry already")
    named[name] = here


def _entry_inits(check: _Checker, path: Path, entry: dict[Any, Any], field: str,
                 here: _Entry, named: dict[str, _Entry]) -> list[Init | None]:
    """The configuration each task of an entry starts from (``init``), checked as far as
    the file alone allows."""
    if "init" not in entry or entry["init"] is None:
        return [None] * here.count
    line, where = check.line_of(entry, "init"), f"{field}.init"
    value = entry["init"]
    loaded = here.loaded
    if loaded is not None and loaded.kind.init is None:
        raise check.fail(line, where, f"kind {loaded.name} cannot start from a configuration "
                         "(it takes no init)")
    if isinstance(value, str):
        return _init_file(check, path, value, line, where, here)
    if not isinstance(value, dict) or set(value) != {"from"} or not isinstance(
            value["from"], str):
        raise check.fail(line, where, "must be a file path (extended XYZ) or {from: NAME} "
                         "(an earlier entry) or {from: RUN_ID.INDEX} (a task of an earlier "
                         f"run), got {yaml_repr(value)}")
    source = value["from"]
    if source in named:
        return _init_entry(check, source, named[source], line, where, here)
    if TASK_ID_RE.match(source):
        return [InitTask(source, line, where)] * here.count
    earlier = ", ".join(named) or "none"
    raise check.fail(line, where, f"from: {source!r} names no earlier entry (named: {earlier}) "
                     "and is not a task id RUN_ID.INDEX")


def _init_file(check: _Checker, path: Path, value: str, line: int | None, where: str,
               here: _Entry) -> list[Init | None]:
    folder = Path.cwd() if str(path) == STDIN_NAME else path.parent
    file = (folder / value).resolve()
    assert here.loaded is not None
    try:
        frame = read_last_header(file)  # once: every task of the entry starts from it
        for params in here.params:
            here.loaded.kind.fit_init(params, frame)
        size, sha256 = hash_file(file)
    except simkind.ParamError as e:
        raise check.fail(line, where, str(e)) from e
    except OSError as e:
        raise check.fail(line, where, f"{file}: cannot read: {e.strerror or e}") from e
    return [InitFile(file, size, sha256)] * here.count


def _init_entry(check: _Checker, name: str, source: _Entry, line: int | None, where: str,
                here: _Entry) -> list[Init | None]:
    """Pair this entry's tasks with the tasks of entry ``name``: one source task for all,
    or each source task for as many consecutive tasks here (the same sweep with replicas)."""
    if source.count == 0 or here.count % source.count:
        raise check.fail(line, where, f"from: {name!r}: that entry has {source.count} tasks "
                         f"and this one {here.count}; give it one task, or a number of "
                         f"tasks that {here.count} is a multiple of")
    saves = source.loaded.kind.params.get("save_final") if source.loaded else None
    if saves is not None and not all(p.get("save_final") for p in source.params):
        raise check.fail(line, where, f"from: {name!r}: that entry saves no final "
                         "configuration (save_final: false)")
    per_source = here.count // source.count
    return [InitEntry(source.start + j // per_source) for j in range(here.count)]


def _or(fallback: Any, get: Any) -> Any:
    """``get()``, or ``fallback`` when it reported a problem (checking goes on)."""
    try:
        return get()
    except _Stop:
        return fallback


@dataclass(frozen=True)
class _Axis:
    """One swept parameter of an entry: where it is written, and its values with their lines."""

    section: str  # "sweep" or "zip"
    key: str
    values: list[Any]
    lines: list[int | None]

    def where(self, field: str, j: int) -> str:
        return f"{field}.{self.section}.{self.key}[{j}]"


def range_values(form: str, args: list[Any]) -> list[Any]:
    """The values of a range, as :data:`RANGE_FORMS` spells them, in pure Python (the same
    floats on every machine); raises ValueError saying what is wrong.

    ``linspace`` computes ``start + i * ((stop - start) / (n - 1))`` for ``i < n - 1`` (as
    numpy.linspace does) and ends exactly at ``stop``; ``logspace`` is ``10.0 ** x`` of that
    for exponents; ``geomspace`` is ``start * (stop / start) ** (i / (n - 1))``. The inner
    points of these three are rounded to :data:`RANGE_DIGITS` significant digits, the
    endpoints are as written. ``range`` is Python's (integers, ``stop`` excluded).
    """
    if form == "range":
        if not 2 <= len(args) <= 3 or any(isinstance(a, bool) or not isinstance(a, int)
                                          for a in args):
            raise ValueError("needs 2 or 3 integers [start, stop, step] (stop excluded, step "
                             "1 if left out); for numbers use linspace")
        step = args[2] if len(args) == 3 else 1
        if step == 0:
            raise ValueError("step must not be 0")
        values: list[Any] = list(range(args[0], args[1], step))
        if not values:
            raise ValueError(f"range({args[0]}, {args[1]}, {step}) is empty")
        return values
    if len(args) != 3:
        raise ValueError(f"needs 3 items, got {len(args)}")
    start, stop, n = args
    for what, value in (("start", start), ("stop", stop)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise ValueError(f"{what} must be a finite number, got {yaml_repr(value)}")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TASKS:
        raise ValueError(f"n must be an integer in [1, {MAX_TASKS}], got {yaml_repr(n)}")
    if form == "geomspace" and (start == 0 or stop == 0 or (start < 0) != (stop < 0)):
        raise ValueError("start and stop must be non-zero and of the same sign")
    if n == 1:
        points = [float(start)]
    else:
        step_ = (stop - start) / (n - 1)
        points = [start + i * step_ for i in range(n - 1)] + [float(stop)]
        if form == "geomspace":
            ratio = stop / start
            points = [start * ratio ** (i / (n - 1)) for i in range(n - 1)] + [float(stop)]
    if form == "logspace":
        try:
            points = [10.0 ** x for x in points]
        except OverflowError as e:
            raise ValueError("10 ** exponent overflows: exponents are powers of 10 "
                             "(for values, use geomspace)") from e
    inner = [float(f"{v:.{RANGE_DIGITS}g}") for v in points[1:-1]]
    return [points[0], *inner, points[-1]] if n > 1 else points


def _range_length(form: str, args: list[Any]) -> int:
    """How many values a range gives, without making them (0: not a valid range)."""
    try:
        if form == "range":
            if len(args) in (2, 3) and all(isinstance(a, int) for a in args):
                return len(range(*args))
            return 0
        n = args[2] if len(args) == 3 else 0
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0
    except ValueError:
        return 0


def _value_count(value: Any) -> int:
    """How many values a sweep or zip value gives (0: it is not a valid one)."""
    if isinstance(value, list):
        return len(value)
    if isinstance(value, dict) and len(value) == 1:
        (form, args), = value.items()
        if form in RANGE_FORMS and isinstance(args, list):
            return _range_length(form, args)
    return 0


def _axis(check: _Checker, section: dict[Any, Any], name: str, key: Any, field: str) -> _Axis:
    """The values of one swept parameter (a non-empty list or a range), or the error."""
    value = section[key]
    where = f"{field}.{name}.{key}"
    line = check.line_of(section, key)
    forms = ", ".join(RANGE_FORMS.values())
    if isinstance(value, list):
        if value:
            return _Axis(name, str(key), value, [check.line_of(value, j)
                                                 for j in range(len(value))])
        raise check.fail(line, where, f"must be a non-empty list of values or a range: {forms}")
    if isinstance(value, dict) and len(value) == 1:
        (form, args), = value.items()
        if form not in RANGE_FORMS:
            raise check.fail(line, where, f"unknown range {yaml_repr(form)}: allowed {forms}")
        if not isinstance(args, list):
            raise check.fail(line, where, f"{form} takes a list: {RANGE_FORMS[form]}")
        try:
            values = range_values(form, _plain(args))
        except ValueError as e:
            raise check.fail(line, where, f"{form}: {e}: {RANGE_FORMS[form]}") from e
        return _Axis(name, str(key), values, [line] * len(values))
    raise check.fail(line, where, f"must be a non-empty list of values or a range: {forms}, "
                                  f"got {_kind_of(value)}")


def _axes(check: _Checker, entry: dict[Any, Any], field: str) -> list[list[_Axis]]:
    """The groups of swept parameters of an entry, slowest first: the zip group (its lists
    vary together), then each sweep key in written order. Values are made only once the
    entry's task count is known to be within MAX_TASKS."""
    zipped = (check.mapping(entry, "zip", f"{field}.zip") if "zip" in entry else _Mapping())
    sweep = (check.mapping(entry, "sweep", f"{field}.sweep") if "sweep" in entry
             else _Mapping())
    broken = False
    for key in zipped:
        if key in sweep:
            check.report(check.line_of(sweep, key), f"{field}.sweep.{key}",
                         f"also under zip (line {check.line_of(zipped, key)}): "
                         "sweep a parameter in one place")
            broken = True
    counts = {("zip", k): _value_count(v) for k, v in zipped.items()}
    counts.update({("sweep", k): _value_count(v) for k, v in sweep.items()})
    zip_lengths = {counts["zip", k] for k in zipped} - {0}
    if len(zip_lengths) > 1:
        listed = ", ".join(f"{k}: {counts['zip', k]}" for k in zipped)
        check.report(check.line_of(entry, "zip"), f"{field}.zip",
                     f"the lists of a zip vary together and must be as long ({listed})")
        broken = True
    count = math.prod(n for (sec, _), n in counts.items() if n and sec == "sweep") * (
        max(zip_lengths) if zip_lengths else 1)
    if count > MAX_TASKS:
        raise check.fail(check.line_of(entry, "sweep" if "sweep" in entry else "zip"), field,
                         f"expands to {count} combinations, beyond {MAX_TASKS} tasks")
    group: list[_Axis] = []
    groups: list[list[_Axis]] = []
    for name, section in (("zip", zipped), ("sweep", sweep)):
        for key in section:
            try:
                axis = _axis(check, section, name, key, field)
            except _Stop:
                broken = True
                continue
            if name == "zip":
                group.append(axis)
            else:
                groups.append([axis])
    if broken:
        raise _Stop
    return [group, *groups] if group else groups


def _expand_entry(
    check: _Checker,
    kinds: simkind.Registry,
    entries: list[Any],
    i: int,
    entry: Any,
    defaults: dict[Any, Any],
    already: int,
) -> list[tuple[simkind.LoadedKind, dict[str, Any]]]:
    """Expand one ``tasks`` entry: zip, then sweep keys as written, replicas innermost."""
    field = f"tasks[{i}]"
    if not isinstance(entry, dict):
        raise check.fail(
            check.line_of(entries, i), field, f"must be a mapping, got {_kind_of(entry)}"
        )
    check.keys(entry, ENTRY_KEYS, field)
    loaded = None
    if "kind" not in entry:
        check.report(_line(entry), f"{field}.kind", "missing: say which kind of simulation")
    else:
        loaded = _or(None, lambda: check.kind(kinds, entry, "kind", f"{field}.kind",
                                              entry["kind"]))
    params: dict[Any, Any] | None = (
        _or(None, lambda: check.mapping(entry, "params", f"{field}.params"))
        if "params" in entry else _Mapping()
    )
    replicas = (
        _or(None, lambda: check.int_field(entry, "replicas", f"{field}.replicas", 1, MAX_TASKS))
        if "replicas" in entry
        else 1
    )
    groups = _or(None, lambda: _axes(check, entry, field))
    if loaded is None or params is None or replicas is None or groups is None:
        raise _Stop
    count = replicas * math.prod(len(g[0].values) for g in groups)
    if already + count > MAX_TASKS:
        raise check.fail(
            check.line_of(entries, i), field, f"expands the file beyond {MAX_TASKS} tasks"
        )

    kind = loaded.name
    kind_defaults = defaults.get(kind) or _Mapping()
    base = {**kind_defaults, **params}
    base_error: list[str | None] = []  # the base params' own error, found when first needed
    out: list[tuple[simkind.LoadedKind, dict[str, Any]]] = []
    for combo in itertools.product(*(range(len(g[0].values)) for g in groups)):
        swept = {a.key: (a, j) for g, j in zip(groups, combo, strict=True) for a in g}
        merged = {**base, **{k: a.values[j] for k, (a, j) in swept.items()}}
        try:
            validated = loaded.kind.validate(_plain(merged))
        except simkind.ParamError as e:
            message = str(e)
            field_errors = _field_errors(loaded, merged)
            for msg in field_errors or [message]:
                line, where = _where(check, msg, kind, field, swept, params, kind_defaults,
                                     entry)
                if swept and not field_errors:
                    # A rule across fields: blame the combination unless the base params alone
                    # break it.
                    if not base_error:
                        base_error.append(_error_of(loaded, base))
                    if base_error[0] != msg:
                        line, where = _combination(check, msg, kind, field, swept)
                check.report(line, where, msg)
            continue
        size = len(json.dumps(validated, separators=(",", ":")))
        if size > MAX_PARAMS_BYTES:
            check.report(
                _line(entry),
                f"{field}.params",
                f"parameters take {size} bytes as JSON; an assignment allows {MAX_PARAMS_BYTES}",
            )
            continue
        out.extend([(loaded, validated)] * replicas)
    return out


def _where(check: _Checker, message: str, kind: str, field: str,
           swept: dict[str, tuple[_Axis, int]], params: dict[Any, Any],
           kind_defaults: dict[Any, Any], entry: dict[Any, Any]) -> tuple[int | None, str]:
    """The line and field of the parameter a ParamError names: its sweep value, or where
    params or defaults set it, or the entry."""
    name = _param_named(message, kind, {**kind_defaults, **params, **swept})
    if name in swept:
        axis, j = swept[name]
        return axis.lines[j], axis.where(field, j)
    if name in params:
        return check.line_of(params, name), f"{field}.params.{name}"
    if name in kind_defaults:
        return check.line_of(kind_defaults, name), f"defaults.{kind}.{name}"
    return _line(entry), f"{field}.params"


def _combination(check: _Checker, message: str, kind: str, field: str,
                 swept: dict[str, tuple[_Axis, int]]) -> tuple[int | None, str]:
    """A combination of swept values that breaks a cross-field rule: its values, and the line
    of the swept value the message names (else of the first swept value)."""
    name = _param_named(message, kind, swept) or next(iter(swept))
    axis, j = swept[name]
    values = ", ".join(f"{k}={yaml_repr(a.values[i])}" for k, (a, i) in swept.items())
    return axis.lines[j], f"{field} combination {values}"


def _field_errors(loaded: simkind.LoadedKind, params: dict[str, Any]) -> list[str]:
    """The messages of every parameter that breaks a rule of its own field (unknown, wrong
    type, out of range), each checked alone; empty when only rules across fields break."""
    problems = []
    for name, value in params.items():
        try:
            simkind.fields.validate(loaded.name, loaded.kind.params, {name: _plain(value)})
        except simkind.ParamError as e:
            problems.append(str(e))
    return problems


def _error_of(loaded: simkind.LoadedKind, params: dict[str, Any]) -> str | None:
    """The message of the error validating ``params`` gives, or None."""
    try:
        loaded.kind.validate(_plain(params))
    except simkind.ParamError as e:
        return str(e)
    return None


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
    """Read, check and expand the task file at ``path`` (``-``: standard input, named
    ``<stdin>``); raises TaskFileError. Errors name the path as given; the returned
    :attr:`TaskFile.path`, which a run stores, is absolute."""
    if str(path) == STDIN:
        return parse_text(sys.stdin.read(), Path(STDIN_NAME))
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise TaskFileErrors(path, [Problem(None, None, "no such file")]) from e
    except (OSError, UnicodeDecodeError) as e:
        raise TaskFileErrors(path, [Problem(None, None, f"cannot read: {e}")]) from e
    return dataclasses.replace(parse_text(text, path), path=path.resolve())


def taskfile_argument(given: Path | None, default: Path, command: str) -> Path:
    """The task file a command reads: ``given``, else ``default`` (relative to the current
    folder) if it exists, else an InputError saying where simctl looked."""
    if given is not None:
        return given
    if not default.exists():
        raise InputError(f"no task file given and ./{default} does not exist: "
                         f"simctl {command} TASKFILE")
    return default
