"""Fixtures of the chain tests: the installed kind, and running it the way a worker does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import simkind
from simkind.registry import execute


@pytest.fixture(scope="session")
def chain() -> simkind.LoadedKind:
    """The kind ``chain`` as the entry point installs it."""
    return simkind.discover().get("chain")


@pytest.fixture
def run_chain(chain: simkind.LoadedKind) -> Callable[..., dict[str, Any]]:
    """Run ``chain`` with the given params and seed through ``simkind.registry.execute``."""

    def run(params: dict[str, Any], seed: int = 1,
            context: simkind.Context | None = None) -> dict[str, Any]:
        return execute(chain, params, seed, context)

    return run
