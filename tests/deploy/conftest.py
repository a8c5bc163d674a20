"""Fixtures of the deploy tests: ``deployed_broker`` (tests/deploy/deployed_broker.py)."""

from __future__ import annotations

from deployed_broker import deployed_broker

__all__ = ["deployed_broker"]
