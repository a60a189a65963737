"""What each released distribution requires (``[tool.epns.release.*]`` in
pyproject.toml, release/build.py), held to what its packages import: the agent
requires exactly the third-party distributions epns, agent_push and
epns_check import; the server requires at least what broker and server_push
import; and together they require every dependency of the checkout, so the
development install and the releases run the same code on the same
libraries. No build here: tests/packaging/test_artifacts.py builds them."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from release.build import (
    AGENT,
    SERVER,
    BuildError,
    canonical,
    glibc_floor,
    releases,
    requirement_name,
)

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = "9.8.7"
# What an operator measured the agent pulling in before it had a distribution
# of its own (issue 16): none of it may come with the agent.
SERVER_ONLY = {"fastapi", "starlette", "pydantic", "sqlalchemy", "alembic", "uvicorn", "asyncpg",
               "aiosqlite", "aiomqtt", "argon2-cffi", "jinja2", "itsdangerous",
               "python-multipart", "uvloop", "websockets"}


def _not_installable_here(top: str) -> str | None:
    """The distribution of a module that exists only on another system."""
    if top.startswith("win32") or top in {"pywintypes", "pythoncom", "servicemanager"}:
        return "pywin32"
    return None


def _imported_distributions(packages: tuple[str, ...]) -> set[str]:
    """The installed distributions that provide the top-level modules these
    packages import anywhere (in functions too), the standard library and
    the checkout's own packages left out."""
    own = {"epns", "agent_push", "epns_check", "broker", "server_push"}
    tops: set[str] = set()
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    tops.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    tops.add(node.module.split(".")[0])
    third_party = tops - own - set(sys.stdlib_module_names) - {"__future__"}
    providers = {top: [canonical(dist) for dist in dists]
                 for top, dists in packages_distributions().items()}
    for top in third_party - set(providers):
        elsewhere = _not_installable_here(top)
        assert elsewhere is not None, f"{top} is imported but installed by no distribution"
        providers[top] = [elsewhere]
    return {dist for top in third_party for dist in providers[top]}


def _names(requirements: tuple[str, ...] | list[str]) -> set[str]:
    return {requirement_name(req) for req in requirements}


def test_the_agent_requires_exactly_what_its_packages_import() -> None:
    agent = releases(PYPROJECT, VERSION)[AGENT]
    optional = {name for _, requires in agent.extras for name in _names(requires)}
    assert _names(agent.requires) | optional == _imported_distributions(agent.packages)
    assert not (_names(agent.requires) | optional) & SERVER_ONLY
    # pywin32 is only for the Windows service, which says so when it is missing.
    assert optional == {"pywin32"}


def test_the_server_requires_what_it_imports_and_the_agent_at_its_version() -> None:
    built = releases(PYPROJECT, VERSION)
    server = built[SERVER]
    assert f"epns-agent=={VERSION}" in server.requires
    assert _imported_distributions(server.packages) <= _names(server.requires)
    assert not set(server.packages) & set(built[AGENT].packages)


def test_the_releases_require_every_dependency_of_the_checkout() -> None:
    built = releases(PYPROJECT, VERSION)
    required = set().union(*(_names(release.requires) for release in built.values()))
    declared = _names(PYPROJECT["project"]["dependencies"])
    assert required - {AGENT} == declared
    # The checkout's specifiers, markers included, not a copy of them.
    assert "uvloop>=0.19; sys_platform != 'win32'" in built[SERVER].requires


def test_every_package_of_the_checkout_is_in_one_release() -> None:
    built = releases(PYPROJECT, VERSION)
    held = [package for release in built.values() for package in release.packages]
    assert sorted(held) == sorted(
        name.rstrip("*") for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"])
    scripts = [script for release in built.values() for script, _ in release.scripts]
    assert sorted(scripts) == sorted(PYPROJECT["project"]["scripts"])


def test_an_unknown_dependency_name_is_refused_by_name() -> None:
    broken = {**PYPROJECT, "tool": {**PYPROJECT["tool"], "epns": {"release": {
        "epns-agent": {**PYPROJECT["tool"]["epns"]["release"]["epns-agent"],
                       "dependencies": ["paho-mqtt", "no-such-thing"]}}}}}
    with pytest.raises(BuildError, match=r"epns-agent\] names 'no-such-thing'"):
        releases(broken, VERSION)


def test_the_glibc_floor_is_the_newest_any_wheel_needs() -> None:
    assert glibc_floor([
        "cffi-2.1.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "psutil-7.2.2-cp36-abi3-manylinux2010_x86_64.manylinux_2_12_x86_64.whl",
        "cryptography-51.0.1-cp311-abi3-manylinux_2_34_x86_64.whl",
        "h11-0.16.0-py3-none-any.whl"]) == (2, 34)
    assert glibc_floor(["psutil-7.2.2-cp36-abi3-manylinux2010_x86_64.whl"]) == (2, 12)
    assert glibc_floor(["h11-0.16.0-py3-none-any.whl"]) is None
