"""The wire protocol between simctl and the worker agents: every topic and every message.

The cluster's topics are built here and nowhere else in the Python code (the broker's
access rules are built from them by ``simctl.broker_security``); the one shell script that
must spell some, ``images/broker/healthcheck.sh``, is checked against this module by
``tests/deploy/test_broker_config.py::test_health_probe_topics_are_the_protocols``.

Each message is a frozen dataclass with ``encode() -> bytes`` and ``decode(bytes) ->
message``; anything that is not a well-formed message of the expected type and protocol
version raises :class:`DecodeError` (or its subclass :class:`VersionMismatch`). Nothing
received is ever unpickled or executed.

Encoding: UTF-8 JSON objects, ``{"v": PROTOCOL_VERSION, "type": "<type>", ...}``. Float series
in results (observables) are encoded as base64 of little-endian float64 (``{"f64": "..."}``):
about half the size of JSON text and bit-exact. NaN and infinities are refused on encode.

The topic tree, under a prefix (default ``sim``)::

    {p}/workers/{id}/status      retained, QoS 1  worker -> all     WorkerStatus (and Last Will)
    {p}/workers/{id}/heartbeat   QoS 0            worker -> simctl  Heartbeat
    {p}/workers/{id}/result      QoS 1            worker -> simctl  Result
    {p}/workers/{id}/event       QoS 1            worker -> simctl  Event (errors, rejections)
    {p}/workers/{id}/assign      QoS 1            simctl -> worker  Assignment
    {p}/workers/{id}/control     QoS 1            simctl -> worker  Cancel, Ack, Drain
    {p}/workers/{id}/pull        QoS 0            simctl -> worker  ChunkRequest (of its artifacts)
    {p}/workers/{id}/chunk       QoS 0            worker -> simctl  Chunk (of its artifacts)
    {p}/workers/{id}/fetch       QoS 0            worker -> simctl  ChunkRequest (of its inputs)
    {p}/workers/{id}/download    QoS 0            simctl -> worker  Chunk (of its inputs)
    {p}/ping                     QoS 0            anyone -> workers Ping (MQTT v5 response topic
                                                                    and correlation data)
    {p}/replies/{client}         QoS 0            worker -> asker   Pong
    {p}/runs/{run_id}/progress   retained, QoS 1  simctl -> all     RunProgress
    {p}/broker                   retained, QoS 1  simctl -> all     BrokerIdentity

Decoding never raises anything but :class:`DecodeError`, whatever the bytes: every decode
entry point (``Message.decode``, :func:`decode_control`, :func:`decode_worker`) turns any
other exception into one.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import struct
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar, TypeVar

PROTOCOL_VERSION = 4
"""Bumped on any incompatible change of a topic or payload. 2: workers advertise their
kinds and versions, assignments name the kind version, progress says what waits for which
kind. 3: results list their artifacts (files) and a task is done only once simctl has
pulled them; assignments carry input files; the four transfer topics. 4: checkpoints:
assignments say how often to save one, heartbeats list each running task's latest one and
the step a resumed attempt started from, a handed-back result may carry one."""

DEFAULT_TOPIC_PREFIX = "sim"
"""Topic prefix used when none is configured; lets several clusters share one broker."""

MAX_CONTROL_BYTES = 1 << 20
"""Largest control message accepted (assignments, acks, status, heartbeats): 1 MiB."""

MAX_RESULT_BYTES = 64 << 20
"""Largest result message accepted: 64 MiB. The broker's message size limit is set above it."""

MAX_CHECKPOINT_EVERY_S = 7 * 86400.0
"""Longest checkpoint interval an assignment may give (a week)."""

MAX_CHUNK_BYTES = 256 << 10
"""Most file bytes one Chunk carries (a ChunkRequest asks for at most this many)."""

MAX_CHUNK_HEADER_BYTES = 1024
"""Longest JSON header of a Chunk, before its newline and the raw bytes."""

MAX_ARTIFACTS = 1000
"""Most files one result lists (or one assignment gives as inputs)."""

MAX_FILE_BYTES = 1 << 50
"""Largest size a file reference may state (a sanity bound; the real limits are the run's)."""

MAX_ID_LENGTH = 64
"""Longest worker, run, task or client id."""

_ID_RE = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.\-]{{0,{MAX_ID_LENGTH - 1}}}$")
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
"""Artifact and input names: a plain file name (no folders), at most 128 characters."""

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


class DecodeError(ValueError):
    """A received payload is not a valid message of the expected type."""


