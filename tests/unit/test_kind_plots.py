"""The plots and units of the kind contract: what a kind may declare, and what it is refused."""

from __future__ import annotations

import pytest

import simkind
from ckernel.params import BUILT_IN
from simkind import Field, Kind, Plot


def kind(**extra: object) -> Kind:
    return Kind("demo", "a demo kind", {"temperature": Field("float", 1.0, "T", unit="K")},
                "demo.run:run", **extra)  # type: ignore[arg-type]


def test_units_and_plots_are_declared_and_looked_up() -> None:
    k = kind(units={"energy": "J", "temperature": "K (measured)"},
             plots=(Plot(y="energy"), Plot(observable="energy", name="energy-series")))
    assert k.unit("energy") == "J"
    assert k.unit("temperature") == "K (measured)"  # the summary's own unit comes first
    assert k.unit("unknown") == ""
    assert kind().unit("temperature") == "K"  # else the parameter's
    assert [p.key for p in k.plots] == ["energy", "energy-series"]


@pytest.mark.parametrize(("plot", "message"), [
    (dict(), "exactly one of y"),
    (dict(y="a", observable="b"), "exactly one of y"),
    (dict(y=""), "non-empty name"),
    (dict(observable="msd", diagonal=True), "diagonal is for y plots"),
    (dict(y="a", name="a b"), "name 'a b' must match"),
])
def test_a_malformed_plot_is_refused(plot: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Plot(**plot)  # type: ignore[arg-type]


@pytest.mark.parametrize(("extra", "message"), [
    (dict(units={"energy": 1}), "units must map"),
    (dict(plots=[Plot(y="e")]), "plots must be a tuple"),
    (dict(plots=(Plot(y="e"), Plot(observable="e"))), r"names repeated \(e\)"),
])
def test_a_kind_with_malformed_units_or_plots_is_refused(extra: dict[str, object],
                                                         message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kind(**extra)


def test_every_built_in_physical_kind_declares_plots_and_units() -> None:
    assert [p.key for p in BUILT_IN["lj"].plots] == [
        "mean_total_energy", "mean_pressure", "mean_temperature"]
    assert {p.y or p.observable for p in BUILT_IN["nbody"].plots} >= {
        "max_relative_energy_error"}
    brownian = {p.key: p for p in BUILT_IN["brownian"].plots}
    assert brownian["diffusion_coefficient"].x == "diffusion_expected"
    assert "msd" in brownian
    assert BUILT_IN["lj"].unit("mean_pressure") == "epsilon / sigma^3"
    assert BUILT_IN["brownian"].unit("diffusion_coefficient") == "length^2 / time"
    assert simkind.Plot is Plot
