"""The YAML settings files shared by simctl and the worker agent: errors name the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simproto.settings_file import read_settings_file


def test_paths_are_relative_to_the_file_and_keys_normalised(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "simctl.yaml"
    config.parent.mkdir()
    config.write_text("topic-prefix: lab\npassword_file: secret\nbroker: null\n")
    settings = read_settings_file(config, {"topic_prefix", "password_file", "broker"},
                                  path_keys={"password_file"})
    assert settings == {"topic_prefix": "lab", "password_file": config.parent / "secret"}


@pytest.mark.parametrize("text, message", [
    ("brokr: x\n", "unknown setting 'brokr'; known: broker"),
    ("- broker\n", "must hold a mapping of broker"),
    ("broker: [\n", ":2: invalid YAML: expected the node content"),
    ("broker: " + "[" * 5000 + "]" * 5000 + "\n", ": invalid YAML: nested too deeply"),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path: Path, text: str,
                                                 message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ValueError, match=re.escape(str(config)) + ".*" + re.escape(message)):
        read_settings_file(config, {"broker"})