class VersionMismatch(DecodeError):
    """A peer speaks another protocol version than this one."""

    def __init__(self, peer_version: object) -> None:
        self.peer_version = peer_version
        super().__init__(
            f"peer speaks protocol version {peer_version!r}, this side speaks "
            f"{PROTOCOL_VERSION}: upgrade simctl and the worker agents to the same release"
        )


def check_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a valid id (letters, digits, ``_.-``; at most 64), else raise."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValueError(
            f"invalid {what} {value!r}: use 1 to {MAX_ID_LENGTH} letters, digits, '_', '.' "
            "or '-', starting with a letter or digit"
        )
    return value


# --------------------------------------------------------------------------- topics


class Channel(str, Enum):
    """The per-worker topics, by direction."""

    STATUS = "status"
    HEARTBEAT = "heartbeat"
    RESULT = "result"
    EVENT = "event"
    ASSIGN = "assign"
    CONTROL = "control"
    PULL = "pull"
    """simctl -> worker: requests for chunks of the worker's artifacts."""
    CHUNK = "chunk"
    """worker -> simctl: chunks of its artifacts."""
    FETCH = "fetch"
    """worker -> simctl: requests for chunks of the inputs of its assignments."""
    DOWNLOAD = "download"
    """simctl -> worker: chunks of its inputs."""


class Topics:
    """Every topic of one cluster, under a prefix."""

    def __init__(self, prefix: str = DEFAULT_TOPIC_PREFIX) -> None:
        if not _PREFIX_RE.match(prefix):
            raise ValueError(
                f"invalid topic prefix {prefix!r}: use letters, digits, '_', '.', '-' and '/' "
                "between levels; no wildcards, no leading or trailing '/'"
            )
        self.prefix = prefix

    def worker(self, worker_id: str, channel: Channel) -> str:
        """The topic of one worker's channel."""
        return f"{self.prefix}/workers/{check_id(worker_id, 'worker id')}/{channel.value}"

    def all_workers(self, channel: Channel) -> str:
        """A subscription filter matching ``channel`` of every worker."""
        return f"{self.prefix}/workers/+/{channel.value}"

    def parse_worker_topic(self, topic: str) -> tuple[str, Channel]:
        """Split ``{p}/workers/{id}/{channel}`` into (worker id, channel); DecodeError otherwise."""
        head = f"{self.prefix}/workers/"
        if not topic.startswith(head):
            raise DecodeError(f"not a worker topic: {topic!r}")
        parts = topic[len(head) :].split("/")
        if len(parts) != 2:
            raise DecodeError(f"not a worker topic: {topic!r}")
        try:
            return check_id(parts[0], "worker id"), Channel(parts[1])
        except ValueError as e:
            raise DecodeError(f"not a worker topic: {topic!r}: {e}") from e

    @property
    def ping(self) -> str:
        """Where ping requests go; every worker subscribes."""
        return f"{self.prefix}/ping"

    def replies(self, client_id: str) -> str:
        """The response topic of one requesting client."""
        return f"{self.prefix}/replies/{check_id(client_id, 'client id')}"

    def run_progress(self, run_id: str) -> str:
        """The retained progress of one run."""
        return f"{self.prefix}/runs/{check_id(run_id, 'run id')}/progress"

    @property
    def all_run_progress(self) -> str:
        """A subscription filter matching the progress of every run."""
        return f"{self.prefix}/runs/+/progress"

    @property
    def broker_identity(self) -> str:
        """The retained identity of the broker (and prefix) that runs are submitted to."""
        return f"{self.prefix}/broker"


# ------------------------------------------------------------------ float series


def encode_series(values: Any) -> dict[str, str]:
    """Encode a 1-D sequence of floats as ``{"f64": base64(little-endian float64)}``."""
    data = [float(v) for v in values]
    if not all(math.isfinite(v) for v in data):
        raise ValueError("a series holds NaN or infinity")
    return {"f64": base64.b64encode(struct.pack(f"<{len(data)}d", *data)).decode("ascii")}


def decode_series(obj: Any) -> list[float]:
    """Inverse of :func:`encode_series`; raises DecodeError on anything else."""
    if not isinstance(obj, dict) or set(obj) != {"f64"} or not isinstance(obj["f64"], str):
        raise DecodeError('a series must be {"f64": "<base64>"}')
    try:
        raw = base64.b64decode(obj["f64"], validate=True)
    except ValueError as e:
        raise DecodeError(f"bad base64 in series: {e}") from e
    if len(raw) % 8:
        raise DecodeError("series length is not a multiple of 8 bytes")
    values = list(struct.unpack(f"<{len(raw) // 8}d", raw))
    if not all(math.isfinite(v) for v in values):
        raise DecodeError("a series holds NaN or infinity")
    return values


# ------------------------------------------------------------------- file references


