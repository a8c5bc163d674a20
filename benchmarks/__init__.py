"""Performance scripts, run from the repository root as modules (``python -m
benchmarks.dispatch``): the dispatch benchmark uses the tests' harness, ``tests.support``."""
