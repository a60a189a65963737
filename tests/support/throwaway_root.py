"""A throwaway copy of this machine's root for ``dpkg -i``: an overlay of ``/``
(lower, read-only) and a tmpfs (upper) in a mount namespace of its own, held
by one ``sleep`` process. Everything dpkg and the maintainer scripts write
(/usr, /etc/passwd, /var/lib/dpkg, systemd's symlinks) lands in the tmpfs and
goes with it; the host's root never sees a file of it. Commands run there
through ``nsenter --mount`` and ``chroot``; the network is the host's, so a
broker on 127.0.0.1 is reachable.

``/dev`` is the host's (bound), ``/proc`` a new mount, ``/run`` and ``/tmp``
empty tmpfs as on a booted machine: no ``/run/systemd/system``, so the
maintainer scripts start and stop no service (they still enable units,
offline, as in any chroot). ``/mnt`` shows a host directory, read-only, to
carry files in."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.processes import stop_process

_SETUP = """set -e
mount -t tmpfs -o mode=0755 epns-throwaway "$1"
mkdir "$1/upper" "$1/work" "$1/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$1/upper,workdir=$1/work" "$1/root"
mount --rbind /dev "$1/root/dev"
mount -t proc proc "$1/root/proc"
mount -t tmpfs -o mode=0755 run "$1/root/run"
mount -t tmpfs -o mode=1777 tmp "$1/root/tmp"
mount --bind -o ro "$2" "$1/root/mnt"
echo ready
exec sleep 3600
"""
# What the maintainer scripts see: no pyenv shims, no virtual environment.
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
       "DEBIAN_FRONTEND": "noninteractive"}


def why_not() -> str | None:
    """Why no throwaway root can be made here, or None."""
    if os.geteuid() != 0:
        return "not root: mounting an overlay needs CAP_SYS_ADMIN"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "no overlayfs in this kernel"
    missing = [tool for tool in ("unshare", "nsenter", "chroot", "dpkg") if not shutil.which(tool)]
    if missing:
        return f"missing {missing}"
    return None


class ThrowawayRoot:
    """The overlay root; ``close`` (or the holder's end) drops all of it."""

    def __init__(self, work: Path, carry: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.base = work
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SETUP, "sh",
             str(work), str(carry)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.holder.stdout is not None
        ready = self.holder.stdout.readline().strip()
        if ready != "ready":
            self.holder.kill()
            _, errors = self.holder.communicate(timeout=10)
            raise RuntimeError(f"no throwaway root: {errors}")
        self.root = work / "root"

    def argv(self, *command: str, user: str | None = None) -> list[str]:
        """``command`` run inside the root (as ``user``, a ``uid:gid``)."""
        userspec = [f"--userspec={user}"] if user else []
        return ["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt", "chroot", *userspec,
                str(self.root), *command]

    def run(self, *command: str, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a command in the root as root; its output (fails the test if
        ``check`` and it fails)."""
        done = subprocess.run(self.argv(*command), env=ENV, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check:
            assert done.returncode == 0, f"{command}: {done.returncode}\n{done.stdout}{done.stderr}"
        return done

    def exists(self, path: str) -> bool:
        return self.run("test", "-e", path, check=False).returncode == 0

    def close(self) -> None:
        stop_process(self.holder)
        if self.holder.stdout is not None:
            self.holder.stdout.close()