def check_sha256(value: object) -> str:
    """Return ``value`` if it is a SHA-256 digest in lower-case hex, else raise ValueError."""
    if not isinstance(value, str) or not _SHA256_RE.match(value):
        raise ValueError(f"sha256 {value!r:.80} must be 64 lower-case hex digits")
    return value


@dataclass(frozen=True)
class FileRef:
    """One file by content: its name (an artifact's or an input's), size and SHA-256."""

    name: str
    size: int
    sha256: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not FILE_NAME_RE.match(self.name):
            raise ValueError(f"file name {self.name!r:.80} must match {FILE_NAME_RE.pattern}")
        if not _is_int(self.size) or not 0 <= self.size <= MAX_FILE_BYTES:
            raise ValueError(f"file size {self.size!r} must be an integer in [0, 2^50]")
        check_sha256(self.sha256)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_json(cls, obj: Any) -> FileRef:
        """From ``{"name", "size", "sha256"}``; ValueError on anything else."""
        if not isinstance(obj, dict) or set(obj) != {"name", "size", "sha256"}:
            raise ValueError('a file must be {"name": ..., "size": ..., "sha256": ...}')
        return cls(obj["name"], obj["size"], obj["sha256"])


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint a running attempt saved: the step it was saved at and its file."""

    step: int
    file: FileRef

    def __post_init__(self) -> None:
        if not _is_int(self.step) or self.step < 0:
            raise ValueError(f"checkpoint step {self.step!r} must be an integer >= 0")

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, **self.file.to_json()}

    @classmethod
    def from_json(cls, obj: Any) -> CheckpointRef:
        """From ``{"step", "name", "size", "sha256"}``; ValueError on anything else."""
        if not isinstance(obj, dict) or "step" not in obj:
            raise ValueError('a checkpoint must be {"step": ..., "name": ..., "size": ..., '
                             '"sha256": ...}')
        return cls(obj["step"], FileRef.from_json({k: v for k, v in obj.items() if k != "step"}))


def file_refs(items: Any, what: str) -> tuple[FileRef, ...]:
    """A list of file objects as FileRefs (names unique, at most MAX_ARTIFACTS); ValueError."""
    if not items and isinstance(items, list | tuple):
        return ()  # most tasks: checked on every result and assignment
    if not isinstance(items, list | tuple) or len(items) > MAX_ARTIFACTS:
        raise ValueError(f"{what} must be a list of at most {MAX_ARTIFACTS} files")
    refs = tuple(item if isinstance(item, FileRef) else FileRef.from_json(item)
                 for item in items)
    names = [ref.name for ref in refs]
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: file names repeat")
    return refs


# ----------------------------------------------------------------------- messages

M = TypeVar("M", bound="Message")
D = TypeVar("D")


def only_decode_errors(decode: Callable[..., D]) -> Callable[..., D]:
    """Make a decode function keep the module's contract: whatever the bytes, it raises
    DecodeError and nothing else (the json module alone raises several other ValueErrors,
    RecursionError and MemoryError on hostile input; a handler must never see those)."""

    @functools.wraps(decode)
    def guarded(*args: Any) -> D:
        try:
            return decode(*args)
        except DecodeError:
            raise
        except Exception as e:
            raise DecodeError(f"undecodable payload: {type(e).__name__}: {e}"[:300]) from e

    return guarded


def _dumps(obj: dict[str, Any]) -> bytes:
    try:
        return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as e:
        raise ValueError(f"cannot encode message: {e}") from e


def _is_int(value: Any) -> bool:
    # JSON integers are unbounded; the ledger (SQLite) and every peer take 64 bits.
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _is_number(value: Any) -> bool:
    return (isinstance(value, float) and math.isfinite(value)) or _is_int(value)


_BASE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "None": lambda value: value is None,
    "str": lambda value: isinstance(value, str),
    "bool": lambda value: isinstance(value, bool),
    "int": _is_int,
    "float": _is_number,
    "list": lambda value: isinstance(value, list),
    "dict": lambda value: isinstance(value, dict),
    "bytes": lambda value: isinstance(value, bytes),
    "memoryview": lambda value: isinstance(value, memoryview),
    "Any": lambda value: True,
}


@functools.cache
def _type_check(annotation: str) -> Callable[[Any], bool]:
    """The check of a decoded JSON value against the (string) annotation of a message field,
    built once per annotation: every message decoded runs one per field."""
    if "|" in annotation:
        # Chained with ``or``: a generator over the alternatives cost more than the checks.
        return functools.reduce(lambda either, other: lambda value: either(value) or other(value),
                                (_type_check(a.strip()) for a in annotation.split("|")))
    base = annotation.split("[", 1)[0]
    if base not in _BASE_CHECKS:
        raise TypeError(f"unsupported field annotation {annotation!r}")  # programming error
    return _BASE_CHECKS[base]


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    required: bool
    annotation: str
    check: Callable[[Any], bool]


_FIELD_SPECS: dict[type, tuple[_FieldSpec, ...]] = {}


def _field_specs(cls: type) -> tuple[_FieldSpec, ...]:
    """The fields of a message class with their checks, built once per class."""
    specs = _FIELD_SPECS.get(cls)
    if specs is None:
        specs = _FIELD_SPECS[cls] = tuple(
            _FieldSpec(
                f.name,
                f.default is MISSING and f.default_factory is MISSING,
                str(f.type),
                _type_check(str(f.type)),
            )
            for f in fields(cls)
        )
    return specs


@dataclass(frozen=True)
class Message:
    """Base of every message: JSON with a protocol version and a type tag."""

    TYPE: ClassVar[str] = ""
    MAX_BYTES: ClassVar[int] = MAX_CONTROL_BYTES
    SAME_SINCE: ClassVar[int] = PROTOCOL_VERSION
    """The oldest protocol version whose form of this message is this one's (decoded too)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object for this message (without ``v`` and ``type``).

        Shallow on purpose: fields hold plain JSON values, and ``dataclasses.asdict`` would
        deep-copy every params dict and observable series just to serialize it.
        """
        return {spec.name: getattr(self, spec.name) for spec in _field_specs(type(self))}

    def encode(self) -> bytes:
        """Serialize to the wire format."""
        payload = _dumps({"v": PROTOCOL_VERSION, "type": self.TYPE, **self.to_dict()})
        if len(payload) > self.MAX_BYTES:
            raise ValueError(
                f"{self.TYPE} message of {len(payload)} bytes exceeds {self.MAX_BYTES}"
            )
        return payload

    @classmethod
    def from_dict(cls: type[M], obj: dict[str, Any]) -> M:
        """Build from a decoded JSON object (``v`` and ``type`` already checked)."""
        kwargs: dict[str, Any] = {}
        for spec in _field_specs(cls):
            if spec.name not in obj:
                if not spec.required:
                    continue  # optional field, its default applies
                raise DecodeError(f"{cls.TYPE}: missing field {spec.name!r}")
            value = obj[spec.name]
            if not spec.check(value):
                raise DecodeError(
                    f"{cls.TYPE}: field {spec.name!r} must be {spec.annotation}, "
                    f"got {value!r:.80}"
                )
            kwargs[spec.name] = value
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise DecodeError(f"{cls.TYPE}: {e}") from e

    @classmethod
    @only_decode_errors
    def decode(cls: type[M], payload: bytes) -> M:
        """Parse and validate a payload; raises DecodeError (or VersionMismatch) only."""
        obj = parse_envelope(payload, cls.MAX_BYTES, cls.SAME_SINCE)
        if obj["type"] != cls.TYPE:
            raise DecodeError(f"expected a {cls.TYPE!r} message, got {obj['type']!r}")
        return cls.from_dict(obj)


def parse_envelope(payload: bytes, max_bytes: int = MAX_CONTROL_BYTES,
                   same_since: int = PROTOCOL_VERSION) -> dict[str, Any]:
    """Check size, JSON, protocol version (this one, or one from ``same_since`` on for a
    message whose form has not changed since) and type tag; return the JSON object."""
    if not isinstance(payload, bytes | bytearray):
        raise DecodeError("payload is not bytes")
    if len(payload) > max_bytes:
        raise DecodeError(f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}")
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError) as e:
        # ValueError covers JSONDecodeError, UnicodeDecodeError and the integer-digits limit
        # ("Exceeds the limit (4300 digits)"), which is not a JSONDecodeError.
        raise DecodeError(f"payload is not JSON: {e}"[:300]) from e
    if not isinstance(obj, dict):
        raise DecodeError("payload is not a JSON object")
    if b"\\u" in payload:
        _check_no_lone_surrogates(obj)
    version = obj.get("v")
    if version != PROTOCOL_VERSION and not (
            isinstance(version, int) and not isinstance(version, bool)
            and same_since <= version < PROTOCOL_VERSION):
        raise VersionMismatch(version)
    if not isinstance(obj.get("type"), str):
        raise DecodeError("payload has no 'type'")
    return obj


def _check_no_lone_surrogates(obj: dict[str, Any]) -> None:
    """JSON may spell a lone UTF-16 surrogate (``"\\ud800"``); Python keeps it in the str,
    and it then fails wherever the text is encoded (SQLite, the next message, a log file)."""
    try:
        json.dumps(obj, ensure_ascii=False).encode()
    except UnicodeEncodeError as e:
        raise DecodeError(f"payload holds text that is not Unicode: {e}"[:300]) from e


class WorkerState(str, Enum):
    """What a worker's retained status says."""

    ONLINE = "online"
    DRAINING = "draining"
    OFFLINE = "offline"


