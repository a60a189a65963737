"""The one-line installer for Linux: what the server offers at ``/install/``
and the command an admin copies.

The command pins the SHA-256 of the fleet CA as served at
``/install/ca.crt``. It fetches that file without verifying TLS (there is
nothing to verify it with yet), checks the digest, and only then uses the
file to verify everything else it fetches: the script, the package, the
enrolment. Nothing fetched before the check is executed, so a machine in the
middle of the first contact can stop the install, never take it over.

The script (``install_linux.sh``, rendered with the packages on offer and
their digests) installs the ``.deb`` with apt or dpkg or, lacking dpkg, the
single-file agent (``.pyz``, needs python3), runs ``epns-agent enrol`` with
the token and no ``--id``, and starts the service. ``EPNS_INSTALL_ROOT``
points it at a directory instead of ``/`` for tests: then it installs the
single file there, writes the identity under it and starts nothing.
"""

from __future__ import annotations

import functools
import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path

from epns import pki
from epns.errors import NotFound
from epns.server_config import ServerSettings

TEMPLATE = Path(__file__).with_name("install_linux.sh")
CA_PATH = "/install/ca.crt"
SCRIPT_PATH = "/install/linux.sh"
PACKAGES_PATH = "/install/packages"
# What the packages directory may offer, newest name last when sorted.
DEB_GLOB = "epns-agent_*.deb"
PYZ_GLOB = "epns-agent*.pyz"
# Installed from the directory with the single file, when there.
UNIT_FILE = "epns-agent.service"


@dataclass(frozen=True, slots=True)
class Offer:
    """The packages the installer may install: file names and SHA-256 digests."""

    deb: str | None
    deb_sha256: str | None
    pyz: str | None
    pyz_sha256: str | None
    unit: str | None
    unit_sha256: str | None


def ca_fingerprint(settings: ServerSettings) -> str:
    """The SHA-256 (hex) of the fleet CA file as ``/install/ca.crt`` serves it."""
    return hashlib.sha256(ca_bytes(settings)).hexdigest()


def ca_bytes(settings: ServerSettings) -> bytes:
    """The fleet CA file, as served."""
    return (settings.pki.dir / pki.CA_CERT).read_bytes()


def offer(settings: ServerSettings) -> Offer:
    """What the packages directory offers; NotFound when no installer is."""
    folder = settings.enrol.packages_dir
    if folder is None:
        raise NotFound("this server offers no agent installer: set [enrol] packages_dir "
                       "(EPNS_SERVER_ENROL__PACKAGES_DIR) to a directory with the agent's "
                       ".deb or .pyz", code="no_installer")
    deb, pyz = _newest(folder, DEB_GLOB), _newest(folder, PYZ_GLOB)
    if deb is None and pyz is None:
        raise NotFound(f"no agent package in {folder} (looked for {DEB_GLOB} and {PYZ_GLOB})",
                       code="no_installer")
    unit = folder / UNIT_FILE if (folder / UNIT_FILE).is_file() else None
    return Offer(_name(deb), _digest(deb), _name(pyz), _digest(pyz), _name(unit),
                 _digest(unit))


def package(settings: ServerSettings, name: str) -> Path:
    """The offered file ``name``; NotFound for anything else."""
    offered = offer(settings)
    if name not in (offered.deb, offered.pyz, offered.unit):
        raise NotFound(f"no package {name!r} on offer", code="unknown_package")
    assert settings.enrol.packages_dir is not None
    return settings.enrol.packages_dir / name


def script(settings: ServerSettings, url: str) -> str:
    """The installer script for the server at ``url``, with today's offer."""
    offered = offer(settings)
    values = {"SERVER": url.rstrip("/"), "DEB": offered.deb or "",
              "DEB_SHA256": offered.deb_sha256 or "", "PYZ": offered.pyz or "",
              "PYZ_SHA256": offered.pyz_sha256 or "", "UNIT": offered.unit or "",
              "UNIT_SHA256": offered.unit_sha256 or ""}
    text = TEMPLATE.read_text(encoding="utf-8")
    for name, value in values.items():
        text = text.replace(f"@{name}@", shlex.quote(value))
    return text


def command(url: str, fingerprint: str, token: str) -> str:
    """The command an admin runs, as root, on each machine."""
    base = url.rstrip("/")
    # $0, $1, $2: the server, the pinned digest, the token (sh -c's arguments,
    # so none of them is parsed as code).
    body = ('set -eu; d=$(mktemp -d); trap "rm -rf $d" EXIT; '
            f'curl -kfsS --proto =https -o "$d/ca.crt" "$0{CA_PATH}"; '
            'echo "$1  $d/ca.crt" | sha256sum -c - >/dev/null 2>&1 || '
            '{ echo "epns: the CA at $0 is not the pinned one: stopped, nothing installed" >&2; '
            'exit 1; }; '
            f'curl -fsS --proto =https --cacert "$d/ca.crt" -o "$d/install.sh" "$0{SCRIPT_PATH}"; '
            'sh "$d/install.sh" --ca "$d/ca.crt" --token "$2"')
    return "sudo sh -c " + " ".join(shlex.quote(part) for part in (body, base, fingerprint,
                                                                    token))


def _newest(folder: Path, pattern: str) -> Path | None:
    # The last one put there: names do not sort by version (0.10 < 0.9).
    found = [(path.stat().st_mtime_ns, path.name, path) for path in folder.glob(pattern)
             if path.is_file()]
    return max(found)[2] if found else None


def _name(path: Path | None) -> str | None:
    return None if path is None else path.name


def _digest(path: Path | None) -> str | None:
    if path is None:
        return None
    info = path.stat()
    return _digest_of(path, info.st_mtime_ns, info.st_size)


@functools.lru_cache(maxsize=16)
def _digest_of(path: Path, _mtime_ns: int, _size: int) -> str:
    # Cached per version of the file: a fleet's installs ask for the script
    # thousands of times, the package changes once a release.
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
