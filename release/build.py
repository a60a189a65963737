"""Build the released artifacts from this checkout (``scripts/build-packages``).

    dist/epns_agent-<v>-py3-none-any.whl    epns, agent_push, epns_check
    dist/epns_server-<v>-py3-none-any.whl   broker, server_push; requires epns-agent==<v>
    dist/wheelhouse/                        the agent wheel and every wheel it requires
    dist/epns-agent_<v>-<rev>_<arch>.deb    the agent for Debian and Ubuntu
    dist/epns-agent-<v>.pyz                 the agent in one file (shiv)

The root ``pyproject.toml`` stays the development checkout (one editable
install of everything); ``[tool.epns.release.*]`` there says what each wheel
holds and requires, with the specifiers of ``[project] dependencies``, so
nothing is written twice. Each wheel is built by setuptools (``pip wheel``) from
a staging directory that holds a generated ``pyproject.toml`` and a copy of its
packages. The version is ``epns.__version__``.

The ``.deb`` and the single file carry the agent's dependencies, compiled ones
included (cryptography, cffi, psutil): they are for the CPU architecture of
the interpreter running this script, and for its Python minor version and
every later one up to ``NEWEST_PYTHON`` (add_python_versions), as the
``.deb``'s Depends line states.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

from epns.errors import EPNSError

ROOT = Path(__file__).resolve().parents[1]
DEB_SCRIPTS = Path(__file__).resolve().parent / "deb"
AGENT = "epns-agent"
SERVER = "epns-server"
# The .deb's places (docs/install-agent.md says the same).
DEB_LIB = "usr/lib/epns-agent"
DEB_UNIT = "usr/lib/systemd/system/epns-agent.service"
DEB_DOC = "usr/share/doc/epns-agent"
# Where the unit in systemd/ expects a pipx install, and where the .deb puts it.
PIPX_COMMAND = "/usr/local/bin/epns-agent"
DEB_COMMAND = "/usr/bin/epns-agent"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# A compiled module for exactly one Python minor version (not abi3).
_ABI_SPECIFIC = re.compile(r"\.cpython-3(\d+)-[^/]*\.so$")
# The .deb and the single file run on the building Python's minor version and
# every later one up to this: the modules compiled for exactly one version
# (cffi's backend, which cryptography loads) are added from those versions'
# wheels, side by side (each interpreter loads the file with its own tag).
NEWEST_PYTHON = 13
# PEP 600's tag and the older names of the same glibc floors.
_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_")
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
# The compiled modules are the wheels' own, byte for byte (their hashes are
# the index's): not stripped, as dh_strip would.
LINTIAN_OVERRIDES = "epns-agent: unstripped-binary-or-object [usr/lib/epns-agent/*]\n"


class BuildError(EPNSError):
    """A release cannot be built: the message says which step and why."""


@dataclass(frozen=True)
class Release:
    """One distribution to build: its packages, requirements and commands."""

    name: str
    version: str
    summary: str
    packages: tuple[str, ...]
    requires: tuple[str, ...]
    extras: tuple[tuple[str, tuple[str, ...]], ...]
    scripts: tuple[tuple[str, str], ...]
    package_data: tuple[tuple[str, tuple[str, ...]], ...]

    @property
    def wheel_name(self) -> str:
        """The file ``pip wheel`` writes (PEP 427's escaped name)."""
        return f"{self.name.replace('-', '_')}-{self.version}-py3-none-any.whl"


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The canonical distribution name a requirement string starts with."""
    found = _NAME.match(requirement.strip())
    if found is None:
        raise BuildError(f"not a requirement: {requirement!r}")
    return canonical(found.group(0))


def read_version(root: Path) -> str:
    """``epns.__version__``, read without importing the package."""
    text = (root / "epns" / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if found is None:
        raise BuildError("epns/__init__.py has no __version__ = \"...\" line")
    return found.group(1)


def releases(pyproject: Mapping[str, Any], version: str) -> dict[str, Release]:
    """The ``[tool.epns.release.*]`` tables resolved against ``[project]``:
    each named dependency gets the checkout's specifier, a release's own name
    pins that release at ``version``; its extras are the checkout's optional
    dependencies of those names."""
    project = pyproject["project"]
    optional: Mapping[str, list[str]] = project.get("optional-dependencies", {})
    tables: Mapping[str, Any] = pyproject["tool"]["epns"]["release"]
    specifiers = {requirement_name(req): req for req in project["dependencies"]}
    entry_points: Mapping[str, str] = project["scripts"]
    package_data: Mapping[str, list[str]] = (
        pyproject["tool"].get("setuptools", {}).get("package-data", {}))
    built: dict[str, Release] = {}
    for name, table in tables.items():
        requires = []
        for wanted in table["dependencies"]:
            key = canonical(wanted)
            if key in tables:
                requires.append(f"{key}=={version}")
            elif key in specifiers:
                requires.append(specifiers[key])
            else:
                raise BuildError(f"[tool.epns.release.{name}] names {wanted!r}, which is not "
                                 "in [project] dependencies")
        unknown = [script for script in table["scripts"] if script not in entry_points]
        if unknown:
            raise BuildError(f"[tool.epns.release.{name}] scripts {unknown} are not in "
                             "[project.scripts]")
        extras = []
        for extra in table.get("extras", []):
            if extra not in optional:
                raise BuildError(f"[tool.epns.release.{name}] extras names {extra!r}, which is "
                                 "not in [project.optional-dependencies]")
            extras.append((extra, tuple(optional[extra])))
        packages = tuple(table["packages"])
        built[name] = Release(
            name=name, version=version, summary=table["summary"], packages=packages,
            requires=tuple(requires), extras=tuple(extras),
            scripts=tuple((script, entry_points[script]) for script in table["scripts"]),
            package_data=tuple((package, tuple(globs)) for package, globs in
                               package_data.items() if package.split(".")[0] in packages))
    return built


def _toml(value: Any) -> str:
    # JSON's strings and arrays of strings are valid TOML.
    return json.dumps(value)


def staged_pyproject(release: Release, packages: Sequence[str]) -> str:
    """The ``pyproject.toml`` a release's staging directory is built from."""
    lines = [
        "[build-system]", 'requires = ["setuptools>=61"]',
        'build-backend = "setuptools.build_meta"', "",
        "[project]", f"name = {_toml(release.name)}", f"version = {_toml(release.version)}",
        f"description = {_toml(release.summary)}", 'readme = "README.md"',
        'requires-python = ">=3.11"', 'license = { text = "Apache-2.0" }',
        f"dependencies = {_toml(list(release.requires))}", "",
        "[project.optional-dependencies]",
        *(f"{_toml(extra)} = {_toml(list(requires))}" for extra, requires in release.extras), "",
        "[project.scripts]",
        *(f"{_toml(script)} = {_toml(target)}" for script, target in release.scripts), "",
        "[tool.setuptools]", f"packages = {_toml(list(packages))}", "",
        "[tool.setuptools.package-data]",
        *(f"{_toml(package)} = {_toml(list(globs))}" for package, globs in release.package_data),
    ]
    return "\n".join(lines) + "\n"


def _packages_under(root: Path, top: str) -> list[str]:
    """``top`` and its subpackages (directories with an ``__init__.py``)."""
    return sorted(".".join(init.parent.relative_to(root).parts)
                  for init in (root / top).rglob("__init__.py")
                  if "__pycache__" not in init.parts)


def _run(argv: Sequence[str | Path], step: str) -> str:
    done = subprocess.run([str(arg) for arg in argv], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise BuildError(f"{step} failed ({done.returncode}): {' '.join(map(str, argv))}\n"
                         f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done.stdout


def _setuptools_here() -> bool:
    """Whether this interpreter can build the wheels itself (setuptools >= 61
    reads [project]; before 70.1 it needs the wheel package for bdist_wheel):
    then pip sets up no isolated build environment, offline."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        found = tuple(int(part) for part in version("setuptools").split(".")[:2])
        if found >= (70, 1):
            return True
        version("wheel")
    except (PackageNotFoundError, ValueError):
        return False
    return found >= (61, 0)


def build_wheel(release: Release, root: Path, out: Path, stage: Path) -> Path:
    """Stage the release's packages and build its wheel into ``out``."""
    tree = stage / release.name
    for top in release.packages:
        shutil.copytree(root / top, tree / top,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(root / "README.md", tree / "README.md")
    packages = [name for top in release.packages for name in _packages_under(tree, top)]
    (tree / "pyproject.toml").write_text(staged_pyproject(release, packages))
    no_isolation = ["--no-build-isolation"] if _setuptools_here() else []
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *no_isolation,
          "--wheel-dir", out, tree], f"building the {release.name} wheel")
    wheel = out / release.wheel_name
    if not wheel.is_file():
        raise BuildError(f"pip wheel did not write {wheel}")
    return wheel


def fill_wheelhouse(agent_wheel: Path, wheelhouse: Path) -> None:
    """The agent wheel and every wheel it requires, for this interpreter and
    platform (binary wheels only: nothing is compiled here)."""
    _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
          "--dest", wheelhouse, agent_wheel], "downloading the agent's dependencies")