@dataclass(frozen=True)
class WorkerStatus(Message):
    """Retained on ``status``; the same message with state offline is the Last Will.

    ``session`` is unique per agent process: a status with a new session means the agent
    restarted and holds none of the tasks assigned to the old one.
    """

    TYPE: ClassVar[str] = "status"
    worker_id: str
    state: str
    session: str
    ts: float
    host: str = ""
    version: str = ""
    slots: int = 0
    free_slots: int = 0
    running: list[str] = field(default_factory=list)
    started_at: float = 0.0
    http_port: int | None = None
    heartbeat_s: float = 2.0
    kinds: dict[str, str] = field(default_factory=dict)
    """The kinds this worker can run: name -> version."""
    image: str = ""
    """The worker image's tag ("" outside a container)."""

    def __post_init__(self) -> None:
        check_id(self.worker_id, "worker id")
        WorkerState(self.state)
        if not all(isinstance(t, str) for t in self.running):
            raise ValueError("running must be a list of task ids")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.kinds.items()):
            raise ValueError("kinds must map kind names to versions")


@dataclass(frozen=True)
class Heartbeat(Message):
    """Sent every heartbeat interval; renews the leases of the tasks it lists.

    ``progress`` maps every task the worker holds (running or with a result not yet
    acknowledged) to its progress fraction in [0, 1].
    """

    TYPE: ClassVar[str] = "heartbeat"
    worker_id: str
    session: str
    seq: int
    ts: float
    free_slots: int
    progress: dict[str, float] = field(default_factory=dict)
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Task id -> the latest checkpoint its running attempt saved (``{"step", "name",
    "size", "sha256"}``), kept in the worker's spool: simctl pulls it (``pull``/``chunk``)."""
    resumed: dict[str, int] = field(default_factory=dict)
    """Task id -> the step its running attempt resumed from (only resumed attempts)."""

    def __post_init__(self) -> None:
        check_id(self.worker_id, "worker id")
        for k, v in self.progress.items():
            if not isinstance(k, str) or not _is_number(v):
                raise ValueError("progress must map task ids to fractions")
        if len(self.checkpoints) > MAX_ARTIFACTS:
            raise ValueError(f"checkpoints: at most {MAX_ARTIFACTS} tasks")
        for k, obj in self.checkpoints.items():
            check_id(k, "task id")
            CheckpointRef.from_json(obj)
        for k, step in self.resumed.items():
            if not isinstance(k, str) or not _is_int(step) or step < 0:
                raise ValueError("resumed must map task ids to steps >= 0")

    @property
    def checkpoint_refs(self) -> dict[str, CheckpointRef]:
        """The checkpoints as CheckpointRefs, by task id."""
        return {task_id: CheckpointRef.from_json(obj)
                for task_id, obj in self.checkpoints.items()}


