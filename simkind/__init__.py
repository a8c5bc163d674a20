"""The contract of a simulation kind, and the registry of the installed ones.

A kind is a plugin: a :class:`Kind` (name, version, parameter specification of
:class:`Field` s, cross-field rules, cost estimate, the units and default :class:`Plot` s
of its results, and the ``module:function`` that runs it) registered under the entry-point
group ``particle_sim.kinds``. The built-in kinds of ``ckernel`` are registered the same way.
This package is pure Python: simctl validates task files with it where no compiled
extension is installed. See ``docs/writing-a-kind.md``.
"""

from __future__ import annotations

from simkind.errors import KindError, KindLoadError, ParamError, SimulationError, UnknownKind
from simkind.extxyz import FINAL_CONFIGURATION, INIT_INPUT, TRAJECTORY, Frame
from simkind.fields import Field
from simkind.kind import Context, Kind, Output, Plot
from simkind.registry import GROUP, LoadedKind, Registry, discover, execute, installed

__all__ = ["FINAL_CONFIGURATION", "GROUP", "INIT_INPUT", "TRAJECTORY", "Context", "Field",
           "Frame", "Kind", "KindError", "KindLoadError", "LoadedKind",
           "Output", "ParamError", "Plot", "Registry", "SimulationError", "UnknownKind",
           "discover", "execute", "installed"]
