"""docs/config-reference.md is generated from the config dataclasses and must
be what the generator writes now; every key it lists is one the loader takes
from its environment variable."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from epns import config, config_reference
from epns.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs/config-reference.md"


def test_the_committed_reference_is_current() -> None:
    assert DOC.read_text() == config_reference.render(), (
        "docs/config-reference.md is stale: run scripts/config-reference")


def test_the_script_writes_the_reference(tmp_path: Path) -> None:
    # The script writes into its own checkout: run a copy of the two files it needs.
    (tmp_path / "scripts").mkdir()
    (tmp_path / "docs").mkdir()
    script = tmp_path / "scripts/config-reference"
    script.write_text((ROOT / "scripts/config-reference").read_text())
    script.chmod(0o755)
    done = subprocess.run([str(script)], env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "docs/config-reference.md").read_text() == config_reference.render()


def _keys() -> list[tuple[config_reference.ConfigFile, config_reference.Key]]:
    return [(item, key) for item in config_reference.FILES
            for _, _, keys in config_reference._sections(item.schema, item.prefix)
            for key in keys]


def test_every_section_and_key_is_listed() -> None:
    text = DOC.read_text()
    for item, key in _keys():
        assert f"`{key.env}`" in text
        assert key.env.startswith(item.prefix)
    listed = {key.path for item, key in _keys() if item.program == "epns-server"}
    assert ("broker_auth", "secret") in listed
    assert ("listeners", "fallback", "port") in {
        key.path for item, key in _keys() if item.program == "epns-broker"}


def _load_error(item: config_reference.ConfigFile, env: dict[str, str]) -> str:
    try:
        config.load(item.schema, None, env, item.prefix)
    except ConfigError as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize(("item", "key"), _keys(), ids=lambda v: getattr(v, "env", ""))
def test_each_environment_variable_reaches_its_key(item: config_reference.ConfigFile,
                                                    key: config_reference.Key) -> None:
    """The loader takes the listed name: an unknown one is a ConfigError that
    says "unknown key" (a misspelt control case proves it), a bad value at
    most a complaint about the value."""
    assert "unknown key" not in _load_error(item, {key.env: "x"})
    assert "unknown key" in _load_error(item, {key.env + "_TYPO": "x"})
    schema: object = item.schema
    for part in key.path:
        assert dataclasses.is_dataclass(schema)
        schema = typing.get_type_hints(schema)[part]