@dataclass(frozen=True)
class Assignment(Message):
    """One attempt of one task, sent to one worker."""

    TYPE: ClassVar[str] = "assign"
    run_id: str
    task_id: str
    attempt: int
    kind: str
    params: dict[str, Any]
    seed: int
    assigned_at: float
    kind_version: str | None = None
    """The version of the kind the task was validated with (None: not recorded, any)."""
    inputs: list[dict[str, Any]] = field(default_factory=list)
    """Files the task starts from (``{"name", "size", "sha256"}``; ``init`` for a chained
    task): the worker pulls each from simctl (``fetch``/``download``) before it runs."""
    max_artifact_bytes: int | None = None
    """The task's artifacts may take this many bytes in all (None: no limit given)."""
    checkpoint_every_s: float = 0.0
    """Save a checkpoint about this often (0: never; a kind that cannot does not). An input
    named ``checkpoint`` is the checkpoint this attempt resumes from."""

    def __post_init__(self) -> None:
        check_id(self.run_id, "run id")
        check_id(self.task_id, "task id")
        if self.attempt < 1:
            raise ValueError("attempt must be >= 1")
        if not 0 <= self.seed < 2**63:
            raise ValueError("seed must be in [0, 2**63)")
        file_refs(self.inputs, "inputs")
        if self.max_artifact_bytes is not None and self.max_artifact_bytes < 0:
            raise ValueError("max_artifact_bytes must be >= 0")
        if not 0.0 <= self.checkpoint_every_s <= MAX_CHECKPOINT_EVERY_S:
            raise ValueError(f"checkpoint_every_s must be in [0, {MAX_CHECKPOINT_EVERY_S:g}]")

    @property
    def input_refs(self) -> tuple[FileRef, ...]:
        """The inputs as FileRefs."""
        return file_refs(self.inputs, "inputs")


