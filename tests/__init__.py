"""The test suite, a package so that its harness imports as ``tests.support`` (see there)."""
