"""particle-sim side by side with Celery (Redis broker and results) and Dask distributed.

Every system gets the same two worker processes (one per core, one task at a time each) on
this machine, runs the same workloads, and the systems take turns within each repetition so
machine noise hits all of them alike. Medians over the repetitions are reported.

Workloads:

1. overhead - N tasks that do nothing (a no-op function for the peers, the ``sleep`` kind
   with 0 s for particle-sim): tasks per second from the first submission to the last
   result available on the main side.
2. sweep - equal Lennard-Jones tasks (same parameters, different seeds), the same
   ``ckernel.simulate`` call in every system: makespan, and its ratio to the ideal (the sum
   of the task times measured alone, one after another, divided by the number of workers).
3. kill - workload 2 again, and once half of the tasks have finished, ``kill -9`` of a
   process that is running a task ("process": the Celery pool process, the Dask worker
   process, the agent's slot process) or of that worker's whole process group ("node": as
   when a worker machine or container dies). Counted: tasks lost (no result when the run
   ended), tasks that ran to completion more than once, whether the run finished in time.

particle-sim is driven only through its public CLI (``worker-agent``, ``simctl``) against a
local Mosquitto. Executions are counted the same way in every system: a wrapper around
``ckernel.simulate`` appends one line to a per-run file (O_APPEND) when a task starts and one
when it ends; for particle-sim the wrapper is installed into the agents' processes by a
``sitecustomize`` module on their PYTHONPATH (``agent_hook/sitecustomize.py``), so the
product's code is not changed.

Needs the ``bench`` extra (``pip install -e '.[bench]'``), Debian's ``redis-server`` and
``mosquitto``. ``--quick`` runs each workload once at a small size.

    python -m benchmarks.peers [--quick] [--help]     # from the repository root

Modules: :mod:`.common` (settings, processes, the workload types), :mod:`.execution`
(counting executions, killing a busy worker), one per system (:mod:`.ours`,
:mod:`.celery_redis`, :mod:`.dask_distributed`), :mod:`.run` (the plan and the
measurements), :mod:`.report` (table, plot, machine and versions) and ``__main__`` (the
command line).
"""