class ResultState(str, Enum):
    """How one attempt ended."""

    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


_RESULT_STATES = frozenset(state.value for state in ResultState)
"""The values of :class:`ResultState`, checked on every result (a set look-up, not the
enum's own, which goes through its metaclass)."""


@dataclass(frozen=True)
class Result(Message):
    """The outcome of one attempt; kept by the worker until acknowledged.

    ``retryable`` is false for deterministic failures (bad parameters, a simulation that
    blows up with this seed): retrying them would fail the same way. ``handed_back`` says the
    attempt did not fail but was given back unfinished (the agent is stopping): like a lost
    worker, it does not count against the task's attempts.
    """

    TYPE: ClassVar[str] = "result"
    MAX_BYTES: ClassVar[int] = MAX_RESULT_BYTES
    worker_id: str
    session: str
    run_id: str
    task_id: str
    attempt: int
    state: str
    started_at: float
    finished_at: float
    summary: dict[str, float] = field(default_factory=dict)
    observables: dict[str, list[float]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    retryable: bool = True
    handed_back: bool = False
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    """Every file the attempt produced (``{"name", "size", "sha256"}``), kept in the
    worker's spool until this result is acknowledged; simctl pulls them (``pull``/``chunk``)
    and stores the task done only once it has them all."""

    def __post_init__(self) -> None:
        check_id(self.worker_id, "worker id")
        check_id(self.run_id, "run id")
        check_id(self.task_id, "task id")
        if self.state not in _RESULT_STATES:
            raise ValueError(f"state {self.state!r} must be one of "
                             f"{', '.join(sorted(_RESULT_STATES))}")
        file_refs(self.artifacts, "artifacts")

    @property
    def artifact_refs(self) -> tuple[FileRef, ...]:
        """The artifacts as FileRefs."""
        return file_refs(self.artifacts, "artifacts")

    def to_dict(self) -> dict[str, Any]:
        obj = super().to_dict()
        obj["observables"] = {k: encode_series(v) for k, v in self.observables.items()}
        return obj

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Result:
        series = obj.get("observables", {})
        if not isinstance(series, dict):
            raise DecodeError("result: observables must be an object")
        obj = {**obj, "observables": {str(k): decode_series(v) for k, v in series.items()}}
        summary = obj.get("summary", {})
        if not isinstance(summary, dict) or not all(_is_number(v) for v in summary.values()):
            raise DecodeError("result: summary must map names to finite numbers")
        return super().from_dict(obj)

    @property
    def key(self) -> tuple[str, int]:
        """(task id, attempt): what an Ack names."""
        return (self.task_id, self.attempt)


class EventKind(str, Enum):
    """What a worker event reports."""

    ERROR = "error"
    """A message the worker received was invalid; ``detail`` says why."""
    REJECTED = "rejected"
    """An assignment was refused (no free slot, draining, invalid params); back to pending."""


@dataclass(frozen=True)
class Event(Message):
    """Something simctl should know that is not a result: errors and rejections."""

    TYPE: ClassVar[str] = "event"
    worker_id: str
    kind: str
    detail: str
    ts: float
    topic: str | None = None
    task_id: str | None = None
    attempt: int | None = None

    def __post_init__(self) -> None:
        check_id(self.worker_id, "worker id")
        EventKind(self.kind)


@dataclass(frozen=True)
class Cancel(Message):
    """simctl -> worker: stop these tasks (the child is terminated and replaced)."""

    TYPE: ClassVar[str] = "cancel"
    task_ids: list[str]


@dataclass(frozen=True)
class Ack(Message):
    """simctl -> worker: these results are stored; forget them. Items are [task_id, attempt]."""

    TYPE: ClassVar[str] = "ack"
    results: list[list[Any]]

    def __post_init__(self) -> None:
        for item in self.results:
            if not (
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], str)
                and _is_int(item[1])
            ):
                raise ValueError("ack items must be [task_id, attempt]")


@dataclass(frozen=True)
class Drain(Message):
    """simctl -> worker: take no new tasks (as on SIGTERM), optionally exit when idle."""

    TYPE: ClassVar[str] = "drain"
    exit_when_idle: bool = False