def bundle(release: Release, wheelhouse: Path, target: Path) -> None:
    """The agent and its dependencies in one directory, from the wheelhouse
    alone: what /usr/lib/epns-agent holds, and what the single file unpacks."""
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links",
          wheelhouse, "--only-binary=:all:", "--no-compile", "--target", target,
          f"{release.name}=={release.version}"], "installing the agent into the bundle")
    # pip's generated scripts name this interpreter: the .deb writes its own.
    shutil.rmtree(target / "bin", ignore_errors=True)


def _wheel_tags(wheel: str) -> tuple[str, str, str, list[str]]:
    """(distribution, version, ABI tag, platform tags) of a wheel's file name."""
    parts = wheel.removesuffix(".whl").split("-")
    return parts[0], parts[1], parts[-2], parts[-1].split(".")


def add_python_versions(lib: Path, wheelhouse: Path, minors: Sequence[int],
                        stage: Path) -> list[str]:
    """Into ``lib``, each version-specific compiled module of the wheelhouse
    for the other Python 3 ``minors`` too, from the same release's wheel for
    that version and platform; the wheels used, by name."""
    used = []
    for wheel in sorted(wheelhouse.glob("*.whl")):
        dist, version, abi, platforms = _wheel_tags(wheel.name)
        if not re.fullmatch(r"cp3\d+", abi):
            continue
        for minor in minors:
            dest = stage / f"cp3{minor}-{dist}"
            _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                  "--no-deps", "--python-version", f"3.{minor}", "--implementation", "cp",
                  "--abi", f"cp3{minor}", *(f"--platform={tag}" for tag in platforms),
                  "--dest", dest, f"{dist}=={version}"],
                 f"downloading {dist} {version} for Python 3.{minor}")
            found = sorted(dest.glob(f"{dist}-{version}-*.whl"))
            if not found:
                raise BuildError(f"pip downloaded no {dist} {version} wheel for Python 3.{minor}")
            used.append(found[0].name)
            with zipfile.ZipFile(found[0]) as archive:
                for name in archive.namelist():
                    tagged = _ABI_SPECIFIC.search(name)
                    if tagged and int(tagged.group(1)) == minor:
                        archive.extract(name, lib)
    return used


