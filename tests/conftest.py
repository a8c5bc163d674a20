"""The shared harness is the package tests/support; its fixtures come from its plugin."""

pytest_plugins = ["tests.support.fixtures"]