@dataclass(frozen=True)
class ChunkRequest(Message):
    """A request for ``length`` bytes from ``offset`` of the file with this SHA-256: simctl
    asks a worker for its artifacts (``pull``), a worker asks simctl for its inputs
    (``fetch``). The asker keeps a few requests outstanding per file (its credit window)
    and asks again for any that went unanswered, so nothing queues in the broker."""

    TYPE: ClassVar[str] = "chunk_request"
    sha256: str
    offset: int
    length: int

    def __post_init__(self) -> None:
        check_sha256(self.sha256)
        if not 0 <= self.offset <= MAX_FILE_BYTES:
            raise ValueError("offset must be in [0, 2^50]")
        if not 1 <= self.length <= MAX_CHUNK_BYTES:
            raise ValueError(f"length must be in [1, {MAX_CHUNK_BYTES}]")


@dataclass(frozen=True)
class Chunk(Message):
    """The answer to a ChunkRequest: ``data``, the bytes from ``offset`` of the file (fewer
    than asked only at its end), and ``size``, the whole file's. ``error`` (with no data)
    says the file cannot be served (not held, or not the sender's to serve).

    The one message that is not pure JSON: its payload is a JSON header (the fields but
    ``data``), one newline, and the raw bytes (base64 would cost a third more on the wire,
    and JSON parsing of megabytes of text more than the transfer itself).
    """

    TYPE: ClassVar[str] = "chunk"
    MAX_BYTES: ClassVar[int] = MAX_CHUNK_HEADER_BYTES + 1 + MAX_CHUNK_BYTES
    sha256: str
    offset: int
    size: int
    data: bytes | memoryview = b""
    """The bytes (a decoded chunk's are a view into its payload: no copy)."""
    error: str | None = None

    def __post_init__(self) -> None:
        check_sha256(self.sha256)
        if not isinstance(self.data, bytes | bytearray | memoryview):
            raise ValueError("data must be bytes")
        if len(self.data) > MAX_CHUNK_BYTES:
            raise ValueError(f"a chunk carries at most {MAX_CHUNK_BYTES} bytes")
        if not (0 <= self.offset <= MAX_FILE_BYTES and 0 <= self.size <= MAX_FILE_BYTES):
            raise ValueError("offset and size must be in [0, 2^50]")
        if self.error is None and self.offset + len(self.data) > self.size:
            raise ValueError("the chunk ends after the end of the file")
        if self.error is not None and self.data:
            raise ValueError("a chunk with an error carries no data")

    def encode(self) -> bytes:
        return b"".join((self.header(self.sha256, self.offset, self.size, self.error),
                         self.data))

    @classmethod
    def header(cls, sha256: str, offset: int, size: int, error: str | None = None) -> bytes:
        """A chunk's payload up to its data: the JSON header and its newline (a sender may
        read the file's bytes straight after it: ``simproto.transfer.chunk_payload``)."""
        header = _dumps({"v": PROTOCOL_VERSION, "type": cls.TYPE, "sha256": sha256,
                         "offset": offset, "size": size, "error": error})
        if len(header) > MAX_CHUNK_HEADER_BYTES:
            raise ValueError(f"chunk header of {len(header)} bytes exceeds "
                             f"{MAX_CHUNK_HEADER_BYTES}")
        return header + b"\n"

    @classmethod
    @only_decode_errors
    def decode(cls, payload: bytes) -> Chunk:
        if not isinstance(payload, bytes | bytearray):
            raise DecodeError("payload is not bytes")
        if len(payload) > cls.MAX_BYTES:
            raise DecodeError(f"payload of {len(payload)} bytes exceeds the limit of "
                              f"{cls.MAX_BYTES}")
        end = payload.find(b"\n", 0, MAX_CHUNK_HEADER_BYTES + 1)
        if end < 0:
            raise DecodeError("chunk: no header line within its first "
                              f"{MAX_CHUNK_HEADER_BYTES} bytes")
        obj = parse_envelope(bytes(payload[:end]))
        if obj["type"] != cls.TYPE:
            raise DecodeError(f"expected a {cls.TYPE!r} message, got {obj['type']!r}")
        return cls.from_dict({**obj, "data": memoryview(payload)[end + 1 :]})


CONTROL_MESSAGES: dict[str, type[Message]] = {m.TYPE: m for m in (Cancel, Ack, Drain)}
"""The messages that may arrive on a worker's ``control`` topic, by type tag."""


@dataclass(frozen=True)
class WorkerMessage:
    """A decoded message of a worker topic: whose, which channel, what (None: an empty
    payload, which clears a retained status)."""

    worker_id: str
    channel: Channel
    message: Message | None