def python_depends(lib: Path) -> str:
    """The .deb's Python requirement: from this interpreter's minor version
    up to the newest for which every version-specific compiled module is
    there (cffi's backend), or any later one if there is none."""
    major, minor = sys.version_info[:2]
    depends = f"python3 (>= {major}.{minor})"
    versions: dict[str, set[int]] = {}
    for path in lib.rglob("*.so"):
        tagged = _ABI_SPECIFIC.search(path.name)
        if tagged:
            module = str(path.relative_to(lib))[:tagged.start() - len(path.name)]
            versions.setdefault(module, set()).add(int(tagged.group(1)))
    if versions:
        common = set.intersection(*versions.values())
        newest = minor
        while newest + 1 in common:
            newest += 1
        depends += f", python3 (<< {major}.{newest + 1})"
    return depends


def glibc_floor(wheels: Sequence[str]) -> tuple[int, int] | None:
    """The newest glibc any of these wheels needs: for each, the oldest its
    platform tags accept (a wheel may carry several); None if none is
    compiled for glibc."""
    floors = []
    for wheel in wheels:
        platforms = wheel.removesuffix(".whl").split("-")[-1].split(".")
        accepted = [(int(found.group(1)), int(found.group(2))) for found in
                    (_MANYLINUX.match(platform + "_") for platform in platforms) if found]
        accepted += [_LEGACY_MANYLINUX[name.split("_")[0]] for name in platforms
                     if name.split("_")[0] in _LEGACY_MANYLINUX]
        if accepted:
            floors.append(min(accepted))
    return max(floors) if floors else None


def _architecture(lib: Path) -> str:
    if not any(lib.rglob("*.so")):
        return "all"
    return _run(["dpkg", "--print-architecture"], "dpkg --print-architecture").strip()


def launcher(target: str) -> str:
    """/usr/bin/<command>: the system's python3, the bundle ahead of all else.

    ``-I`` leaves out PYTHON* variables, the user's site and the working
    directory, ``-S`` the system's site-packages: what runs is what the
    package installed, whatever else is on the machine."""
    module, _, function = target.partition(":")
    return (f"#!/usr/bin/python3 -IS\n"
            f"# Installed by the epns-agent package; its modules are in /{DEB_LIB}.\n"
            f"import sys\n\nsys.path.insert(0, \"/{DEB_LIB}\")\n"
            f"from {module} import {function}  # noqa: E402\n\n"
            f"sys.exit({function}())\n")


