"""Parameter validation for every kind, in pure Python (no compiled extension needed).

simctl validates task files with this module before anything is sent.
"""

from __future__ import annotations

from typing import Any

from ckernel.errors import ParamError

KINDS: tuple[str, ...] = ("sleep",)
"""The simulation kinds, in documentation order."""

_SLEEP_MAX_SECONDS = 86_400.0


def validate(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Return ``params`` with defaults filled in, or raise ParamError naming the field."""
    if kind not in KINDS:
        raise ParamError(f"unknown kind {kind!r}: allowed kinds are {', '.join(KINDS)}")
    if not isinstance(params, dict):
        raise ParamError(f"params for {kind!r} must be a mapping, got {type(params).__name__}")
    unknown = sorted(set(params) - {"seconds", "fail"})
    if unknown:
        raise ParamError(f"{kind}: unknown parameter {unknown[0]!r}: allowed are fail, seconds")
    seconds = params.get("seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ParamError(f"{kind}.seconds: must be a number, got {seconds!r}")
    if not 0.0 <= seconds <= _SLEEP_MAX_SECONDS:
        raise ParamError(f"{kind}.seconds = {seconds!r} out of range [0, {_SLEEP_MAX_SECONDS:g}]")
    fail = params.get("fail", False)
    if not isinstance(fail, bool):
        raise ParamError(f"{kind}.fail: must be true or false, got {fail!r}")
    return {"seconds": float(seconds), "fail": fail}
