"""Debian's nginx in front of epns, with the shipped site config
(docker/nginx/epns.conf): its paths and its listen address replaced, and a
main config around it that keeps everything in the test's directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support.processes import ROOT

BINARY = shutil.which("nginx") or (
    "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
WHY_NOT = None if BINARY else "nginx is not installed (Debian: nginx-light)"


def render_site(pki_dir: Path, work: Path, listen: str) -> str:
    """The shipped site config, with this test's PKI, state directory and
    ``listen`` address (``host:port``)."""
    site = (ROOT / "docker/nginx/epns.conf").read_text()
    site = site.replace("/etc/epns/certs/", f"{pki_dir}/").replace("/var/lib/epns/", f"{work}/")
    return site.replace("listen 443 ssl;", f"listen {listen} ssl;")


def write_conf(where: Path, site: str) -> Path:
    """A main nginx.conf in ``where`` that includes ``site``; its path."""
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (where / name).mkdir(exist_ok=True)
    conf = where / "nginx.conf"
    # The workers run as root here only because the test's sockets are
    # root's; a deployment adds the nginx user to the epns group instead.
    conf.write_text(f"""user root;
worker_processes 1;
daemon off;
pid {where}/nginx.pid;
error_log {where}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {where}/body;
    proxy_temp_path {where}/proxy;
    fastcgi_temp_path {where}/fastcgi;
    uwsgi_temp_path {where}/uwsgi;
    scgi_temp_path {where}/scgi;
{site}
}}
""")
    return conf
