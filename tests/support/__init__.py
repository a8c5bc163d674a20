"""The shared test harness: real processes, a real Mosquitto, hostile payloads.

Tests get the harness's fixtures (``broker``, ``topic_prefix``, ``cluster``,
``deployed_broker``) from the plugin :mod:`tests.support.fixtures`, which ``tests/conftest.py``
registers with ``pytest_plugins``; they import the plain helpers from the modules here::

    from tests.support.procs import Cluster, assert_run_complete, sleep_tasks
    from tests.support.waiting import wait_for

Only :mod:`~tests.support.fixtures` and :mod:`~tests.support.kernels` (parametrize marks)
import pytest, so the benchmarks use the rest without it, run from the repository root as
modules (``python -m benchmarks.dispatch``), which puts the root, and so this package, on
the import path.

- :mod:`~tests.support.procs`: worker agents and simctl as subprocesses, a watcher of the
  traffic, and :class:`~tests.support.procs.Cluster` owning them all.
- :mod:`~tests.support.waiting`: :func:`~tests.support.waiting.wait_for`, polling.
- :mod:`~tests.support.hostile`: seeded hostile payloads for every protocol message.
- :mod:`~tests.support.blackhole`: a TCP proxy that goes silent without closing anything.
- :mod:`~tests.support.deployed_broker`: Mosquitto with the deployed security (needs
  jinja2, from the deploy extra).
- :mod:`~tests.support.mqtt_probe`: connect as a user and read the CONNACK.
- :mod:`~tests.support.vms`: containerised VMs for the deploy test.
- :mod:`~tests.support.kernels`: both kernel backends, every SIMD variant, NIST data.
"""