def deb_unit(root: Path) -> str:
    """systemd/epns-agent.service with ExecStart at the .deb's command."""
    unit = (root / "systemd" / "epns-agent.service").read_text(encoding="utf-8")
    if unit.count(f"ExecStart={PIPX_COMMAND} ") != 1:
        raise BuildError(f"systemd/epns-agent.service: no ExecStart={PIPX_COMMAND} to rewrite")
    return unit.replace(f"ExecStart={PIPX_COMMAND} ", f"ExecStart={DEB_COMMAND} ")


def control(release: Release, *, revision: int, architecture: str, depends: str,
            installed_kib: int, maintainer: str) -> str:
    """DEBIAN/control."""
    return (f"Package: {release.name}\n"
            f"Version: {release.version}-{revision}\n"
            f"Architecture: {architecture}\n"
            f"Maintainer: {maintainer}\n"
            f"Installed-Size: {installed_kib}\n"
            f"Depends: {depends}\n"
            "Section: net\n"
            "Priority: optional\n"
            "Description: epns push wake-up agent\n"
            " Keeps one outbound TLS MQTT connection to an epns broker and runs the\n"
            " machine's sync when the server wakes it. Configured by\n"
            " /etc/epns/agent.toml (written by epns-agent enrol); state in\n"
            " /var/lib/epns-agent; runs as the epns system user under systemd.\n")


def _copyright() -> str:
    return ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
            "Upstream-Name: epns\n\n"
            "Files: *\nCopyright: the epns authors\nLicense: Apache-2.0\n\n"
            f"Files: {DEB_LIB}/*\n"
            "Copyright: their authors, as each *.dist-info directory there says\n"
            "License: the license each *.dist-info directory there holds\n\n"
            "License: Apache-2.0\n"
            " On Debian systems, the full text of the Apache License 2.0 is in\n"
            " /usr/share/common-licenses/Apache-2.0.\n")


def _changelog(release: Release, revision: int, maintainer: str, when: float) -> bytes:
    text = (f"{release.name} ({release.version}-{revision}) unstable; urgency=medium\n\n"
            "  * Built from the epns checkout by scripts/build-packages.\n\n"
            f" -- {maintainer}  {formatdate(when)}\n")
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