@only_decode_errors
def decode_worker(topics: Topics, topic: str, payload: bytes) -> WorkerMessage:
    """Decode any message of a worker topic ``{p}/workers/{id}/{channel}`` by the channel's
    message class (:data:`WORKER_MESSAGES`); a message naming another worker than its topic
    is refused. Raises DecodeError (or VersionMismatch) only."""
    worker_id, channel = topics.parse_worker_topic(topic)
    if not payload and channel is Channel.STATUS:
        return WorkerMessage(worker_id, channel, None)
    message = WORKER_MESSAGES[channel](payload)
    named = getattr(message, "worker_id", worker_id)
    if named != worker_id:
        raise DecodeError(f"message of worker {named!r} on the topic of {worker_id!r}")
    return WorkerMessage(worker_id, channel, message)


@only_decode_errors
def decode_control(payload: bytes) -> Cancel | Ack | Drain:
    """Decode any message of the ``control`` topic."""
    obj = parse_envelope(payload)
    cls = CONTROL_MESSAGES.get(obj["type"])
    if cls is None:
        raise DecodeError(f"unknown control message type {obj['type']!r}")
    return cls.from_dict(obj)  # type: ignore[return-value]


@dataclass(frozen=True)
class Ping(Message):
    """Request on ``ping``; the MQTT v5 response topic and correlation data say where to answer."""

    TYPE: ClassVar[str] = "ping"
    sent_at: float
    sender: str = ""


@dataclass(frozen=True)
class Pong(Message):
    """A worker's answer to a Ping, sent to the request's response topic."""

    TYPE: ClassVar[str] = "pong"
    worker_id: str
    state: str
    session: str
    ts: float
    slots: int
    free_slots: int
    version: str
    running: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_id(self.worker_id, "worker id")


@dataclass(frozen=True)
class RunProgress(Message):
    """Retained per run by the dispatcher, so a newcomer sees every run's state at once."""

    TYPE: ClassVar[str] = "run_progress"
    run_id: str
    name: str
    state: str
    total: int
    done: int
    failed: int
    running: int
    pending: int
    updated_at: float
    waiting: dict[str, int] = field(default_factory=dict)
    """Pending tasks no online worker can run, by what they need ("kind version")."""

    def __post_init__(self) -> None:
        check_id(self.run_id, "run id")
        if not all(isinstance(k, str) and _is_int(v) for k, v in self.waiting.items()):
            raise ValueError("waiting must map kind versions to task counts")


@dataclass(frozen=True)
class BrokerIdentity(Message):
    """Retained on ``{p}/broker``: who this broker (and prefix) is, so a run submitted to one
    broker is never resumed against another by mistake (main-PC addresses change)."""

    TYPE: ClassVar[str] = "broker_identity"
    SAME_SINCE: ClassVar[int] = 1
    """Unchanged since protocol 1: an upgraded simctl keeps reading the broker's retained
    identity (a new one would make every run submitted before look like another broker's)."""
    broker_id: str
    created_at: float

    def __post_init__(self) -> None:
        check_id(self.broker_id, "broker id")


WORKER_MESSAGES: dict[Channel, Callable[[bytes], Message]] = {
    Channel.STATUS: WorkerStatus.decode,
    Channel.HEARTBEAT: Heartbeat.decode,
    Channel.RESULT: Result.decode,
    Channel.EVENT: Event.decode,
    Channel.ASSIGN: Assignment.decode,
    Channel.CONTROL: decode_control,
    Channel.PULL: ChunkRequest.decode,
    Channel.CHUNK: Chunk.decode,
    Channel.FETCH: ChunkRequest.decode,
    Channel.DOWNLOAD: Chunk.decode,
}
"""How each per-worker channel's payload is decoded (see :func:`decode_worker`)."""


def package_version() -> str:
    """The installed version of this project (shown in status and ping)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("particle-sim")
    except PackageNotFoundError:
        return "0+unknown"


__all__ = [
    "DEFAULT_TOPIC_PREFIX",
    "MAX_CHECKPOINT_EVERY_S",
    "MAX_CHUNK_BYTES",
    "MAX_CONTROL_BYTES",
    "MAX_RESULT_BYTES",
    "PROTOCOL_VERSION",
    "Ack",
    "Assignment",
    "BrokerIdentity",
    "Cancel",
    "Channel",
    "CheckpointRef",
    "Chunk",
    "ChunkRequest",
    "DecodeError",
    "Drain",
    "Event",
    "EventKind",
    "FileRef",
    "Heartbeat",
    "Message",
    "Ping",
    "Pong",
    "Result",
    "ResultState",
    "RunProgress",
    "Topics",
    "VersionMismatch",
    "WorkerMessage",
    "WorkerState",
    "WorkerStatus",
    "check_id",
    "check_sha256",
    "decode_control",
    "decode_series",
    "decode_worker",
    "encode_series",
    "file_refs",
    "only_decode_errors",
    "package_version",
    "parse_envelope",
]
