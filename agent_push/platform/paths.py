"""Where the agent's config is when ``--config`` is not given, per operating
system. Pure (the platform and the environment are arguments), so every
branch is tested on any machine.

The state directory needs no entry here: the agent.toml a bundle or an
enrolment writes says ``state_dir = "state"``, beside the config, which is
``%ProgramData%\\epns\\state`` on Windows and
``/Library/Application Support/epns/state`` on macOS. On Linux the systemd unit
points it at ``/var/lib/epns-agent`` instead (``EPNS_AGENT_STATE_DIR``), as
``/etc`` is read-only to the service.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath, PurePosixPath, PureWindowsPath

__all__ = ["CONFIG_NAME", "config_dir", "config_file"]

CONFIG_NAME = "agent.toml"
LINUX_DIR = PurePosixPath("/etc/epns")
DARWIN_DIR = PurePosixPath("/Library/Application Support/epns")
# Where %ProgramData% is on every Windows since Vista, should the variable be
# missing (a service started with a bare environment).
PROGRAM_DATA = PureWindowsPath("C:/ProgramData")


def config_dir(system: str, env: Mapping[str, str]) -> PurePath:
    """The directory of the agent's config on ``system`` (a ``sys.platform``
    value): ``/etc/epns`` on Linux and other POSIX systems,
    ``/Library/Application Support/epns`` on macOS, ``%ProgramData%\\epns`` on
    Windows."""
    if system == "win32":
        return _program_data(env) / "epns"
    if system == "darwin":
        return DARWIN_DIR
    return LINUX_DIR


def config_file(system: str, env: Mapping[str, str]) -> PurePath:
    """The agent's config file when ``--config`` is not given."""
    return config_dir(system, env) / CONFIG_NAME


def _program_data(env: Mapping[str, str]) -> PureWindowsPath:
    # Windows matches variable names whatever their case; a relative value
    # (a mangled environment) would put the config under the service's cwd.
    for name, value in env.items():
        if name.upper() == "PROGRAMDATA":
            path = PureWindowsPath(value)
            if path.is_absolute():
                return path
    return PROGRAM_DATA
