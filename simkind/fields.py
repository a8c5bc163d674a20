"""Parameter specifications: one :class:`Field` per parameter, checked by :func:`check`.

Pure Python (no numpy, no compiled extension): simctl validates task files with it on the
main PC before anything is sent. Every error names the field, the value and what is allowed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from simkind.errors import ParamError

FIELD_TYPES = ("int", "float", "bool", "choice", "str", "vectors", "custom")
"""What a :class:`Field` may hold; ``custom`` fields bring their own ``parse``."""


@dataclass(frozen=True)
class Field:
    """One parameter: its type, default, allowed range (``None`` bound = unbounded), unit
    and one-line doc.

    ``custom`` fields check themselves: ``parse(where, value)`` returns the validated value or
    raises :class:`ParamError`, and ``describe`` says in words what is allowed.

    ``output`` marks a field that says what the task writes (a trajectory's interval, whether
    to save the final configuration), not what it simulates: it is left out of the task's
    seed, so turning a trajectory on does not change the dynamics it records.
    """

    type: str
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: the value must be strictly above ``low``
    choices: tuple[str, ...] = ()
    unit: str = ""
    parse: Callable[[str, Any], Any] | None = None
    describe: str = ""
    output: bool = False

    def __post_init__(self) -> None:
        if self.type not in FIELD_TYPES:
            raise ValueError(f"field type {self.type!r}: must be one of {', '.join(FIELD_TYPES)}")
        if self.type == "choice" and not self.choices:
            raise ValueError("a choice field needs choices")
        if self.type == "custom" and (self.parse is None or not self.describe):
            raise ValueError("a custom field needs parse and describe")

    def allowed(self) -> str:
        """Human-readable range or type, used in error messages and docs."""
        if self.type == "choice":
            return "one of " + ", ".join(self.choices)
        if self.type == "bool":
            return "true or false"
        if self.type == "str":
            return "a string"
        if self.type == "vectors":
            return "a list of [x, y, z] number triples"
        if self.type == "custom":
            return self.describe
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        bracket = "(" if self.low_open else "["
        return f"{'an integer' if self.type == 'int' else 'a number'} in {bracket}{low}, {high}]"


Spec = Mapping[str, Field]
"""A kind's parameters by name, in documentation order."""


def simulated(spec: Spec, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` without the fields marked ``output``: what decides the dynamics."""
    return {k: v for k, v in params.items() if k not in spec or not spec[k].output}


def yaml_repr(value: Any) -> str:
    """``value`` as a task file spells it, for error messages: ``true``, ``null``, ``.inf``,
    strings quoted (``'red'``), lists and mappings in flow style."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, str):
        if value.isprintable():
            return "'" + value.replace("'", "''") + "'"
        return json.dumps(value)  # a double-quoted YAML string, escapes included
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{yaml_repr(k)}: {yaml_repr(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_repr(v) for v in value) + "]"
    return repr(value)


def validate(kind: str, spec: Spec, params: Any) -> dict[str, Any]:
    """Return ``params`` checked against ``spec``, defaults filled in (cross-field rules are
    the kind's); raise ParamError naming the field. ``None`` means "not given", so validating
    an already validated dict gives it back unchanged."""
    if not isinstance(params, dict):
        raise ParamError(f"params for {yaml_repr(kind)} must be a mapping, "
                         f"got {type(params).__name__}")
    if unknown := params.keys() - spec.keys():
        first = min(str(name) for name in unknown)
        raise ParamError(f"{kind}: unknown parameter {yaml_repr(first)}: allowed are "
                         f"{', '.join(sorted(spec))}")
    return {name: check(f"{kind}.{name}", field, params[name])
            if params.get(name) is not None else field.default
            for name, field in spec.items()}


def check(where: str, field: Field, value: Any) -> Any:
    """The validated ``value`` of one field, or ParamError naming ``where``."""
    if field.type == "bool":
        if not isinstance(value, bool):
            raise ParamError(f"{where} = {yaml_repr(value)}: must be true or false")
        return value
    if field.type == "choice":
        if value not in field.choices:
            raise ParamError(f"{where} = {yaml_repr(value)}: must be {field.allowed()}")
        return value
    if field.type == "str":
        if not isinstance(value, str):
            raise ParamError(f"{where} = {yaml_repr(value)}: must be a string")
        return value
    if field.type == "vectors":
        return vectors(where, value)
    if field.type == "custom":
        assert field.parse is not None
        return field.parse(where, value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParamError(f"{where} = {yaml_repr(value)}: must be {field.allowed()}")
    if field.type == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise ParamError(f"{where} = {yaml_repr(value)}: must be {field.allowed()}")
            value = int(value)
    else:
        value = float(value)
    too_low = field.low is not None and (value <= field.low if field.low_open
                                         else value < field.low)
    too_high = field.high is not None and value > field.high
    if not math.isfinite(value) or too_low or too_high:
        raise ParamError(f"{where} = {yaml_repr(value)} out of range: must be {field.allowed()}")
    return value


def number(where: str, value: Any) -> float:
    """A finite number as float, or ParamError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ParamError(f"{where} = {yaml_repr(value)}: must be a finite number")
    return float(value)


def triple(where: str, value: Any) -> list[float]:
    """An [x, y, z] triple of finite numbers, or ParamError."""
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ParamError(f"{where} = {yaml_repr(value)}: must be a list of 3 numbers")
    return [number(where, c) for c in value]


def vectors(where: str, value: Any) -> list[list[float]]:
    """A non-empty list of triples, or ParamError naming the row."""
    if not isinstance(value, list | tuple) or not value:
        raise ParamError(f"{where}: must be a non-empty list of [x, y, z] number triples, "
                         f"got {type(value).__name__}")
    return [triple(f"{where}[{i}]", row) for i, row in enumerate(value)]


def show_default(value: Any) -> str:
    """A default as a task file spells it (``true``, not ``True``; — for none)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parameter_rows(spec: Spec) -> list[dict[str, str]]:
    """One row per parameter, in spec order: name, type, default, allowed, unit, doc (what
    ``simctl kinds NAME`` and the docs' parameter tables show)."""
    return [{"name": name, "type": f.type, "default": show_default(f.default),
             "allowed": f.allowed(), "unit": f.unit, "doc": f.doc} for name, f in spec.items()]
