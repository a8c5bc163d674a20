"""YAML settings files, read the same way by simctl and the worker agent.

Keys are the long option names ('-' and '_' interchangeable); a path-valued setting is
taken relative to the file's folder, so a generated config file can name the credentials
beside it.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml


def read_settings_file(
    path: str | Path, known: Collection[str], path_keys: Collection[str] = ()
) -> dict[str, Any]:
    """The settings in ``path``, keys normalised to ``_``; null values are left out.

    Raises ValueError naming the file and, for an unknown setting, the key and the known ones.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read config file {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ValueError(yaml_error_message(path, e)) from e
    except RecursionError as e:
        raise ValueError(f"{path}: invalid YAML: nested too deeply") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of {', '.join(known)}")
    settings: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ValueError(
                f"config file {path}: unknown setting {key!r}; known: {', '.join(known)}"
            )
        if value is None:
            continue
        if name in path_keys:
            value = path.parent / Path(str(value)).expanduser()
        settings[name] = value
    return settings


def yaml_error_message(path: str | Path, error: yaml.YAMLError) -> str:
    """``FILE:LINE: invalid YAML: PROBLEM (column N)``: PyYAML's own text points into
    ``"<unicode string>"`` (it is handed the file's text), naming neither the file nor, for a
    reader, the line in a useful way."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is None:
        return f"{path}: invalid YAML: {problem}"
    return f"{path}:{mark.line + 1}: invalid YAML: {problem} (column {mark.column + 1})"
