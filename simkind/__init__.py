"""The contract of a simulation kind, and the registry of the installed ones.

A kind is a plugin: a :class:`Kind` (name, version, parameter specification of
:class:`Field` s, cross-field rules, cost estimate, the units and default :class:`Plot` s
of its results, and the ``module:function`` that runs it) registered under the entry-point
group ``particle_sim.kinds``. The built-in kinds of ``ckernel`` are registered the same way.
A kind may save checkpoints through its :class:`Context` to resume from after its worker
died or stopped (:mod:`simkind.checkpoint`). This package is pure Python: simctl validates
task files with it where no compiled extension is installed (numpy is imported only to read
and write checkpoints). See ``docs/writing-a-kind.md``.
"""

from __future__ import annotations

from simkind.checkpoint import CHECKPOINT_INPUT, CheckpointError, Preempted, read_state, write_state
from simkind.errors import KindError, KindLoadError, ParamError, SimulationError, UnknownKind
from simkind.extxyz import FINAL_CONFIGURATION, INIT_INPUT, TRAJECTORY, Frame
from simkind.fields import Field
from simkind.kind import Context, Kind, Output, Plot
from simkind.registry import GROUP, LoadedKind, Registry, discover, execute, installed

__all__ = ["CHECKPOINT_INPUT", "FINAL_CONFIGURATION", "GROUP", "INIT_INPUT", "TRAJECTORY",
           "CheckpointError", "Context", "Field", "Frame", "Kind", "KindError",
           "KindLoadError", "LoadedKind", "Output", "ParamError", "Plot", "Preempted",
           "Registry", "SimulationError", "UnknownKind", "discover", "execute", "installed",
           "read_state", "write_state"]
