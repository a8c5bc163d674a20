"""Errors of the kind contract: what a kind raises, and what loading the installed kinds finds."""

from __future__ import annotations


class KindError(Exception):
    """Base of every error a kind or the registry raises."""


class ParamError(KindError, ValueError):
    """Invalid kind or parameters; the message names the field, the value and what is allowed."""


class SimulationError(KindError, RuntimeError):
    """A simulation failed for a reason another attempt would meet again (it blew up with
    this seed, or failed on purpose); the message says where."""


class KindLoadError(KindError):
    """An installed kind plugin could not be loaded; names the package and the entry point."""

    def __init__(self, package: str, entry_point: str, reason: str) -> None:
        super().__init__(f"kind plugin {entry_point!r} of package {package}: {reason}")
        self.package = package
        self.entry_point = entry_point
        self.reason = reason


class UnknownKind(ParamError):
    """A task names a kind not installed here."""

    def __init__(self, name: object, installed: list[str], hint: str = "") -> None:
        allowed = ", ".join(installed) or "none"
        super().__init__(f"unknown kind {name!r}: installed kinds are {allowed}{hint}")
        self.name = name
