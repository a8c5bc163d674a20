"""``simctl kinds``: the kinds installed where simctl runs, or one kind's parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from simctl.errors import InputError

if TYPE_CHECKING:
    from simkind import LoadedKind


@click.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def kinds(name: str | None, as_json: bool) -> None:
    """List the installed kinds (name, version, package, description); with NAME, print
    that kind's parameters (type, default, allowed range, unit, meaning) and rules.

    Plugins that failed to load are listed with the reason; the other kinds still work.
    """
    import simkind
    from simctl.display import emit_json, table
    from simkind.fields import parameter_rows

    registry = simkind.installed()
    if name is not None:
        try:
            loaded = registry.get(name)
        except simkind.UnknownKind as e:
            raise InputError(str(e)) from e
        rows = parameter_rows(loaded.kind.params)
        if as_json:
            emit_json({**_summary(loaded), "parameters": rows, "rules": loaded.kind.rules})
            return
        click.echo(f"{loaded.name} {loaded.version} ({loaded.package} "
                   f"{loaded.package_version}): {loaded.kind.description}\n")
        columns = ["name", "type", "default", "allowed", "unit", "doc"]
        click.echo(table([[r[c] for c in columns] for r in rows],
                         ["parameter", "type", "default", "allowed", "unit", "meaning"]))
        if loaded.kind.rules:
            click.echo(f"\nrules: {loaded.kind.rules}")
        return
    listed = [_summary(k) for _, k in sorted(registry.kinds.items())]
    broken = [{"package": e.package, "entry_point": e.entry_point, "error": e.reason}
              for e in registry.errors]
    if as_json:
        emit_json({"kinds": listed, "errors": broken})
        return
    columns = ["name", "version", "package", "description"]
    click.echo(table([[k[c] for c in columns] for k in listed], columns) if listed
               else "no kinds installed")
    for error in registry.errors:
        click.echo(f"warning: {error}", err=True)


def _summary(loaded: LoadedKind) -> dict[str, str]:
    return {"name": loaded.name, "version": loaded.version, "package": loaded.package,
            "package_version": loaded.package_version,
            "description": loaded.kind.description, "entry_point": loaded.entry_point}