def build_deb(release: Release, root: Path, *, lib_bundle: Path, wheelhouse: Path,
              also: Sequence[str], out: Path, stage: Path, revision: int,
              maintainer: str) -> Path:
    """The agent's .deb, by ``dpkg-deb --build`` from a tree laid out here;
    ``also`` names the wheels add_python_versions took modules from."""
    tree = stage / "deb"
    shutil.copytree(lib_bundle, tree / DEB_LIB)
    for script, target in release.scripts:
        (tree / "usr/bin").mkdir(parents=True, exist_ok=True)
        (tree / "usr/bin" / script).write_text(launcher(target))
    (tree / DEB_UNIT).parent.mkdir(parents=True)
    (tree / DEB_UNIT).write_text(deb_unit(root))
    doc = tree / DEB_DOC
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(_copyright())
    when = float(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    (doc / "changelog.Debian.gz").write_bytes(_changelog(release, revision, maintainer, when))
    shutil.copy2(root / "docs" / "install-agent.md", doc / "install-agent.md")
    (tree / "etc/epns").mkdir(parents=True)
    overrides = tree / "usr/share/lintian/overrides"
    overrides.mkdir(parents=True)
    (overrides / release.name).write_text(LINTIAN_OVERRIDES)
    _normalise_modes(tree)

    sums = []
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        sums.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  "  # noqa: S324 (dpkg's md5sums)
                    f"{path.relative_to(tree)}\n")
    installed_kib = sum(-(-p.stat().st_size // 1024) for p in tree.rglob("*") if p.is_file())
    meta = tree / "DEBIAN"
    meta.mkdir()
    architecture = _architecture(tree / DEB_LIB)
    depends = [python_depends(tree / DEB_LIB), "adduser"]
    glibc = glibc_floor([wheel.name for wheel in wheelhouse.glob("*.whl")] + list(also))
    if glibc is not None:
        depends.append(f"libc6 (>= {glibc[0]}.{glibc[1]})")
    (meta / "control").write_text(control(
        release, revision=revision, architecture=architecture, depends=", ".join(depends),
        installed_kib=installed_kib, maintainer=maintainer))
    (meta / "md5sums").write_text("".join(sums))
    for script in ("postinst", "prerm", "postrm"):
        shutil.copy2(DEB_SCRIPTS / script, meta / script)
        (meta / script).chmod(0o755)
    meta.chmod(0o755)
    (meta / "control").chmod(0o644)
    (meta / "md5sums").chmod(0o644)
    deb = out / f"{release.name}_{release.version}-{revision}_{architecture}.deb"
    # xz as Debian's own packages, at its fastest level: 6.5 MB in 8 s on a
    # loaded 2-core machine, where the default level took 33 s for 5.7 MB.
    _run(["dpkg-deb", "--build", "--root-owner-group", "-Zxz", "-z1", tree, deb],
         "dpkg-deb --build")
    return deb


def _normalise_modes(tree: Path) -> None:
    """0755 directories and commands, 0644 everything else: what a package
    ships does not depend on the builder's umask."""
    for path in tree.rglob("*"):
        if path.is_dir() or path.parent.name == "bin":
            path.chmod(0o755)
        else:
            path.chmod(0o644)


def build_onefile(release: Release, lib_bundle: Path, out: Path) -> Path:
    """The agent in one file (shiv): run by any python3 of the same minor
    version; it unpacks itself once into ~/.shiv (or $SHIV_ROOT)."""
    pyz = out / f"{release.name}-{release.version}.pyz"
    target = dict(release.scripts)[AGENT]
    _run([sys.executable, "-m", "shiv", "--site-packages", lib_bundle, "--entry-point", target,
          "--output-file", pyz, "--python", "/usr/bin/env python3", "--reproducible"],
         "shiv (the single file)")
    return pyz


def build(root: Path, out: Path, *, wheels_only: bool = False, revision: int = 1,
          maintainer: str = "epns maintainers <root@localhost>",
          timings: dict[str, float] | None = None) -> dict[str, Path]:
    """Every artifact into ``out``; their paths by kind. ``timings``, if
    given, gets the seconds each step took."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    found = releases(pyproject, read_version(root))
    out.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    took = timings if timings is not None else {}
    clock = time.monotonic()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.monotonic()
        took[step] = now - clock
        clock = now

    with tempfile.TemporaryDirectory(prefix="epns-build-") as temporary:
        stage = Path(temporary)
        for name, release in found.items():
            built[name] = build_wheel(release, root, out, stage)
        lap("wheels")
        if wheels_only:
            return built
        agent = found[AGENT]
        # Afresh: a wheel left from an older build would be bundled or counted.
        wheelhouse = out / "wheelhouse"
        shutil.rmtree(wheelhouse, ignore_errors=True)
        wheelhouse.mkdir()
        fill_wheelhouse(built[AGENT], wheelhouse)
        built["wheelhouse"] = wheelhouse
        lap("wheelhouse")
        lib_bundle = stage / "bundle"
        bundle(agent, wheelhouse, lib_bundle)
        also = add_python_versions(lib_bundle, wheelhouse,
                                   range(sys.version_info.minor + 1, NEWEST_PYTHON + 1), stage)
        lap("bundle")
        built["deb"] = build_deb(agent, root, lib_bundle=lib_bundle, wheelhouse=wheelhouse,
                                 also=also, out=out, stage=stage, revision=revision,
                                 maintainer=maintainer)
        lap("deb")
        built["pyz"] = build_onefile(agent, lib_bundle, out)
        lap("pyz")
    return built


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/build-packages``."""
    parser = argparse.ArgumentParser(prog="scripts/build-packages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "dist",
                        help="where the artifacts go (default: dist/)")
    parser.add_argument("--wheels-only", action="store_true",
                        help="the two wheels only: no download, .deb or single file")
    parser.add_argument("--revision", type=int, default=1,
                        help="the .deb's Debian revision (<version>-<revision>; default 1)")
    parser.add_argument("--maintainer", default="epns maintainers <root@localhost>",
                        help="the .deb's Maintainer field")
    args = parser.parse_args(argv)
    started = time.monotonic()
    timings: dict[str, float] = {}
    try:
        built = build(ROOT, args.out.resolve(), wheels_only=args.wheels_only,
                      revision=args.revision, maintainer=args.maintainer, timings=timings)
    except EPNSError as exc:
        sys.stderr.write(f"build-packages: {exc}\n")
        return 1
    for kind, path in built.items():
        size = "" if path.is_dir() else f" ({path.stat().st_size / 1e6:.1f} MB)"
        sys.stdout.write(f"{kind}: {path}{size}\n")
    steps = ", ".join(f"{step} {seconds:.0f} s" for step, seconds in timings.items())
    sys.stdout.write(f"built in {time.monotonic() - started:.0f} s ({steps})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
